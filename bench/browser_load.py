"""Load-time benchmark of the static site in headless Chromium on localhost.

Medians over ``--loads`` page loads in one run:

* cold time-to-interactive: a fresh browser context (empty cache) until the worker's document
  is rendered and linked (``llmqp.timings.interactive``, ms after navigation start);
* pre-rendered figures visible: Bokeh has drawn the page's embedded figures;
* warm time-to-interactive: a reload in the same context, right after the cold load is
  interactive (HTTP cache and the site's service worker filled);
* slider -> redrawn figure: set ``k_slider``, wait for figure 1's data to change and a frame;
* LinUCB steps/s inside Pyodide (the app's own ``LiveRun.advance``, and the online
  ``select``/``update`` loop), beside the same code in this CPython;
* the size of static/.

Writes bench/results/browser_load.json, prints a table, saves docs/screenshot.png.

Usage: ``python bench/browser_load.py [--loads 3] [--static static]`` (build static/ first).
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


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def serve(folder: Path):
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}/"


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
        "['ready', 'error'].includes(document.documentElement.dataset.llmqp)", timeout=120_000
    )
    if page.evaluate("document.documentElement.dataset.llmqp") != "ready":
        status = page.evaluate("document.getElementById('llmqp-status').textContent")
        raise SystemExit(f"the page failed to start: {status}")
    return page.evaluate("llmqp.timings")


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def measure(static: Path, loads: int, screenshot: Path | None) -> dict:
    from playwright.sync_api import sync_playwright

    server, url = serve(static)
    blocked: list[str] = []
    cold, warm, redraw, pyodide = [], [], [], None
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        for i in range(loads):
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            context.route("**/*", only_local(url, blocked))
            page = context.new_page()
            page.goto(url)
            cold.append(wait_ready(page))
            page.reload()
            warm.append(wait_ready(page))
            page.wait_for_timeout(300)
            start, end = page.evaluate(
                "(() => { const d = Bokeh.documents[Bokeh.documents.length - 1];"
                " const m = d.get_model_by_name('k_slider'); return [m.start, m.end]; })()"
            )
            for j in range(5):
                target = start + (0.3 + 0.1 * j) * (end - start)
                redraw.append(page.evaluate(REDRAW_JS, [target]))
                page.wait_for_timeout(100)
            if i == 0:
                pyodide = page.evaluate("(code) => llmqp.eval(code)", ROUTER_BENCH)
                if screenshot is not None:  # the default scenario (the URL now carries K)
                    page.goto(url)
                    wait_ready(page)
                    page.wait_for_timeout(500)
                    screenshot.parent.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(screenshot), full_page=True)
            context.close()
        version = browser.version
        browser.close()
    server.shutdown()

    cpython: dict = {}
    exec(compile(ROUTER_BENCH.rsplit("\n{", 1)[0], "router_bench", "exec"), cpython)
    med = statistics.median
    return {
        "browser": f"Chromium {version} headless",
        "machine": f"{platform.machine()}, {_cpus()} CPUs",
        "loads": loads,
        "cold_tti_ms": med(t["interactive"] for t in cold),
        "prerendered_ms": med(t["prerendered"] for t in cold),
        "warm_tti_ms": med(t["interactive"] for t in warm),
        "warm_prerendered_ms": med(t["prerendered"] for t in warm),
        "slider_redraw_ms": med(redraw),
        "cold_phases_ms": {k: med(t.get(k, float("nan")) for t in cold) for k in cold[0]},
        "warm_phases_ms": {k: med(t.get(k, float("nan")) for t in warm) for k in warm[0]},
        "pyodide_live_linucb_steps_per_s": pyodide["live_steps_per_s"],
        "pyodide_online_linucb_steps_per_s": pyodide["online_steps_per_s"],
        "cpython_live_linucb_steps_per_s": cpython["live"],
        "cpython_online_linucb_steps_per_s": cpython["online"],
        "static_bytes": folder_bytes(static),
        "blocked_foreign_requests": blocked,
        "raw": {"cold": cold, "warm": warm, "slider_redraw_ms": redraw},
    }


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


GOALS = [  # (label, key, unit, goal, lower is better)
    ("cold time-to-interactive", "cold_tti_ms", "ms", 6000, True),
    ("pre-rendered figures visible", "prerendered_ms", "ms", 1500, True),
    ("warm time-to-interactive", "warm_tti_ms", "ms", 3000, True),
    ("slider -> redrawn figure", "slider_redraw_ms", "ms", 100, True),
    ("LinUCB steps/s in Pyodide (app LiveRun)", "pyodide_live_linucb_steps_per_s", "/s", 30000,
     False),
    ("LinUCB steps/s in Pyodide (online loop)", "pyodide_online_linucb_steps_per_s", "/s", None,
     False),
    ("LinUCB steps/s in CPython (app LiveRun)", "cpython_live_linucb_steps_per_s", "/s", None,
     False),
    ("LinUCB steps/s in CPython (online loop)", "cpython_online_linucb_steps_per_s", "/s", None,
     False),
]  # fmt: skip


def table(result: dict) -> str:
    rows = [f"{'metric':44} {'median':>12} {'goal':>10}  met"]
    for label, key, unit, goal, lower in GOALS:
        value = result[key]
        met = (
            "" if goal is None else ("yes" if (value <= goal if lower else value >= goal) else "NO")
        )
        goal_s = "" if goal is None else f"{goal:,}{unit}"
        rows.append(f"{label:44} {value:>10,.0f}{unit:2} {goal_s:>10}  {met}")
    rows.append(f"{'static/ size':44} {result['static_bytes'] / 1e6:>10.1f}MB")
    phases = ", ".join(f"{k} {v:.0f}" for k, v in result["cold_phases_ms"].items())
    rows.append(f"cold phases (ms after navigation): {phases}")
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loads", type=int, default=3)
    ap.add_argument("--static", type=Path, default=ROOT / "static")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "browser_load.json")
    ap.add_argument("--screenshot", type=Path, default=ROOT / "docs" / "screenshot.png")
    args = ap.parse_args(argv)
    if not (args.static / "index.html").is_file():
        print(f"{args.static} has no index.html: run python build.py first", file=sys.stderr)
        return 1
    if not Path(CHROMIUM).is_file():
        print(f"{CHROMIUM} is missing: apt-get install -y chromium", file=sys.stderr)
        return 1
    started = time.perf_counter()
    result = measure(args.static, max(args.loads, 3), args.screenshot)
    result["bench_seconds"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(table(result))
    if result["blocked_foreign_requests"]:
        print(f"blocked requests to other origins: {result['blocked_foreign_requests']}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
