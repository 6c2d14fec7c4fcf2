"""The engine's Llama body as the backend times it, and its bridge to the cost model's shape.

The backend measures and calibrates the body that decodes: :class:`LlamaBody` runs the engine's
body — :class:`app.engine.forward_numpy.NumpyLlama` for the numpy backend,
:class:`app.engine.forward_torch.TorchLlama` for the torch one (the same API) — on the real
SmolLM2 weights, or random weights at a requested Llama shape, behind the three calls the
amortized sweep times. Every call into the
engine's body goes through :func:`_forward` and :func:`_cache`, so a change of the body's
signature is a change here only.

The bridge: :func:`llama_config` is the Llama shape the backend builds for a requested
``(d, layers)``, :func:`transformer_shape` turns any :class:`~app.engine.weights.LlamaConfig`
into the cost model's :class:`~app.model.TransformerShape`, and :func:`scenario_fields` into
:class:`~app.model.Scenario` fields, so the cost model prices the real model (``app/model``
never imports the engine, so the bridge lives on this side).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..engine.weights import LlamaConfig, LlamaWeights, config_from_fields, random_weights
from ..model import TransformerShape

__all__ = [
    "HEAD_DIM",
    "BODY_VOCAB",
    "LlamaBody",
    "LlamaModels",
    "llama_config",
    "transformer_shape",
    "body_shape",
    "scenario_fields",
    "served_config",
    "model_weights",
]

#: Width of one attention head of the shapes the backend builds (SmolLM2's and Llama's).
HEAD_DIM = 64
#: Rows of a random body's embedding: the body reads one row a step, so its size costs nothing
#: (the sweeps time the LM head on their own |V|-row matrix).
BODY_VOCAB = 256


def llama_config(d: int, layers: int, vocab: int = BODY_VOCAB) -> LlamaConfig:
    """The Llama shape built for a requested width and depth.

    Heads of 64 (one head of ``d`` when 64 does not divide it), a third of them key/value heads
    where three divide the head count (else as many as query heads), a SwiGLU MLP of ``8/3·d``
    rounded up to a multiple of 64. At d 576 and 30 layers this is SmolLM2-135M's shape
    (9 heads, 3 key/value heads, MLP 1,536).
    """
    head_dim = HEAD_DIM if d % HEAD_DIM == 0 else d
    heads = d // head_dim
    kv_heads = heads // 3 if heads % 3 == 0 else heads
    d_ff = -(-8 * d // 3 // 64) * 64
    return LlamaConfig(
        n_layers=layers, d=d, d_ff=d_ff, n_heads=heads, n_kv_heads=kv_heads,
        head_dim=head_dim, vocab=vocab,
    )  # fmt: skip


def transformer_shape(cfg: LlamaConfig) -> TransformerShape:
    """The cost model's shape of a Llama config: SwiGLU MLP (3 matrices), grouped-query
    key/value width ``n_kv_heads·head_dim``."""
    if cfg.n_heads * cfg.head_dim != cfg.d:
        raise ValueError(
            f"The 'cfg' parameter has n_heads·head_dim = {cfg.n_heads * cfg.head_dim} != d = "
            f"{cfg.d}; the cost model prices query projections of d×d only."
        )
    return TransformerShape(
        cfg.d, cfg.n_layers, cfg.vocab, ffn=cfg.d_ff, kv_dim=cfg.n_kv_heads * cfg.head_dim,
        mlp_matrices=3,
    )  # fmt: skip


@functools.lru_cache(maxsize=256)
def body_shape(d: int, layers: int, vocab: int) -> TransformerShape:
    """The cost model's shape of the body the backend times at ``(d, layers)`` with a head of
    ``vocab`` rows (:func:`llama_config` through :func:`transformer_shape`)."""
    return transformer_shape(llama_config(d, layers, vocab))


def scenario_fields(cfg: LlamaConfig) -> dict:
    """:class:`~app.model.Scenario` fields of the model ``cfg`` describes (head and body)."""
    s = transformer_shape(cfg)
    return {
        "d": s.d,
        "vocab": s.vocab,
        "layers": s.layers,
        "ffn_mult": s.ffn / s.d,
        "kv_share": s.kv_dim / s.d,
        "mlp_matrices": s.mlp_matrices,
    }


@functools.cache
def served_config(path: str | None = None) -> tuple[LlamaConfig | None, str]:
    """``(config, where)`` of the model the engine serves (the fetched default, or ``path``),
    read from the GGUF's metadata only (from the engine's derived cache when it has one);
    ``(None, reason)`` when the file is not there or not readable. Read once per process."""
    from ..engine.fetch import ModelMissingError, resolve_model
    from ..engine.weights import _cache_key

    try:
        p = resolve_model(path)
    except ModelMissingError as exc:
        return None, str(exc)
    try:
        from ..engine.fetch import cache_dir

        meta = cache_dir() / "f32" / f"{p.stem}-{_cache_key(p)}" / "fields.json"
        if meta.is_file():
            fields = json.loads(meta.read_text(encoding="utf-8"))
            names = fields.pop("__tensors__")
        else:
            fields, names = _gguf_fields(p)
        return config_from_fields(fields, names, p.name), p.name
    except (OSError, ValueError) as exc:
        return None, f"{p.name}: {exc}"


def _gguf_fields(path: Path) -> tuple[dict, list]:
    """The GGUF's metadata (no tensor read) and tensor names."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    fields = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("tokenizer.")}
    return fields, [t.name for t in reader.tensors]


@functools.cache
def model_weights(path: str | None = None) -> LlamaWeights:
    """The served model's float32 weights (memory-mapped from the engine's cache), once."""
    from ..engine.fetch import resolve_model
    from ..engine.weights import load_gguf

    return load_gguf(resolve_model(path))[1]


def _forward(model, ids, cache, start: int) -> np.ndarray:
    """The one call into the engine's body: ``ids`` (T,) at positions ``start …`` over
    ``cache`` (anything past ``start`` is dropped first); returns their states (T, d)."""
    return model.forward(ids, cache, start)


def _cache(model, cfg: LlamaConfig, context: int, rng: np.random.Generator, native):
    """A KV cache holding ``context`` positions of random keys and values (a prefill through
    the body would cost a forward per position, for the same timing), room for one more.
    ``native`` turns a numpy array into the body's own (a torch tensor for the torch body)."""
    cache = model.new_cache(context + 1)
    shape = (cfg.n_layers, cfg.n_kv_heads, context, cfg.head_dim)
    cache.k[:, :, :context] = native(rng.standard_normal(shape, dtype=np.float32))
    cache.v[:, :, :context] = native(rng.standard_normal(shape, dtype=np.float32))
    cache.length = context
    return cache


def _numpy_body(weights: LlamaWeights, dtype: str):
    from ..engine.forward_numpy import NumpyLlama

    return NumpyLlama(weights)


def _embedding(model):
    """The (rows, d) embedding a body reads token rows from: the numpy body reads its weights'
    array, the torch body its own copy on the device."""
    return model.tok_embd if hasattr(model, "tok_embd") else model.w.tok_embd


def _same(x):
    return x


class Models(NamedTuple):
    """The engine's body, its last layer alone (fed through ``row``, the one-row embedding it
    reads), and their configs."""

    body: object
    last: object
    row: object
    cfg: LlamaConfig
    one: LlamaConfig


class LlamaModels:
    """The engine's body built once per shape and kept while a sweep runs (every context's
    :class:`LlamaBody` shares it; only the KV caches differ); :meth:`clear` drops it.

    ``build(weights, dtype)`` makes the body: the engine's numpy body by default; the torch
    backend passes one that makes :class:`app.engine.forward_torch.TorchLlama` (same API:
    ``new_cache``, ``forward(ids, cache, start)``)."""

    def __init__(self, build=_numpy_body):
        self._build = build
        self._key = self._models = None

    def get(
        self, d: int, layers: int, seed: int, weights: LlamaWeights | None = None, dtype="float32"
    ):
        """The :class:`Models` for ``weights``, else for random
        weights at :func:`llama_config` ``(d, layers)`` drawn from ``seed``."""
        key = (d, layers, seed, id(weights), dtype)
        if self._key != key:
            self.clear()
            if weights is None:
                rng = np.random.Generator(np.random.PCG64(seed))
                weights = random_weights(llama_config(d, layers), rng)
            cfg = weights.config
            # The last layer alone, fed a state through a one-row embedding that holds it.
            row = np.zeros((1, cfg.d), np.float32)
            one = dataclasses.replace(cfg, n_layers=1, vocab=1)
            last = self._build(
                LlamaWeights(one, row, (weights.layers[-1],), weights.norm, row), dtype
            )
            body = self._build(weights, dtype)
            self._key = key
            self._models = Models(body, last, _embedding(last), cfg, one)
        return self._models

    def clear(self) -> None:
        self._key = self._models = None


class LlamaBody:
    """The engine's Llama body with ``batch`` sequences of ``context`` cached positions each.

    ``decode()`` runs one token of every sequence through every layer at position
    ``context`` (the engine decodes one sequence at a time, so a batch is that many
    forwards); ``amortized()`` is ``h_stable + e @ U`` (the amortized state update: a d×d map
    plus the add); ``last_layer(h)`` runs only the last layer on states ``h`` (B, d). All
    return final-normed states (B, d) in the backend's arrays (``native`` turns the body's
    float32 numpy output into them: identity for numpy, a device tensor for torch); every call
    does the same work.
    """

    def __init__(self, models: Models, batch: int, context: int, seed: int, native=_same):
        self.model, self.last, self._row = models.body, models.last, models.row
        self._native = native
        cfg, one = models.cfg, models.one
        rng = np.random.Generator(np.random.PCG64(seed))
        self.d, self.context, self.batch = cfg.d, context, batch
        self.caches = [_cache(self.model, cfg, context, rng, native) for _ in range(batch)]
        self.last_caches = [_cache(self.last, one, context, rng, native) for _ in range(batch)]
        self.ids = rng.integers(0, cfg.vocab, size=(batch, 1))
        self.h_stable = native(rng.standard_normal((batch, cfg.d), dtype=np.float32))
        self.e = native(rng.standard_normal((batch, cfg.d), dtype=np.float32))
        U = rng.standard_normal((cfg.d, cfg.d), dtype=np.float32) * np.float32(0.1 / np.sqrt(cfg.d))
        self.U = native(U)

    def decode(self):
        rows = [_forward(self.model, ids, c, self.context) for ids, c in zip(self.ids, self.caches)]
        return self._native(np.concatenate(rows))

    def amortized(self):
        return self.h_stable + self.e @ self.U

    def last_layer(self, h):
        out = []
        for i, cache in enumerate(self.last_caches):
            self._row[0] = h[i]
            out.append(_forward(self.last, [0], cache, self.context))
        return self._native(np.concatenate(out))
