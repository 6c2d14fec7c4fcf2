"""Plan equivalence on real numbers: dense masked vs sparse selection, and ε-equivalence.

Tie-break rule (both sides): among the legal tokens with the highest score, the lowest token id
wins. Scores may be ``-inf`` (a legal token the model rules out); ``NaN`` is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .validate import check_float

__all__ = [
    "dense_masked_argmax",
    "sparse_argmax",
    "dense_masked_sample",
    "sparse_sample",
    "top2_margin",
    "certified",
    "EquivalenceReport",
    "check_equivalence",
]


def _logits(name, x, ndim=1):
    x = np.asarray(x)
    if x.ndim != ndim or x.dtype.kind != "f":
        raise ValueError(f"The '{name}' parameter must be a {ndim}-D float array. Got {x!r}.")
    if np.isnan(x).any():
        raise ValueError(f"The '{name}' parameter must not contain NaN.")
    return x


def _mask(mask, n):
    mask = np.asarray(mask)
    if mask.dtype != bool or mask.shape != (n,):
        raise ValueError(f"The 'mask' parameter must be a boolean array of shape ({n},).")
    if not mask.any():
        raise ValueError("The 'mask' parameter must allow at least one token. Got none.")
    return mask


def _ids(ids, n):
    ids = np.asarray(ids)
    if ids.shape != (n,) or ids.dtype.kind not in "iu" or n == 0:
        raise ValueError(f"The 'ids' parameter must be a non-empty integer array of shape ({n},).")
    if len(np.unique(ids)) != n or ids.min() < 0:
        raise ValueError("The 'ids' parameter must hold distinct non-negative token ids.")
    return ids


def dense_masked_argmax(logits, mask) -> int:
    """``argmax_v ℓ̃(v)`` with ``ℓ̃ = ℓ`` on legal tokens and ``-inf`` elsewhere, computed over V.

    ``logits`` (V,) float; ``mask`` (V,) bool. Returns a token id.
    """
    logits = _logits("logits", logits)
    mask = _mask(mask, len(logits))
    masked = np.where(mask, logits, -np.inf)
    best = masked.max()
    # Lowest legal id with the best score (also right when every legal score is -inf).
    return int(np.flatnonzero(mask & (masked == best))[0])


def sparse_argmax(scores, ids) -> int:
    """``argmax_{v ∈ A(s)} ℓ(v)`` from the scores of the legal tokens only.

    ``scores`` (K,) float, ``ids`` (K,) distinct token ids in any order. Returns a token id.
    """
    scores = _logits("scores", scores)
    ids = _ids(ids, len(scores))
    best = scores.max()
    return int(ids[scores == best].min())


def _draw(probs_cum, u) -> int:
    # First index whose cumulative mass exceeds u·total; the total is the last running sum, so
    # dense and sparse see bit-identical sums (adding the masked zeros changes nothing).
    return int(np.searchsorted(probs_cum, u * probs_cum[-1], side="right"))


def _check_u(u):
    return check_float("u", u, 0.0, 1.0, hi_open=True)


def dense_masked_sample(logits, mask, u, temperature=1.0) -> int:
    """Sample from ``softmax(ℓ̃/T)`` over all of V (masked tokens have zero mass) with one uniform
    draw ``u ∈ [0, 1)`` by inverse CDF in token-id order."""
    logits = _logits("logits", logits)
    mask = _mask(mask, len(logits))
    u, t = _check_u(u), check_float("temperature", temperature, 0.0, None, lo_open=True)
    logits = logits.astype(np.float64)  # float16 sums would round u·total up to the total
    top = logits[mask].max()
    if not np.isfinite(top):
        raise ValueError("No legal token has a finite score; sampling is undefined.")
    weights = np.where(mask, np.exp((np.where(mask, logits, top) - top) / t), 0.0)
    return _draw(np.cumsum(weights), u)


def sparse_sample(scores, ids, u, temperature=1.0) -> int:
    """The sparse counterpart of :func:`dense_masked_sample`: the same token for the same ``u``."""
    scores = _logits("scores", scores)
    ids = _ids(ids, len(scores))
    u, t = _check_u(u), check_float("temperature", temperature, 0.0, None, lo_open=True)
    order = np.argsort(ids, kind="stable")
    scores, ids = scores[order].astype(np.float64), ids[order]
    top = scores.max()
    if not np.isfinite(top):
        raise ValueError("No legal token has a finite score; sampling is undefined.")
    return int(ids[_draw(np.cumsum(np.exp((scores - top) / t)), u)])


def top2_margin(logits, mask) -> float:
    """``ℓ(v⁽¹⁾) - ℓ(v⁽²⁾)`` over the legal set (``inf`` if only one token is legal)."""
    logits = _logits("logits", logits)
    mask = _mask(mask, len(logits))
    legal = np.sort(logits[mask].astype(np.float64))
    return float("inf") if len(legal) < 2 else float(legal[-1] - legal[-2])


def certified(exact_logits, mask, eps) -> bool:
    """Margin certificate: if a cheaper plan's logits are within ``eps`` of ``exact_logits`` on the
    legal set and the exact margin exceeds ``2·eps``, the cheaper plan picks the same token."""
    eps = check_float("eps", eps, 0.0, None)
    return top2_margin(exact_logits, mask) > 2.0 * eps


@dataclass(frozen=True)
class EquivalenceReport:
    """Two plans over a multi-step decode. ``max_gap``: largest |Δlogit| on any legal set;
    ``identical``: same token at every step; ``first_divergence``: first differing step or
    ``None``; ``certified_steps``: steps where the exact margin exceeds twice that step's gap."""

    steps: int
    max_gap: float
    identical: bool
    first_divergence: int | None
    certified_steps: int
    tokens_a: tuple
    tokens_b: tuple

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


def check_equivalence(logits_a, logits_b, masks) -> EquivalenceReport:
    """ε-equivalence of plan A (taken as exact) and plan B over ``T`` steps.

    ``logits_a``, ``logits_b`` (T, V) float; ``masks`` (T, V) bool — each step's legal set.
    """
    a, b = _logits("logits_a", logits_a, 2), _logits("logits_b", logits_b, 2)
    masks = np.asarray(masks)
    if a.shape != b.shape or masks.shape != a.shape or masks.dtype != bool:
        raise ValueError(
            f"'logits_a', 'logits_b' and 'masks' must share one (T, V) shape; got {a.shape}, "
            f"{b.shape}, {masks.shape}."
        )
    tok_a, tok_b, gaps, certs = [], [], [], 0
    for t in range(a.shape[0]):
        tok_a.append(dense_masked_argmax(a[t], masks[t]))
        tok_b.append(dense_masked_argmax(b[t], masks[t]))
        with np.errstate(invalid="ignore"):
            diff = np.abs(a[t][masks[t]].astype(np.float64) - b[t][masks[t]])
        # Two -inf scores agree exactly; inf - inf is NaN, and means no gap here.
        gap = float(np.nanmax(np.where(np.isnan(diff), 0.0, diff)))
        gaps.append(gap)
        certs += top2_margin(a[t], masks[t]) > 2.0 * gap
    diverge = [t for t, (x, y) in enumerate(zip(tok_a, tok_b)) if x != y]
    return EquivalenceReport(
        steps=a.shape[0],
        max_gap=max(gaps) if gaps else 0.0,
        identical=not diverge,
        first_divergence=diverge[0] if diverge else None,
        certified_steps=int(certs),
        tokens_a=tuple(tok_a),
        tokens_b=tuple(tok_b),
    )
