"""Replay of a real decode trace as a router environment (numpy and the standard library only).

A trace (``llmqp traces collect``; one ships as ``app/router/data/real_trace.json``) holds, per
decode step of a workload on the real model, its telemetry and the measured seconds of every
plan. Replaying it gives the router the contexts the engine's loop would see and the costs it
would pay: ``expected`` (T, A) = measured seconds / the trace's median DenseHead step, on the
K ≥ 2 steps (K = 1 steps are ForcedToken without asking the router). The requests are replayed
in an order drawn from the seed, so a run is deterministic by seed; :func:`looped_stream` makes
as many passes (each in its own order) as a horizon needs. The same stream serves
``llmqp bench --workload real`` and the app's Figure 3 on the real trace.

Also from the trace, for the app's Figures 1-2 and bench/amortized.py: its K histogram
(:func:`k_histogram`), the measured lossy decision error over τ (:func:`error_over_tau`) and the
margin law fitted to its exact margins (:func:`margin_fit`), on the held-out requests.

:func:`context_features` (:func:`app.router.features.real_features`) is the router's context,
shared with the engine.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..model.registry import PLANS, routed_plans
from ..model.validate import check_int
from .features import REAL_FEATURES, real_features
from .registry import REAL_ROUTERS, REGISTRY

__all__ = [
    "REAL_ARMS",
    "REAL_FEATURES",
    "REAL_ROUTERS",
    "REAL_ROUTER_PARAMS",
    "SHIPPED_TRACE",
    "context_features",
    "trace_arms",
    "RealStream",
    "load_trace",
    "shipped_trace",
    "real_stream",
    "looped_stream",
    "held_out",
    "error_over_tau",
    "k_histogram",
    "margin_fit",
]

#: The arms on the real loop: the registry's ``routed`` plans (a trace replays those it records).
REAL_ARMS = routed_plans()
#: The routers that run on the real loop and the trace, with their parameters (the registry's).
REAL_ROUTER_PARAMS = {name: dict(REGISTRY[name].real) for name in REAL_ROUTERS}
SHIPPED_TRACE = Path(__file__).parent / "data" / "real_trace.json"


#: The one definition of the router's context on the real loop (app/router/features.py).
context_features = real_features


@dataclass(frozen=True)
class RealStream:
    """A replayed trace: ``X`` (T, F), ``expected``/``observed`` (T, A) losses, ``latency_s``
    (T, A) measured seconds, ``k``/``position``/``margin`` (T,), ``requests`` the replay order
    of every pass, ``pass_steps`` the routed steps of one pass, ``plans`` the arms' names."""

    X: np.ndarray
    expected: np.ndarray
    observed: np.ndarray
    latency_s: np.ndarray
    k: np.ndarray
    position: np.ndarray
    margin: np.ndarray
    ref_s: float
    requests: tuple
    pass_steps: int
    plans: tuple = REAL_ARMS

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


@functools.cache
def shipped_trace() -> dict:
    """The shipped trace, read once per process (treat it as read-only)."""
    return load_trace(SHIPPED_TRACE)


def trace_arms(trace: dict, plans=PLANS) -> tuple[str, ...]:
    """The routed plans of ``plans`` whose costs ``trace`` records, in registry order."""
    seen = set()
    for st in trace["steps"]:
        seen.update(st.get("costs", ()))
    return tuple(a for a in routed_plans(plans) if a in seen)


def _request_rows(steps, vocab, arms=REAL_ARMS):
    """Contexts and costs (over ``arms``) of one request's routed steps, with the telemetry built
    as the loop builds it on the exact trajectory: ``(X, costs, k, position, margin)`` arrays."""
    tel, C, ks, pos, mar = [], [], [], [], []
    last_margin, last_run, run, pending, accept = None, 0, 0, 0, 0.5
    for st in steps:
        if st["k"] == 1:
            run += 1
            pending += 1
            continue
        if run:
            last_run, run = run, 0
        costs = st["costs"]
        if all(a in costs for a in arms):
            margin = np.nan if last_margin is None else last_margin
            tel.append((st["k"], last_run, margin, st["position"], pending, accept))
            C.append([costs[a] for a in arms])
            ks.append(st["k"])
            pos.append(st["position"])
            mar.append(np.nan if st["margin"] is None else st["margin"])
        if "pred_correct" in st:
            accept = 0.9 * accept + 0.1 * float(st["pred_correct"])
        last_margin = st["margin"]
        pending = 1
    t = np.asarray(tel, dtype=np.float64).reshape(-1, 6)
    X = context_features(t[:, 0], vocab, t[:, 1], t[:, 2], t[:, 3], t[:, 4], t[:, 5])
    return (
        X.reshape(-1, len(REAL_FEATURES)),
        np.asarray(C, dtype=np.float64).reshape(-1, len(arms)),
        np.asarray(ks, np.int64),
        np.asarray(pos, np.int64),
        np.asarray(mar, np.float64),
    )


def _request_tables(trace: dict, arms=REAL_ARMS) -> dict:
    """Each request's rows (:func:`_request_rows`), by request name, in name order."""
    vocab = int(trace["meta"]["vocab"])
    by_req: dict[str, list] = {}
    for st in trace["steps"]:
        by_req.setdefault(st["request"], []).append(st)
    return {
        name: _request_rows(sorted(by_req[name], key=lambda s: s["idx"]), vocab, arms)
        for name in sorted(by_req)
    }


def _passes(tables: dict, seeds, arms=REAL_ARMS) -> RealStream:
    """One pass over the requests per seed, each in the order drawn from that seed."""
    names = list(tables)
    orders = [np.random.Generator(np.random.PCG64(int(s))).permutation(len(names)) for s in seeds]
    parts = [tables[names[i]] for order in orders for i in order]
    X, C, k, pos, mar = (np.concatenate([p[j] for p in parts]) for j in range(5))
    if not len(X):
        raise ValueError("trace: no step with every plan's cost (K >= 2 past step 0)")
    # The median of one pass: every pass holds the same steps.
    dense = arms.index("DenseHead")
    ref = float(np.median(np.concatenate([t[1][:, dense] for t in tables.values()])))
    loss = C / ref
    return RealStream(
        X=X,
        expected=loss,
        observed=loss.copy(),
        latency_s=C,
        k=k,
        position=pos,
        margin=mar,
        ref_s=ref,
        requests=tuple(names[i] for order in orders for i in order),
        pass_steps=sum(len(t[0]) for t in tables.values()),
        plans=tuple(arms),
    )


def real_stream(trace: dict, seed: int = 0, plans=PLANS) -> RealStream:
    """One pass over ``trace`` (from :func:`load_trace`) in a request order drawn from ``seed``;
    the arms are the routed plans of ``plans`` the trace records (:func:`trace_arms`)."""
    seed = check_int("seed", seed, 0, 2**32 - 1)
    arms = trace_arms(trace, plans)
    return _passes(_request_tables(trace, arms), [seed], arms)


def looped_stream(trace: dict, seed: int, steps: int, plans=PLANS) -> RealStream:
    """``steps`` routed steps: passes over ``trace``, pass ``i`` in the order drawn from the
    ``i``-th integer of ``Generator(PCG64(seed))``, cut to length (arms as in
    :func:`real_stream`)."""
    seed = check_int("seed", seed, 0, 2**32 - 1)
    steps = check_int("steps", steps, 1, 10_000_000)
    arms = trace_arms(trace, plans)
    tables = _request_tables(trace, arms)
    per_pass = sum(len(t[0]) for t in tables.values())
    if not per_pass:
        raise ValueError("trace: no step with every plan's cost (K >= 2 past step 0)")
    rng = np.random.Generator(np.random.PCG64(seed))
    seeds = [int(rng.integers(0, 2**32 - 1)) for _ in range(-(-steps // per_pass))]
    full = _passes(tables, seeds, arms)
    fields = ("X", "expected", "latency_s", "k", "position", "margin")
    cut = {f: getattr(full, f)[:steps] for f in fields}
    return dataclasses.replace(full, **cut, observed=cut["expected"].copy())


# -- the trace's K, margins and one-step predictions (Figures 1-2) ---------------------------


def held_out(trace: dict) -> dict:
    """The K ≥ 2 steps with a one-step prediction, on the amortizer's held-out requests
    (``meta.test_ids``; every request if the trace names none): ``pred_margin``, ``margin``
    (exact), ``correct`` (the prediction's token is the exact one), ``legal_gap`` (the largest
    |predicted − exact| logit on the legal set), ``request`` (its name), each (n,)."""
    test = set(trace["meta"].get("test_ids") or [])
    rows = [
        s
        for s in trace["steps"]
        if s.get("pred_margin") is not None and (not test or s["request"] in test)
    ]
    return {
        "pred_margin": np.array([s["pred_margin"] for s in rows], dtype=np.float64),
        "margin": np.array([s["margin"] for s in rows], dtype=np.float64),
        "correct": np.array([bool(s["pred_correct"]) for s in rows], dtype=bool),
        "legal_gap": np.array([s.get("legal_gap", np.nan) for s in rows], dtype=np.float64),
        "request": [s["request"] for s in rows],
    }


def error_over_tau(trace: dict, taus=None) -> dict:
    """Per τ (logits; default 41 points from 0 to the 99th percentile of the predicted margins),
    on the held-out steps: the share accepted (predicted margin ≥ τ) and the share accepted
    *and* wrong, the decision error of the lossy rule."""
    h = held_out(trace)
    pm, ok = h["pred_margin"], h["correct"]
    if taus is None:
        taus = np.linspace(0.0, float(np.percentile(pm, 99)) if len(pm) else 1.0, 41)
    taus = np.asarray(taus, dtype=np.float64)
    accepted = pm[None, :] >= taus[:, None]
    n = max(len(pm), 1)
    return {
        "tau": taus,
        "accept": accepted.sum(1) / n,
        "error": (accepted & ~ok).sum(1) / n,
        "steps": len(pm),
    }


def margin_fit(trace: dict) -> dict:
    """The model's margin law fitted to the held-out exact margins normalised by the largest
    (``scale``, logits): maximum-likelihood Kumaraswamy ``a`` (on a log grid; ``b`` is then in
    closed form, ``-n / Σ log(1 - m^a)``), and ε̂ (the 99th percentile of the legal gap) in
    logits and normalised. ``ValueError`` if the trace has no held-out prediction."""
    h = held_out(trace)
    em = h["margin"]
    if not len(em):
        raise ValueError("trace: no held-out step with a one-step prediction to fit")
    scale = float(em.max())
    m = np.clip(em / scale, 1e-6, 1 - 1e-6)
    log_m = np.log(m)
    a_grid = np.exp(np.linspace(np.log(0.1), np.log(20.0), 400))
    s1 = np.log1p(-(m[None, :] ** a_grid[:, None])).sum(1)  # Σ log(1 - m^a), < 0
    b_grid = -len(m) / s1
    ll = len(m) * np.log(a_grid * b_grid) + (a_grid - 1) * log_m.sum() + (b_grid - 1) * s1
    i = int(np.argmax(ll))
    gap = h["legal_gap"][np.isfinite(h["legal_gap"])]
    eps = float(np.percentile(gap, 99)) if len(gap) else float("nan")
    return {
        "a": float(a_grid[i]),
        "b": float(b_grid[i]),
        "scale": scale,
        "eps_hat": eps,
        "eps_normalised": eps / scale,
        "steps": len(em),
    }


def k_histogram(trace: dict) -> dict:
    """Shares of the trace's decode steps by K in doubling bins ``[2^i, 2^(i+1))`` up to |V|:
    ``left``/``right`` bin edges and ``share`` (n_bins,), ``forced`` the share with K = 1."""
    vocab = int(trace["meta"]["vocab"])
    k = np.array([s["k"] for s in trace["steps"]], dtype=np.float64)
    edges = 2.0 ** np.arange(0, math.ceil(math.log2(vocab)) + 1)
    edges[-1] = max(edges[-1], vocab + 1.0)
    counts = np.histogram(k, bins=edges)[0]
    return {
        "left": edges[:-1],
        "right": edges[1:],
        "share": counts / max(len(k), 1),
        "forced": float((k == 1).mean()) if len(k) else 0.0,
        "steps": len(k),
        "vocab": vocab,
    }
