"""The router runs behind Figure 3, apart from the figure that draws them (no Bokeh, no Panel).

:class:`RouterSession` owns the shared stream (cached while only τ changes), one
:class:`~app.router.experiment.LiveRun` per shown router, and the catch-up of a router added to
the comparison. It announces what changed through two parameters a view can watch:

* ``chunk`` — the new points of the last :meth:`advance` (``{name: LiveRun.advance(...)}``);
* ``epoch`` — bumped whenever runs are replaced, rewound or added: redraw from :meth:`curve`.
"""

from __future__ import annotations

import numpy as np
import param

from app.model import Scenario
from app.router.environment import Drift
from app.router.experiment import DEFAULT_ALPHA, LiveRun, scenario_stream

__all__ = ["RouterSession"]


class RouterSession(param.Parameterized):
    """Runs of the chosen router and of those it is compared with, on one stream."""

    primary = param.String("linucb", doc="The chosen router.")
    epoch = param.Integer(0, doc="Bumped when the runs are replaced, rewound or added.")
    chunk = param.Dict(default={}, doc="Points of the last advance, by router.")

    def __init__(self, **params):
        super().__init__(**params)
        self.runs: dict[str, LiveRun] = {}
        self.stream = None
        self.scenario: Scenario | None = None
        self.alpha = DEFAULT_ALPHA
        self.reference: dict = {}
        self._stream_key = None  # what the stream was drawn for (see reset)

    def reset(
        self,
        s: Scenario,
        router="linucb",
        compare=(),
        alpha=DEFAULT_ALPHA,
        drift=False,
        latency=None,
    ) -> None:
        """New runs of ``router`` and each of ``compare`` at step 0 (a new stream for ``s``
        unless only τ changed: τ moves the threshold router's rule, not the stream)."""
        key = (s.replace(tau=0.0), drift, latency)
        if key != self._stream_key:
            self.stream = scenario_stream(s, Drift() if drift else None, latency)
            self._stream_key = key
        self.scenario, self.alpha = s, alpha
        self.runs = {}
        for name in [router, *[c for c in compare if c != router]]:
            self.runs[name] = LiveRun(s, name, alpha=alpha, stream=self.stream)
        self.reference = self.runs[router].reference_curves()
        self.primary = router
        self.epoch += 1

    def set_compare(self, compare) -> None:
        """Show ``compare`` beside the chosen router; new runs catch up to its step at once."""
        t = self.t
        for name in list(self.runs):
            if name != self.primary and name not in compare:
                del self.runs[name]
        for name in compare:
            if name not in self.runs:
                self.runs[name] = LiveRun(self.scenario, name, alpha=self.alpha, stream=self.stream)
                if t:
                    self.runs[name].advance(t)
        self.epoch += 1

    def rewind(self) -> None:
        """Every run back to step 0 with a fresh router, on the same stream."""
        for run in self.runs.values():
            run.reset()
        self.epoch += 1

    def advance(self, n: int) -> bool:
        """Advance every unfinished run by ``n`` steps (``chunk`` gets the points); True when
        every run is done."""
        self.chunk = {name: run.advance(n) for name, run in self.runs.items() if not run.done}
        return self.done

    def run_to_end(self) -> None:
        """Every run to the horizon at once (the result a reader sees before pressing play)."""
        for run in self.runs.values():
            if not run.done:
                run.advance(run.stream.steps - run.t)
        self.epoch += 1

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
