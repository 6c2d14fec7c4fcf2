"""The same Llama forward pass as ``forward_numpy``, in torch: CPU or CUDA, float32 by default.

Over the layout of :mod:`app.engine.weights` (``y = x @ W.T``; ``wq``/``wk`` in GGUF order, so
RoPE rotates adjacent pairs ``(x[2i], x[2i+1])`` by ``pos * rope_base**(-2i/head_dim)``).
Grouped-query causal attention over a KV cache held on the device. Inputs and outputs are numpy
(ids in, float32 hidden states and logits out); only the cache and the weights live in torch.

torch is imported here and nowhere else in ``app.engine``: importing the package never needs it.
``dtype`` may be ``"float32"`` (default), ``"bfloat16"`` or ``"float16"``; with a half type the
weights, activations and cache are in that type, while RMSNorm statistics and the attention
softmax are computed in float32.

Batch invariance: with ``batch_invariant=True`` (the default, as the engine's plans assume of
every body) a forward over T tokens runs them one at a time through the one-token path, so it
gives, bit for bit, what T one-token forwards give; prefill then streams the weights T times.
``batch_invariant=False`` runs the T rows as one GEMM per projection (faster prefill; rows then
differ from the one-token path by float32 rounding, ~1e-6 relative).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .linear import KERNELS, layer_projections
from .weights import LlamaWeights

__all__ = ["TorchKVCache", "TorchLlama"]

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class TorchKVCache:
    """Keys and values of the first ``length`` positions: (layers, kv_heads, capacity, head_dim)
    tensors on the model's device, in its dtype."""

    k: torch.Tensor
    v: torch.Tensor
    length: int = 0

    def truncate(self, n: int) -> None:
        """Forget every position from ``n`` on (a rollback)."""
        if n < 0:
            raise ValueError("truncate: n must be >= 0")
        self.length = min(self.length, n)


class TorchLlama:
    """The body and head of a Llama model in torch.

    The projections are injected (:mod:`app.engine.linear`): ``kernel="blas"`` is torch's own
    GEMM on any device; ``kernel="q"`` (CPU, float32) the quantized kernel the numpy body uses.
    ``forward(ids, cache, start)`` runs ``ids`` at positions ``start …`` (``start`` defaults to,
    and may not exceed, ``cache.length``; a smaller ``start`` first truncates the cache there),
    appends them to the cache and returns their final-normed hidden states (T, d) as float32
    numpy. ``head(h)`` gives float32 logits (…, V).
    """

    impl = "torch"

    def __init__(
        self,
        weights: LlamaWeights,
        device: str = "cpu",
        dtype: str = "float32",
        batch_invariant: bool = True,
        kernel: str = "blas",
    ):
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {', '.join(KERNELS)}, got {kernel!r}")
        if kernel == "q" and (device != "cpu" or dtype != "float32"):
            raise ValueError("kernel 'q' runs on the CPU in float32: use kernel='blas'")
        self.kernel = kernel
        # "q": the projections through the quantized kernel on numpy views of CPU tensors
        self._qproj = layer_projections(weights, "q") if kernel == "q" else None
        c = weights.config
        if c.n_heads % c.n_kv_heads:
            raise ValueError("n_heads must be a multiple of n_kv_heads")
        self.cfg, self.device, self.dtype_name = c, torch.device(device), dtype
        self.dtype = _DTYPES[dtype]
        self.batch_invariant = bool(batch_invariant)
        self.scale = 1.0 / float(np.sqrt(c.head_dim))

        def t(a: np.ndarray) -> torch.Tensor:
            # Weights read from a GGUF may be read-only views; torch only reads them here.
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
                return torch.from_numpy(np.ascontiguousarray(a)).to(self.device, self.dtype)

        # Fused projections, kept (out, in) so F.linear computes x @ W.T with one GEMM.
        self.layers = [
            (
                t(lw.attn_norm),
                t(np.concatenate([lw.wq, lw.wk, lw.wv])),
                t(lw.wo),
                t(lw.ffn_norm),
                t(np.concatenate([lw.w_gate, lw.w_up])),
                t(lw.w_down),
            )
            for lw in weights.layers
        ]
        self.tok_embd = t(weights.tok_embd)
        self.output = self.tok_embd if weights.output is weights.tok_embd else t(weights.output)
        self.norm = t(weights.norm)
        half = np.arange(0, c.head_dim, 2, dtype=np.float64) / c.head_dim
        self._inv_freq = 1.0 / (c.rope_base**half)  # (head_dim/2,) float64
        self._cos = self._sin = None  # (n, head_dim/2) tables, grown on demand

    # -- cache -----------------------------------------------------------------------------
    def new_cache(self, capacity: int = 256) -> TorchKVCache:
        c = self.cfg
        shape = (c.n_layers, c.n_kv_heads, max(1, capacity), c.head_dim)
        kw = {"device": self.device, "dtype": self.dtype}
        return TorchKVCache(torch.empty(shape, **kw), torch.empty(shape, **kw))

    def truncate(self, cache: TorchKVCache, n: int) -> None:
        """Keep only the first ``n`` positions of ``cache`` (a rollback)."""
        cache.truncate(n)

    def _reserve(self, cache: TorchKVCache, n: int) -> None:
        cap = cache.k.shape[2]
        if n <= cap:
            return
        new = max(n, 2 * cap)
        for name in ("k", "v"):
            old = getattr(cache, name)
            grown = old.new_empty(old.shape[:2] + (new, old.shape[3]))
            grown[:, :, : cache.length] = old[:, :, : cache.length]
            setattr(cache, name, grown)

    # -- pieces ----------------------------------------------------------------------------
    def _linear(self, i: int, which: str, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """``x @ w.T`` through the injected strategy: torch's GEMM, or layer ``i``'s kernel."""
        if self._qproj is None:
            return F.linear(x, w)
        return torch.from_numpy(getattr(self._qproj[i], which)(x.contiguous().numpy()))

    def _rope_tables(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._cos is None or self._cos.shape[0] < n:
            size = max(n, 256 if self._cos is None else 2 * self._cos.shape[0])
            ang = np.arange(size, dtype=np.float64)[:, None] * self._inv_freq
            self._cos = torch.from_numpy(np.cos(ang)).to(self.device, self.dtype)
            self._sin = torch.from_numpy(np.sin(ang)).to(self.device, self.dtype)
        return self._cos, self._sin

    def _rope(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """(T, H, hd) rotated in adjacent pairs by position ``start + t``."""
        cos, sin = self._rope_tables(start + x.shape[0])
        cos = cos[start : start + x.shape[0], None, :]
        sin = sin[start : start + x.shape[0], None, :]
        x0, x1 = x[..., 0::2], x[..., 1::2]
        return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2)

    def _rmsnorm(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        ms = xf.pow(2).mean(dim=-1, keepdim=True)
        return (xf * torch.rsqrt(ms + self.cfg.norm_eps)).to(self.dtype) * g

    def _attention(self, q: torch.Tensor, i: int, cache: TorchKVCache, start: int):
        """q (T, H, hd) against cached positions [0, start + T): (T, H·hd)."""
        c, t = self.cfg, q.shape[0]
        n, group = start + t, c.n_heads // c.n_kv_heads
        k, v = cache.k[i, :, :n], cache.v[i, :, :n]  # (Hkv, n, hd)
        # (Hkv, group·T, hd): query head h uses KV head h // group, as in the numpy forward.
        qg = q.permute(1, 0, 2).reshape(c.n_kv_heads, group * t, c.head_dim)
        s = torch.matmul(qg, k.transpose(1, 2)).float() * self.scale  # (Hkv, g·T, n)
        if t > 1:  # causal: query t sees keys up to start + t
            mask = torch.ones((t, n), dtype=torch.bool, device=self.device).triu(start + 1)
            s = s.view(c.n_kv_heads, group, t, n).masked_fill(mask, float("-inf"))
            s = s.view(c.n_kv_heads, group * t, n)
        p = torch.softmax(s, dim=-1).to(self.dtype)
        o = torch.matmul(p, v)  # (Hkv, g·T, hd)
        return o.reshape(c.n_heads, t, c.head_dim).permute(1, 0, 2).reshape(t, -1)

    # -- public ----------------------------------------------------------------------------
    def forward(self, ids, cache: TorchKVCache, start: int | None = None) -> np.ndarray:
        """Run ``ids`` (T,) at positions ``start …``; append to ``cache``; return (T, d)."""
        c = self.cfg
        start = cache.length if start is None else int(start)
        if not 0 <= start <= cache.length:
            raise ValueError(f"start {start} is beyond the cache ({cache.length} positions)")
        cache.truncate(start)
        ids_t = torch.as_tensor(np.asarray(ids, dtype=np.int64).reshape(-1), device=self.device)
        t = int(ids_t.shape[0])
        if t == 0:
            return np.zeros((0, c.d), np.float32)
        self._reserve(cache, start + t)
        with torch.inference_mode():
            if self.batch_invariant and t > 1:
                h = torch.cat([self._body(ids_t[j : j + 1], cache, start + j) for j in range(t)])
            else:
                h = self._body(ids_t, cache, start)
            return h.float().cpu().numpy()

    def forward_batch(self, seqs) -> list[np.ndarray]:
        """``seqs``: a list of ``(ids, cache, start)``; each sequence's (T_i, d) states, exactly
        its own :meth:`forward` (the torch body runs them one after another)."""
        if len({id(cache) for _, cache, _ in seqs}) < len(seqs):
            raise ValueError("forward_batch: each sequence needs its own cache")
        return [self.forward(ids, cache, start) for ids, cache, start in seqs]

    def _body(self, ids_t: torch.Tensor, cache: TorchKVCache, start: int) -> torch.Tensor:
        """ids (T,) at positions ``start …`` (cache reserved): final-normed states (T, d)."""
        c, t = self.cfg, int(ids_t.shape[0])
        nq, nkv = c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim
        x = self.tok_embd[ids_t]  # (T, d)
        for i, (attn_norm, wqkv, wo, ffn_norm, wgu, w_down) in enumerate(self.layers):
            qkv = self._linear(i, "qkv", self._rmsnorm(x, attn_norm), wqkv)
            q = self._rope(qkv[:, :nq].reshape(t, c.n_heads, c.head_dim), start)
            k = self._rope(qkv[:, nq : nq + nkv].reshape(t, c.n_kv_heads, c.head_dim), start)
            v = qkv[:, nq + nkv :].reshape(t, c.n_kv_heads, c.head_dim)
            cache.k[i, :, start : start + t] = k.permute(1, 0, 2)
            cache.v[i, :, start : start + t] = v.permute(1, 0, 2)
            x = x + self._linear(i, "o", self._attention(q, i, cache, start), wo)
            gu = self._linear(i, "gate_up", self._rmsnorm(x, ffn_norm), wgu)
            gate, up = gu[:, : c.d_ff], gu[:, c.d_ff :]
            x = x + self._linear(i, "down", F.silu(gate) * up, w_down)
        cache.length = start + t
        return self._rmsnorm(x, self.norm)

    def head(self, h) -> np.ndarray:
        """(…, d) -> (…, V) float32 logits: ``h @ output.T``."""
        with torch.inference_mode():
            ht = torch.as_tensor(np.asarray(h, dtype=np.float32), device=self.device)
            return F.linear(ht.to(self.dtype), self.output).float().cpu().numpy()
