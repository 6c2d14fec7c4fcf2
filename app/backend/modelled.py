"""The cost model's price of each measured plan (no formula here: all from :mod:`app.model`).

The measured transformer is ``TransformerShape(d, layers, vocab)``: MLP of width 4d, no
grouped-query attention, a plain (two-matrix) MLP — exactly what the backend's ``body`` builds.
The plans compose the model's kernels as :func:`app.router.environment.model_latency` does.
"""

from __future__ import annotations

import numpy as np

from ..model import (
    Cost,
    Hardware,
    TransformerShape,
    amortized_update_cost,
    decode_step_cost,
    dense_head_cost,
    sparse_head_cost,
)

__all__ = ["model_cost", "model_seconds", "linear_features"]


def model_cost(row, hw: Hardware) -> Cost:
    """Modelled cost of one stored row (or :class:`~app.backend.store.Point` / dict) on ``hw``."""
    get = row.get if isinstance(row, dict) else lambda n: getattr(row, n)
    plan, d, vocab, batch, dtype = (get(n) for n in ("plan", "d", "vocab", "batch", "dtype"))
    args = (batch, dtype, hw)
    if plan == "dense_head":
        return dense_head_cost(d, vocab, *args)
    k = get("k")
    sparse = sparse_head_cost(d, vocab, k, *args)
    if plan == "sparse_head":
        return sparse
    shape = TransformerShape(d, get("layers"), vocab)
    if plan == "full_step":
        return decode_step_cost(shape, get("context"), *args) + sparse
    amortized = amortized_update_cost(shape, *args) + sparse
    if plan == "amortized_step":
        return amortized
    if plan == "amortized_rerank":
        one_layer = TransformerShape(d, 1, vocab)
        rescore = sparse_head_cost(d, vocab, min(k, get("rerank_r")), *args)
        return amortized + decode_step_cost(one_layer, get("context"), *args) + rescore
    raise ValueError(f"No cost model for plan {plan!r}.")


def model_seconds(rows, hw: Hardware) -> np.ndarray:
    """(n,) modelled seconds of ``rows`` on ``hw``."""
    return np.array([float(model_cost(r, hw).seconds) for r in rows])


def _probe(gather_efficiency: float) -> Hardware:
    # 1 byte/s, no overhead, compute never binding: memory_s is then bytes read, in "seconds".
    return Hardware(
        "probe",
        {"float32": 1e300, "bfloat16": 1e300, "float16": 1e300},
        bandwidth=1.0,
        overhead=0.0,
        gather_efficiency=gather_efficiency,
    )


_FULL, _HALF = _probe(1.0), _probe(0.5)


def linear_features(rows) -> np.ndarray:
    """(n, 4) columns ``[kernels, streamed bytes, gathered bytes, flops]`` of each row's plan.

    Read off the model itself by pricing on probe hardware: with bandwidth 1 B/s the memory term
    is ``stream + gather / efficiency``, so efficiencies 1 and ½ separate the two byte counts.
    When every kernel is memory-bound the model's time is then linear in the hardware::

        seconds = kernels·overhead + stream/bandwidth + gather/(bandwidth·gather_efficiency)
    """
    out = np.empty((len(rows), 4))
    for i, r in enumerate(rows):
        full, half = model_cost(r, _FULL), model_cost(r, _HALF)
        gather = float(half.memory_s) - float(full.memory_s)
        out[i] = (float(full.kernels), float(full.memory_s) - gather, gather, float(full.flops))
    return out
