"""Replay of a real decode trace as a router environment (numpy and the standard library only).

A trace (``llmqp traces collect``; one ships as ``app/router/data/real_trace.json``) holds, per
decode step of a workload on the real model, its telemetry and the measured seconds of every
plan. Replaying it gives the router the contexts the engine's loop would see and the costs it
would pay: ``expected`` (T, A) = measured seconds / the trace's median DenseHead step, on the
K ≥ 2 steps (K = 1 steps are ForcedToken without asking the router). The requests are replayed
in an order drawn from the seed, so a run is deterministic by seed.

:func:`context_features` is the one definition of the router's context, shared with the engine.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..model.validate import check_int

__all__ = [
    "REAL_ARMS",
    "REAL_FEATURES",
    "REAL_ROUTERS",
    "REAL_ROUTER_PARAMS",
    "SHIPPED_TRACE",
    "context_features",
    "RealStream",
    "load_trace",
    "real_stream",
]

REAL_ARMS = ("DenseHead", "SparseHead", "AmortizedHead", "AmortizedRerank")
REAL_FEATURES = (
    "bias",
    "log_k_ratio",  # log(K/|V|) / log|V|, in [-1, 0]
    "last_forced_run",  # the length of the last forced run / 8, clipped to 1
    "last_margin",  # the last exact margin (logits) / 16, clipped to 1
    "position",  # decode position / 1024, clipped to 1
    "pending",  # positions not yet in the KV cache / 8, clipped to 1 (the cache state)
    "accept",  # the amortizer's recent acceptance (an EMA in [0, 1])
)
#: The routers that run on the real loop and the trace, with their parameters (losses are
#: seconds / a dense step, about 0.3-2; noise-free measured costs: α = 0.1 under-explores).
REAL_ROUTERS = ("linucb", "lints", "sw-linucb", "restart-linucb")
REAL_ROUTER_PARAMS = {
    "linucb": {"alpha": 0.5},
    "lints": {"v": 0.1},
    "sw-linucb": {"alpha": 0.5, "window": 400},
    "restart-linucb": {"alpha": 0.5, "period": 400},
}
SHIPPED_TRACE = Path(__file__).parent / "data" / "real_trace.json"


def context_features(k, vocab, last_forced_run, last_margin, position, pending, accept):
    """The router's context, (len(REAL_FEATURES),) or (T, len(REAL_FEATURES)) float64.

    ``last_margin`` may be None / NaN (no exact margin yet): it reads as 0."""
    k = np.asarray(k, dtype=np.float64)
    m = np.nan_to_num(np.asarray(last_margin if last_margin is not None else np.nan, float))
    cols = [
        np.ones_like(k),
        np.log(k / vocab) / math.log(vocab),
        np.minimum(np.asarray(last_forced_run, float) / 8.0, 1.0),
        np.minimum(m / 16.0, 1.0),
        np.minimum(np.asarray(position, float) / 1024.0, 1.0),
        np.minimum(np.asarray(pending, float) / 8.0, 1.0),
        np.asarray(accept, float),
    ]
    return np.stack(np.broadcast_arrays(*cols), axis=-1)


@dataclass(frozen=True)
class RealStream:
    """A replayed trace: ``X`` (T, F), ``expected``/``observed`` (T, A) losses, ``latency_s``
    (T, A) measured seconds, ``k``/``position``/``margin`` (T,), ``requests`` replay order."""

    X: np.ndarray
    expected: np.ndarray
    observed: np.ndarray
    latency_s: np.ndarray
    k: np.ndarray
    position: np.ndarray
    margin: np.ndarray
    ref_s: float
    requests: tuple

    @property
    def steps(self) -> int:
        return self.X.shape[0]


def load_trace(path=SHIPPED_TRACE) -> dict:
    """The trace file as a dict (``meta``, ``steps``); ``ValueError`` if it is not one."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data.get("steps"), list) or not data["steps"]:
            raise ValueError("no steps")
    except (OSError, ValueError, AttributeError) as exc:
        raise ValueError(f"trace {path}: not a trace file ({exc})") from None
    return data


def _request_rows(steps, vocab):
    """Contexts and costs of one request's routed steps, with the telemetry built as the loop
    builds it on the exact trajectory."""
    X, C, ks, pos, mar = [], [], [], [], []
    last_margin, last_run, run, pending, accept = None, 0, 0, 0, 0.5
    for st in steps:
        if st["k"] == 1:
            run += 1
            pending += 1
            continue
        if run:
            last_run, run = run, 0
        costs = st["costs"]
        if all(a in costs for a in REAL_ARMS):
            X.append(
                context_features(
                    st["k"], vocab, last_run, last_margin, st["position"], pending, accept
                )
            )
            C.append([costs[a] for a in REAL_ARMS])
            ks.append(st["k"])
            pos.append(st["position"])
            mar.append(np.nan if st["margin"] is None else st["margin"])
        if "pred_correct" in st:
            accept = 0.9 * accept + 0.1 * float(st["pred_correct"])
        last_margin = st["margin"]
        pending = 1
    return X, C, ks, pos, mar


def real_stream(trace: dict, seed: int = 0) -> RealStream:
    """Replay ``trace`` (from :func:`load_trace`) in a request order drawn from ``seed``."""
    seed = check_int("seed", seed, 0, 2**32 - 1)
    vocab = int(trace["meta"]["vocab"])
    by_req: dict[str, list] = {}
    for st in trace["steps"]:
        by_req.setdefault(st["request"], []).append(st)
    names = sorted(by_req)
    order = np.random.Generator(np.random.PCG64(seed)).permutation(len(names))
    cols = [[], [], [], [], []]
    for i in order:
        for col, part in zip(
            cols, _request_rows(sorted(by_req[names[i]], key=lambda s: s["idx"]), vocab)
        ):
            col.extend(part)
    if not cols[0]:
        raise ValueError("trace: no step with every plan's cost (K >= 2 past step 0)")
    X, C = np.asarray(cols[0]), np.asarray(cols[1], dtype=np.float64)
    ref = float(np.median(C[:, 0]))
    loss = C / ref
    return RealStream(
        X=X,
        expected=loss,
        observed=loss.copy(),
        latency_s=C,
        k=np.asarray(cols[2], np.int64),
        position=np.asarray(cols[3], np.int64),
        margin=np.asarray(cols[4], np.float64),
        ref_s=ref,
        requests=tuple(names[i] for i in order),
    )
