"""Load-time benchmark of the static site's pages in headless Chromium on localhost.

Medians over ``--loads`` page loads in one run, for each page (``index.html``, ``paper.html``)
of ``--static``, and of ``--before`` (another build, e.g. of an earlier commit) in the same run,
the two builds' loads interleaved (before, after, after, before, …) so that the machine's load
swings hit both alike:

* cold time-to-interactive: a fresh browser context (empty cache) until the worker's document
  is rendered and linked (``llmqp.timings.interactive``, ms after navigation start);
* pre-rendered figures visible: Bokeh has drawn the page's embedded figures;
* warm time-to-interactive: a reload in the same context, right after the cold load is
  interactive (HTTP cache and the site's service worker filled);
* slider -> redrawn figure: set ``k_slider``, wait for figure 1's data to change and a frame;
* LinUCB steps/s inside Pyodide (the app's own ``LiveRun.advance``, and the online
  ``select``/``update`` loop), beside the same code in this CPython;
* the size of static/.

Writes bench/results/browser_load.json, prints a table, saves docs/screenshot.png (the app at
1280 px) and docs/paper-1280.png, docs/paper-390.png (the article at 1280 and 390 px wide).

Usage: ``python bench/browser_load.py [--loads 3] [--static static] [--before DIR]`` (build
first). The server appends the test-only eval hook to each worker (app/web/testhooks.py).
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--disable-default-apps",
    "--disable-domain-reliability", "--disable-sync", "--metrics-recording-only",
    "--no-first-run", "--no-default-browser-check",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
]  # fmt: skip

# Python run in the page's worker and in this CPython: LinUCB decisions per second.
ROUTER_BENCH = """
import time
import numpy as np
from app.router import LinUCB
from app.router.experiment import LiveRun
from app.widgets.state import ScenarioState

s = ScenarioState().scenario
run = LiveRun(s, "linucb")
t0 = time.perf_counter()
run.advance(s.horizon)
live = s.horizon / (time.perf_counter() - t0)

n_arms, dim, steps = 5, 8, 20000
rng = np.random.default_rng(0)
X = np.column_stack([np.ones(steps), rng.random((steps, dim - 1))])
losses = (X @ rng.random((n_arms, dim)).T).tolist()
router = LinUCB(n_arms, dim, alpha=0.1)
select, update = router.select, router.update
t0 = time.perf_counter()
for t in range(steps):
    x = X[t]
    a = select(x)
    update(x, a, losses[t][a])
online = steps / (time.perf_counter() - t0)
{"live_steps_per_s": live, "online_steps_per_s": online, "horizon": int(s.horizon)}
"""

REDRAW_JS = """async ([target]) => {
  const find = (n) => { const d = Bokeh.documents; for (let i = d.length - 1; i >= 0; i--) {
    const m = d[i].get_model_by_name(n); if (m) return m; } return null; };
  const slider = find('k_slider');
  const src = find('crossover_dense').data_source;
  const before = src.data;
  const t0 = performance.now();
  slider.value = target;
  await new Promise((resolve, reject) => {
    const limit = t0 + 10000;
    const poll = () => {
      if (src.data !== before) return resolve();
      if (performance.now() > limit) return reject(new Error('no redraw'));
      requestAnimationFrame(poll);
    };
    poll();
  });
  await new Promise((r) => requestAnimationFrame(() => r()));
  return performance.now() - t0;
}"""


def serve(folder: Path):
    """(server, base URL); ``server.served[0]`` counts the bytes of file bodies sent."""
    from app.web import testhooks

    served = [0]

    class Counting(testhooks.HookedHandler):
        def copyfile(self, source, outputfile):
            data = source.read()
            served[0] += len(data)
            outputfile.write(data)

    handler = functools.partial(Counting, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.served = served
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}/"


# The worker's memory snapshot (templates/snapshot.js) is saved once the page is live; the
# warm reload stands for a later visit, so it waits for it (a build without one: at once).
SNAPSHOT_SAVED_JS = (
    "!window.llmqp.snapshot || !['missing', 'stale', 'failed'].includes(llmqp.snapshot.state)"
)


def only_local(origin: str, blocked: list):
    def route(r):
        if r.request.url.startswith((origin, "data:", "blob:")):
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()

    return route


def wait_ready(page) -> dict:
    page.wait_for_function(
        "['ready', 'error'].includes(document.documentElement.dataset.llmqp)", timeout=300_000
    )
    if page.evaluate("document.documentElement.dataset.llmqp") != "ready":
        status = page.evaluate("document.getElementById('llmqp-status').textContent")
        raise SystemExit(f"the page failed to start: {status}")
    return page.evaluate("llmqp.timings")


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


EVAL_JS = "(code) => (window.llmqp && llmqp.eval ? llmqp.eval(code) : llmqpTest.eval(code))"


def _one_load(browser, url: str, blocked: list, served: list) -> tuple:
    """A cold load in a fresh context, a warm reload, five slider moves; the open context.
    ``cold`` also carries ``first_visit_bytes`` (bytes served until interactive and the
    snapshot saved) and the ``snapshot`` reports of both loads."""
    from app.web import testhooks

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.route("**/*", only_local(url.rsplit("/", 1)[0] + "/", blocked))
    context.add_init_script(testhooks.PAGE_EVAL)
    page = context.new_page()
    before = served[0]
    page.goto(url, timeout=300_000)
    cold = wait_ready(page)
    page.wait_for_function(SNAPSHOT_SAVED_JS, timeout=120_000)
    cold["first_visit_bytes"] = served[0] - before
    cold["snapshot"] = page.evaluate("llmqp.snapshot || null")
    page.reload(timeout=300_000)
    warm = wait_ready(page)
    warm["snapshot"] = page.evaluate("llmqp.snapshot || null")
    page.wait_for_timeout(300)
    start, end = page.evaluate(
        "(() => { const d = Bokeh.documents[Bokeh.documents.length - 1];"
        " const m = d.get_model_by_name('k_slider'); return [m.start, m.end]; })()"
    )
    redraw = []
    for j in range(5):
        target = start + (0.3 + 0.1 * j) * (end - start)
        redraw.append(page.evaluate(REDRAW_JS, [target]))
        page.wait_for_timeout(100)
    return cold, warm, redraw, (context, page)


def measure(builds: dict, page_name: str, loads: int, shots: dict) -> dict:
    """Medians of ``loads`` cold and warm loads of ``page_name`` in each of ``builds``
    (``{name: static folder}``), taken in rounds — one load of each build per round, the order
    reversed every other round — so that a shared machine's swings hit every build alike.
    ``shots`` maps a viewport width to a PNG path: full-page screenshots of the "after" build.
    Returns ``{build: result}``."""
    from playwright.sync_api import sync_playwright

    servers = {name: serve(folder) for name, folder in builds.items()}
    urls = {name: url + page_name for name, (_, url) in servers.items()}
    blocked: dict[str, list] = {name: [] for name in builds}
    samples = {name: {"cold": [], "warm": [], "redraw": []} for name in builds}
    pyodide = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        order = list(builds)
        for i in range(loads):
            for name in order if i % 2 == 0 else order[::-1]:
                served = servers[name][0].served
                cold, warm, redraw, (context, page) = _one_load(
                    browser, urls[name], blocked[name], served
                )
                got = samples[name]
                got["cold"].append(cold)
                got["warm"].append(warm)
                got["redraw"] += redraw
                if i == 0:
                    pyodide[name] = page.evaluate(EVAL_JS, ROUTER_BENCH)
                    for width, path in shots.items() if name == "after" else ():
                        page.set_viewport_size({"width": width, "height": 900})
                        page.goto(urls[name])  # the default scenario (the URL carries K)
                        wait_ready(page)
                        page.wait_for_timeout(800)
                        path.parent.mkdir(parents=True, exist_ok=True)
                        page.screenshot(path=str(path), full_page=True)
                context.close()
        version = browser.version
        browser.close()
    for server, _ in servers.values():
        server.shutdown()

    cpython: dict = {}
    exec(compile(ROUTER_BENCH.rsplit("\n{", 1)[0], "router_bench", "exec"), cpython)
    med = statistics.median
    out = {}
    for name, folder in builds.items():
        cold, warm, redraw = (samples[name][k] for k in ("cold", "warm", "redraw"))
        out[name] = {
            "page": page_name,
            "browser": f"Chromium {version} headless",
            "machine": f"{platform.machine()}, {_cpus()} CPUs",
            "loads": loads,
            "cold_tti_ms": med(t["interactive"] for t in cold),
            "prerendered_ms": med(t["prerendered"] for t in cold),
            "warm_tti_ms": med(t["interactive"] for t in warm),
            "warm_prerendered_ms": med(t["prerendered"] for t in warm),
            "slider_redraw_ms": med(redraw),
            "first_visit_bytes": med(t["first_visit_bytes"] for t in cold),
            "snapshot_cold": [t["snapshot"] for t in cold],
            "snapshot_warm": [t["snapshot"] for t in warm],
            "cold_phases_ms": {k: med(t.get(k, float("nan")) for t in cold) for k in PHASES},
            "warm_phases_ms": {k: med(t.get(k, float("nan")) for t in warm) for k in PHASES},
            "pyodide_live_linucb_steps_per_s": pyodide[name]["live_steps_per_s"],
            "pyodide_online_linucb_steps_per_s": pyodide[name]["online_steps_per_s"],
            "cpython_live_linucb_steps_per_s": cpython["live"],
            "cpython_online_linucb_steps_per_s": cpython["online"],
            "static_bytes": folder_bytes(folder),
            "blocked_foreign_requests": blocked[name],
            "raw": {"cold": cold, "warm": warm, "slider_redraw_ms": redraw},
        }
    return out


PHASES = ("prerendered", "runtime", "packages", "app", "render", "rendered", "interactive")


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


GOALS = [  # (label, key, unit, goal, lower is better)
    ("cold time-to-interactive", "cold_tti_ms", "ms", 3500, True),
    ("first (pre-rendered) figure visible", "prerendered_ms", "ms", 800, True),
    ("warm time-to-interactive", "warm_tti_ms", "ms", 2000, True),
    ("slider -> redrawn figure", "slider_redraw_ms", "ms", 50, True),
    ("LinUCB steps/s in Pyodide (app LiveRun)", "pyodide_live_linucb_steps_per_s", "/s", 30000,
     False),
    ("LinUCB steps/s in Pyodide (online loop)", "pyodide_online_linucb_steps_per_s", "/s", None,
     False),
    ("LinUCB steps/s in CPython (app LiveRun)", "cpython_live_linucb_steps_per_s", "/s", None,
     False),
    ("LinUCB steps/s in CPython (online loop)", "cpython_online_linucb_steps_per_s", "/s", None,
     False),
]  # fmt: skip


def table(results: dict) -> str:
    """One row per metric, one column per (page, build)."""
    cols = [(page, build) for page, builds in results.items() for build in builds]
    head = "".join(f"{page[:-5] + ' ' + build:>16}" for page, build in cols)
    rows = [f"{'metric':42}{head} {'goal':>9}"]
    for label, key, unit, goal, lower in GOALS:
        cells = "".join(f"{results[p][b][key]:>14,.0f}{unit:2}" for p, b in cols)
        goal_s = "" if goal is None else f"{'≤' if lower else '≥'}{goal:,}{unit}"
        rows.append(f"{label:42}{cells} {goal_s:>9}")
    sizes = "".join(f"{results[p][b]['static_bytes'] / 1e6:>14.1f}MB" for p, b in cols)
    rows.append(f"{'static/ size':42}{sizes}")
    first = "".join(f"{results[p][b]['first_visit_bytes'] / 1e6:>14.1f}MB" for p, b in cols)
    rows.append(f"{'bytes of a first visit':42}{first}")
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loads", type=int, default=3)
    ap.add_argument("--static", type=Path, default=ROOT / "static")
    ap.add_argument("--before", type=Path, help="another build to measure in the same run")
    ap.add_argument("--pages", nargs="+", default=["index.html", "paper.html"])
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "browser_load.json")
    ap.add_argument("--docs", type=Path, default=ROOT / "docs", help="where screenshots go")
    args = ap.parse_args(argv)
    if not Path(CHROMIUM).is_file():
        print(f"{CHROMIUM} is missing: apt-get install -y chromium", file=sys.stderr)
        return 1
    started = time.perf_counter()
    builds = {**({"before": args.before} if args.before else {}), "after": args.static}
    shots = {
        "index.html": {1280: args.docs / "screenshot.png"},
        "paper.html": {1280: args.docs / "paper-1280.png", 390: args.docs / "paper-390.png"},
    }
    results: dict = {}
    for page in args.pages:
        present = {name: folder for name, folder in builds.items() if (folder / page).is_file()}
        for name in sorted(set(builds) - set(present)):
            print(f"{builds[name]} has no {page}: skipped", file=sys.stderr)
        if present:
            results[page] = measure(present, page, max(args.loads, 3), shots.get(page, {}))
    summary = {"pages": results, "bench_seconds": round(time.perf_counter() - started, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1) + "\n")
    print(table(results))
    blocked = [u for builds_ in results.values() for r in builds_.values()
               for u in r["blocked_foreign_requests"]]  # fmt: skip
    if blocked:
        print(f"blocked requests to other origins: {blocked}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
