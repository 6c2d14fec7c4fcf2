"""The benchmark harness: the paper's three results as files, deterministic given the seed.

``run_bench`` writes ``crossover.csv``, ``amortization.csv``, ``regret.csv`` and ``summary.json``
into a folder. Nothing time- or machine-dependent goes into them, so the same seed gives
byte-identical files.
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
from .router.experiment import run_routers, scenario_stream
from .router.registry import DRIFT_ROUTERS, LEARNERS
from .router.simulate import make_router

__all__ = ["run_bench", "BENCH_FILES", "DRIFT_ROUTERS"]

BENCH_FILES = ("crossover.csv", "amortization.csv", "regret.csv", "summary.json")
CROSSOVER_BATCHES = (1, 8)


def _fmt(v) -> str:
    if isinstance(v, (float, np.floating)):
        return "" if not math.isfinite(v) else format(float(v), ".12g")
    return str(v)


def _write_csv(path: Path, header, rows) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows([_fmt(v) for v in row] for row in rows)


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
    _write_csv(out / "crossover.csv", header, rows)
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
    _write_csv(out / "amortization.csv", header, rows)
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


def _summary_entry(report, plans=PLAN_NAMES) -> dict:
    d = report.to_dict(curves=False)
    d["shares"] = dict(zip(plans, d["shares"]))
    d["shares_last_half"] = dict(zip(plans, d["shares_last_half"]))
    d["best_fixed_plan"] = plans[d.pop("best_fixed_arm")]
    return d


def run_bench(seed: int, steps: int, out_dir, progress=None, scenario: Scenario | None = None):
    """Write the benchmark files for ``seed`` and ``steps`` into ``out_dir``; return the summary.

    ``progress(stage, done, total)`` reports advancement (for a progress line).
    """
    seed = check_int("seed", seed, 0, 2**32 - 1)
    steps = check_int("steps", steps, 10, 1_000_000)
    s = (scenario or Scenario()).replace(seed=seed, horizon=steps)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    note = progress or (lambda *a: None)

    crossovers = _crossover(s, out)
    amortization = _amortization(s, out)
    stream, runs = run_routers(s, LEARNERS, progress=lambda n, t, T: note(n, t, T))
    drift = Drift()
    drift_stream = scenario_stream(s, drift)
    _, drift_runs = run_routers(
        s, DRIFT_ROUTERS, stream=drift_stream, progress=lambda n, t, T: note("drift/" + n, t, T)
    )

    stride = max(1, steps // 2000)
    rows_at = np.unique(np.append(np.arange(stride - 1, steps, stride), steps - 1))
    curves = {n: np.asarray(r.dynamic_curve) for n, (_, r) in runs.items()}
    curves.update({"drift/" + n: np.asarray(r.dynamic_curve) for n, (_, r) in drift_runs.items()})
    _write_csv(
        out / "regret.csv",
        ["step"] + list(curves),
        [[int(t) + 1] + [curves[n][t] for n in curves] for t in rows_at],
    )

    oracle = stream.expected.min(axis=1).sum()
    any_report = next(iter(runs.values()))[1]
    taus = make_router("experts-hedge", len(PLAN_NAMES), len(FEATURES), horizon=steps).taus_
    summary = {
        "seed": seed,
        "steps": steps,
        "scenario": s.to_dict(),
        "routers": {n: _summary_entry(r) for n, (_, r) in runs.items()},
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
            "routers": {n: _summary_entry(r) for n, (_, r) in drift_runs.items()},
        },
        "crossover": crossovers,
        "amortization": amortization,
        "environment": {
            "linear_r2": stream.linear_r2,
            "features": len(FEATURES),
            "plans": list(PLAN_NAMES),
        },
        "versions": {
            "llm-qp": __version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
    }
    with open(out / "summary.json", "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2, sort_keys=True)
        f.write("\n")
    return summary
