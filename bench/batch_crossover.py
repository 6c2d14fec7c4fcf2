"""The batch crossover on the real model: measured K* at B = 1, 2, 4, 8, 16 beside the model's.

Usage: ``python bench/batch_crossover.py [--batches 1,2,4,8,16] [--repeats 5]``.

At batch B the dense head reads the output matrix once for B states (one GEMM, W @ Hᵀ, over
|V| = 49,152 rows), while each sequence gathers and scores its own K legal rows (B sparse heads):
K* is the largest K at which B sparse heads cost no more than the one dense GEMM. Measured on
the real SmolLM2-135M output matrix (float32, one BLAS thread): the sparse heads at a grid of K,
K* interpolated where their time crosses the dense GEMM's; also the dense head as the engine
runs it exactly (one GEMV per row, bit-identical to each sequence's solo head: a GEMM's rows
round differently) and as the batch-invariant q kernel (one pass over the weights for all
rows). The model's K* is the ``cpu`` preset's roofline crossover at B
(``app.model.find_crossover``), which the ``auto`` rule uses. Writes
``bench/results/batch_crossover.json``. Bounded: a few seconds per B.
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

from app.engine import qkernel  # noqa: E402
from app.engine.heads_numpy import sparse_scores  # noqa: E402
from app.model import find_crossover, get_hardware  # noqa: E402

KS = (256, 1024, 4096, 8192, 16384, 32768, 49152)


def _median(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _k_star(ks, sparse_s, dense_s) -> int | None:
    """Where the sparse time (rising in K) crosses ``dense_s``, linearly interpolated."""
    if sparse_s[0] > dense_s:
        return None
    for (k0, s0), (k1, s1) in zip(zip(ks, sparse_s), zip(ks[1:], sparse_s[1:])):
        if s1 > dense_s:
            return int(k0 + (k1 - k0) * (dense_s - s0) / max(s1 - s0, 1e-12))
    return int(ks[-1])


def _sparse_heads(output, h, ids, repeats) -> float:
    """Seconds for each sequence's own sparse head over its K rows."""
    return _median(lambda: [sparse_scores(output, h[i : i + 1], ids[i : i + 1])
                            for i in range(h.shape[0])], repeats)  # fmt: skip


def _row(output, packed, vocab, b, repeats, rng) -> dict:
    """One batch size: the dense heads, the sparse heads over the K grid, both K*."""
    h = rng.standard_normal((b, output.shape[1])).astype(np.float32)
    gemm = _median(lambda: np.matmul(output, h.T), repeats)
    gemv = _median(lambda: [output @ h[i] for i in range(b)], repeats)
    qk = _median(lambda: qkernel.matmul(h, packed), repeats)
    sparse = []
    for k in KS:
        ids = np.stack([np.sort(rng.choice(vocab, min(k, vocab), replace=False)) for _ in range(b)])
        sparse.append(_sparse_heads(output, h, ids, repeats))
    model = find_crossover(output.shape[1], vocab, b, "float32", get_hardware("cpu")).k_roofline
    return {"batch": b, "dense_gemm_s": gemm, "dense_gemv_rows_s": gemv,
            "dense_qkernel_s": qk, "sparse_s": dict(zip(map(str, KS), sparse)),
            "k_star_measured_gemm": _k_star(KS, sparse, gemm),
            "k_star_measured_exact_rows": _k_star(KS, sparse, gemv),
            "k_star_measured_qkernel": _k_star(KS, sparse, qk),
            "k_star_model_cpu": model}  # fmt: skip


def measure(output, vocab, batches, repeats, rng) -> list[dict]:
    packed = qkernel.pack_f32(output)
    rows = []
    for b in batches:
        rows.append(_row(output, packed, vocab, b, repeats, rng))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", default="1,2,4,8,16")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=str(HERE / "results" / "batch_crossover.json"))
    args = p.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    if not all(1 <= b <= 64 for b in batches) or not 1 <= args.repeats <= 50:
        p.error("--batches in [1, 64], --repeats in [1, 50]")
    from app.engine.engine import Engine

    engine = Engine.load()  # one BLAS thread, the padded output matrix
    vocab = engine.config.vocab
    rows = measure(engine.output, vocab, batches, args.repeats, np.random.default_rng(0))
    report = {"model": engine.name, "vocab": vocab, "d": engine.config.d, "rows": rows,
              "note": "shared 2-core machine under load: medians of a few repeats"}  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
