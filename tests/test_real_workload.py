"""The real-trace workload in the app (Figures 1-3 on the shipped trace) and its numbers."""

import numpy as np
import pytest

from app.harness_real import run_bench_real
from app.model import MarginDistribution
from app.router.real_trace import (
    error_over_tau,
    k_histogram,
    looped_stream,
    margin_fit,
    real_stream,
    shipped_trace,
)
from app.router.registry import LEARNERS, REAL_ROUTERS
from app.widgets.app import LLMQPApp
from app.widgets.embed import parse_params
from app.widgets.session import RouterSession
from app.widgets.state import URL_PARAMS, ScenarioState
from app.widgets.workload import real_workload


def test_looped_stream_is_passes_of_the_single_pass_replay():
    trace = shipped_trace()
    rng = np.random.Generator(np.random.PCG64(7))
    first, second = (real_stream(trace, int(rng.integers(0, 2**32 - 1))) for _ in range(2))
    looped = looped_stream(trace, 7, first.steps + 10)
    assert looped.steps == first.steps + 10 and looped.pass_steps == first.steps
    assert np.array_equal(looped.X[: first.steps], first.X)
    assert np.array_equal(looped.expected[first.steps :], second.expected[:10])
    assert looped.requests[: len(first.requests)] == first.requests
    with pytest.raises(ValueError, match="steps"):
        looped_stream(trace, 7, 0)


def test_k_histogram_and_measured_error_of_the_trace():
    trace = shipped_trace()
    h = k_histogram(trace)
    ks = np.array([s["k"] for s in trace["steps"]])
    assert np.isclose(h["share"].sum(), 1.0) and h["right"][-1] > h["vocab"]
    assert h["forced"] == pytest.approx((ks == 1).mean()) == pytest.approx(h["share"][0])
    e = error_over_tau(trace, [0.0, 2.0, 8.0, 1e9])
    assert e["accept"][0] == 1.0 and e["accept"][-1] == 0.0 and e["error"][-1] == 0.0
    assert (np.diff(e["accept"]) <= 0).all() and (np.diff(e["error"]) <= 0).all()
    assert (e["error"] <= e["accept"]).all() and e["steps"] > 100


def test_margin_fit_recovers_a_known_law():
    rng = np.random.Generator(np.random.PCG64(3))
    m = MarginDistribution(2.0, 3.0).sample(rng, 4000) * 10.0
    steps = [
        {"request": "r", "idx": i, "k": 5, "pred_margin": 1.0, "pred_correct": True, "margin": x}
        for i, x in enumerate(m)
    ]
    fit = margin_fit({"meta": {"vocab": 100}, "steps": steps})
    assert fit["scale"] == pytest.approx(m.max())
    # the law of m / max(m), close to Kumaraswamy(2, 3) since max(m) is near 10
    assert fit["a"] == pytest.approx(2.0, rel=0.15) and fit["b"] == pytest.approx(3.0, rel=0.25)
    with pytest.raises(ValueError, match="held-out"):
        margin_fit({"meta": {"vocab": 100}, "steps": [{"request": "r", "idx": 0, "k": 1}]})


def test_the_workload_choice_keeps_the_router_runnable():
    st = ScenarioState(router="threshold", compare=["lints", "experts-hedge"])
    st.workload = "real"
    assert st.router == "linucb" and st.compare == ["lints"]
    assert st.param.router.objects == list(REAL_ROUTERS)
    assert st.scenario.margin_a == pytest.approx(real_workload()["fit"]["a"])
    st.workload = "synthetic"
    assert st.param.router.objects == list(LEARNERS) and st.scenario.margin_a == 1.2
    with pytest.raises(ValueError):
        st.workload = "trace"
    assert URL_PARAMS["workload"] == "workload"
    values, rejected = parse_params(st, "workload=real&T=3000")
    assert values == {"workload": "real", "horizon": 3000} and not rejected


def test_the_app_on_the_real_trace_equals_the_bench(tmp_path):
    """Figure 3 on the real trace is `llmqp bench --workload real` for the same seed and
    steps; Figures 1-2 show the trace's histogram and measured error, and hide them again."""
    st = ScenarioState(horizon=1500, seed=4)
    app = LLMQPApp(st, server=False)
    assert not app.crossover.trace_hist.visible and not app.amortization.trace_error.visible
    st.workload = "real"
    bench = run_bench_real(4, 1500, tmp_path)
    summary = app.session.summary()
    assert summary["steps"] == 1500 and summary["plans"] == list(bench["environment"]["plans"])
    assert summary["dynamic_regret"] == pytest.approx(
        bench["routers"]["linucb"]["dynamic_regret"], rel=1e-12
    )
    assert "Real trace" in app.router.summary_div.text
    assert app.router.best_fixed_plan == bench["fixed"]["best_fixed_plan"]
    shares = dict(
        zip(app.router.shares_source.data["plan"], app.router.shares_source.data["share"])
    )
    assert shares["FullRecompute"] == 0.0 and sum(shares.values()) == pytest.approx(1.0)
    assert app.crossover.trace_hist.visible and app.crossover.trace_axis.visible
    assert app.crossover.trace_hist not in app.crossover.figure.y_range.renderers
    assert np.isclose(sum(app.crossover.trace_source.data["share"]), 1.0)
    assert "Real trace" in app.crossover.readout.text
    assert app.amortization.trace_error.visible
    got = np.asarray(app.amortization.trace_source.data["error"])
    assert np.array_equal(got, real_workload()["error"]) and got[0] > 0
    assert "Kumaraswamy" in app.amortization.readout.text
    assert app.router_widgets["alpha_slider"].disabled
    st.router = "sw-linucb"
    other = bench["routers"]["sw-linucb"]["dynamic_regret"]
    assert app.session.summary()["dynamic_regret"] == pytest.approx(other, rel=1e-12)
    runs = dict(app.session.runs)
    st.k, st.tau = 77, 0.4  # the real trace's run does not depend on them: not rerun
    assert app.session.runs == runs
    st.seed = 5
    assert app.session.runs != runs and app.session.scenario.seed == 5
    st.workload = "synthetic"
    assert not app.crossover.trace_hist.visible and not app.amortization.trace_error.visible
    assert app.crossover.trace_source.data["share"] == []
    assert "Real trace" not in app.router.summary_div.text
    assert not app.router_widgets["alpha_slider"].disabled


def test_session_checks_the_workload_and_its_routers():
    from app.model import Scenario

    sess = RouterSession()
    with pytest.raises(ValueError, match="workload"):
        sess.reset(Scenario(horizon=1000), workload="trace")
    with pytest.raises(ValueError, match="router"):
        sess.reset(Scenario(horizon=1000), router="threshold", workload="real")
    sess.reset(Scenario(horizon=1000), compare=["threshold", "lints"], workload="real")
    assert list(sess.runs) == ["linucb", "lints"]
    sess.set_compare(["experts-exp4"])
    assert list(sess.runs) == ["linucb"]
