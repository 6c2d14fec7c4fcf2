"""The engine on the project's workload: tokens/s of every plan, against always-DenseHead and
the standard Python stack, with identical outputs checked. Results in bench/results/engine.json.

    python bench/engine.py [--requests bench/workload/requests.jsonl] [--limit N]
                           [--full-subset 6] [--reference-python PYTHON]
    python bench/engine.py --workload bfcl [--per-category 100] [--max-tokens 128]

``--workload bfcl`` decodes BFCL's four single-call categories (``llmqp bfcl requests``: the
first ``--per-category`` of each; 100 gives 400 requests) and adds their accuracy against
BFCL's accepted answers (the same for every exact plan: they decode the same tokens).

Every plan decodes every request, the plans in turn on each request (FullRecompute only the
first ``--full-subset``, beside DenseHead on the same requests); ratios are against DenseHead
measured in the same run. The
standard stack (transformers on torch, the same GGUF, llguidance's mask as a logits processor)
runs in ``--reference-python`` (an interpreter with torch + transformers; default: this one, if
it has them) as a subprocess, so its memory is its own. Also written: the workload's K and
forced-run distribution (bench/results/k_distribution.csv) and where a step's time goes.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from app.engine.engine import Engine  # noqa: E402
from app.engine.kernels import KERNELS  # noqa: E402
from app.engine.loop import DecodeState, decode  # noqa: E402
from app.engine.options import DecodeOptions  # noqa: E402
from app.engine.requests import load_requests  # noqa: E402
from app.engine.routing import FixedPolicy  # noqa: E402
from app.engine.session import result_of  # noqa: E402

PLANS = ("dense", "sparse", "forced", "auto")
#: Runs beyond a plain ``--plan``: name -> DecodeOptions fields (``auto-nodraft``: the cost rule
#: without the PromptLookup kernel, i.e. ``auto`` before drafting).
RUNS = {"lookup-4": {"plan": "lookup", "draft": 4}, "auto-nodraft": {"plan": "auto"}}
NO_DRAFT = {k: v for k, v in KERNELS.items() if k != "PromptLookup"}


def _stats(results) -> dict:
    tokens = sum(len(r.tokens) for r in results)
    decode_s = sum(r.seconds - r.prefill_s for r in results)
    wall = sum(r.seconds for r in results)
    return {
        "tokens": tokens,
        "wall_s": wall,
        "decode_s": decode_s,
        "tokens_per_s": tokens / decode_s,
        "tokens_per_s_with_prefill": tokens / wall,
    }


def _decode_one(engine, sessions, req, run: str):
    """One request under ``run`` (a ``--plan`` name or a :data:`RUNS` entry); the router's
    session (its warm router) is kept across requests."""
    options = DecodeOptions(**RUNS.get(run, {"plan": run}))
    if run == "auto-nodraft":
        state = DecodeState(engine, req, engine.prompt_ids(req), engine.constraint(req),
                            FixedPolicy(None, engine.rule), options, kernels=NO_DRAFT)  # fmt: skip
        decode(state, engine.body)
        return result_of(engine, req, state, time.perf_counter() - state.start)
    session = sessions.setdefault(run, engine.session()) if run == "router" else engine.session()
    return session.decode(req, options)


def _decode_interleaved(engine, requests, plans) -> dict:
    """``{plan: [result per request]}``, every plan on each request in turn, so a change of the
    machine's load during the run falls on every plan alike."""
    out = {p: [] for p in plans}
    sessions: dict = {}
    for n, req in enumerate(requests, 1):
        for plan in plans:
            out[plan].append(_decode_one(engine, sessions, req, plan))
        print(f"  [{n}/{len(requests)}] {req.id}", file=sys.stderr, flush=True)
    return out


def _breakdown(results) -> dict:
    """Mean milliseconds per token of mask, body, head and the rest, by plan."""
    rows: dict = {}
    for r in results:
        for s in r.steps:
            row = rows.setdefault(s.plan, [0, 0.0, 0.0, 0.0, 0.0])
            row[0] += 1
            row[1] += s.mask_s
            row[2] += s.body_s
            row[3] += s.head_s
            row[4] += s.seconds - s.mask_s - s.body_s - s.head_s
    return {
        plan: {
            "steps": n,
            "mask_ms": 1e3 * m / n,
            "body_ms": 1e3 * b / n,
            "head_ms": 1e3 * h / n,
            "other_ms": 1e3 * o / n,
        }
        for plan, (n, m, b, h, o) in rows.items()
    }


def _drafts(results) -> dict:
    """Acceptance per draft source: prompt lookup (drafted tokens accepted, mean accepted per
    draft, rollbacks and the time they cost) and the forced tokens merged into forwards."""
    tot = {"drafts": 0, "drafted": 0, "accepted": 0, "rejected": 0, "unreached": 0}
    for r in results:
        for key in tot:
            tot[key] += (r.drafts or {}).get(key, 0)
    forced = sum(s.forced for r in results for s in r.steps)
    runs = _forced_runs(results)
    return {
        "lookup": {
            **tot,
            "acceptance": tot["accepted"] / tot["drafted"] if tot["drafted"] else None,
            "mean_accepted_per_draft": tot["accepted"] / tot["drafts"] if tot["drafts"] else None,
            "rollbacks": sum(r.rollbacks for r in results),
            "rollback_s": sum(r.lost_s for r in results),
        },
        "forced": {
            "tokens": int(forced),
            "acceptance": 1.0 if forced else None,
            "mean_run": runs["mean"],
        },  # fmt: skip
        "tokens": sum(len(r.tokens) for r in results),
        "body_forwards": sum(s.body_tokens > 0 for r in results for s in r.steps),
    }


def _k_distribution(results, vocab) -> list[dict]:
    """Steps per K bucket (powers of two) and forced-run lengths, for the docs and the router."""
    ks = np.array([s.k for r in results for s in r.steps])
    edges = [1, 2, 3, 5, 9, 17, 33, 65, 129, 257, 1025, 4097, 16385, vocab + 1]
    out = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        n = int(((ks >= lo) & (ks < hi)).sum())
        out.append({"k_from": lo, "k_to": hi - 1, "steps": n, "share": n / len(ks)})
    return out


def _forced_runs(results) -> dict:
    lengths = []
    for r in results:
        run = 0
        for s in r.steps + [None]:
            if s is not None and s.forced:
                run += 1
            elif run:
                lengths.append(run)
                run = 0
    counts = np.bincount(lengths) if lengths else np.zeros(1, int)
    return {
        "runs": len(lengths),
        "mean": float(np.mean(lengths)) if lengths else 0.0,
        "histogram": {int(n): int(c) for n, c in enumerate(counts) if c},
    }


def _synthetic_k(vocab: int, steps: int = 5000) -> list[dict]:
    """The synthetic environment's K draws at the same vocabulary, for comparison."""
    from app.model import Scenario
    from app.router.environment import make_stream

    s = Scenario(vocab=vocab, d=576, horizon=steps)
    stream = make_stream(s, steps, np.random.Generator(np.random.PCG64(0)))
    ks = np.asarray(stream.k)
    edges = [1, 2, 3, 5, 9, 17, 33, 65, 129, 257, 1025, 4097, 16385, vocab + 1]
    return [
        {"k_from": lo, "k_to": hi - 1, "share": float(((ks >= lo) & (ks < hi)).mean())}
        for lo, hi in zip(edges[:-1], edges[1:])
    ]


def _standard_stack(python: str, requests_path: Path, limit: int | None) -> dict | None:
    cmd = [python, str(HERE / "standard_stack.py"), "--requests", str(requests_path), "--json"]
    if limit:
        cmd += ["--limit", str(limit)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as exc:
        print(f"standard stack skipped: {exc}", file=sys.stderr)
        return None
    if proc.returncode != 0:
        print(f"standard stack skipped: {proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout)


def _bfcl_requests(args) -> str:
    """Write BFCL's requests (fetching the data once) next to --out; return the file."""
    from app.cli.bfcl import write_requests
    from app.engine.fetch import fetch_bfcl

    fetch_bfcl(progress=lambda line: print(line, file=sys.stderr))
    path = Path(args.out).with_name("bfcl_requests.jsonl")
    kept, notes, bad = write_requests(path, None, args.per_category, args.max_tokens)
    print(
        f"BFCL: {len(kept)} requests ({len(notes)} with a changed feature, {len(bad)} left out)",
        file=sys.stderr,
    )
    return str(path)


def _bfcl_accuracy(results) -> dict:
    from app.cli.bfcl import score_results
    from app.engine.bfcl import load_entries
    from app.engine.fetch import bfcl_dir

    return score_results([{"id": r.id, "text": r.text} for r in results], load_entries(bfcl_dir()))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", default=str(HERE / "workload" / "requests.jsonl"))
    ap.add_argument("--workload", choices=("project", "bfcl"), default="project")
    ap.add_argument("--per-category", type=int, default=100, help="bfcl: requests per category")
    ap.add_argument("--max-tokens", type=int, default=128, help="bfcl: per request")
    ap.add_argument("--limit", type=int, default=None, help="the first N requests only")
    ap.add_argument("--full-subset", type=int, default=6, help="0: skip FullRecompute")
    ap.add_argument(
        "--plans",
        default=",".join(PLANS + ("auto-nodraft", "lookup", "lookup-4", "router")),
        help="comma-separated runs: --plan names, lookup-4 (--draft 4), auto-nodraft",
    )
    ap.add_argument("--reference-python", default=sys.executable)
    ap.add_argument("--out", default=None, help="default: bench/results/engine[_bfcl].json")
    args = ap.parse_args(argv)
    suffix = "_bfcl" if args.workload == "bfcl" else ""
    args.out = args.out or str(HERE / "results" / f"engine{suffix}.json")
    if args.workload == "bfcl":
        args.requests = _bfcl_requests(args)

    requests = load_requests(args.requests)[: args.limit]
    engine = Engine.load()
    engine.decode(requests[0], plan="dense")  # warm: page the weights in once for everyone
    report: dict = {
        "requests": len(requests),
        "model": engine.name,
        "plans": {},
        "versions": engine.versions,
    }
    plans = tuple(dict.fromkeys(("dense", *args.plans.split(","))))
    results = _decode_interleaved(engine, requests, plans)
    report["plans"] = {plan: _stats(results[plan]) for plan in plans}
    report["drafts"] = {
        p: _drafts(results[p]) for p in plans if p in ("auto", "lookup", "lookup-4", "router")
    }
    ref = [r.tokens for r in results["dense"]]
    for plan in plans:
        same = [r.tokens for r in results[plan]] == ref
        report["plans"][plan]["identical_to_dense"] = same
        report["plans"][plan]["speedup_vs_dense"] = (
            report["plans"][plan]["tokens_per_s"] / report["plans"]["dense"]["tokens_per_s"]
        )
    sub = requests[: args.full_subset]
    if sub:
        print("== full (subset)", file=sys.stderr, flush=True)
        both = _decode_interleaved(engine, sub, ("full", "dense"))
        full_stats = _stats(both["full"])
        full_stats["identical_to_dense"] = [r.tokens for r in both["full"]] == ref[: len(sub)]
        full_stats["speedup_vs_dense_on_subset"] = (
            full_stats["tokens_per_s"] / _stats(both["dense"])["tokens_per_s"]
        )
        full_stats["subset"] = len(sub)
        report["plans"]["full"] = full_stats
    report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report["breakdown_ms_per_step"] = {
        p: _breakdown(results[p]) for p in ("dense", "auto", "lookup") if p in results
    }
    report["k_distribution"] = _k_distribution(results["dense"], engine.config.vocab)
    report["k_distribution_synthetic"] = _synthetic_k(engine.config.vocab)
    report["forced_runs"] = _forced_runs(results["dense"])
    report["stops"] = {
        s: sum(r.stop == s for r in results["dense"]) for s in ("eos", "grammar", "length")
    }

    if args.workload == "bfcl":
        report["bfcl_accuracy_dense"] = _bfcl_accuracy(results["dense"])
    stack = _standard_stack(args.reference_python, Path(args.requests), args.limit)
    if stack is not None:
        stack_tokens = [r["tokens"] for r in stack["results"]]
        stack["identical_to_dense"] = stack_tokens == ref
        stack["mismatched_requests"] = [
            req.id for req, a, b in zip(requests, stack_tokens, ref) if a != b
        ]
        auto = report["plans"].get("auto", report["plans"]["dense"])["tokens_per_s"]
        stack["auto_speedup_vs_standard_stack"] = auto / stack["tokens_per_s"]
        stack["dense_speedup_vs_standard_stack"] = (
            report["plans"]["dense"]["tokens_per_s"] / stack["tokens_per_s"]
        )
        stack.pop("results")
        report["standard_stack"] = stack

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    with open(out.with_name(f"k_distribution{suffix}.csv"), "w") as f:
        f.write("k_from,k_to,real_steps,real_share,synthetic_share\n")
        for real, syn in zip(report["k_distribution"], report["k_distribution_synthetic"]):
            f.write(
                f"{real['k_from']},{real['k_to']},{real['steps']},{real['share']:.4f},"
                f"{syn['share']:.4f}\n"
            )
    for plan, row in report["plans"].items():
        print(
            f"{plan:>7}: {row['tokens_per_s']:6.2f} tokens/s  identical={row['identical_to_dense']}"
        )
    if "standard_stack" in report:
        s = report["standard_stack"]
        print(
            f"  stack: {s['tokens_per_s']:6.2f} tokens/s  identical={s['identical_to_dense']}  "
            f"auto/stack = {s['auto_speedup_vs_standard_stack']:.2f}x"
        )
    if "bfcl_accuracy_dense" in report:
        acc = report["bfcl_accuracy_dense"]
        print(f"  BFCL accuracy (every exact plan): {acc['accuracy']:.3f} on {acc['requests']}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
