"""The ``auto`` rule recalibrated online from measured head times converges to the measured
crossover from a wrong preset (synthetic timings here; the engine test runs the real loop)."""

import numpy as np
import pytest

from app.engine.recalibrate import OnlineRule


def _run(rule, steps, rng, base=1e-3, slope=2e-6, dense=0.02, noise=0.05):
    def seconds(plan, k):
        true = base + slope * k if plan == "SparseHead" else dense
        return true * (1 + noise * rng.standard_normal())

    for _ in range(steps):
        k = int(np.exp(rng.uniform(np.log(2), np.log(49152))))
        plan = rule.select(k)
        rule.observe(plan, k, seconds(plan, k))
        if rule.probe():
            other = "DenseHead" if plan == "SparseHead" else "SparseHead"
            rule.observe(other, k, seconds(other, k))


@pytest.mark.parametrize("preset", ["h100", "cpu"])
def test_converges_to_the_measured_crossover_from_a_preset(preset):
    rng = np.random.default_rng(0)
    rule = OnlineRule(576, 49152, preset, probe_every=8)
    start = rule.k_star
    _run(rule, 2000, rng)
    truth = (0.02 - 1e-3) / 2e-6  # 9,500
    assert abs(rule.k_star - truth) / truth < 0.1
    assert abs(start - truth) / truth > 0.1 or preset == "cpu"
    assert len(rule.history) > 10 and rule.to_dict()["dense_samples"] > 0


def test_bad_parameters():
    with pytest.raises(ValueError, match="probe_every"):
        OnlineRule(576, 49152, probe_every=0)
    with pytest.raises(ValueError, match="min_samples"):
        OnlineRule(576, 49152, min_samples=1)
