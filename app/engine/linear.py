"""The body's projection strategies (injected into the Llama body, as tinygrad's ``linear=``).

A layer has four projections, ``y = x @ W.T`` on (T, in) float32 rows: fused Q/K/V, the
attention output, fused gate/up, and down. Two strategies compute them, both batch-invariant
(a row's result never depends on the other rows of the call):

* ``"q"`` (the default): :mod:`app.engine.qkernel` over the GGUF's stored blocks (Q4_0, Q4_1,
  Q8_0) or, for any other stored type, over the float32 weights; one fixed reduction order per
  output, rows register-blocked so extra rows reuse each loaded weight.
* ``"blas"``: float32 GEMVs, one per row over blocks of weight rows that stay in cache (OpenBLAS
  rounds a GEMM's rows differently for different row counts, so never a GEMM).

The two round differently (same weights, other summation order): compare them within float32
rounding, never bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import qkernel
from .qkernel import _qkernel
from .weights import LlamaWeights

__all__ = ["KERNELS", "LayerProjections", "BlasLinear", "QLinear", "layer_projections"]

KERNELS = ("q", "blas")
ROW_BLOCK = 256  # weight rows per block: 256 × d floats stay in a core's L2 cache for d ≤ 1024
_GROUPS = {
    "qkv": ("attn_q", "attn_k", "attn_v"),
    "o": ("attn_output",),
    "gate_up": ("ffn_gate", "ffn_up"),
    "down": ("ffn_down",),
}
_FIELDS = {
    "attn_q": "wq",
    "attn_k": "wk",
    "attn_v": "wv",
    "attn_output": "wo",
    "ffn_gate": "w_gate",
    "ffn_up": "w_up",
    "ffn_down": "w_down",
}


class BlasLinear:
    """float32 (out, in) weights; ``x (T, in) -> (T, out)`` through one GEMV per row."""

    def __init__(self, parts: list[np.ndarray]):
        self.w = parts[0] if len(parts) == 1 else np.concatenate(parts)
        self.out = self.w.shape[0]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        w, t = self.w, x.shape[0]
        if t == 1:
            return (w @ x[0])[None]
        y = np.empty((t, w.shape[0]), np.float32)
        for lo in range(0, w.shape[0], ROW_BLOCK):
            block = w[lo : lo + ROW_BLOCK]
            for r in range(t):
                np.matmul(block, x[r], out=y[r, lo : lo + ROW_BLOCK])
        return y


class QLinear:
    """Packed parts side by side along the outputs: one kernel call per part, each writing
    its own columns of one (T, out) result.

    The body calls this 120 times a step, so a call goes straight to the C kernel with the
    part's arguments bound at load: only the cheap checks on ``x`` and ``out`` stay in Python
    (the C side checks every buffer's size). The floats are :func:`qkernel.matmul`'s."""

    def __init__(self, parts: list[qkernel.Packed]):
        self.parts = parts
        self.cols = np.cumsum([0] + [p.out for p in parts])[:-1].tolist()
        self.out = sum(p.out for p in parts)
        self.inp = parts[0].inp
        self._calls = [((p.fmt, p.q, p.d, p.m, p.out, p.inp), c) for p, c in zip(parts, self.cols)]

    def __call__(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """(T, in) float32 C-contiguous -> (T, out), into ``out`` (T, out) when given."""
        t = x.shape[0]
        if x.dtype != np.float32 or x.shape != (t, self.inp) or not x.flags.c_contiguous:
            raise ValueError(f"x must be (T, {self.inp}) C-contiguous float32, got {x.shape}")
        if out is None:
            out = np.empty((t, self.out), np.float32)
        elif out.dtype != np.float32 or out.shape != (t, self.out) or not out.flags.c_contiguous:
            raise ValueError(f"out must be ({t}, {self.out}) C-contiguous float32")
        isa, threads = qkernel.isa_code(), qkernel.call_threads(t)
        for (fmt, q, d, m, o, i), col in self._calls:
            y = out.reshape(-1)[col:] if col else out
            _qkernel.proj(fmt, q, d, m, o, i, x, t, i, y, self.out, isa, qkernel.NO_GROUPS, threads)
        return out


@dataclass(frozen=True)
class LayerProjections:
    qkv: BlasLinear | QLinear
    o: BlasLinear | QLinear
    gate_up: BlasLinear | QLinear
    down: BlasLinear | QLinear

    @property
    def nbytes(self) -> int:
        lins = (self.qkv, self.o, self.gate_up, self.down)
        if isinstance(self.qkv, BlasLinear):
            return int(sum(lin.w.nbytes for lin in lins))
        return int(sum(p.nbytes for lin in lins for p in lin.parts))


def _packed(weights: LlamaWeights, i: int, names: tuple[str, ...]) -> list[qkernel.Packed]:
    """The group's tensors packed; consecutive tensors stored alike are packed as one part."""
    runs: list[tuple[str | None, list[str]]] = []
    for n in names:
        st = weights.stored.get(f"blk.{i}.{n}.weight")
        kind = st.kind if st is not None else None  # None: read the float32 copy
        if runs and runs[-1][0] == kind:
            runs[-1][1].append(n)
        else:
            runs.append((kind, [n]))
    parts = []
    for kind, run in runs:
        if kind is not None:
            st = [weights.stored[f"blk.{i}.{n}.weight"] for n in run]
            shape = (sum(s.shape[0] for s in st), st[0].shape[1])
            try:
                parts.append(qkernel.pack_stored(kind, np.concatenate([s.data for s in st]), shape))
                continue
            except ValueError:  # blocks the kernel cannot hold as stored: the float32 copy
                pass
        w = [getattr(weights.layers[i], _FIELDS[n]) for n in run]
        parts.append(qkernel.pack_f32(np.concatenate(w)))
    return parts


def layer_projections(weights: LlamaWeights, kernel: str = "q") -> list[LayerProjections]:
    """Each layer's four projections under ``kernel`` (one of KERNELS)."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {', '.join(KERNELS)}, got {kernel!r}")
    out = []
    for i, lw in enumerate(weights.layers):
        if kernel == "blas":
            lin = {
                g: BlasLinear([getattr(lw, _FIELDS[n]) for n in ns]) for g, ns in _GROUPS.items()
            }
        else:
            lin = {g: QLinear(_packed(weights, i, ns)) for g, ns in _GROUPS.items()}
        out.append(LayerProjections(**lin))
    return out
