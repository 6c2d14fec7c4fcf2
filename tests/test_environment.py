"""The synthetic decode-step environment: determinism, loss structure, drift, validation."""

import numpy as np
import pytest

from app.model import PLAN_NAMES, Scenario, error_given_margin
from app.router.environment import FEATURES, Drift, make_stream, model_latency
from app.router.experiment import router_params

S = Scenario(horizon=2000)


def _stream(seed, **kw):
    return make_stream(S, 2000, np.random.Generator(np.random.PCG64(seed)), **kw)


def test_same_seed_same_stream_other_seed_other_stream():
    a, b, c = _stream(3), _stream(3), _stream(4)
    for field in ("X", "expected", "observed", "latency_s", "k"):
        assert np.array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.observed, c.observed)


def test_features_and_losses_follow_the_models():
    st = _stream(0)
    assert st.X.shape == (2000, len(FEATURES))
    assert np.all(st.X[:, 0] == 1.0)
    assert np.all((st.X[:, 1] >= -1) & (st.X[:, 1] <= 0))
    assert np.all((st.k >= 1) & (st.k <= S.vocab))
    # Amortized arm: λ·latency + (1-λ)·P(wrong token | margin); the rerank arm keeps a share.
    latency = st.latency_s / model_latency(S)(np.array([S.k]), np.array([S.context]), [0.0])[0, 0]
    err = error_given_margin(st.margin, S.eps)
    assert np.allclose(st.expected[:, 2], S.lam * latency[:, 2] + (1 - S.lam) * err)
    assert np.allclose(
        st.expected[:, 3], S.lam * latency[:, 3] + (1 - S.lam) * S.rerank_factor * err
    )
    assert np.allclose(st.expected[:, 1], S.lam * latency[:, 1])  # exact plans never err
    assert np.allclose(st.X[:, 6] / 2, err)  # the deficit feature makes quality loss linear
    assert st.linear_r2 > 0.99
    noise = st.observed - st.expected
    assert 0.008 < noise.std() < 0.012


def test_cold_cache_makes_exact_plans_slower():
    st = _stream(1, cold=0.5)
    cold = st.cache_miss > 0
    assert cold.any() and (~cold).any()
    dense_over_full = st.latency_s[:, 0] / st.latency_s[:, 4]
    assert dense_over_full[cold].mean() > dense_over_full[~cold].mean()


def test_drift_changes_theta_and_has_a_variation_budget():
    still = _stream(2)
    arms, features = len(PLAN_NAMES), len(FEATURES)
    assert still.variation_budget == 0.0 and still.theta.shape == (1, arms, features)
    drifting = _stream(2, drift=Drift())
    assert drifting.theta.shape == (4, arms, features)
    assert drifting.variation_budget > 1.0
    first_change = int(0.22 * 2000)
    assert drifting.lam[first_change - 1] != drifting.lam[first_change]
    assert np.array_equal(drifting.X, still.X)  # contexts stay, the loss moves


def test_measured_latency_hook_is_used_and_checked():
    arms = len(PLAN_NAMES)
    flat = _stream(0, latency=lambda k, t, miss: np.ones((len(k), arms)))
    assert np.allclose(flat.latency_s, 1.0)
    with pytest.raises(ValueError, match="latency table"):
        _stream(0, latency=lambda k, t, miss: np.ones((len(k), arms - 1)))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"steps": 0}, "'steps' parameter"),
        ({"noise": -1.0}, "'noise' parameter"),
        ({"cold": 2.0}, "'cold' parameter"),
        ({"rng": 0}, "'rng' parameter"),
    ],
)
def test_validation(kwargs, match):
    args = {"steps": 10, "rng": np.random.default_rng(0), **kwargs}
    with pytest.raises(ValueError, match=match):
        make_stream(S, **args)


def test_drift_validation():
    with pytest.raises(ValueError, match="'change_points' parameter"):
        Drift(change_points=(0.5, 0.2))
    with pytest.raises(ValueError, match="'lam' parameter"):
        Drift(lam=(0.1, 2.0))
    with pytest.raises(ValueError, match=r"'lam' parameter must hold at least one value"):
        Drift(lam=())
    with pytest.raises(ValueError, match=r"'slowdown' parameter must hold at least one value"):
        Drift(slowdown=[])


def test_scenario_entry_points_need_a_scenario():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"The 's' parameter must be a Scenario. Got None"):
        make_stream(None, 10, rng)
    with pytest.raises(ValueError, match=r"The 's' parameter must be a Scenario"):
        model_latency({"d": 64})
    with pytest.raises(ValueError, match=r"The 's' parameter must be a Scenario"):
        router_params("linucb", "h100")
