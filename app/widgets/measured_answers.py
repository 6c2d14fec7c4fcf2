"""Server mode: the backend's sweep answers read for the figures (pure functions, no Panel).

:mod:`app.widgets.measured` draws with them: the measured head points of Figure 1 and the note of
what was measured, the measured and modelled K* at every measured batch, the amortized sweep's
points of Figure 2a, and the calibrated profile an answer carries.
"""

from __future__ import annotations

import html

import numpy as np

from app.model import Hardware

__all__ = [
    "BATCHES",
    "measured_notes",
    "head_points",
    "body_points",
    "batch_grid",
    "kstar_by_batch",
    "calibrated_hardware",
    "head_key",
    "same_head",
]

#: Batch sizes "Measure K* over batch" sweeps (with the scenario's own), as far as the backend's
#: ``batch`` limit allows.
BATCHES = (1, 2, 4, 8, 16)


def measured_notes(head: dict | None, body: dict | None, body_note: str = "") -> str:
    """HTML beside Figure 1: what the measured points are — the head's shape and device, how
    it was measured (row blocks over the memory budget), and the body the amortized sweep
    timed."""
    if not head or "params" not in head:
        return ""
    p, dev = head["params"], head.get("device") or {}
    parts = [
        f"Measured on {html.escape(str(dev.get('device_name') or dev.get('device') or '?'))} "
        f"({html.escape(str(dev.get('impl', '?')))}): head d {p['d']}, |V| {p['vocab']:,}, "
        f"batch {p['batch']}, {html.escape(str(p['dtype']))}"
    ]
    blocks = head.get("measured_in")
    if blocks:
        parts.append(html.escape(blocks["note"]))
    if body and "params" in body:
        b = body["params"]
        parts.append(
            f"body: the engine's Llama body, {b['layers']} layers at d {b['d']} "
            f"({html.escape(str(b.get('weights', 'random')))} weights)"
        )
    if body_note:
        parts.append(html.escape(body_note))
    return "<small>" + "; ".join(parts) + ".</small>"


def head_points(answer: dict | None) -> dict | None:
    """``{"k", "dense_s", "sparse_s"}`` (measured medians) of a head-sweep answer."""
    if not answer or "plans" not in answer:
        return None
    plans = answer["plans"]
    return {
        "k": list(answer["k"]),
        "dense_s": list(plans["dense_head"]["median_s"]),
        "sparse_s": list(plans["sparse_head"]["median_s"]),
    }


def body_points(answer: dict | None, context: int) -> dict | None:
    """Measured and modelled seconds of the amortized and the full step at the swept context
    nearest ``context``, and the measured crossover length."""
    if not answer or "plans" not in answer:
        return None
    ctx = np.asarray(answer["context"])
    i = int(np.argmin(np.abs(ctx - context)))
    plans = answer["plans"]
    return {
        "context": int(ctx[i]),
        "amortized_s": float(plans["amortized_step"]["median_s"][i]),
        "full_s": float(plans["full_step"]["median_s"][i]),
        "amortized_model_s": float(plans["amortized_step"]["model_s"][i]),
        "full_model_s": float(plans["full_step"]["model_s"][i]),
        "n_star": (answer.get("crossover") or {}).get("measured_n"),
    }


def batch_grid(batch: int, limits: dict | None) -> list[int]:
    """Batches of a K*-over-batch sweep: :data:`BATCHES` and ``batch``, within the backend's
    ``batch`` limit (``GET /v1/device``'s ``limits``; 64 when it does not say)."""
    top = int(((limits or {}).get("batch") or (1, 64))[1])
    return sorted({b for b in (*BATCHES, int(batch)) if 1 <= b <= top})


def kstar_by_batch(heads: dict, s) -> list[dict]:
    """``[{"batch", "measured_k", "model_k"}]`` for every head answer in ``heads`` (keyed by
    :func:`head_key`) at ``s``'s head shape and dtype, whatever its batch: the measured
    crossover (interpolated; None where the sparse head loses at the first K) and the model's
    roofline K* at that batch on ``s``'s hardware (the curve Figure 1 draws)."""
    from app.measure.answers import measured_crossover
    from app.model import find_crossover

    rows = []
    for (d, vocab, batch, dtype), answer in heads.items():
        if (d, vocab, dtype) != (s.d, s.vocab, s.dtype):
            continue
        pts = head_points(answer)
        _, k = measured_crossover(pts["k"], pts["sparse_s"], pts["dense_s"][0])
        model = find_crossover(d, vocab, batch, dtype, s.hw).k_roofline
        rows.append({"batch": batch, "measured_k": k, "model_k": model})
    return sorted(rows, key=lambda r: r["batch"])


def calibrated_hardware(answer: dict | None) -> Hardware | None:
    """The calibrated profile an answer carries, ``None`` while the backend has only a preset."""
    hw = (answer or {}).get("hardware") or {}
    if hw.get("source") != "calibrated" or not hw.get("profile"):
        return None
    return Hardware.from_dict(hw["profile"])


def head_key(answer: dict | None) -> tuple:
    p = (answer or {}).get("params") or {}
    return (p.get("d"), p.get("vocab"), p.get("batch"), p.get("dtype"))


def same_head(answer: dict | None, s) -> bool:
    return head_key(answer) == (s.d, s.vocab, s.batch, s.dtype)
