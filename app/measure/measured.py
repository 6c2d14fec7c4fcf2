"""Measured per-plan latencies for the router, with the signature of ``model_latency``.

``measured_latency(source, scenario)`` returns ``f(k, context, miss) -> (T, A)`` seconds of the
registry's plans (the order of :data:`app.model.PLAN_NAMES`), so
``make_stream(s, ..., latency=measured_latency(store, s))`` trains a router on measured costs.
It is built from stored rows of the scenario's head shape ``(d, vocab, batch, dtype)`` and,
where an amortized sweep was run at its ``layers``, its body.

The plans are composed by the registry's recipes (:func:`app.model.plan_seconds`); this module
only supplies measured seconds for the kernel terms it has (``s(k)`` the sparse head, ``c`` the
context, ``k0`` the amortized sweep's K)::

    SparseScore      s(k)                                  sparse_head rows
    DenseScore       dense_head                            dense_head rows
    DecodeStep       full_step(c) - s(k0)                  full_step rows
    AmortizedUpdate  amortized_step - s(k0)                amortized_step row
    Rerank           amortized_rerank(c) - amortized_step  amortized_rerank rows

Interpolation: ``s(k)`` log-log over the measured K; ``DecodeStep`` and ``Rerank`` linearly over
the measured contexts. **Outside the measured range, and for what was not measured at all, the
calibrated cost model is used instead** (the profile fitted to the same device's rows, or
``hardware`` when given, or the scenario's own when too few rows exist): below the smallest or
above the largest measured K or context, the KV-cache-miss prefill (``CacheMiss``),
FullRecompute's ``Prefill``, ForcedToken's ``ForcedPrefill``, and the dense head if it was not
measured. ``f.coverage`` says which parts are measured, their ranges and the profile used for
the rest.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from ..model import (
    Hardware,
    Scenario,
    Setting,
    Step,
    TransformerShape,
    amortized_update_cost,
    decode_step_cost,
    dense_head_cost,
    plan_seconds,
    sparse_head_cost,
)
from .calibration import calibrate
from .kernels import preset_for
from .llama import body_shape
from .store import ResultStore

__all__ = ["measured_latency", "answer_rows"]


def _rows(source) -> list:
    """Rows from a store, from rows, or from sweep answers (``None`` entries skipped)."""
    if isinstance(source, ResultStore):
        return source.query()
    if isinstance(source, dict):
        source = [source]
    rows = []
    for item in source:
        if item is None:
            continue
        rows.extend(answer_rows(item) if "plans" in item else [item])
    return rows


def answer_rows(answer: dict) -> list:
    """The stored-row form (plan, shape, ``median_s``) of a sweep answer's measurements."""
    dev, p, plans = answer["device"], answer["params"], answer["plans"]
    base = dict(
        device=f"{dev['device']}:{dev['device_name']}", impl=dev["impl"], d=p["d"],
        vocab=p["vocab"], batch=p["batch"], dtype=p["dtype"], layers=0, context=0, rerank_r=0,
        version=dev.get("kernel_version"), cache=answer.get("cache"),
    )  # fmt: skip
    if answer["sweep"] == "head":
        rows = [
            {**base, "plan": "dense_head", "k": 0, "median_s": plans["dense_head"]["median_s"][0]}
        ]
        for k, m in zip(answer["k"], plans["sparse_head"]["median_s"]):
            rows.append({**base, "plan": "sparse_head", "k": k, "median_s": m})
        return rows
    body = {**base, "k": p["k"], "layers": p["layers"]}
    rows = [{**body, "plan": "amortized_step", "median_s": plans["amortized_step"]["median_s"][0]}]
    full, rerank = plans["full_step"]["median_s"], plans["amortized_rerank"]["median_s"]
    for c, f, r in zip(answer["context"], full, rerank):
        rows.append({**body, "plan": "full_step", "context": c, "median_s": f})
        rows.append(
            {**body, "plan": "amortized_rerank", "context": c, "rerank_r": p["rerank_r"],
             "median_s": r}
        )  # fmt: skip
    return rows


def _pick_device(rows, device, impl) -> tuple:
    pairs = Counter((r["device"], r["impl"]) for r in rows)
    pairs = {p: n for p, n in pairs.items() if device in (None, p[0]) and impl in (None, p[1])}
    if not pairs:
        raise ValueError(f"No stored results for device={device!r}, impl={impl!r}.")
    if len(pairs) > 1:
        raise ValueError(
            f"Results from several devices/impls {sorted(pairs)}; pass 'device' and 'impl'."
        )
    return next(iter(pairs))


def _interp_loglog(x, xs, ys, fallback):
    """log-log interpolation inside ``[xs[0], xs[-1]]``, ``fallback(x)`` outside."""
    x = np.asarray(x, dtype=np.float64)
    inside = (x >= xs[0]) & (x <= xs[-1])
    est = np.exp(np.interp(np.log(np.maximum(x, 1.0)), np.log(xs), np.log(ys)))
    return np.where(inside, est, fallback(x))


def _interp_lin(x, xs, ys, fallback):
    x = np.asarray(x, dtype=np.float64)
    inside = (x >= xs[0]) & (x <= xs[-1])
    return np.where(inside, np.interp(x, xs, ys), fallback(x))


def _series(rows, key):
    """Sorted unique ``key`` values and the matching medians."""
    pts = sorted({r[key]: r["median_s"] for r in rows}.items())
    return np.array([p[0] for p in pts], dtype=np.float64), np.array([p[1] for p in pts])


def measured_latency(
    source,
    scenario: Scenario,
    *,
    hardware: Hardware | None = None,
    device: str | None = None,
    impl: str | None = None,
):
    """``f(k, context, miss) -> (T, A)`` seconds from stored measurements (see module doc).

    ``source`` is a :class:`~app.measure.store.ResultStore`, rows as ``/v1/results`` returns
    them, or sweep answers (``[head_answer, amortized_answer]``; ``None`` entries are skipped).
    Raises ``ValueError`` when no sparse-head row matches the scenario's head shape. The stored
    body (the engine's Llama body at :func:`app.measure.llama.llama_config`; SmolLM2-135M's
    shape at d 576) is used only at the scenario's ``layers`` and body shape; otherwise the body
    is modelled and ``coverage["body"]`` says why.
    """
    s = scenario
    rows = _rows(source)
    device, impl = _pick_device(rows, device, impl)
    mine = [r for r in rows if r["device"] == device and r["impl"] == impl]
    head = [
        r
        for r in mine
        if (r["d"], r["vocab"], r["batch"], r["dtype"]) == (s.d, s.vocab, s.batch, s.dtype)
    ]
    sparse_rows = [r for r in head if r["plan"] == "sparse_head"]
    if not sparse_rows:
        raise ValueError(
            f"No measured sparse head at d={s.d}, vocab={s.vocab}, batch={s.batch}, "
            f"dtype={s.dtype!r} on {device}; run a head sweep at that shape first."
        )
    hw = hardware or _calibrated(mine, device, s)
    args = (s.batch, s.dtype, hw)
    shape = s.shape
    one_layer = TransformerShape(s.d, 1, s.vocab, s.ffn, s.kv_dim, s.mlp_matrices)
    ks, ks_s = _series(sparse_rows, "k")

    def sparse(k):
        return _interp_loglog(
            k, ks, ks_s, lambda x: sparse_head_cost(s.d, s.vocab, x, *args).seconds
        )

    dense_rows = [r for r in head if r["plan"] == "dense_head"]
    dense = (
        float(np.median([r["median_s"] for r in dense_rows]))
        if dense_rows
        else float(dense_head_cost(s.d, s.vocab, *args).seconds)
    )
    body = _body(head, s, sparse, hw)
    body_note = body if isinstance(body, str) else None
    body = None if body_note else body
    coverage = {
        "device": device,
        "impl": impl,
        "hardware": hw.to_dict(),
        "sparse_head_k": [float(ks[0]), float(ks[-1])],
        "dense_head": "measured" if dense_rows else "model",
        "body": body["coverage"] if body else body_note or "model (no amortized sweep here)",
        "prefill": "model",
    }

    def exact_model(c):
        return decode_step_cost(shape, c, *args).seconds

    def exact_body(c):
        return _interp_lin(c, *body["exact"], exact_model) if body else exact_model(c)

    def rerank_extra(c, k):
        def model(x):
            return decode_step_cost(one_layer, x, *args).seconds + sparse(np.minimum(k, s.rerank_r))

        if body and body["rerank"] is not None:
            return _interp_lin(c, *body["rerank"], model)
        return model(c)

    amortized = body["amortized"] if body else float(amortized_update_cost(shape, *args).seconds)
    prices = {
        "SparseScore": lambda c, x: sparse(x.k),
        "DenseScore": lambda c, x: dense,
        "DecodeStep": lambda c, x: exact_body(x.context),
        "AmortizedUpdate": lambda c, x: amortized,
        "Rerank": lambda c, x: rerank_extra(x.context, x.k),
    }
    setting = Setting(shape, s.batch, s.dtype, hw, s.rerank_r, s.tau)

    def latency(k, context, miss):
        k, context, miss = (np.asarray(a, dtype=np.float64) for a in (k, context, miss))
        return plan_seconds(setting, Step(k, context, miss * context), prices)

    latency.coverage = coverage
    return latency


def _calibrated(rows, device, s) -> Hardware:
    kind = device.split(":", 1)[0]
    base, _ = preset_for(kind, device.split(":", 1)[-1])
    if rows:  # one kernel version and cache mode: those of the newest row
        last = max(rows, key=lambda r: r.get("created") or 0)
        same = ("version", "cache")
        rows = [r for r in rows if all(r.get(n) == last.get(n) for n in same)]
    try:
        return calibrate(rows, base).hardware
    except ValueError:
        return s.hw


def _body(head, s: Scenario, sparse, hw):
    """Measured body components at the scenario's layers; ``None`` when there are none, or the
    reason (a string) when the stored body's shape differs from the scenario's."""
    body_rows = [r for r in head if r["layers"] == s.layers and r["plan"] != "dense_head"]
    full = [r for r in body_rows if r["plan"] == "full_step"]
    if not full:
        return None
    stored = body_shape(s.d, s.layers, s.vocab)
    if (s.ffn, s.kv_dim, s.mlp_matrices) != (stored.ffn, stored.kv_dim, stored.mlp_matrices):
        return (
            f"model (the stored body, the engine's Llama body, has ffn={stored.ffn}, "
            f"kv_dim={stored.kv_dim}, mlp_matrices={stored.mlp_matrices}; the scenario has "
            f"ffn={s.ffn}, kv_dim={s.kv_dim}, mlp_matrices={s.mlp_matrices})"
        )
    k0 = Counter(r["k"] for r in full).most_common(1)[0][0]
    at_k0 = [r for r in body_rows if r["k"] == k0]
    am = [r for r in at_k0 if r["plan"] == "amortized_step"]
    s0 = float(sparse(np.array([k0]))[0])
    cx, cx_s = _series([r for r in at_k0 if r["plan"] == "full_step"], "context")
    am_s = float(am[0]["median_s"]) if am else None
    rr = [r for r in at_k0 if r["plan"] == "amortized_rerank" and r["rerank_r"] == s.rerank_r]
    rerank = None
    if rr and am_s is not None:
        rx, rx_s = _series(rr, "context")
        rerank = (rx, np.maximum(rx_s - am_s, 0.0))
    amortized = (
        max(am_s - s0, 0.0)
        if am_s is not None
        else float(amortized_update_cost(s.shape, s.batch, s.dtype, hw).seconds)
    )
    return {
        "exact": (cx, np.maximum(cx_s - s0, 0.0)),
        "rerank": rerank,
        "amortized": amortized,
        "coverage": {
            "k0": int(k0),
            "context": [float(cx[0]), float(cx[-1])],
            "amortized_step": "measured" if am_s is not None else "model",
            "amortized_rerank": "measured" if rerank is not None else "model",
        },
    }
