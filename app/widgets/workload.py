"""The shipped real trace as the app shows it: read and summarised once per process.

Figure 1 draws its K histogram, Figure 2a its measured decision error over τ (normalised as the
model's τ is, by the trace's largest exact margin) beside the model's curve for the margin law
fitted to it, and Figure 3 replays it (:class:`~app.widgets.session.RouterSession`). Loaded only
when the real-trace workload is chosen, so a synthetic start-up does not pay for it.
"""

from __future__ import annotations

import functools

import numpy as np

from app.model import SCENARIO_LIMITS
from app.router.real_trace import error_over_tau, k_histogram, margin_fit, shipped_trace

__all__ = ["real_workload", "TAU_POINTS"]

#: Points of the measured error curve over normalised τ in [0, 1].
TAU_POINTS = 51


@functools.cache
def real_workload() -> dict:
    """``meta`` (the trace's), ``hist`` (:func:`~app.router.real_trace.k_histogram`), ``fit``
    (:func:`~app.router.real_trace.margin_fit` plus ``margin_a``/``margin_b`` clipped to the
    scenario's bounds), ``tau`` (TAU_POINTS,) normalised τ with the held-out ``error`` and
    ``accept`` shares at each."""
    trace = shipped_trace()
    fit = margin_fit(trace)
    fit["margin_a"] = float(np.clip(fit["a"], *SCENARIO_LIMITS["margin_a"]))
    fit["margin_b"] = float(np.clip(fit["b"], *SCENARIO_LIMITS["margin_b"]))
    tau = np.linspace(0.0, 1.0, TAU_POINTS)
    measured = error_over_tau(trace, tau * fit["scale"])
    return {
        "meta": trace["meta"],
        "hist": k_histogram(trace),
        "fit": fit,
        "tau": tau,
        "error": measured["error"],
        "accept": measured["accept"],
        "steps": measured["steps"],
    }
