"""The app: state → figures wiring and a thin Panel layout.

One :class:`~app.widgets.state.ScenarioState` drives everything. Each view subscribes to the
parameters it reads: the model views (Figures 1–2, the plan table) to
:data:`~app.widgets.state.MODEL_PARAMS`, the router view to
:data:`~app.widgets.state.ROUTER_PARAMS`. Views refill their Bokeh sources in place, so a slider
move patches data instead of re-rendering the page, in the server and in Pyodide alike.

Server mode (``panel serve``, not Pyodide) adds the measurement panel of :mod:`.measured`;
the browser build never imports it (nor ``app.serving``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import weakref

import panel as pn
from bokeh.core.property.validation import validate

from .amortization import AmortizationFigure
from .controls import Player, hooked, model_controls, router_controls
from .crossover import CrossoverFigure
from .explain import ExplainTable
from .plotting import set_output_backend
from .router import RouterFigure
from .session import RouterSession
from .state import MODEL_PARAMS, REAL_RUN_PARAMS, ROUTER_PARAMS, URL_PARAMS, ScenarioState
from .workload import real_workload

__all__ = ["LLMQPApp", "build_app", "sync_url", "defer", "on_restore", "IN_BROWSER"]

#: Browser mode: running in Pyodide, or pre-rendered for the static site (``build.py`` sets
#: ``LLMQP_STATIC_BUILD=1``). No measurement panel, no ``app.serving`` import.
IN_BROWSER = sys.platform == "emscripten" or os.environ.get("LLMQP_STATIC_BUILD") == "1"
log = logging.getLogger(__name__)
#: In Pyodide the shown run finishes in the background, this many steps per run per turn of
#: the worker's event loop (~10 ms): a slider move waits for one turn, not for 20k steps.
FINISH_CHUNK = 500

_INTRO = (
    "<h1 style='margin:0'>LLM-QP</h1><p style='margin:4px 0 0 0;max-width:60em'>Query planning "
    "for constrained decoding: when does scoring only the K legal tokens beat the dense head, "
    "when does an amortized decoder state pay, and can a bandit router learn the cheapest plan "
    "per step? Every number is recomputed from the cost model as you move a slider; the router "
    "in Figure 3 learns live against the per-step oracle (same seed, same curve).</p>"
)


class LLMQPApp:
    """The three figures, the plan table and their controls for one ``ScenarioState``.

    Parameters
    ----------
    state : ScenarioState, optional
        Shared state (a fresh default one if omitted).
    server : bool, optional
        Add the measurement-backend panel; defaults to "not running in Pyodide".
    client : object, optional
        Backend client for the server panel (tests pass a fake one).
    """

    def __init__(self, state: ScenarioState | None = None, server: bool | None = None, client=None):
        self.state = state or ScenarioState()
        server = (not IN_BROWSER) if server is None else server
        self.crossover = CrossoverFigure(measured=server)
        self.amortization = AmortizationFigure(measured=server)
        self.session = RouterSession()
        self.router = RouterFigure(self.session)
        self.explain = ExplainTable()
        self.player = Player(self.session)
        self.svg = hooked(pn.widgets.Checkbox, "svg_toggle", label="SVG output (save as SVG)")
        self.svg.param.watch(
            lambda e: set_output_backend(self.figures, "svg" if e.new else "canvas"), "value"
        )
        self.model_widgets = model_controls(self.state)
        self.router_widgets = router_controls(self.state)
        self.state.param.watch(self.update_model, list(MODEL_PARAMS))
        self.state.param.watch(self._router_inputs_changed, list(ROUTER_PARAMS))
        self._router_pending = False
        self.state.param.watch(lambda e: self.session.set_compare(e.new), "compare")
        self.measured = self.decode = None
        _LIVE.add(self)
        self.update_model()
        self.update_router()
        if server:
            from .decode import DecodePanel
            from .measured import MeasuredPanel  # server only: may import app.serving

            self.measured = MeasuredPanel(self, client=client)
            self.decode = DecodePanel(self.measured)

    @property
    def figures(self) -> list:
        """Every Bokeh figure (the SVG switch flips them all)."""
        return [*self.crossover.figures, *self.amortization.figures, *self.router.figures]

    def update_model(self, *events) -> None:
        """Refill Figures 1–2 and the plan table from the current scenario.

        In Pyodide without Bokeh's property validation (a third of this call's time there;
        the values are the cost model's own arrays and strings, validated in CPython's tests)."""
        s = self.state.scenario
        real = real_workload() if self.state.workload == "real" else None
        with validate(sys.platform != "emscripten"):
            self.crossover.update(s, real)
            self.amortization.update(s, real)
            self.explain.update(s)

    def _router_inputs_changed(self, *events) -> None:
        if self.state.workload == "real" and not {e.name for e in events} & {*REAL_RUN_PARAMS}:
            return  # e.g. K or τ: the real trace's run does not depend on them
        # The new stream takes longer than Figures 1-2 (tens of ms in Pyodide): let their
        # changes reach the page first, and restart once for a burst of slider moves.
        if not self._router_pending:
            self._router_pending = True
            defer(self._restart_router)

    def _restart_router(self) -> None:
        self._router_pending = False
        self.update_router()

    def update_router(self, *events) -> None:
        """New router run(s) on the current scenario's stream, shown finished (Play animates
        a fresh run); in Pyodide finished in the background (:data:`FINISH_CHUNK`)."""
        st, s = self.state, self.state.scenario
        latency = None
        if st.measured_latency and self.measured is not None and st.workload != "real":
            latency = self.measured.latency_for(s)
        # Redrawn at once only the first time: the figure's models then exist before the
        # browser's worker compares its document with the pre-rendered one.
        first = not self.session.runs
        self.session.reset(
            s, st.router, st.compare, st.alpha, st.drift, latency, st.workload, redraw=first
        )
        self.session.run_to_end(FINISH_CHUNK if sys.platform == "emscripten" else None)

    def view(self) -> pn.viewable.Viewable:
        """The page: controls on the left, figures on the right."""
        mw, rw = self.model_widgets, self.router_widgets
        h = _heading
        sidebar = [
            h("Scenario"),
            rw["workload_select"],
            mw["d"],
            mw["vocab"],
            mw["k"],
            mw["batch"],
            mw["hardware_select"],
            mw["dtype_select"],
            h("Amortization"),
            mw["tau_slider"],
            mw["eps_slider"],
            mw["decode_length"],
            h("Router"),
            rw["router_select"],
            rw["compare_select"],
            rw["alpha_slider"],
            rw["lam_slider"],
            rw["horizon"],
            rw["seed_input"],
            rw["drift_toggle"],
            h("Figures"),
            self.svg,
        ]
        if self.measured is not None:
            sidebar += [h("Measurements"), self.measured]
        main = pn.Column(
            pn.pane.Bokeh(self.crossover.layout, sizing_mode="stretch_width"),
            _heading("Plan tree (EXPLAIN) at the current scenario"),
            pn.pane.Bokeh(self.explain.layout, sizing_mode="stretch_width"),
            pn.pane.Bokeh(self.amortization.layout, sizing_mode="stretch_width"),
            self.player,
            pn.pane.Bokeh(self.router.layout, sizing_mode="stretch_width"),
            sizing_mode="stretch_width",
        )
        if self.decode is not None:
            main.append(_heading("Decode on the backend (real model, step by step)"))
            main.append(self.decode)
        return pn.Column(
            pn.pane.HTML(_INTRO, sizing_mode="stretch_width"),
            pn.Row(pn.Column(*sidebar, width=300), main, sizing_mode="stretch_width"),
            sizing_mode="stretch_width",
        )


#: The apps built in this interpreter (the browser worker's snapshot holds them: on_restore).
_LIVE: weakref.WeakSet = weakref.WeakSet()


def on_restore() -> None:
    """Restart the background work of every app after the worker restored a snapshot of the
    interpreter taken right after the app build (``app/web/templates/snapshot.js``): the
    turns a router run was finishing in were scheduled on the snapshot visit's JS timers,
    which a restore does not bring back. The run goes on from where it stood: the numbers are
    those of an uninterrupted run."""
    for app in list(_LIVE):
        if app._router_pending:
            app._restart_router()
        elif app.session.finishing:
            app.session.run_to_end(FINISH_CHUNK)


def defer(callback) -> None:
    """Run ``callback`` once the current callback's changes have gone to the page.

    Under ``panel serve``: on the session's next tick (with the document lock). In Pyodide:
    on the next turn of the browser's event loop, after the worker has posted the current
    patches. Anywhere else (tests, scripts, export): at once.
    """
    doc = pn.state.curdoc
    if sys.platform == "emscripten":  # (the worker's document has a mock session context)
        asyncio.get_event_loop().call_soon(callback)
    elif doc is not None and doc.session_context is not None:
        pn.state.execute(callback, schedule=True)
    else:
        callback()


def _heading(text: str):
    return pn.pane.HTML(f"<h3 style='margin:8px 0 0 0'>{text}</h3>", margin=(0, 10))


def sync_url(state: ScenarioState, location) -> None:
    """Keep ``location``'s query string and ``state`` in step (:data:`URL_PARAMS`).

    A bad value in a shared link (``?K=abc``) is skipped; the rest of the link still applies.
    """

    def lenient(values):
        rejected = state.apply_query(values)
        if rejected:
            log.warning("ignored URL parameters %s", rejected)

    _drop_unparseable(location)
    location.sync(state, URL_PARAMS, on_error=lenient)


#: Longest all-digit query value kept: Panel's ``parse_query`` turns digit strings into ints, and
#: Python refuses ``int()`` of more than 4,300 digits (or of non-ASCII digits such as "²").
MAX_QUERY_DIGITS = 64


def _drop_unparseable(location) -> None:
    """Remove query values Panel's parser would raise on, under any key, before it runs."""
    from urllib.parse import parse_qsl, urlencode

    search = location.search or ""
    pairs = parse_qsl(search[1:], keep_blank_values=True)
    keep = [
        (k, v)
        for k, v in pairs
        if not (v.isdigit() and (len(v) > MAX_QUERY_DIGITS or not v.isascii()))
    ]
    if len(keep) != len(pairs):
        dropped = sorted({k[:40] for k, v in pairs if (k, v) not in keep})
        log.warning("ignored URL parameters %s: integers too long to read", dropped)
        location.search = ("?" + urlencode(keep)) if keep else ""


def _lock_queued_events() -> None:
    """Under ``panel serve``, run queued widget changes and clicks holding the document lock.

    A click (or a priority change) that reaches Panel (1.9) while another change is still
    debounced is run as a next-tick callback *without* the session's document lock, and it
    first applies the pending change there. Our watchers and click handlers edit Bokeh models
    directly (sources, spans, labels), which Bokeh only allows under the lock ("_pending_writes
    should be non-None ..."): the change and the click were lost. ``.lock = True`` is Panel's
    own marker for a callback that must hold it (``panel.io.document.with_lock``)."""
    from panel.reactive import Syncable

    for name in ("_change_coroutine", "_event_coroutine"):
        getattr(Syncable, name).lock = True


def build_app(state: ScenarioState | None = None, server: bool | None = None, client=None):
    """Build the app for the current session; sync its state with the page URL when there is
    one. Returns the Panel layout (call ``.servable()`` on it)."""
    server = (not IN_BROWSER) if server is None else server
    if server:
        _lock_queued_events()
    if state is None:
        state = ScenarioState()
        if server:  # the scenario of the model the server decodes, before a link's values
            from .measured import apply_served_scenario

            apply_served_scenario(state)
    location = pn.state.location
    if location is not None:
        sync_url(state, location)  # before the first draw, so a shared link draws once
    return LLMQPApp(state, server=server, client=client).view()
