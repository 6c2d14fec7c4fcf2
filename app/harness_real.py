"""``llmqp bench --workload real``: the router experiment on a real trace (numpy + stdlib).

The environment replays the trace's contexts and measured per-plan costs
(:func:`app.router.real_trace.looped_stream`): ``steps`` routed steps, passes over the trace
each in a request order drawn from the run's Generator, so the output is deterministic by seed.
Writes ``regret.csv`` (cumulative dynamic regret per router, always-dense and the best fixed
plan), ``amortization.csv`` (the measured decision error and acceptance over τ on the held-out
requests) and ``summary.json``.
"""

from __future__ import annotations

from pathlib import Path

from .harness import (
    output_folder,
    router_entry,
    run_workload_bench,
    versions,
    write_csv,
    write_summary,
)
from .model.validate import check_int
from .router.real_trace import SHIPPED_TRACE, error_over_tau, load_trace
from .router.regret import best_fixed_arm
from .router.workloads import RealWorkload

__all__ = ["run_bench_real", "REAL_BENCH_FILES"]

REAL_BENCH_FILES = ("regret.csv", "amortization.csv", "summary.json")


def _references(stream) -> dict:
    """regret.csv's always-dense and best-fixed-plan columns."""
    expected = stream.expected
    oracle = expected.min(axis=1)
    best = best_fixed_arm(expected)
    return {
        "always_dense": (expected[:, 0] - oracle).cumsum(),
        "best_fixed": (expected[:, best] - oracle).cumsum(),
    }


def run_bench_real(seed: int, steps: int, out_dir, trace_path=SHIPPED_TRACE, progress=None):
    """Write the real-trace benchmark files for ``seed`` into ``out_dir``; return the summary."""
    seed = check_int("seed", seed, 0, 2**32 - 1)
    steps = check_int("steps", steps, 10, 1_000_000)
    trace = load_trace(trace_path)
    workload = RealWorkload(trace, seed, steps)
    out = output_folder(out_dir)
    [(stream, runs)] = run_workload_bench([("", workload, None)], out, progress, _references)
    expected, plans = stream.expected, workload.plans
    best = best_fixed_arm(expected)
    tau = error_over_tau(trace)
    write_csv(
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
        "routers": {n: router_entry(r, plans) for n, (_, r) in runs.items()},
        "fixed": {
            "oracle_loss": float(expected.min(axis=1).sum()),
            "always_dense_loss": float(expected[:, 0].sum()),
            "best_fixed_plan": plans[best],
            "best_fixed_loss": float(expected[:, best].sum()),
            "plan_losses": dict(zip(plans, map(float, expected.sum(0)))),
        },
        "environment": {"features": list(workload.features), "plans": list(plans)},
        "versions": versions(),
    }
    write_summary(out, summary)
    return summary
