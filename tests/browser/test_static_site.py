"""The built static site (static/) in headless Chromium: offline, interactive, same numbers."""

from __future__ import annotations


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
    got = app.page.evaluate("llmqp.eval('import sys, numpy; [sys.platform, numpy.__version__]')")
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
    assert app.page.evaluate("llmqp.eval('1 + 1')") == 2
