"""``llmqp lower``: EXPLAIN for the compiled form of the decode step.

``--emit stablehlo`` prints the expanded module, ``plans`` the physical plans with their cost
annotations (the module's ``llmqp.plans`` attribute), ``summary`` the shape, the routing rule
and one line per branch. ``--out FILE`` writes the expanded module's text, ``--export FILE`` the
serialized ``jax.export`` artifact (``jax.export.deserialize`` reads it back and runs it).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..compiler.catalog import ARMS

__all__ = ["EMITS", "add_arguments", "run_lower", "shape_of"]

EMITS = ("summary", "plans", "stablehlo")


def add_arguments(p) -> None:
    p.add_argument("--d", type=int, help="head width (with --vocab; default: the default model)")
    p.add_argument("--vocab", type=int, help="vocabulary size (with --d)")
    p.add_argument("--model", default=None, help="a Llama-family GGUF whose head shape to use")
    p.add_argument("--hardware", default="cpu", help="cost-model profile folded into the rule")
    p.add_argument("--context", type=int, default=None, help="context length (LinUCB feature)")
    p.add_argument("--emit", default="summary", help=f"one of {', '.join(EMITS)}")
    p.add_argument("--out", default=None, help="write the expanded module (StableHLO text)")
    p.add_argument("--export", default=None, help="write the serialized jax.export artifact")


def shape_of(args) -> tuple[int, int, int]:
    """(d, vocab, context) from ``--d/--vocab`` or the model's metadata."""
    if (args.d is None) != (args.vocab is None):
        raise ValueError("--d and --vocab go together (or give neither)")
    if args.d is not None and args.model is not None:
        raise ValueError("give --d/--vocab or --model, not both")
    if args.d is not None:
        return args.d, args.vocab, args.context or 2048
    from ..engine.fetch import resolve_model
    from ..engine.weights import load_gguf

    _, weights = load_gguf(resolve_model(args.model))
    cfg = weights.config
    return cfg.d, cfg.vocab, args.context or cfg.context


def _summary(art) -> str:
    cat = art.catalog
    lines = [
        f"DecodeStep(d={cat.d}, vocab={cat.vocab:,}) on {cat.hardware} ({cat.dtype})",
        f"module: one stablehlo.case with {art.cases[0]} branches (cases: {art.cases})",
        f"rule: K = 1 -> ForcedToken; K <= K* = {cat.k_star:,} -> the smallest SparseHead bucket "
        f"holding K ({', '.join(f'{b:,}' for b in cat.buckets) or 'none'}); else DenseHead",
        "linucb: argmin_a theta_a.x - alpha*sqrt(x.A_a^-1.x), x = [1, K/|V|, K==1, last margin, "
        "position/context]; arms " + ", ".join(ARMS),
        "branches:",
    ]
    for p in cat.plans:
        lines.append(
            f"  {p.index}  {p.name:<22} {p.seconds * 1e6:10.2f} us  {p.bytes / 1e6:9.3f} MB  "
            f"{p.regime}"
        )
    return "\n".join(lines)


def run_lower(args) -> int:
    """The command's body: validate, build, print, write."""
    if args.emit not in EMITS:
        raise ValueError(f"--emit must be one of {', '.join(EMITS)}, got {args.emit!r}")
    d, vocab, context = shape_of(args)
    try:
        from ..compiler.artifact import build
    except ImportError as exc:  # the [compiler] extra is optional
        raise ValueError(f"llmqp lower needs the [compiler] extra (jax, jaxlib): {exc}") from None
    from ..compiler.catalog import build_catalog

    art = build(build_catalog(d, vocab, args.hardware, context))
    if args.emit == "stablehlo":
        print(art.text)
    elif args.emit == "plans":
        print(json.dumps([p.to_dict() for p in art.catalog.plans], indent=2))
    else:
        print(_summary(art))
    if args.out:
        Path(args.out).write_text(art.text, encoding="utf-8")
    if args.export:
        Path(args.export).write_bytes(art.serialize())
    return 0
