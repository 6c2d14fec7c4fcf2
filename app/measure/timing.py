"""Timing done right: warm-up, repeated samples until the median is stable, and its spread.

A *sample* is the time of ``calls`` back-to-back calls divided by ``calls``. On a CPU, a fast
kernel is repeated within one sample until the sample lasts ``min_sample_s`` (as ``timeit``'s
autorange does), so the clock's resolution does not matter; with a cache flush before every
sample (``flush_bytes > 0``) each sample is a single cold call. On CUDA the clock records events
around the sample and synchronises on the end event (see ``kernels_torch.CudaEventClock``).

Stopping rule: after ``min_samples`` samples, stop as soon as ``IQR / median <= target_rel_spread``,
or at ``max_samples``; and stop whenever the samples have taken ``max_time_s`` and there are at
least three (so fewer than ``min_samples`` only when they would not fit in the budget): one
point costs about ``max(max_time_s, 3 samples)`` after warm-up. ``Timing.stable`` says which.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import numpy as np

from ..model.validate import check_float, check_int

__all__ = [
    "Clock",
    "PerfCounterClock",
    "TimingConfig",
    "Timing",
    "default_timing",
    "measure",
    "summarize",
]


class Clock:
    """Times a stretch of work: ``token = start()``, then ``seconds = stop(token)``.

    ``stop`` must wait until the work launched since ``start`` has finished (a CUDA clock
    synchronises there)."""

    def start(self):
        raise NotImplementedError

    def stop(self, token) -> float:
        raise NotImplementedError


class PerfCounterClock(Clock):
    """Wall-clock time from :func:`time.perf_counter` (CPU work is synchronous)."""

    def start(self):
        return time.perf_counter()

    def stop(self, token) -> float:
        return time.perf_counter() - token


@dataclass(frozen=True)
class TimingConfig:
    """How hard to try for a stable median. Times in seconds.

    ``flush_bytes``: bytes written before each sample to evict caches (0: warm caches, as when a
    kernel runs back to back; > 0: cold, as when the rest of a decode step ran in between).
    """

    warmup: int = 3
    min_samples: int = 10
    max_samples: int = 300
    max_time_s: float = 1.0
    target_rel_spread: float = 0.05
    min_sample_s: float = 2e-4
    flush_bytes: int = 0

    def __post_init__(self):
        check_int("warmup", self.warmup, 0, 1000)
        check_int("min_samples", self.min_samples, 1, 100_000)
        check_int("max_samples", self.max_samples, self.min_samples, 100_000)
        check_float("max_time_s", self.max_time_s, 0.0, 3600.0)
        check_float("target_rel_spread", self.target_rel_spread, 0.0, 10.0)
        check_float("min_sample_s", self.min_sample_s, 0.0, 10.0)
        check_int("flush_bytes", self.flush_bytes, 0, 1 << 34)

    @property
    def cache(self) -> str:
        """``'cold'`` or ``'warm'``: part of a stored result's key."""
        return "cold" if self.flush_bytes else "warm"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Timing:
    """Summary of one measured kernel, all in seconds per call.

    ``samples`` samples of ``calls`` calls each; ``stable`` is True when the stopping rule's
    spread target was met (otherwise a time or sample limit ended the run).
    """

    median_s: float
    p10_s: float
    p25_s: float
    p75_s: float
    p90_s: float
    mean_s: float
    min_s: float
    samples: int
    calls: int
    stable: bool

    @property
    def iqr_s(self) -> float:
        return self.p75_s - self.p25_s

    @property
    def rel_spread(self) -> float:
        """``IQR / median``."""
        return self.iqr_s / self.median_s if self.median_s > 0 else math.inf

    def to_dict(self) -> dict:
        out = asdict(self)
        out["iqr_s"] = self.iqr_s
        return out

    def scaled(self, times: int) -> Timing:
        """The timing of ``times`` equal runs in a row (a head measured in row blocks: one
        block's times, summed over the blocks); ``self`` for 1."""
        if times == 1:
            return self
        sec = ("median_s", "p10_s", "p25_s", "p75_s", "p90_s", "mean_s", "min_s")
        return replace(self, **{n: getattr(self, n) * times for n in sec})


def summarize(samples, calls: int, target_rel_spread: float) -> Timing:
    """Median, quartiles, p10/p90 of per-call ``samples`` (seconds)."""
    s = np.asarray(samples, dtype=np.float64)
    p10, p25, med, p75, p90 = np.percentile(s, [10, 25, 50, 75, 90])
    stable = bool(med > 0 and (p75 - p25) <= target_rel_spread * med)
    return Timing(
        median_s=float(med),
        p10_s=float(p10),
        p25_s=float(p25),
        p75_s=float(p75),
        p90_s=float(p90),
        mean_s=float(s.mean()),
        min_s=float(s.min()),
        samples=int(s.size),
        calls=int(calls),
        stable=stable,
    )


def _calls_per_sample(fn, clock: Clock, config: TimingConfig) -> int:
    """Autorange: enough calls that one sample lasts ``min_sample_s`` (1 when flushing).

    Probes 1, 10, 100, ... calls until a probe lasts a tenth of ``min_sample_s``, so one slow
    first call does not set the count."""
    if config.flush_bytes or config.min_sample_s <= 0:
        return 1
    n = 1
    while True:
        token = clock.start()
        for _ in range(n):
            fn()
        elapsed = clock.stop(token)
        if elapsed >= config.min_sample_s / 10 or n >= 1000:
            break
        n *= 10
    per_call = max(elapsed / n, 1e-9)
    return int(min(10_000, max(1, math.ceil(config.min_sample_s / per_call))))


def measure(
    fn: Callable[[], object],
    clock: Clock,
    config: TimingConfig = TimingConfig(),
    flush: Callable[[], object] | None = None,
) -> Timing:
    """Time ``fn()`` (no arguments; its result is ignored) per ``config``.

    ``flush`` runs before each sample, outside the timed stretch, when given.
    """
    for _ in range(config.warmup):
        fn()
    calls = _calls_per_sample(fn, clock, config)
    samples: list[float] = []
    spent = 0.0
    while len(samples) < config.max_samples:
        if flush is not None:
            flush()
        token = clock.start()
        for _ in range(calls):
            fn()
        elapsed = clock.stop(token)
        samples.append(elapsed / calls)
        spent += elapsed
        n = len(samples)
        if spent >= config.max_time_s and n >= min(3, config.min_samples):
            break  # slow kernels: the time budget wins over min_samples (3 samples at least)
        if n >= config.min_samples:
            if n % 5 == 0 or n == config.min_samples:
                q25, med, q75 = np.percentile(samples, [25, 50, 75])
                if med > 0 and q75 - q25 <= config.target_rel_spread * med:
                    break
    return summarize(samples, calls, config.target_rel_spread)


def default_timing(device: str) -> TimingConfig:
    """CUDA: one cold call per sample (a 256 MiB scratch buffer zeroed before each, events
    around it). CPU: warm caches, calls batched into samples of at least 0.2 ms."""
    if device == "cuda":
        return TimingConfig(
            warmup=5, min_samples=20, max_samples=300, max_time_s=1.0, min_sample_s=0.0,
            flush_bytes=256 << 20,
        )  # fmt: skip
    return TimingConfig()
