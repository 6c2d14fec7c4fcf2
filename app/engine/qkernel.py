"""The projection kernel over stored (quantized) weights: packing, dispatch, and ``matmul``.

``pack_stored`` turns a GGUF tensor's raw blocks (Q4_0, Q4_1, Q8_0) into the kernel's layout
(groups of 16 outputs, one per vector lane; see ``_qkernel.c``), ``pack_f32`` does the same for a
float32 matrix (any other stored type: F32, F16, ...), and ``matmul(x, packed)`` computes
``x @ W.T`` (T, in) -> (T, out) with float32 activations and accumulation.

Exactness: the kernel's weights are gguf's float32 dequantization bit for bit, and output ``o``
of row ``r`` is always the same sequence ``acc = fma(w[o, i], x[r, i], acc)`` for i = 0 … in-1,
so a row's result does not depend on how many rows the call has (batch invariance), nor on the
path: AVX-512, AVX2 + FMA and plain C (``fmaf``) give the same bits. Against the float64 product
of the same weights, ``|y - y64| <= γ_in · (|W| @ |x|)`` with ``γ_n = n·u / (1 - n·u)``,
``u = 2⁻²⁴`` (sequential fused summation).

``LLMQP_KERNEL_ISA=c|avx2|avx512`` (or :func:`forced_isa`) forces a path, for tests; a path the
CPU lacks falls back to the best it has.

Threads: a call of at least :data:`THREAD_MIN_ROWS` rows (a batched pass; compute-bound) splits
its output groups between :func:`threads` threads (``LLMQP_KERNEL_THREADS`` or
:func:`set_threads`; default 1: on a busy 2-core machine a second thread measured slower). Each
output is computed by the same code in the same order whichever thread runs it, so results are
identical for any thread count.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import numpy as np

try:
    from . import _qkernel
except ImportError as exc:  # a checkout whose C kernels were never built
    raise ImportError(
        f"the engine's C kernels are not built ({exc}): run `pip install -e .` "
        "or `python setup.py build_ext --inplace` in the repository"
    ) from exc

__all__ = [
    "ISAS",
    "Packed",
    "pack_f32",
    "pack_stored",
    "matmul",
    "matmul_rows",
    "best_isa",
    "forced_isa",
    "threads",
    "set_threads",
]

ISAS = ("c", "avx2", "avx512")
STORED_KINDS = ("Q4_0", "Q4_1", "Q8_0")
F32, Q4, Q8 = 0, 1, 2
LANES, BLOCK = 16, 32
_EMPTY = np.empty(0, np.float32)
_EMPTY_H = np.empty(0, np.float16)
NO_GROUPS = np.empty(0, np.int64)  # no group selection: every output
_forced: list[str | None] = [os.environ.get("LLMQP_KERNEL_ISA") or None]
#: Rows from which a call splits its outputs between threads (fewer: one thread; a thread's start
#: costs tens of µs, a one-row call of a layer a few hundred).
THREAD_MIN_ROWS = 4
MAX_THREADS = 8
_default_threads = os.environ.get("LLMQP_KERNEL_THREADS") or 1  # see docs/results.md
_threads = [max(1, min(MAX_THREADS, int(_default_threads)))]


@dataclass(frozen=True)
class Packed:
    """One (out, in) weight matrix in the kernel's layout: ``q`` the packed values (uint8
    nibbles, int8 or float32), ``d``/``m`` the file's f16 per-32-block scales and mins
    (G, in/32, 16)."""

    fmt: int
    q: np.ndarray
    d: np.ndarray
    m: np.ndarray
    out: int
    inp: int

    @property
    def nbytes(self) -> int:
        return int(self.q.nbytes + self.d.nbytes + self.m.nbytes)


def best_isa() -> str:
    """The fastest path this CPU runs."""
    return ISAS[_qkernel.best_isa()]


@contextlib.contextmanager
def forced_isa(name: str | None):
    """Run the block with the kernel's ``name`` path (``None``: the best)."""
    if name is not None and name not in ISAS:
        raise ValueError(f"isa must be one of {ISAS} or None, got {name!r}")
    old, _forced[0] = _forced[0], name
    try:
        yield
    finally:
        _forced[0] = old


def threads() -> int:
    """The threads a call of ≥ THREAD_MIN_ROWS rows uses."""
    return _threads[0]


def set_threads(n: int) -> int:
    """Use ``n`` threads (1 … MAX_THREADS) for calls of ≥ THREAD_MIN_ROWS rows; the old count."""
    from ..model.validate import check_int

    old, _threads[0] = _threads[0], check_int("threads", n, 1, MAX_THREADS)
    return old


def call_threads(t: int) -> int:
    """The threads a call of ``t`` rows runs on."""
    return _threads[0] if t >= THREAD_MIN_ROWS else 1


def isa_code() -> int:
    """The path the C routines run: the forced one, or -1 (the best this CPU has)."""
    return -1 if _forced[0] is None else ISAS.index(_forced[0])


def _lanes(a: np.ndarray, out: int) -> np.ndarray:
    """(out, ...) -> (G, ..., 16): outputs padded to whole groups, moved to the last axis."""
    pad = (-out) % LANES
    if pad:
        a = np.concatenate([a, np.zeros((pad,) + a.shape[1:], a.dtype)])
    g = a.reshape((-1, LANES) + a.shape[1:])
    return np.ascontiguousarray(np.moveaxis(g, 1, -1))


def pack_f32(w: np.ndarray) -> Packed:
    """A float32 (out, in) matrix, stored as is: (G, in, 16)."""
    w = np.asarray(w, dtype=np.float32)
    return Packed(F32, _lanes(w, w.shape[0]), _EMPTY_H, _EMPTY_H, w.shape[0], w.shape[1])


def pack_stored(kind: str, raw: np.ndarray, shape: tuple[int, int]) -> Packed:
    """GGUF blocks ``raw`` (out, row bytes) uint8 of type ``kind`` at (out, in) ``shape``."""
    out, inp = shape
    nb = inp // BLOCK
    if kind not in STORED_KINDS or inp % BLOCK:
        raise ValueError(f"kind must be one of {STORED_KINDS} with in % 32 == 0, got {kind!r}")
    blocks = np.asarray(raw, dtype=np.uint8).reshape(out, nb, -1)
    d = blocks[..., 0:2].copy().view(np.float16)[..., 0]  # (out, nb), the file's f16 scales
    if kind == "Q8_0":
        q = blocks[..., 2:34].copy().view(np.int8).reshape(out, inp)
        return Packed(Q8, _lanes(q, out), _lanes(d, out), _EMPTY_H, out, inp)
    if kind == "Q4_1":
        m = blocks[..., 2:4].copy().view(np.float16)[..., 0]
        qs = blocks[..., 4:20]
    else:  # Q4_0: w = d·(q - 8) = fma(q, d, -8d), exact (an f16 times a 4-bit integer)
        if np.abs(d.astype(np.float32)).max(initial=0) * 8 > np.finfo(np.float16).max:
            raise ValueError("Q4_0 scale too large for m = -8d in f16")  # read it as float32
        m = d * np.float16(-8.0)  # a power-of-two scaling: exact in f16
        qs = blocks[..., 2:18]
    # stored: byte j holds element j (low) and j + 16 (high); packed: byte k holds 2k and 2k+1,
    # and each output's 4 bytes of a chunk of 8 inputs form one little-endian uint32 lane
    vals = np.concatenate([qs & 15, qs >> 4], axis=-1)  # (out, nb, 32) in element order
    pairs = (vals[..., 0::2] | (vals[..., 1::2] << 4)).reshape(out, inp // 8, 4)
    q = np.ascontiguousarray(np.swapaxes(_lanes(pairs, out), -1, -2))  # (G, in/8, 16, 4)
    return Packed(Q4, q, _lanes(d, out), _lanes(m, out), out, inp)


def matmul(x: np.ndarray, p: Packed, out: np.ndarray | None = None, col: int = 0) -> np.ndarray:
    """(T, in) float32 @ W.T -> (T, out) float32, written to columns ``col … col + out`` of
    ``out`` (T, N) C-contiguous float32 when given (fused projections share one output)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != p.inp:
        raise ValueError(f"x must be (T, {p.inp}) float32, got shape {x.shape}")
    t = x.shape[0]
    if out is None:
        out = np.empty((t, p.out), np.float32)
    ok = out.ndim == 2 and out.shape[0] == t and out.dtype == np.float32
    if not (ok and out.flags.c_contiguous and 0 <= col <= out.shape[1] - p.out):
        raise ValueError(f"out must be ({t}, >= {col + p.out}) C-contiguous float32")
    isa = isa_code()
    flat = out.reshape(-1)[col:]
    _qkernel.proj(p.fmt, p.q, p.d, p.m, p.out, p.inp, x, t, p.inp, flat, out.shape[1], isa,
                  NO_GROUPS, call_threads(t))  # fmt: skip
    return out


def matmul_rows(x: np.ndarray, p: Packed, rows: np.ndarray) -> np.ndarray:
    """(T, in) -> (T, K): only outputs ``rows`` (K,) of ``x @ W.T`` — each one the very float
    :func:`matmul` gives it (same sequence of operations), so a head scored over a gathered
    legal set equals the dense head on those rows bit for bit. Work: the 16-output groups the
    rows fall in."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    if x.ndim != 2 or x.shape[1] != p.inp:
        raise ValueError(f"x must be (T, {p.inp}) float32, got shape {x.shape}")
    if len(rows) and not (0 <= rows.min() and rows.max() < p.out):
        raise ValueError(f"rows must be in [0, {p.out}), got min {rows.min()} max {rows.max()}")
    if not len(rows):
        return np.empty((x.shape[0], 0), np.float32)
    groups, where = np.unique(rows // LANES, return_inverse=True)
    y = np.empty((x.shape[0], len(groups) * LANES), np.float32)
    isa = isa_code()
    _qkernel.proj(p.fmt, p.q, p.d, p.m, p.out, p.inp, x, x.shape[0], p.inp, y, y.shape[1], isa,
                  groups, call_threads(x.shape[0]))  # fmt: skip
    return y[:, where * LANES + rows % LANES]
