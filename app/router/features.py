"""The router's context features, one definition per workload, all in this module (numpy only).

* **synthetic** (:data:`SYNTHETIC_FEATURES`, :func:`synthetic_features`): the environment of
  :mod:`app.router.environment`, drawn from a :class:`~app.model.Scenario`.
* **real** (:data:`REAL_FEATURES`, :func:`real_features`): the telemetry of the engine's decode
  loop, the same on the loop (``app.engine.routing``) and on its replayed trace
  (:mod:`app.router.real_trace`).
* **compiler** (:data:`COMPILER_FEATURES`, :func:`compiler_features`): the context the lowered
  routing kernel builds inside the module (``app.compiler.routing``) from exactly rounded
  operations only (products by constants, no logarithms), so numpy and XLA build the same
  float64 vector bit for bit; ``xp`` is the array namespace (numpy here, ``jax.numpy`` there).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "SYNTHETIC_FEATURES",
    "REAL_FEATURES",
    "COMPILER_FEATURES",
    "synthetic_features",
    "real_features",
    "compiler_features",
]

#: Each scaled to about [-1, 1].
SYNTHETIC_FEATURES = (
    "bias",  # constant 1
    "log_k_ratio",  # log(K/|V|) / log|V|, in [-1, 0]
    "branching",  # K/|V|, the share of the vocabulary that is legal
    "margin",  # top-1 minus top-2 logit on the legal set, normalised to [0, 1]
    "position",  # decode position / the longest position of the run
    "cache_miss",  # positions missing from the KV cache / the longest position
    "margin_deficit",  # (1 - margin/(2ε))² below the certificate's safe τ = 2ε, else 0
)

REAL_FEATURES = (
    "bias",
    "log_k_ratio",  # log(K/|V|) / log|V|, in [-1, 0]
    "last_forced_run",  # the length of the last forced run / 8, clipped to 1
    "last_margin",  # the last exact margin (logits) / 16, clipped to 1
    "position",  # decode position / 1024, clipped to 1
    "pending",  # positions not yet in the KV cache / 8, clipped to 1 (the cache state)
    "accept",  # the amortizer's recent acceptance (an EMA in [0, 1])
    "match",  # the prompt-lookup n-gram match length here / 3, clipped to 1 (0: no draft)
    "draft_accept",  # that match length's recent per-token draft acceptance (0: no draft)
)

COMPILER_FEATURES = (
    "bias",
    "branching",  # K/|V|
    "forced",  # 1 where K = 1
    "last_margin",  # the last exact margin (logits, float32), 0 if none
    "position",  # decode position / the catalog's context
)


def synthetic_features(s, k, margin, position, miss) -> np.ndarray:
    """(T, len(SYNTHETIC_FEATURES)) float64 of the synthetic steps of scenario ``s``: legal-set
    sizes ``k``, normalised margins, decode positions and KV-cache miss fractions, each (T,)."""
    longest = float(s.context + s.decode_length)
    deficit = np.clip(1.0 - margin / (2.0 * s.eps), 0.0, None) ** 2
    return np.stack(
        [
            np.ones_like(k),
            np.log(k / s.vocab) / np.log(s.vocab),
            k / s.vocab,
            margin,
            position / longest,
            miss * position / longest,
            deficit,
        ],
        axis=-1,
    )


def real_features(k, vocab, last_forced_run, last_margin, position, pending, accept, match=0,
                  draft_accept=0.0):  # fmt: skip
    """The real loop's context, (len(REAL_FEATURES),) or (T, len(REAL_FEATURES)) float64.

    ``last_margin`` may be None / NaN (no exact margin yet): it reads as 0. ``match`` and
    ``draft_accept`` are 0 where nothing drafts (a trace records no drafts: zero columns)."""
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
        np.minimum(np.asarray(match, float) / 3.0, 1.0),
        np.asarray(draft_accept, float),
    ]
    return np.stack(np.broadcast_arrays(*cols), axis=-1)


def compiler_features(k, position, last_margin, vocab: int, context: int, xp=np):
    """The lowered routing kernel's context (len(COMPILER_FEATURES),) float64:
    ``[1, K/|V|, K == 1, last margin (as float32; 0 if None/NaN), position/context]``.

    ``xp`` is ``numpy`` or ``jax.numpy`` (traced scalars there): the same operations in the
    same order, each exactly rounded, give the same floats in both."""
    f64 = xp.float64
    if last_margin is None:
        last_margin = float("nan")
    m = xp.asarray(last_margin, dtype=xp.float32).astype(f64)
    m = xp.where(xp.isnan(m), f64(0.0), m)
    k = xp.asarray(k)
    return xp.stack(
        [
            xp.asarray(1.0, dtype=f64),
            k.astype(f64) * f64(1.0 / vocab),
            (k == 1).astype(f64),
            m,
            xp.asarray(position).astype(f64) * f64(1.0 / context),
        ]
    )
