"""The output projection as the decode plans see it: injected like the body's projections
(:mod:`app.engine.linear`), one object per engine, ``engine.head``.

A head answers two questions about final states ``h`` (B, d) float32:

* ``logits(h)`` -> (B, V') float32, every output row (V' ≥ V: padding rows may follow);
* ``rows(h, ids)`` -> (B, K) float32, only the rows ``ids`` (K,) — SparseHead's gather.

Two kernels, chosen with the body's (``--kernel``):

* :class:`QHead` (``"q"``): :func:`app.engine.qkernel.matmul` over the GGUF's stored output
  blocks (SmolLM2: the tied Q8_0 embedding, 49,152 × 576 — 30 MB read per token instead of
  113 MB of float32), or over the float32 matrix for any other stored type. ``rows`` is the
  kernel's gather variant (:func:`~app.engine.qkernel.matmul_rows`): it computes the 16-output
  groups the ids fall in, each output by the very sequence of operations ``logits`` uses.
* :class:`BlasHead` (``"blas"``): float32 numpy over the padded matrix (:mod:`heads_numpy`).

Exactness (the lemma every exact plan rests on): ``rows(h, ids)[b, j] == logits(h)[b, ids[j]]``
bit for bit, for every ``ids`` — QHead by construction (one fixed reduction order per output,
whichever outputs a call computes), BlasHead by scoring gathered rows in whole ``PAD_ROWS``
blocks (see :mod:`heads_numpy`; proved there at B = 1). QHead is also batch-invariant: row
``b`` of a B-row ``logits`` call is its one-row call bit for bit (:attr:`batch_invariant`), so a
scheduler may run the dense heads of a pass as one call (:meth:`QHead.batched`). BlasHead is
not (a GEMM rounds its rows differently from a GEMV): its rows must be scored one at a time.
The two kernels round differently from each other: compare them within float32 rounding.
"""

from __future__ import annotations

import contextlib

import numpy as np

from . import heads_numpy, qkernel

__all__ = ["BlasHead", "QHead", "as_head", "output_head"]


class BlasHead:
    """float32 (V_pad, d) ``matrix`` through numpy's BLAS, rows in whole ``PAD_ROWS`` blocks."""

    kernel = "blas"
    batch_invariant = False

    def __init__(self, matrix: np.ndarray):
        self.matrix = matrix
        self.shape = matrix.shape

    def logits(self, h: np.ndarray) -> np.ndarray:
        """(B, d) -> (B, V_pad); at B = 1 the GEMV the sparse gather matches."""
        return heads_numpy.logits(self.matrix, h)

    def rows(self, h: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """(B, d), (K,) ascending ids -> (B, K): the rows ``ids`` of :meth:`logits`."""
        ids = np.asarray(ids, dtype=np.int64).reshape(1, -1)
        return heads_numpy.sparse_scores(self.matrix, h, np.repeat(ids, h.shape[0], axis=0))


class QHead:
    """The projection kernel over ``packed`` (V, d); ``matrix`` is the float32 (V_pad, d) copy
    for callers that need the values themselves (the amortizer's fit, the compiled step)."""

    kernel = "q"
    batch_invariant = True

    def __init__(self, packed: qkernel.Packed, matrix: np.ndarray):
        self.packed, self.matrix = packed, matrix
        self.shape = matrix.shape
        self._primed: dict[bytes, np.ndarray] = {}

    def logits(self, h: np.ndarray) -> np.ndarray:
        """(B, d) -> (B, V); a state primed by :meth:`batched` is looked up, not recomputed."""
        if h.shape[0] == 1 and self._primed:
            row = self._primed.get(np.ascontiguousarray(h[0], np.float32).tobytes())
            if row is not None:
                return row[None]
        return qkernel.matmul(h, self.packed)

    def rows(self, h: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """(B, d), (K,) ids -> (B, K): the very floats :meth:`logits` gives those rows."""
        return qkernel.matmul_rows(h, self.packed, ids)

    @contextlib.contextmanager
    def batched(self, states: np.ndarray):
        """Within the block, a one-state :meth:`logits` call for any row of ``states`` (B, d)
        returns that row of one B-row kernel call — the same bits (batch invariance), with the
        weights read once for the B states instead of B times."""
        states = np.ascontiguousarray(states, np.float32)
        out = qkernel.matmul(states, self.packed)
        self._primed = {s.tobytes(): row for s, row in zip(states, out)}
        try:
            yield out
        finally:
            self._primed = {}


def as_head(output) -> BlasHead | QHead:
    """A head as is; a bare float32 (V_pad, d) matrix as its :class:`BlasHead`."""
    return output if isinstance(output, (BlasHead, QHead)) else BlasHead(output)


def output_head(weights, matrix: np.ndarray, kernel: str = "q", packed=None) -> BlasHead | QHead:
    """The head of ``weights`` under ``kernel`` ("q" or "blas"); ``matrix`` is the float32
    output matrix (the engine pads it to whole ``PAD_ROWS`` blocks: what BlasHead reads);
    ``packed``: the kernel's packing of it, when already made (the body's)."""
    if kernel not in ("q", "blas"):
        raise ValueError(f"kernel must be one of q, blas, got {kernel!r}")
    if kernel == "blas":
        return BlasHead(matrix)
    if packed is not None:
        return QHead(packed, matrix)
    name = "token_embd.weight" if weights.config.tied else "output.weight"
    st = weights.stored.get(name)
    if st is not None:
        try:
            return QHead(qkernel.pack_stored(st.kind, st.data, st.shape), matrix)
        except ValueError:  # blocks the kernel cannot hold as stored: the float32 copy
            pass
    return QHead(qkernel.pack_f32(weights.output), matrix)
