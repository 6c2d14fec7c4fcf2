"""Fit a hardware profile to measurements, and say how far the cost model then is from them.

When every kernel is memory-bound the model's time of a measured plan ``i`` is linear in three
unknowns (:func:`app.backend.modelled.linear_features` gives the columns)::

    t_i = n_i·overhead + (s_i + g_i)·a + g_i·b,    a = 1/bandwidth,
                                                   b = 1/(bandwidth·gather_eff) - 1/bandwidth

with ``n`` kernels, ``s`` streamed and ``g`` gathered bytes. ``b ≥ 0`` is the constraint
``gather_eff ≤ 1``. We minimise the *relative* squared error ``Σ ((model_i - t_i) / t_i)²`` (rows
divided by ``t_i``, so microsecond and millisecond kernels count alike) under ``x ≥ 0`` by exact
non-negative least squares over the 2³ supports, then read off
``bandwidth = 1/a``, ``gather_eff = a/(a+b)``, ``overhead``. A second stage fits the peak FLOP/s
by a one-dimensional search where compute-bound points demand it (see :func:`calibrate`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from ..model import Hardware, get_hardware
from .modelled import linear_features, model_cost, model_seconds

__all__ = ["Calibration", "calibrate", "nnls", "relative_errors"]


def nnls(A, b) -> np.ndarray:
    """``argmin_{x ≥ 0} ‖A x - b‖²`` for a few columns, exactly.

    The optimum is the unconstrained least-squares solution on its own support, so trying every
    support and keeping the best feasible one finds it. ``A`` (n, m) with small m; ``b`` (n,).
    """
    A, b = np.asarray(A, dtype=np.float64), np.asarray(b, dtype=np.float64)
    m = A.shape[1]
    best, best_res = np.zeros(m), float(b @ b)
    for size in range(1, m + 1):
        for support in itertools.combinations(range(m), size):
            cols = list(support)
            x_s, *_ = np.linalg.lstsq(A[:, cols], b, rcond=None)
            if (x_s < 0).any():
                continue
            x = np.zeros(m)
            x[cols] = x_s
            r = A @ x - b
            res = float(r @ r)
            if res < best_res:
                best, best_res = x, res
    return best


def relative_errors(rows, hw: Hardware) -> dict:
    """Per plan: ``n`` and the median / p90 / max of ``|model - measured| / measured``."""
    measured = np.array([r["median_s"] for r in rows], dtype=np.float64)
    rel = np.abs(model_seconds(rows, hw) - measured) / measured
    plans = np.array([r["plan"] for r in rows])
    out = {}
    for plan in dict.fromkeys(plans.tolist()):
        e = rel[plans == plan]
        out[plan] = {
            "n": int(e.size),
            "median_abs_rel_err": float(np.median(e)),
            "p90_abs_rel_err": float(np.percentile(e, 90)),
            "max_abs_rel_err": float(e.max()),
        }
    out["all"] = {
        "n": int(rel.size),
        "median_abs_rel_err": float(np.median(rel)) if rel.size else float("nan"),
        "p90_abs_rel_err": float(np.percentile(rel, 90)) if rel.size else float("nan"),
        "max_abs_rel_err": float(rel.max()) if rel.size else float("nan"),
    }
    return out


@dataclass(frozen=True)
class Calibration:
    """A fitted profile and the model's error against the measurements it was fitted to.

    ``errors`` / ``base_errors``: :func:`relative_errors` with the fitted / the base profile.
    ``coefficients``: the fitted ``overhead_s``, ``s_per_byte`` (a) and ``s_per_gathered_byte``
    (a + b). ``notes``: anything the fit had to assume.
    """

    hardware: Hardware
    base: Hardware
    points: int
    errors: dict
    base_errors: dict
    coefficients: dict
    notes: list = field(default_factory=list)

    @property
    def median_error(self) -> float:
        return self.errors["all"]["median_abs_rel_err"]

    def to_dict(self) -> dict:
        return {
            "hardware": self.hardware.to_dict(),
            "base": self.base.name,
            "points": self.points,
            "errors": self.errors,
            "base_errors": self.base_errors,
            "coefficients": self.coefficients,
            "notes": list(self.notes),
        }


MIN_POINTS = 3
PEAK_GRID = 41  # candidate peak FLOP/s per decade-spanning search (stage 2)


def _linear_fit(F, t, base: Hardware, notes: list) -> tuple:
    """Stage 1: ``(overhead, a, b)`` by relative-error NNLS over rows ``F`` (n, 4), ``t`` (n,).

    ``b`` is ``None`` without gathered bytes (the base's efficiency is then kept)."""
    A = np.stack([F[:, 0], F[:, 1] + F[:, 2], F[:, 2]], axis=1) / t[:, None]
    has_gather = bool(F[:, 2].any())
    x = nnls(A if has_gather else A[:, :2], np.ones(len(t)))
    overhead, a = float(x[0]), float(x[1])
    if a <= 0:
        a = 1.0 / float(((F[:, 1] + F[:, 2]) / t).max())
        notes.append("the fit found no bandwidth term; bandwidth set to the best achieved rate")
    return overhead, a, (float(x[2]) if has_gather else None)


def _profile(base: Hardware, name, params, peak_scale=1.0) -> Hardware:
    overhead, a, b = params
    eff = a / (a + b) if b is not None else base.gather_efficiency
    return base.replace(
        name=name,
        bandwidth=1.0 / a,
        overhead=overhead,
        gather_efficiency=float(np.clip(eff, 1e-6, 1.0)),
        peak_flops={k: float(v * peak_scale) for k, v in base.peak_flops.items()},
    )


def _loss(rows, hw, t) -> float:
    """Mean squared relative error of the full (max-roofline) model."""
    return float((((model_seconds(rows, hw) - t) / t) ** 2).mean())


def calibrate(rows, base="cpu", name=None) -> Calibration:
    """Fit ``overhead``, ``bandwidth``, ``gather_efficiency`` (and, where the data demand it,
    the peak FLOP/s) of ``base`` to stored ``rows``.

    Stage 1 is the memory-bound NNLS above. Stage 2 searches one factor on ``base``'s peak
    FLOP/s (all dtypes alike), from the highest FLOP rate actually achieved up to ten times the
    base peak; for each candidate the stage-1 fit is redone on the rows that stay memory-bound,
    and the candidate with the least mean squared relative error of the full model wins (ties go
    to the higher peak, i.e. the base's when nothing is compute-bound). On a CPU, where a single
    core's skinny GEMM (batch > 1) is compute-bound far below a multi-core datasheet peak, this
    stage matters; on a GPU's memory-bound decode it keeps the base peak.

    ``rows``: dicts as :meth:`ResultStore.query` returns them, all of one device and
    implementation, at least three. Raises ``ValueError`` when they cannot pin the fit down.
    """
    base = get_hardware(base)
    rows = list(rows)
    if len(rows) < MIN_POINTS:
        raise ValueError(
            f"Calibration needs at least {MIN_POINTS} measured points; got {len(rows)}. "
            "Run a head sweep first."
        )
    devices = {(r["device"], r["impl"]) for r in rows}
    if len(devices) != 1:
        raise ValueError(f"Calibration rows must come from one device and impl; got {devices}.")
    name = name or f"{base.name} (calibrated)"
    t = np.array([r["median_s"] for r in rows], dtype=np.float64)
    F = linear_features(rows)  # (n, 4): kernels, stream, gather, flops
    notes: list = []
    if not F[:, 2].any():
        notes.append("no gathered bytes measured: gather_efficiency kept from the base profile")
    params = _linear_fit(F, t, base, notes)
    best_hw, best_loss, best_params = _profile(base, name, params), None, params
    best_loss = _loss(rows, best_hw, t)
    dtypes = {r["dtype"] for r in rows}
    achieved = max(float((F[:, 3] / t)[[r["dtype"] == dt for r in rows]].max()) / base.peak(dt)
                   for dt in dtypes)  # fmt: skip
    for scale in np.geomspace(10.0, min(achieved, 10.0), PEAK_GRID):
        cand = params
        for _ in range(2):
            hw = _profile(base, name, cand, scale)
            costs = [model_cost(r, hw) for r in rows]
            memory = np.array([float(c.memory_s) >= float(c.compute_s) for c in costs])
            if memory.sum() < MIN_POINTS:
                break
            cand = _linear_fit(F[memory], t[memory], base, [])
        hw = _profile(base, name, cand, scale)
        loss = _loss(rows, hw, t)
        if loss < best_loss * (1 - 1e-9):
            best_hw, best_loss, best_params = hw, loss, cand
    if best_hw.peak_flops != base.peak_flops:
        notes.append("peak FLOP/s scaled to fit compute-bound points")
    overhead, a, b = best_params
    return Calibration(
        hardware=best_hw,
        base=base,
        points=len(rows),
        errors=relative_errors(rows, best_hw),
        base_errors=relative_errors(rows, base),
        coefficients={
            "overhead_s": overhead,
            "s_per_byte": a,
            "s_per_gathered_byte": a + b if b is not None else a / base.gather_efficiency,
            "peak_scale": best_hw.peak_flops[next(iter(dtypes))] / base.peak(next(iter(dtypes))),
            "mean_sq_rel_err": best_loss,
        },
        notes=notes,
    )
