"""A sweep's answer: measured columns beside the modelled ones, and the crossovers.

Pure functions over stored rows; :meth:`app.measure.sweeps.Runner.result` feeds them.
``entry(plan, **fields)`` returns ``(row, model_s, model_preset_s)`` of one point.
"""

from __future__ import annotations

import numpy as np

from ..model import decode_totals, find_crossover

__all__ = ["measured_crossover", "head_answer", "body_answer", "n_star"]

_STATS = ("median_s", "p10_s", "p25_s", "p75_s", "p90_s", "samples", "stable", "tokens_match")


def measured_crossover(ks, sparse_s, dense_s) -> tuple:
    """``(K on the grid, K interpolated)``: the last K of the first run of grid points where the
    sparse head is no slower than the dense one, and where the log-log line between it and the
    next grid point crosses the dense time. ``(None, None)`` when sparse loses at the first K."""
    ks, sparse_s = np.asarray(ks, dtype=np.float64), np.asarray(sparse_s, dtype=np.float64)
    if ks.ndim != 1 or len(ks) == 0 or sparse_s.shape != ks.shape:
        raise ValueError(
            f"The 'ks' and 'sparse_s' parameters must be equally long non-empty 1-D arrays. "
            f"Got shapes {ks.shape} and {sparse_s.shape}."
        )
    wins = sparse_s <= dense_s
    if not wins[0]:
        return None, None
    lost = np.flatnonzero(~wins)
    if not len(lost):
        return int(ks[-1]), float(ks[-1])
    i = int(lost[0])
    x0, x1 = np.log(ks[i - 1]), np.log(ks[i])
    y0, y1, yd = np.log(sparse_s[i - 1]), np.log(sparse_s[i]), np.log(dense_s)
    frac = (yd - y0) / (y1 - y0) if y1 != y0 else 0.0
    return int(ks[i - 1]), float(np.exp(x0 + frac * (x1 - x0)))


def _column(entries) -> dict:
    """Per-plan columns from ``(row, model_s, model_preset_s)`` triples."""
    out = {n: [r[n] for r, _, _ in entries] for n in _STATS}
    out["iqr_s"] = [r["p75_s"] - r["p25_s"] for r, _, _ in entries]
    out["model_s"] = [float(m) for _, m, _ in entries]
    out["model_preset_s"] = [float(mp) for _, _, mp in entries]
    return out


def head_answer(s, entry, hw, preset) -> dict:
    """``k``, per-plan columns over K (the dense head's one measurement repeated) and the
    measured, modelled (``hw``) and preset-modelled crossovers of a head sweep ``s``."""
    shape = dict(d=s.d, vocab=s.vocab, batch=s.batch, dtype=s.dtype)
    dense = entry("dense_head", **shape)
    sparse = [entry("sparse_head", k=k, **shape) for k in s.k]
    sparse_med = [r["median_s"] for r, _, _ in sparse]
    k_grid, k_interp = measured_crossover(s.k, sparse_med, dense[0]["median_s"])
    args = (s.d, s.vocab, s.batch, s.dtype)
    return {
        "k": list(s.k),
        "plans": {"dense_head": _column([dense] * len(s.k)), "sparse_head": _column(sparse)},
        "crossover": {
            "k_flop": s.vocab,
            "measured_k": k_grid,
            "measured_k_interp": k_interp,
            "model_k": find_crossover(*args, hw).k_roofline,
            "model_k_preset": find_crossover(*args, preset).k_roofline,
        },
    }


def body_answer(s, entry) -> dict:
    """Columns over context of an amortized sweep ``s``, speedups over the full step, and the
    decode length from which amortizing pays (measured and modelled)."""
    body = dict(d=s.d, vocab=s.vocab, batch=s.batch, dtype=s.dtype, k=s.k, layers=s.layers)
    am = entry("amortized_step", **body)
    full = [entry("full_step", context=c, **body) for c in s.context]
    rerank = [entry("amortized_rerank", context=c, rerank_r=s.rerank_r, **body) for c in s.context]
    plans = {
        "full_step": _column(full),
        "amortized_step": _column([am] * len(s.context)),
        "amortized_rerank": _column(rerank),
    }
    f_med = np.array(plans["full_step"]["median_s"])
    return {
        "context": list(s.context),
        "plans": plans,
        "speedup": {
            "amortized_vs_full": (f_med / am[0]["median_s"]).tolist(),
            "rerank_vs_full": (f_med / np.array(plans["amortized_rerank"]["median_s"])).tolist(),
        },
        "crossover": {
            "warmup_steps": s.warmup_steps,
            "start_context": s.context[0],
            "refine": "none (every step amortized after the warm-up)",
            "measured_n": n_star(s.context, f_med, am[0]["median_s"], s.warmup_steps),
            "model_n": n_star(s.context, plans["full_step"]["model_s"], am[1], s.warmup_steps),
        },
    }


def n_star(context, full_s, amortized_s, warmup_steps):
    """Shortest decode, from the first context on, for which amortizing after ``warmup_steps``
    exact steps costs no more in total (``None`` within the measured range if never). The
    per-step full cost is interpolated linearly over ``context``."""
    full_s = np.asarray(full_s, dtype=np.float64)
    ctx = np.asarray(context, dtype=np.float64)
    positions = np.arange(ctx[0], ctx[-1] + 1)
    per_step = np.interp(positions, ctx, full_s)
    amortized = np.full(len(positions), float(amortized_s))
    return decode_totals(amortized, per_step, warmup_steps * full_s[0])["n_star"]
