"""Routers: numerics against direct solves, learning on realisable streams, and argument checks."""

import math

import numpy as np
import pytest

from app.router import (
    FixedPlan,
    LinTS,
    LinUCB,
    Oracle,
    RestartLinUCB,
    SlidingWindowLinUCB,
    ThresholdExperts,
    ThresholdRouter,
    dynamic_regret,
    loglog_slope,
    make_router,
    run_router,
    simulate,
)


def linear_stream(T, n=5, d=6, seed=0, noise=0.1):
    """Realisable stream, x = [1, U(-1, 1)^(d-1)] and E[loss] = theta_a^T x: X, expected, observed.

    Centred features make the best arm change with x, so no fixed plan is close to the oracle.
    """
    rng = np.random.default_rng(seed)
    theta = rng.uniform(0.0, 1.0, (n, d))
    X = np.column_stack([np.ones(T), rng.uniform(-1.0, 1.0, (T, d - 1))])
    expected = X @ theta.T
    return X, expected, expected + noise * rng.standard_normal((T, n))


def margin_problem(T, seed):
    """Full-information threshold problem: amortized (arm 2) errs often below margin 0.4."""
    rng = np.random.default_rng(seed)
    m = rng.random(T)
    X = np.column_stack([np.ones(T), np.zeros(T), np.zeros(T), m])
    L = np.ones((T, 3))
    L[:, 1] = rng.random(T) < 0.45
    L[:, 2] = rng.random(T) < np.where(m < 0.4, 0.9, 0.1)
    return X, L


def ridge_solution(X, y, reg):
    d = X.shape[1]
    A = reg * np.eye(d) + X.T @ X
    return np.linalg.solve(A, X.T @ y), np.linalg.solve(A, np.eye(d))


# --- LinUCB -------------------------------------------------------------------------------


def test_linucb_state_equals_direct_solve():
    X, _, L = linear_stream(4000, n=4, d=5, seed=1)
    router = LinUCB(4, 5, alpha=0.7, reg=0.5)
    arms = simulate(router, X, L)
    for a in range(4):
        played = arms == a
        theta, A_inv = ridge_solution(X[played], L[played, a], 0.5)
        np.testing.assert_allclose(router.theta_[a], theta, rtol=0, atol=1e-9)
        np.testing.assert_allclose(router.A_inv_[a], A_inv, rtol=0, atol=1e-9)


def test_linucb_slow_path_matches_fast_path():
    # update with a list (a new object) must recompute the bound and land on the same state.
    X, _, L = linear_stream(300, n=3, d=4, seed=2)
    fast, slow = LinUCB(3, 4), LinUCB(3, 4)
    for t in range(300):
        a = fast.select(X[t])
        fast.update(X[t], a, L[t, a])
        assert slow.select(X[t].tolist()) == a
        slow.update(X[t].tolist(), a, L[t, a])
    np.testing.assert_allclose(slow.P_, fast.P_, rtol=0, atol=1e-12)


def test_linucb_lcb_tie_break_lowest_index():
    router = LinUCB(4, 3)
    x = np.array([1.0, 0.5, 0.2])
    assert router.select(x) == 0  # all bounds equal on a fresh router
    router.update(x, 0, 10.0)  # arm 0 now looks costly; arms 1..3 stay tied
    assert router.select(x) == 1


def test_linucb_formula_on_hand_state():
    router = LinUCB(2, 2, alpha=2.0, reg=1.0)
    x = np.array([1.0, 0.0])
    router.update(x, 0, 0.3)  # A_0 = diag(2, 1), b_0 = (0.3, 0) -> theta_0 = (0.15, 0)
    np.testing.assert_allclose(router.theta_[0], [0.15, 0.0])
    np.testing.assert_allclose(router.A_inv_[0], [[0.5, 0.0], [0.0, 1.0]])
    # LCB_0 = 0.15 - 2 sqrt(0.5) = -1.264 > LCB_1 = 0 - 2 = -2
    assert router.select(x) == 1


def test_linucb_deterministic_and_sublinear():
    X, E, L = linear_stream(3000, seed=0)
    a1 = run_router("linucb", 5, 6, X, L, seed=7)
    a2 = run_router("linucb", 5, 6, X, L, seed=7)
    assert np.array_equal(a1, a2)
    regret = dynamic_regret(E, a1)
    assert loglog_slope(regret) < 1.0
    rng = np.random.default_rng(0)
    random_regret = dynamic_regret(E, rng.integers(0, 5, 3000))[-1]
    best_fixed = min(dynamic_regret(E, np.full(3000, a))[-1] for a in range(5))
    assert regret[-1] < 0.05 * random_regret
    assert regret[-1] < 0.1 * best_fixed


# --- LinTS --------------------------------------------------------------------------------


def test_lints_deterministic_per_seed_and_learns():
    X, E, L = linear_stream(3000, seed=4)
    a1 = simulate(LinTS(5, 6, seed=11), X, L)
    a2 = simulate(LinTS(5, 6, seed=11), X, L)
    a3 = simulate(LinTS(5, 6, seed=12), X, L)
    assert np.array_equal(a1, a2)
    assert not np.array_equal(a1, a3)
    regret = dynamic_regret(E, a1)
    random_regret = dynamic_regret(E, np.random.default_rng(1).integers(0, 5, 3000))[-1]
    assert regret[-1] < 0.05 * random_regret
    assert loglog_slope(regret) < 1.0


def test_lints_state_equals_direct_solve():
    X, _, L = linear_stream(1000, n=3, d=4, seed=5)
    router = LinTS(3, 4, v=0.3, reg=2.0, seed=0)
    arms = simulate(router, X, L)
    for a in range(3):
        theta, A_inv = ridge_solution(X[arms == a], L[arms == a, a], 2.0)
        np.testing.assert_allclose(router.theta_[a], theta, atol=1e-9)
        np.testing.assert_allclose(router.A_inv_[a], A_inv, atol=1e-9)


# --- Nonstationary ------------------------------------------------------------------------


@pytest.mark.parametrize("refresh", [None, 7, 10**9])
def test_sliding_window_equals_direct_solve_over_window(refresh):
    X, _, L = linear_stream(1500, n=3, d=4, seed=6)
    w = 60
    router = SlidingWindowLinUCB(3, 4, window=w, reg=1.5, refresh=refresh)
    arms = simulate(router, X, L)
    Xw, aw, lw = router.window_data()
    assert np.array_equal(Xw, X[-w:]) and np.array_equal(aw, arms[-w:])
    np.testing.assert_array_equal(lw, L[np.arange(1500 - w, 1500), arms[-w:]])
    for a in range(3):
        theta, A_inv = ridge_solution(X[-w:][aw == a], lw[aw == a], 1.5)
        np.testing.assert_allclose(router.theta_[a], theta, rtol=0, atol=1e-9)
        np.testing.assert_allclose(router.A_inv_[a], A_inv, rtol=0, atol=1e-9)


def test_sliding_window_shorter_than_window_is_plain_linucb():
    X, _, L = linear_stream(40, n=2, d=3, seed=7)
    sw, plain = SlidingWindowLinUCB(2, 3, window=100), LinUCB(2, 3)
    assert np.array_equal(simulate(sw, X, L), simulate(plain, X, L))
    np.testing.assert_allclose(sw.P_, plain.P_, atol=1e-12)


def test_restart_resets_every_period():
    X, _, L = linear_stream(250, n=2, d=3, seed=8)
    router = RestartLinUCB(2, 3, period=100, reg=2.0)
    simulate(router, X[:200], L[:200])
    fresh = LinUCB(2, 3, reg=2.0)
    np.testing.assert_array_equal(router.P_, fresh.P_)
    assert router.t == 200
    arms = simulate(router, X[200:], L[200:])  # after a restart it behaves like a fresh router
    assert np.array_equal(arms, simulate(fresh, X[200:], L[200:]))


# --- Experts ------------------------------------------------------------------------------


def _expert_regret(router, X, L):
    arms = simulate(router, X, L)
    T = len(arms)
    advice = np.where(X[:, 3][:, None] < router.taus_[None, :], 1, 2)  # (T, N)
    best = L[np.arange(T)[:, None], advice].sum(axis=0).min()
    return L[np.arange(T), arms].sum() - best


def test_hedge_full_information_regret_bound():
    T, N = 5000, 11
    bound = math.sqrt(T * math.log(N))
    for seed in range(3):
        X, L = margin_problem(T, seed)
        router = ThresholdExperts(3, 4, feedback="full", seed=seed)
        assert _expert_regret(router, X, L) < bound
        assert router.taus_[router.best_expert_] == pytest.approx(0.4)
        assert router.weights_[router.best_expert_] > 0.9


def test_hedge_with_horizon_eta():
    X, L = margin_problem(3000, 0)
    router = ThresholdExperts(3, 4, feedback="full", horizon=3000, seed=0)
    assert router.eta_at(1) == pytest.approx(math.sqrt(8 * math.log(11) / 3000))
    assert _expert_regret(router, X, L) < 2 * math.sqrt(3000 * math.log(11))


def test_exp4_bandit_regret_bound_order():
    T, N = 5000, 11
    bound = math.sqrt(T * N * math.log(N))
    for seed in range(3):
        X, L = margin_problem(T, seed)
        router = ThresholdExperts(3, 4, feedback="bandit", seed=seed)
        assert _expert_regret(router, X, L) < bound
        assert router.taus_[router.best_expert_] == pytest.approx(0.4)


def test_experts_deterministic_and_weights():
    X, L = margin_problem(500, 1)
    runs = [simulate(ThresholdExperts(3, 4, gamma=0.1, seed=5), X, L) for _ in range(2)]
    assert np.array_equal(*runs)
    r = ThresholdExperts(3, 4, taus=[0.2, 0.7])
    np.testing.assert_allclose(r.weights_, [0.5, 0.5])
    np.testing.assert_array_equal(r.advice(np.array([1.0, 0, 0, 0.5])), [2, 1])


# --- Baselines ----------------------------------------------------------------------------


def test_threshold_router_and_fixed_plan():
    r = ThresholdRouter(5, 6, tau=0.3)
    x = np.zeros(6)
    for m, arm in [(0.0, 1), (0.29, 1), (0.3, 2), (0.9, 2)]:
        x[3] = m
        assert r.select(x) == arm
    r0 = ThresholdRouter(5, 6, tau=0.0)
    assert r0.select(x) == 2
    fixed = FixedPlan(5, 6, arm=4)
    assert fixed.select(x) == 4
    fixed.update(x, 4, 0.5)
    assert fixed.t == 1


def test_oracle_follows_argmin_with_zero_regret():
    X, E, L = linear_stream(200, seed=9)
    E[0] = 1.0  # a full tie: the lowest index wins
    arms = run_router("oracle", 5, 6, X, L, expected_losses=E)
    assert arms[0] == 0
    np.testing.assert_array_equal(arms[1:], E[1:].argmin(axis=1))
    assert dynamic_regret(E, arms)[-1] == 0.0
    oracle = Oracle(5, 6, E[:1])
    oracle.update(X[0], oracle.select(X[0]), 0.0)
    with pytest.raises(ValueError, match="expected_losses"):
        oracle.select(X[1])


# --- Validation ---------------------------------------------------------------------------


def test_error_text_is_exact():
    with pytest.raises(ValueError) as e:
        LinUCB(5, 6, alpha=-1)
    assert (
        str(e.value) == "The 'alpha' parameter must be a finite number in [0, inf). Got -1 instead."
    )


@pytest.mark.parametrize(
    "build, name",
    [
        (lambda: LinUCB(5, 0), "dim"),
        (lambda: LinUCB(0, 6), "n_arms"),
        (lambda: LinUCB(5, 6, alpha=-0.1), "alpha"),
        (lambda: LinUCB(5, 6, reg=0.0), "reg"),
        (lambda: LinUCB(5, 6, seed=-3), "seed"),
        (lambda: LinTS(5, 6, v=float("nan")), "v"),
        (lambda: SlidingWindowLinUCB(5, 6, window=0), "window"),
        (lambda: RestartLinUCB(5, 6, period=0), "period"),
        (lambda: ThresholdExperts(5, 6, taus=[0.2, 1.5]), "taus"),
        (lambda: ThresholdExperts(5, 6, feedback="semi"), "feedback"),
        (lambda: ThresholdExperts(5, 6, eta=0.0), "eta"),
        (lambda: ThresholdExperts(5, 6, gamma=2.0), "gamma"),
        (lambda: ThresholdExperts(5, 6, n_thresholds=0), "n_thresholds"),
        (lambda: ThresholdExperts(5, 6, amortized_arm=1), "amortized_arm"),
        (lambda: ThresholdRouter(5, 6, tau=1.5), "tau"),
        (lambda: ThresholdRouter(5, 6, tau=0.5, margin_index=6), "margin_index"),
        (lambda: ThresholdRouter(5, 6, tau=0.5, refine_arm=5), "refine_arm"),
        (lambda: FixedPlan(5, 6, arm=7), "arm"),
        (lambda: Oracle(5, 6, np.zeros((3, 4))), "expected_losses"),
        (lambda: make_router("nope", 5, 6), "name"),
    ],
)
def test_constructor_errors_name_the_parameter(build, name):
    with pytest.raises(ValueError, match=f"'{name}'"):
        build()


def test_unknown_router_lists_options():
    with pytest.raises(ValueError, match="'linucb', 'lints', 'sw-linucb'"):
        make_router("ucb1", 5, 6)


ALL = [
    lambda: LinUCB(5, 6),
    lambda: LinTS(5, 6, seed=0),
    lambda: SlidingWindowLinUCB(5, 6, window=10),
    lambda: RestartLinUCB(5, 6, period=10),
    lambda: ThresholdExperts(5, 6, feedback="bandit", seed=0),
    lambda: ThresholdRouter(5, 6, tau=0.5),
    lambda: FixedPlan(5, 6, arm=1),
]


@pytest.mark.parametrize("build", ALL)
@pytest.mark.parametrize(
    "x",
    [np.ones(5), np.ones((6, 1)), [1.0] * 7, np.r_[np.ones(5), np.nan], np.r_[np.inf, np.ones(5)]],
)
def test_select_rejects_bad_x(build, x):
    with pytest.raises(ValueError, match="'x'"):
        build().select(x)


@pytest.mark.parametrize("build", ALL)
def test_update_rejects_bad_feedback(build):
    x = np.full(6, 0.5)
    r = build()
    a = r.select(x)
    with pytest.raises(ValueError, match="'loss'"):
        r.update(x, a, float("nan"))  # same x object as select: the cached fast path
    with pytest.raises(ValueError, match="'loss'"):
        r.update(x.copy(), a, float("inf"))  # a new object: the checked slow path
    with pytest.raises(ValueError, match="'arm'"):
        r.update(x, 5, 0.1)
    with pytest.raises(ValueError, match="'arm'"):
        r.update(x, -1, 0.1)
    with pytest.raises(ValueError, match="'x'"):
        r.update(np.r_[x[:5], np.nan], a, 0.1)


def test_hedge_requires_losses():
    r = ThresholdExperts(5, 6, feedback="full")
    x = np.full(6, 0.5)
    with pytest.raises(ValueError, match="'losses'"):
        r.update(x, r.select(x), 0.1)
    with pytest.raises(ValueError, match="'losses'"):
        r.update(x, r.select(x), 0.1, losses=np.zeros(4))
