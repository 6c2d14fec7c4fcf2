"""The built static site (static/) in headless Chromium: offline, interactive, same numbers."""

from __future__ import annotations

import json
import time


def test_site_is_interactive_offline(open_page, static_url, app_checks):
    app = open_page(static_url)
    app.wait_static_ready()
    app_checks(app)


def test_prerendered_figures_show_before_python(open_page, static_url):
    app = open_page(static_url)
    app.page.wait_for_function("window.llmqp && llmqp.timings.prerendered != null")
    timings = app.page.evaluate("llmqp.timings")
    assert "interactive" not in timings or timings["prerendered"] < timings["interactive"]
    assert app.page.evaluate("Bokeh.documents[0].get_model_by_name('crossover_dense') != null")
    app.wait_static_ready()


def test_python_in_the_worker_matches_cpython(open_page, static_url):
    app = open_page(static_url)
    app.wait_static_ready()
    got = app.eval("import sys, numpy; [sys.platform, numpy.__version__]")
    import numpy

    assert got == ["emscripten", numpy.__version__]


def test_file_url_shows_static_preview(open_page, static_dir):
    app = open_page((static_dir / "index.html").as_uri())
    app.page.wait_for_function("document.documentElement.dataset.llmqp === 'static'")
    status = app.page.evaluate("document.getElementById('llmqp-status').textContent")
    assert "http.server" in status


def test_repeat_visit_works_offline(open_page, static_url):
    """The service worker keeps what a visit loaded: the next visit needs no network."""
    app = open_page(static_url)
    app.wait_static_ready()
    app.page.wait_for_function("llmqp.cached === true", timeout=30_000)
    app.page.context.set_offline(True)
    app.page.reload()
    app.wait_static_ready()
    assert app.eval("1 + 1") == 2


def test_keeps_the_prerendered_document(open_page, static_url):
    """The worker builds the same document as the pre-render: the page keeps its figures."""
    app = open_page(static_url)
    app.wait_static_ready()
    assert app.page.evaluate("llmqp.hydrated") is True
    assert app.page.evaluate("Bokeh.documents.length") == 1


def test_draws_the_worker_document_when_the_prerender_differs(open_page, static_url):
    """A page whose pre-rendered document does not match the worker's (another build, another
    state) gets the worker's document drawn afresh, and works."""

    def tampered(route):
        response = route.fetch()
        body = response.text()
        assert '"p1000001"' in body
        route.fulfill(response=response, body=body.replace('"p1000001"', '"p0999999"'))

    app = open_page(static_url + "pyodide/pyodide-lock.json")  # any page of the site
    app.page.route(static_url, tampered)
    app.page.goto(static_url)
    app.wait_static_ready()
    assert app.page.evaluate("llmqp.hydrated") is False
    assert 777 not in app.data("crossover_dense")["k"]
    app.set_value("k_input", 777)
    app.page.wait_for_function("window.__data('crossover_dense').k.includes(777)", timeout=15_000)


def test_router_numbers_match_cpython_exactly(open_page, static_url, cpython):
    """Figure 3's run in the worker equals CPython's to rounding (test-only eval hook)."""
    assert_close, cpython_app_after = cpython
    app = open_page(static_url)
    app.wait_static_ready()
    app.click("play_button")
    app.page.wait_for_timeout(1500)
    app.click("play_button")
    app.page.wait_for_timeout(800)
    got = app.eval(
        "import gc, json\n"
        "from app.widgets.session import RouterSession\n"
        "s = [o for o in gc.get_objects() if isinstance(o, RouterSession)]\n"
        "json.loads(json.dumps(s[0].summary()))"
    )
    assert 0 < got["steps"] < 20_000
    want = json.loads(json.dumps(cpython_app_after(got["steps"]).session.summary()))
    assert_close(got, want)


def test_production_page_has_no_test_hooks(static_dir):
    """The built site carries no eval hook and no JSON readout (only test servers add one)."""
    for name in ("index.html", "worker.js"):
        text = (static_dir / name).read_text(encoding="utf-8")
        assert "eval-result" not in text and "llmqpTest" not in text, name
        assert "regret_readout" not in text, name


def test_page_and_worker_hold_the_same_figure_data_after_a_step(open_page, static_url):
    """Step on the finished run replaces Figure 3's data and streams a chunk in one turn: the
    page gets both in one patch, each change as it happened (no row sent twice)."""
    app = open_page(static_url)
    app.wait_static_ready()
    summary = app.readout()
    app.click("step_button")
    app.wait_change("window.__find('regret_summary').text", summary)
    app.page.wait_for_timeout(500)
    worker = app.eval(
        "import gc\n"
        "from app.widgets.router import RouterFigure\n"
        "f = [o for o in gc.get_objects() if isinstance(o, RouterFigure)][0]\n"
        "[float(x) for x in f.sources['linucb'].data['step']]"
    )
    page = app.data("regret_linucb")["step"]
    assert page == worker and len(page) > 1 and page == sorted(page)


def test_bokeh_style_sheets_rewritten_only_when_changed(open_page, static_url):
    """templates/bokeh_patches.js: a renderer's <style> set to its own text is left alone (no
    re-parse), a new text still lands; a K move still redraws the figure."""
    app = open_page(static_url)
    app.wait_static_ready()
    got = app.page.evaluate(
        """async () => {
      const sheet = new (Bokeh.require("core/dom").InlineStyleSheet)({":host": {left: "1px"}});
      const seen = [];
      new MutationObserver((m) => seen.push(m.length)).observe(sheet.el, {childList: true});
      sheet.replace(":host", {left: "1px"});
      await new Promise((r) => setTimeout(r, 0));
      const same = seen.length;
      sheet.replace(":host", {left: "2px"});
      await new Promise((r) => setTimeout(r, 0));
      return [same, seen.length, sheet.css];
    }"""
    )
    assert got[0] == 0
    assert got[1] == 1
    assert "2px" in got[2]
    app.set_value("k_input", 4321)
    app.page.wait_for_function("window.__data('crossover_dense').k.includes(4321)", timeout=15_000)


def test_bokeh_visuals_ignore_css_variables(open_page, static_url):
    """templates/bokeh_patches.js: a visual takes its value from the model, not from a `--bk-*`
    CSS variable (reading one forces a restyle on every paint); the variable is there."""
    app = open_page(static_url)
    app.wait_static_ready()
    got = app.page.evaluate(
        """() => {
      document.documentElement.style.setProperty('--bk-major-label-text-color', 'rgb(255, 0, 0)');
      const doc = Bokeh.documents[Bokeh.documents.length - 1];
      const axis = [...doc.all_models].find((m) => m.type && m.type.endsWith('Axis'));
      const view = Bokeh.index.find_one(axis);
      const css = getComputedStyle(view.el).getPropertyValue('--bk-major-label-text-color');
      return [axis.major_label_text_color, view.visuals.major_label_text.get_text_color(), css];
    }"""
    )
    assert got[1] == got[0] != "rgb(255, 0, 0)"
    assert got[2] == "rgb(255, 0, 0)"


def test_plot_font_size_read_once_a_frame(open_page, static_url):
    """templates/bokeh_patches.js: a plot's font size (read by every axis label it lays out)
    is read from the style once a frame; a new size shows in the next frame."""
    app = open_page(static_url)
    app.wait_static_ready()
    got = app.page.evaluate(
        """async () => {
      const doc = Bokeh.documents[Bokeh.documents.length - 1];
      const view = Bokeh.index.find_one([...doc.all_models].find((m) => m.type === "Figure"));
      const frame = () => new Promise((r) => requestAnimationFrame(() => r()));
      await frame();
      const style = window.getComputedStyle;
      let reads = 0;
      window.getComputedStyle = (...args) => (reads++, style(...args));
      const sizes = [view.base_font_size, view.base_font_size, view.base_font_size];
      const sameFrame = reads;
      view.el.style.fontSize = "21px";
      await frame();
      sizes.push(view.base_font_size);
      window.getComputedStyle = style;
      view.el.style.fontSize = "";
      return [sizes, sameFrame];
    }"""
    )
    sizes, reads = got
    assert sizes[0] == sizes[1] == sizes[2] != 21 and reads <= 1
    assert sizes[3] == 21


def test_k_moves_leave_legends_alone(open_page, static_url):
    """templates/bokeh_patches.js: a K move (new data for legended renderers) rebuilds no
    legend; a legend item's own change still does."""
    app = open_page(static_url)
    app.wait_static_ready()
    entries = """() => [...Bokeh.documents[Bokeh.documents.length - 1].all_models]
      .filter((m) => m.type === "Legend")
      .map((m) => Bokeh.index.find_one(m).entries.map((e) => e.label))"""
    shown = app.page.evaluate(entries)
    app.page.evaluate(
        """() => {
      const proto = Bokeh.require("models/annotations/legend").LegendView.prototype;
      const render = proto._render_items;
      window.__legendRenders = 0;
      proto._render_items = function () { window.__legendRenders++; return render.call(this); };
    }"""
    )
    app.set_value("k_input", 2345)
    app.page.wait_for_function("window.__data('crossover_dense').k.includes(2345)")
    app.page.wait_for_timeout(300)
    assert app.page.evaluate("window.__legendRenders") == 0
    assert app.page.evaluate(entries) == shown and all(shown)
    got = app.page.evaluate(
        """() => {
      const doc = Bokeh.documents[Bokeh.documents.length - 1];
      const legend = [...doc.all_models].find((m) => m.type === "Legend");
      legend.items.find((item) => item.visible).label = {value: "renamed"};
      const labels = Bokeh.index.find_one(legend).entries.map((e) => e.label);
      return [window.__legendRenders, labels.includes("renamed")];
    }"""
    )
    assert got == [1, True]


def test_k_moves_replace_the_address_once_they_pause(open_page, static_url):
    """templates/bokeh_patches.js: K moves add no history entries (Panel pushed one per move);
    the address shows the last K once the moves pause, and Python sees it (location.href)."""
    app = open_page(static_url)
    app.wait_static_ready()
    length = app.page.evaluate("history.length")
    for k in (1234, 2345, 3456):
        app.set_value("k_input", k)
        app.page.wait_for_function(f"window.__data('crossover_dense').k.includes({k})")
    app.page.wait_for_function("location.search.includes('K=3456')", timeout=15_000)
    assert app.page.evaluate("history.length") == length
    deadline = time.monotonic() + 15
    while "K=3456" not in app.eval("import panel as pn; pn.state.location.href"):
        assert time.monotonic() < deadline, "Python never saw the new address"
        time.sleep(0.2)
