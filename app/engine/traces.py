"""Decode traces: what a decode did per step, and ``llmqp traces collect`` — every plan measured
at every step of a workload.

``collect_request`` walks the exact trajectory (the tokens every lossless plan decodes) one token
at a time and at each step times, on the same state: the grammar (legal set), the one-token
body, DenseHead's and SparseHead's heads, the amortizer's prediction + scoring, the rerank head,
and — once per request — the body's per-token cost in a batch of up to ``MAX_SKIP`` tokens (what
a deferred token costs). A step's hindsight cost per plan is then assembled from its own
measurements:

* DenseHead / SparseHead = grammar + body(1) + head;  AmortizedRerank = grammar + body(1) +
  rerank head (SparseHead where the rerank would refine);
* AmortizedHead = grammar + prediction + batched body share, plus body(1) + SparseHead when the
  predicted token is wrong (the rollback);  ForcedToken (K = 1) = grammar + batched body share.

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
from .amortized import DEFAULT_RERANK_R, amortized_head, amortized_rerank
from .loop import MAX_SKIP

__all__ = ["collect_request", "step_rows", "load_costs", "COST_PLANS"]

COST_PLANS = ("DenseHead", "SparseHead", "AmortizedHead", "AmortizedRerank")


def _timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def collect_request(engine, req, amortizer, reference_tokens=None) -> list[dict]:
    """Per-step trace rows of ``req`` with every plan's measured cost (see the module doc)."""
    if reference_tokens is None:
        reference_tokens = engine.decode(req, plan="auto").tokens
    prompt = engine.prompt_ids(req)
    constraint = engine.constraint(req)
    body, output = engine.body, engine.output
    # the batched per-token body cost: the first tokens of the output in one forward
    cache = body.new_cache(len(prompt) + len(reference_tokens) + MAX_SKIP)
    h = body.forward(prompt, cache)[-1]
    n_batch = min(MAX_SKIP, len(reference_tokens))
    _, batch_s = _timed(body.forward, reference_tokens[:n_batch], cache)
    batch_share = batch_s / max(n_batch, 1)
    cache.truncate(len(prompt))
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
        row = {
            "request": req.id,
            "idx": i,
            "k": k,
            "forced": k == 1,
            "forced_run": run,
            "position": len(prompt) + i,
            "token": int(token),
        }
        if k == 1:
            row.update(margin=None, plan="ForcedToken", seconds=grammar_s + batch_share)
            row["costs"] = {"ForcedToken": grammar_s + batch_share}
        else:
            (dense_tok, margin), dense_s = _timed(plans.dense_head, output, h, legal)
            (sparse_tok, _), sparse_s = _timed(plans.sparse_head, output, h, legal)
            assert dense_tok == sparse_tok == token, (req.id, i)
            costs = {
                "DenseHead": grammar_s + body1_s + dense_s,
                "SparseHead": grammar_s + body1_s + sparse_s,
            }
            row.update(margin=margin, plan="DenseHead", seconds=costs["DenseHead"])
            if i > 0:
                t1 = time.perf_counter()
                h_pred = amortizer.predict(prev_h, reference_tokens[i - 1])
                pred_tok, pred_margin = amortized_head(output, h_pred, legal)
                amort_s = time.perf_counter() - t1
                wrong = pred_tok != token
                costs["AmortizedHead"] = grammar_s + amort_s + batch_share
                if wrong:
                    costs["AmortizedHead"] += body1_s + sparse_s
                (_, _, lead), rerank_s = _timed(
                    amortized_rerank, output, h_pred, h, legal, DEFAULT_RERANK_R
                )
                costs["AmortizedRerank"] = grammar_s + body1_s + rerank_s
                if not lead > eps_max:
                    costs["AmortizedRerank"] += sparse_s
                gap = np.abs(output[legal] @ (h_pred - h))
                row.update(
                    pred_margin=pred_margin,
                    pred_correct=not wrong,
                    legal_gap=float(gap.max()),
                )
            row["costs"] = costs
        rows.append(row)
        prev_h = h
        if constraint:
            constraint.consume(int(token))
    return rows


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
