"""The router runs behind Figure 3, apart from the figure that draws them (no Bokeh, no Panel).

:class:`RouterSession` owns the shared workload (:mod:`app.router.workloads`; its stream
cached while only τ changes), one :class:`~app.router.experiment.LiveRun` per shown router, and
the catch-up of a router added to the comparison. It announces what changed through two
parameters a view can watch:

* ``chunk`` — the new points of the last :meth:`advance` (``{name: LiveRun.advance(...)}``);
* ``epoch`` — bumped whenever runs are replaced, rewound or added: redraw from :meth:`curve`.
"""

from __future__ import annotations

import asyncio

import numpy as np
import param

from app.model import Scenario
from app.model.validate import check_choice, check_int
from app.router.environment import Drift
from app.router.experiment import DEFAULT_ALPHA, LiveRun
from app.router.real_trace import REAL_ROUTER_PARAMS, shipped_trace
from app.router.registry import LEARNERS
from app.router.workloads import RealWorkload, SyntheticWorkload

__all__ = ["RouterSession", "WORKLOADS"]

#: Where the router's stream comes from (value: label): the synthetic environment drawn for
#: the scenario, or the shipped real trace replayed for the scenario's seed and horizon.
WORKLOADS = {"synthetic": "synthetic", "real": "real trace"}


class RouterSession(param.Parameterized):
    """Runs of the chosen router and of those it is compared with, on one stream."""

    primary = param.String("linucb", doc="The chosen router.")
    epoch = param.Integer(0, doc="Bumped when the runs are replaced, rewound or added.")
    chunk = param.Dict(default={}, doc="Points of the last advance, by router.")

    def __init__(self, **params):
        super().__init__(**params)
        self.runs: dict[str, LiveRun] = {}
        self.source = None  # the Workload the runs learn on
        self.stream = None
        self.scenario: Scenario | None = None
        self.alpha = DEFAULT_ALPHA
        self.reference: dict = {}
        self.workload = "synthetic"
        self.finishing = False  # a run_to_end(chunk=...) is under way
        self._generation = 0  # bumped by reset/rewind: a background finish stops
        self._task = None  # that finish (asyncio keeps only weak references to tasks)
        self._stream_key = None  # what the stream was drawn for (see reset)

    def reset(
        self,
        s: Scenario,
        router="linucb",
        compare=(),
        alpha=DEFAULT_ALPHA,
        drift=False,
        latency=None,
        workload="synthetic",
        redraw: bool = True,
    ) -> None:
        """New runs of ``router`` and each of ``compare`` at step 0 (a new stream for ``s``
        unless only τ changed: τ moves the threshold router's rule, not the stream).

        ``workload="real"``: the shipped trace for ``s.seed`` and ``s.horizon``, with the
        routers' real-trace parameters (``alpha``, ``drift`` and ``latency`` do not apply; only
        the routers of :data:`~app.router.real_trace.REAL_ROUTERS` run, ``router`` must be one).
        ``redraw=False``: no ``epoch`` yet (a :meth:`run_to_end` follows and bumps it, so the
        figure goes from the old result straight to the new one).
        """
        check_choice("workload", workload, tuple(WORKLOADS))
        for name in (router, *compare):
            check_choice("router", name, LEARNERS)
        if workload == "real":
            check_choice("router", router, tuple(REAL_ROUTER_PARAMS))
            key = ("real", s.seed, s.horizon)
            if key != self._stream_key:
                self.source = RealWorkload(shipped_trace(), s.seed, s.horizon)
        else:
            key = (s.replace(tau=0.0), drift, latency)
            if key != self._stream_key:
                self.source = SyntheticWorkload(s, Drift() if drift else None, latency, alpha)
        self._stream_key = key
        if workload == "synthetic":  # the same stream; the routers' arguments follow s and α
            self.source = SyntheticWorkload(s, alpha=alpha, stream=self.source.stream())
        self.stream = self.source.stream()
        self.workload = workload
        self._cancel_finish()
        self.scenario, self.alpha = s, alpha
        self.runs = {}
        for name in [router, *[c for c in compare if c != router]]:
            if self._runs_here(name):
                self.runs[name] = self._new_run(name)
        self.reference = self.runs[router].reference_curves()
        self.primary = router
        if redraw:
            self.epoch += 1

    def set_compare(self, compare) -> None:
        """Show ``compare`` beside the chosen router; new runs catch up to its step at once
        (during a background finish, the finish's ``epoch`` draws them)."""
        for name in compare:
            check_choice("router", name, LEARNERS)
        t = self.t
        for name in list(self.runs):
            if name != self.primary and name not in compare:
                del self.runs[name]
        for name in compare:
            if name not in self.runs and self._runs_here(name):
                self.runs[name] = self._new_run(name)
                if t:
                    self.runs[name].advance(t)
        if not self.finishing:
            self.epoch += 1

    def _runs_here(self, name: str) -> bool:
        return self.workload != "real" or name in REAL_ROUTER_PARAMS

    def _new_run(self, name: str) -> LiveRun:
        return LiveRun.on(self.source, name)

    def rewind(self) -> None:
        """Every run back to step 0 with a fresh router, on the same stream."""
        self._cancel_finish()
        for run in self.runs.values():
            run.reset()
        self.epoch += 1

    def advance(self, n: int) -> bool:
        """Advance every unfinished run by ``n`` steps (``chunk`` gets the points); True when
        every run is done."""
        self.chunk = {name: run.advance(n) for name, run in self.runs.items() if not run.done}
        return self.done

    def run_to_end(self, chunk: int | None = None) -> None:
        """Every run to the horizon (the result a reader sees before pressing play), then
        ``epoch``.

        ``chunk``: not at once but ``chunk`` steps of each run per turn of the running asyncio
        loop, as a task (the browser's worker: one long turn would hold every message, a
        slider move too, behind it). ``finishing`` is True until it is done; :meth:`reset`
        and :meth:`rewind` cancel it. The figure keeps what it showed until ``epoch``.
        """
        self._cancel_finish()
        if chunk is None:
            self._advance_quietly(None)
            self.epoch += 1
            return
        chunk = check_int("chunk", chunk, 1, 10_000_000)
        self.finishing = True
        self._task = asyncio.ensure_future(self._finish(self._generation, chunk))

    async def _finish(self, generation: int, chunk: int) -> None:
        try:
            while True:
                await asyncio.sleep(0)
                if generation != self._generation:
                    return
                self._advance_quietly(chunk)
                if self.done:
                    break
        finally:
            if generation == self._generation:
                self.finishing = False
        self.epoch += 1

    def _advance_quietly(self, n: int | None) -> None:
        """Advance every unfinished run by ``n`` steps (None: to the end) without ``chunk``."""
        for run in self.runs.values():
            if not run.done:
                run.advance(run.stream.steps - run.t if n is None else n)

    def _cancel_finish(self) -> None:
        self._generation += 1
        self.finishing = False
        if self._task is not None:
            self._task.cancel()
            self._task = None

    @property
    def t(self) -> int:
        return self.runs[self.primary].t if self.runs else 0

    @property
    def done(self) -> bool:
        return all(run.done for run in self.runs.values())

    def curve(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """``(step, dynamic regret)`` of ``name``'s run so far, from its arms."""
        return self.runs[name].curve()

    def summary(self) -> dict:
        """The chosen router's :meth:`LiveRun.summary` (O(arms))."""
        return self.runs[self.primary].summary() if self.runs else {}
