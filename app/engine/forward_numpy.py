"""A Llama forward pass in numpy (float32) with a KV cache: the engine's default body.

Per layer: RMSNorm → fused QKV → RoPE (adjacent pairs, GGUF order) → grouped-query causal
attention over the cache → output projection → RMSNorm → SiLU-gated MLP. Constants are Python
floats so float32 stays float32 (numpy ≥ 2 promotes float32 / np.float64 scalars to float64).
The projections are injected (:mod:`app.engine.linear`): ``kernel="q"`` reads the GGUF's stored
quantized blocks, ``kernel="blas"`` float32 GEMVs.

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


def _rmsnorm(x: np.ndarray, g: np.ndarray, eps: float) -> np.ndarray:
    """(T, d) -> (T, d): ``x / sqrt(mean(x²) + eps) * g``."""
    ms = np.einsum("td,td->t", x, x)[:, None] * (1.0 / x.shape[-1])
    return x * (1.0 / np.sqrt(ms + eps)) * g


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
    def _rope_tables(self, pos: np.ndarray):
        """cos, sin (N, 1, head_dim/2) float32 at positions ``pos`` (N,)."""
        n = int(pos.max()) + 1 if len(pos) else 0
        if self._cos.shape[0] < n:
            size = max(n, 256, 2 * self._cos.shape[0])
            ang = np.arange(size, dtype=np.float64)[:, None] * self.inv_freq
            self._cos, self._sin = np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)
        return self._cos[pos][:, None, :], self._sin[pos][:, None, :]

    @staticmethod
    def _rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
        """(N, H, hd) rotated in adjacent pairs by the rows' positions."""
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
        ids = np.concatenate([r[0] for r in runs]) if runs else np.zeros(0, np.int64)
        pos = np.concatenate([np.arange(s, s + len(i)) for i, _, s in runs] or [ids])
        cos, sin = self._rope_tables(pos)
        x = w.tok_embd[ids]  # (N, d)
        n, nq, nkv = len(ids), c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim
        for i, (lw, p) in enumerate(zip(w.layers, self.proj)):
            qkv = p.qkv(_rmsnorm(x, lw.attn_norm, c.norm_eps))
            q = self._rope(qkv[:, :nq].reshape(n, c.n_heads, c.head_dim), cos, sin)
            k = self._rope(qkv[:, nq : nq + nkv].reshape(n, c.n_kv_heads, c.head_dim), cos, sin)
            v = qkv[:, nq + nkv :].reshape(n, c.n_kv_heads, c.head_dim)
            att = np.empty((n, nq), np.float32)
            lo = 0
            for seq_ids, cache, start in runs:
                hi = lo + len(seq_ids)
                cache.k[i, :, start : start + hi - lo] = k[lo:hi].transpose(1, 0, 2)
                cache.v[i, :, start : start + hi - lo] = v[lo:hi].transpose(1, 0, 2)
                for r in range(lo, hi):
                    att[r] = self._attention(q[r], i, cache, start + r - lo + 1)
                lo = hi
            x = x + p.o(att)
            gu = p.gate_up(_rmsnorm(x, lw.ffn_norm, c.norm_eps))
            gate, up = gu[:, : c.d_ff], gu[:, c.d_ff :]
            x = x + p.down(gate / (1.0 + np.exp(-gate)) * up)
        h = _rmsnorm(x, w.norm, c.norm_eps)
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
        """(…, d) -> (…, V) logits."""
        return h @ self.w.output.T
