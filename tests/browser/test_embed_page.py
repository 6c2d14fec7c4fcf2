"""The documented embed snippet on a plain page that is not ours (docs/embedding.md).

The page has its own CSS, heading, paragraphs and script; the test loads it once without the
snippet and once with it, and checks that the figures render and go live, that a slider changes
the data, that nothing is requested off the page's origin (the fixtures' accounting), and that
the page's own text, styles and layout above the figures are what they were.
"""

from __future__ import annotations

import functools
import http.server
import os
import threading
from pathlib import Path

import pytest

from app.web import testhooks

EMBED = "build/embed-site/llmqp"  # python build.py --embed build/embed-site (make test)

HOST = """<!doctype html>
<html><head><meta charset="utf-8"><title>Our paper</title>
<style>
body { font: 16px/1.6 Palatino, serif; color: #222; background: #fffdf7; margin: 0 auto;
       max-width: 720px; padding: 20px; }
h1 { font-size: 34px; color: #6b1d1d; margin: 10px 0 20px; }
p { margin: 0 0 14px; }
.note { border-left: 4px solid #6b1d1d; padding-left: 10px; }
div { box-sizing: border-box; }
</style>
%(snippet)s
</head><body>
<h1 id="title">Query planning, explained</h1>
<p id="p1">Our own first paragraph, with <em>emphasis</em>.</p>
<p id="p2" class="note">A note in the page's own style.</p>
<button id="own-button" onclick="this.textContent = 'clicked'">our button</button>
%(figures)s
<p id="p3">The last paragraph of the host page.</p>
<script>window.hostScriptRan = true;</script>
</body></html>
"""
SNIPPET = '<script src="llmqp/embed.js" defer></script>'
FIGURES = """
<div data-llmqp-figure="crossover" data-llmqp-params="k=64&vocab=128256"
     data-llmqp-group="one"></div>
<div data-llmqp-figure="explain" data-llmqp-group="one"></div>
<div data-llmqp-figure="amortization" data-llmqp-params="workload=real"></div>
"""
PLAIN_FIGURES = FIGURES.replace("data-llmqp-figure", "data-x")

SNAPSHOT_JS = """() => {
  const out = {};
  for (const id of ["title", "p1", "p2", "own-button"]) {
    const el = document.getElementById(id);
    const cs = getComputedStyle(el);
    const r = el.getBoundingClientRect();
    out[id] = {text: el.textContent, box: [r.x, r.y, r.width, r.height],
               style: [cs.fontFamily, cs.fontSize, cs.color, cs.margin, cs.lineHeight]};
  }
  const b = getComputedStyle(document.body);
  const box = document.body.getBoundingClientRect();
  // The body's box, not its computed margin: Chromium reports "margin: 0 auto" as "0px" or
  // "0px 320px" depending on when it resolved it, while the box is what the reader sees.
  out.body = [b.fontFamily, b.backgroundColor, b.maxWidth, box.left, box.width];
  out.p3 = document.getElementById("p3").textContent;
  return out;
}"""


@pytest.fixture(scope="module")
def host_url(tmp_path_factory):
    embed = Path(__file__).resolve().parents[2] / EMBED
    if not (embed / "embed.js").is_file():
        pytest.fail(f"{embed} is missing: python build.py --embed build/embed-site")
    site = tmp_path_factory.mktemp("host")
    os.symlink(embed, site / "llmqp")
    (site / "with.html").write_text(HOST % {"snippet": SNIPPET, "figures": FIGURES})
    (site / "without.html").write_text(HOST % {"snippet": "", "figures": PLAIN_FIGURES})
    handler = functools.partial(testhooks.HookedHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()


def _ready(app):
    app.page.wait_for_function(
        "window.llmqpEmbed && ['ready', 'error'].includes(llmqpEmbed.state)", timeout=120_000
    )
    states = app.page.evaluate(
        "[...document.querySelectorAll('[data-llmqp-figure]')].map((e) => e.dataset.llmqpState)"
    )
    title = app.page.evaluate("document.querySelector('[data-llmqp-figure]').title")
    assert states == ["ready"] * 3, title


def test_embed_on_a_page_that_is_not_ours(open_page, host_url):
    plain = open_page(host_url + "without.html")
    before = plain.page.evaluate(SNAPSHOT_JS)

    app = open_page(host_url + "with.html")
    _ready(app)
    assert app.page.evaluate(SNAPSHOT_JS) == before  # text, styles, layout above the figures
    assert app.page.evaluate("window.hostScriptRan") is True
    app.page.click("#own-button")
    assert app.page.text_content("#own-button") == "clicked"

    # Figures render in their elements; one worker serves them all.
    for i in range(3):
        assert app.page.locator("[data-llmqp-figure]").nth(i).bounding_box()["height"] > 150
    workers = app.page.evaluate(
        "performance.getEntriesByType('resource').filter((e) => e.name.includes('embed-worker'))"
        ".length"
    )
    assert workers == 1

    # The params apply, and a slider changes the data (the group's plan table follows).
    assert app.prop("k_input", "value") == 64
    dense = app.data("crossover_dense")
    table = app.prop("explain_table", "text")
    app.set_value("k_input", 2000)
    app.wait_change("window.__data('crossover_dense')", dense)
    app.wait_change("window.__find('explain_table').text", table)
    app.page.wait_for_function("window.__data('crossover_dense').k.includes(2000)", timeout=30_000)
    assert app.eval("1 + 2") == 3  # the embed's worker answers the test-only hook

    # An element's own params choose the real trace: its measured error over τ is drawn.
    from app.widgets.workload import real_workload

    app.page.wait_for_function(
        "window.__data('amortization_trace_error').error.length > 0", timeout=30_000
    )
    got = app.data("amortization_trace_error")["error"]
    assert got == real_workload()["error"].tolist()
