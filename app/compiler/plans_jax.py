"""The physical plans as JAX functions over the step's operands (see operands.py).

Every plan scores in float32 at ``Precision.HIGHEST`` (no TF32/bf16 passes on a GPU) and picks
with ``argmax``, whose StableHLO reduction keeps the lowest index among equal maxima; legal ids
are ascending, so ties go to the lowest id as in numpy (app.engine.plans).

Why a token can still differ from numpy's, and how the executor rules it out: XLA's dot and
OpenBLAS's GEMV sum the d products in different orders. Each is within ``γ_d · Σ|w_i h_i|`` of
the exact score (``γ_d = d·u / (1 − d·u)``, ``u = 2⁻²⁴``), and ``Σ|w_i h_i| ≤ wmax · ‖h‖``, so
the two scores of one row differ by at most ``e = 2 γ_d · wmax · ‖h‖``. numpy's argmax is then
among the ids whose XLA score is within ``tol = 2e`` of the XLA maximum. A plan returns that
bound and ``close``, the number of legal ids within ``tol`` of its maximum; where that is more
than one (near-ties and exact ties) the executor rescores the legal set with numpy's kernel, so
the token is numpy's. (Top-2 by two reductions rather than ``lax.top_k``, which lowers to
``chlo.top_k`` — not part of a StableHLO portable artifact.)
"""

from __future__ import annotations

from functools import partial

import jax.numpy as jnp
from jax import lax

from .catalog import Catalog
from .operands import OPERANDS

__all__ = ["KERNELS", "plan_functions", "dense_head", "sparse_head", "forced_token",
           "amortized_head"]  # fmt: skip

_U = 2.0**-24
_HI = lax.Precision.HIGHEST


def _ops(args) -> dict:
    return dict(zip(OPERANDS, args))


def _tol(d: int, wmax, h):
    gamma = d * _U / (1.0 - d * _U)
    norm = jnp.sqrt(jnp.sum(h * h))
    return (4.0 * gamma * 1.01) * wmax * norm  # 1 % slack for the bound's own rounding


def _finish(scores, cand, k, tol, branch):
    """scores (n,) f32 with -inf where masked, cand (n,) i32 ids -> the step's results."""
    best = jnp.argmax(scores)
    top = scores[best]
    others = jnp.where(jnp.arange(scores.shape[0]) == best, -jnp.inf, scores)
    margin = jnp.where(k >= 2, top - jnp.max(others), jnp.float32(jnp.nan))
    close = jnp.sum((scores >= top - tol).astype(jnp.int32))
    return (
        cand[best].astype(jnp.int32),
        margin.astype(jnp.float32),
        close.astype(jnp.int32),
        jnp.asarray(tol, jnp.float32),
        jnp.int32(branch),
    )


def dense_head(*args, cat: Catalog, branch: int = Catalog.DENSE, rows=None):
    """All rows' logits, the mask from ``ids`` (the sentinel lands in a dropped extra slot)."""
    o = _ops(args)
    w, h, ids = o["w"], o["h"], o["ids"]
    logits = jnp.matmul(w, h, precision=_HI)  # (rows,)
    mask = jnp.zeros((cat.rows + 1,), jnp.bool_).at[ids].set(True)[: cat.rows]
    scores = jnp.where(mask, logits, -jnp.inf)
    cand = jnp.arange(cat.rows, dtype=jnp.int32)
    return _finish(scores, cand, o["k"], _tol(cat.d, o["wmax"], h), branch)


def _gathered(w, h, ids, k, rows: int):
    """Score the first ``rows`` padded legal ids; positions ≥ k are masked."""
    sel = ids[:rows]
    # (rows, d). The ids are ascending and the sentinel (one past the last row) is larger than
    # all of them, so the clipped indices stay sorted; telling XLA so makes its CPU gather ~5x
    # faster. Positions ≥ k are masked below.
    picked = jnp.take(w, sel, axis=0, mode="clip", indices_are_sorted=True)
    scores = jnp.matmul(picked, h, precision=_HI)
    valid = jnp.arange(rows, dtype=jnp.int32) < k
    return jnp.where(valid, scores, -jnp.inf), sel


def sparse_head(*args, cat: Catalog, rows: int, branch: int):
    """SparseHead in the bucket of ``rows`` legal ids (valid for K ≤ rows)."""
    o = _ops(args)
    scores, sel = _gathered(o["w"], o["h"], o["ids"], o["k"], rows)
    return _finish(scores, sel, o["k"], _tol(cat.d, o["wmax"], o["h"]), branch)


def forced_token(*args, cat: Catalog, branch: int = Catalog.FORCED, rows=None):
    """K = 1: the only legal id, nothing scored."""
    ids = _ops(args)["ids"]
    return ids[0], jnp.float32(jnp.nan), jnp.int32(1), jnp.float32(0), jnp.int32(branch)


def amortized_head(*args, cat: Catalog, branch: int, rows=None):
    """``h' = A h + B e(x) + c`` (the amortizer's map), then SparseHead on h' over the largest
    bucket: the state of the next step predicted without running the body."""
    o = _ops(args)
    h2 = (
        jnp.matmul(o["amort_a"], o["h"], precision=_HI)
        + jnp.matmul(o["amort_b"], o["ex"], precision=_HI)
        + o["amort_c"]
    )
    rows = cat.amortized_rows
    scores, sel = _gathered(o["w"], h2, o["ids"], o["k"], rows)
    return _finish(scores, sel, o["k"], _tol(cat.d, o["wmax"], h2), branch)


#: The compiled step's kernel table, keyed by the registry's plan names (app.model.registry):
#: each takes the operands and ``cat``, ``branch`` and ``rows`` (its bucket; None if unbucketed).
KERNELS = {
    "ForcedToken": forced_token,
    "DenseHead": dense_head,
    "SparseHead": sparse_head,
    "AmortizedHead": amortized_head,
}


def plan_functions(cat: Catalog) -> list:
    """One function per branch, in the catalog's order: (name, fn(*operands) -> the results but
    ``arm``, which the routing kernel gives)."""
    return [(p.name, partial(KERNELS[p.plan], cat=cat, branch=p.index, rows=p.rows))
            for p in cat.plans]  # fmt: skip
