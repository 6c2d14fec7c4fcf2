"""Runtime recalibration of the ``auto`` rule: measured head times move K* online.

:class:`OnlineRule` starts from a hardware preset's roofline K* (possibly the wrong machine's)
and keeps, from the steps it runs, a least-squares line of SparseHead's measured seconds over K
and the mean of DenseHead's. Every ``probe_every``-th scored step it also times the head it did
*not* pick on the same state (a probe; its cost is counted in the step), so both plans stay
measured whichever side of K* the workload sits. Once each has ``min_samples`` measurements,
K* = the K where the fitted SparseHead line meets DenseHead's mean — the measured crossover of
the machine the engine runs on. ``history`` records K* after every update.

:class:`RecalibratingPolicy` is the decode policy that runs it (``DecodeOptions(recalibrate=
preset)``): it reads each exact step's measured head time from the next step's telemetry and
runs the probes itself, so the decode loop knows nothing of recalibration.
"""

from __future__ import annotations

import time

import numpy as np

from .plans import dense_head, sparse_head
from .results import Telemetry
from .rule import CostRule, rule_plan

__all__ = ["OnlineRule", "RecalibratingPolicy"]

_HEADS = {"DenseHead": dense_head, "SparseHead": sparse_head}


class OnlineRule:
    """The ``auto`` rule with K* recalibrated from measured head seconds (see module doc)."""

    def __init__(
        self, d: int, vocab: int, preset: str = "cpu", probe_every: int = 16, min_samples: int = 4
    ):
        if isinstance(probe_every, bool) or not isinstance(probe_every, int) or probe_every < 1:
            raise ValueError(f"probe_every must be an integer >= 1, got {probe_every!r}")
        if isinstance(min_samples, bool) or not isinstance(min_samples, int) or min_samples < 2:
            raise ValueError(f"min_samples must be an integer >= 2, got {min_samples!r}")
        self.preset = CostRule(d, vocab, preset)
        self.vocab, self.probe_every, self.min_samples = vocab, probe_every, min_samples
        self.k_star = self.preset.k_star
        self._sparse = [0, 0.0, 0.0, 0.0, 0.0]  # n, Σk, Σs, Σk², Σks
        self._dense = [0, 0.0]  # n, Σs
        self._scored = 0
        self.history: list[int] = [self.k_star]

    @property
    def hardware(self) -> str:
        return self.preset.hardware

    def select(self, k: int, cached: bool = True) -> str:
        return rule_plan(k, self.k_star, cached)

    def probe(self) -> bool:
        """Whether this scored step should also time the other head."""
        self._scored += 1
        return self._scored % self.probe_every == 0

    def observe(self, plan: str, k: int, seconds: float) -> None:
        """One measured head time; refits K* when both heads have enough samples."""
        if not seconds > 0:
            return
        if plan == "SparseHead":
            s = self._sparse
            s[0] += 1
            s[1] += k
            s[2] += seconds
            s[3] += k * k
            s[4] += k * seconds
        elif plan == "DenseHead":
            self._dense[0] += 1
            self._dense[1] += seconds
        else:
            return
        self._refit()

    def _refit(self) -> None:
        n, sk, ss, skk, sks = self._sparse
        nd, sd = self._dense
        if n < self.min_samples or nd < self.min_samples:
            return
        var = n * skk - sk * sk
        if var <= 0:
            return
        slope = (n * sks - sk * ss) / var
        base = (ss - slope * sk) / n
        dense = sd / nd
        if slope <= 0:
            k_star = self.vocab if base < dense else 0
        else:
            k_star = int(max(0.0, min(float(self.vocab), (dense - base) / slope)))
        self.k_star = k_star
        self.history.append(k_star)

    def to_dict(self) -> dict:
        return {
            "rule": "online",
            "hardware": self.preset.hardware,
            "preset_k_star": self.preset.k_star,
            "k_star": self.k_star,
            "sparse_samples": self._sparse[0],
            "dense_samples": self._dense[0],
            "vocab": self.vocab,
        }


class RecalibratingPolicy:
    """``--plan auto`` under an :class:`OnlineRule` (a :class:`~app.engine.routing.Policy`).

    ``choose`` feeds the rule the last exact step's measured head seconds (``tel.last_head``),
    names the rule's plan, and on every ``probe_every``-th head step also times the other head
    over the same legal set on ``output`` (the engine's head, or a (V_pad, d) matrix) — a head's
    time does not depend on the state's values, so a fixed state serves; the probe's time is
    counted in the step.
    """

    def __init__(self, rule: OnlineRule, output):
        self.rule, self.output = rule, output
        d = output.shape[1]
        self._h = np.full(d, d**-0.5, dtype=np.float32)

    def choose(self, tel: Telemetry) -> str:
        if tel.last_head is not None:
            self.rule.observe(*tel.last_head)
        plan = self.rule.select(tel.k)
        if plan in _HEADS and self.rule.probe():
            other = "SparseHead" if plan == "DenseHead" else "DenseHead"
            t0 = time.perf_counter()
            _HEADS[other](self.output, self._h, tel.legal)
            self.rule.observe(other, tel.k, time.perf_counter() - t0)
        return plan

    def feedback(self, index: int, plan: str, seconds: float) -> None:
        pass

    def finish(self) -> None:
        pass
