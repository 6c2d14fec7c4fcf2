"""The cost model's price of each measured kernel: all from the plan registry (:mod:`app.model`).

The measured transformer is the engine's Llama body at :func:`app.measure.llama.llama_config`
``(d, layers)`` (SwiGLU MLP of 8/3·d, a third of the heads for keys and values where three
divide them), priced through the bridge :func:`app.measure.llama.transformer_shape`.
Each sweep kernel is a registry term or a registry plan, stored under :func:`stored_name` and
priced by the registry's own recipe (:data:`SWEEP_KERNELS`, derived from the registry), so the
sweeps and the router's latencies compose kernels the same way, and a plan added to the registry
can be measured and priced with no edit here.
"""

from __future__ import annotations

import numpy as np

from ..model import PLAN_NAMES, TERMS, Cost, Hardware, Setting, Step, get_plan, plan_cost
from .llama import body_shape

__all__ = [
    "SWEEP_KERNELS",
    "STORED_NAMES",
    "stored_name",
    "registry_name",
    "model_cost",
    "model_costs",
    "model_seconds",
    "linear_features",
    "level_features",
]

#: Stored names of the kernels first measured before sweeps were keyed by the registry: the
#: result store keys rows by plan name, so these names stay. Any other registry term or plan is
#: stored under its own (CamelCase) name, which never collides with these snake-case ones.
STORED_NAMES = {
    "DenseScore": "dense_head",
    "SparseScore": "sparse_head",
    "SparseHead": "full_step",
    "AmortizedHead": "amortized_step",
    "AmortizedRerank": "amortized_rerank",
}
_REGISTRY_NAMES = {v: k for k, v in STORED_NAMES.items()}


def stored_name(what: str) -> str:
    """The result store's plan name of the registry term or plan ``what``."""
    if what not in TERMS and what not in PLAN_NAMES:
        raise ValueError(f"No registry term or plan {what!r}.")
    return STORED_NAMES.get(what, what)


def registry_name(stored: str) -> str:
    """The registry term or plan a stored plan name measures (the inverse of :func:`stored_name`);
    ``ValueError`` when it names neither."""
    what = _REGISTRY_NAMES.get(stored, stored)
    if what not in TERMS and what not in PLAN_NAMES:
        raise ValueError(f"No cost model for plan {stored!r}.")
    return what


#: What each sweep kernel runs, keyed by its stored name: every registry term (one leaf operator)
#: and every registry plan's recipe (at a warm KV cache, no refines), derived from the registry.
SWEEP_KERNELS = {stored_name(w): w for w in (*TERMS, *PLAN_NAMES)}


def _price(plan, d, vocab, batch, dtype, k, layers, context, rerank_r, hw) -> Cost:
    """The kernel's cost; ``k`` and ``context`` may be equally long arrays (one point each)."""
    what = registry_name(plan)
    # Head rows carry layers = rerank_r = 0: their terms read neither.
    c = Setting(body_shape(d, layers or 1, vocab), batch, dtype, hw, rerank_r or 1)
    x = Step(k, context)
    return TERMS[what](c, x) if what in TERMS else plan_cost(get_plan(what), c, x)


_SHAPE = ("plan", "d", "vocab", "batch", "dtype")
_FIELDS = ("k", "layers", "context", "rerank_r")
HEAD_PLANS = (STORED_NAMES["DenseScore"], STORED_NAMES["SparseScore"])
COST_FIELDS = ("flops", "bytes", "seconds", "compute_s", "memory_s", "overhead_s", "kernels")


def model_cost(row, hw: Hardware) -> Cost:
    """Modelled cost of one stored row (or :class:`~app.measure.store.Point` / dict) on ``hw``."""
    get = row.get if isinstance(row, dict) else lambda n: getattr(row, n)
    return _price(*(get(n) for n in _SHAPE + _FIELDS), hw)


def model_costs(rows, hw: Hardware) -> dict:
    """``{field: (n,) array}`` of every :class:`~app.model.Cost` field of ``rows`` on ``hw``.

    Rows of one plan and shape are priced in one call, over their ``k`` and ``context`` as
    arrays (what :func:`model_cost` gives row by row, many times faster)."""
    groups: dict = {}
    for i, r in enumerate(rows):
        key = tuple(r[n] for n in _SHAPE) + (
            (r.get("layers"), r.get("rerank_r")) if r["plan"] not in HEAD_PLANS else ()
        )
        groups.setdefault(key, []).append(i)
    out = {f: np.zeros(len(rows)) for f in COST_FIELDS}
    for idx in groups.values():
        first = rows[idx[0]]
        plan = first["plan"]
        k = np.array([rows[i]["k"] for i in idx], dtype=np.float64) if plan != "dense_head" else 0
        context = np.array([rows[i].get("context") or 0 for i in idx], dtype=np.float64)
        cost = _price(*(first[n] for n in _SHAPE), k, first.get("layers"), context,
                      first.get("rerank_r"), hw)  # fmt: skip
        for f in COST_FIELDS:
            out[f][idx] = np.broadcast_to(np.asarray(getattr(cost, f), dtype=np.float64), len(idx))
    return out


def model_seconds(rows, hw: Hardware) -> np.ndarray:
    """(n,) modelled seconds of ``rows`` on ``hw``."""
    return model_costs(rows, hw)["seconds"]


def _probe(gather_efficiency: float, cache_bytes: float = 0.0, launches=None) -> Hardware:
    # 1 byte/s, no overhead, compute never binding: memory_s is then bytes read, in "seconds".
    # With a cache level, bytes that fit stream at 1e300 B/s: memory_s counts only the others.
    return Hardware(
        "probe",
        {"float32": 1e300, "bfloat16": 1e300, "float16": 1e300},
        bandwidth=1.0,
        overhead=0.0,
        gather_efficiency=gather_efficiency,
        cache_bytes=float(cache_bytes),
        cache_bandwidth=1e300 if cache_bytes > 0 else 0.0,
        launches=dict(launches or {}),
    )


def linear_features(rows, launches=None) -> np.ndarray:
    """(n, 4) columns ``[launches, streamed bytes, gathered bytes, flops]`` of each row's plan.

    Read off the model itself by pricing on probe hardware: with bandwidth 1 B/s the memory term
    is ``stream + gather / efficiency``, so efficiencies 1 and ½ separate the two byte counts.
    ``launches`` (see :attr:`app.model.Hardware.launches`) sets the launch count. When every
    kernel is memory-bound the model's time is then linear in the hardware::

        seconds = launches·overhead + stream/bandwidth + gather/(bandwidth·gather_efficiency)
    """
    F = level_features(rows, [0.0], launches)[0]
    return np.stack([F[:, 0], F[:, 1] + F[:, 2], F[:, 3] + F[:, 4], F[:, 5]], axis=1)


def level_features(rows, cache_bytes, launches=None) -> np.ndarray:
    """(len(cache_bytes), n, 6) columns ``[launches, cold stream, hot stream, cold gather, hot
    gather, flops]`` of each row's plan, for each cache size in ``cache_bytes``.

    *Hot* bytes belong to operations whose working set fits in the cache size, *cold* ones to the
    others (all of them at size 0). Memory-bound, the model's time is then::

        launches·overhead + (cold stream + cold gather/eff)/bandwidth
                          + (hot stream + hot gather/eff)/cache_bandwidth
    """
    sizes = [float(c) for c in cache_bytes]
    out = np.zeros((len(sizes), len(rows), 6))
    c1 = model_costs(rows, _probe(1.0, 0.0, launches))
    total = c1["memory_s"]
    gather = model_costs(rows, _probe(0.5, 0.0, launches))["memory_s"] - total
    for j, size in enumerate(sizes):
        if size > 0:
            cold = model_costs(rows, _probe(1.0, size, launches))["memory_s"]
            cold_g = model_costs(rows, _probe(0.5, size, launches))["memory_s"] - cold
        else:
            cold, cold_g = total, gather
        hot_g = gather - cold_g
        hot_s = total - gather - (cold - cold_g)
        out[j] = np.stack([c1["kernels"], cold - cold_g, hot_s, cold_g, hot_g, c1["flops"]], 1)
    return np.where(np.abs(out) < 1e-6, 0.0, out)  # rounding in the differences
