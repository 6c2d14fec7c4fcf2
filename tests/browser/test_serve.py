"""The same end-to-end checks against ``panel serve app/main.py`` (server mode, 127.0.0.1)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "app" / "main.py"


def _free_port() -> int:
    with __import__("socket").socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def served_app(request):
    """``panel serve app/main.py`` on a free port; ``request.param`` may name a backend URL."""
    env = dict(os.environ)
    backend = getattr(request, "param", None)
    if backend:
        env["LLMQP_BACKEND_URL"] = backend
    port = _free_port()
    url = f"http://127.0.0.1:{port}/main"
    cmd = [
        sys.executable,
        "-m",
        "panel",
        "serve",
        str(APP),
        "--address",
        "127.0.0.1",
        "--port",
        str(port),
        "--allow-websocket-origin",
        f"127.0.0.1:{port}",
    ]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:  # the first page builds the app (a router run): slow on a busy machine
                with urllib.request.urlopen(url, timeout=60) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()  # else reading its output would wait for it for ever
                out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
                pytest.fail(f"panel serve did not come up on {url}:\n{out[-3000:]}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_served_app_is_interactive(open_page, served_app, app_checks):
    app = open_page(served_app)
    app.wait_model("k_slider")
    app.wait_model("regret_summary")
    app_checks(app, served=True)  # server mode starts on the served model's scenario


def test_served_app_measures_with_the_in_process_backend(open_page, served_app):
    # A head small enough to time in seconds on a CPU; numpy times float32 only.
    app = open_page(served_app + "?d=256&V=4096&K=64&dtype=float32")
    app.wait_model("measure_button")
    app.page.wait_for_function(
        "!window.__find('measure_button').disabled", timeout=30_000
    )  # connected to the in-process backend
    assert app.data("crossover_measured_sparse_source")["k"] == []
    app.click("measure_button")
    app.page.wait_for_function(
        "window.__data('crossover_measured_sparse_source').k.length > 3", timeout=120_000
    )
    sparse = app.data("crossover_measured_sparse_source")
    dense = app.data("crossover_measured_dense_source")
    assert all(s > 0 for s in sparse["seconds"]) and len(dense["k"]) > 0
    assert max(sparse["k"]) <= 4096
    assert not app.prop("backend_banner", "visible")


@pytest.mark.parametrize("served_app", [f"http://127.0.0.1:{_free_port()}"], indirect=True)
def test_served_app_without_backend_shows_banner_and_keeps_working(open_page, served_app):
    app = open_page(served_app)
    app.wait_model("backend_banner")
    app.page.wait_for_function("window.__find('backend_banner').visible", timeout=30_000)
    assert "unavailable" in app.prop("backend_banner", "text")
    assert app.prop("measure_button", "disabled")
    assert 777 not in app.data("crossover_sparse_source")["k"]
    app.set_value("k_input", 777)
    # The model side still answers: figure 1's K grid now holds the new K.
    app.page.wait_for_function(
        "window.__data('crossover_sparse_source').k.includes(777)", timeout=15_000
    )


def test_make_run_then_measure_with_the_defaults_draws_measured_points(open_page, served_app):
    """The issue's new-user path: `make run`, then *Measure* with nothing changed. Server mode
    starts on the served model's scenario (SmolLM2-135M: d 576, |V| 49,152, this CPU,
    float32), says so, and the head sweep's points land on Figure 1 with a note of what was
    measured beside them."""
    app = open_page(served_app)
    app.wait_model("measure_button")
    app.page.wait_for_function("!window.__find('measure_button').disabled", timeout=60_000)
    assert app.prop("d_input", "value") == 576 and app.prop("vocab_input", "value") == 49_152
    assert "Started on the served model" in app.prop("backend_device", "text")
    app.click("measure_button")
    app.page.wait_for_function(
        "window.__data('crossover_measured_sparse_source').k.length > 3", timeout=300_000
    )
    sparse = app.data("crossover_measured_sparse_source")
    assert all(s > 0 for s in sparse["seconds"]) and max(sparse["k"]) <= 49_152
    assert len(app.data("crossover_measured_dense_source")["k"]) > 0
    note = app.prop("crossover_measured_note", "text")
    assert "d 576" in note and "49,152" in note
    assert not app.prop("backend_banner", "visible")


def test_served_app_measures_k_star_over_batch(open_page, served_app):
    """Server mode, Batch set to 4, Measure: the head is timed at B = 4 (one pass over the
    weights for 4 rows against 4 gathers of K rows) and its points and measured K* land on
    Figure 1; Measure K* over batch then lists measured vs model K* at every batch."""
    app = open_page(served_app + "?d=64&V=2048&K=64&dtype=float32")
    app.wait_model("measure_button")
    app.page.wait_for_function("!window.__find('measure_button').disabled", timeout=60_000)
    app.set_value("batch_input", 4)
    app.page.wait_for_function("window.__find('batch_input').value == 4", timeout=15_000)
    app.click("measure_button")
    app.page.wait_for_function(
        "window.__data('crossover_measured_sparse_source').k.length > 3", timeout=300_000
    )
    assert "batch 4" in app.prop("crossover_measured_note", "text")
    app.page.wait_for_function("!window.__find('measure_batch_button').disabled", timeout=300_000)
    app.click("measure_batch_button")
    app.page.wait_for_function(
        "(window.__find('crossover_batch_readout').text || '').includes('B 16:')",
        timeout=400_000,
    )
    text = app.prop("crossover_batch_readout", "text")
    assert all(f"B {b}:" in text for b in (1, 2, 4, 8, 16)) and "<b>B 4:" in text
    assert "model" in text and len(app.data("crossover_measured_sparse_source")["k"]) > 3
    assert not app.prop("backend_banner", "visible")
