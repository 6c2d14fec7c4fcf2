"""How well the calibrated cost model predicts the numpy backend on this CPU, plan by plan.

Each repeat measures, in a fresh in-memory store, the sweeps of ``bench/gpu_check.sh --device
cpu`` (heads at d=256, |V|=8192, batch 1 and 4; a 2-layer body at contexts 0-4096), calibrates
on them four ways, and reports every plan's median ``|model - measured| / measured``:

* ``preset``: the uncalibrated ``cpu`` preset;
* ``one-bw``: one bandwidth, the model's own launch counts (the fit before launches were
  counted and a cache level existed);
* ``+calls``: one bandwidth, launches counted as numpy issues them;
* ``+cache``: counted launches and a cache level (what the backend ships).

It then measures points the fit never saw (``--no-holdout`` skips them): weights four times the
last-level cache (d=512, |V|=32,768), a body at contexts 2048 and 8192, and a body of width 512
(its d×d update no longer fits in L2), and reports the ``+cache`` profile's error on them.
Timings on a shared machine are noisy: the summary gives the median over repeats and the range.

``--hierarchy`` instead times the pieces the model has to abstract: a GEMV ``x @ M`` against
the size of ``M`` (where the L2, the last-level cache and DRAM show up), and the dense head's
matrix product against the batch (time against FLOPs and against weight bytes).

Usage::

    python bench/cost_model_cpu.py [--repeats 5] [--threads 1] [--json out.json] [--cold]
    python bench/cost_model_cpu.py --hierarchy
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from app.measure.calibration import calibrate, relative_errors  # noqa: E402
from app.measure.check import SHAPES  # noqa: E402
from app.measure.kernels import get_kernels  # noqa: E402
from app.measure.kernels_numpy import set_blas_threads  # noqa: E402
from app.measure.store import ResultStore  # noqa: E402
from app.measure.sweeps import AmortizedSweep, HeadSweep, Runner  # noqa: E402
from app.measure.timing import TimingConfig, default_timing  # noqa: E402
from app.model import PRESETS, k_grid  # noqa: E402

PLANS = ("dense_head", "sparse_head", "full_step", "amortized_step", "amortized_rerank", "all")
VARIANTS = ("preset", "one-bw", "+calls", "+cache")


def main_sweeps() -> list:
    s = SHAPES["cpu"]
    ks = tuple(int(k) for k in k_grid(s["vocab"], s["points"]))
    heads = [HeadSweep(d=s["d"], vocab=s["vocab"], batch=b, k=ks) for b in s["batches"]]
    body = AmortizedSweep(d=s["d"], layers=s["layers"], vocab=s["vocab"], k=s["k"],
                          context=s["context"])  # fmt: skip
    return heads + [body]


def holdout_sweeps() -> list:
    return [
        HeadSweep(d=512, vocab=32_768, batch=1, k=(64, 1024, 8192, 32_768)),
        HeadSweep(d=512, vocab=32_768, batch=4, k=(64, 1024, 8192)),
        AmortizedSweep(d=256, layers=2, vocab=8192, k=64, context=(2048, 8192)),
        AmortizedSweep(d=512, layers=2, vocab=8192, k=64, context=(0, 1024)),
    ]


def _medians(errors: dict) -> dict:
    return {p: errors[p]["median_abs_rel_err"] for p in PLANS if p in errors}


def one_repeat(kernels, timing, holdout: bool) -> dict:
    store = ResultStore(":memory:")
    runner = Runner(kernels, store, timing)
    for sweep in main_sweeps():
        runner.run(sweep)
    rows = store.query()
    fits = {
        "one-bw": calibrate(rows, "cpu", launches={}, fit_cache=False),
        "+calls": calibrate(rows, "cpu", fit_cache=False),
        "+cache": calibrate(rows, "cpu"),
    }
    preset = _medians(relative_errors(rows, PRESETS["cpu"]))
    out = {"points": len(rows), "errors": {"preset": preset}}
    for name, cal in fits.items():
        out["errors"][name] = _medians(cal.errors)
    out["profile"] = fits["+cache"].hardware.to_dict()
    out["coefficients"] = fits["+cache"].coefficients
    if holdout:
        seen = {(r["plan"], r["d"], r["vocab"], r["batch"], r["k"], r["layers"], r["context"])
                for r in rows}  # fmt: skip
        for sweep in holdout_sweeps():
            runner.run(sweep)
        new = [r for r in store.query()
               if (r["plan"], r["d"], r["vocab"], r["batch"], r["k"], r["layers"], r["context"])
               not in seen]  # fmt: skip
        hw = fits["+cache"].hardware
        out["holdout"] = {
            "points": len(new),
            "errors": _medians(relative_errors(new, hw)),
            "rows": [
                {k: r[k] for k in ("plan", "d", "vocab", "batch", "k", "layers", "context")}
                | {"measured_s": r["median_s"]}
                for r in new
            ],
        }
    store.close()
    return out


def _table(label, per_repeat) -> None:
    print(f"\n{label}")
    print(f"{'plan':18s}" + "".join(f"{v:>22s}" for v in per_repeat))
    for plan in PLANS:
        cells = []
        for values in per_repeat.values():
            xs = [v[plan] for v in values if plan in v]
            if not xs:
                cells.append(f"{'-':>22s}")
                continue
            cells.append(f"{np.median(xs):8.1%} [{min(xs):5.1%}-{max(xs):5.1%}]".rjust(22))
        print(f"{plan:18s}" + "".join(cells))


def _time(fn, min_s=2e-3, samples=25) -> float:
    """Median seconds per call, calls batched into samples of at least ``min_s`` (warm)."""
    for _ in range(3):
        fn()
    n = 1
    while True:
        start = time.perf_counter()
        for _ in range(n):
            fn()
        if time.perf_counter() - start >= min_s:
            break
        n *= 2
    out = []
    for _ in range(samples):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        out.append((time.perf_counter() - start) / n)
    return float(np.median(out))


def hierarchy() -> None:
    rng = np.random.default_rng(0)
    print("GEMV x @ M, M square float32 (warm, back to back):")
    print("      d     M MiB      us    GB/s  GFLOP/s")
    for d in (128, 256, 512, 1024, 1536, 2048, 2896, 4096):
        M = rng.standard_normal((d, d), dtype=np.float32)
        x = rng.standard_normal((1, d), dtype=np.float32)
        s = _time(lambda M=M, x=x: x @ M)
        print(f"{d:7d} {M.nbytes / 2**20:9.2f} {s * 1e6:7.1f} {M.nbytes / s / 1e9:7.1f} "
              f"{2 * d * d / s / 1e9:8.1f}")  # fmt: skip
    print("\ndense head logits W @ h.T, d=256, float32, against the batch:")
    print("  |V|  W MiB  batch      us  W GB/s  GFLOP/s")
    for vocab in (8192, 32_768):
        W = rng.standard_normal((vocab, 256), dtype=np.float32)
        for batch in (1, 2, 4, 8, 16):
            h = rng.standard_normal((batch, 256), dtype=np.float32)
            s = _time(lambda W=W, h=h: W @ h.T)
            print(f"{vocab:6d} {W.nbytes / 2**20:5.0f} {batch:6d} {s * 1e6:7.1f} "
                  f"{W.nbytes / s / 1e9:7.1f} {2 * W.size * batch / s / 1e9:8.1f}")  # fmt: skip


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="BLAS threads (default 1)")
    p.add_argument("--json", default=None)
    p.add_argument("--no-holdout", action="store_true")
    p.add_argument("--cold", action="store_true",
                   help="flush 64 MiB before every sample (one call per sample)")  # fmt: skip
    p.add_argument("--hierarchy", action="store_true", help="time GEMV and GEMM pieces only")
    args = p.parse_args(argv)
    set_blas_threads(args.threads)
    if args.hierarchy:
        hierarchy()
        return 0
    kernels = get_kernels("numpy", "cpu")
    timing = default_timing("cpu")
    if args.cold:
        timing = TimingConfig(**{**timing.to_dict(), "flush_bytes": 64 << 20})
    started = time.perf_counter()
    repeats = []
    for i in range(args.repeats):
        repeats.append(one_repeat(kernels, timing, not args.no_holdout))
        print(f"repeat {i + 1}/{args.repeats} done ({time.perf_counter() - started:.0f} s)",
              flush=True)  # fmt: skip
    print(f"\n{kernels.device_name}, numpy {np.__version__}, {args.threads} BLAS thread(s), "
          f"{'cold' if args.cold else 'warm'} caches; median |rel err| per plan, median over "
          f"{args.repeats} repeats [min-max]")  # fmt: skip
    _table("fitted points", {v: [r["errors"][v] for r in repeats] for v in VARIANTS})
    if not args.no_holdout:
        _table("points the fit never saw (+cache profile)",
               {"+cache": [r["holdout"]["errors"] for r in repeats]})  # fmt: skip
    keys = ("bandwidth", "cache_bandwidth", "cache_bytes", "overhead", "gather_efficiency")
    peak = np.median([r["profile"]["peak_flops"]["float32"] for r in repeats])
    print("\nfitted +cache profile (median over repeats): " + ", ".join(
        f"{k} {np.median([r['profile'][k] for r in repeats]):.3g}" for k in keys)
        + f", peak float32 {peak:.3g}")  # fmt: skip
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"device": kernels.info(), "cold": args.cold, "repeats": repeats}, f,
                      indent=1, default=float)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
