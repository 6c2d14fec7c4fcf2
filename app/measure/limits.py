"""Bounds on every sweep parameter, so no request can exhaust memory or run for ever.

Parsing turns a JSON object into a validated sweep (see :mod:`app.measure.sweeps`); every error
is a ``ValueError`` naming the parameter, the value and the allowed range or limit, which the
service answers with a 400.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..model import DTYPE_BYTES
from ..model.validate import check_choice, check_int
from .llama import body_shape

__all__ = [
    "Limits",
    "parse_fields",
    "int_list",
    "head_bytes",
    "model_bytes",
    "head_sweep_bytes",
    "amortized_sweep_bytes",
    "check_budget",
]

GiB = 1 << 30


@dataclass(frozen=True)
class Limits:
    """Per-request bounds.

    ``max_head_bytes`` bounds the LM-head weights ``d·vocab·bytes`` (a head over the memory
    budget below is measured in row blocks); ``max_model_bytes`` the transformer's weights plus
    its KV cache, ``layers·(2·weights + 2·batch·(context+1)·kv_dim)·bytes`` (the engine's Llama
    body keeps fused copies of its projections).
    ``max_points`` bounds the K values (or contexts) of one sweep; ``max_body_bytes`` a request
    body.

    ``max_request_bytes`` is the memory budget of one request: every byte a sweep would
    allocate (weights, KV caches, masks, logits, gather buffers and the float32 transients of
    generating them: :func:`head_sweep_bytes`, :func:`amortized_sweep_bytes`) is counted before
    anything is allocated. The HTTP bounds (connections, deadlines, header size, JSON nesting
    and number length) and the decoding bounds (tokens, prompt, grammar) sit here too, so
    ``GET /v1/device`` lists them all. ``decode_deadline_s`` is the wall-clock time a running
    decode may hold the device (``full_deadline_s`` for the experiment-only ``full`` plan): it
    then ends with the tokens so far, and a request priced above it is refused before it runs
    (:mod:`app.serving.budget`).
    """

    max_head_bytes: int = 2 * GiB
    max_model_bytes: int = 4 * GiB
    max_request_bytes: int = 1 * GiB
    max_points: int = 64
    max_body_bytes: int = 64 << 10
    max_header_bytes: int = 16 << 10
    max_connections: int = 256
    header_timeout_s: float = 10.0
    body_timeout_s: float = 10.0
    max_json_depth: int = 64
    max_number_chars: int = 40
    max_tokens: int = 256
    max_prompt_chars: int = 16_384
    max_prompt_tokens: int = 2048
    max_grammar_bytes: int = 16_384
    max_choices: int = 256
    max_queue_wait_s: float = 120.0
    decode_deadline_s: float = 60.0
    full_deadline_s: float = 10.0
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


def _layer_bytes(d, layers, batch, context, size) -> int:
    """One layer of the engine's Llama body (:func:`app.measure.llama.body_shape`): its
    weights twice (the body keeps fused copies of the QKV and gate/up projections) and the
    key/value cache of ``batch`` sequences of ``context + 1`` positions."""
    shape = body_shape(d, layers, 1)
    return 2 * shape.layer_params * size + 2 * batch * (context + 1) * shape.kv_dim * size


def model_bytes(d, layers, batch, context_max, dtype, limits: Limits) -> int:
    """Bytes of the transformer weights and KV cache; ``ValueError`` naming the limit."""
    size = DTYPE_BYTES[check_choice("dtype", dtype, tuple(DTYPE_BYTES))]
    need = layers * _layer_bytes(d, layers, batch, context_max, size)
    if need > limits.max_model_bytes:
        raise ValueError(
            f"The transformer needs layers·(2·weights + 2·batch·(context+1)·kv_dim)·bytes = "
            f"{need} bytes "
            f"at d={d}, layers={layers}, batch={batch}, context={context_max}; the limit is "
            f"{limits.max_model_bytes} bytes (max_model_bytes). Use fewer layers or a shorter "
            "context."
        )
    return need


#: The numpy sparse head's gather buffer (``kernels_numpy.CHUNK_BYTES``) with room to spare.
_GATHER_BYTES = 2 << 20
#: Timing samples, small temporaries and numpy's own bookkeeping.
_SLACK_BYTES = 1 << 20


def _body_bytes(d, layers, batch, context, size) -> int:
    """The engine's Llama body, built once per sweep: its weights with the fused copies of the
    QKV and gate/up projections it keeps, the last layer's fused copies again (the rerank runs
    it alone), two bodies' KV caches of ``layers + 1`` layers (the previous context's are still
    referenced while the next are built), and the amortized update's ``d×d`` map and states."""
    s = body_shape(d, layers, 1)
    fused = d * (d + 2 * s.kv_dim) + 2 * s.ffn * d
    weights = layers * (s.layer_params + fused) + fused
    caches = 2 * (layers + 1) * batch * 2 * (context + 1) * s.kv_dim
    return (weights + caches + d * d + 3 * batch * d) * size


def head_sweep_bytes(d, vocab, batch, dtype, k_max) -> int:
    """Bytes a head sweep allocates at its peak.

    ``W`` (|V|·d, generated in float32, then cast), the mask (B·|V| bools), the dense head's
    two logit buffers (2·B·|V|), the legal ids (B·K int64 plus numpy's |V|-long permutation
    when it samples without replacement), the scores (B·K) and the gather buffer. Masks and ids
    count twice: one point's are still referenced while the next point's are built.
    """
    size = DTYPE_BYTES[dtype]
    weights = vocab * d * (4 + (size if size != 4 else 0))
    per_batch = batch * (2 * vocab * (1 + size) + 2 * k_max * (8 + size) + d * 4)
    gather = max(_GATHER_BYTES, 16 * batch * d * size)
    return weights + per_batch + 2 * vocab * 8 + gather + _SLACK_BYTES


def amortized_sweep_bytes(d, layers, vocab, batch, dtype, k, context_max, rerank_r) -> int:
    """Bytes an amortized sweep allocates at its peak: the head of :func:`head_sweep_bytes`
    and the body of :func:`_body_bytes` at the longest context, plus the float32 transients of
    generating the largest tensor (a KV cache's fill, or an MLP matrix) and the attention
    scores."""
    size = DTYPE_BYTES[dtype]
    body = _body_bytes(d, layers, batch, context_max, size)
    shape = body_shape(d, layers, 1)
    largest = max(layers * batch * (context_max + 1) * shape.kv_dim, d * shape.ffn) * 4
    scores = batch * (context_max + 1) * max(1, d // 64) * 4 * 2
    head = head_sweep_bytes(d, vocab, batch, dtype, max(k, rerank_r))
    return head + body + 2 * largest + scores + 16 * batch * d * 4


def check_budget(need: int, what: str, limits: Limits) -> int:
    """``need`` if it fits ``limits.max_request_bytes``; else a ``ValueError`` naming it."""
    if need > limits.max_request_bytes:
        raise ValueError(
            f"This {what} would allocate about {need} bytes ({need / GiB:.2f} GiB); the memory "
            f"budget of one request is {limits.max_request_bytes} bytes (max_request_bytes). "
            "Use smaller shapes, fewer layers or a shorter context."
        )
    return need
