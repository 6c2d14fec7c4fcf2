"""The device check behind ``bench/gpu_check.sh``: measure, calibrate, compare, in minutes.

``python -m app.measure.check --device cuda`` (torch, bfloat16) times the dense vs sparse head at
Llama-3-8B head shapes (d 4096, |V| 128,256, batch 1 and 8, K on a geometric grid from 1 to |V|)
and the amortized vs full step of a 4-layer body of width 4096, then prints the achieved
bandwidth against the device's datasheet peak, the measured and modelled crossover K*, the
calibrated model's error per plan, and the router's per-step overhead (LinUCB select + update).
``--device cpu`` runs the same logic with numpy at small shapes (``--quick``: smaller still).
Nothing is installed or downloaded. ``--json PATH`` writes everything as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from ..model import PLAN_NAMES, k_grid
from .calibration import Calibration
from .kernels import get_kernels, peak_figures
from .modelled import model_cost
from .store import ResultStore
from .sweeps import AmortizedSweep, HeadSweep, Runner
from .timing import default_timing

__all__ = ["main", "SHAPES"]

#: Shapes per device: head (d, vocab, batches, K points), body (layers, contexts, k).
SHAPES = {
    "cuda": dict(d=4096, vocab=128_256, batches=(1, 8), points=14, dtype="bfloat16",
                 layers=4, context=(128, 1024, 4096, 16_384), k=64),
    "cpu": dict(d=256, vocab=8192, batches=(1, 4), points=10, dtype="float32",
                layers=2, context=(0, 256, 1024, 4096), k=64),
    "quick": dict(d=128, vocab=2048, batches=(1, 2), points=6, dtype="float32",
                  layers=1, context=(0, 128, 512), k=32),
}  # fmt: skip


def _us(seconds) -> str:
    return f"{seconds * 1e6:10.1f}"


def _print(*parts) -> None:
    print(*parts, flush=True)


def _head_report(runner: Runner, answer: dict, peak_bw) -> dict:
    p, plans = answer["params"], answer["plans"]
    _print(f"\n== head: d={p['d']} |V|={p['vocab']} batch={p['batch']} {p['dtype']} ==")
    _print("         K   dense_us  sparse_us  (p10 .. p90)          model_us  tokens")
    dense, sparse = plans["dense_head"], plans["sparse_head"]
    for i, k in enumerate(answer["k"]):
        _print(
            f"{k:10d} {_us(dense['median_s'][i])} {_us(sparse['median_s'][i])}  "
            f"({_us(sparse['p10_s'][i]).strip()} .. {_us(sparse['p90_s'][i]).strip()})"
            f"  {_us(sparse['model_s'][i])}  {'ok' if sparse['tokens_match'][i] else 'DIFF'}"
        )
    point = runner.point("dense_head", d=p["d"], vocab=p["vocab"], batch=p["batch"],
                         dtype=p["dtype"])  # fmt: skip
    bytes_ = float(model_cost(point, runner.hardware()[0]).bytes)
    achieved = bytes_ / dense["median_s"][0]
    share = f" = {achieved / peak_bw:.0%} of the {peak_bw / 1e9:.0f} GB/s peak" if peak_bw else ""
    cross = answer["crossover"]
    _print(f"dense head: {bytes_ / 1e6:.1f} MB in {dense['median_s'][0] * 1e6:.1f} us -> "
           f"{achieved / 1e9:.1f} GB/s{share}")  # fmt: skip
    _print(f"crossover K*: measured {cross['measured_k']} (interpolated "
           f"{_fmt(cross['measured_k_interp'])}), model {cross['model_k']} (calibrated), "
           f"{cross['model_k_preset']} (preset); FLOP-only {cross['k_flop']}")  # fmt: skip
    return {"achieved_Bps": achieved, "crossover": cross}


def _fmt(x) -> str:
    return "none" if x is None else f"{x:.0f}"


def _body_report(answer: dict) -> None:
    p, plans = answer["params"], answer["plans"]
    _print(f"\n== amortized vs full: d={p['d']} layers={p['layers']} k={p['k']} "
           f"batch={p['batch']} {p['dtype']} ==")  # fmt: skip
    _print("   context    full_us  amortized_us  rerank_us   full_model_us  speedup")
    for i, c in enumerate(answer["context"]):
        _print(
            f"{c:10d} {_us(plans['full_step']['median_s'][i])} "
            f"{_us(plans['amortized_step']['median_s'][i])}   "
            f"{_us(plans['amortized_rerank']['median_s'][i])}   "
            f"{_us(plans['full_step']['model_s'][i])}  "
            f"{answer['speedup']['amortized_vs_full'][i]:7.1f}x"
        )
    cross = answer["crossover"]
    _print(f"amortizing pays from decode length {cross['measured_n']} (model {cross['model_n']}) "
           f"with {cross['warmup_steps']} warm-up steps, no refinement")  # fmt: skip


def router_overhead(steps: int = 5000, seed: int = 0) -> dict:
    """Seconds per LinUCB ``select`` + ``update`` (the registry's plans, the environment's
    features), median of 5 runs."""
    from app.router.environment import FEATURES
    from app.router.linucb import LinUCB

    arms, dim = len(PLAN_NAMES), len(FEATURES)
    rng = np.random.Generator(np.random.PCG64(seed))
    X = rng.uniform(-1, 1, (steps, dim))
    losses = rng.uniform(0, 1, (steps, arms))
    runs = []
    for _ in range(5):
        router = LinUCB(arms, dim, alpha=1.0, seed=seed)
        start = time.perf_counter()
        for t in range(steps):
            x = X[t]
            arm = router.select(x)
            router.update(x, arm, losses[t, arm])
        runs.append((time.perf_counter() - start) / steps)
    return {"seconds_per_step": float(np.median(runs)), "steps": steps}


def run(device: str, quick: bool = False, db=None, impl=None, threads=None) -> dict:
    """Run every part of the check; returns the summary (also printed)."""
    shape = SHAPES["quick" if quick else device]
    if threads is not None:
        from .kernels_numpy import set_blas_threads

        set_blas_threads(threads)
    kernels = get_kernels(impl or ("torch" if device == "cuda" else "numpy"), device)
    dtype = shape["dtype"] if shape["dtype"] in kernels.dtypes else kernels.dtypes[0]
    timing = default_timing(device)
    if quick:
        timing = timing.__class__(**{**timing.to_dict(), "max_time_s": 0.1, "max_samples": 50})
    store = ResultStore(db or ":memory:")
    runner = Runner(kernels, store, timing)
    peak = peak_figures(device, kernels.device_name)
    peak_bw = peak["bandwidth_Bps"] if peak["matches_device"] else None
    started = time.perf_counter()
    versions = {k: v for k, v in runner.info.items() if k in ("numpy", "torch", "cuda")}
    _print(f"device: {kernels.device_name} ({device}); impl {kernels.impl}; dtype {dtype}; "
           f"versions: {versions}; blas: {runner.info.get('blas')}")  # fmt: skip
    _print(f"peak: {peak['note']} (preset {peak['preset']})")
    out = {"device": runner.info, "peak": peak, "head": [], "body": None}
    for batch in shape["batches"]:
        ks = tuple(int(k) for k in k_grid(shape["vocab"], shape["points"]))
        sweep = HeadSweep(d=shape["d"], vocab=shape["vocab"], batch=batch, dtype=dtype, k=ks)
        answer = runner.run(sweep)
        out["head"].append({"answer": answer, **_head_report(runner, answer, peak_bw)})
    body = AmortizedSweep(d=shape["d"], layers=shape["layers"], vocab=shape["vocab"],
                          k=shape["k"], dtype=dtype, context=shape["context"])  # fmt: skip
    out["body"] = runner.run(body)
    _body_report(out["body"])
    cal = runner.calibration()
    _print("\n== calibration ==")
    if isinstance(cal, Calibration):
        hw = cal.hardware
        cache = (f"cache {hw.cache_bytes / 2**20:.1f} MiB at {hw.cache_bandwidth / 1e9:.1f} GB/s, "
                 if hw.cache_bytes else "no cache level, ")  # fmt: skip
        per = "call" if hw.launches else "kernel"
        _print(f"bandwidth {hw.bandwidth / 1e9:.1f} GB/s, {cache}overhead "
               f"{hw.overhead * 1e6:.2f} us per {per}, gather efficiency "
               f"{hw.gather_efficiency:.2f}, peak {hw.peak(dtype) / 1e12:.3f} TFLOP/s "
               f"({dtype})")  # fmt: skip
        for plan, e in cal.errors.items():
            base = cal.base_errors[plan]["median_abs_rel_err"]
            _print(f"  {plan:17s} n={e['n']:3d}  median |rel err| {e['median_abs_rel_err']:6.1%}"
                   f"  (p90 {e['p90_abs_rel_err']:6.1%}; preset {base:6.1%})")  # fmt: skip
        for note in cal.notes:
            _print(f"  note: {note}")
        out["calibration"] = cal.to_dict()
    else:
        _print(f"not possible: {cal}")
    try:
        router = router_overhead()
    except ImportError as exc:
        router = {"skipped": str(exc)}
        _print(f"\nrouter overhead: skipped ({exc})")
    else:
        share = router["seconds_per_step"] / out["body"]["plans"]["full_step"]["median_s"][0]
        _print(f"\nrouter overhead (LinUCB select+update): "
               f"{router['seconds_per_step'] * 1e6:.1f} us/step = "
               f"{share:.1%} of the smallest-context full step")  # fmt: skip
    out["router"] = router
    matches = [m for h in out["head"] for m in h["answer"]["plans"]["sparse_head"]["tokens_match"]]
    out["tokens_match"] = {"points": len(matches), "all": all(matches)}
    out["elapsed_s"] = time.perf_counter() - started
    _print(f"\ntokens equal the dense reference at {sum(matches)}/{len(matches)} head points "
           "(a difference in bf16 can be a near-tie rounded differently by GEMM and gathered "
           f"GEMV); done in {out['elapsed_s']:.1f} s")  # fmt: skip
    store.close()
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--impl", choices=("numpy", "torch"), default=None)
    p.add_argument("--quick", action="store_true", help="tiny shapes (for tests)")
    p.add_argument("--db", default=None, help="SQLite file to keep (and reuse) the results")
    p.add_argument("--json", default=None, help="write the summary here")
    p.add_argument("--threads", type=int, default=None, help="BLAS threads (numpy impl)")
    args = p.parse_args(argv)
    try:
        out = run(args.device, args.quick, args.db, args.impl, args.threads)
    except ValueError as exc:
        print(f"gpu_check: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
