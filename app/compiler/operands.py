"""The compiled step's signature: its operands and results, shared by every plan function.

Every branch of the expanded ``stablehlo.case`` takes the same operands and returns the same
results, so one table describes them all. Shapes for a catalog with ``rows`` output rows of
width ``d`` over ``vocab`` ids:

operands
  w (rows, d) f32 — output matrix (zero rows past vocab); h (d,) f32 — the body's state;
  ids (vocab,) i32 — the K legal ids ascending, then the sentinel ``rows`` (masked);
  k () i32; wmax () f32 — the largest row norm of w (for the rounding bound);
  position () i32; last_margin () f32 — NaN when none; policy () i32 — 0 rule, 1 LinUCB;
  theta (arms, DIM) f64 and a_inv (arms, DIM, DIM) f64 — LinUCB's state; alpha () f64;
  amort_a (d, d), amort_b (d, d), amort_c (d,), ex (d,) f32 — the amortizer's map
  ``h' = A h + B e(x) + c`` and the embedding e(x) of the step's input token.
results
  token () i32; margin () f32 (NaN for K < 2); close () i32 — legal ids within tol of the
  best score; tol () f32 — the rounding bound (see plans_jax); branch () i32; arm () i32
  (LinUCB's arm, -1 where no router ran).
"""

from __future__ import annotations

import numpy as np

from .catalog import ARMS, Catalog

__all__ = ["DIM", "OPERANDS", "RESULTS", "shapes", "avals"]

#: LinUCB's context: [1, K/|V|, forced, last margin, position/context] (see routing.features).
DIM = 5

OPERANDS = (
    "w",
    "h",
    "ids",
    "k",
    "wmax",
    "position",
    "last_margin",
    "policy",
    "theta",
    "a_inv",
    "alpha",
    "amort_a",
    "amort_b",
    "amort_c",
    "ex",
)
RESULTS = ("token", "margin", "close", "tol", "branch", "arm")


def shapes(cat: Catalog) -> dict:
    """name -> (shape, numpy dtype) of every operand."""
    d, f32, i32, f64 = cat.d, np.float32, np.int32, np.float64
    n = len(ARMS)
    return {
        "w": ((cat.rows, d), f32),
        "h": ((d,), f32),
        "ids": ((cat.vocab,), i32),
        "k": ((), i32),
        "wmax": ((), f32),
        "position": ((), i32),
        "last_margin": ((), f32),
        "policy": ((), i32),
        "theta": ((n, DIM), f64),
        "a_inv": ((n, DIM, DIM), f64),
        "alpha": ((), f64),
        "amort_a": ((d, d), f32),
        "amort_b": ((d, d), f32),
        "amort_c": ((d,), f32),
        "ex": ((d,), f32),
    }


def avals(cat: Catalog):
    """``jax.ShapeDtypeStruct`` per operand, in order (needs 64-bit types enabled)."""
    import jax

    table = shapes(cat)
    return tuple(jax.ShapeDtypeStruct(*table[name]) for name in OPERANDS)
