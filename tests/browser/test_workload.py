"""The real-trace workload on the static site: chosen by the URL or the Select, the same numbers
as CPython for the same seed (Figure 3's run, Figure 1's histogram, Figure 2a's measured error)."""

from __future__ import annotations

import json

SUMMARY = (
    "import gc, json\n"
    "from app.widgets.session import RouterSession\n"
    "s = [o for o in gc.get_objects() if isinstance(o, RouterSession)]\n"
    "json.loads(json.dumps(s[0].summary()))"
)


def test_real_trace_from_the_url_matches_cpython(open_page, static_url, cpython):
    from app.widgets.app import LLMQPApp
    from app.widgets.state import ScenarioState
    from app.widgets.workload import real_workload

    assert_close, _ = cpython
    app = open_page(static_url + "?workload=real&T=3000&seed=2")
    app.wait_static_ready()
    app.wait_model("crossover_trace_hist")
    app.page.wait_for_function(
        "(() => { const s = window.__data('regret_linucb').step;"
        " return s[s.length - 1] === 3000 && window.__data('crossover_trace_hist').share.length"
        " && window.__find('regret_summary').text.includes('Real trace'); })()",
        timeout=60_000,
    )
    assert app.prop("workload_select", "value") == "real"
    assert ["real", "real trace"] in app.prop("workload_select", "options")
    assert app.prop("crossover_trace_hist", "visible") is True
    assert app.prop("alpha_slider", "disabled") is True
    # the seconds axis keeps to the curves (the bars, shares up to ~0.35, have their own)
    assert app.js("() => window.__find('crossover_figure').y_range.end") < 0.01

    want = LLMQPApp(ScenarioState(workload="real", horizon=3000, seed=2), server=False)
    assert_close(app.eval(SUMMARY), json.loads(json.dumps(want.session.summary())))
    assert app.readout() == want.router.summary_div.text
    real = real_workload()
    assert_close(app.data("crossover_trace_hist")["share"], real["hist"]["share"].tolist())
    assert_close(app.data("amortization_trace_error")["error"], real["error"].tolist())

    # Back to the synthetic workload from the Select: the overlays go, the URL follows.
    summary = app.readout()
    app.set_value("workload_select", "synthetic")
    app.wait_change("window.__find('regret_summary').text", summary)
    app.page.wait_for_function("!window.__find('crossover_trace_hist').visible", timeout=30_000)
    app.page.wait_for_function("!location.search.includes('workload=real')", timeout=30_000)
    assert app.prop("alpha_slider", "disabled") is False
