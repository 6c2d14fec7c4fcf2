"""Timing: warm-up, the stopping rule, autorange, flushes, and the summary statistics."""

import numpy as np
import pytest

from app.measure.timing import (
    Clock,
    PerfCounterClock,
    TimingConfig,
    default_timing,
    measure,
    summarize,
)


class ScriptedClock(Clock):
    """Each start/stop pair lasts the next scripted duration (the last one repeats)."""

    def __init__(self, durations):
        self.durations = list(durations)
        self.i = 0

    def start(self):
        return None

    def stop(self, token):
        d = self.durations[min(self.i, len(self.durations) - 1)]
        self.i += 1
        return d


class Counter:
    def __init__(self):
        self.calls = 0

    def __call__(self):
        self.calls += 1


def test_summary_statistics():
    t = summarize([1.0, 2.0, 3.0, 4.0, 5.0], calls=1, target_rel_spread=0.05)
    assert t.median_s == 3.0
    assert (t.p25_s, t.p75_s) == (2.0, 4.0)
    assert t.iqr_s == 2.0 and t.rel_spread == pytest.approx(2 / 3)
    assert t.p10_s == pytest.approx(1.4) and t.p90_s == pytest.approx(4.6)
    assert t.min_s == 1.0 and t.mean_s == 3.0 and not t.stable
    assert set(t.to_dict()) >= {"median_s", "p10_s", "p90_s", "iqr_s", "samples", "stable"}


def test_warmup_then_stops_at_min_samples_when_stable():
    fn = Counter()
    cfg = TimingConfig(warmup=4, min_samples=6, max_samples=100, min_sample_s=0.0)
    t = measure(fn, ScriptedClock([1e-3]), cfg)
    assert fn.calls == 4 + 6  # warm-up calls, then one call per sample
    assert t.samples == 6 and t.calls == 1 and t.stable and t.median_s == 1e-3


def test_noisy_samples_run_to_max_samples():
    noisy = [1e-3, 3e-3] * 100
    cfg = TimingConfig(warmup=0, min_samples=5, max_samples=40, max_time_s=100.0, min_sample_s=0)
    t = measure(Counter(), ScriptedClock(noisy), cfg)
    assert t.samples == 40 and not t.stable
    assert t.p10_s == pytest.approx(1e-3) and t.p90_s == pytest.approx(3e-3)


def test_time_budget_stops_early():
    noisy = [0.1, 0.3] * 100
    cfg = TimingConfig(warmup=0, min_samples=3, max_samples=1000, max_time_s=1.0, min_sample_s=0)
    t = measure(Counter(), ScriptedClock(noisy), cfg)
    assert t.samples == 6  # 0.1+0.3+0.1+0.3+0.1+0.3 >= 1.0 s


def test_autorange_batches_fast_calls():
    fn = Counter()
    # autorange probes: 1 call lasts 1e-5 s (too short), 10 calls 2e-4 s -> 2e-5 s a call,
    # so 10 calls make a 2e-4 s sample; every sample then lasts 2e-4 s
    clock = ScriptedClock([1e-5] + [2e-4] * 100)
    cfg = TimingConfig(warmup=0, min_samples=3, max_samples=3, min_sample_s=2e-4)
    t = measure(fn, clock, cfg)
    assert t.calls == 10
    assert t.median_s == pytest.approx(2e-5)
    assert fn.calls == 1 + 10 + 3 * 10


def test_flush_runs_before_every_sample_and_forces_single_calls():
    flushes = Counter()
    cfg = TimingConfig(warmup=1, min_samples=5, max_samples=5, flush_bytes=1 << 20)
    t = measure(Counter(), ScriptedClock([1e-3]), cfg, flush=flushes)
    assert flushes.calls == 5 and t.calls == 1
    assert cfg.cache == "cold" and TimingConfig().cache == "warm"


def test_real_clock_on_a_numpy_kernel():
    a = np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32)
    x = a[0].copy()
    cfg = TimingConfig(warmup=2, min_samples=5, max_samples=20, max_time_s=0.05)
    t = measure(lambda: a @ x, PerfCounterClock(), cfg)
    assert 0 < t.min_s <= t.p10_s <= t.median_s <= t.p90_s
    assert t.calls >= 1 and 5 <= t.samples <= 20


def test_defaults_per_device():
    assert default_timing("cpu").cache == "warm"
    cuda = default_timing("cuda")
    assert cuda.cache == "cold" and cuda.min_sample_s == 0.0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"warmup": -1}, r"'warmup' parameter must be an integer in \[0, 1000\]"),
        ({"min_samples": 10, "max_samples": 5}, r"'max_samples' parameter must be an integer"),
        ({"max_time_s": float("nan")}, r"'max_time_s' parameter must be a finite number"),
    ],
)
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TimingConfig(**kwargs)


def test_slow_kernels_stop_at_the_time_budget_after_three_samples():
    cfg = TimingConfig(warmup=0, min_samples=10, max_samples=100, max_time_s=1.0, min_sample_s=0)
    t = measure(Counter(), ScriptedClock([0.6]), cfg)
    assert t.samples == 3  # 1.8 s > 1 s budget, but never fewer than three samples
