"""A batched body pass on one thread vs two: the q kernel's output split, interleaved A/B.

Usage: ``python bench/kernel_threads.py [--rows 1,4,16] [--repeats 5]``.

For each row count T: ``forward_batch`` over T sequences of one new token each (a decode step of
a batch of T), timed alternately with 1 and 2 kernel threads (the median of ``--repeats``), and
the states compared bit for bit. Writes ``bench/results/kernel_threads.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def _pass(body, caches, ids) -> tuple[float, list]:
    t0 = time.perf_counter()
    out = body.forward_batch([([i], c, 8) for i, c in zip(ids, caches)])
    return time.perf_counter() - t0, out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", default="1,4,16")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=str(HERE / "results" / "kernel_threads.json"))
    args = p.parse_args(argv)
    rows = [int(r) for r in args.rows.split(",")]
    if not all(1 <= r <= 64 for r in rows) or not 1 <= args.repeats <= 50:
        p.error("--rows in [1, 64], --repeats in [1, 50]")
    from app.engine import qkernel
    from app.engine.engine import Engine

    body = Engine.load().body
    report = []
    for t in rows:
        caches = [body.new_cache(16) for _ in range(t)]
        for c in caches:  # 8 positions of context each
            body.forward(list(range(1, 9)), c, 0)
        ids = list(range(100, 100 + t))
        times = {1: [], 2: []}
        same = True
        for _ in range(args.repeats):
            outs = {}
            for n in (1, 2):
                qkernel.set_threads(n)
                seconds, outs[n] = _pass(body, caches, ids)
                times[n].append(seconds)
            same = same and all(np.array_equal(a, b) for a, b in zip(outs[1], outs[2]))
        one, two = float(np.median(times[1])), float(np.median(times[2]))
        row = {"rows": t, "one_thread_s": one, "two_threads_s": two, "bit_identical": same}
        row["speedup"] = round(row["one_thread_s"] / row["two_threads_s"], 3)
        print(json.dumps(row), file=sys.stderr, flush=True)
        report.append(row)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    note = "shared 2-core machine, busy: medians, interleaved"
    Path(args.out).write_text(json.dumps({"rows": report, "note": note}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
