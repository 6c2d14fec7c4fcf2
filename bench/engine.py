"""The engine on the project's workload: tokens/s of every plan, against always-DenseHead and
the standard Python stack, with identical outputs checked. Results in bench/results/engine.json.

    python bench/engine.py [--requests bench/workload/requests.jsonl] [--limit N]
                           [--full-subset 6] [--reference-python PYTHON]
    python bench/engine.py --workload bfcl [--per-category 100] [--max-tokens 128]
                           [--blas-limit 40] [--stack-limit 40] [--plans dense,auto,...]

``--workload bfcl`` decodes BFCL's four single-call categories (``llmqp bfcl requests``: the
first ``--per-category`` of each; 100 gives 400 requests) and adds their accuracy against
BFCL's accepted answers (the same for every exact plan: they decode the same tokens).

Every plan decodes every request, the plans in turn on each request (FullRecompute only the
first ``--full-subset``, beside DenseHead on the same requests); ratios are against DenseHead
measured in the same run. Two baselines join the turn on the first requests only: DenseHead on
a second engine with the float32 BLAS body (``--kernel blas``; first ``--blas-limit``) and the
standard stack (transformers on torch, the same GGUF, llguidance's mask as a logits processor;
first ``--stack-limit``), which runs in ``--reference-python`` (an interpreter with torch +
transformers; default: this one, if it has them) as a subprocess, so its memory is its own;
every plan's speed-up over each is on the same requests. Ctrl-C or SIGTERM stops the run after
the request in progress and writes what was decoded, marked ``partial``. Also written: the
workload's K and forced-run distribution (bench/results/k_distribution.csv), where a step's time
goes, peak memory (the quantized engine alone, and with the BLAS engine beside it) and the
machine's load average at the start and the end.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
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


class _StandardStack:
    """bench/standard_stack.py in ``python`` (its own interpreter, so its memory is its own),
    decoding one request of ``requests_path`` per call so it interleaves with the engine."""

    def __init__(self, python: str, requests_path: Path):
        cmd = [python, str(HERE / "standard_stack.py"), "--requests", str(requests_path)]
        self.proc = subprocess.Popen(
            [*cmd, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        if not self.proc.stdout.readline():  # no "ready" line: torch or transformers missing
            self.proc.wait()
            raise OSError(f"{python} could not load the standard stack (the reference extra)")

    def decode(self, index: int) -> dict:
        self.proc.stdin.write(f"{index}\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> dict:
        """The stack's totals (peak memory, versions), once its input is closed."""
        self.proc.stdin.close()
        summary = json.loads(self.proc.stdout.readline())
        self.proc.wait()
        return summary


def _decode_interleaved(engine, requests, plans, extra=None) -> tuple[dict, int]:
    """``({run: [result per request]}, requests done)``: every plan on each request in turn,
    so a change of the machine's load during the run falls on every plan alike. ``extra`` maps
    a run name to ``(limit, decode(index, request))``: runs on the first ``limit`` requests only
    (another engine, the standard stack). Ctrl-C or SIGTERM stops after the last whole request
    and keeps what was decoded."""
    extra = extra or {}
    out: dict = {p: [] for p in (*plans, *extra)}
    sessions: dict = {}
    done, t0 = 0, time.perf_counter()
    try:
        for n, req in enumerate(requests):
            row = {plan: _decode_one(engine, sessions, req, plan) for plan in plans}
            row |= {name: fn(n, req) for name, (limit, fn) in extra.items() if n < limit}
            for name, result in row.items():
                out[name].append(result)
            done = n + 1
            eta = (time.perf_counter() - t0) / done * (len(requests) - done)
            print(f"  [{done}/{len(requests)}] {req.id}  ~{eta / 60:.0f} min left",
                  file=sys.stderr, flush=True)  # fmt: skip
    except KeyboardInterrupt:
        print(f"stopped: {done} of {len(requests)} requests kept", file=sys.stderr, flush=True)
        for name in out:
            del out[name][done:]
    return out, done


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


class _Result:
    """A standard-stack answer (a dict) read like an engine result by :func:`_stats`."""

    def __init__(self, row: dict):
        self.id, self.tokens = row["id"], row["tokens"]
        self.seconds, self.prefill_s = row["seconds"], row["prefill_s"]


def _on_subset(results: dict, baseline: list, plans) -> dict:
    """A run on the first ``len(baseline)`` requests only: its tokens/s, whether its tokens are
    DenseHead's, and every plan's speed-up over it on those same requests."""
    n = len(baseline)
    row = _stats(baseline)
    row["requests"] = n
    row["identical_to_dense"] = [r.tokens for r in baseline] == [
        r.tokens for r in results["dense"][:n]
    ]
    row["speedup_of_plans"] = {
        p: _stats(results[p][:n])["tokens_per_s"] / row["tokens_per_s"] for p in plans
    }
    return row


def bfcl_requests(path, per_category: int, max_tokens: int) -> str:
    """Write BFCL's requests to ``path`` (fetching the data once): the first ``per_category``
    of each category, in app/engine/bfcl.py's order, as ``llmqp bfcl requests`` converts them
    (bench/stream_load.py reuses this); return the file."""
    from app.cli.bfcl import write_requests
    from app.engine.fetch import fetch_bfcl

    fetch_bfcl(progress=lambda line: print(line, file=sys.stderr))
    kept, notes, bad = write_requests(path, None, per_category, max_tokens)
    print(
        f"BFCL: {len(kept)} requests ({len(notes)} with a changed feature, {len(bad)} left out)",
        file=sys.stderr,
    )
    return str(path)


def _bfcl_requests(args) -> str:
    """BFCL's requests next to --out (:func:`bfcl_requests`); return the file."""
    path = Path(args.out).with_name("bfcl_requests.jsonl")
    return bfcl_requests(path, args.per_category, args.max_tokens)


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
    ap.add_argument(
        "--blas-limit",
        type=int,
        default=40,
        help="always-DenseHead on --kernel blas: first N (0: none)",
    )
    ap.add_argument(
        "--stack-limit", type=int, default=40, help="the standard stack: first N (0: none)"
    )
    ap.add_argument("--out", default=None, help="default: bench/results/engine[_bfcl].json")
    args = ap.parse_args(argv)
    for name in ("blas_limit", "stack_limit", "full_subset"):
        if getattr(args, name) < 0:
            ap.error(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    suffix = "_bfcl" if args.workload == "bfcl" else ""
    args.out = args.out or str(HERE / "results" / f"engine{suffix}.json")
    if args.workload == "bfcl":
        args.requests = _bfcl_requests(args)

    requests = load_requests(args.requests)[: args.limit]
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a stopped run still reports
    load_at_start = os.getloadavg()
    engine = Engine.load()
    engine.decode(requests[0], plan="dense")  # warm: page the weights in once for everyone
    report: dict = {
        "requests": len(requests),
        "model": engine.name,
        "plans": {},
        "versions": engine.versions,
        "peak_rss_mb_quantized_engine": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    extra: dict = {}
    if args.blas_limit:
        blas = Engine.load(kernel="blas")
        blas.decode(requests[0], plan="dense")
        extra["dense-blas"] = (args.blas_limit, lambda n, req: blas.decode(req, plan="dense"))
    stack = None
    if args.stack_limit:
        try:
            stack = _StandardStack(args.reference_python, Path(args.requests))
            stack.decode(0)  # warm, as the engines are
            extra["standard-stack"] = (args.stack_limit, lambda n, req: stack.decode(n))
        except OSError as exc:
            print(f"standard stack skipped: {exc}", file=sys.stderr)
    plans = tuple(dict.fromkeys(("dense", *args.plans.split(","))))
    results, done = _decode_interleaved(engine, requests, plans, extra)
    if done == 0:
        print("stopped before the first request ended: nothing to report", file=sys.stderr)
        return 1
    if done < len(requests):
        report["partial"] = {"requests_done": done, "requests_planned": len(requests)}
        requests = requests[:done]
    report["requests"] = done
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
    if results.get("dense-blas"):
        report["dense_blas"] = _on_subset(results, results["dense-blas"], plans)
    sub = [] if "partial" in report else requests[: args.full_subset]  # a stopped run ends
    if sub:
        print("== full (subset)", file=sys.stderr, flush=True)
        both, _ = _decode_interleaved(engine, sub, ("full", "dense"))
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
    stack_summary = stack.close() if stack is not None else None
    if results.get("standard-stack"):
        stack_results = [_Result(r) for r in results["standard-stack"]]
        report["standard_stack"] = {
            **stack_summary,
            **_on_subset(results, stack_results, plans),
            "mismatched_requests": [
                r.id for r, d in zip(stack_results, results["dense"]) if r.tokens != d.tokens
            ],
        }
    report["load_average"] = {"start": load_at_start, "end": os.getloadavg()}

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
    for name in ("dense_blas", "standard_stack"):
        if name in report:
            s = report[name]
            print(
                f"{name}: {s['tokens_per_s']:6.2f} tokens/s on {s['requests']} requests  "
                f"identical={s['identical_to_dense']}  auto = "
                f"{s['speedup_of_plans'].get('auto', float('nan')):.2f}x it"
            )
    if "bfcl_accuracy_dense" in report:
        acc = report["bfcl_accuracy_dense"]
        print(f"  BFCL accuracy (every exact plan): {acc['accuracy']:.3f} on {acc['requests']}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
