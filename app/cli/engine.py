"""``llmqp model fetch|info`` and ``llmqp decode``: the engine's commands.

Without the model every command says in one line how to get it. Bad input — an unknown file, a
schema or regex llguidance rejects, a prompt longer than the context, K = 0 at a step — exits
with status 2 and one line; every request is checked before the first one decodes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..engine.engine import DEVICES, IMPLS
from ..engine.options import RECALIBRATE_PRESETS
from ..engine.plans import PLAN_CHOICES
from ..engine.routing import ROUTER_CHOICES

__all__ = ["add_engine_commands"]


def _cmd_model_fetch(args) -> int:
    from ..engine.fetch import fetch_model

    path = fetch_model(progress=lambda line: print(line, file=sys.stderr))
    print(path)
    return 0


def _cmd_model_info(args) -> int:
    from ..engine.engine import Engine

    info = Engine.load(args.model).info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    c = info["config"]
    print(f"{info['model']}  ({info['path']})")
    print(f"  source     {json.dumps(info['source'])}")
    print(
        f"  shape      {c['n_layers']} layers, d={c['d']}, FFN {c['d_ff']}, {c['n_heads']} heads"
        f" / {c['n_kv_heads']} KV heads of {c['head_dim']}, tied head: {c['tied']}"
    )
    print(f"  vocabulary {info['vocab']:,} tokens (BOS {info['bos']}, EOS {info['eos']})")
    print(f"  context    {info['context']:,} positions; RoPE base {c['rope_base']:g}")
    print(f"  weights    {info['weights_bytes'] / 1e6:.0f} MB as float32")
    rule = info["rule"]
    print(
        f"  auto rule  SparseHead while K <= K* = {rule['k_star']:,} ({rule['hardware']} profile)"
    )
    return 0


def _grammar_arg(args):
    """The single grammar the flags give, as ``(kind, value)``, or None."""
    given = [(k, getattr(args, k)) for k in ("schema", "regex", "choices", "lark")]
    given = [(k, v) for k, v in given if v is not None]
    if len(given) > 1:
        raise ValueError("give at most one of --schema, --regex, --choices, --lark")
    if not given:
        return None
    kind, value = given[0]
    if kind == "schema":
        path = Path(value)
        text = path.read_text(encoding="utf-8") if path.is_file() else value
        try:
            return kind, json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--schema: neither a file nor valid JSON ({exc.msg})") from None
    if kind == "lark":
        path = Path(value)
        if not path.is_file():
            raise ValueError(f"--lark {value}: no such file")
        return kind, path.read_text(encoding="utf-8")
    if kind == "choices":
        return kind, [c for c in value.split(",") if c]
    return kind, value


def _requests(args):
    from ..engine.requests import DecodeRequest, load_requests

    defaults = {"chat": args.chat}
    if args.max_tokens is not None:
        defaults["max_tokens"] = args.max_tokens
    if args.requests:
        if args.prompt is not None or _grammar_arg(args) is not None:
            raise ValueError("--requests takes prompts and grammars from the file; drop --prompt")
        return load_requests(args.requests, **defaults)
    if args.prompt is None:
        raise ValueError(
            "give --prompt TEXT (with --schema/--regex/--choices/--lark) or --requests FILE"
        )
    return [DecodeRequest("prompt", args.prompt, _grammar_arg(args), **defaults)]


def _executor(args, engine):
    """None (the engine's numpy heads) or the compiled step under XLA (app.compiler)."""
    if args.executor == "numpy":
        return None
    if args.plan != "auto":
        raise ValueError("--executor xla routes every step itself: use it with --plan auto")
    try:
        from ..compiler.executor import XlaStepExecutor
    except ImportError as exc:  # the [compiler] extra is optional
        raise ValueError(f"--executor xla needs the [compiler] extra: {exc}") from None
    return XlaStepExecutor(engine)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _options(args):
    """The :class:`DecodeOptions` the flags give (validated there, once)."""
    from ..engine.options import DecodeOptions

    if args.router_state and args.plan != "router":
        raise ValueError("--router-state needs --plan router")
    if args.plan == "oracle" and not args.trace:
        raise ValueError("--plan oracle needs --trace FILE (written by llmqp traces collect)")
    oracle = None
    if args.trace:
        from ..engine.traces import load_costs

        oracle = load_costs(args.trace)
    return DecodeOptions(plan=args.plan, router=args.router, tau=args.tau, lossy=args.lossy,
                         oracle=oracle, recalibrate=args.recalibrate,
                         draft=args.draft)  # fmt: skip


def _session(args, engine, options):
    """A session with the amortizer and router state the flags name."""
    from ..engine.session import Session

    session = Session(engine, amortizer=args.amortizer, progress=None if args.quiet else _say)
    if options.plan == "router" and args.router_state and Path(args.router_state).is_file():
        session.load_router(options.router_name, args.router_state)
    return session


def _record(path, result, plan) -> None:
    from ..engine.traces import step_rows
    from ..measure.store import ResultStore

    with ResultStore(path) as store:
        store.put_trace(f"decode/{plan}", step_rows(result, plan))


def _decode_batched(args, session, requests, options, executor) -> None:
    """``--batch N``: N sequences in flight (app.engine.offline), outputs in the file's order."""
    from ..engine.offline import decode_file

    if executor is not None:
        raise ValueError("--executor xla scores one sequence at a time: use it with --batch 1")

    def emit(result):
        if args.store:
            _record(args.store, result, args.plan)
        print(json.dumps(result.to_json()) if args.json else result.text, flush=True)

    decode_file(session, requests, options, args.batch, emit, show=not args.quiet)


def _cmd_decode(args) -> int:
    from ..engine.engine import Engine
    from ..engine.offline import check_batch

    check_batch(args.batch)
    requests = _requests(args)
    options = _options(args)
    engine = Engine.load(args.model, device=args.device, impl=args.impl, kernel=args.kernel)
    for req in requests:  # check every request before the first decodes
        engine.prompt_ids(req)
        engine.constraint(req)
    session = _session(args, engine, options)
    show = len(requests) > 1 and not args.quiet
    executor = _executor(args, engine)
    if args.batch > 1:
        _decode_batched(args, session, requests, options, executor)
        requests = []
    for n, req in enumerate(requests, 1):
        result = session.decode(req, options, executor=executor)
        if args.store:
            _record(args.store, result, args.plan)
        print(json.dumps(result.to_json()) if args.json else result.text, flush=True)
        if show:
            _say(f"  [{n}/{len(requests)}] {req.id}: {len(result.tokens)} tokens, "
                 f"{result.tokens_per_s:.1f} tokens/s, stop={result.stop}")  # fmt: skip
    if args.plan == "router" and args.router_state:
        session.router(options.router_name).save(args.router_state)
    if args.recalibrate and not args.quiet:
        r = session.online_rule(args.recalibrate).to_dict()
        _say(f"  auto rule recalibrated: K* {r['preset_k_star']:,} ({r['hardware']} preset) -> "
             f"{r['k_star']:,} measured")  # fmt: skip
    return 0


def _round(v):
    if isinstance(v, float):
        return float(f"{v:.6g}")
    if isinstance(v, dict):
        return {k: _round(x) for k, x in v.items()}
    return v


def _cmd_traces_collect(args) -> int:
    import time

    from ..engine.engine import Engine
    from ..engine.requests import load_requests
    from ..engine.session import Session
    from ..engine.traces import collect_request, limited

    requests = load_requests(args.requests)
    engine = Engine.load(args.model)
    amortizer = Session(engine, amortizer=args.amortizer, progress=_say).amortizer()
    steps = []
    for n, req in enumerate(requests, 1):
        req = limited(req, args.max_tokens)
        rows = collect_request(engine, req, amortizer)
        steps.extend({k: _round(v) for k, v in row.items()} for row in rows)
        print(f"  [{n}/{len(requests)}] {req.id}: {len(rows)} steps", file=sys.stderr)
    meta = {
        "model": engine.name,
        "vocab": engine.config.vocab,
        "requests": Path(args.requests).name,
        "max_tokens": args.max_tokens,
        "amortizer": {k: amortizer.meta.get(k) for k in ("lambda", "eps_p99", "eps_max", "seed")},
        "test_ids": amortizer.meta.get("test_ids", []),
        "machine": "this CPU, one BLAS thread",
        "created": time.strftime("%Y-%m-%d"),
    }
    if args.out:
        Path(args.out).write_text(json.dumps({"meta": meta, "steps": steps}) + "\n")
    if args.store:
        from ..measure.store import ResultStore

        with ResultStore(args.store) as store:
            store.put_trace(args.run, steps)
    print(f"{len(steps)} steps of {len(requests)} requests -> {args.out or args.store}")
    return 0


def _cmd_amortizer_fit(args) -> int:
    from ..engine.amortized import default_amortizer_path
    from ..engine.engine import Engine
    from ..engine.fit import fit_workload
    from ..engine.requests import load_requests

    requests = load_requests(args.requests)
    engine = Engine.load(args.model)
    amortizer = fit_workload(
        engine,
        requests,
        args.requests,
        seed=args.seed,
        max_tokens=args.max_tokens,
        progress=lambda n, total, rid: print(f"  [{n}/{total}] {rid}", file=sys.stderr),
    )
    out = amortizer.save(args.out or default_amortizer_path())
    m = amortizer.meta
    print(
        f"{out}: lambda={m['lambda']:g}, {m['train_pairs']} pairs, eps p99={m['eps_p99']:.3f} "
        f"max={m['eps_max']:.3f} (validation, all |V| logits)"
    )
    return 0


def add_engine_commands(sub) -> None:
    """Register ``model``, ``amortizer``, ``traces``, ``decode`` and ``bfcl`` on ``llmqp``."""
    _add_model(sub)
    _add_amortizer(sub)
    _add_traces(sub)
    _add_decode(sub)
    from .bfcl import add_bfcl_commands

    add_bfcl_commands(sub)


def _add_model(sub) -> None:
    m = sub.add_parser("model", help="get and inspect the engine's model")
    msub = m.add_subparsers(dest="model_command", required=True, parser_class=type(m))
    f = msub.add_parser("fetch", help="download and check the default model (idempotent)")
    f.set_defaults(func=_cmd_model_fetch)
    i = msub.add_parser("info", help="the model's shape, vocabulary and source")
    i.add_argument("--model", default=None, help="a Llama-family GGUF (default: SmolLM2-135M)")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=_cmd_model_info)


def _add_amortizer(sub) -> None:
    a = sub.add_parser("amortizer", help="fit the amortized plans' state predictor")
    asub = a.add_subparsers(dest="amortizer_command", required=True, parser_class=type(a))
    af = asub.add_parser("fit", help="ridge fit on exact traces of the workload's training split")
    af.add_argument("--requests", required=True, help="the workload (JSONL)")
    af.add_argument("--out", default=None, help="default: <cache>/amortizer.npz")
    af.add_argument("--seed", type=int, default=0, help="draws the validation requests")
    af.add_argument("--max-tokens", type=int, default=48, help="per training request")
    af.add_argument("--model", default=None)
    af.set_defaults(func=_cmd_amortizer_fit)


def _add_traces(sub) -> None:
    t = sub.add_parser("traces", help="decode traces: every plan measured per step")
    tsub = t.add_subparsers(dest="traces_command", required=True, parser_class=type(t))
    tc = tsub.add_parser("collect", help="measure every plan at every step of a workload")
    tc.add_argument("--requests", required=True, help="the workload (JSONL)")
    tc.add_argument("--out", default=None, help="a JSON trace file (the oracle's --trace)")
    tc.add_argument("--store", default=None, help="also into this SQLite store")
    tc.add_argument("--run", default="collect", help="the trace's name in the store")
    tc.add_argument("--max-tokens", type=int, default=48)
    tc.add_argument("--amortizer", default=None)
    tc.add_argument("--model", default=None)
    tc.set_defaults(func=_cmd_traces_collect)


def _add_decode(sub) -> None:
    d = sub.add_parser(
        "decode",
        help="greedy constrained decoding on the real model, a plan chosen per step",
        description="Plans: auto (the cost model's rule, per step), dense (DenseHead every "
        "step), sparse (SparseHead), forced (ForcedToken where the grammar allows one token, "
        "DenseHead elsewhere), full (FullRecompute: no KV cache), amortized (AmortizedHead: "
        "skip the body when the predicted margin >= --tau, verified later), rerank "
        "(AmortizedRerank: the predicted state shortlists, the exact one scores the "
        "shortlist), lookup (PromptLookup: draft the continuation of the longest n-gram match "
        "in prompt + output, verified in one forward, --draft), router (a bandit picks per "
        "step, --router), oracle (each step's cheapest "
        "plan in hindsight, --trace). Every plan decodes the same tokens unless --lossy.",
    )
    _add_decode_inputs(d)
    _add_decode_plans(d)
    d.add_argument("--store", default=None, help="record each decode's trace in this store")
    d.add_argument("--device", choices=DEVICES, default="cpu")
    d.add_argument(
        "--impl",
        choices=IMPLS,
        default=None,
        help="the body's library (default: numpy on cpu, torch on cuda)",
    )
    d.add_argument(
        "--kernel",
        choices=("q", "blas"),
        default=None,
        help="projections: q, the GGUF's quantized blocks (numpy's default); blas, float32",
    )
    d.add_argument(
        "--executor",
        choices=("numpy", "xla"),
        default="numpy",
        help="xla: score each step through the compiled, expanded StableHLO step ([compiler])",
    )
    d.add_argument("--model", default=None, help="a Llama-family GGUF (default: SmolLM2-135M)")
    d.add_argument("--json", action="store_true", help="one JSON object per request")
    d.add_argument("--quiet", action="store_true", help="no progress lines")
    d.add_argument(
        "--batch",
        type=int,
        default=1,
        help="sequences in flight, sharing each body pass (1-256; same outputs as 1)",
    )
    d.set_defaults(func=_cmd_decode)


def _add_decode_inputs(d) -> None:
    d.add_argument("--prompt", help="the prompt text (tokenized as is unless --chat)")
    d.add_argument("--schema", help="a JSON Schema: a file, or the JSON itself")
    d.add_argument("--regex", help="a regular expression the output must match")
    d.add_argument("--choices", help="comma-separated choices: A,B,C")
    d.add_argument("--lark", help="a Lark grammar file")
    d.add_argument("--requests", help="a JSONL file: id, prompt, schema|regex|choices|lark")
    d.add_argument("--chat", action="store_true", help="wrap prompts in the chat template")
    d.add_argument("--max-tokens", type=int, default=None, help="per request (default 128)")


def _add_decode_plans(d) -> None:
    d.add_argument("--plan", choices=tuple(PLAN_CHOICES), default="auto")
    d.add_argument(
        "--tau", type=float, default=None, help="amortized|router: accept margin (logits)"
    )
    d.add_argument("--lossy", action="store_true", help="trust accepted amortized tokens")
    d.add_argument("--router", choices=ROUTER_CHOICES, default=None, help="with --plan router")
    d.add_argument("--router-state", default=None, help="load (if present) and save the router")
    d.add_argument(
        "--amortizer",
        default=None,
        help="an amortizer file (llmqp amortizer fit; default: the default fit, made on first use)",
    )
    d.add_argument("--trace", default=None, help="per-plan costs for --plan oracle")
    d.add_argument(
        "--draft",
        type=int,
        default=None,
        help="--plan lookup: draft length (1-16; default: the calibrated rule per step)",
    )
    d.add_argument(
        "--recalibrate",
        choices=RECALIBRATE_PRESETS,
        default=None,
        help="--plan auto: start K* from this preset, recalibrate it from measured head times",
    )
