"""Drivers: ``simulate`` step by step, ``run_router`` by name, and the vectorised ``linucb_batch``,
which is bit-for-bit the step-by-step router, stream by stream."""

import numpy as np
import pytest

from app.router import ROUTERS, LinUCB, ThresholdExperts, linucb_batch, run_router, simulate


def streams(S, T, n, d, seed):
    rng = np.random.default_rng(seed)
    X = np.concatenate([np.ones((S, T, 1)), rng.uniform(-1, 1, (S, T, d - 1))], axis=2)
    theta = rng.uniform(0, 1, (S, n, d))
    observed = np.einsum("std,snd->stn", X, theta) + 0.1 * rng.standard_normal((S, T, n))
    return X, observed


@pytest.mark.parametrize(
    "S, T, n, d, alpha, reg, seed",
    [
        (16, 400, 5, 6, 1.0, 1.0, 0),
        (9, 300, 5, 6, 0.3, 0.5, 1),
        (6, 250, 1, 1, 1.0, 1.0, 2),
        (5, 250, 3, 2, 0.0, 2.0, 3),
        (4, 200, 7, 12, 2.5, 0.1, 4),
        (3, 200, 2, 33, 1.0, 1.0, 5),
    ],
)
def test_batch_equals_step_path_exactly(S, T, n, d, alpha, reg, seed):
    X, observed = streams(S, T, n, d, seed)
    arms, P = linucb_batch(X, observed, alpha=alpha, reg=reg, return_state=True)
    assert arms.shape == (S, T) and arms.dtype == np.int64
    assert P.shape == (S, n, d + 1, d)
    for s in range(S):
        router = LinUCB(n, d, alpha=alpha, reg=reg)
        assert np.array_equal(simulate(router, X[s], observed[s]), arms[s])
        assert np.array_equal(router.P_, P[s])


def test_batch_with_ties_and_non_contiguous_input():
    # Identical streams and all-zero losses make every bound tie: both paths pick the lowest arm.
    X = np.asfortranarray(np.ones((4, 50, 3)))
    observed = np.zeros((4, 50, 3))
    arms = linucb_batch(X, observed)
    for s in range(4):
        assert np.array_equal(simulate(LinUCB(3, 3), X[s], observed[s]), arms[s])
    assert (arms[:, 0] == 0).all()


def test_batch_returns_arms_only_by_default():
    X, observed = streams(2, 10, 3, 4, 6)
    out = linucb_batch(X, observed)
    assert isinstance(out, np.ndarray) and out.shape == (2, 10)


@pytest.mark.parametrize(
    "X, observed, kwargs, name",
    [
        (np.zeros((2, 5)), np.zeros((2, 5, 3)), {}, "X"),
        (np.zeros((2, 5, 4)), np.zeros((2, 6, 3)), {}, "observed"),
        (np.zeros((2, 5, 4)), np.full((2, 5, 3), np.nan), {}, "observed"),
        (np.zeros((2, 5, 4)), np.zeros((2, 5, 3)), {"alpha": -1.0}, "alpha"),
        (np.zeros((2, 5, 4)), np.zeros((2, 5, 3)), {"reg": 0.0}, "reg"),
    ],
)
def test_batch_validation(X, observed, kwargs, name):
    with pytest.raises(ValueError, match=f"'{name}'"):
        linucb_batch(X, observed, **kwargs)


def test_every_named_router_runs():
    X, L = streams(1, 120, 5, 6, 10)
    X, L = X[0], L[0]
    extra = {"fixed": {"arm": 0}, "threshold": {"tau": 0.5}, "oracle": {"expected_losses": L}}
    for name in ROUTERS:
        arms = run_router(name, 5, 6, X, L, seed=0, **extra.get(name, {}))
        assert arms.shape == (120,) and arms.dtype == np.int64
        assert ((0 <= arms) & (arms < 5)).all()


def test_simulate_progress_every_percent():
    X, L = streams(1, 1050, 5, 6, 11)
    seen = []
    simulate(LinUCB(5, 6), X[0], L[0], progress=lambda t, T: seen.append((t, T)))
    assert seen[0] == (10, 1050) and seen[-1] == (1050, 1050)
    assert len(seen) == 105  # every 10 steps; the last one is the end


def test_simulate_passes_full_rows_to_full_information_learners():
    # Hedge learns from the `losses` rows only, so zero bandit feedback changes nothing.
    rng = np.random.default_rng(2)
    X = np.column_stack([np.ones(400), np.zeros((400, 2)), rng.random(400)])
    L = rng.random((400, 3))
    a1 = simulate(ThresholdExperts(3, 4, feedback="full", seed=1), X, L)
    a2 = simulate(ThresholdExperts(3, 4, feedback="full", seed=1), X, 0 * L, losses_full=L)
    assert np.array_equal(a1, a2)


def test_simulate_validates_inputs():
    r = LinUCB(5, 6)
    with pytest.raises(ValueError, match="'X'"):
        simulate(r, np.zeros((10, 5)), np.zeros((10, 5)))
    with pytest.raises(ValueError, match="'observed'"):
        simulate(r, np.zeros((10, 6)), np.zeros((9, 5)))
    with pytest.raises(ValueError, match="'losses_full'"):
        simulate(r, np.zeros((10, 6)), np.zeros((10, 5)), losses_full=np.zeros((10, 4)))
    with pytest.raises(ValueError, match="'progress'"):
        simulate(r, np.zeros((10, 6)), np.zeros((10, 5)), progress=3)
