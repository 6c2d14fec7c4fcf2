"""Llama-family weights as float32 numpy arrays: read from a GGUF file, or random at any shape.

Layout (``y = x @ W.T``, ``W`` is (out, in)). ``wq``/``wk`` keep GGUF's row order, in which RoPE
rotates *adjacent* pairs ``(x[2i], x[2i+1])``; ``output`` is ``tok_embd`` itself when tied.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["LlamaConfig", "LayerWeights", "LlamaWeights", "read_gguf", "random_weights"]

LLAMA_ARCHS = ("llama",)


@dataclass(frozen=True)
class LlamaConfig:
    n_layers: int
    d: int
    d_ff: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    vocab: int
    rope_base: float = 10000.0
    norm_eps: float = 1e-5
    context: int = 2048
    tied: bool = True

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class LayerWeights:
    attn_norm: np.ndarray  # (d,)
    wq: np.ndarray  # (n_heads * head_dim, d)
    wk: np.ndarray  # (n_kv_heads * head_dim, d)
    wv: np.ndarray  # (n_kv_heads * head_dim, d)
    wo: np.ndarray  # (d, n_heads * head_dim)
    ffn_norm: np.ndarray  # (d,)
    w_gate: np.ndarray  # (d_ff, d)
    w_up: np.ndarray  # (d_ff, d)
    w_down: np.ndarray  # (d, d_ff)


@dataclass(frozen=True)
class LlamaWeights:
    config: LlamaConfig
    tok_embd: np.ndarray  # (V, d)
    layers: tuple[LayerWeights, ...]
    norm: np.ndarray  # (d,)
    output: np.ndarray  # (V, d); the same array as tok_embd when tied

    @property
    def nbytes(self) -> int:
        arrays = [self.tok_embd, self.norm] + [a for lw in self.layers for a in lw.__dict__.values()]
        if not self.config.tied:
            arrays.append(self.output)
        return int(sum(a.nbytes for a in arrays))


def _field(reader, key: str, default=None):
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def _config(reader, path: Path) -> LlamaConfig:
    arch = _field(reader, "general.architecture")
    if arch not in LLAMA_ARCHS:
        raise ValueError(f"--model {path.name}: architecture {arch!r} is not Llama-family")
    p = f"{arch}."
    d, n_heads = int(_field(reader, p + "embedding_length")), int(_field(reader, p + "attention.head_count"))
    names = {t.name for t in reader.tensors}
    vocab = _field(reader, p + "vocab_size") or len(_field(reader, "tokenizer.ggml.tokens", []))
    return LlamaConfig(
        n_layers=int(_field(reader, p + "block_count")),
        d=d,
        d_ff=int(_field(reader, p + "feed_forward_length")),
        n_heads=n_heads,
        n_kv_heads=int(_field(reader, p + "attention.head_count_kv", n_heads)),
        head_dim=int(_field(reader, p + "rope.dimension_count", d // n_heads)),
        vocab=int(vocab),
        rope_base=float(_field(reader, p + "rope.freq_base", 10000.0)),
        norm_eps=float(_field(reader, p + "attention.layer_norm_rms_epsilon", 1e-5)),
        context=int(_field(reader, p + "context_length", 2048)),
        tied="output.weight" not in names,
    )


def _tensor(tensors: dict, name: str) -> np.ndarray:
    from gguf.quants import dequantize

    t = tensors[name]
    out = dequantize(t.data, t.tensor_type).astype(np.float32, copy=False)
    # GGUF lists dimensions innermost first; numpy's row-major shape is the reverse.
    return np.ascontiguousarray(out.reshape(tuple(int(n) for n in reversed(t.shape))))


def read_gguf(path: str | Path):
    """Open ``path``; return ``(reader, LlamaWeights)``. Dequantizes every tensor to float32.

    Raises ``ValueError`` (one line) for a file that is not GGUF, not Llama-family, or lacks a
    tensor the forward pass needs.
    """
    import gguf

    path = Path(path)
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as exc:  # the reader raises several kinds on a file that is not GGUF
        raise ValueError(f"--model {path.name}: not a readable GGUF file ({exc})") from None
    cfg = _config(reader, path)
    tensors = {t.name: t for t in reader.tensors}
    try:
        layers = tuple(
            LayerWeights(
                *(
                    _tensor(tensors, f"blk.{i}.{name}.weight")
                    for name in ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
                                 "ffn_norm", "ffn_gate", "ffn_up", "ffn_down")
                )
            )
            for i in range(cfg.n_layers)
        )
        embd = _tensor(tensors, "token_embd.weight")
        output = embd if cfg.tied else _tensor(tensors, "output.weight")
        norm = _tensor(tensors, "output_norm.weight")
    except KeyError as exc:
        raise ValueError(f"--model {path.name}: tensor {exc.args[0]} is missing") from None
    return reader, LlamaWeights(cfg, embd, layers, norm, output)


def random_weights(cfg: LlamaConfig, rng: np.random.Generator) -> LlamaWeights:
    """Weights drawn from ``rng`` at the shape ``cfg`` (for sweeps and tests), scaled so that
    activations stay O(1) through the layers."""

    def mat(rows, cols):
        return (rng.standard_normal((rows, cols), dtype=np.float32) / np.float32(np.sqrt(cols)))

    def norm():
        return (1.0 + 0.1 * rng.standard_normal(cfg.d)).astype(np.float32)

    q, kv = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    layers = tuple(
        LayerWeights(norm(), mat(q, cfg.d), mat(kv, cfg.d), mat(kv, cfg.d), mat(cfg.d, q),
                     norm(), mat(cfg.d_ff, cfg.d), mat(cfg.d_ff, cfg.d), mat(cfg.d, cfg.d_ff))
        for _ in range(cfg.n_layers)
    )
    embd = rng.standard_normal((cfg.vocab, cfg.d), dtype=np.float32)
    output = embd if cfg.tied else mat(cfg.vocab, cfg.d)
    return LlamaWeights(cfg, embd, layers, norm(), output)
