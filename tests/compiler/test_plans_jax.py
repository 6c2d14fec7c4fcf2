"""Each branch's token equals numpy's plan (app.engine.plans), random and real tensors, ties too."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("jax")

import jax  # noqa: E402

from app.compiler.executor import XlaStepExecutor  # noqa: E402
from app.compiler.plans_jax import plan_functions  # noqa: E402
from app.engine import plans  # noqa: E402

from .helpers import operands  # noqa: E402


@pytest.fixture(scope="module")
def jitted(small):
    with jax.enable_x64(True):
        return {name: jax.jit(fn) for name, fn in plan_functions(small.cat)}


def _run(fn, ops):
    with jax.enable_x64(True):
        return [np.asarray(v).item() for v in fn(*ops)]


def _ks(cat, plan):
    if plan.plan == "ForcedToken":
        return [1]
    if plan.plan == "DenseHead":
        return [2, 37, cat.k_star + 1, cat.vocab]
    return sorted({2, max(2, plan.rows // 3), plan.rows})


def test_every_branch_matches_numpy_on_random_tensors(small, jitted):
    rng = np.random.default_rng(3)
    cat, out = small.cat, small.engine.output
    checked = 0
    for plan in cat.plans:
        fn = jitted[plan.name]
        for k in _ks(cat, plan):
            for _ in range(4):
                legal = np.sort(rng.choice(cat.vocab, k, replace=False))
                h = rng.standard_normal(cat.d).astype(np.float32)
                token, margin, close, tol, branch = _run(fn, operands(small, h, legal))
                want, want_margin = plans.dense_head(out, h, legal)
                assert branch == plan.index
                assert token == want or close > 1
                if want_margin is None:
                    assert margin != margin  # NaN
                else:
                    assert abs(margin - want_margin) <= tol
                checked += close == 1
    assert checked > 30


def _tied(small, rng, k, copies):
    """An output matrix where ``copies`` legal rows are the same best row."""
    cat = small.cat
    out = small.engine.output.copy()
    legal = np.sort(rng.choice(cat.vocab, k, replace=False))
    h = rng.standard_normal(cat.d).astype(np.float32)
    top = float(np.abs(out[legal] @ h).max())
    best = (h * (2.0 * top / float(h @ h))).astype(np.float32)  # scores twice the best
    picks = np.sort(rng.choice(legal, copies, replace=False))
    out[picks] = best
    return out, h, legal, int(picks[0])


@pytest.mark.parametrize("copies", [2, 5])
def test_ties_go_to_the_lowest_id_in_every_branch(small, jitted, copies):
    rng = np.random.default_rng(4 + copies)
    cat = small.cat
    for plan in cat.plans:
        if plan.plan in ("ForcedToken",):
            continue
        k = max(copies, plan.rows or 600)
        out, h, legal, lowest = _tied(small, rng, k, copies)
        assert plans.dense_head(out, h, legal)[0] == lowest
        assert plans.sparse_head(out, h, legal)[0] == lowest
        token, margin, close, _, _ = _run(jitted[plan.name], operands(small, h, legal, w=out))
        assert token == lowest and margin == 0.0 and close >= copies


def test_executor_token_equals_numpy_including_near_ties(small):
    """Random steps plus steps whose top two rows differ by one part in 10⁶: always numpy's."""
    from types import SimpleNamespace

    rng = np.random.default_rng(5)
    cat = small.cat
    out = small.engine.output.copy()
    out[1:200:2] = out[0:200:2] * np.float32(1 + 1e-6)  # near-tie pairs (2j, 2j + 1)
    engine = SimpleNamespace(config=small.engine.config, output=out, weights=small.engine.weights)
    ex = XlaStepExecutor(engine, artifact=small.art)
    for i in range(60):
        k = int(rng.choice([2, 9, 64, 300, 504, 505, 999]))
        legal = rng.choice(cat.vocab, k, replace=False)
        h = rng.standard_normal(cat.d).astype(np.float32)
        if i % 2 and k >= 2:
            j = 2 * int(rng.integers(100))
            legal[:2] = j, j + 1
            legal = np.unique(legal)
            h = (out[j] * np.float32(4.0 / np.linalg.norm(out[j])) + 0.01 * h).astype(np.float32)
        legal = np.sort(legal)
        token, _, name = ex.run(h, legal, {"k": len(legal), "position": i, "last_margin": None})
        assert token == plans.dense_head(out, h, legal)[0]
        assert name == cat.plans[cat.rule_branch(len(legal))].name
    assert ex.stats["steps"] == 60 and ex.stats["rescored"] > 0


def test_amortized_head_matches_its_numpy_formula(small, jitted):
    """h' = A h + B e(x) + c, then the legal rows scored on h' (random maps)."""
    rng = np.random.default_rng(6)
    cat, out = small.cat, small.engine.output
    d = cat.d
    fn = jitted[cat.plans[cat.amortized].name]
    agree = 0
    for _ in range(20):
        a = (rng.standard_normal((d, d)) / np.sqrt(d)).astype(np.float32)
        b = (rng.standard_normal((d, d)) / np.sqrt(d)).astype(np.float32)
        c = rng.standard_normal(d).astype(np.float32)
        ex = out[rng.integers(cat.vocab)]
        h = rng.standard_normal(d).astype(np.float32)
        k = int(rng.integers(2, cat.amortized_rows + 1))
        legal = np.sort(rng.choice(cat.vocab, k, replace=False))
        ops = operands(small, h, legal, amort=(a, b, c), ex=ex)
        token, margin, close, tol, _ = _run(fn, ops)
        h2 = (a.astype(np.float64) @ h + b.astype(np.float64) @ ex + c).astype(np.float32)
        s = out[legal].astype(np.float64) @ h2
        want = int(legal[np.argmax(s)])
        top2 = np.sort(s)[-2:]
        if top2[1] - top2[0] > 1e-3:  # beyond h' rounding: the token is determined
            assert token == want
            agree += 1
        assert abs(margin - (top2[1] - top2[0])) < 1e-2
    assert agree >= 15


def test_identity_amortizer_is_exact(small, jitted):
    rng = np.random.default_rng(7)
    fn = jitted[small.cat.plans[small.cat.amortized].name]
    for _ in range(10):
        legal = np.sort(rng.choice(small.cat.vocab, 50, replace=False))
        h = rng.standard_normal(small.cat.d).astype(np.float32)
        token, _, close, _, _ = _run(fn, operands(small, h, legal))
        assert token == plans.sparse_head(small.engine.output, h, legal)[0] or close > 1


def test_executor_validates_its_arguments(small):
    from app.router.linucb import LinUCB

    with pytest.raises(ValueError, match="policy must be one of rule, linucb, got 'greedy'"):
        XlaStepExecutor(small.engine, policy="greedy", artifact=small.art)
    with pytest.raises(ValueError, match=r"router must be LinUCB\(3, 5\)"):
        XlaStepExecutor(small.engine, policy="linucb", router=LinUCB(2, 5), artifact=small.art)


def test_linucb_policy_routes_in_the_module_and_updates_the_router(small):
    """policy = linucb: the module's arm is LinUCB.select's; the router learns between steps."""
    from app.compiler.routing import features
    from app.router.linucb import LinUCB

    rng = np.random.default_rng(12)
    router = LinUCB(3, 5, alpha=0.5)
    ex = XlaStepExecutor(small.engine, policy="linucb", router=router, artifact=small.art)
    cat = small.cat
    for i in range(30):
        k = int(rng.choice([2, 40, 300, 900]))
        legal = np.sort(rng.choice(cat.vocab, k, replace=False))
        h = rng.standard_normal(cat.d).astype(np.float32)
        x = features(k, i, None, cat.vocab, cat.context)
        want_arm = LinUCB.select(router, x)
        token, _, name = ex.run(h, legal, {"k": k, "position": i, "last_margin": None})
        assert name == cat.plans[cat.arm_branch(want_arm, k)].name
        assert token == plans.dense_head(small.engine.output, h, legal)[0]  # identity amortizer
    assert router.t == 30
