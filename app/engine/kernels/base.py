"""What a plan's kernel is to the engine: the interface every entry of ``KERNELS`` implements.

A decode step asks its plan's kernel two things, in order:

1. :meth:`Kernel.guess` — before the body runs: a token without the body (deferred: it joins
   ``pending`` and runs through the body with the next exact step), a refine (run the exact step
   after all), or nothing (the exact step is this plan);
2. :meth:`Kernel.score` — after the body has brought the exact state up to date: the token.

:attr:`Kernel.recompute` says which body run the exact step needs: the pending tokens at the
end of the KV cache (every plan but one), or the whole context into a new cache.
:meth:`Kernel.cost` is the trace collector's side: the step's hindsight cost under this plan,
assembled from what :class:`TraceProbe` measured on the exact trajectory.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Guess", "Kernel", "TraceProbe"]


@dataclass(frozen=True)
class Guess:
    """A kernel's answer before the body. ``token`` None: run the exact step (``refined`` says
    the plan meant to skip the body and gave up); else the token is taken without the body and
    checked against the exact argmax later when ``verify``. ``h_pred`` (d,) float32: a predicted
    state that :meth:`Kernel.score` may use."""

    token: int | None = None
    margin: float | None = None
    verify: bool = False
    refined: bool = False
    h_pred: np.ndarray | None = None


class Kernel:
    """One registry plan, run on the real model (see the module doc). ``name`` is the registry's
    plan name; the defaults are the exact step scored by SparseHead, never recorded in traces."""

    name = ""
    recompute = False  # the exact step rebuilds the state over the whole context, no KV cache

    def guess(self, state, legal: np.ndarray, index: int) -> Guess | None:
        """Before the body: ``state`` is the request's :class:`~app.engine.loop.DecodeState`."""
        return None

    def score(self, state, legal: np.ndarray, guess: Guess | None):
        """(token, margin, plan that ran) from the exact state ``state.h`` (d,) float32."""
        from ..plans import sparse_head

        token, margin = sparse_head(state.output, state.h, legal)
        return token, margin, "SparseHead"

    def cost(self, probe: TraceProbe) -> float | None:
        """The step's hindsight seconds under this plan; None: not recorded."""
        return None


@dataclass
class TraceProbe:
    """One step of ``llmqp traces collect``, on the exact trajectory: what the kernels' costs are
    assembled from. Seconds: ``grammar_s`` (legal set), ``body1_s`` (a one-token forward),
    ``batch_s`` (a token's share of a batched forward), ``predict_s`` (the amortizer's step).
    ``h`` the exact state, ``h_pred`` the predicted one (None at step 0), ``token`` the exact
    token. :meth:`timed` times a head once per step, whichever kernels ask for it."""

    output: np.ndarray
    h: np.ndarray
    legal: np.ndarray
    token: int
    grammar_s: float
    body1_s: float
    batch_s: float
    h_pred: np.ndarray | None = None
    predict_s: float = 0.0
    eps_max: float = float("inf")
    memo: dict = field(default_factory=dict)

    @property
    def k(self) -> int:
        return int(self.legal.shape[0])

    def timed(self, name: str, fn, *args):
        """(result, seconds) of ``fn(*args)``, measured the first time ``name`` is asked."""
        if name not in self.memo:
            t0 = time.perf_counter()
            out = fn(*args)
            self.memo[name] = (out, time.perf_counter() - t0)
        return self.memo[name]
