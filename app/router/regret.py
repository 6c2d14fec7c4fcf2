"""Regret accounting against true expected losses (paper Section 4).

With ``expected`` of shape ``(T, n_arms)`` (true expected loss of every plan at every step) and the
played ``arms`` of shape ``(T,)``:

* dynamic regret ``R_t^dyn = sum_{s<=t} expected[s, a_s] - min_a expected[s, a]`` (per-step oracle);
* static regret ``R_t^stat = sum_{s<=t} expected[s, a_s] - expected[s, a+]`` with
  ``a+ = argmin_a sum_s expected[s, a]`` the best fixed plan in hindsight over the whole horizon.

Regret is measured on expected, not noisy, losses so the curves show the policy, not the noise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from app.model.validate import check_array, check_int

__all__ = [
    "step_loss",
    "cumulative_loss",
    "dynamic_regret",
    "static_regret",
    "best_fixed_arm",
    "regret_percent",
    "plan_shares",
    "loglog_slope",
    "RegretReport",
    "regret_report",
]


def _check(expected, arms):
    expected = check_array("expected", expected, shape=(None, None))
    T, n = expected.shape
    arms = check_array("arms", arms, lo=0, hi=n - 1, integer=True, shape=(T,))
    return expected, arms


def step_loss(expected, arms) -> np.ndarray:
    """Expected loss of the played arm at every step, shape ``(T,)``."""
    expected, arms = _check(expected, arms)
    return expected[np.arange(len(arms)), arms]


def cumulative_loss(expected, arms) -> np.ndarray:
    """Running sum of :func:`step_loss`, shape ``(T,)``."""
    return np.cumsum(step_loss(expected, arms))


def dynamic_regret(expected, arms) -> np.ndarray:
    """Cumulative regret against the per-step oracle ``argmin_a expected[t, a]``, shape ``(T,)``."""
    expected, arms = _check(expected, arms)
    return np.cumsum(step_loss(expected, arms) - expected.min(axis=1))


def best_fixed_arm(expected) -> int:
    """Plan of least total expected loss over the horizon (ties: lowest index)."""
    expected = check_array("expected", expected, shape=(None, None))
    return int(np.argmin(expected.sum(axis=0)))


def static_regret(expected, arms) -> np.ndarray:
    """Cumulative regret against the best fixed plan in hindsight, shape ``(T,)``; may be < 0."""
    expected, arms = _check(expected, arms)
    return np.cumsum(step_loss(expected, arms) - expected[:, best_fixed_arm(expected)])


def regret_percent(expected, arms) -> float:
    """Final dynamic regret as a percentage of the oracle's total expected loss."""
    expected, arms = _check(expected, arms)
    oracle = float(expected.min(axis=1).sum())
    regret = float(dynamic_regret(expected, arms)[-1]) if len(arms) else 0.0
    if oracle == 0.0:
        return 0.0 if regret == 0.0 else float("inf")
    return 100.0 * regret / oracle


def plan_shares(arms, n_arms: int, start: int = 0) -> np.ndarray:
    """Fraction of steps ``t >= start`` that played each plan, shape ``(n_arms,)``."""
    n_arms = check_int("n_arms", n_arms, 1)
    start = check_int("start", start, 0)
    arms = check_array("arms", arms, lo=0, hi=n_arms - 1, integer=True, shape=(None,))[start:]
    # intp: Pyodide (wasm32) bincount refuses int64 input.
    counts = np.bincount(arms.astype(np.intp), minlength=n_arms).astype(np.float64)
    return counts / max(len(arms), 1)


def loglog_slope(curve) -> float:
    """Least-squares slope of ``log R_t`` on ``log t`` over ``t in [T/2, T]`` with ``R_t > 0``.

    ``t`` is 1-based (``curve[0]`` is ``R_1``). A slope below 1 means sublinear growth; ``R_t =
    c t^0.5`` gives 0.5. Returns ``nan`` when fewer than two points qualify.
    """
    curve = check_array("curve", curve, shape=(None,))
    T = len(curve)
    t = np.arange(1, T + 1, dtype=np.float64)
    keep = (t >= T / 2.0) & (curve > 0)
    if keep.sum() < 2:
        return float("nan")
    lt, lr = np.log(t[keep]), np.log(curve[keep])
    lt_c = lt - lt.mean()
    return float((lt_c @ (lr - lr.mean())) / (lt_c @ lt_c))


@dataclass
class RegretReport:
    """Summary of one run against the oracle; :meth:`to_dict` is JSON-ready.

    Losses are totals of expected losses over the ``T`` steps; ``dynamic_curve`` and
    ``static_curve`` have length ``T``; the shares have length ``n_arms``.
    """

    T: int
    n_arms: int
    total_loss: float
    oracle_loss: float
    best_fixed_arm: int
    best_fixed_loss: float
    dynamic_regret: float
    static_regret: float
    regret_pct: float
    slope: float
    shares: list = field(default_factory=list)
    shares_last_half: list = field(default_factory=list)
    dynamic_curve: list = field(default_factory=list, repr=False)
    static_curve: list = field(default_factory=list, repr=False)

    def to_dict(self, curves: bool = True) -> dict:
        """Plain Python numbers and lists (non-finite summaries become ``None``).

        ``curves=False`` leaves the two length-``T`` curves out.
        """
        d = asdict(self)
        if not curves:
            d.pop("dynamic_curve")
            d.pop("static_curve")
        for key in ("regret_pct", "slope"):  # strict JSON has no NaN or Infinity
            if not np.isfinite(d[key]):
                d[key] = None
        return d


def regret_report(expected, arms) -> RegretReport:
    """Compute every summary of :class:`RegretReport` for one run."""
    expected, arms = _check(expected, arms)
    T, n = expected.shape
    dyn = dynamic_regret(expected, arms)
    stat = static_regret(expected, arms)
    best = best_fixed_arm(expected)
    return RegretReport(
        T=int(T),
        n_arms=int(n),
        total_loss=float(step_loss(expected, arms).sum()),
        oracle_loss=float(expected.min(axis=1).sum()),
        best_fixed_arm=best,
        best_fixed_loss=float(expected[:, best].sum()),
        dynamic_regret=float(dyn[-1]) if T else 0.0,
        static_regret=float(stat[-1]) if T else 0.0,
        regret_pct=regret_percent(expected, arms),
        slope=loglog_slope(dyn),
        shares=plan_shares(arms, n).tolist(),
        shares_last_half=plan_shares(arms, n, start=T // 2).tolist(),
        dynamic_curve=dyn.tolist(),
        static_curve=stat.tolist(),
    )
