"""A deterministic synthetic stream of constrained decode steps, priced by the cost model.

Each step draws a context — legal-set size K, top-1 margin, decode position, KV-cache misses —
and every plan's true expected loss ``ℓ(a) = λ·latency(a)/latency_ref + (1-λ)·quality_loss(a)``.
Latency comes from app/model's roofline costs (or, in server mode, from a measured table with the
same signature); quality loss is the amortization model's wrong-token probability. Observed losses
add Gaussian noise. All randomness comes from the one ``numpy.random.Generator`` passed in.

Context features (``FEATURES``, defined with the other workloads' in
:mod:`app.router.features`), each scaled to about [-1, 1]:

* ``bias``            constant 1
* ``log_k_ratio``     log(K/|V|) / log|V|, in [-1, 0]
* ``branching``       K/|V|, the share of the vocabulary that is legal
* ``margin``          top-1 minus top-2 logit on the legal set, normalised to [0, 1]
* ``position``        decode position / the longest position of the run
* ``cache_miss``      positions missing from the KV cache / the longest position
* ``margin_deficit``  (1 - margin/(2ε))² below the certificate's safe τ = 2ε, else 0 — the
                      telemetry a planner derives from the margin and the measured ε
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..model import (
    PLAN_NAMES,
    PLANS,
    Scenario,
    Setting,
    Step,
    check_plans,
    error_given_margin,
    plan_quality,
    plan_seconds,
)
from ..model.validate import check_float, check_instance, check_int
from .features import SYNTHETIC_FEATURES, synthetic_features

__all__ = ["FEATURES", "Drift", "Stream", "model_latency", "make_stream"]

#: The synthetic workload's features (defined in :mod:`app.router.features`).
FEATURES = SYNTHETIC_FEATURES

LatencyFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def model_latency(s: Scenario, plans=PLANS) -> LatencyFn:
    """Per-step seconds of every plan in ``plans`` (the registry's) from the roofline model.

    Returns ``f(k, context, miss) -> (T, A)`` for arrays of legal-set sizes, decode positions and
    KV-cache miss fractions, composed by :func:`app.model.plan_seconds` from the registry's
    recipes. The amortized arms never refine here: in the router's world the refine decision is
    the router's own (it picks an exact plan instead). No step here forces a run of tokens, so
    ForcedToken costs one forward over one position where K = 1 and is DenseHead elsewhere.
    """
    check_instance("s", s, Scenario)
    plans = check_plans(plans)
    c = Setting.of(s)

    def latency(k, context, miss):
        k, context, miss = (np.asarray(a, dtype=np.float64) for a in (k, context, miss))
        return plan_seconds(c, Step(k, context, miss * context), plans=plans)

    return latency


@dataclass(frozen=True)
class Drift:
    """Piecewise-stationary drift: at the change points (fractions of the horizon) the latency
    weight λ and a co-tenant ``slowdown`` of every latency step through the listed values
    (cycling). Both move the loss's linear parameters, so the variation budget is the sum over
    change points of ``max_a ‖θ_a,new − θ_a,old‖``. The default points are irregular so that no
    restart period lines up with them by luck."""

    change_points: tuple = (0.22, 0.47, 0.71)
    lam: tuple = (0.6, 0.02)
    slowdown: tuple = (1.0, 1.0)

    def __post_init__(self):
        points = [check_float("change_points", c, 0.0, 1.0, True, True) for c in self.change_points]
        if points != sorted(set(points)):
            raise ValueError("The 'change_points' parameter must be strictly increasing.")
        for name in ("lam", "slowdown"):
            if len(getattr(self, name)) == 0:
                raise ValueError(f"The '{name}' parameter must hold at least one value. Got ().")
        for v in self.lam:
            check_float("lam", v, 0.0, 1.0)
        for v in self.slowdown:
            check_float("slowdown", v, 0.0, 1e3, lo_open=True)

    @property
    def segments(self) -> int:
        return len(self.change_points) + 1


@dataclass(frozen=True)
class Stream:
    """A generated run. Arrays over steps ``T``, plans ``A`` (the registry's), features ``F = 7``.

    ``X`` (T, F) contexts; ``expected`` (T, A) true expected losses; ``observed`` (T, A) noisy
    losses; ``latency_s`` (T, A) seconds; ``k``, ``position``, ``margin``, ``cache_miss``,
    ``lam``, ``slowdown`` (T,); ``theta`` (segments, A, F) least-squares linear parameters of the
    expected loss per segment; ``variation_budget`` V_T; ``linear_r2`` how linear the loss is.
    """

    X: np.ndarray
    expected: np.ndarray
    observed: np.ndarray
    latency_s: np.ndarray
    k: np.ndarray
    position: np.ndarray
    margin: np.ndarray
    cache_miss: np.ndarray
    lam: np.ndarray
    slowdown: np.ndarray
    theta: np.ndarray
    variation_budget: float
    linear_r2: float
    plans: tuple[str, ...] = PLAN_NAMES  # the arms' plan names, in the registry's order

    @property
    def steps(self) -> int:
        return self.X.shape[0]


def _contexts(s: Scenario, steps: int, rng: np.random.Generator, free_text: float, cold: float):
    """Draw K, margin, decode position and cache-miss fraction for ``steps`` steps."""
    free = rng.random(steps) < free_text
    lo, hi = max(1.0, s.k / 16.0), min(float(s.vocab), s.k * 16.0)
    k_struct = np.exp(rng.uniform(np.log(lo), np.log(hi), steps))
    k_free = rng.uniform(0.3, 1.0, steps) * s.vocab  # free-text spans: most tokens are legal
    k = np.clip(np.round(np.where(free, k_free, k_struct)), 1, s.vocab)
    margin = s.margins.sample(rng, steps)
    position = s.context + np.arange(steps) % s.decode_length
    miss = np.where(rng.random(steps) < cold, rng.uniform(0.5, 1.0, steps), 0.0)
    return k, margin, position.astype(np.float64), miss


def make_stream(
    s: Scenario,
    steps: int,
    rng: np.random.Generator,
    *,
    noise: float = 0.01,
    free_text: float = 0.1,
    cold: float = 0.05,
    drift: Drift | None = None,
    latency: LatencyFn | None = None,
    plans=PLANS,
) -> Stream:
    """Generate ``steps`` decode steps for scenario ``s``.

    ``noise`` is the standard deviation of observed-loss noise; ``free_text`` the share of steps
    inside free-text spans (K a large share of |V|); ``cold`` the share of steps whose KV cache
    misses half or more of the context; ``drift`` makes the run piecewise-stationary;
    ``latency`` replaces the model's per-plan seconds (e.g. by measured ones); ``plans`` is the
    registry whose plans are the arms (the losses of a plan that does not apply to a step are its
    fallback's: ForcedToken's are DenseHead's wherever K > 1).
    """
    check_instance("s", s, Scenario)
    steps = check_int("steps", steps, 1, 10_000_000)
    noise = check_float("noise", noise, 0.0, 1.0)
    free_text = check_float("free_text", free_text, 0.0, 1.0)
    cold = check_float("cold", cold, 0.0, 1.0)
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"The 'rng' parameter must be a numpy.random.Generator. Got {rng!r}.")
    plans = check_plans(plans)
    latency = latency or model_latency(s, plans)
    k, margin, position, miss = _contexts(s, steps, rng, free_text, cold)
    X = synthetic_features(s, k, margin, position, miss)
    latency_s = np.asarray(latency(k, position, miss), dtype=np.float64)
    if latency_s.shape != (steps, len(plans)) or not np.isfinite(latency_s).all():
        raise ValueError(f"The latency table must be finite with shape {(steps, len(plans))}.")
    ref = float(latency(np.array([s.k]), np.array([float(s.context)]), np.zeros(1))[0, 0])
    err = error_given_margin(margin, s.eps)
    quality = plan_quality(s, k, err, plans)
    segment = _segments(steps, drift)
    lam = (
        np.full(steps, s.lam) if drift is None else np.asarray(drift.lam)[segment % len(drift.lam)]
    )
    slow = (
        np.ones(steps)
        if drift is None
        else np.asarray(drift.slowdown)[segment % len(drift.slowdown)]
    )
    lat_norm = latency_s / ref
    expected = lam[:, None] * slow[:, None] * lat_norm + (1.0 - lam[:, None]) * quality
    observed = expected + noise * rng.standard_normal(expected.shape)
    theta, r2 = _fit_theta(X, expected, segment)
    return Stream(
        X=X,
        expected=expected,
        observed=observed,
        latency_s=latency_s * slow[:, None],
        k=k,
        position=position,
        margin=margin,
        cache_miss=miss,
        lam=lam,
        slowdown=slow,
        theta=theta,
        variation_budget=_variation_budget(theta),
        linear_r2=r2,
        plans=tuple(p.name for p in plans),
    )


def _segments(steps: int, drift: Drift | None) -> np.ndarray:
    if drift is None:
        return np.zeros(steps, dtype=np.int64)
    bounds = np.floor(np.asarray(drift.change_points) * steps)
    return np.searchsorted(bounds, np.arange(steps), side="right")


def _fit_theta(X, expected, segment):
    """Least-squares θ per segment and arm; R² of the fit over all steps."""
    thetas, resid = [], 0.0
    for seg in np.unique(segment):
        rows = segment == seg
        theta, *_ = np.linalg.lstsq(X[rows], expected[rows], rcond=None)
        thetas.append(theta.T)
        resid += float(((X[rows] @ theta - expected[rows]) ** 2).sum())
    total = float(((expected - expected.mean(0)) ** 2).sum())
    return np.stack(thetas), 1.0 - resid / total if total > 0 else 1.0


def _variation_budget(theta) -> float:
    """``V_T = Σ over change points of max_a ‖θ_a,new − θ_a,old‖``."""
    if len(theta) < 2:
        return 0.0
    return float(np.linalg.norm(np.diff(theta, axis=0), axis=-1).max(-1).sum())
