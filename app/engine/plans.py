"""The physical plans' kernels on the real model, one function per plan (numpy).

Every head scores with the same GEMV kernel on rows of the output matrix, so a token's score is
the same float in every plan: DenseHead scores all |V| rows, SparseHead the K legal rows gathered
and padded to a multiple of ``PAD_ROWS`` (BLAS GEMVs round the last rows of a matrix whose row
count is not a multiple of their unroll differently; padding keeps every legal row on the main
kernel). The tie-break is the lowest id among the maxima: legal ids are ascending and argmax
returns the first maximum, in both plans.

A head returns ``(token, margin)``; the margin is top-1 minus top-2 over the legal set (None
when K < 2).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "PAD_ROWS",
    "dense_head",
    "sparse_head",
    "forced_token",
    "margin_of",
    "ENGINE_PLANS",
    "PLAN_CHOICES",
]

PAD_ROWS = 64


def margin_of(scores: np.ndarray) -> float | None:
    """Top-1 minus top-2 of (K,) scores; None for K < 2."""
    if scores.shape[0] < 2:
        return None
    top2 = np.partition(scores, scores.shape[0] - 2)[-2:]
    return float(top2[1] - top2[0])


def dense_head(output: np.ndarray, h: np.ndarray, legal: np.ndarray):
    """output (V_pad, d), h (d,), legal (K,) ascending -> (token, margin).

    All |V| logits, then the mask: every id outside ``legal`` is set to -inf, then argmax.
    ``output`` may carry zero rows past |V| (padding); they are masked like any illegal id.
    """
    logits = output @ h  # (V_pad,)
    masked = np.full_like(logits, -np.inf)
    masked[legal] = logits[legal]
    return int(masked.argmax()), margin_of(logits[legal])


def sparse_head(output: np.ndarray, h: np.ndarray, legal: np.ndarray):
    """output (V_pad, d), h (d,), legal (K,) ascending -> (token, margin): score the K rows."""
    k = legal.shape[0]
    padded = np.zeros(k + (-k) % PAD_ROWS, dtype=legal.dtype)
    padded[:k] = legal
    scores = (output[padded] @ h)[:k]
    return int(legal[scores.argmax()]), margin_of(scores)


def forced_token(legal: np.ndarray):
    """The only legal token, scoring nothing (K = 1)."""
    return int(legal[0]), None


#: Every physical plan the engine runs, one place (the registry lists the same names).
ENGINE_PLANS = (
    "DenseHead",
    "SparseHead",
    "ForcedToken",
    "AmortizedHead",
    "AmortizedRerank",
    "FullRecompute",
)
#: Plans that read the exact state; the amortized ones predict it (app.engine.amortized).
EXACT_PLANS = ("DenseHead", "SparseHead", "ForcedToken", "FullRecompute")
AMORTIZED_PLANS = ("AmortizedHead", "AmortizedRerank")

#: ``llmqp decode --plan`` names -> the plan run at every step (``None``: chosen per step).
#: ``amortized``/``rerank`` run ForcedToken where K = 1; ``router`` and ``oracle`` choose per
#: step (app.engine.routing).
PLAN_CHOICES = {
    "auto": None,  # the cost model's rewrite rule (app.engine.rule)
    "dense": "DenseHead",
    "sparse": "SparseHead",
    "forced": "ForcedToken",  # where K = 1; DenseHead elsewhere
    "full": "FullRecompute",
    "amortized": "AmortizedHead",
    "rerank": "AmortizedRerank",
    "router": None,
    "oracle": None,
}
#: The choices that need nothing but the model (the amortized ones need a fit, oracle a trace).
EXACT_CHOICES = ("auto", "dense", "sparse", "forced", "full")
