"""The worker's memory snapshot (app/web/templates/snapshot.js): made on a first visit, restored
on the next, and never a broken page when it is damaged or of another build."""

from __future__ import annotations

import json

SNAPSHOT_STATE = "window.llmqp && llmqp.snapshot ? llmqp.snapshot.state : null"

# Python in the worker: the router run's summary (as test_static_site compares it).
SUMMARY = (
    "import gc, json\n"
    "from app.widgets.session import RouterSession\n"
    "s = [o for o in gc.get_objects() if isinstance(o, RouterSession)]\n"
    "json.loads(json.dumps(s[0].summary()))"
)

# In the page: rewrite this page's saved snapshot with ``how`` ("truncate" or "rekey").
TAMPER_JS = """async (how) => {
  const cache = await caches.open("llmqp.snapshot");
  const keys = await cache.keys();
  if (keys.length !== 1) throw new Error("expected one snapshot, found " + keys.length);
  const bytes = new Uint8Array(await (await cache.match(keys[0])).arrayBuffer());
  await cache.delete(keys[0]);
  if (how === "truncate") {
    await cache.put(keys[0], new Response(bytes.subarray(0, bytes.length - 4096)));
  } else {
    await cache.put(keys[0].url.split("?")[0] + "?llmqp-snapshot=0123456789abcdef",
                    new Response(bytes));
  }
  return keys[0].url;
}"""


def _stored(app) -> dict:
    """Wait until the page's snapshot is saved; its report (state, bytes, ms)."""
    app.page.wait_for_function(f"({SNAPSHOT_STATE}) === 'stored'", timeout=60_000)
    return app.page.evaluate("llmqp.snapshot")


def _play_summary(app) -> dict:
    app.click("play_button")
    app.page.wait_for_timeout(1500)
    app.click("play_button")
    app.page.wait_for_timeout(800)
    return app.eval(SUMMARY)


def test_snapshot_restores_with_the_same_numbers(open_page, static_url, cpython, app_checks):
    """First visit: no snapshot, one made and saved. Second: restored, and the app's numbers
    (Figure 3's run, the prose readout, the sliders) are CPython's for the same seed."""
    assert_close, cpython_app_after = cpython
    app = open_page(static_url)
    app.wait_static_ready()
    report = _stored(app)
    assert report["bytes"] > 20e6, report
    # The worker imports what the app build imports before it (app.web.preimport): the
    # build itself imports next to nothing (was ~100 modules: markdown-it, numpy.random, …).
    assert len(report["build_imports"]) <= 5, report["build_imports"]
    without = _play_summary(app)
    want = json.loads(json.dumps(cpython_app_after(without["steps"]).session.summary()))
    assert_close(without, want)

    app.page.reload()
    app.wait_static_ready()
    assert app.page.evaluate(SNAPSHOT_STATE) == "restored"
    assert app.page.evaluate("llmqp.hydrated") is True
    # The snapshot holds the built app: a restored visit does not build it again.
    assert app.page.evaluate("llmqp.timings.app") is None
    assert app.page.evaluate("llmqp.snapshot.times.resumed") > 0
    assert app.eval("import sys, numpy; [sys.platform, int(numpy.arange(5).sum())]") == [
        "emscripten",
        10,
    ]
    restored = _play_summary(app)
    want = json.loads(json.dumps(cpython_app_after(restored["steps"]).session.summary()))
    assert_close(restored, want)
    app.page.reload()  # restored once more: the shared end-to-end checks from a fresh page
    app.wait_static_ready()
    assert app.page.evaluate(SNAPSHOT_STATE) == "restored"
    app_checks(app)


def test_damaged_snapshot_falls_back_and_is_replaced(open_page, static_url):
    app = open_page(static_url)
    app.wait_static_ready()
    _stored(app)
    app.page.evaluate(TAMPER_JS, "truncate")
    lines = len(app.traffic.lines)
    app.page.reload()
    app.wait_static_ready()
    assert app.page.evaluate(SNAPSHOT_STATE) in ("failed", "stored")
    said = [x for x in app.traffic.lines[lines:] if "snapshot" in x]
    assert len(said) == 1 and "damaged" in said[0], said
    _stored(app)  # a good one replaces it
    _check_k_slider(app)
    app.page.reload()
    app.wait_static_ready()
    assert app.page.evaluate(SNAPSHOT_STATE) == "restored"


def test_stale_snapshot_is_ignored_and_replaced(open_page, static_url):
    app = open_page(static_url)
    app.wait_static_ready()
    _stored(app)
    app.page.evaluate(TAMPER_JS, "rekey")
    app.page.reload()
    app.wait_static_ready()
    assert app.page.evaluate(SNAPSHOT_STATE) in ("stale", "stored")
    _stored(app)
    _check_k_slider(app)
    keys = app.page.evaluate(
        "async () => (await (await caches.open('llmqp.snapshot')).keys()).map((r) => r.url)"
    )
    assert len(keys) == 1 and "0123456789abcdef" not in keys[0], keys


def _check_k_slider(app) -> None:
    dense = app.data("crossover_dense")
    start, end = (app.prop("k_slider", a) for a in ("start", "end"))
    app.set_value("k_slider", start + 0.3 * (end - start))
    app.wait_change("window.__data('crossover_dense')", dense)
