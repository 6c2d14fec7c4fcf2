"""The benchmark harness behind ``llmqp bench``: one harness over a router
:class:`~app.router.workloads.Workload` (synthetic | real trace), deterministic given the seed.

:func:`run_workload_bench` is the part every workload shares: it runs the workload's routers
(:func:`app.router.experiment.run_workload`, what the app's Figure 3 runs too), writes
``regret.csv`` (cumulative dynamic regret, thinned to about 2,000 rows) and returns each
router's summary entry; :func:`write_summary` writes ``summary.json`` with the versions block.
Each workload adds its own files: :func:`run_bench` (synthetic) ``crossover.csv``,
``amortization.csv`` and the drifting-costs runs; :func:`app.harness_real.run_bench_real` the
trace's measured decision error. Nothing time- or machine-dependent goes into them, so the
same seed gives byte-identical files.
"""

from __future__ import annotations

import csv
import json
import math
import platform
from pathlib import Path

import numpy as np

from . import __version__
from .model import PLAN_NAMES, Scenario, amortization_curves, crossover_curve
from .model.validate import check_int
from .router.environment import FEATURES, Drift
from .router.experiment import run_workload
from .router.registry import DRIFT_ROUTERS
from .router.simulate import make_router
from .router.workloads import SyntheticWorkload

__all__ = [
    "run_bench",
    "run_workload_bench",
    "write_csv",
    "write_summary",
    "versions",
    "router_entry",
    "output_folder",
    "BENCH_FILES",
    "DRIFT_ROUTERS",
]

BENCH_FILES = ("crossover.csv", "amortization.csv", "regret.csv", "summary.json")
CROSSOVER_BATCHES = (1, 8)
#: regret.csv keeps about this many rows (every ``steps // REGRET_ROWS``-th step and the last).
REGRET_ROWS = 2000


def format_value(v) -> str:
    """A CSV cell: floats in 12 significant digits ("" for non-finite), the rest as text."""
    if isinstance(v, (float, np.floating)):
        return "" if not math.isfinite(v) else format(float(v), ".12g")
    return str(v)


def write_csv(path: Path, header, rows) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows([format_value(v) for v in row] for row in rows)


def versions() -> dict:
    """The summary's versions block (no times, no host names)."""
    return {
        "llm-qp": __version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def write_summary(out: Path, summary: dict) -> None:
    """``summary.json``: sorted keys, two-space indent, a final newline."""
    with open(out / "summary.json", "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2, sort_keys=True, default=format_value)
        f.write("\n")


def router_entry(report, plans) -> dict:
    """A router's summary entry: its :class:`~app.router.regret.RegretReport` without curves,
    plan shares and the best fixed plan by name."""
    d = report.to_dict(curves=False)
    d["shares"] = dict(zip(plans, d["shares"]))
    d["shares_last_half"] = dict(zip(plans, d["shares_last_half"]))
    d["best_fixed_plan"] = plans[d.pop("best_fixed_arm")]
    return d


def _regret_csv(out: Path, curves: dict, steps: int) -> None:
    stride = max(1, steps // REGRET_ROWS)
    at = np.unique(np.append(np.arange(stride - 1, steps, stride), steps - 1))
    write_csv(
        out / "regret.csv",
        ["step"] + list(curves),
        [[int(t) + 1] + [curves[n][t] for n in curves] for t in at],
    )


def run_workload_bench(workloads, out: Path, progress=None, extra_curves=None):
    """Run every ``(prefix, workload, routers)`` of ``workloads`` (``routers`` None: all of the
    workload's), write ``regret.csv`` with one column per run (``prefix + name``) and then
    ``extra_curves(stream)``'s (name -> (T,) array, from the first workload's stream), and
    return ``[(stream, {name: (arms, report)}), ...]``."""
    note = progress or (lambda *a: None)
    results, curves = [], {}
    for prefix, workload, routers in workloads:
        stream, runs = run_workload(
            workload, routers, progress=lambda n, t, T, p=prefix: note(p + n, t, T)
        )
        results.append((stream, runs))
        curves.update({prefix + n: np.asarray(r.dynamic_curve) for n, (_, r) in runs.items()})
    first = results[0][0]
    if extra_curves is not None:
        curves.update(extra_curves(first))
    _regret_csv(out, curves, first.steps)
    return results


def output_folder(out_dir) -> Path:
    """``out_dir`` as a Path, created if missing."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _crossover(s: Scenario, out: Path) -> dict:
    header = ["batch", "k", "dense_s", "sparse_s", "dense_flops", "sparse_flops"]
    header += ["dense_bytes", "sparse_bytes", "dense_regime", "sparse_regime", "sparse_faster"]
    rows, found = [], {}
    for batch in CROSSOVER_BATCHES:
        c = crossover_curve(s.d, s.vocab, batch, s.dtype, s.hw)
        found[str(batch)] = c["crossover"].to_dict()
        for i, k in enumerate(c["k"]):
            rows.append(
                [batch, int(k)]
                + [c[key][i] for key in header[2:10]]
                + [int(c["sparse_s"][i] <= c["dense_s"][i])]
            )
    write_csv(out / "crossover.csv", header, rows)
    return found


def _amortization(s: Scenario, out: Path) -> dict:
    c = amortization_curves(s)
    rows = [
        ["tau", tau, a, f, p, e]
        for tau, a, f, p, e in zip(
            c["tau"], c["amortized_s"], c["full_s"], c["refine_prob"], c["error_rate"]
        )
    ]
    rows += [
        ["decode_length", n, a, f, "", ""]
        for n, a, f in zip(c["n"], c["amortized_total"], c["full_total"])
    ]
    header = ["curve", "x", "amortized_s", "full_s", "refine_prob", "error_rate"]
    write_csv(out / "amortization.csv", header, rows)
    return {"n_star": c["n_star"], "safe_tau": c["safe_tau"], "setup_s": c["setup_s"]}


def _experts_vs_thresholds(stream, arms_by_name, taus) -> dict:
    """Each expert's regret against the best single threshold in hindsight, and its bound."""
    m = stream.X[:, FEATURES.index("margin")]
    idx = np.arange(stream.steps)
    amortized, refine = (stream.plans.index(p) for p in ("AmortizedHead", "SparseHead"))
    totals = [
        float(stream.expected[idx, np.where(m >= tau, amortized, refine)].sum()) for tau in taus
    ]  # threshold i: amortized at margins ≥ τ_i, else refine with the sparse head
    best = int(np.argmin(totals))
    T, N = stream.steps, len(taus)
    out = {"best_tau": float(taus[best]), "best_threshold_loss": totals[best]}
    for name, bound in (
        ("experts-hedge", math.sqrt(T * math.log(N))),
        ("experts-exp4", math.sqrt(T * N * math.log(N))),
    ):
        arms = arms_by_name[name]
        regret = float(stream.expected[idx, arms].sum()) - totals[best]
        out[name] = {"regret_vs_best_threshold": regret, "bound": bound, "ratio": regret / bound}
    return out


def run_bench(seed: int, steps: int, out_dir, progress=None, scenario: Scenario | None = None):
    """Write the synthetic workload's benchmark files for ``seed`` and ``steps`` into
    ``out_dir``; return the summary.

    ``progress(stage, done, total)`` reports advancement (for a progress line).
    """
    seed = check_int("seed", seed, 0, 2**32 - 1)
    steps = check_int("steps", steps, 10, 1_000_000)
    s = (scenario or Scenario()).replace(seed=seed, horizon=steps)
    out = output_folder(out_dir)
    crossovers = _crossover(s, out)
    amortization = _amortization(s, out)
    drift = Drift()
    drifting = SyntheticWorkload(s, drift)
    (stream, runs), (drift_stream, drift_runs) = run_workload_bench(
        [("", SyntheticWorkload(s), None), ("drift/", drifting, DRIFT_ROUTERS)], out, progress
    )
    oracle = stream.expected.min(axis=1).sum()
    any_report = next(iter(runs.values()))[1]
    taus = make_router("experts-hedge", len(PLAN_NAMES), len(FEATURES), horizon=steps).taus_
    summary = {
        "seed": seed,
        "steps": steps,
        "scenario": s.to_dict(),
        "routers": {n: router_entry(r, PLAN_NAMES) for n, (_, r) in runs.items()},
        "fixed": {
            "oracle_loss": float(oracle),
            "always_dense_loss": float(stream.expected[:, stream.plans.index("DenseHead")].sum()),
            "best_fixed_plan": PLAN_NAMES[any_report.best_fixed_arm],
            "best_fixed_loss": any_report.best_fixed_loss,
        },
        "experts": _experts_vs_thresholds(stream, {n: a for n, (a, _) in runs.items()}, taus),
        "drift": {
            "change_points": list(drift.change_points),
            "lam": list(drift.lam),
            "slowdown": list(drift.slowdown),
            "variation_budget": drift_stream.variation_budget,
            "routers": {n: router_entry(r, PLAN_NAMES) for n, (_, r) in drift_runs.items()},
        },
        "crossover": crossovers,
        "amortization": amortization,
        "environment": {
            "linear_r2": stream.linear_r2,
            "features": len(FEATURES),
            "plans": list(PLAN_NAMES),
        },
        "versions": versions(),
    }
    write_summary(out, summary)
    return summary
