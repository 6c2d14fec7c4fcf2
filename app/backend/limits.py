"""Bounds on every sweep parameter, so no request can exhaust memory or run for ever.

Parsing turns a JSON object into a validated sweep (see :mod:`app.backend.sweeps`); every error
is a ``ValueError`` naming the parameter, the value and the allowed range or limit, which the
service answers with a 400.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..model import DTYPE_BYTES
from ..model.validate import check_choice, check_int

__all__ = ["Limits", "parse_fields", "int_list", "head_bytes", "model_bytes"]

GiB = 1 << 30


@dataclass(frozen=True)
class Limits:
    """Per-request bounds.

    ``max_head_bytes`` bounds the LM-head weights ``d·vocab·bytes``; ``max_model_bytes`` the
    transformer's weights plus its KV cache, ``layers·(12·d² + 2·batch·(context+1)·d)·bytes``.
    ``max_points`` bounds the K values (or contexts) of one sweep; ``max_body_bytes`` a request
    body.
    """

    max_head_bytes: int = 2 * GiB
    max_model_bytes: int = 4 * GiB
    max_points: int = 64
    max_body_bytes: int = 64 << 10
    d: tuple = (1, 16_384)
    vocab: tuple = (2, 262_144)
    batch: tuple = (1, 64)
    layers: tuple = (1, 64)
    context: tuple = (0, 131_072)
    rerank_r: tuple = (1, 1024)
    warmup_steps: tuple = (0, 1024)
    seed: tuple = (0, 2**31 - 1)

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


def parse_fields(body, required: dict, optional: dict) -> dict:
    """Check that ``body`` is an object with every ``required`` key and no unknown key.

    ``required`` / ``optional`` map names to defaults (``required`` values are ignored).
    Returns the merged dict (defaults filled in); values are not yet validated.
    """
    if not isinstance(body, dict):
        raise ValueError(f"The request body must be a JSON object. Got {type(body).__name__}.")
    allowed = {**required, **optional}
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise ValueError(f"Unknown parameter(s) {unknown}; allowed: {', '.join(allowed)}.")
    missing = [n for n in required if n not in body]
    if missing:
        raise ValueError(f"Missing required parameter(s): {', '.join(missing)}.")
    return {**optional, **body}


def int_list(name: str, values, lo: int, hi: int, max_len: int) -> tuple:
    """A non-empty list of integers in ``[lo, hi]`` -> sorted tuple without duplicates."""
    if not isinstance(values, (list, tuple)) or not values:
        raise ValueError(
            f"The '{name}' parameter must be a non-empty list of integers. Got {values!r} instead."
        )
    if len(values) > max_len:
        raise ValueError(
            f"The '{name}' parameter may hold at most {max_len} values (limit max_points). "
            f"Got {len(values)}."
        )
    return tuple(sorted({check_int(name, v, lo, hi) for v in values}))


def head_bytes(d: int, vocab: int, dtype: str, limits: Limits) -> int:
    """Bytes of the head weights; ``ValueError`` naming the limit when above it."""
    size = DTYPE_BYTES[check_choice("dtype", dtype, tuple(DTYPE_BYTES))]
    need = d * vocab * size
    if need > limits.max_head_bytes:
        raise ValueError(
            f"The head weights need d·vocab·bytes = {d}·{vocab}·{size} = {need} bytes; the limit "
            f"is {limits.max_head_bytes} bytes (max_head_bytes). Use a smaller d, vocab or dtype."
        )
    return need


def model_bytes(d, layers, batch, context_max, dtype, limits: Limits) -> int:
    """Bytes of the transformer weights and KV cache; ``ValueError`` naming the limit."""
    size = DTYPE_BYTES[check_choice("dtype", dtype, tuple(DTYPE_BYTES))]
    need = layers * (12 * d * d + 2 * batch * (context_max + 1) * d) * size
    if need > limits.max_model_bytes:
        raise ValueError(
            f"The transformer needs layers·(12·d² + 2·batch·(context+1)·d)·bytes = {need} bytes "
            f"at d={d}, layers={layers}, batch={batch}, context={context_max}; the limit is "
            f"{limits.max_model_bytes} bytes (max_model_bytes). Use fewer layers or a shorter "
            "context."
        )
    return need
