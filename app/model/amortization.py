"""The amortized query hypothesis as a cost/quality model.

Margins ``m`` (top-1 minus top-2 logit on the legal set, normalised to [0, 1]) follow a
Kumaraswamy(a, b) law: a two-parameter family on [0, 1] with a closed-form CDF, so the refine
probability ``p(τ) = P(m < τ)`` needs no special functions and runs unchanged in Pyodide.

Amortized logits are within ``ε`` of the exact ones (each logit off by at most ε, uniformly).
The top-2 difference then errs by a triangular amount on ``[-2ε, 2ε]``, so a step with true margin
``m`` picks the wrong token with probability ``(1 - m/(2ε))² / 2`` for ``m < 2ε`` and never above:
that is the margin certificate, and ``τ = 2ε`` is the *safe τ* — refining every step below it
makes the amortized plan decode exactly what full recomputation decodes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .costs import Cost
from .validate import check_array, check_float, check_int

__all__ = [
    "MarginDistribution",
    "error_given_margin",
    "safe_tau",
    "refine_probability",
    "decision_error_rate",
    "expected_step_cost",
    "decode_totals",
]

_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(64)


@dataclass(frozen=True)
class MarginDistribution:
    """Kumaraswamy(a, b) on [0, 1]: ``F(m) = 1 - (1 - m^a)^b``. Defaults give mean ≈ 0.36."""

    a: float = 1.2
    b: float = 2.5

    def __post_init__(self):
        check_float("margin_a", self.a, 0.05, 50.0)
        check_float("margin_b", self.b, 0.05, 50.0)

    def cdf(self, m):
        m = np.clip(np.asarray(m, dtype=np.float64), 0.0, 1.0)
        return 1.0 - (1.0 - m**self.a) ** self.b

    def pdf(self, m):
        m = np.clip(np.asarray(m, dtype=np.float64), 1e-300, 1.0)
        return self.a * self.b * m ** (self.a - 1.0) * (1.0 - m**self.a) ** (self.b - 1.0)

    def sample(self, rng: np.random.Generator, size) -> np.ndarray:
        """Inverse-CDF draws: ``m = (1 - (1-u)^(1/b))^(1/a)``."""
        if not isinstance(rng, np.random.Generator):
            raise ValueError(f"The 'rng' parameter must be a numpy.random.Generator. Got {rng!r}.")
        u = rng.random(size)
        return (1.0 - (1.0 - u) ** (1.0 / self.b)) ** (1.0 / self.a)

    @property
    def mean(self) -> float:
        # E[m] = b·B(1 + 1/a, b); evaluated by quadrature to avoid a gamma function.
        return float(_integrate(lambda m: m * self.pdf(m), 0.0, 1.0))


def _integrate(f, lo, hi):
    """64-point Gauss–Legendre on [lo, hi] (broadcasts over array ``lo``)."""
    lo = np.asarray(lo, dtype=np.float64)[..., None]
    hi = np.asarray(hi, dtype=np.float64)[..., None]
    half = 0.5 * (hi - lo)
    return (half * _WEIGHTS * f(lo + half * (_NODES + 1.0))).sum(-1)


def safe_tau(eps) -> float:
    """Smallest τ at which the margin certificate guarantees the exact token: ``2·ε``."""
    return 2.0 * check_float("eps", eps, 0.0, 0.5, lo_open=True)


def error_given_margin(m, eps):
    """P(amortized top-1 ≠ exact top-1 | true margin m) = ``(1 - m/(2ε))² / 2`` below ``2ε``."""
    eps = check_float("eps", eps, 0.0, 0.5, lo_open=True)
    m = check_array("m", m)
    deficit = np.clip(1.0 - m / (2.0 * eps), 0.0, None)
    return 0.5 * deficit**2


def refine_probability(tau, dist: MarginDistribution = MarginDistribution()):
    """``p(τ) = P(m < τ)``; τ may be an array."""
    tau = check_array("tau", tau, 0.0, None)
    return dist.cdf(tau)


def decision_error_rate(tau, eps, dist: MarginDistribution = MarginDistribution()):
    """Expected wrong-token rate of amortized scoring that refines below τ:
    ``∫_τ^{2ε} P(err | m) f(m) dm`` (zero for ``τ ≥ 2ε``)."""
    tau = check_array("tau", tau, 0.0, None)
    top = min(safe_tau(eps), 1.0)
    lo = np.minimum(tau, top)
    rate = _integrate(lambda m: error_given_margin(m, eps) * dist.pdf(m), lo, top)
    return np.where(tau >= top, 0.0, rate)


def expected_step_cost(amortized: Cost, refine: Cost, p_refine) -> Cost:
    """Amortized-with-refine per step: the amortized work always runs (its margin decides), and
    the exact step follows with probability ``p``: ``E = amortized + p · refine``."""
    p = check_array("p_refine", p_refine, 0.0, 1.0)
    return amortized + refine.scale(p)


def decode_totals(amortized_s, full_s, setup_s) -> dict:
    """Cumulative cost of a decode of every length ``N = 1..len`` for both strategies.

    Parameters
    ----------
    amortized_s, full_s : array, shape (N_max,)
        Expected per-step seconds at decode positions ``0..N_max-1``.
    setup_s : float
        One-off cost of the amortized strategy (fitting the stable state) in seconds.

    Returns a dict with ``n`` (1..N_max), ``amortized_total``, ``full_total`` and ``n_star``: the
    shortest decode for which amortizing is no more expensive in total (``None`` if it never is).
    """
    amortized_s = check_array("amortized_s", amortized_s, 0.0, None, shape=(None,))
    full_s = check_array("full_s", full_s, 0.0, None, shape=(len(amortized_s),))
    setup_s = check_float("setup_s", setup_s, 0.0, None)
    check_int("len(amortized_s)", len(amortized_s), 1, None)
    amortized_total = setup_s + np.cumsum(amortized_s)
    full_total = np.cumsum(full_s)
    wins = np.flatnonzero(amortized_total <= full_total)
    return {
        "n": np.arange(1, len(full_s) + 1),
        "amortized_total": amortized_total,
        "full_total": full_total,
        "n_star": int(wins[0]) + 1 if len(wins) else None,
    }
