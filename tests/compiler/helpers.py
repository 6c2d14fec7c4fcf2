"""Operands for the small compiled step."""

from __future__ import annotations

import numpy as np

from app.compiler.catalog import ARMS
from app.compiler.operands import DIM, OPERANDS


def operands(
    small,
    h,
    legal,
    policy=0,
    P=None,
    alpha=1.0,
    position=7,
    margin=None,
    amort=None,
    ex=None,
    w=None,
):
    cat = small.cat
    w = small.engine.output if w is None else w
    ids = np.full(cat.vocab, cat.sentinel, np.int32)
    ids[: legal.shape[0]] = legal
    if P is None:
        P = np.zeros((len(ARMS), DIM + 1, DIM))
        P[:, 1:] = np.eye(DIM)
    d = cat.d
    a, b, c = amort or (np.eye(d), np.zeros((d, d)), np.zeros(d))
    table = {
        "w": w,
        "h": np.asarray(h, np.float32),
        "ids": ids,
        "k": np.int32(legal.shape[0]),
        "wmax": np.float32(np.linalg.norm(w.astype(np.float64), axis=1).max() * (1 + 1e-6)),
        "position": np.int32(position),
        "last_margin": np.float32(np.nan if margin is None else margin),
        "policy": np.int32(policy),
        "theta": np.ascontiguousarray(P[:, 0]),
        "a_inv": np.ascontiguousarray(P[:, 1:]),
        "alpha": np.float64(alpha),
        "amort_a": np.asarray(a, np.float32),
        "amort_b": np.asarray(b, np.float32),
        "amort_c": np.asarray(c, np.float32),
        "ex": np.zeros(d, np.float32) if ex is None else np.asarray(ex, np.float32),
    }
    return [table[n] for n in OPERANDS]
