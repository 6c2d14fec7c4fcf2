"""Browser end-to-end fixtures: a local static server, headless Chromium, request accounting.

Every request the page (or its worker) makes is routed: requests to the page's own origin go
through, anything else is blocked and counted, and a test fails if the count is not zero.
Chromium is the system one (``/usr/bin/chromium``); Playwright never downloads a browser.
These tests never skip: a missing ``static/`` or Chromium is a failure with a clear message.
"""

from __future__ import annotations

import functools
import http.server
import json
import math
import re
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from app.web import testhooks

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "static"
CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--disable-sync",
    "--metrics-recording-only",
    "--no-first-run",
    "--no-default-browser-check",
    # Chromium still tries Google hosts on its own; resolve nothing but loopback.
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
]
READY_TIMEOUT_MS = 90_000


def pytest_collection_modifyitems(items):
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.browser)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_folder(folder: Path):
    """(server, base URL) of a threaded static server for ``folder`` on 127.0.0.1; it serves
    ``worker.js`` with the test-only eval hook (app/web/testhooks.py), which the site lacks."""
    handler = functools.partial(testhooks.HookedHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}/"


@pytest.fixture(scope="session")
def static_url():
    if not (STATIC / "index.html").is_file():
        pytest.fail(f"{STATIC} has no index.html: build the site first (python build.py)")
    server, url = serve_folder(STATIC)
    yield url
    server.shutdown()


@pytest.fixture(scope="session")
def browser():
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (make chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS)
        yield browser
        browser.close()


@dataclass
class Traffic:
    """What the page asked for: blocked foreign requests, failed own requests, errors."""

    origin: str
    foreign: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    errors: list = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    def route(self, route) -> None:
        url = route.request.url
        if url.startswith(self.origin) or url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            self.foreign.append(url)
            route.abort()

    def console(self, message) -> None:
        # Python exceptions in the worker (e.g. in a periodic callback) reach the console only,
        # one line per message: keep the lines after "Traceback" for the report.
        self.lines.append(message.text)
        if "Traceback (most recent call last)" in message.text or message.type == "error":
            self.errors.append(len(self.lines) - 1)

    def error_report(self) -> list[str]:
        return ["\n".join(self.lines[i : i + 40]) for i in self.errors]

    def response(self, response) -> None:
        if response.status >= 400 and response.url.startswith(self.origin):
            self.failed.append(f"{response.status} {response.url}")


def origin_of(url: str) -> str:
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{rest.split('/', 1)[0]}/"


@pytest.fixture
def open_page(browser):
    """``open_page(url)`` -> :class:`AppPage`; checks the request accounting at teardown."""
    opened = []

    def _open(url: str) -> AppPage:
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        traffic = Traffic(origin_of(url))
        context.route("**/*", traffic.route)
        context.add_init_script(testhooks.PAGE_EVAL)  # window.llmqpTest.eval (test-only)
        page = context.new_page()
        page.on("response", traffic.response)
        page.on("pageerror", lambda exc: traffic.lines.append(f"page error: {exc}"))
        page.on("pageerror", lambda exc: traffic.errors.append(len(traffic.lines) - 1))
        page.on("console", traffic.console)
        opened.append((context, traffic))
        page.set_default_navigation_timeout(READY_TIMEOUT_MS)  # a served page builds the app
        page.goto(url)
        return AppPage(page, traffic)

    yield _open
    for context, traffic in opened:
        context.close()
        assert traffic.foreign == [], f"requests to other origins: {traffic.foreign}"
        assert traffic.failed == [], f"failed requests: {traffic.failed}"
        report = "\n\n".join(traffic.error_report())
        assert traffic.errors == [], f"errors in the page:\n{report}"


# JS helpers: the live Bokeh document is the last one (the static site replaces the
# pre-rendered document with the worker's; under panel serve there is only one).
JS_FIND = """() => {
window.__find = (name) => {
  const docs = window.Bokeh ? Bokeh.documents : [];
  for (let i = docs.length - 1; i >= 0; i--) {
    const m = docs[i].get_model_by_name(name);
    if (m != null) return m;
  }
  return null;
};
window.__data = (name) => {
  const m = window.__find(name);
  if (m == null) return null;
  const src = m.data_source != null ? m.data_source : m;
  const out = {};
  for (const [k, v] of (src.data instanceof Map ? src.data : Object.entries(src.data))) {
    out[k] = Array.from(v, (x) => (typeof x === "number" ? x : String(x)));
  }
  return out;
};
}"""


class AppPage:
    """The app in a browser tab, addressed through Bokeh model names (the app's test hooks)."""

    def __init__(self, page, traffic: Traffic):
        self.page, self.traffic = page, traffic

    def js(self, expr: str, arg=None):
        self.page.evaluate(JS_FIND)
        return self.page.evaluate(expr, arg)

    def wait_static_ready(self) -> None:
        """The static site: its worker has rendered and linked the live document."""
        self.page.wait_for_function(
            "['ready', 'error'].includes(document.documentElement.dataset.llmqp)",
            timeout=READY_TIMEOUT_MS,
        )
        state = self.page.evaluate("document.documentElement.dataset.llmqp")
        status = self.page.evaluate("document.getElementById('llmqp-status').textContent")
        assert state == "ready", f"the page reports: {status}"

    def wait_model(self, name: str, timeout: int = READY_TIMEOUT_MS) -> None:
        self.page.evaluate(JS_FIND)
        self.page.wait_for_function(f"window.__find({name!r}) != null", timeout=timeout)

    def data(self, name: str) -> dict:
        out = self.js("(n) => window.__data(n)", name)
        assert out is not None, f"no Bokeh model named {name!r}"
        return out

    def prop(self, name: str, attr: str):
        return self.js(
            "([n, a]) => { const m = window.__find(n); return m && m[a]; }", [name, attr]
        )

    def set_value(self, name: str, value) -> None:
        """Set a widget's value the way its view does when a person drags it."""
        self.js("([n, v]) => { window.__find(n).value = v; }", [name, value])

    def click(self, name: str) -> None:
        """Click the <button> of the widget named ``name`` (inside its shadow DOM)."""
        self.js(
            """(n) => {
              const view = Bokeh.index.find_one(window.__find(n));
              if (view == null) throw new Error('no view for ' + n);
              (view.shadow_el || view.el).querySelector('button').click();
            }""",
            name,
        )

    def wait_change(self, expr: str, before, timeout: int = 15_000):
        """Poll ``expr`` (a JS expression) until its JSON differs from ``before``."""
        self.page.evaluate(JS_FIND)
        self.page.wait_for_function(
            f"JSON.stringify({expr}) !== {json.dumps(json.dumps(before))}", timeout=timeout
        )
        return self.page.evaluate(expr)

    def readout(self) -> str:
        """Figure 3's prose readout (``regret_summary``)."""
        text = self.prop("regret_summary", "text")
        assert text, "regret_summary is empty"
        return text

    def eval(self, code: str):
        """Python in the page's worker (test-only hook); the JSON of the last expression."""
        return self.page.evaluate("(code) => llmqpTest.eval(code)", code)


def assert_close(browser_value, cpython_value, rtol: float = 1e-9, path: str = "") -> None:
    """Same structure; numbers equal within ``rtol``; everything else exactly equal."""
    if isinstance(cpython_value, dict):
        assert isinstance(browser_value, dict), path
        assert sorted(browser_value) == sorted(cpython_value), path
        for key in cpython_value:
            assert_close(browser_value[key], cpython_value[key], rtol, f"{path}.{key}")
    elif isinstance(cpython_value, (list, tuple)):
        assert len(browser_value) == len(cpython_value), path
        for i, (b, c) in enumerate(zip(browser_value, cpython_value)):
            assert_close(b, c, rtol, f"{path}[{i}]")
    elif isinstance(cpython_value, float) and not isinstance(cpython_value, bool):
        assert math.isclose(browser_value, cpython_value, rel_tol=rtol, abs_tol=1e-300), (
            f"{path}: browser {browser_value!r} vs CPython {cpython_value!r}"
        )
    else:
        assert browser_value == cpython_value, f"{path}: {browser_value!r} vs {cpython_value!r}"


@pytest.fixture
def app_checks():
    """The end-to-end checks shared by the static-site and the panel-serve tests."""
    return run_app_checks


@pytest.fixture
def cpython():
    """``(assert_close, cpython_app_after)`` for tests that compare with CPython's app."""
    return assert_close, cpython_app_after


@pytest.fixture
def static_dir() -> Path:
    return STATIC


def cpython_app_after(steps: int, served: bool = False):
    """CPython's app (defaults, seed 0; ``served``: server mode's, the served model's scenario)
    after Play from the finished run shown at load and ``steps`` steps in the play loop's
    chunks."""
    from app.widgets.app import LLMQPApp
    from app.widgets.state import ScenarioState

    state = ScenarioState()
    if served:
        from app.widgets.measured import apply_served_scenario

        apply_served_scenario(state)
    app = LLMQPApp(state, server=False)
    app.player.restart()
    while app.session.t < steps:
        app.session.advance(min(app.player.chunk, steps - app.session.t))
    return app


def run_app_checks(app: AppPage, served: bool = False) -> None:
    """Figure 3 shows the finished run at load; play animates a fresh one whose readout equals
    CPython's for the same seed and steps; K moves figure 1 and its label, τ moves figure 2."""
    at_load = app.data("regret_linucb")
    horizon = at_load["step"][-1]
    assert horizon > 1000 and len(at_load["step"]) > 100, "Figure 3 is empty at load"
    assert f"after {horizon:,} / {horizon:,} steps" in app.readout()
    app.click("play_button")
    app.page.wait_for_function(
        f"(() => {{ const s = window.__data('regret_linucb').step;"
        f" return s[s.length - 1] < {horizon} && s.length > 5; }})()",
        timeout=30_000,
    )
    app.click("play_button")  # pause
    app.page.wait_for_timeout(500)
    settled = app.readout()
    while True:  # the last tick may still be on its way
        app.page.wait_for_timeout(300)
        now = app.readout()
        if now == settled:
            break
        settled = now
    steps = int(re.search(r"after ([\d,]+) / ", settled).group(1).replace(",", ""))
    assert 0 < steps < horizon
    assert settled == cpython_app_after(steps, served).router.summary_div.text

    # K: figure 1's data and the crossover label change.
    dense = app.data("crossover_dense")
    label = app.prop("crossover_label", "text")
    start, end, value = (app.prop("k_slider", a) for a in ("start", "end", "value"))
    app.set_value("k_slider", start + 0.25 * (end - start) if value > (start + end) / 2 else end)
    app.wait_change("window.__data('crossover_dense')", dense)
    app.wait_change("window.__find('crossover_label').text", label)

    # τ: figure 2 changes (marker and curve data or readout).
    marker = app.prop("tau_marker", "location")
    start, end, value = (app.prop("tau_slider", a) for a in ("start", "end", "value"))
    target = round(start + 0.8 * (end - start), 2)
    target = target if abs(target - value) > 1e-9 else round(start + 0.2 * (end - start), 2)
    app.set_value("tau_slider", target)
    moved = app.wait_change("window.__find('tau_marker').location", marker)
    assert math.isclose(moved, target, rel_tol=1e-9)
