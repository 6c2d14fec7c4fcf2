"""LiveRun (the app's play button) against whole runs, and measured_crossover's edges."""

import numpy as np
import pytest

from app.measure.answers import measured_crossover
from app.model import PLAN_NAMES, Scenario
from app.router import Drift, LiveRun, regret_report, run_routers, scenario_stream

S = Scenario(horizon=600, seed=3)


def test_chunks_add_up_to_the_whole_run():
    live = LiveRun(S, "linucb")
    parts = [live.advance(n) for n in (1, 50, 200, 1000)]
    assert live.done and live.t == 600 and len(parts[-1]["step"]) == 349
    curve = np.concatenate([p["dynamic_regret"] for p in parts])
    _, runs = run_routers(S, ("linucb",), stream=live.stream)
    arms, report = runs["linucb"]
    assert np.array_equal(live.arms, arms)
    assert np.allclose(curve, report.dynamic_curve)
    assert live.summary()["dynamic_regret"] == pytest.approx(report.dynamic_regret)
    assert live.advance(10)["step"].size == 0  # done: nothing more


def test_same_seed_same_curve_and_reset_replays():
    a, b = LiveRun(S, "lints"), LiveRun(S, "lints")
    first = a.advance(300)["dynamic_regret"]
    assert np.array_equal(first, b.advance(300)["dynamic_regret"])
    a.reset()
    assert a.t == 0 and np.array_equal(a.advance(300)["dynamic_regret"], first)


def test_reference_curves_and_summary_at_start():
    live = LiveRun(S)
    assert live.summary() == {"router": "linucb", "steps": 0, "dynamic_regret": 0.0}
    ref = live.reference_curves()
    expected = live.stream.expected
    assert ref["always_dense"][-1] == pytest.approx((expected[:, 0] - expected.min(1)).sum())
    assert ref["best_fixed"][-1] <= ref["always_dense"][-1]
    report = regret_report(expected, np.zeros(600, dtype=np.int64))
    assert ref["always_dense"][-1] == pytest.approx(report.dynamic_regret)


def test_bad_arguments():
    with pytest.raises(ValueError, match="'router' parameter"):
        LiveRun(S, "ucb1")
    with pytest.raises(ValueError, match="not both"):
        LiveRun(S, drift=Drift(), stream=scenario_stream(S))
    with pytest.raises(ValueError, match="'n' parameter"):
        LiveRun(S).advance(0)


def test_measured_crossover():
    ks = [1, 10, 100, 1000]
    assert measured_crossover(ks, [1.0, 2.0, 3.0, 4.0], 2.5)[0] == 10
    assert measured_crossover(ks, [3.0, 3.0, 3.0, 3.0], 2.5) == (None, None)
    assert measured_crossover(ks, [1.0, 1.0, 1.0, 1.0], 2.5) == (1000, 1000.0)
    k_grid, k_interp = measured_crossover(ks, [1.0, 2.0, 3.0, 4.0], 2.5)
    assert 10 < k_interp < 100
    with pytest.raises(ValueError, match="'ks' and 'sparse_s'"):
        measured_crossover([], [], 1.0)


@pytest.mark.parametrize("name", ["linucb", "experts-exp4", "threshold"])
def test_running_summary_equals_the_report_of_the_steps_so_far(name):
    live = LiveRun(S, name)
    for n in (7, 93, 211):
        live.advance(n)
        report = regret_report(live.stream.expected[: live.t], live.arms).to_dict(curves=False)
        summ = live.summary()
        assert summ["steps"] == live.t
        for key in ("total_loss", "oracle_loss", "best_fixed_loss", "dynamic_regret"):
            assert summ[key] == pytest.approx(report[key], rel=1e-9, abs=1e-12), key
        assert summ["static_regret"] == pytest.approx(report["static_regret"], abs=1e-9)
        assert summ["regret_pct"] == pytest.approx(report["regret_pct"], rel=1e-9)
        assert summ["best_fixed_arm"] == report["best_fixed_arm"]
        assert summ["shares"] == pytest.approx(report["shares"])


def test_summary_cost_does_not_grow_with_the_steps_run():
    # Running totals: the summary holds no per-step list, whatever the step.
    live = LiveRun(Scenario(horizon=5000, seed=1))
    live.advance(4000)
    summ = live.summary()
    assert all(not isinstance(v, list) or len(v) == len(PLAN_NAMES) for v in summ.values())


def test_curve_equals_the_streamed_chunks():
    live = LiveRun(S, "sw-linucb")
    parts = [live.advance(n) for n in (3, 100, 40)]
    step, curve = live.curve()
    assert np.array_equal(step, np.concatenate([p["step"] for p in parts]))
    assert np.array_equal(curve, np.concatenate([p["dynamic_regret"] for p in parts]))
