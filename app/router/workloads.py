"""The ``Workload`` protocol: where a router run's contexts and losses come from.

A workload is a stream of ``steps`` decode steps — contexts ``X`` (T, F), expected and observed
losses (T, A) over its ``plans`` — plus the routers that run on it and their arguments. Every
router run goes through one: :func:`app.router.experiment.run_workload` (``llmqp bench``, both
``--workload`` values), :meth:`app.router.experiment.LiveRun.on` (the app's Figure 3, the
session) and the harness (:mod:`app.harness`), so the app and the bench run the same thing.

* :class:`SyntheticWorkload` — the environment of :mod:`app.router.environment`, drawn for a
  :class:`~app.model.Scenario` (features :data:`~app.router.features.SYNTHETIC_FEATURES`);
* :class:`RealWorkload` — a real decode trace replayed
  (:func:`~app.router.real_trace.looped_stream`, features
  :data:`~app.router.features.REAL_FEATURES`).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from ..model import PLAN_NAMES, Scenario
from ..model.validate import check_choice, check_float, check_instance, check_int
from .environment import Drift, make_stream
from .features import REAL_FEATURES, SYNTHETIC_FEATURES
from .real_trace import REAL_ROUTER_PARAMS, looped_stream, trace_arms
from .registry import LEARNERS, REAL_ROUTERS, REGISTRY

__all__ = ["Workload", "SyntheticWorkload", "RealWorkload", "DEFAULT_ALPHA"]

DEFAULT_ALPHA = 0.1  # losses are ~0.1 with noise 0.01: a wide bonus (α≈1) over-explores


@runtime_checkable
class Workload(Protocol):
    """A stream of contexts and losses, and the routers that learn on it.

    ``name`` ("synthetic" | "real"), ``seed`` (the routers' seed), ``plans`` (A arm names),
    ``features`` (F context names), ``routers`` (the router names that run on it),
    ``stream()`` (an object with ``X`` (T, F), ``expected``/``observed`` (T, A), ``plans`` and
    ``steps``; the same object on every call), ``router_params(name)`` (constructor arguments
    of router ``name`` here).
    """

    name: str
    seed: int
    plans: tuple
    features: tuple
    routers: tuple

    def stream(self): ...

    def router_params(self, name: str) -> dict: ...


class SyntheticWorkload:
    """The synthetic environment of scenario ``s``: ``s.horizon`` steps drawn from
    ``Generator(PCG64(s.seed))`` (with ``drift`` / measured ``latency`` when given), or the
    given ``stream`` of it; router arguments from the registry for ``s`` and ``alpha``."""

    name = "synthetic"
    features = SYNTHETIC_FEATURES

    def __init__(self, s: Scenario, drift=None, latency=None, alpha=DEFAULT_ALPHA, stream=None):
        check_instance("s", s, Scenario)
        if drift is not None and stream is not None:
            raise ValueError("Pass 'drift' or 'stream', not both: a given stream has its drift.")
        if drift is not None:
            check_instance("drift", drift, Drift)
        self.scenario, self.drift, self.latency = s, drift, latency
        self.alpha = check_float("alpha", alpha, 0.0, 100.0)
        self.seed = s.seed
        self.routers = LEARNERS
        self._stream = stream

    @property
    def plans(self) -> tuple:
        return tuple(self.stream().plans) if self._stream is not None else PLAN_NAMES

    def stream(self):
        if self._stream is None:
            rng = np.random.Generator(np.random.PCG64(self.scenario.seed))
            self._stream = make_stream(
                self.scenario, self.scenario.horizon, rng, drift=self.drift, latency=self.latency
            )
        return self._stream

    def router_params(self, name: str) -> dict:
        check_choice("router", name, LEARNERS)
        return REGISTRY[name].params(self.scenario, self.alpha)


class RealWorkload:
    """``steps`` routed steps of ``trace`` (a dict from
    :func:`~app.router.real_trace.load_trace`) replayed in request orders drawn from ``seed``;
    the routers of :data:`~app.router.registry.REAL_ROUTERS` with their real-trace arguments.
    ``plans``: the routed plans the trace records (a routed plan it lacks, such as one added
    after it was collected, is not an arm of its replay)."""

    name = "real"
    features = REAL_FEATURES
    routers = REAL_ROUTERS

    def __init__(self, trace: dict, seed: int, steps: int):
        self.trace = trace
        self.plans = trace_arms(trace)
        self.seed = check_int("seed", seed, 0, 2**32 - 1)
        self.steps = check_int("steps", steps, 1, 10_000_000)
        self._stream = None

    def stream(self):
        if self._stream is None:
            self._stream = looped_stream(self.trace, self.seed, self.steps)
        return self._stream

    def router_params(self, name: str) -> dict:
        check_choice("router", name, REAL_ROUTERS)
        return dict(REAL_ROUTER_PARAMS[name])
