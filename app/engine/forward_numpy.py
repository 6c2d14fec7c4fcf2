"""A Llama forward pass in numpy (float32) with a KV cache: the engine's default body.

Per layer: RMSNorm → fused QKV → RoPE (adjacent pairs, GGUF order) → grouped-query causal
attention over the cache → output projection → RMSNorm → SiLU-gated MLP, float32 throughout.
The projections are injected (:mod:`app.engine.linear`): ``kernel="q"`` reads the GGUF's stored
quantized blocks, ``kernel="blas"`` float32 GEMVs; norms, RoPE, attention and the gate are C
routines (:mod:`app.engine.rowops`), one call per step of a layer.

Batch invariance: a forward over T tokens gives, bit for bit, the states T one-token forwards
give, and :meth:`NumpyLlama.forward_batch` gives each sequence what its own ``forward`` gives.
Every operation is row-wise with a fixed order per row: the projections by construction (see
``linear``), norms and elementwise maps per row, and attention per query over exactly the keys a
one-token step would see. ForcedToken's batched run and FullRecompute's rebuild then decode
exactly what token-by-token decoding does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import rowops
from .head import output_head
from .linear import KERNELS, layer_projections
from .weights import LlamaWeights

__all__ = ["KVCache", "NumpyLlama"]


@dataclass
class KVCache:
    """Keys and values of the first ``length`` positions: (layers, kv_heads, capacity, head_dim)."""

    k: np.ndarray
    v: np.ndarray
    length: int = 0

    def truncate(self, n: int) -> None:
        """Forget every position from ``n`` on (a rollback)."""
        if n < 0:
            raise ValueError(f"truncate: n must be >= 0, got {n}")
        self.length = min(self.length, n)


class NumpyLlama:
    """The body and head of a Llama model on float32 numpy arrays.

    ``forward(ids, cache, start)`` runs the new tokens at positions ``start …`` (default and
    at most ``cache.length``; a smaller ``start`` rolls the cache back there first) and returns
    their final-normed hidden states (T, d); ``head(h)`` gives logits (…, V).
    """

    impl = "numpy"
    device = "cpu"

    def __init__(self, weights: LlamaWeights, kernel: str = "q"):
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {', '.join(KERNELS)}, got {kernel!r}")
        self.w, self.cfg, self.kernel = weights, weights.config, kernel
        c = self.cfg
        if c.n_heads % c.n_kv_heads:
            raise ValueError("n_heads must be a multiple of n_kv_heads")
        self.scale = 1.0 / float(np.sqrt(c.head_dim))
        self.proj = layer_projections(weights, kernel)
        self.out_head = output_head(weights, weights.output, kernel)  # the engine shares it
        half = np.arange(0, c.head_dim, 2, dtype=np.float64) / c.head_dim
        self.inv_freq = 1.0 / (c.rope_base**half)  # (head_dim/2,)
        self._cos = self._sin = np.empty((0, c.head_dim // 2), np.float32)

    # -- cache -----------------------------------------------------------------------------
    def new_cache(self, capacity: int = 256) -> KVCache:
        c = self.cfg
        shape = (c.n_layers, c.n_kv_heads, max(1, int(capacity)), c.head_dim)
        return KVCache(np.empty(shape, np.float32), np.empty(shape, np.float32))

    def truncate(self, cache: KVCache, n: int) -> None:
        """Keep only the first ``n`` positions of ``cache`` (a rollback)."""
        cache.truncate(n)

    @staticmethod
    def _reserve(cache: KVCache, n: int) -> None:
        cap = cache.k.shape[2]
        if n <= cap:
            return
        new = max(n, 2 * cap)
        for name in ("k", "v"):
            old = getattr(cache, name)
            grown = np.empty(old.shape[:2] + (new, old.shape[3]), np.float32)
            grown[:, :, : cache.length] = old[:, :, : cache.length]
            setattr(cache, name, grown)

    # -- pieces ----------------------------------------------------------------------------
    def _rope_tables(self, n: int):
        """cos, sin (≥ n, head_dim/2) float32 at positions 0 …, grown on demand."""
        if self._cos.shape[0] < n:
            size = max(n, 256, 2 * self._cos.shape[0])
            ang = np.arange(size, dtype=np.float64)[:, None] * self.inv_freq
            self._cos, self._sin = np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)
        return self._cos, self._sin

    # -- public ----------------------------------------------------------------------------
    def forward(self, ids, cache: KVCache, start: int | None = None) -> np.ndarray:
        """Run ``ids`` (T,) at positions ``start …``; append to ``cache``; return (T, d)."""
        return self.forward_batch([(ids, cache, start)])[0]

    def forward_batch(self, seqs) -> list[np.ndarray]:
        """Several sequences in one pass: ``seqs`` is a list of ``(ids, cache, start)``.

        The projections run once over every sequence's rows concatenated (mixed lengths);
        attention runs per sequence over its own cache. Returns each sequence's (T_i, d) states,
        bit-identical to its own :meth:`forward`.
        """
        c, w = self.cfg, self.w
        runs = self._prepare(seqs)
        ids = np.concatenate([r[0] for r in runs] or [np.zeros(0, np.int64)])
        cos, sin = self._rope_tables(max((s + len(i) for i, _, s in runs), default=0))
        heads = (c.n_heads, c.n_kv_heads, c.head_dim)
        x = w.tok_embd[ids]  # (N, d): every sequence's rows, one after another
        for i, (lw, p) in enumerate(zip(w.layers, self.proj)):
            qkv = p.qkv(rowops.rmsnorm(x, lw.attn_norm, c.norm_eps))
            att, lo = [], 0
            for seq_ids, cache, start in runs:  # each sequence against its own cache
                rows = qkv[lo : lo + len(seq_ids)]
                att.append(
                    rowops.attention(
                        rows, cache.k[i], cache.v[i], start, heads, self.scale, cos, sin
                    )
                )
                lo += len(seq_ids)
            x += p.o(att[0] if len(att) == 1 else np.concatenate(att))  # x: this pass's own
            gu = p.gate_up(rowops.rmsnorm(x, lw.ffn_norm, c.norm_eps))
            x += p.down(rowops.silu_gate(gu))
        h = rowops.rmsnorm(x, w.norm, c.norm_eps)
        out, lo = [], 0
        for seq_ids, cache, start in runs:
            cache.length = start + len(seq_ids)
            out.append(h[lo : lo + len(seq_ids)])
            lo += len(seq_ids)
        return out

    def _prepare(self, seqs) -> list[tuple[np.ndarray, KVCache, int]]:
        """Validate ``seqs``; roll each cache back to its start and make room for its rows."""
        runs, seen = [], set()
        for ids, cache, start in seqs:
            start = cache.length if start is None else int(start)
            if not 0 <= start <= cache.length:
                raise ValueError(f"start must be in [0, {cache.length}] (cached), got {start}")
            if id(cache) in seen:
                raise ValueError("forward_batch: each sequence needs its own cache")
            seen.add(id(cache))
            ids = np.asarray(ids, dtype=np.int64).reshape(-1)
            if len(ids) and not (0 <= ids.min() and ids.max() < self.cfg.vocab):
                raise ValueError(f"ids must be in [0, {self.cfg.vocab}), got {ids.tolist()}")
            cache.truncate(start)
            self._reserve(cache, start + len(ids))
            runs.append((ids, cache, start))
        return runs

    def head(self, h: np.ndarray) -> np.ndarray:
        """(…, d) -> (…, V) logits through the body's kernel (app.engine.head)."""
        flat = np.asarray(h, np.float32).reshape(-1, self.cfg.d)
        return self.out_head.logits(flat)[:, : self.cfg.vocab].reshape(h.shape[:-1] + (-1,))
