"""``llmqp model fetch|info`` and ``llmqp decode``: the engine's commands.

Without the model every command says in one line how to get it. Bad input — an unknown file, a
schema or regex llguidance rejects, a prompt longer than the context, K = 0 at a step — exits
with status 2 and one line; every request is checked before the first one decodes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .engine import DEVICES, IMPLS
from .plans import PLAN_CHOICES

__all__ = ["add_engine_commands"]


def _cmd_model_fetch(args) -> int:
    from .fetch import fetch_model

    path = fetch_model(progress=lambda line: print(line, file=sys.stderr))
    print(path)
    return 0


def _cmd_model_info(args) -> int:
    from .engine import Engine

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
    from .requests import DecodeRequest, load_requests

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


def _cmd_decode(args) -> int:
    from .engine import Engine

    requests = _requests(args)
    engine = Engine.load(args.model, device=args.device, impl=args.impl)
    for req in requests:  # check every request before the first decodes
        engine.prompt_ids(req)
        engine.constraint(req)
    show = len(requests) > 1 and not args.quiet
    executor = _executor(args, engine)
    for n, req in enumerate(requests, 1):
        result = engine.decode(req, plan=args.plan, executor=executor)
        print(json.dumps(result.to_json()) if args.json else result.text, flush=True)
        if show:
            print(
                f"  [{n}/{len(requests)}] {req.id}: {len(result.tokens)} tokens, "
                f"{result.tokens_per_s:.1f} tokens/s, stop={result.stop}",
                file=sys.stderr,
                flush=True,
            )
    return 0


def add_engine_commands(sub) -> None:
    """Register ``model`` and ``decode`` on the ``llmqp`` subparsers."""
    m = sub.add_parser("model", help="get and inspect the engine's model")
    msub = m.add_subparsers(dest="model_command", required=True, parser_class=type(m))
    f = msub.add_parser("fetch", help="download and check the default model (idempotent)")
    f.set_defaults(func=_cmd_model_fetch)
    i = msub.add_parser("info", help="the model's shape, vocabulary and source")
    i.add_argument("--model", default=None, help="a Llama-family GGUF (default: SmolLM2-135M)")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=_cmd_model_info)

    d = sub.add_parser(
        "decode",
        help="greedy constrained decoding on the real model, a plan chosen per step",
        description="Plans: auto (the cost model's rule, per step), dense (DenseHead every "
        "step), sparse (SparseHead), forced (ForcedToken where the grammar allows one token, "
        "DenseHead elsewhere), full (FullRecompute: no KV cache). Every plan decodes the "
        "same tokens.",
    )
    d.add_argument("--prompt", help="the prompt text (tokenized as is unless --chat)")
    d.add_argument("--schema", help="a JSON Schema: a file, or the JSON itself")
    d.add_argument("--regex", help="a regular expression the output must match")
    d.add_argument("--choices", help="comma-separated choices: A,B,C")
    d.add_argument("--lark", help="a Lark grammar file")
    d.add_argument("--requests", help="a JSONL file: id, prompt, schema|regex|choices|lark")
    d.add_argument("--chat", action="store_true", help="wrap prompts in the chat template")
    d.add_argument("--max-tokens", type=int, default=None, help="per request (default 128)")
    d.add_argument("--plan", choices=tuple(PLAN_CHOICES), default="auto")
    d.add_argument("--device", choices=DEVICES, default="cpu")
    d.add_argument(
        "--impl",
        choices=IMPLS,
        default=None,
        help="the body's library (default: numpy on cpu, torch on cuda)",
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
    d.set_defaults(func=_cmd_decode)
