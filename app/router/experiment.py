"""Router runs over a :class:`~app.router.workloads.Workload`: whole runs for the harness,
stepwise for the app.

Both paths build the stream and the router the same way from the workload, so a curve
animated in the browser equals the harness's numbers for the same seed (synthetic or real).
"""

from __future__ import annotations

import inspect

import numpy as np

from ..model import Scenario
from ..model.validate import check_choice, check_float, check_instance, check_int
from .environment import Drift, Stream
from .registry import LEARNERS, REGISTRY
from .regret import best_fixed_arm, regret_report
from .simulate import make_router
from .workloads import DEFAULT_ALPHA, SyntheticWorkload

__all__ = [
    "LEARNERS",
    "DEFAULT_ALPHA",
    "router_params",
    "scenario_stream",
    "run_routers",
    "run_workload",
    "LiveRun",
]


def router_params(name: str, s: Scenario, alpha: float = DEFAULT_ALPHA) -> dict:
    """Constructor parameters of ``name`` for scenario ``s`` (horizon ``s.horizon``)."""
    check_choice("router", name, LEARNERS)
    check_instance("s", s, Scenario)
    alpha = check_float("alpha", alpha, 0.0, 100.0)
    return REGISTRY[name].params(s, alpha)


def scenario_stream(s: Scenario, drift: Drift | None = None, latency=None) -> Stream:
    """The stream of ``s.horizon`` steps drawn from ``Generator(PCG64(s.seed))``."""
    return SyntheticWorkload(s, drift, latency).stream()


def run_workload(workload, routers=None, progress=None):
    """Run each router of ``routers`` (default: every router of ``workload``) over the
    workload's stream; return ``(stream, {name: (arms, RegretReport)})``.

    ``progress(name, t, T)`` is called as each run advances (every 1% of the steps)."""
    stream = workload.stream()
    out = {}
    for name in workload.routers if routers is None else routers:
        run = LiveRun.on(workload, name)
        step = max(stream.steps // 100, 1)
        while not run.done:
            run.advance(step)
            if progress is not None:
                progress(name, run.t, stream.steps)
        out[name] = (run.arms, regret_report(stream.expected, run.arms))
    return stream, out


def run_routers(s: Scenario, routers=LEARNERS, stream=None, alpha=DEFAULT_ALPHA, progress=None):
    """:func:`run_workload` on the synthetic workload of ``s`` (or its given ``stream``)."""
    return run_workload(SyntheticWorkload(s, alpha=alpha, stream=stream), routers, progress)


class LiveRun:
    """One router learning over one stream, advanced a chunk at a time (the app's play button).

    ``LiveRun(s, router, alpha, drift)`` runs on the synthetic workload of scenario ``s``;
    ``stream`` may be any stream with ``X``, ``expected``, ``observed`` and ``plans`` (then
    ``params`` gives the router's arguments, default :func:`router_params` for ``s``).
    :meth:`on` runs on any :class:`~app.router.workloads.Workload`. The router's seed is the
    workload's (the scenario's) seed, so the same seed gives the same curve.
    """

    def __init__(
        self,
        s: Scenario,
        router="linucb",
        alpha=DEFAULT_ALPHA,
        drift=None,
        stream=None,
        params: dict | None = None,
    ):
        if drift is not None and stream is not None:
            raise ValueError("Pass 'drift' or 'stream', not both: a given stream has its drift.")
        self.scenario = s
        params = dict(params) if params is not None else router_params(router, s, alpha)
        stream = stream if stream is not None else scenario_stream(s, drift)
        self._start(router, s.seed, params, stream)

    @classmethod
    def on(cls, workload, router: str = "linucb") -> LiveRun:
        """A run of ``router`` on ``workload`` (its stream, its arguments for the router)."""
        run = cls.__new__(cls)
        run.scenario = getattr(workload, "scenario", None)
        run._start(router, workload.seed, workload.router_params(router), workload.stream())
        return run

    def _start(self, router: str, seed: int, params: dict, stream) -> None:
        self.name, self.seed, self.params, self.stream = router, seed, params, stream
        self.plans = tuple(self.stream.plans)
        self._oracle = self.stream.expected.min(axis=1)
        self._rows = self.stream.observed.tolist()
        self.reset()

    def reset(self) -> None:
        """Back to step 0 with a fresh router."""
        n_arms, dim = len(self.plans), self.stream.X.shape[1]
        params = dict(self.params)
        if "plans" in inspect.signature(REGISTRY[self.name].cls).parameters:
            params.setdefault("plans", self.plans)  # its arms are looked up by name
        self.router = make_router(self.name, n_arms, dim, seed=self.seed, **params)
        self.t = 0
        self._arms = np.zeros(self.stream.steps, dtype=np.int64)
        self._regret = 0.0
        # Running totals, so that summary() costs O(arms) whatever the step.
        self._loss = 0.0
        self._oracle_loss = 0.0
        self._arm_loss = np.zeros(n_arms)  # every plan's total expected loss so far
        self._counts = np.zeros(n_arms, dtype=np.int64)

    @property
    def arms(self) -> np.ndarray:
        """The arm played at each step so far, shape ``(t,)``."""
        return self._arms[: self.t]

    @property
    def done(self) -> bool:
        return self.t >= self.stream.steps

    def advance(self, n: int) -> dict:
        """Run up to ``n`` more steps; return the new ``step`` (1-based), cumulative
        ``dynamic_regret`` and ``arm`` arrays (empty when the run is done)."""
        n = check_int("n", n, 1, 10_000_000)
        start, stop = self.t, min(self.t + n, self.stream.steps)
        X, observed = self.stream.X, self.stream.observed
        select, update = self.router.select, self.router.update
        arms = self._arms[start:stop]
        for i, t in enumerate(range(start, stop)):
            x = X[t]
            a = select(x)
            update(x, a, self._rows[t][a], losses=observed[t])
            arms[i] = a
        idx = np.arange(start, stop)
        expected = self.stream.expected[start:stop]
        played = expected[idx - start, arms]
        oracle = self._oracle[start:stop]
        # One running sum from step 0 (the previous total first), so chunks and curve() agree.
        curve = np.cumsum(np.concatenate([[self._regret], played - oracle]))[1:]
        self._regret = float(curve[-1]) if len(curve) else self._regret
        self._loss += float(played.sum())
        self._oracle_loss += float(oracle.sum())
        self._arm_loss += expected.sum(axis=0)
        # intp: Pyodide (wasm32) bincount refuses int64 input.
        self._counts += np.bincount(arms.astype(np.intp), minlength=len(self._counts))
        self.t = stop
        return {"step": idx + 1, "dynamic_regret": curve, "arm": arms.copy()}

    def curve(self) -> tuple[np.ndarray, np.ndarray]:
        """``(step, dynamic_regret)`` of the steps run so far (1-based steps), equal to the
        concatenated :meth:`advance` outputs."""
        idx = np.arange(self.t)
        excess = self.stream.expected[idx, self.arms] - self._oracle[: self.t]
        return idx + 1, np.cumsum(excess)

    def summary(self) -> dict:
        """JSON-ready regret numbers of the steps run so far, from running totals (O(arms)).

        The same numbers as :func:`~app.router.regret.regret_report` over the first ``t`` steps
        (to rounding), without its curve-based ``slope`` and ``shares_last_half``.
        """
        if self.t == 0:
            return {"router": self.name, "steps": 0, "dynamic_regret": 0.0}
        best = int(np.argmin(self._arm_loss))
        oracle = self._oracle_loss
        if oracle == 0.0:
            pct = 0.0 if self._regret == 0.0 else None
        else:
            pct = 100.0 * self._regret / oracle
        return {
            "router": self.name,
            "steps": self.t,
            "n_arms": len(self._counts),
            "total_loss": self._loss,
            "oracle_loss": oracle,
            "best_fixed_arm": best,
            "best_fixed_loss": float(self._arm_loss[best]),
            "dynamic_regret": self._regret,
            "static_regret": self._loss - float(self._arm_loss[best]),
            "regret_pct": pct,
            "shares": (self._counts / self.t).tolist(),
            "plans": list(self.plans),
        }

    def reference_curves(self) -> dict:
        """Cumulative regret over the whole horizon of always-dense and of the best fixed plan."""
        expected = self.stream.expected
        best = best_fixed_arm(expected)
        return {
            "step": np.arange(1, self.stream.steps + 1),
            "always_dense": np.cumsum(expected[:, 0] - self._oracle),
            "best_fixed": np.cumsum(expected[:, best] - self._oracle),
            "best_fixed_plan": self.plans[best],
        }
