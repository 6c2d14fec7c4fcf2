"""The routing kernel agrees with the Python rule (CostRule) and LinUCB.select, input by input."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest

pytest.importorskip("jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from app.compiler.catalog import ARMS, build_catalog  # noqa: E402
from app.compiler.operands import DIM, OPERANDS  # noqa: E402
from app.compiler.routing import features, route  # noqa: E402
from app.engine.rule import CostRule  # noqa: E402
from app.router.linucb import LinUCB  # noqa: E402

N = 3000
LIVE = ("k", "position", "last_margin", "policy", "theta", "a_inv", "alpha")


def _kernel(cat):
    """route() vmapped over the telemetry and router operands (the rest are unused)."""

    def one(*live):
        table = dict(zip(LIVE, live))
        return route(*(table.get(name, jnp.float32(0)) for name in OPERANDS), cat=cat)

    with jax.enable_x64(True):
        return jax.jit(jax.vmap(one))


def _call(fn, **arrays):
    with jax.enable_x64(True):
        branch, arm = fn(*(arrays[n] for n in LIVE))
    return np.asarray(branch), np.asarray(arm)


def _telemetry(rng, cat, n):
    k = np.where(rng.random(n) < 0.1, 1, rng.integers(1, cat.vocab + 1, n)).astype(np.int32)
    k[:4] = [1, cat.k_star, cat.k_star + 1, cat.vocab]  # the edges
    pos = rng.integers(0, cat.context, n).astype(np.int32)
    margin = np.where(rng.random(n) < 0.2, np.nan, rng.exponential(2.0, n)).astype(np.float32)
    return k, pos, margin


@pytest.mark.parametrize("shape", [(64, 1000), (576, 49152), (32, 40)])
def test_rule_kernel_equals_the_python_rule(shape):
    cat = build_catalog(*shape, "cpu", 4096)
    rng = np.random.default_rng(8)
    k, pos, margin = _telemetry(rng, cat, N)
    boundary = np.array([b + o for b in cat.buckets for o in (-1, 0, 1)], np.int32)
    k[4 : 4 + boundary.size] = np.clip(boundary, 1, cat.vocab)
    P = np.zeros((N, len(ARMS), DIM + 1, DIM))
    branch, arm = _call(
        _kernel(cat),
        k=k,
        position=pos,
        last_margin=margin,
        policy=np.zeros(N, np.int32),
        theta=P[:, :, 0],
        a_inv=P[:, :, 1:],
        alpha=np.ones(N),
    )
    rule = CostRule(cat.d, cat.vocab, "cpu", "float32")
    for kk, b in zip(k, branch):
        plan = cat.plans[b]
        assert plan.plan == rule.select(int(kk))
        if plan.plan == "SparseHead":  # the smallest bucket that holds K
            assert plan.rows >= kk and cat.bucket_of(int(kk)) == b - cat.sparse0
    assert (arm == -1).all()
    assert set(branch) >= {cat.FORCED, cat.DENSE, cat.sparse0}


def _trained_router(rng, cat, steps):
    router = LinUCB(len(ARMS), DIM, alpha=float(rng.uniform(0.0, 2.0)), reg=1.0)
    for _ in range(steps):
        k = int(rng.integers(1, cat.vocab + 1))
        x = features(
            k, int(rng.integers(cat.context)), float(rng.exponential()), cat.vocab, cat.context
        )
        router.update(x, int(rng.integers(len(ARMS))), float(rng.normal(1.0, 0.5)))
    return router


def test_linucb_kernel_equals_python_select():
    """Thousands of (state, telemetry) pairs: fresh routers (all arms tied), trained ones, and
    routers with two identical arms (ties broken to the lowest arm on both sides)."""
    cat = build_catalog(64, 1000, "cpu", 512)
    rng = np.random.default_rng(9)
    k, pos, margin = _telemetry(rng, cat, N)
    routers = []
    for i in range(N):
        if i % 10 == 0:
            r = LinUCB(len(ARMS), DIM, alpha=1.0)  # fresh: every bound equal
        else:
            r = _trained_router(rng, cat, int(rng.integers(1, 12)))
            if i % 10 == 1:
                r.P_[2] = r.P_[0]  # arms 0 and 2 identical
        routers.append(r)
    P = np.stack([r.P_ for r in routers])
    alpha = np.array([r.alpha for r in routers])
    branch, arm = _call(
        _kernel(cat),
        k=k,
        position=pos,
        last_margin=margin,
        policy=np.ones(N, np.int32),
        theta=np.ascontiguousarray(P[:, :, 0]),
        a_inv=np.ascontiguousarray(P[:, :, 1:]),
        alpha=alpha,
    )
    picked = set()
    for i, r in enumerate(routers):
        m = None if np.isnan(margin[i]) else float(margin[i])
        x = features(int(k[i]), int(pos[i]), m, cat.vocab, cat.context)
        want = r.select(x)
        assert arm[i] == want, i
        assert branch[i] == cat.arm_branch(want, int(k[i]))
        picked.add(want)
    assert picked == set(range(len(ARMS)))


def test_features_match_the_kernel_bit_for_bit():
    from app.compiler.routing import _features_jnp

    cat = build_catalog(64, 1000, "cpu", 777)
    rng = np.random.default_rng(10)
    fn = partial(_features_jnp, cat=cat)
    with jax.enable_x64(True):
        f = jax.jit(jax.vmap(fn))
        k, pos, margin = _telemetry(rng, cat, 500)
        got = np.asarray(f(k, pos, margin))
    for i in range(500):
        m = None if np.isnan(margin[i]) else float(margin[i])
        want = features(int(k[i]), int(pos[i]), m, cat.vocab, cat.context)
        assert np.array_equal(got[i], want)
