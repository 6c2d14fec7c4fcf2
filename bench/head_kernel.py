"""The output head on the exact kernel (``q``) against float32 BLAS, and the whole step.

    python bench/head_kernel.py [--repeats 7] [--requests 4] [--base PATH]
                                [--out bench/results/head_kernel.json]

On one core (one BLAS thread, one kernel thread), SmolLM2-135M's real head (49,152 × 576):

* ``heads``: DenseHead (the kernel, the mask, the argmax) and SparseHead at K = 1, 16, 1,024,
  16,384 (random legal ids), q and blas interleaved in every repeat; medians of this thread's
  CPU time. Also SparseHead on a K grid, to place the measured K* (B = 1) beside the rule's.
* ``batched``: the dense head of B = 1, 4, 16 states — one q call (what the scheduler runs
  with the q kernel) against B solo q calls and B solo BLAS GEMVs (what it runs with blas).
* ``scheduler``: 16 workload requests, always-DenseHead, through the scheduler at batch 4 and
  16, the pass's dense heads in one q call vs one q call per row (interleaved; wall seconds).
* ``steps``: whole decode steps (body, attention, head, grammar, Python) on the first
  ``--requests`` workload requests, always-DenseHead and ``auto``, for the q engine, the q body
  with the float32 heads (``q+blas-head``: before the heads moved), the blas engine and, with
  ``--base``, a checkout of an older engine (c2cbaf9: float32 BLAS body and
  heads) — each stack a worker process of its own, the stacks interleaved per request and plan.
  Decode tokens/s (prefill excluded) and ms per token of grammar, body, head and the rest.

Ratios are within one run; a busy machine inflates every number (say so when reporting).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
KS = (1, 16, 1024, 16384)
BATCHES = (1, 4, 16)
STACK_PLANS = ("dense", "auto")


def _median_cpu(fn, repeats: int) -> float:
    """Median CPU seconds of ``fn()`` over ``repeats`` calls (one warm-up call first)."""
    import numpy as np

    fn()
    times = []
    for _ in range(repeats):
        t0 = time.thread_time()
        fn()
        times.append(time.thread_time() - t0)
    return float(np.median(times))


def heads(engine, repeats: int, rng) -> dict:
    """Dense and sparse head milliseconds, q and blas, interleaved."""
    import numpy as np

    from app.engine.head import BlasHead
    from app.engine.plans import dense_head, sparse_head

    vocab = engine.config.vocab
    h = rng.standard_normal(engine.config.d, dtype=np.float32)
    heads_by = {"q": engine.head, "blas": BlasHead(engine.output)}
    grid = sorted({*KS, *np.geomspace(64, vocab, 14).astype(int).tolist()})
    out = {"dense_ms": {}, "sparse_ms": {k: {} for k in grid}}
    for kernel in heads_by:
        for k in grid:
            out["sparse_ms"][k][kernel] = []
        out["dense_ms"][kernel] = []
    legal_all = np.sort(rng.choice(vocab, vocab // 2, replace=False))
    for _ in range(repeats):  # interleaved: each repeat times every head once
        for kernel, head in heads_by.items():
            out["dense_ms"][kernel].append(
                _median_cpu(lambda head=head: dense_head(head, h, legal_all), 1)
            )
            for k in grid:
                legal = np.sort(rng.choice(vocab, k, replace=False))
                t = _median_cpu(lambda head=head, legal=legal: sparse_head(head, h, legal), 1)
                out["sparse_ms"][k][kernel].append(t)
    med = lambda xs: 1e3 * float(np.median(xs))  # noqa: E731
    out["dense_ms"] = {kn: med(v) for kn, v in out["dense_ms"].items()}
    out["sparse_ms"] = {k: {kn: med(v) for kn, v in d.items()} for k, d in out["sparse_ms"].items()}
    out["k_star_measured"] = {kn: _crossing(out, kn, grid) for kn in heads_by}
    out["k_star_rule"] = engine.rule.k_star
    return out


def _crossing(out: dict, kernel: str, grid) -> int | None:
    """The K where the sparse head's time first reaches the dense head's (linear between grid
    points); None when it never does up to the vocabulary."""
    dense = out["dense_ms"][kernel]
    prev = None
    for k in grid:
        s = out["sparse_ms"][k][kernel]
        if s >= dense:
            if prev is None:
                return int(k)
            k0, s0 = prev
            return int(k0 + (k - k0) * (dense - s0) / max(s - s0, 1e-12))
        prev = (k, s)
    return None


def batched(engine, repeats: int, rng) -> dict:
    """Dense head of B states: one q call vs B solo q calls vs B solo BLAS GEMVs (kernel only)."""
    import numpy as np

    from app.engine.head import BlasHead

    blas = BlasHead(engine.output)
    rows = {}
    for b in BATCHES:
        H = rng.standard_normal((b, engine.config.d), dtype=np.float32)
        runs = {
            "q_one_call": lambda H=H: engine.head.logits(H),
            "q_per_row": lambda H=H: [engine.head.logits(x[None]) for x in H],
            "blas_per_row": lambda H=H: [blas.logits(x[None]) for x in H],
        }
        times = {name: [] for name in runs}
        for _ in range(repeats):
            for name, fn in runs.items():
                times[name].append(_median_cpu(fn, 1))
        rows[b] = {name: 1e3 * float(np.median(t)) for name, t in times.items()}
        one = engine.head.logits(H)
        rows[b]["identical_to_solo"] = all(
            np.array_equal(one[i], engine.head.logits(H[i][None])[0]) for i in range(b)
        )
    return rows


def scheduler(engine, requests_path: Path, n: int, repeats: int) -> dict:
    """Always-DenseHead decodes of ``n`` requests (16 tokens each) through the scheduler at
    batch B, the pass's dense heads in one call (shared) or one call per row (the head's batch
    invariance switched off), interleaved; median wall seconds, tokens checked equal."""
    import dataclasses

    import numpy as np

    from app.engine.batch_limits import BatchLimits
    from app.engine.options import DecodeOptions
    from app.engine.requests import load_requests
    from app.engine.scheduler import Scheduler

    reqs = [dataclasses.replace(r, max_tokens=16) for r in load_requests(requests_path)[:n]]
    opts, head, out = DecodeOptions(plan="dense"), engine.head, {}
    for b in (4, 16):
        times, tokens = {"shared": [], "per_row": []}, {}
        for _ in range(repeats):
            for mode in times:
                head.batch_invariant = mode == "shared"  # instance flag: the scheduler's test
                sched = Scheduler(engine.session(), BatchLimits(max_batch=b))
                t0 = time.perf_counter()
                res = sched.decode_all(reqs, opts)
                times[mode].append(time.perf_counter() - t0)
                tokens[mode] = [r.tokens for r in res]
        del head.batch_invariant
        total = sum(len(t) for t in tokens["shared"])
        out[b] = {m: {"wall_s": float(np.median(t)), "tokens_per_s": total / float(np.median(t))}
                  for m, t in times.items()}  # fmt: skip
        out[b]["identical"] = tokens["shared"] == tokens["per_row"]
    return out


# -- whole steps: one worker process per stack -------------------------------------------------


def worker(root: str, kernel: str | None, requests_path: str) -> None:
    """Load an engine from the checkout ``root`` and decode ``{"id", "plan"}`` lines from stdin,
    answering one JSON line each (run as a subprocess of :func:`steps`)."""
    sys.path.insert(0, root)
    from threadpoolctl import threadpool_limits

    from app.engine.engine import Engine
    from app.engine.requests import load_requests

    threadpool_limits(1)
    engine = Engine.load() if kernel is None else Engine.load(kernel=kernel.split("+")[0])
    if kernel == "q+blas-head":  # the q body with the float32 heads: the engine before its heads
        from app.engine.head import BlasHead  # moved onto the kernel

        engine.head = BlasHead(engine.output)
    reqs = {r.id: r for r in load_requests(Path(requests_path))}
    for plan in STACK_PLANS:  # warm: the first decode pages the weights in
        engine.decode(next(iter(reqs.values())), plan=plan)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        ask = json.loads(line)
        r = engine.decode(reqs[ask["id"]], plan=ask["plan"])
        split = {"mask_s": 0.0, "body_s": 0.0, "head_s": 0.0, "rest_s": 0.0}
        for s in r.steps:
            split["mask_s"] += s.mask_s
            split["body_s"] += s.body_s
            split["head_s"] += s.head_s
            split["rest_s"] += s.seconds - s.mask_s - s.body_s - s.head_s
        plans = [s.plan for s in r.steps]
        print(json.dumps({"tokens": list(r.tokens), "decode_s": r.seconds - r.prefill_s,
                          "plans": {p: plans.count(p) for p in set(plans)}, **split}),
              flush=True)  # fmt: skip


def _spawn(root: str, kernel: str | None, requests_path: Path) -> subprocess.Popen:
    args = [sys.executable, __file__, "--worker", root, "--requests-file", str(requests_path)]
    if kernel:
        args += ["--worker-kernel", kernel]
    env = {**os.environ, "PYTHONPATH": root, "OMP_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1", "LLMQP_KERNEL_THREADS": "1"}  # fmt: skip
    p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    assert json.loads(p.stdout.readline())["ready"]
    return p


def steps(requests_path: Path, n: int, base: str | None) -> dict:
    """Every stack × plan on each of the first ``n`` requests, interleaved per request."""
    from app.engine.requests import load_requests

    root = str(HERE.parent)
    stacks = {"q": (root, "q"), "q+blas-head": (root, "q+blas-head"), "blas": (root, "blas")}
    if base:
        stacks["base"] = (base, None)
    procs = {name: _spawn(r, k, requests_path) for name, (r, k) in stacks.items()}
    reqs = load_requests(requests_path)[:n]
    acc = {(s, p): [] for s in stacks for p in STACK_PLANS}
    for req in reqs:
        for plan in STACK_PLANS:
            for name, proc in procs.items():
                proc.stdin.write(json.dumps({"id": req.id, "plan": plan}) + "\n")
                proc.stdin.flush()
                acc[(name, plan)].append(json.loads(proc.stdout.readline()))
        print(f"  steps: {req.id}", file=sys.stderr, flush=True)
    for proc in procs.values():
        proc.stdin.close()
        proc.wait()
    out = {}
    dense_tokens = [r["tokens"] for r in acc[("q", "dense")]]
    for (name, plan), rs in acc.items():
        tokens = sum(len(r["tokens"]) for r in rs)
        dec = sum(r["decode_s"] for r in rs)
        row = {"tokens": tokens, "tokens_per_s": tokens / dec,
               "identical_to_q_dense": [r["tokens"] for r in rs] == dense_tokens}  # fmt: skip
        for key in ("mask_s", "body_s", "head_s", "rest_s"):
            row[key.replace("_s", "_ms_per_token")] = 1e3 * sum(r[key] for r in rs) / tokens
        plans: dict = {}
        for r in rs:
            for p, c in r["plans"].items():
                plans[p] = plans.get(p, 0) + c
        row["plans"] = plans
        out[f"{name}/{plan}"] = row
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--requests", type=int, default=4)
    ap.add_argument("--requests-file", type=Path, default=HERE / "workload" / "requests.jsonl")
    ap.add_argument("--base", default=None, help="a checkout of an older engine to time beside")
    ap.add_argument("--skip", default="", help="parts to skip: heads,batched,scheduler,steps")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "head_kernel.json")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--worker-kernel", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker, args.worker_kernel, str(args.requests_file))
        return 0
    sys.path.insert(0, str(HERE.parent))
    import numpy as np
    from threadpoolctl import threadpool_limits

    from app.engine.engine import Engine

    threadpool_limits(1)
    skip = set(filter(None, args.skip.split(",")))
    rng = np.random.default_rng(0)
    res = {"load_avg_start": os.getloadavg()}
    engine = Engine.load(kernel="q")
    if "heads" not in skip:
        res["heads"] = heads(engine, args.repeats, rng)
        print(json.dumps(res["heads"]["dense_ms"]), file=sys.stderr)
    if "batched" not in skip:
        res["batched"] = batched(engine, args.repeats, rng)
    if "scheduler" not in skip:
        res["scheduler"] = scheduler(engine, args.requests_file, 16, 3)
    del engine
    if "steps" not in skip:
        res["steps"] = steps(args.requests_file, args.requests, args.base)
    res["load_avg_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1, default=str) + "\n")
    print(json.dumps(res, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
