"""Where a continuous-batching run's time goes, in the engine (no HTTP): phases of the passes.

Usage: ``python bench/batch_profile.py [--batch 1,4,16] [--requests 16] [--max-tokens 16]
[--bfcl]`` (``--bfcl``: the first ``--requests`` BFCL requests as bench/service_load.py --bfcl
sends them, untagged).

For each batch size B, a :class:`~app.engine.scheduler.Scheduler` decodes the same requests (the
workload's JSON-schema function calls, each user turn headed "Request n." as the streaming load
does) with B in flight, and the wall time is split by wrapping the engine's pieces: the body's
``forward_batch`` (projections + attention + norms), the dense head's shared call and the
per-sequence head calls, attention (a part of the body's time), the grammar (legal-set masks,
consume, forced runs, draft validation, rollbacks), and the rest (Python bookkeeping: plans,
drafts, steps). Each B starts from a fresh scheduler that has decoded one warm-up request (so
the chat template's prefix is stored, as on a running server). Reports body rows per request
(prefill and decode, after prompt-prefix reuse) and tokens/s. Bounded: requests × tokens.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

TIMED = {
    "grammar": ("app.engine.grammar", "Constraint",
                ("legal", "consume", "forced_run", "validate", "rollback")),
    "head": ("app.engine.head", "QHead", ("logits", "rows", "batched")),
    "attention": ("app.engine.rowops", None, ("attention",)),
}  # fmt: skip


def _wrap(obj, name, key, acc):
    fn = getattr(obj, name)

    def timed(*a, **k):
        t0 = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            acc[key] += time.perf_counter() - t0

    setattr(obj, name, timed)
    return fn


def _requests(n: int, max_tokens: int):
    from app.engine.requests import load_requests

    reqs = [r for r in load_requests(HERE / "workload" / "requests.jsonl")
            if r.grammar and r.grammar[0] == "schema"]  # fmt: skip
    return [dataclasses.replace(reqs[i % len(reqs)], id=f"r{i}", max_tokens=max_tokens,
                                prompt=f"Request {i}. {reqs[i % len(reqs)].prompt}")
            for i in range(n)]  # fmt: skip


def _bfcl(n: int, max_tokens: int):
    from stream_load import bfcl_requests

    from app.engine.requests import DecodeRequest

    return [DecodeRequest.from_dict(r) for r in bfcl_requests(n, max_tokens)]


def profile(engine, reqs, batch: int, threads: int | None) -> dict:
    from app.engine.batch_limits import BatchLimits
    from app.engine.scheduler import Scheduler

    acc = defaultdict(float)
    sched = Scheduler(engine.session(), BatchLimits(max_batch=batch), threads=threads)
    warm = dataclasses.replace(reqs[0], id="warm-up", prompt="Request warm-up. " + reqs[0].prompt)
    sched.decode_all([warm])  # as the streaming load: the template's prefix is stored once
    warm_passes, warm_reused = len(sched.pass_sizes), sched.stats()["prefixes"]["reused_positions"]
    body_fn, bins = sched.body.forward_batch, defaultdict(lambda: [0, 0, 0.0])

    def body(seqs):  # the body's time, also by the pass's rows: [passes, rows, seconds]
        t0 = time.perf_counter()
        try:
            return body_fn(seqs)
        finally:
            dt, rows = time.perf_counter() - t0, sum(len(ids) for ids, _, _ in seqs)
            acc["body"] += dt
            row = bins["1" if rows == 1 else "2-31" if rows < 32 else "32+"]
            row[0], row[1], row[2] = row[0] + 1, row[1] + rows, row[2] + dt

    sched.body.forward_batch = body
    t0 = time.perf_counter()
    results = sched.decode_all(reqs)
    wall = time.perf_counter() - t0
    sched.body.forward_batch = body_fn
    rows = sum(n for _, n in sched.pass_sizes[warm_passes:])  # the warm-up's passes left out
    reused = sched.stats()["prefixes"]["reused_positions"] - warm_reused
    prefill = sum(len(engine.prompt_ids(r)) for r in reqs) - reused
    tokens = sum(len(r.tokens) for r in results)
    phases = {k: round(v, 3) for k, v in acc.items()}
    phases["other"] = round(wall - sum(acc.values()), 3)
    return {"batch": batch, "threads": sched.threads.stats(), "wall_s": round(wall, 3),
            "tokens": tokens, "tokens_per_s": round(tokens / wall, 1), "passes": sched.passes,
            "body_rows": rows, "rows_per_request": round(rows / len(reqs), 1),
            "prefill_rows_per_request": round(prefill / len(reqs), 1),
            "decode_rows_per_request": round((rows - prefill) / len(reqs), 1),
            "ms_per_row": round(1e3 * acc["body"] / rows, 2), "phases_s": phases,
            "passes_by_rows": {k: {"passes": n, "rows": r, "s": round(t, 3),
                                   "ms_per_row": round(1e3 * t / r, 2)}
                               for k, (n, r, t) in sorted(bins.items())},
            "prefixes": sched.stats()["prefixes"],
            "tokens_by_request": [r.tokens for r in results]}  # fmt: skip


def main(argv=None) -> int:
    import importlib

    from app.engine.engine import Engine

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", default="1,4,16")
    p.add_argument("--requests", type=int, default=16)
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--threads", type=int, default=None, help="kernel threads of a large pass")
    p.add_argument("--out", default=None)
    p.add_argument("--bfcl", action="store_true", help="BFCL requests instead of the workload's")
    args = p.parse_args(argv)
    batches = [int(b) for b in args.batch.split(",")]
    if not (all(1 <= b <= 64 for b in batches) and 1 <= args.requests <= 64):
        p.error("--batch sizes in [1, 64], --requests in [1, 64]")
    if not 1 <= args.max_tokens <= 4096:
        p.error(f"--max-tokens must be in [1, 4096], got {args.max_tokens}")
    engine = Engine.load()
    acc = defaultdict(float)
    for key, (mod, cls, names) in TIMED.items():
        module = importlib.import_module(mod)
        klass = module if cls is None else getattr(module, cls)
        for name in names:
            _wrap(klass, name, key, acc)
    reqs = (_bfcl if args.bfcl else _requests)(args.requests, args.max_tokens)
    report, first = [], None
    for b in batches:
        acc.clear()
        run = profile(engine, reqs, b, args.threads)
        run["phases_s"].update({k: round(v, 3) for k, v in acc.items()})
        outside = sum(v for k, v in acc.items() if k != "attention")  # attention: in the body
        run["phases_s"]["other"] = round(run["phases_s"]["other"] - outside, 3)
        toks = run.pop("tokens_by_request")
        first = toks if first is None else first
        run["tokens_equal_first"] = toks == first
        report.append(run)
        print(json.dumps(run), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
