"""A Llama forward pass in numpy (float32) with a KV cache: the engine's default body.

Per layer: RMSNorm → fused QKV → RoPE (adjacent pairs, GGUF order) → grouped-query causal
attention over the cache → output projection → RMSNorm → SiLU-gated MLP. Constants are Python
floats so float32 stays float32 (numpy ≥ 2 promotes float32 / np.float64 scalars to float64).

Batch invariance: a forward over T tokens gives, bit for bit, the states T one-token forwards
give. BLAS GEMMs round differently for every row count, so projections run as GEMVs — one per
row over blocks of weight rows that stay in cache while every row uses them (the weights stream
from memory once per forward, not once per token) — and attention runs per query over exactly
the keys a one-token step would see. ForcedToken's batched run and FullRecompute's rebuild then
decode exactly what token-by-token decoding does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
        self.length = min(self.length, n)


ROW_BLOCK = 256  # weight rows per block: 256 × d floats stay in a core's L2 cache for d ≤ 1024


def _proj(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(T, in) @ (out, in)ᵀ -> (T, out), every row through the same GEMV kernel."""
    t = x.shape[0]
    if t == 1:
        return (w @ x[0])[None]
    out = np.empty((t, w.shape[0]), np.float32)
    for lo in range(0, w.shape[0], ROW_BLOCK):
        block = w[lo : lo + ROW_BLOCK]
        for r in range(t):
            np.matmul(block, x[r], out=out[r, lo : lo + ROW_BLOCK])
    return out


def _rmsnorm(x: np.ndarray, g: np.ndarray, eps: float) -> np.ndarray:
    """(T, d) -> (T, d): ``x / sqrt(mean(x²) + eps) * g``."""
    ms = np.einsum("td,td->t", x, x)[:, None] * (1.0 / x.shape[-1])
    return x * (1.0 / np.sqrt(ms + eps)) * g


class NumpyLlama:
    """The body and head of a Llama model on float32 numpy arrays.

    ``forward(ids, cache)`` runs the new tokens at positions ``cache.length …`` and returns their
    final-normed hidden states (T, d); ``head(h)`` gives logits (…, V).
    """

    impl = "numpy"
    device = "cpu"

    def __init__(self, weights: LlamaWeights):
        self.w, self.cfg = weights, weights.config
        c = self.cfg
        self.scale = 1.0 / float(np.sqrt(c.head_dim))
        # Fused projections: one GEMM for Q, K and V, one for gate and up (fewer library calls).
        # Kept (out, in): ``x @ W.T`` is a BLAS GEMV over contiguous rows, as fast as ``W @ x``.
        self.wqkv = [np.concatenate([lw.wq, lw.wk, lw.wv]) for lw in weights.layers]
        self.wgu = [np.concatenate([lw.w_gate, lw.w_up]) for lw in weights.layers]
        half = np.arange(0, c.head_dim, 2, dtype=np.float64) / c.head_dim
        self.inv_freq = 1.0 / (c.rope_base**half)  # (head_dim/2,)

    def new_cache(self, capacity: int = 256) -> KVCache:
        c = self.cfg
        shape = (c.n_layers, c.n_kv_heads, capacity, c.head_dim)
        return KVCache(np.empty(shape, np.float32), np.empty(shape, np.float32))

    def _reserve(self, cache: KVCache, n: int) -> None:
        cap = cache.k.shape[2]
        if n <= cap:
            return
        new = max(n, 2 * cap)
        for name in ("k", "v"):
            old = getattr(cache, name)
            grown = np.empty(old.shape[:2] + (new, old.shape[3]), np.float32)
            grown[:, :, : cache.length] = old[:, :, : cache.length]
            setattr(cache, name, grown)

    def _rope(self, x: np.ndarray, start: int) -> np.ndarray:
        """(T, H, hd) rotated in adjacent pairs by position ``start + t``."""
        t = x.shape[0]
        ang = np.arange(start, start + t, dtype=np.float64)[:, None] * self.inv_freq
        cos = np.cos(ang).astype(np.float32)[:, None, :]
        sin = np.sin(ang).astype(np.float32)[:, None, :]
        x0, x1 = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = x0 * cos - x1 * sin
        out[..., 1::2] = x0 * sin + x1 * cos
        return out

    def _attention(self, q, i: int, cache: KVCache, n: int) -> np.ndarray:
        """One query q (H, hd) at position n - 1 against cached positions [0, n): (H·hd,)."""
        c = self.cfg
        k, v = cache.k[i, :, :n], cache.v[i, :, :n]  # (Hkv, n, hd)
        qg = q.reshape(c.n_kv_heads, c.n_heads // c.n_kv_heads, c.head_dim)  # (Hkv, g, hd)
        s = np.matmul(qg, k.transpose(0, 2, 1)) * self.scale  # (Hkv, g, n)
        s = np.exp(s - s.max(axis=-1, keepdims=True))
        s *= 1.0 / s.sum(axis=-1, keepdims=True)
        return np.matmul(s, v).reshape(-1)  # (Hkv, g, hd) -> (H·hd,)

    def forward(self, ids, cache: KVCache) -> np.ndarray:
        """Run ``ids`` (T,) at positions ``cache.length …``; append to ``cache``; return (T, d)."""
        c, w = self.cfg, self.w
        ids = np.asarray(ids, dtype=np.int64)
        t, start = len(ids), cache.length
        self._reserve(cache, start + t)
        x = w.tok_embd[ids]  # (T, d)
        nq, nkv = c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim
        for i, lw in enumerate(w.layers):
            qkv = _proj(_rmsnorm(x, lw.attn_norm, c.norm_eps), self.wqkv[i])
            q = self._rope(qkv[:, :nq].reshape(t, c.n_heads, c.head_dim), start)
            k = self._rope(qkv[:, nq : nq + nkv].reshape(t, c.n_kv_heads, c.head_dim), start)
            cache.k[i, :, start : start + t] = k.transpose(1, 0, 2)
            cache.v[i, :, start : start + t] = (
                qkv[:, nq + nkv :].reshape(t, c.n_kv_heads, c.head_dim).transpose(1, 0, 2)
            )
            att = np.stack([self._attention(q[r], i, cache, start + r + 1) for r in range(t)])
            x = x + _proj(att, lw.wo)
            gu = _proj(_rmsnorm(x, lw.ffn_norm, c.norm_eps), self.wgu[i])
            gate, up = gu[:, : c.d_ff], gu[:, c.d_ff :]
            x = x + _proj(gate / (1.0 + np.exp(-gate)) * up, lw.w_down)
        cache.length = start + t
        return _rmsnorm(x, w.norm, c.norm_eps)

    def head(self, h: np.ndarray) -> np.ndarray:
        """(…, d) -> (…, V) logits."""
        return h @ self.w.output.T
