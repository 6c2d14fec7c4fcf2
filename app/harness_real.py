"""``llmqp bench --workload real``: the router experiment on a real trace (numpy + stdlib).

The environment replays the trace's contexts and measured per-plan costs
(:func:`app.router.real_trace.looped_stream`): ``steps`` routed steps, passes over the trace
each in a request order drawn from the run's Generator, so the output is deterministic by seed.
Writes ``regret.csv`` (cumulative dynamic regret per router, always-dense and the best fixed
plan), ``amortization.csv`` (the measured decision error and acceptance over τ on the held-out
requests) and ``summary.json``.
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
    error_over_tau,
    load_trace,
    looped_stream,
)
from .router.regret import best_fixed_arm, regret_report
from .router.simulate import make_router, simulate

__all__ = ["run_bench_real", "REAL_BENCH_FILES"]

REAL_BENCH_FILES = ("regret.csv", "amortization.csv", "summary.json")


def run_bench_real(seed: int, steps: int, out_dir, trace_path=SHIPPED_TRACE, progress=None):
    """Write the real-trace benchmark files for ``seed`` into ``out_dir``; return the summary."""
    seed = check_int("seed", seed, 0, 2**32 - 1)
    steps = check_int("steps", steps, 10, 1_000_000)
    trace = load_trace(trace_path)
    stream = looped_stream(trace, seed, steps)
    X, expected = stream.X, stream.expected
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
            "routed_steps_per_pass": stream.pass_steps,
            "ref_s": stream.ref_s,
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
