"""The physical plans' kernels on the real model, one function per plan (numpy).

The heads run through the engine's output projection (:mod:`app.engine.head`: the quantized
kernel's ``QHead`` or numpy's ``BlasHead``; a bare float32 matrix is read as its BlasHead), whose
gather gives every legal row the very float the dense call gives it — so DenseHead and SparseHead
score every legal token with the same float and pick the same token: the lowest id among the
maxima.

A head returns ``(token, margin)``; the margin is top-1 minus top-2 over the legal set (None
when K < 2).
"""

from __future__ import annotations

import numpy as np

from ..model.registry import EXACT_PLANS as _EXACT
from ..model.registry import PLAN_NAMES, PLANS
from .head import as_head
from .heads_numpy import PAD_ROWS

__all__ = ["PAD_ROWS", "dense_head", "sparse_head", "forced_token", "margin_of", "PLAN_CHOICES"]


def margin_of(scores: np.ndarray) -> float | None:
    """Top-1 minus top-2 of (K,) scores; None for K < 2."""
    if scores.shape[0] < 2:
        return None
    top2 = np.partition(scores, scores.shape[0] - 2)[-2:]
    return float(top2[1] - top2[0])


def dense_head(output, h: np.ndarray, legal: np.ndarray):
    """output (a head, or a float32 (V_pad, d) matrix), h (d,), legal (K,) ascending ->
    (token, margin).

    All the head's logits, every id outside ``legal`` masked to -inf (padding rows included),
    argmax.
    """
    logits = as_head(output).logits(h[None])[0]
    masked = np.full(logits.shape, -np.inf, logits.dtype)
    masked[legal] = scores = logits[legal]
    return int(masked.argmax()), margin_of(scores)


def sparse_head(output, h: np.ndarray, legal: np.ndarray):
    """output (a head or a matrix), h (d,), legal (K,) ascending -> (token, margin): the K rows
    only."""
    scores = as_head(output).rows(h[None], legal)[0]
    return int(legal[scores.argmax()]), margin_of(scores)


def forced_token(legal: np.ndarray):
    """The only legal token, scoring nothing (K = 1)."""
    return int(legal[0]), None


#: Plans that read the exact state; the amortized ones predict it (app.engine.amortized).
EXACT_PLANS = tuple(p for p in PLAN_NAMES if p in _EXACT)
AMORTIZED_PLANS = tuple(p for p in PLAN_NAMES if p not in _EXACT)

#: ``llmqp decode --plan`` names -> the plan run at every step (``None``: chosen per step):
#: ``auto`` (the cost model's rule, app.engine.rule), every registry plan with a ``choice``
#: name, ``router`` and ``oracle`` (app.engine.routing). The amortized plans run ForcedToken
#: where K = 1; ForcedToken runs its fallback where K > 1.
PLAN_CHOICES = {
    "auto": None,
    **{p.choice: p.name for p in PLANS if p.choice},
    "router": None,
    "oracle": None,
}
#: The choices that need nothing but the model (the amortized ones need a fit, oracle a trace).
EXACT_CHOICES = ("auto", *(c for c, p in PLAN_CHOICES.items() if p in EXACT_PLANS))
#: The choices that run an amortized plan at every step (they need an amortizer).
AMORTIZED_CHOICES = tuple(c for c, p in PLAN_CHOICES.items() if p in AMORTIZED_PLANS)
