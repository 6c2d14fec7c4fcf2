"""Roofline costs of the kernels a decode step is made of.

Every kernel is priced as ``max(flops / peak, bytes / bandwidth) + launches·overhead`` and a
plan's cost is the sum over its kernels. With a cache level in the profile, ``bandwidth`` is the
rate of the level the operation's working set fits in (:meth:`Hardware.stream_bandwidth`).
Functions broadcast over array arguments (``k`` or ``context`` as arrays) so a whole curve is one
call. All sizes are element counts; all times are seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .hardware import DTYPE_BYTES, DTYPES, Hardware, get_hardware
from .validate import check_array, check_choice, check_int

__all__ = [
    "Cost",
    "REGIMES",
    "kernel_cost",
    "select_cost",
    "dense_head_cost",
    "sparse_head_cost",
]

REGIMES = ("compute-bound", "memory-bound", "overhead-bound")
INDEX_BYTES = 4  # int32 token ids
LOGIT_OUT_BYTES = 8  # one int64 token id per sequence


@dataclass(frozen=True)
class Cost:
    """Work and time of a kernel or a sum of kernels (scalars or equally shaped arrays).

    ``seconds`` is the roofline time; ``compute_s``, ``memory_s`` and ``overhead_s`` are the three
    terms it is made of (each summed over kernels), so a figure can show why a plan costs what it
    costs. ``kernels`` counts launches.
    """

    flops: np.ndarray | float
    bytes: np.ndarray | float
    seconds: np.ndarray | float
    compute_s: np.ndarray | float
    memory_s: np.ndarray | float
    overhead_s: np.ndarray | float
    kernels: np.ndarray | float

    def __add__(self, other: Cost) -> Cost:
        return Cost(*(getattr(self, f) + getattr(other, f) for f in _FIELDS))

    def scale(self, factor) -> Cost:
        """Expected cost when this work runs with probability (or multiplicity) ``factor``."""
        return Cost(*(getattr(self, f) * factor for f in _FIELDS))

    @property
    def regime(self):
        """Which term dominates: ``'compute-bound'``, ``'memory-bound'`` or ``'overhead-bound'``."""
        terms = np.stack(np.broadcast_arrays(self.compute_s, self.memory_s, self.overhead_s))
        labels = np.asarray(REGIMES)[np.argmax(terms, axis=0)]
        return str(labels) if labels.ndim == 0 else labels

    def to_dict(self) -> dict:
        """JSON-ready dict (arrays become lists)."""
        out = {f: np.asarray(getattr(self, f)).tolist() for f in _FIELDS}
        out["regime"] = np.asarray(self.regime).tolist()
        return out


_FIELDS = ("flops", "bytes", "seconds", "compute_s", "memory_s", "overhead_s", "kernels")


def kernel_cost(
    flops, stream_bytes, hw: Hardware, dtype: str, gather_bytes=0.0, working_set=None, launches=1.0
) -> Cost:
    """One kernel: ``max(flops/peak, bytes/bandwidth) + launches·overhead``.

    ``gather_bytes`` are read as non-contiguous rows, at ``gather_efficiency`` of the bandwidth.
    With a cache level in ``hw``, the bytes stream at ``hw.stream_bandwidth(working_set)``: the
    rate of the operation's whole working set (default: this kernel's own bytes). ``launches``
    is how many calls the kernel takes (its share of the overhead).
    """
    compute = flops / hw.peak_flops[dtype]  # dtype checked by the public caller
    if hw.cache_bytes > 0:
        ws = stream_bytes + gather_bytes if working_set is None else working_set
        rate = hw.stream_bandwidth(ws)
    else:
        rate = hw.bandwidth
    memory = stream_bytes / rate + gather_bytes / (rate * hw.gather_efficiency)
    seconds = np.maximum(compute, memory) + launches * hw.overhead
    return Cost(
        flops=flops,
        bytes=stream_bytes + gather_bytes,
        seconds=seconds,
        compute_s=compute,
        memory_s=memory,
        overhead_s=launches * hw.overhead + 0.0 * seconds,
        kernels=launches + 0.0 * seconds,
    )


def _common(batch, dtype, hardware):
    batch = check_int("batch", batch, 1, 4096)
    dtype = check_choice("dtype", dtype, DTYPES)
    return batch, dtype, DTYPE_BYTES[dtype], get_hardware(hardware)


# Public functions check their arguments once and call the unchecked ``_…`` versions below,
# which the model's own inner loops (the crossover bisection, curves, plans) call directly.


def select_cost(n, batch=1, dtype="bfloat16", hardware="h100", op="argmax") -> Cost:
    """Choose a token from ``n`` scored candidates per sequence.

    ``op='argmax'`` is one pass (compare per element). ``op='softmax'`` is a restricted softmax
    followed by an inverse-CDF draw: a max pass, an exp-and-sum pass and a scan, ~5 flops and two
    reads per element, in two kernels.
    """
    n = check_array("n", n, 1, None, integer=True).astype(np.float64)
    batch, dtype, size, hw = _common(batch, dtype, hardware)
    op = check_choice("op", op, ("argmax", "softmax"))
    return _select(n, batch, dtype, size, hw, op)


def _select(n, batch, dtype, size, hw, op="argmax") -> Cost:
    if op == "argmax":
        return kernel_cost(
            n * batch, n * batch * size + batch * LOGIT_OUT_BYTES, hw, dtype,
            launches=hw.launch("argmax"),
        )  # fmt: skip
    passes = hw.launch("softmax_pass")
    first = kernel_cost(2.0 * n * batch, n * batch * size, hw, dtype, launches=passes)
    scan = kernel_cost(
        3.0 * n * batch, n * batch * size + batch * LOGIT_OUT_BYTES, hw, dtype, launches=passes
    )
    return first + scan


def dense_head_cost(d, vocab, batch=1, dtype="bfloat16", hardware="h100") -> Cost:
    """Dense masked LM head: logits over the whole vocabulary, mask, argmax.

    Kernel 1 (GEMM): ``2·d·|V|·batch`` flops; reads the ``d×|V|`` weights and the states, writes
    ``batch×|V|`` logits. Kernel 2 (masked argmax): reads the logits and a ``|V|``-bit mask per
    sequence.
    """
    d = check_int("d", d, 1, 1 << 20)
    vocab = check_int("vocab", vocab, 1, 1 << 24)
    batch, dtype, size, hw = _common(batch, dtype, hardware)
    return _dense(d, vocab, batch, dtype, size, hw)


def _dense(d, vocab, batch, dtype, size, hw) -> Cost:
    gemm = kernel_cost(
        2.0 * d * vocab * batch,
        float(d * vocab * size + batch * d * size + batch * vocab * size),
        hw,
        dtype,
        launches=hw.launch("dense_gemm"),
    )
    masked_argmax = kernel_cost(
        2.0 * vocab * batch,
        float(batch * vocab * size + batch * vocab / 8 + batch * LOGIT_OUT_BYTES),
        hw,
        dtype,
        launches=hw.launch("masked_argmax"),
    )
    return gemm + masked_argmax


def sparse_head_cost(d, vocab, k, batch=1, dtype="bfloat16", hardware="h100") -> Cost:
    """Sparse LM head: score only the ``K`` legal tokens, then argmax over them.

    Kernel 1 (gather-GEMM): ``2·d·K·batch`` flops; reads each sequence's ``K`` weight rows as a
    gather (every sequence has its own legal set) and its index list, writes ``batch×K`` scores.
    Its working set (for a cache level) counts each of the at most ``|V|`` distinct rows once.
    Kernel 2: argmax over the ``K`` scores. ``k`` may be an array (a curve over K).
    """
    d = check_int("d", d, 1, 1 << 20)
    vocab = check_int("vocab", vocab, 1, 1 << 24)
    k = check_array("k", k, 1, vocab, integer=True).astype(np.float64)
    batch, dtype, size, hw = _common(batch, dtype, hardware)
    return _sparse(d, vocab, k, batch, dtype, size, hw)


def _sparse(d, vocab, k, batch, dtype, size, hw) -> Cost:
    stream = batch * k * INDEX_BYTES + batch * d * size + batch * k * size
    gather_gemm = kernel_cost(
        2.0 * d * k * batch,
        stream,
        hw,
        dtype,
        gather_bytes=batch * k * d * size,
        # Sequences gather from the same weights: at most |V| distinct rows are touched.
        working_set=stream + np.minimum(batch * k, vocab) * d * size,
        launches=hw.launch("gather_gemm"),
    )
    return gather_gemm + _select(k, batch, dtype, size, hw)
