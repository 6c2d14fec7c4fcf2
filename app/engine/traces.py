"""Decode traces: what a decode did per step, and ``llmqp traces collect`` — every plan measured
at every step of a workload.

``collect_request`` walks the exact trajectory (the tokens every lossless plan decodes) one token
at a time and at each step measures, on the same state: the grammar (legal set), the one-token
body, the amortizer's prediction, and — once per request — the body's per-token cost in a batch
of up to ``MAX_SKIP`` tokens (what a deferred token costs). Each plan's hindsight cost for the
step is then its kernel's (:meth:`app.engine.kernels.Kernel.cost`, which times its own head on
the :class:`~app.engine.kernels.TraceProbe`): a plan added to the kernel table is recorded with
no change here. Plans whose kernel returns None for a step are not recorded there.

It also records the amortizer's one-step prediction quality (from the exact previous state): the
predicted margin, whether the predicted token is the exact one, and the largest logit gap over
the legal set — the numbers behind ε̂ and the margin certificate.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from . import plans
from .amortized import amortized_head
from .kernels import KERNELS, TraceProbe
from .loop import MAX_SKIP

__all__ = ["collect_request", "step_rows", "load_costs"]


def _timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def _batch_share(body, prompt, reference_tokens, cache) -> float:
    """A deferred token's share of a batched forward: the output's first tokens in one run."""
    n_batch = min(MAX_SKIP, len(reference_tokens))
    _, batch_s = _timed(body.forward, reference_tokens[:n_batch], cache)
    cache.truncate(len(prompt))
    return batch_s / max(n_batch, 1)


def collect_request(engine, req, amortizer, reference_tokens=None, kernels=None) -> list[dict]:
    """Per-step trace rows of ``req`` with every plan's measured cost (see the module doc)."""
    kernels = KERNELS if kernels is None else kernels
    if reference_tokens is None:
        reference_tokens = engine.decode(req, plan="auto").tokens
    prompt = engine.prompt_ids(req)
    constraint = engine.constraint(req)
    body, output = engine.body, engine.head
    cache = body.new_cache(len(prompt) + len(reference_tokens) + MAX_SKIP)
    h = body.forward(prompt, cache)[-1]
    batch_share = _batch_share(body, prompt, reference_tokens, cache)
    eps_max = float(amortizer.meta.get("eps_max", np.inf))
    rows, prev_h = [], None
    for i, token in enumerate(reference_tokens):
        t0 = time.perf_counter()
        legal = constraint.legal() if constraint else engine.all_ids
        k = int(legal.shape[0])
        run = len(constraint.forced_run()) if constraint and k == 1 else 0
        grammar_s = time.perf_counter() - t0
        if i > 0:
            states, body1_s = _timed(body.forward, [reference_tokens[i - 1]], cache)
            h = states[-1]
        else:
            body1_s = batch_share  # the prefill's state: no body for step 0
        probe = TraceProbe(output, h, legal, int(token), grammar_s, body1_s, batch_share,
                           eps_max=eps_max)  # fmt: skip
        if i > 0:
            probe.h_pred, probe.predict_s = _timed(
                amortizer.predict, prev_h, reference_tokens[i - 1]
            )
        rows.append(_row(req, i, prompt, probe, run, kernels))
        prev_h = h
        if constraint:
            constraint.consume(int(token))
    return rows


def _row(req, i, prompt, probe: TraceProbe, run: int, kernels) -> dict:
    """One step's trace row: its telemetry, every recorded plan's cost, the amortizer's quality."""
    k, token = probe.k, probe.token
    row = {"request": req.id, "idx": i, "k": k, "forced": k == 1, "forced_run": run,
           "position": len(prompt) + i, "token": token}  # fmt: skip
    costs = {name: c for name, kernel in kernels.items() if (c := kernel.cost(probe)) is not None}
    if k == 1:
        row.update(margin=None, plan="ForcedToken", seconds=costs.get("ForcedToken"))
    else:
        (dense_tok, margin), _ = probe.timed("DenseHead", plans.dense_head, probe.output, probe.h,
                                             probe.legal)  # fmt: skip
        (sparse_tok, _), _ = probe.timed("SparseHead", plans.sparse_head, probe.output, probe.h,
                                         probe.legal)  # fmt: skip
        assert dense_tok == sparse_tok == token, (req.id, i)
        row.update(margin=margin, plan="DenseHead", seconds=costs.get("DenseHead"))
        if probe.h_pred is not None:
            args = (probe.output, probe.h_pred, probe.legal)
            (pred_tok, pred_margin), _ = probe.timed("AmortizedHead", amortized_head, *args)
            gap = np.abs(probe.output.matrix[probe.legal] @ (probe.h_pred - probe.h))
            row.update(pred_margin=pred_margin, pred_correct=pred_tok == token,
                       legal_gap=float(gap.max()))  # fmt: skip
    row["costs"] = costs
    return row


def step_rows(result, run_id: str) -> list[dict]:
    """A decode's own trace (what ran, measured seconds) as store rows."""
    rows = []
    for st in result.steps:
        rows.append(
            {
                "request": result.id,
                "idx": st.index,
                "k": st.k,
                "forced": st.forced,
                "forced_run": st.forced_run,
                "position": len(result.prompt_tokens) + st.index,
                "margin": st.margin,
                "plan": st.plan,
                "seconds": st.seconds,
                "chosen": st.chosen,
                "rolled_back": st.rolled_back,
                "run_id": run_id,
            }
        )
    return rows


def load_costs(path) -> dict:
    """``{(request, idx): {plan: seconds}}`` from a ``traces collect`` JSON file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--trace {path}: no such file (write one: llmqp traces collect)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        steps = data["steps"]
        return {(s["request"], int(s["idx"])): s["costs"] for s in steps}
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"--trace {path}: not a trace file ({exc})") from None


def limited(req, max_tokens):
    return dataclasses.replace(req, max_tokens=min(req.max_tokens, max_tokens))
