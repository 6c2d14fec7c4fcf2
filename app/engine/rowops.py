"""The numpy body's row-wise steps in C (``_rowops.c``): RMSNorm, RoPE + KV-cache write + causal
grouped-query attention, and the SiLU gate — one call per step of a layer, each row computed
in one fixed order (a T-row call gives every row its one-row result; every dispatch path gives
the same bits). Shapes are the body's; float32 C-contiguous arrays throughout."""

from __future__ import annotations

import numpy as np

from . import _rowops
from .qkernel import isa_code

__all__ = ["rmsnorm", "silu_gate", "attention"]


def rmsnorm(x: np.ndarray, g: np.ndarray, eps: float) -> np.ndarray:
    """(N, d) -> (N, d): ``x / sqrt(mean(x²) + eps) * g``."""
    y = np.empty_like(x)
    _rowops.rmsnorm(x, g, eps, x.shape[0], x.shape[1], y, isa_code())
    return y


def silu_gate(gu: np.ndarray) -> np.ndarray:
    """(N, 2f) ``[gate | up]`` -> (N, f): ``gate / (1 + exp(-gate)) * up``."""
    n, f = gu.shape[0], gu.shape[1] // 2
    y = np.empty((n, f), np.float32)
    _rowops.silu(gu, n, f, y, isa_code())
    return y


def attention(qkv, k_cache, v_cache, start: int, heads: tuple[int, int, int], scale, cos, sin):
    """One sequence's rows ``qkv`` (T, (H + 2·Hkv)·hd) at positions ``start …``: RoPE on q and
    k, k and v written to the layer's caches (Hkv, capacity, hd) at those positions, and each
    row's attention over positions [0, its own] -> (T, H·hd). ``heads`` = (H, Hkv, hd);
    ``cos``/``sin`` (≥ start + T, hd/2) tables."""
    h, hkv, hd = heads
    t = qkv.shape[0]
    out = np.empty((t, h * hd), np.float32)
    cap = k_cache.shape[1]
    args = (qkv, t, start, h, hkv, hd, scale, cos, sin, k_cache, v_cache, cap, out, isa_code())
    _rowops.attention(*args)
    return out
