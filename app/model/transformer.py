"""Costs of producing the decoder state: an exact decode step, a prefill, an amortized update.

A decode step at context length ``t`` reads every weight once and the KV cache of ``t`` positions,
so its cost grows with the decode position. Each layer is priced as one roofline term plus the
launches it takes (attention and MLP kernels). For a cache level, the working set of a step is
all of its layers' weights and KV cache: they are reused only at the next step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .costs import Cost, kernel_cost
from .hardware import DTYPE_BYTES, DTYPES, get_hardware
from .validate import check_array, check_choice, check_int

__all__ = [
    "TransformerShape",
    "SHAPES",
    "decode_step_cost",
    "prefill_cost",
    "amortized_update_cost",
]


@dataclass(frozen=True)
class TransformerShape:
    """Decoder shape. ``ffn`` defaults to ``4·d``; ``kv_dim`` to ``d`` (no grouped-query
    attention); ``mlp_matrices`` is 2 for a plain MLP and 3 for a gated (SwiGLU) one."""

    d: int
    layers: int
    vocab: int
    ffn: int | None = None
    kv_dim: int | None = None
    mlp_matrices: int = 2

    def __post_init__(self):
        check_int("d", self.d, 1, 1 << 20)
        check_int("layers", self.layers, 1, 1024)
        check_int("vocab", self.vocab, 1, 1 << 24)
        check_int("ffn", self.ffn if self.ffn is not None else 1, 1, None)
        check_int("kv_dim", self.kv_dim if self.kv_dim is not None else 1, 1, self.d)
        check_int("mlp_matrices", self.mlp_matrices, 2, 3)

    @property
    def layer_params(self) -> int:
        """Weights per layer: q and out projections, k and v projections, MLP matrices."""
        ffn = self.ffn or 4 * self.d
        kv = self.kv_dim or self.d
        return 2 * self.d * self.d + 2 * self.d * kv + self.mlp_matrices * self.d * ffn


#: Shapes named in the paper's discussion. Llama-3-8B: d 4096, 32 layers, 128,256 tokens,
#: SwiGLU MLP of 14,336, 8 KV heads of 128 (kv_dim 1024), per its public model card.
#: SmolLM2-135M (the model the engine decodes): d 576, 30 layers, 49,152 tokens, SwiGLU MLP of
#: 1,536, 3 KV heads of 64 — the engine's bridge (app/measure/llama.py) reads the same from
#: the GGUF, and a test holds the two equal.
SHAPES = {
    "llama-3-8b": TransformerShape(4096, 32, 128_256, ffn=14_336, kv_dim=1024, mlp_matrices=3),
    "gpt2-small": TransformerShape(768, 12, 50_257),
    "smollm2-135m": TransformerShape(576, 30, 49_152, ffn=1536, kv_dim=192, mlp_matrices=3),
}


def _setup(shape, context, batch, dtype, hardware):
    if not isinstance(shape, TransformerShape):
        raise ValueError(f"The 'shape' parameter must be a TransformerShape. Got {shape!r}.")
    context = check_array("context", context, 0, 1 << 24)
    batch = check_int("batch", batch, 1, 4096)
    dtype = check_choice("dtype", dtype, DTYPES)
    return context, batch, dtype, DTYPE_BYTES[dtype], get_hardware(hardware)


def decode_step_cost(shape, context, batch=1, dtype="bfloat16", hardware="h100") -> Cost:
    """One token through every layer with a KV cache of ``context`` positions (array allowed)."""
    t, batch, dtype, size, hw = _setup(shape, context, batch, dtype, hardware)
    kv = shape.kv_dim or shape.d
    params = shape.layer_params
    flops = 2.0 * params * batch + 4.0 * t * shape.d * batch  # projections + QKᵀ and AV
    stream = params * size + 2.0 * t * kv * size * batch + 2.0 * kv * size * batch
    layer = kernel_cost(flops, stream, hw, dtype, working_set=shape.layers * stream)
    return layer.scale(shape.layers) + _extra_launches(hw, shape.layers, t)


def prefill_cost(shape, tokens, context=None, batch=1, dtype="bfloat16", hardware="h100") -> Cost:
    """Recompute ``tokens`` positions that attend to ``context`` earlier ones (default: none).

    Used for a cold KV cache (positions missing from the cache) and for full recomputation
    without a cache. Causal attention over the new block costs ``~2·n·(2·ctx + n)·d`` flops.
    """
    n, batch, dtype, size, hw = _setup(shape, tokens, batch, dtype, hardware)
    ctx = np.zeros_like(n) if context is None else check_array("context", context, 0, 1 << 24)
    kv = shape.kv_dim or shape.d
    flops = 2.0 * shape.layer_params * n * batch + 2.0 * n * (2.0 * ctx + n) * shape.d * batch
    stream = shape.layer_params * size + 2.0 * (ctx + n) * kv * size * batch
    layer = kernel_cost(flops, stream, hw, dtype, working_set=shape.layers * stream)
    # Nothing to recompute costs nothing: no launches either.
    return layer.scale(shape.layers * (n > 0)) + _extra_launches(hw, shape.layers, n).scale(n > 0)


def amortized_update_cost(shape, batch=1, dtype="bfloat16", hardware="h100") -> Cost:
    """The amortized state update ``h_t = h_stable + Δh_t``: one ``d×d`` map applied to the
    newest token's embedding, plus the add (two launches, no KV cache read)."""
    _, batch, dtype, size, hw = _setup(shape, 0, batch, dtype, hardware)
    d = shape.d
    update = kernel_cost(
        2.0 * d * d * batch, float(d * d * size + 2 * batch * d * size), hw, dtype,
        launches=hw.launch("update"),
    )  # fmt: skip
    add = kernel_cost(float(d * batch), float(3 * batch * d * size), hw, dtype,
                      launches=hw.launch("add"))  # fmt: skip
    return update + add


def _extra_launches(hw, layers, like) -> Cost:
    """The launches of a layer beyond the one its roofline term already counts, and those of
    the step outside its layers (``hw.launch("step")``, none in the model's own count)."""
    per_layer = hw.launch("layer")
    n = (per_layer - 1) * layers + hw.launch("step") + 0.0 * np.asarray(like, dtype=np.float64)
    zero = 0.0 * n
    return Cost(zero, zero, n * hw.overhead, zero, zero, n * hw.overhead, n)
