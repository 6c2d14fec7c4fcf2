"""Llama-family weights as float32 numpy arrays: read from a GGUF file, or random at any shape.

Reading a GGUF (parsing 49k vocabulary strings, dequantizing 272 tensors) takes seconds, so
:func:`load_gguf` keeps what it read in a derived cache — the metadata as JSON and each tensor
as a ``.npy`` file, memory-mapped on later loads (processes then share the pages). The cache is
keyed by the file's size and a hash of its head and tail; deleting it loses nothing.

Tensors stored as Q4_0, Q4_1 or Q8_0 are also kept as their raw GGUF blocks
(``LlamaWeights.stored``), which the quantized projection kernel (:mod:`app.engine.qkernel`)
reads instead of the float32 copies.

Layout (``y = x @ W.T``, ``W`` is (out, in)). ``wq``/``wk`` keep GGUF's row order, in which RoPE
rotates *adjacent* pairs ``(x[2i], x[2i+1])``; ``output`` is ``tok_embd`` itself when tied.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "LlamaConfig",
    "LayerWeights",
    "LlamaWeights",
    "StoredTensor",
    "load_gguf",
    "read_gguf",
    "random_weights",
]

_LAYER_TENSORS = (
    "attn_norm",
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_output",
    "ffn_norm",
    "ffn_gate",
    "ffn_up",
    "ffn_down",
)

LLAMA_ARCHS = ("llama",)
STORED_KINDS = ("Q4_0", "Q4_1", "Q8_0")  # the block types the projection kernel reads as stored
CACHE_VERSION = 2  # 2: the stored blocks beside the float32 copies


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
class StoredTensor:
    """A tensor as the GGUF stores it: ``kind`` (one of STORED_KINDS), ``shape`` (out, in) and
    ``data``, the raw blocks (out, row bytes) uint8."""

    kind: str
    shape: tuple[int, int]
    data: np.ndarray


@dataclass(frozen=True)
class LlamaWeights:
    config: LlamaConfig
    tok_embd: np.ndarray  # (V, d)
    layers: tuple[LayerWeights, ...]
    norm: np.ndarray  # (d,)
    output: np.ndarray  # (V, d); the same array as tok_embd when tied
    stored: dict[str, StoredTensor] = field(default_factory=dict)  # by GGUF tensor name

    @property
    def nbytes(self) -> int:
        arrays = [self.tok_embd, self.norm] + [
            a for lw in self.layers for a in lw.__dict__.values()
        ]
        if not self.config.tied:
            arrays.append(self.output)
        return int(sum(a.nbytes for a in arrays))


def config_from_fields(fields: dict, tensor_names, name: str) -> LlamaConfig:
    """The model's shape from GGUF metadata ``fields`` (plain values); ``ValueError`` unless
    the architecture is Llama-family and the shape fields are there."""
    arch = fields.get("general.architecture")
    if arch not in LLAMA_ARCHS:
        raise ValueError(f"--model {name}: architecture {arch!r} is not Llama-family")
    p = f"{arch}."

    def get(key, default=None):
        value = fields.get(p + key, default)
        if value is None:
            raise ValueError(f"--model {name}: metadata field {p + key} is missing")
        return value

    d, n_heads = int(get("embedding_length")), int(get("attention.head_count"))
    vocab = fields.get(p + "vocab_size") or len(fields.get("tokenizer.ggml.tokens") or ())
    return LlamaConfig(
        n_layers=int(get("block_count")),
        d=d,
        d_ff=int(get("feed_forward_length")),
        n_heads=n_heads,
        n_kv_heads=int(get("attention.head_count_kv", n_heads)),
        head_dim=int(get("rope.dimension_count", d // n_heads)),
        vocab=int(vocab),
        rope_base=float(get("rope.freq_base", 10000.0)),
        norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-5)),
        context=int(get("context_length", 2048)),
        tied="output.weight" not in set(tensor_names),
    )


def _tensor(tensors: dict, name: str) -> np.ndarray:
    from gguf.quants import dequantize

    t = tensors[name]
    out = dequantize(t.data, t.tensor_type).astype(np.float32, copy=False)
    # GGUF lists dimensions innermost first; numpy's row-major shape is the reverse.
    return np.ascontiguousarray(out.reshape(tuple(int(n) for n in reversed(t.shape))))


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _assemble(fields: dict, get, tensor_names, name: str, stored=None) -> LlamaWeights:
    """LlamaWeights from ``get(tensor_name) -> float32 array`` (and the ``stored`` blocks)."""
    cfg = config_from_fields(fields, tensor_names, name)
    try:
        layers = tuple(
            LayerWeights(*(get(f"blk.{i}.{t}.weight") for t in _LAYER_TENSORS))
            for i in range(cfg.n_layers)
        )
        embd = get("token_embd.weight")
        output = embd if cfg.tied else get("output.weight")
        norm = get("output_norm.weight")
    except KeyError as exc:
        raise ValueError(f"--model {name}: tensor {exc.args[0]} is missing") from None
    return LlamaWeights(cfg, embd, layers, norm, output, dict(stored or {}))


def read_gguf(path: str | Path):
    """Parse ``path`` itself (no cache); return ``(fields, LlamaWeights)``: the metadata as
    plain Python values and every tensor dequantized to float32.

    Raises ``ValueError`` (one line) for a file that is not GGUF, not Llama-family, or lacks a
    tensor the forward pass needs.
    """
    import gguf

    path = Path(path)
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as exc:  # the reader raises several kinds on a file that is not GGUF
        raise ValueError(f"--model {path.name}: not a readable GGUF file ({exc})") from None
    fields = {
        k: _plain(f.contents()) for k, f in reader.fields.items() if not k.startswith("GGUF.")
    }
    tensors = {t.name: t for t in reader.tensors}
    stored = {
        t.name: StoredTensor(t.tensor_type.name, (int(t.shape[1]), int(t.shape[0])), t.data)
        for t in reader.tensors
        if t.tensor_type.name in STORED_KINDS and len(t.shape) == 2
    }
    return fields, _assemble(fields, lambda n: _tensor(tensors, n), tensors, path.name, stored)


def _cache_key(path: Path) -> str:
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        digest.update(f.read(1 << 20))
        f.seek(max(0, size - (1 << 20)))
        digest.update(f.read())
    return digest.hexdigest()[:16]


def load_gguf(path: str | Path, cache: Path | None = None):
    """:func:`read_gguf` through the derived cache under ``cache`` (default: the engine's
    cache folder); returns ``(fields, LlamaWeights)`` with memory-mapped read-only arrays."""
    from .fetch import cache_dir

    path = Path(path)
    folder = (cache or cache_dir() / "f32") / f"{path.stem}-{_cache_key(path)}-v{CACHE_VERSION}"
    meta = folder / "fields.json"
    if not meta.is_file():
        fields, weights = read_gguf(path)
        _write_cache(folder, fields, weights)
    fields = json.loads(meta.read_text(encoding="utf-8"))
    names = fields.pop("__tensors__")
    stored = {
        n: StoredTensor(kind, tuple(shape), np.load(folder / f"{n}.stored.npy", mmap_mode="r"))
        for n, (kind, shape) in fields.pop("__stored__").items()
    }

    def get(name):
        if name not in names:
            raise KeyError(name)
        return np.load(folder / f"{name}.npy", mmap_mode="r")

    return fields, _assemble(fields, get, names, path.name, stored)


def _write_cache(folder: Path, fields: dict, w: LlamaWeights) -> None:
    """Write atomically: a half-written cache never looks complete."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".part-"))
    arrays = {"token_embd.weight": w.tok_embd, "output_norm.weight": w.norm}
    if not w.config.tied:
        arrays["output.weight"] = w.output
    for i, lw in enumerate(w.layers):
        for t, a in zip(_LAYER_TENSORS, lw.__dict__.values()):
            arrays[f"blk.{i}.{t}.weight"] = a
    for name, a in arrays.items():
        np.save(tmp / f"{name}.npy", a)
    for name, st in w.stored.items():
        np.save(tmp / f"{name}.stored.npy", st.data)
    stored = {n: (st.kind, st.shape) for n, st in w.stored.items()}
    meta = {**fields, "__tensors__": sorted(arrays), "__stored__": stored}
    (tmp / "fields.json").write_text(json.dumps(meta))
    try:
        os.replace(tmp, folder)
    except OSError:  # another process finished first: keep its copy
        shutil.rmtree(tmp, ignore_errors=True)


def random_weights(cfg: LlamaConfig, rng: np.random.Generator) -> LlamaWeights:
    """Weights drawn from ``rng`` at the shape ``cfg`` (for sweeps and tests), scaled so that
    activations stay O(1) through the layers."""

    def mat(rows, cols):
        return rng.standard_normal((rows, cols), dtype=np.float32) / np.float32(np.sqrt(cols))

    def norm():
        return (1.0 + 0.1 * rng.standard_normal(cfg.d)).astype(np.float32)

    q, kv = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    layers = tuple(
        LayerWeights(
            norm(),
            mat(q, cfg.d),
            mat(kv, cfg.d),
            mat(kv, cfg.d),
            mat(cfg.d, q),
            norm(),
            mat(cfg.d_ff, cfg.d),
            mat(cfg.d_ff, cfg.d),
            mat(cfg.d, cfg.d_ff),
        )
        for _ in range(cfg.n_layers)
    )
    embd = rng.standard_normal((cfg.vocab, cfg.d), dtype=np.float32)
    output = embd if cfg.tied else mat(cfg.vocab, cfg.d)
    return LlamaWeights(cfg, embd, layers, norm(), output)
