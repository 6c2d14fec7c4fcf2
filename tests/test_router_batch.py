"""The vectorised LinUCB path is bit-for-bit the step-by-step router, stream by stream."""

import numpy as np
import pytest

from app.router import LinUCB, linucb_batch, simulate


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
