"""The body's projection kernel: the quantized kernel (``q``) against float32 BLAS GEMVs.

    python bench/body_kernel.py [--repeats 7] [--requests 3] [--base PATH]
                                [--out bench/results/body_kernel.json]

On one core (threadpoolctl: one BLAS thread), the real SmolLM2 weights:

* projection pass: the 120 body projections over T = 1, 2, 4, 8, 16 rows — ``q`` (the body's
  ``QLinear`` calls), ``q_kernel`` (the same 120 C kernel calls with preallocated outputs and no
  Python around them: what the calls cost beyond the kernel), ``blas`` and, with ``--base``, a
  checkout of an older engine's ``q`` pass — each engine in a worker process of its own, as it
  runs in use; interleaved in every repeat, the order rotating, each timed pass right after an
  untimed one of its own (the cache state its own decode loop leaves); medians of wall time and
  of the worker thread's CPU time;
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
# a pass worker imports the engine of the checkout it is given (--base: an older one)
_ROOT = sys.argv[sys.argv.index("--worker") + 1] if "--worker" in sys.argv else None
sys.path.insert(0, _ROOT or str(HERE.parent))

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


def _rows(body, t: int):
    """The pass's inputs at T = t, the same in every process: (t, d) and (t, d_ff) float32."""
    rng = np.random.default_rng(t)
    d, ff = body.cfg.d, body.cfg.d_ff
    return rng.standard_normal((t, d), dtype=np.float32), rng.standard_normal(
        (t, ff), dtype=np.float32
    )


def _warm_clock(run):
    """(wall s, thread CPU s) of ``run()`` right after an untimed ``run()``: each kernel timed in
    the cache state its own decode loop leaves (q's 63 MB stay in a large last-level cache
    between steps, blas's 405 MB do not), not in the state the other kernel's pass left."""
    run()
    return _clock(run)


def _pass(body, t: int):
    """One projection pass of ``body`` over T = t rows, through the body's own calls."""
    x, h = _rows(body, t)

    def run():
        for p in body.proj:
            p.qkv(x), p.o(x), p.gate_up(x), p.down(h)

    return run


def _kernel_pass(body, t: int):
    """The same 120 C kernel calls, outputs preallocated, nothing around them."""
    from app.engine import qkernel

    x, h = _rows(body, t)
    calls = []
    for p in body.proj:
        for lin, inp in ((p.qkv, x), (p.o, x), (p.gate_up, x), (p.down, h)):
            (k,) = lin.parts  # one packed part per projection (SmolLM2: all Q4_1)
            y = np.empty((t, k.out), np.float32)
            calls.append((k.fmt, k.q, k.d, k.m, k.out, k.inp, inp, t, k.inp, y, k.out))
    isa, none = qkernel.isa_code(), qkernel.NO_GROUPS

    def run():
        for c in calls:
            qkernel._qkernel.proj(*c, isa, none, 1)

    return run


def projection_pass(workers: dict, repeats: int) -> dict:
    """Every body projection once over T rows of the right widths: medians in ms. ``workers``:
    column -> (worker process, mode), each kernel in a process of its own (:func:`pass_worker`),
    as an engine runs — one kernel's weights never share a process, or its heap, with another's."""
    out = {}
    for t in ROWS:
        times = {k: [] for k in workers}
        order = list(times)
        for r in range(repeats):  # interleaved, the order rotating: all see the same load
            for k in order[r % len(order) :] + order[: r % len(order)]:
                proc, mode = workers[k]
                proc.stdin.write(f"{mode} {t}\n")
                proc.stdin.flush()
                times[k].append(tuple(json.loads(proc.stdout.readline())))
        out[t] = {
            k: {
                "wall_ms": 1e3 * float(np.median([w for w, _ in v])),
                "cpu_ms": 1e3 * float(np.median([c for _, c in v])),
            }  # fmt: skip
            for k, v in times.items()
        }
        cpu = {k: v["cpu_ms"] for k, v in out[t].items()}
        print(f"T={t:2d} cpu ms (median): " + "  ".join(f"{k} {v:6.1f}" for k, v in cpu.items())
              + f"  blas/q {cpu['blas'] / cpu['q']:.2f}")  # fmt: skip
    return out


def pass_worker(root: str, kernel: str) -> None:
    """In the checkout ``root`` (see the sys.path set-up above): load the engine with ``kernel``
    and answer each ``MODE T`` line on stdin with the [wall s, thread CPU s] of one pass over
    T rows — MODE ``pass`` the body's own calls, ``kernel`` the bare C calls (this checkout)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    body = Engine.load(kernel=kernel).body
    make = {"pass": _pass, "kernel": _kernel_pass}
    runs: dict = {}
    print("ready", flush=True)
    for line in sys.stdin:
        mode, t = line.split()
        run = runs.setdefault((mode, t), make[mode](body, int(t)))
        print(json.dumps(_warm_clock(run)), flush=True)


def _spawn(root: str, kernel: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": root, "OMP_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1", "LLMQP_KERNEL_THREADS": "1"}  # fmt: skip
    args = [sys.executable, __file__, "--worker", root, "--worker-kernel", kernel]
    p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    assert p.stdout.readline().strip() == "ready"
    return p


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
    """MiB: a fresh process loads the engine with ``kernel`` and decodes the first request.
    Its own high-water mark (VmHWM): ``ru_maxrss`` starts a forked child at its parent's RSS."""
    code = (
        "from app.engine.engine import Engine;"
        "from app.engine.requests import load_requests;"
        f"e = Engine.load(kernel={kernel!r}); e.decode(load_requests({str(requests_path)!r})[0],"
        " plan='dense');"
        "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])"
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
    ap.add_argument("--base", default=None, help="a checkout of an older engine to time beside")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--worker-kernel", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        pass_worker(args.worker, args.worker_kernel)
        return 0
    if not 1 <= args.repeats <= 50 or not 0 <= args.requests <= 20:
        raise SystemExit("--repeats must be in [1, 50] and --requests in [0, 20]")
    engines = {k: Engine.load(kernel=k) for k in KERNELS}  # one BLAS thread (Engine sets it)
    bodies = {k: e.body for k, e in engines.items()}
    root = str(HERE.parent)
    procs = {"q": _spawn(root, "q"), "blas": _spawn(root, "blas")}
    workers = {"q": (procs["q"], "pass"), "q_kernel": (procs["q"], "kernel"),
               "blas": (procs["blas"], "pass")}  # fmt: skip
    if args.base:
        procs["q_base"] = _spawn(args.base, "q")
        workers["q_base"] = (procs["q_base"], "pass")
    result = {
        "machine": {"cpus": os.cpu_count(), "loadavg_start": os.getloadavg()},
        "kernel_isa": __import__("app.engine.qkernel", fromlist=["x"]).best_isa(),
        "base": args.base,
        "packed_mb": {k: sum(p.nbytes for p in b.proj) / 2**20 for k, b in bodies.items()},
        "projection_pass": projection_pass(workers, args.repeats),
        "step_body": {k: step_split(b, args.repeats) for k, b in bodies.items()},
    }
    reqs = load_requests(args.requests_file)[: args.requests]
    result["dense_decode"] = whole_steps(engines, reqs) if reqs else None
    for proc in procs.values():
        proc.stdin.close()
        proc.wait()
    result["peak_rss_mib"] = {k: peak_rss(k, args.requests_file) for k in KERNELS}
    result["machine"]["loadavg_end"] = os.getloadavg()
    print(f"peak RSS MiB: {result['peak_rss_mib']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
