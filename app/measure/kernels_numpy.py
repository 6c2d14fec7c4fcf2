"""Kernels in numpy on the CPU: the default backend, available everywhere.

numpy has no bfloat16 and its float16 matmul does not use BLAS, so this backend measures float32
only (a request for another dtype is refused with the options). Work buffers are allocated once
per shape and reused, so a timed call does not pay for page faults of fresh memory.
"""

from __future__ import annotations

import os
import platform

import numpy as np

from ..engine import heads_numpy
from ..model.validate import check_choice, check_int
from . import llama
from .timing import PerfCounterClock

__all__ = ["NumpyKernels", "cpu_name", "LAUNCHES"]

# 3: the heads are the engine's kernels (gathers in whole 64-row chunks); 4: the body is the
# engine's Llama body (app/measure/llama.py), no longer a one-layer ReLU stand-in; 5: that body
# on the exact quantized kernel and C row routines (10 calls a layer instead of 65); 6: the
# attention routine's own vectorized exponential and grouped query heads (same call counts).
VERSION = "numpy-6"

#: Library calls this implementation makes per operation of the cost model (keys of
#: :data:`app.model.LAUNCHES`), counted from the code below: every numpy call that computes or
#: copies array data counts once, views and slices do not. The calibration prices one call as
#: ``overhead``, so the model's launch count matches what runs.
LAUNCHES = {
    "dense_gemm": 2,  # matmul W @ hᵀ, copy the (V, B) logits to (B, V)
    "masked_argmax": 2,  # copyto -inf where blocked, argmax
    "gather_gemm": 3,  # per chunk: take the rows, pad, stacked matmul (more chunks: more bytes)
    "argmax": 3,  # argmax, arange, pick the ids (a rerank's top-r selection has 4: negate,
    #                argpartition, pick, sort; the model has no operation for it)
    # The engine's NumpyLlama (app/engine/forward_numpy.py, the q kernel) at one token: 2 C
    # RMSNorms, 4 projection-kernel calls (fused QKV, output, fused gate/up, down: parts of one
    # stored type are packed together), 1 C attention (RoPE, cache write, softmax), 1 C SiLU
    # gate, 2 residual adds. Recount when the body changes (the calibration prices each call).
    "layer": 10,
    "step": 3,  # the embedding rows, the final RMSNorm, joining the batch's rows
    "update": 1,  # e @ U
    "add": 1,  # h_stable + ...
}


def cpu_name() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``), else :func:`platform.processor`."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def set_blas_threads(threads: int | None) -> int | None:
    """Limit the BLAS library's threads (process-wide) when ``threads`` is given.

    Uses ``threadpoolctl`` when it is installed (it is not a dependency); without it a request
    for a limit raises ``ValueError`` so the caller can say so. Returns the limit set, or None.
    """
    if threads is None:
        return None
    check_int("threads", threads, 1, 1024)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        raise ValueError(
            "Setting 'threads' needs threadpoolctl (pip install threadpoolctl); or set "
            "OPENBLAS_NUM_THREADS before starting Python."
        ) from None
    threadpool_limits(limits=threads, user_api="blas")
    return threads


def blas_info() -> list:
    """The BLAS libraries numpy uses and their thread counts (empty without threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    keep = ("internal_api", "version", "num_threads", "threading_layer")
    return [{k: lib.get(k) for k in keep} for lib in threadpool_info() if lib["user_api"] == "blas"]


class NumpyKernels:
    """The numpy implementation of the primitives in :mod:`app.measure.kernels`."""

    impl = "numpy"
    version = VERSION
    dtypes = ("float32",)

    def __init__(self, device: str = "cpu", threads: int | None = None):
        if device != "cpu":
            raise ValueError(
                f"The 'device' parameter must be 'cpu' for impl='numpy'. Got {device!r} instead."
            )
        self.device = device
        self.device_name = cpu_name()
        self._buffers: dict = {}
        self._bodies = llama.LlamaModels()
        self.threads = set_blas_threads(threads)

    # -- facts and tools ------------------------------------------------------------------
    def info(self) -> dict:
        return {
            "device": self.device,
            "device_name": self.device_name,
            "impl": self.impl,
            "kernel_version": self.version,
            "dtypes": list(self.dtypes),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "cpu_count": os.cpu_count(),
            "blas": blas_info(),
        }

    def clock(self):
        return PerfCounterClock()

    def flusher(self, nbytes: int):
        """Writes ``nbytes`` of scratch memory, evicting the caches; ``None`` for 0."""
        if nbytes <= 0:
            return None
        scratch = np.zeros(nbytes // 8, dtype=np.float64)

        def flush():
            np.add(scratch, 1.0, out=scratch)

        return flush

    def _dtype(self, dtype):
        return np.dtype(check_choice("dtype", dtype, self.dtypes))

    def release(self) -> None:
        """Drop the work arrays and the body (a sweep's buffers must not outlive it)."""
        self._buffers.clear()
        self._bodies.clear()

    def _buffer(self, name, shape, dtype=np.float32):
        """A reusable work array of ``shape`` (one per name and shape, reused across calls)."""
        key = (name, shape, dtype)
        buf = self._buffers.get(key)
        if buf is None:
            if len(self._buffers) > 64:  # many shapes seen: start over rather than grow
                self._buffers.clear()
            buf = self._buffers[key] = np.empty(shape, dtype=dtype)
        return buf

    # -- tensors --------------------------------------------------------------------------
    def random(self, shape, dtype, seed, scale=1.0):
        dt = self._dtype(dtype)
        x = np.random.Generator(np.random.PCG64(seed)).standard_normal(shape, dtype=np.float32)
        x *= np.float32(scale)  # in place: a 2 GB head needs no second 2 GB
        return x.astype(dt, copy=False)

    def asarray(self, array, dtype):
        return np.ascontiguousarray(np.asarray(array), dtype=self._dtype(dtype))

    def asids(self, array):
        return np.ascontiguousarray(np.asarray(array), dtype=np.int64)

    def to_numpy(self, x) -> np.ndarray:
        return np.asarray(x)

    def legal_ids(self, vocab, batch, k, seed):
        rng = np.random.Generator(np.random.PCG64(seed))
        ids = np.empty((batch, k), dtype=np.int64)
        for b in range(batch):
            ids[b] = np.sort(rng.choice(vocab, size=k, replace=False))
        return ids

    def blocked(self, ids, vocab):
        out = np.ones((ids.shape[0], vocab), dtype=bool)
        np.put_along_axis(out, np.asarray(ids), False, axis=1)
        return out

    # -- head kernels: the engine's own (app/engine/heads_numpy.py), with reused buffers ------
    def dense_head(self, W, h, blocked):
        """(V, d), (B, d), (B, V) -> (B,): GEMV/GEMM over the vocabulary, mask, argmax."""
        return heads_numpy.dense_head(W, h, blocked, self._buffer)

    def sparse_scores(self, W, h, ids):
        """(V, d), (B, d), (B, K) -> (B, K): each sequence's K rows gathered, then a GEMV."""
        return heads_numpy.sparse_scores(W, h, ids, self._buffer)

    def sparse_head(self, W, h, ids):
        """(V, d), (B, d), (B, K) ascending ids -> (B,): the first maximum is the lowest id."""
        return heads_numpy.sparse_head(W, h, ids, self._buffer)

    def top_ids(self, scores, ids, r):
        """(B, K), (B, K) -> (B, r): ids of the r best scores, ascending."""
        return heads_numpy.top_ids(scores, ids, r)

    def body(self, d, layers, batch, dtype, context, seed, weights=None):
        """The engine's Llama body (:class:`app.measure.llama.LlamaBody`): on ``weights`` when
        given (the served model's), else random weights at the Llama shape of ``(d, layers)``."""
        self._dtype(dtype)
        models = self._bodies.get(d, layers, seed, weights)  # one build for every context
        return llama.LlamaBody(models, batch, context, seed + 1)
