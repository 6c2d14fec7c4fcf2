"""The routing kernel: the branch index computed inside the module from runtime telemetry.

Two policies, chosen per step by the ``policy`` operand:

* ``0`` — the cost model's rewrite rule with the calibrated numbers folded in as constants:
  K = 1 → ForcedToken; else the smallest bucket ``b ≥ K`` when ``cost(SparseHead[b]) ≤
  cost(DenseHead)`` (the per-bucket seconds are constants of the module), else DenseHead. With
  ``K*`` the last bucket edge this is :meth:`app.engine.rule.CostRule.select` exactly.
* ``1`` — LinUCB's ``select`` over its state tensors (θ, A⁻¹ and α are operands, so the Python
  router updates them between steps): ``argmin_a θ_a·x − α·sqrt(x·A_a⁻¹x)``, ties to the lowest
  arm, in float64 as :class:`app.router.linucb.LinUCB` computes it. The arm maps to a branch by
  :meth:`Catalog.arm_branch`.

The context ``x`` is built from exactly rounded operations only (products by constants, no
logarithms), so numpy (:func:`features`) and XLA build the same float64 vector bit for bit.
"""

from __future__ import annotations

import numpy as np

from ..router.features import compiler_features
from .catalog import ARMS, Catalog
from .operands import OPERANDS

__all__ = ["features", "route", "rule_branch", "arm_branch"]


def features(k: int, position: int, last_margin, vocab: int, context: int) -> np.ndarray:
    """LinUCB's context (DIM,) float64 (:func:`app.router.features.compiler_features`), the
    same floats the routing kernel computes."""
    return compiler_features(k, position, last_margin, vocab, context)


def _features_jnp(k, position, last_margin, cat: Catalog):
    import jax.numpy as jnp

    return compiler_features(k, position, last_margin, cat.vocab, cat.context, xp=jnp)


def _bucket_index(k, cat: Catalog):
    """Number of buckets smaller than k: the position of the smallest bucket holding k."""
    import jax.numpy as jnp

    edges = jnp.asarray(cat.buckets, jnp.int32)
    return jnp.sum((k > edges).astype(jnp.int32))


def rule_branch(k, cat: Catalog):
    """The cost rule's branch for ``k`` (a traced int32 scalar)."""
    import jax.numpy as jnp

    forced = k == 1
    if not cat.buckets:
        return jnp.where(forced, cat.FORCED, cat.DENSE).astype(jnp.int32)
    n = len(cat.buckets)
    j = _bucket_index(k, cat)
    sparse = [p.seconds for p in cat.plans if p.plan == "SparseHead"]
    costs = jnp.asarray(sparse, jnp.float64)
    dense = jnp.float64(cat.plans[cat.DENSE].seconds)
    wins = (j < n) & (costs[jnp.minimum(j, n - 1)] <= dense)
    return jnp.where(forced, cat.FORCED, jnp.where(wins, cat.sparse0 + j, cat.DENSE)).astype(
        jnp.int32
    )


def arm_branch(arm, k, cat: Catalog):
    """LinUCB's ``arm`` at ``k`` -> branch (see :meth:`Catalog.arm_branch`)."""
    import jax.numpy as jnp

    n = len(cat.buckets)
    out = jnp.int32(cat.DENSE)
    if n:
        j = _bucket_index(k, cat)
        fits = (arm == ARMS.index("SparseHead")) & (j < n)
        out = jnp.where(fits, cat.sparse0 + j, out)
    amort = (arm == ARMS.index("AmortizedHead")) & (k <= cat.amortized_rows)
    out = jnp.where(amort, cat.amortized, out)
    return jnp.where(k == 1, cat.FORCED, out).astype(jnp.int32)


def linucb_arm(x, theta, a_inv, alpha):
    """LinUCB's select: (arms, DIM) θ, (arms, DIM, DIM) A⁻¹, x (DIM,) -> lowest-bound arm."""
    import jax.numpy as jnp
    from jax import lax

    hi = lax.Precision.HIGHEST
    mean = jnp.matmul(theta, x, precision=hi)  # (arms,) θ_a·x
    u = jnp.matmul(a_inv, x, precision=hi)  # (arms, DIM) A_a⁻¹x
    var = jnp.matmul(u, x, precision=hi)  # (arms,) x·A_a⁻¹x
    return jnp.argmin(mean - alpha * jnp.sqrt(var)).astype(jnp.int32)


def route(*args, cat: Catalog):
    """The routing kernel over the step's operands -> (branch () i32, arm () i32)."""
    import jax.numpy as jnp

    o = dict(zip(OPERANDS, args))
    k = o["k"]
    x = _features_jnp(k, o["position"], o["last_margin"], cat)
    arm = linucb_arm(x, o["theta"], o["a_inv"], o["alpha"])
    bandit = o["policy"] == 1
    branch = jnp.where(bandit, arm_branch(arm, k, cat), rule_branch(k, cat))
    return branch.astype(jnp.int32), jnp.where(bandit, arm, -1).astype(jnp.int32)
