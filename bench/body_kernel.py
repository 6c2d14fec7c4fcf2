"""The body's projection kernel: the quantized kernel (``q``) against float32 BLAS GEMVs.

    python bench/body_kernel.py [--repeats 7] [--requests 3] [--out bench/results/body_kernel.json]

On one core (threadpoolctl: one BLAS thread), the real SmolLM2 weights:

* projection pass: the 120 body projections over T = 1, 2, 4, 8, 16 rows, q and blas
  interleaved in every repeat; medians of wall time and of this thread's CPU time;
* one decode step's body (T = 1 at position ~100), split into projections and the rest
  (attention, RoPE, norms, Python);
* whole steps: always-DenseHead tokens/s with each kernel on the first ``--requests`` workload
  requests (interleaved per request), tokens checked identical;
* peak RSS of a fresh process that loads the engine and decodes one request, per kernel.

Ratios are within this run; a busy machine inflates every number (say so when reporting).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from app.engine.engine import Engine  # noqa: E402
from app.engine.forward_numpy import NumpyLlama  # noqa: E402
from app.engine.requests import load_requests  # noqa: E402

ROWS = (1, 2, 4, 8, 16)
KERNELS = ("q", "blas")


def _clock(fn):
    """(wall s, thread CPU s) of one call."""
    w0, c0 = time.perf_counter(), time.thread_time()
    fn()
    return time.perf_counter() - w0, time.thread_time() - c0


def projection_pass(bodies: dict, repeats: int) -> dict:
    """Every body projection once over T rows of the right widths: medians in ms."""
    rng = np.random.default_rng(0)
    d, ff = bodies["q"].cfg.d, bodies["q"].cfg.d_ff
    out = {}
    for t in ROWS:
        x, h = (
            rng.standard_normal((t, d), dtype=np.float32),
            rng.standard_normal((t, ff), dtype=np.float32),
        )

        def run(body, x=x, h=h):
            for p in body.proj:
                p.qkv(x), p.o(x), p.gate_up(x), p.down(h)

        times = {k: [] for k in KERNELS}
        for _ in range(repeats):
            for k in KERNELS:  # interleaved: both see the same machine load
                times[k].append(_clock(lambda k=k: run(bodies[k])))
        out[t] = {
            k: {
                "wall_ms": 1e3 * float(np.median([w for w, _ in v])),
                "cpu_ms": 1e3 * float(np.median([c for _, c in v])),
            }  # fmt: skip
            for k, v in times.items()
        }
        q, b = out[t]["q"]["cpu_ms"], out[t]["blas"]["cpu_ms"]
        print(f"T={t:2d}  q {q:7.1f} ms  blas {b:7.1f} ms  (cpu, median)  blas/q {b / q:.2f}")
    return out


def step_split(body: NumpyLlama, repeats: int, position: int = 100) -> dict:
    """One T = 1 step's body at ``position``: total, projections, rest (ms, CPU medians)."""
    cache = body.new_cache(position + 1)
    body.forward(np.arange(position) % 1000, cache)
    spent = [0.0]

    def timed(f):
        def run(x):
            c0 = time.thread_time()
            y = f(x)
            spent[0] += time.thread_time() - c0
            return y

        return run

    saved = body.proj
    body.proj = [type(p)(timed(p.qkv), timed(p.o), timed(p.gate_up), timed(p.down)) for p in saved]
    totals, projs = [], []
    try:
        for _ in range(repeats):
            spent[0] = 0.0
            totals.append(_clock(lambda: body.forward([42], cache, position))[1])
            projs.append(spent[0])
    finally:
        body.proj = saved
    total, proj = 1e3 * float(np.median(totals)), 1e3 * float(np.median(projs))
    rest = total - proj
    print(f"step body ({body.kernel}): {total:.1f} ms, projections {proj:.1f}, rest {rest:.1f}")
    return {"body_ms": total, "projections_ms": proj, "rest_ms": total - proj}


def whole_steps(engines: dict, requests) -> dict:
    """Always-DenseHead tokens/s per kernel, interleaved per request; tokens must agree. Also
    where the decode steps' time goes (body, head, grammar, the rest), in ms per token."""
    parts = ("seconds", "body_s", "head_s", "mask_s")
    tot = {k: dict.fromkeys(("tokens",) + parts, 0.0) for k in KERNELS}
    same = True
    for req in requests:
        got = {}
        for k in KERNELS:
            r = engines[k].decode(req, plan="dense")
            got[k] = r.tokens
            tot[k]["tokens"] += len(r.tokens)
            for f in parts[1:]:
                tot[k][f] += sum(getattr(st, f) for st in r.steps)
            tot[k]["seconds"] += sum(st.seconds for st in r.steps)
        same &= got["q"] == got["blas"]
    out = {}
    for k, t in tot.items():
        n = max(t["tokens"], 1)
        ms = {f"{f[:-2] if f != 'seconds' else 'step'}_ms": 1e3 * t[f] / n for f in parts}
        ms["rest_ms"] = ms["step_ms"] - ms["body_ms"] - ms["head_ms"] - ms["mask_ms"]
        out[k] = {"tokens": int(t["tokens"]), "tok_per_s": n / t["seconds"], **ms}
        print(f"DenseHead ({k}): {out[k]['tok_per_s']:.1f} tok/s; per token " +
              ", ".join(f"{f} {v:.1f}" for f, v in ms.items()))  # fmt: skip
    out["identical_tokens"] = bool(same)
    print(f"tokens identical under both kernels: {same}")
    return out


def peak_rss(kernel: str, requests_path: Path) -> float:
    """MiB: a fresh process loads the engine with ``kernel`` and decodes the first request."""
    code = (
        "import resource, sys; from app.engine.engine import Engine;"
        "from app.engine.requests import load_requests;"
        f"e = Engine.load(kernel={kernel!r}); e.decode(load_requests({str(requests_path)!r})[0],"
        " plan='dense'); print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    return int(out.stdout.strip().splitlines()[-1]) / 1024


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--requests", type=int, default=3)
    ap.add_argument("--requests-file", type=Path, default=HERE / "workload" / "requests.jsonl")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "body_kernel.json")
    args = ap.parse_args(argv)
    if not 1 <= args.repeats <= 50 or not 0 <= args.requests <= 20:
        raise SystemExit("--repeats must be in [1, 50] and --requests in [0, 20]")
    engines = {k: Engine.load(kernel=k) for k in KERNELS}  # one BLAS thread (Engine sets it)
    bodies = {k: e.body for k, e in engines.items()}
    result = {
        "machine": {"cpus": os.cpu_count(), "loadavg_start": os.getloadavg()},
        "kernel_isa": __import__("app.engine.qkernel", fromlist=["x"]).best_isa(),
        "packed_mb": {k: sum(p.nbytes for p in b.proj) / 2**20 for k, b in bodies.items()},
        "projection_pass": projection_pass(bodies, args.repeats),
        "step_body": {k: step_split(b, args.repeats) for k, b in bodies.items()},
    }
    reqs = load_requests(args.requests_file)[: args.requests]
    result["dense_decode"] = whole_steps(engines, reqs) if reqs else None
    result["peak_rss_mib"] = {k: peak_rss(k, args.requests_file) for k in KERNELS}
    result["machine"]["loadavg_end"] = os.getloadavg()
    print(f"peak RSS MiB: {result['peak_rss_mib']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
