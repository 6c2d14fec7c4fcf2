"""The interactive app without a browser: state, figures, live router, URL sync, export, server
panel. Bokeh models are looked up by the same names the browser tests use (docs/app.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import wait

import numpy as np
import pytest
from bokeh.document import Document
from panel.io.location import Location

from app.model import Scenario, find_crossover
from app.widgets.app import LLMQPApp, sync_url
from app.widgets.state import URL_PARAMS, ScenarioState

HOOKS = (
    "crossover_dense",
    "crossover_sparse",
    "crossover_dense_source",
    "crossover_sparse_source",
    "crossover_label",
    "amortization_cost",
    "tau_marker",
    "regret_linucb",
    "explain_table",
    "k_slider",
    "k_input",
    "tau_slider",
    "play_button",
    "step_button",
    "reset_button",
    "svg_toggle",
)


@pytest.fixture
def app():
    return LLMQPApp(ScenarioState(horizon=2_000), server=False)


def root_of(app):
    return app.view().get_root(Document())


def test_every_hook_is_a_named_bokeh_model(app):
    root = root_of(app)
    missing = [name for name in HOOKS if root.select_one({"name": name}) is None]
    assert not missing
    assert "k_slider" in root.select_one({"name": "k_slider"}).css_classes


def test_k_changes_sparse_data_and_crossover_label(app):
    src = app.crossover.sparse_source
    before_k, before_label = list(src.data["k"]), app.crossover.label.text
    app.state.k = 1_000
    assert 1_000 in list(src.data["k"]) and list(src.data["k"]) != before_k
    assert app.crossover.label.text != before_label
    kstar = find_crossover(4096, 128_256).k_roofline
    assert f"K* = {kstar:,}" in app.crossover.label.text
    assert "K = 1,000" in app.crossover.label.text
    assert app.crossover.k_span.location == 1_000


def test_vocab_change_moves_flop_crossover(app):
    app.state.vocab = 50_257
    assert app.crossover.flop_span.location == 50_257
    assert max(app.crossover.dense_source.data["k"]) == 50_257


def test_vocab_below_k_clamps_k(app):
    app.state.k = 5_000
    app.state.vocab = 1_000
    assert app.state.k == 1_000
    assert app.state.scenario.k == 1_000
    assert app.model_widgets["k"].input.value == 1_000
    assert app.model_widgets["k"].slider.end == pytest.approx(3.0)
    app.model_widgets["k"].input.value = 900
    assert app.state.k == 900


def test_k_above_vocab_is_clamped():
    state = ScenarioState(vocab=100)
    state.k = 500
    assert state.k == 100


def test_log_slider_round_trips_integers(app):
    app.model_widgets["k"].slider.value = np.log10(64.0) + 0.3
    assert app.state.k == round(10 ** (np.log10(64.0) + 0.3))
    app.state.k = 37
    assert round(10 ** app.model_widgets["k"].slider.value) == 37


def test_tau_moves_marker_and_figure2(app):
    tau_src, totals = app.amortization.tau_source, app.amortization.total_source
    before = np.array(totals.data["amortized"])
    app.state.tau = 0.55
    assert app.amortization.tau_marker.location == 0.55
    assert 0.55 in list(tau_src.data["tau"])
    assert not np.allclose(before, totals.data["amortized"])
    assert app.amortization.safe_marker.location == pytest.approx(2 * app.state.eps)


def test_n_star_label_matches_model(app):
    from app.model import amortization_curves

    n_star = amortization_curves(app.state.scenario)["n_star"]
    assert (f"N* = {n_star:,}" if n_star else "N* = none") in app.amortization.n_star_label.text


def test_router_figure_shows_the_finished_run_at_load(app):
    sess = app.session
    assert sess.done and sess.t == app.state.horizon
    src = app.router.sources["linucb"].data
    assert src["step"][0] == 0 and src["step"][-1] == app.state.horizon
    _, curve = sess.curve("linucb")
    assert src["regret"][-1] == pytest.approx(curve[-1])
    assert (
        f"after {app.state.horizon:,} / {app.state.horizon:,} steps" in app.router.summary_div.text
    )
    assert sum(app.router.shares_source.data["share"]) == pytest.approx(1.0)


def test_play_animates_a_fresh_run(app):
    finished = app.session.summary()
    src = app.router.sources["linucb"]
    app.player.play.value = True  # a finished run: play starts afresh
    assert app.session.t == 0 and list(src.data["step"]) == [0]
    app.player.tick()
    n1 = len(src.data["step"])
    app.player.tick()
    assert len(src.data["step"]) > n1 > 1
    summ = app.session.summary()
    assert summ["router"] == "linucb" and summ["steps"] == app.session.t == 2 * app.player.chunk
    assert summ["dynamic_regret"] < finished["dynamic_regret"]
    assert f"after {app.session.t:,} / " in app.router.summary_div.text
    app.player.play.value = False


def test_step_on_a_finished_run_starts_afresh(app):
    assert app.session.done
    app.player.step_once()
    assert app.session.t == app.player.chunk


def test_player_stops_at_the_horizon():
    app = LLMQPApp(ScenarioState(horizon=100), server=False)
    app.player.play.value = True
    while not app.player.tick():
        pass
    assert not app.player.play.value
    assert app.session.t == 100
    assert app.router.sources["linucb"].data["step"][-1] == 100
    app.player.restart()
    assert app.session.t == 0


def test_same_seed_same_curve():
    def curve(seed):
        app = LLMQPApp(ScenarioState(horizon=1_000, seed=seed), server=False)
        app.player.restart()
        while not app.session.advance(250):
            pass
        return np.array(app.router.sources["linucb"].data["regret"])

    a, b, c = curve(3), curve(3), curve(4)
    np.testing.assert_array_equal(a, b)
    assert a.shape != c.shape or not np.array_equal(a, c)


def test_streamed_and_redrawn_curves_agree():
    app = LLMQPApp(ScenarioState(horizon=1_000, seed=2), server=False)
    at_load = np.array(app.router.sources["linucb"].data["regret"])
    app.player.restart()
    while not app.session.advance(97):
        pass
    np.testing.assert_array_equal(np.array(app.router.sources["linucb"].data["regret"]), at_load)


def test_compare_routers_catch_up(app):
    app.player.restart()
    app.session.advance(300)
    app.state.compare = ["threshold"]
    assert app.router.lines["threshold"].visible
    assert app.session.runs["threshold"].t == app.session.t == 300
    assert app.router.sources["threshold"].data["step"][-1] == 300
    app.state.compare = []
    assert not app.router.lines["threshold"].visible


def test_router_choice_switches_line(app):
    app.state.router = "lints"
    assert app.router.lines["lints"].visible and not app.router.lines["linucb"].visible
    assert app.session.summary()["router"] == "lints"
    assert "linear Thompson" in app.router.summary_div.text


def test_no_test_hook_readout_on_the_page(app):
    root = root_of(app)
    assert root.select_one({"name": "regret_readout"}) is None


def test_url_sync_round_trip():
    state = ScenarioState()
    loc = Location()
    sync_url(state, loc)
    state.param.update(vocab=50_257, k=321, tau=0.42, router="lints", compare=["threshold"])
    restored = ScenarioState()
    sync_url(restored, Location(search=loc.search))
    for name in URL_PARAMS:
        assert getattr(restored, name) == getattr(state, name), name


def test_url_with_bad_values_keeps_the_good_ones():
    state = ScenarioState()
    sync_url(state, Location(search="?K=99&tau=7&V=1000&router=nope"))
    assert (state.k, state.vocab) == (99, 1000)
    assert state.tau == ScenarioState().tau and state.router == "linucb"


def test_url_with_huge_integers_still_builds_the_app():
    """A 4,301-digit value (Python's int() limit) under any key, known or not, and non-ASCII
    digits, used to raise inside Panel's parse_query and leave a blank page."""
    huge = "7" * 5000
    state = ScenarioState()
    loc = Location(search=f"?K=99&zzz={huge}&V={huge}&tau=%C2%B2")
    sync_url(state, loc)
    assert state.k == 99 and state.vocab == ScenarioState().vocab
    assert huge not in loc.search and "K=99" in loc.search
    assert LLMQPApp(state, server=False).view() is not None


def test_explain_table_highlights_chosen_plan(app):
    from app.model import explain

    chosen = explain(app.state.scenario)[1].name
    text = app.explain.div.text
    assert f'data-chosen-plan="{chosen}"' in text
    row = text[text.index('data-chosen="true"') :]
    assert row[: row.index("</tr>")].count(chosen) == 1
    assert text.count('data-chosen="true"') == 1


def test_svg_toggle(app):
    app.svg.value = True
    assert all(f.output_backend == "svg" for f in app.figures)
    app.svg.value = False
    assert all(f.output_backend == "canvas" for f in app.figures)


def test_export_writes_html_and_json(tmp_path):
    from app.widgets.export import FIGURES, export_figures

    paths = export_figures(tmp_path, Scenario(horizon=500))
    assert {p.name for p in paths} == {f"{n}.{e}" for n in FIGURES for e in ("html", "json")}
    for name in FIGURES:
        page = (tmp_path / f"{name}.html").read_text(encoding="utf-8")
        assert page.startswith("<!DOCTYPE html>") and "<script src=" not in page
        item = json.loads((tmp_path / f"{name}.json").read_text(encoding="utf-8"))
        assert {"target_id", "root_id", "doc", "version"} <= set(item)
    assert '"crossover_label"' in (tmp_path / "crossover.json").read_text(encoding="utf-8")
    assert '"regret_linucb"' in (tmp_path / "router.json").read_text(encoding="utf-8")
    assert '"tau_marker"' in (tmp_path / "amortization.html").read_text(encoding="utf-8")


def test_state_module_has_no_panel_and_app_has_no_backend():
    code = (
        "import sys; import app.widgets.state as s; assert 'panel' not in sys.modules; "
        "from app.widgets.app import LLMQPApp; LLMQPApp(server=False); "
        "assert not [m for m in sys.modules if m.startswith(('app.serving', 'app.measure'))], "
        "'server side imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- server mode --------------------------------------------------------------------------------


def measure(panel) -> bool:
    """Start a measurement, wait for the worker thread, and let the panel draw it."""
    if not panel.measure():
        return False
    wait([panel._future])
    assert panel.poll()
    return not panel.banner.visible


def _unavailable():
    try:
        from app.serving.client import BackendUnavailable
    except ImportError:
        return ConnectionError
    return BackendUnavailable


class FakeClient:
    """A backend client whose answers are shaped like ``app.measure.sweeps.Runner.result``."""

    def __init__(self, fail=False, fail_sweep=False):
        self.fail, self.fail_sweep = fail, fail_sweep
        self.calls = []
        self.rows = []

    def device(self):
        if self.fail:
            raise _unavailable()("connection refused")
        return {"device": "cpu", "device_name": "fake", "impl": "numpy", "dtypes": ["float32"]}

    def results(self, **filters):
        return list(self.rows)

    def _hardware(self):
        from app.model import PRESETS

        hw = PRESETS["cpu"].replace(name="fake (calibrated)", bandwidth=20e9)
        return {"source": "calibrated", "profile": hw.to_dict(), "preset": "cpu"}

    def _row(self, plan, d, vocab, batch, dtype, k, seconds):
        shape = dict(d=d, vocab=vocab, batch=batch, dtype=dtype, k=k, layers=0, context=0)
        return dict(
            device="cpu:fake", impl="numpy", plan=plan, rerank_r=0, median_s=seconds, **shape
        )

    def sweep_head(self, d, vocab, batch=1, dtype=None, k=None, on_progress=None):
        self.calls.append(("head", d, vocab, batch, dtype))
        if self.fail_sweep:
            raise _unavailable()("backend went away")
        if on_progress is not None:
            on_progress({"status": "running", "done": 1, "total": len(k) + 1})
        self.rows = [self._row("dense_head", d, vocab, batch, dtype, 0, 1e-3)]
        self.rows += [self._row("sparse_head", d, vocab, batch, dtype, x, 1e-6 * x) for x in k]
        col = {"median_s": [1e-3] * len(k), "model_s": [1e-3] * len(k)}
        sparse = {"median_s": [1e-6 * x for x in k], "model_s": [1e-6 * x for x in k]}
        return {
            "params": {"d": d, "vocab": vocab, "batch": batch, "dtype": dtype, "k": k},
            "hardware": self._hardware(),
            "k": list(k),
            "plans": {"dense_head": col, "sparse_head": sparse},
        }

    def sweep_amortized(self, d, layers, vocab, k=64, batch=1, dtype=None, on_progress=None):
        self.calls.append(("amortized", d, layers, dtype))
        ctx = [0, 64, 256, 1024]
        return {
            "params": {
                "d": d,
                "layers": layers,
                "vocab": vocab,
                "k": k,
                "batch": batch,
                "dtype": dtype,
                "context": ctx,
            },  # fmt: skip
            "hardware": self._hardware(),
            "context": ctx,
            "plans": {
                "full_step": {"median_s": [2e-3] * 4, "model_s": [2.1e-3] * 4},
                "amortized_step": {"median_s": [5e-4] * 4, "model_s": [4e-4] * 4},
                "amortized_rerank": {"median_s": [7e-4] * 4, "model_s": [6e-4] * 4},
            },
            "crossover": {"measured_n": 20},
        }


def test_server_panel_shows_measured_points():
    client = FakeClient()
    app = LLMQPApp(ScenarioState(horizon=500), server=True, client=client)
    panel = app.measured
    assert not panel.banner.visible and not panel.measure_button.disabled
    assert panel.latency_toggle.disabled  # nothing measured yet
    assert measure(panel)
    assert app.state.dtype == "float32"  # the fake backend times float32 only
    assert ("head", 4096, 128_256, 1, "float32") in client.calls
    measured = app.crossover.measured["sparse"].data
    assert len(measured["k"]) == 12 and measured["seconds"][0] > 0
    assert len(app.amortization.measured_source.data["tau"]) == 2
    assert all(item.visible for item in app.crossover.measured_legend)
    assert app.amortization.measured_legend.visible
    assert app.state.hardware == "calibrated"
    assert app.state.scenario.hw.bandwidth == 20e9
    root = root_of(app)
    assert root.select_one({"name": "crossover_measured_sparse"}) is not None
    assert root.select_one({"name": "measure_button"}) is not None
    app.state.d = 2048  # another head shape: the old points no longer apply
    assert len(app.crossover.measured["sparse"].data["k"]) == 0
    assert not any(item.visible for item in app.crossover.measured_legend)


def test_server_mode_real_trace_ignores_measured_latencies():
    from app.router.real_trace import shipped_trace, trace_arms

    app = LLMQPApp(ScenarioState(horizon=300), server=True, client=FakeClient())
    assert measure(app.measured)
    app.state.measured_latency = True
    measured = app.session.stream.latency_s.copy()
    app.state.workload = "real"  # the trace's own measured seconds, 300 steps of it
    # the routed plans the trace records (PromptLookup came after it: not an arm of its replay)
    assert app.session.stream.plans == trace_arms(shipped_trace())
    assert app.session.stream.steps == 300
    assert app.crossover.trace_hist.visible and app.session.summary()["steps"] == 300
    app.state.workload = "synthetic"
    assert np.array_equal(app.session.stream.latency_s, measured)


def test_router_trains_on_measured_latencies():
    client = FakeClient()
    app = LLMQPApp(ScenarioState(horizon=300), server=True, client=client)
    assert measure(app.measured)
    modelled = app.session.stream.latency_s.copy()
    assert not app.measured.latency_toggle.disabled
    app.state.measured_latency = True
    measured = app.session.stream.latency_s
    assert measured.shape == modelled.shape and not np.allclose(measured, modelled)
    # The dense head was "measured" at 1 ms: it shows up in DenseHead's latency.
    assert np.all(measured[:, 0] >= 1e-3)


def test_server_panel_banner_when_backend_unavailable():
    app = LLMQPApp(ScenarioState(horizon=500), server=True, client=FakeClient(fail=True))
    panel = app.measured
    assert panel.banner.visible and "unavailable" in panel.banner.object
    assert panel.measure_button.disabled
    assert not measure(panel)
    app.state.k = 500  # the model side keeps working
    assert 500 in list(app.crossover.sparse_source.data["k"])


def test_failed_sweep_shows_banner_and_keeps_the_model():
    app = LLMQPApp(ScenarioState(horizon=500), server=True, client=FakeClient(fail_sweep=True))
    panel = app.measured
    assert not measure(panel)
    assert panel.banner.visible and "went away" in panel.banner.object
    assert not panel.measure_button.disabled and not panel.progress.visible
    assert len(app.crossover.measured["sparse"].data["k"]) == 0


def test_in_process_backend_end_to_end():
    pytest.importorskip("app.serving.service")
    app = LLMQPApp(ScenarioState(d=256, vocab=4096, k=64, horizon=200), server=True)
    panel = app.measured
    assert panel.client is not None, panel.banner.object
    assert measure(panel), panel.banner.object
    assert len(app.crossover.measured["sparse"].data["k"]) > 0
    assert len(app.amortization.measured_source.data["tau"]) == 2


def test_documented_hooks_exist():
    """Every name in docs/app.md's test-hook table is a Bokeh model of the page (the server-only
    ones on a server-mode page); ``regret_<router>`` appears once that router is shown."""
    import re
    from pathlib import Path

    doc = Path(__file__).resolve().parents[1] / "docs" / "app.md"
    text = doc.read_text(encoding="utf-8")
    table = text[text.index("## Test hooks") : text.index("Timing of the animation")]
    names = set()
    for line in table.splitlines():
        if line.startswith("| `"):
            names |= set(re.findall(r"`([a-z_]+)`", line.split("|")[1]))
    app = LLMQPApp(ScenarioState(horizon=500), server=True, client=FakeClient())
    app.state.compare = ["lints"]
    root = root_of(app)
    missing = sorted(n for n in names if root.select_one({"name": n}) is None)
    assert not missing
    assert len(names) > 50


def test_two_sessions_build_side_by_side():
    """Each session (panel serve) gets its own Bokeh models: none shared between documents."""
    roots = [LLMQPApp(server=False).view().get_root(Document()) for _ in range(2)]
    docs = [Document(), Document()]
    for doc, root in zip(docs, roots):
        doc.add_root(root)
    assert not {m.id for m in docs[0].models} & {m.id for m in docs[1].models}
