"""The amortized-query hypothesis and the learned router on the real model, on held-out requests.

    python bench/amortized.py --trace TRACE.json --amortizer FIT.npz [--max-tokens 32]
                              [--taus 0,2,4,8] [--skip-speed]

From the trace (``llmqp traces collect``; its one-step predictions from the exact previous
state) on the amortizer's held-out split: ε̂ (the 99th percentile over steps of the largest
|predicted − exact| logit on the legal set), agreement with the exact token by margin bucket,
acceptance and decision error over τ beside the model's curve (Kumaraswamy fitted to the real
margins), and the margin certificate (steps with predicted margin > 2ε̂ that are wrong).

Timed decodes of the same held-out requests, all in one run (ratios against DenseHead measured
here): dense, forced, auto, amortized at each τ (lossless; and lossy at one τ), the router cold
and warm, and the oracle (cheapest plan per step from the trace's costs); every lossless run is
checked token for token against dense. Also the router's overhead per step and its measured
regret (the trace's cost of the plan it chose minus the cheapest, summed over steps).
Writes bench/results/amortized.json, amortized_tau.csv and router_regret.csv.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from app.engine.options import DecodeOptions  # noqa: E402
from app.model import MarginDistribution, decision_error_rate  # noqa: E402
from app.router.real_trace import error_over_tau, held_out, margin_fit  # noqa: E402

BUCKETS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, np.inf)


def hypothesis(trace: dict) -> dict:
    h = held_out(trace)
    pm, em, ok, gap = h["pred_margin"], h["margin"], h["correct"], h["legal_gap"]
    fit = margin_fit(trace)
    eps = fit["eps_hat"]
    by_bucket = []
    for lo, hi in zip(BUCKETS[:-1], BUCKETS[1:]):
        for name, m in (("predicted", pm), ("exact", em)):
            sel = (m >= lo) & (m < hi)
            by_bucket.append(
                {
                    "margin_of": name,
                    "from": lo,
                    "to": None if np.isinf(hi) else hi,
                    "steps": int(sel.sum()),
                    "agreement": float(ok[sel].mean()) if sel.any() else None,
                }
            )
    safe = pm > 2 * eps
    taus = np.linspace(0.0, max(2.5 * eps, float(np.percentile(pm, 99))), 51)
    measured = error_over_tau(trace, taus)
    scale = fit["scale"]
    eps_n = min(fit["eps_normalised"], 0.5)
    model = decision_error_rate(taus / scale, eps_n, MarginDistribution(fit["a"], fit["b"]))
    return {
        "steps": len(pm),
        "requests": len(set(h["request"])),
        "eps_hat": eps,
        "legal_gap_median": float(np.median(gap)),
        "agreement": float(ok.mean()),
        "by_margin_bucket": by_bucket,
        "certificate": {
            "tau_safe": 2 * eps,
            "steps_above": int(safe.sum()),
            "violations": int((safe & ~ok).sum()),
        },
        "kumaraswamy": {k: fit[k] for k in ("a", "b", "scale", "eps_normalised")},
        "curve": {
            "tau": taus,
            "accept": measured["accept"],
            "error": measured["error"],
            "model_error": model,
        },
    }


def _decode_all(engine, requests, plan, **kw):
    results, start = [], time.perf_counter()
    for req in requests:
        results.append(engine.decode(req, DecodeOptions(plan=plan, **kw)))
    tokens = sum(len(r.tokens) for r in results)
    decode_s = sum(r.seconds - r.prefill_s for r in results)
    return results, {
        "tokens": tokens,
        "decode_s": decode_s,
        "tokens_per_s": tokens / decode_s,
        "rollbacks": sum(r.rollbacks for r in results),
        "lost_s": sum(r.lost_s for r in results),
        "wall_s": time.perf_counter() - start,
    }


def _regret(results, costs) -> dict:
    """Measured regret: the trace's cost of the chosen plan minus the cheapest, per routed step."""
    excess = []
    for r in results:
        for s in r.steps:
            row = costs.get((r.id, s.index))
            if s.k == 1 or not row or len(row) < 4:
                continue
            plan = s.chosen or s.plan
            plan = plan if plan in row else "SparseHead"
            excess.append(row[plan] - min(row.values()))
    curve = np.cumsum(excess) if excess else np.zeros(0)
    return {
        "steps": len(excess),
        "regret_s": float(curve[-1]) if len(curve) else 0.0,
        "curve": curve,
    }


def speed(engine, requests, costs, taus, lossy_tau, only=None) -> tuple[dict, dict]:
    runs, ref = {}, None
    plan_runs = [("dense", {}), ("forced", {}), ("auto", {})]
    plan_runs += [(f"amortized@{t:g}", {"tau": t}) for t in taus]
    plan_runs += [(f"amortized-lossy@{lossy_tau:g}", {"tau": lossy_tau, "lossy": True})]
    plan_runs += [("rerank", {}), ("router-cold", {}), ("router-warm", {}), ("oracle", {})]
    if not costs:
        plan_runs = [p for p in plan_runs if p[0] != "oracle"]
    if only:
        plan_runs = [p for p in plan_runs if p[0] in only or p[0] == "dense"]
    curves = {}
    for name, kw in plan_runs:
        print(f"== {name}", file=sys.stderr, flush=True)
        plan = name.split("@")[0].split("-")[0]
        if plan == "router":
            kw = {"router": "linucb"}
        if plan == "oracle":
            kw = {"oracle": costs}
        results, row = _decode_all(engine, requests, plan, **kw)
        toks = [r.tokens for r in results]
        ref = toks if ref is None else ref
        row["identical_to_dense"] = toks == ref
        row["requests_differing"] = sum(a != b for a, b in zip(toks, ref))
        if plan == "router":
            pol = results[0].policy
            steps = sum(len(r.steps) for r in results)
            row["overhead_s_per_step"] = pol.overhead_s / max(pol.decisions, 1)
            row["overhead_share"] = pol.overhead_s / row["decode_s"]
            row["decisions"], row["updates"] = pol.decisions, len(pol.log)
            row["mean_delay"] = float(np.mean([e["delay"] for e in pol.log])) if pol.log else 0
            row["steps"] = steps
            pol.overhead_s, pol.decisions = 0.0, 0
        reg = _regret(results, costs)
        row["measured_regret_s"], row["regret_steps"] = reg["regret_s"], reg["steps"]
        curves[name] = reg["curve"]
        row["plans"] = {}
        for r in results:
            for s in r.steps:
                row["plans"][s.plan] = row["plans"].get(s.plan, 0) + 1
        runs[name] = row
    for row in runs.values():
        row["speedup_vs_dense"] = row["tokens_per_s"] / runs["dense"]["tokens_per_s"]
    return runs, curves


def interleaved(engine, requests, costs, runs) -> tuple[dict, dict]:
    """Every plan on each request in turn (so a change of the machine's load hits them all
    alike): totals per plan, identical-token checks against dense, router overhead, regret."""
    out = {name: {"tokens": 0, "decode_s": 0.0, "rollbacks": 0, "same": True} for name, _ in runs}
    results = {name: [] for name, _ in runs}
    for req in requests:
        ref = None
        for name, kw in runs:
            plan = name.split("@")[0].split("-")[0]
            r = engine.decode(req, DecodeOptions(plan=plan, **kw))
            ref = r.tokens if ref is None else ref
            row = out[name]
            row["tokens"] += len(r.tokens)
            row["decode_s"] += r.seconds - r.prefill_s
            row["rollbacks"] += r.rollbacks
            row["same"] &= r.tokens == ref
            results[name].append(r)
        print(f"  {req.id}", file=sys.stderr, flush=True)
    curves = {}
    for name, row in out.items():
        row["tokens_per_s"] = row["tokens"] / row["decode_s"]
        row["speedup_vs_dense"] = row["tokens_per_s"] / (
            out["dense"]["tokens"] / out["dense"]["decode_s"]
        )
        reg = _regret(results[name], costs)
        row["measured_regret_s"], curves[name] = reg["regret_s"], reg["curve"]
        if name.startswith("router"):
            pol = results[name][0].policy
            row["overhead_share"] = pol.overhead_s / row["decode_s"]
            row["overhead_ms_per_decision"] = 1e3 * pol.overhead_s / max(pol.decisions, 1)
            row["updates"], row["dropped"] = len(pol.log), pol.dropped
            row["mean_delay"] = float(np.mean([e["delay"] for e in pol.log])) if pol.log else 0.0
        row["plans"] = {}
        for r in results[name]:
            for st in r.steps:
                row["plans"][st.plan] = row["plans"].get(st.plan, 0) + 1
    return out, curves


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trace", default=None, help="without it: no hypothesis part, no oracle")
    ap.add_argument("--amortizer", required=True)
    ap.add_argument("--requests", default=str(HERE / "workload" / "requests.jsonl"))
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--taus", default="0,2,4,8")
    ap.add_argument("--lossy-tau", type=float, default=2.0)
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--limit", type=int, default=None, help="the first N held-out requests")
    ap.add_argument("--runs", default=None, help="comma-separated run names (default: all)")
    ap.add_argument(
        "--interleave",
        action="store_true",
        help="dense, forced, auto, amortized@4, rerank, router, oracle on each request in turn",
    )
    ap.add_argument("--out", default=str(HERE / "results" / "amortized.json"))
    args = ap.parse_args(argv)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report, c = {}, None
    if args.trace:
        trace = json.loads(Path(args.trace).read_text())
        report = {"hypothesis": hypothesis(trace), "trace_meta": trace["meta"]}
        c = report["hypothesis"]["curve"]
        with open(out.with_name("amortized_tau.csv"), "w") as f:
            f.write("tau,accept,decision_error,model_decision_error\n")
            for row in zip(c["tau"], c["accept"], c["error"], c["model_error"]):
                f.write(",".join(f"{v:.6g}" for v in row) + "\n")
    if not args.skip_speed:
        from app.engine.engine import Engine
        from app.engine.requests import load_requests
        from app.engine.traces import load_costs

        engine = Engine.load().session(amortizer=args.amortizer)  # warm routers, this fit
        test = set(engine.amortizer().meta["test_ids"])
        requests = [
            dataclasses.replace(r, max_tokens=min(r.max_tokens, args.max_tokens))
            for r in load_requests(args.requests)
            if r.id in test
        ][: args.limit]
        engine.decode(requests[0], DecodeOptions(plan="dense"))  # warm the weights
        taus = [float(t) for t in args.taus.split(",")]
        costs = load_costs(args.trace) if args.trace else {}
        only = args.runs.split(",") if args.runs else None
        if args.interleave:
            plan_runs = [("dense", {}), ("forced", {}), ("auto", {}), ("amortized@4", {"tau": 4.0})]
            plan_runs += [("rerank", {}), ("router", {"router": "linucb"})]
            plan_runs += [("oracle", {"oracle": costs})] if costs else []
            runs, curves = interleaved(engine, requests, costs, plan_runs)
        else:
            runs, curves = speed(engine, requests, costs, taus, args.lossy_tau, only)
        report["speed"] = {"requests": len(requests), "max_tokens": args.max_tokens, "runs": runs}
        n = max(len(v) for v in curves.values())
        with open(out.with_name("router_regret.csv"), "w") as f:
            names = [k for k in curves if len(curves[k]) == n]
            f.write("step," + ",".join(names) + "\n")
            for t in range(n):
                f.write(f"{t + 1}," + ",".join(f"{curves[k][t]:.6g}" for k in names) + "\n")
    if c is not None:
        report["hypothesis"]["curve"] = {k: np.asarray(v).tolist() for k, v in c.items()}
        h = report["hypothesis"]
        print(
            f"eps_hat={h['eps_hat']:.3f} agreement={h['agreement']:.3f} "
            f"certificate: {h['certificate']['violations']}/{h['certificate']['steps_above']}"
        )
    out.write_text(json.dumps(report, indent=2, default=float) + "\n")
    for name, row in report.get("speed", {}).get("runs", {}).items():
        print(
            f"{name:>22}: {row['tokens_per_s']:6.2f} tok/s x{row['speedup_vs_dense']:.2f} "
            f"identical={row.get('identical_to_dense', row.get('same'))} "
            f"rollbacks={row['rollbacks']}"
        )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
