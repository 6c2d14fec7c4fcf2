"""Policies that name a plan per decode step (the :class:`Policy` protocol): fixed plans, the cost
rule, a learned router, the hindsight oracle (the recalibrating rule is app.engine.recalibrate's).
The decode state (app.engine.loop) calls ``choose(telemetry) -> plan`` before a step,
``feedback(index, plan, seconds)`` once the step's cost is known — for a deferred step
(ForcedToken, an accepted amortized guess) that is when the body has run its token, several
steps later; a rolled-back guess's cost includes the time it lost — and ``finish()`` at the end
of a request.

The router (any of :data:`ROUTER_CHOICES`, from app.router) sees :data:`ROUTER_FEATURES` and
learns the loss ``seconds / ref_s`` per arm of :data:`ROUTER_ARMS`; K = 1 steps are ForcedToken
without asking it (scoring nothing dominates). Its state saves to and loads from JSON, so a warm
router serves the next batch.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Protocol

import numpy as np

from app.model.registry import PLANS, effective_plan, get_plan, routed_plans
from app.router.real_trace import (
    REAL_FEATURES,
    REAL_ROUTER_PARAMS,
    REAL_ROUTERS,
    context_features,
)

from .results import Telemetry

__all__ = [
    "Policy",
    "ROUTER_CHOICES",
    "ROUTER_ARMS",
    "ROUTER_FEATURES",
    "FixedPolicy",
    "RouterPolicy",
    "OraclePolicy",
    "features",
]

#: ``llmqp decode --plan router --router NAME``: the routers of app.router that fit the loop.
ROUTER_CHOICES = REAL_ROUTERS
#: The plans the router picks between on K ≥ 2 steps: the registry's ``routed`` plans
#: (FullRecompute never wins on a warm cache); its context is app.router.real_trace's, shared
#: with the trace replay.
ROUTER_ARMS = routed_plans()
ROUTER_FEATURES = REAL_FEATURES
ROUTER_PARAMS = REAL_ROUTER_PARAMS


class Policy(Protocol):
    """What the decode state asks of a policy (see the module doc)."""

    def choose(self, tel: Telemetry) -> str: ...

    def feedback(self, index: int, plan: str, seconds: float) -> None: ...

    def finish(self) -> None: ...


def features(tel: Telemetry) -> np.ndarray:
    """The router's context (len(ROUTER_FEATURES),) float64 from a step's telemetry."""
    return context_features(tel.k, tel.vocab, tel.last_forced_run, tel.last_margin,
                            tel.position, tel.pending, tel.accept, tel.match,
                            tel.draft_accept)  # fmt: skip


class FixedPolicy:
    """One plan every step (``None``: the cost rule, which drafts — ``PromptLookup`` — where the
    drafter's calibrated rule would draft, ``tel.draft`` > 0). The amortized plans (not exact in
    ``plans``) run ForcedToken where K = 1; a plan that does not apply runs its fallback."""

    def __init__(self, plan: str | None, rule, plans=PLANS):
        self.plan, self.rule, self.plans = plan, rule, plans
        self.log: list[tuple[int, str, float]] = []  # (index, plan, seconds) as fed back

    def choose(self, tel: Telemetry) -> str:
        k = tel.k
        if self.plan is None:  # the cost rule, priced at the pass's batch size where it can be
            if k > 1 and tel.draft > 0:
                return "PromptLookup"
            at = getattr(self.rule, "at_batch", None)
            return (at(tel.batch) if at and tel.batch > 1 else self.rule).select(k)
        spec = get_plan(self.plan, self.plans)
        if not spec.exact and k == 1:
            return "ForcedToken"
        return effective_plan(spec, k, self.plans).name  # the registry's fallback at K > 1

    def feedback(self, index: int, plan: str, seconds: float) -> None:
        self.log.append((index, plan, seconds))

    def finish(self) -> None:
        pass


class RouterPolicy:
    """A bandit from app.router choosing among ``arms`` on K ≥ 2 steps, with delayed feedback.

    Contexts wait in ``waiting`` (step index -> (x, arm)) until their feedback arrives; those of
    steps a rollback threw away never get one and are dropped at the end of the request
    (``dropped``). ``overhead_s`` is the time spent in select, update and features.
    """

    def __init__(self, name: str, arms=ROUTER_ARMS, seed: int = 0, ref_s: float | None = None):
        from app.router.simulate import make_router

        if name not in ROUTER_CHOICES:
            raise ValueError(
                f"The 'router' parameter must be one of {', '.join(ROUTER_CHOICES)}. Got {name!r}."
            )
        self.name, self.arms, self.seed = name, tuple(arms), int(seed)
        self.router = make_router(
            name, len(self.arms), len(ROUTER_FEATURES), seed=self.seed, **ROUTER_PARAMS[name]
        )
        self.ref_s = ref_s
        self.waiting: dict[int, tuple[np.ndarray, int]] = {}
        self.log: list[dict] = []  # one entry per update: index, arm, loss, delay (in steps)
        self.dropped = 0
        self.overhead_s = 0.0
        self.decisions = 0
        self._chosen_at: dict[int, int] = {}

    def choose(self, tel: Telemetry) -> str:
        if tel.k == 1:
            return "ForcedToken"
        t0 = time.perf_counter()
        x = features(tel)
        arm = self.router.select(x)
        self.waiting[tel.index] = (x, arm)
        self._chosen_at[tel.index] = self.decisions
        self.decisions += 1
        self.overhead_s += time.perf_counter() - t0
        return self.arms[arm]

    def feedback(self, index: int, plan: str, seconds: float) -> None:
        got = self.waiting.pop(index, None)
        if got is None:
            return
        t0 = time.perf_counter()
        if self.ref_s is None:
            self.ref_s = float(seconds)
        x, arm = got
        loss = float(seconds) / self.ref_s
        self.router.update(x, arm, loss)
        delay = self.decisions - 1 - self._chosen_at.pop(index, self.decisions - 1)
        self.log.append({"index": index, "arm": self.arms[arm], "loss": loss, "delay": delay})
        self.overhead_s += time.perf_counter() - t0

    def finish(self) -> None:
        self.dropped += len(self.waiting)
        self.waiting.clear()
        self._chosen_at.clear()

    # -- state --------------------------------------------------------------------------------
    def state(self) -> dict:
        r = self.router
        arrays, scalars = {}, {}
        for key, value in vars(r).items():
            if key in ("_cache", "rng", "_flat", "_rows") or key.startswith("__"):
                continue
            if isinstance(value, np.ndarray):
                arrays[key] = {"dtype": str(value.dtype), "data": value.tolist()}
            elif isinstance(value, bool | int | float | str) or value is None:
                scalars[key] = value
        return {
            "format": "llmqp-router-state/1",
            "router": self.name,
            "arms": list(self.arms),
            "features": list(ROUTER_FEATURES),
            "seed": self.seed,
            "ref_s": self.ref_s,
            "arrays": arrays,
            "scalars": scalars,
            "rng": r.rng.bit_generator.state,
        }

    def save(self, path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.state()) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path, name: str | None = None, arms=ROUTER_ARMS) -> RouterPolicy:
        """A router from a file written by :meth:`save`; ``ValueError`` (one line) if the file is
        not one, or was written for another router, other arms or other features."""
        path = Path(path)
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
            ok = state.get("format") == "llmqp-router-state/1"
        except (OSError, ValueError, AttributeError) as exc:
            raise ValueError(f"router state {path}: not readable ({exc})") from None
        if not ok:
            raise ValueError(f"router state {path}: not a router state file")
        if name is not None and state["router"] != name:
            raise ValueError(f"router state {path}: holds a {state['router']} router, not {name}")
        if state["arms"] != list(arms) or state["features"] != list(ROUTER_FEATURES):
            raise ValueError(f"router state {path}: written for other arms or features")
        policy = cls(state["router"], arms, state["seed"], state["ref_s"])
        r = policy.router
        for key, spec in state["arrays"].items():
            value = np.asarray(spec["data"], dtype=spec["dtype"])
            current = getattr(r, key, None)
            if isinstance(current, np.ndarray) and current.shape == value.shape:
                current[...] = value  # in place: other attributes may be views of it
            else:
                setattr(r, key, value)
        for key, value in state["scalars"].items():
            setattr(r, key, value)
        r.rng.bit_generator.state = state["rng"]
        return policy


class OraclePolicy:
    """Each step's cheapest plan in hindsight, from recorded per-plan costs.

    ``costs`` maps (request id, step index) -> {plan: seconds}; steps the record lacks run the
    cost rule. Lossless plans decode the same tokens, so the indices line up across runs."""

    def __init__(self, costs: dict, rule, arms=ROUTER_ARMS):
        self.costs, self.rule, self.arms = costs, rule, tuple(arms)
        self.missing = 0

    def choose(self, tel: Telemetry) -> str:
        if tel.k == 1:
            return "ForcedToken"
        row = self.costs.get((tel.request, tel.index))
        if not row:
            self.missing += 1
            return self.rule.select(tel.k)
        offered = {p: s for p, s in row.items() if p in self.arms}
        return min(offered, key=offered.get)

    def feedback(self, index: int, plan: str, seconds: float) -> None:
        pass

    def finish(self) -> None:
        pass
