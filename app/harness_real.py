"""``llmqp bench --workload real``: the router experiment on a real trace (numpy + stdlib).

The environment replays the trace's contexts and measured per-plan costs
(:func:`app.router.real_trace.real_stream`); ``steps`` loops over the trace, each pass in a
request order drawn from the run's Generator, so the output is deterministic by seed. Writes
``regret.csv`` (cumulative dynamic regret per router, always-dense and the best fixed plan),
``amortization.csv`` (the measured decision error and acceptance over τ) and ``summary.json``.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np

from . import __version__
from .harness import _fmt, _write_csv
from .model.validate import check_int
from .router.real_trace import (
    REAL_ARMS,
    REAL_FEATURES,
    REAL_ROUTER_PARAMS,
    REAL_ROUTERS,
    SHIPPED_TRACE,
    load_trace,
    real_stream,
)
from .router.regret import best_fixed_arm, regret_report
from .router.simulate import make_router, simulate

__all__ = ["run_bench_real", "REAL_BENCH_FILES", "error_over_tau"]

REAL_BENCH_FILES = ("regret.csv", "amortization.csv", "summary.json")


def _looped(trace, seed: int, steps: int):
    """Passes over the trace (each in its own order) until ``steps`` routed steps."""
    rng = np.random.Generator(np.random.PCG64(seed))
    parts = []
    while sum(p.steps for p in parts) < steps:
        parts.append(real_stream(trace, int(rng.integers(0, 2**32 - 1))))
    X = np.concatenate([p.X for p in parts])[:steps]
    expected = np.concatenate([p.expected for p in parts])[:steps]
    return X, expected, parts[0]


def error_over_tau(trace: dict) -> dict:
    """From the trace's one-step predictions: per τ, the share of K ≥ 2 steps accepted
    (predicted margin ≥ τ) and the share accepted *and* wrong (the lossy decision error)."""
    rows = [s for s in trace["steps"] if "pred_margin" in s and s["pred_margin"] is not None]
    pm = np.array([s["pred_margin"] for s in rows])
    ok = np.array([bool(s["pred_correct"]) for s in rows])
    taus = np.linspace(0.0, float(np.percentile(pm, 99)) if len(pm) else 1.0, 41)
    accept = np.array([(pm >= t).mean() for t in taus]) if len(pm) else np.zeros_like(taus)
    error = np.array([((pm >= t) & ~ok).mean() for t in taus]) if len(pm) else accept
    return {"tau": taus, "accept": accept, "error": error, "steps": len(rows)}


def run_bench_real(seed: int, steps: int, out_dir, trace_path=SHIPPED_TRACE, progress=None):
    """Write the real-trace benchmark files for ``seed`` into ``out_dir``; return the summary."""
    seed = check_int("seed", seed, 0, 2**32 - 1)
    steps = check_int("steps", steps, 10, 1_000_000)
    trace = load_trace(trace_path)
    X, expected, first = _looped(trace, seed, steps)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    oracle = expected.min(axis=1)
    curves, routers = {}, {}
    for name in REAL_ROUTERS:
        router = make_router(
            name, len(REAL_ARMS), len(REAL_FEATURES), seed=seed, **REAL_ROUTER_PARAMS[name]
        )
        arms = simulate(router, X, expected)
        report = regret_report(expected, arms)
        curves[name] = np.asarray(report.dynamic_curve)
        entry = report.to_dict(curves=False)
        entry["shares"] = dict(zip(REAL_ARMS, entry["shares"]))
        entry["shares_last_half"] = dict(zip(REAL_ARMS, entry["shares_last_half"]))
        entry["best_fixed_plan"] = REAL_ARMS[entry.pop("best_fixed_arm")]
        routers[name] = entry
        if progress is not None:
            progress(name, steps, steps)
    best = best_fixed_arm(expected)
    curves["always_dense"] = np.cumsum(expected[:, 0] - oracle)
    curves["best_fixed"] = np.cumsum(expected[:, best] - oracle)
    stride = max(1, steps // 2000)
    at = np.unique(np.append(np.arange(stride - 1, steps, stride), steps - 1))
    _write_csv(
        out / "regret.csv",
        ["step"] + list(curves),
        [[int(t) + 1] + [curves[n][t] for n in curves] for t in at],
    )
    tau = error_over_tau(trace)
    _write_csv(
        out / "amortization.csv",
        ["tau", "accept", "decision_error"],
        zip(tau["tau"], tau["accept"], tau["error"]),
    )
    summary = {
        "workload": "real",
        "seed": seed,
        "steps": steps,
        "trace": {
            "file": Path(trace_path).name,
            "meta": trace["meta"],
            "routed_steps_per_pass": first.steps,
            "ref_s": first.ref_s,
        },
        "routers": routers,
        "fixed": {
            "oracle_loss": float(oracle.sum()),
            "always_dense_loss": float(expected[:, 0].sum()),
            "best_fixed_plan": REAL_ARMS[best],
            "best_fixed_loss": float(expected[:, best].sum()),
            "plan_losses": dict(zip(REAL_ARMS, map(float, expected.sum(0)))),
        },
        "environment": {"features": list(REAL_FEATURES), "plans": list(REAL_ARMS)},
        "versions": {
            "llm-qp": __version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
    }
    with open(out / "summary.json", "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2, sort_keys=True, default=_fmt)
        f.write("\n")
    return summary
