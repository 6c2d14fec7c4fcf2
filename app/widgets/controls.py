"""Panel widgets bound to :class:`~app.widgets.state.ScenarioState`, and the play loop.

Every widget carries a *hook*: its Bokeh model's ``name`` and a CSS class, both equal to the hook
(``k_slider``, ``tau_slider``, ``play_button`` …), so browser tests can find it with
``Bokeh.documents[0].get_model_by_name(hook)`` or the CSS selector ``.hook``. Panel itself uses a
widget's ``name`` as its visible label, so the hook is a separate parameter mapped onto the
Bokeh ``name`` property.

Widths, vocabulary sizes, K, decode lengths and horizons span several decades, so their sliders
move over ``log10`` of the value (the handle's label shows the integer) and an exact-entry box
sits beside each.
"""

from __future__ import annotations

import functools
import math

import panel as pn
import param
from bokeh.models import CustomJSTickFormatter

from .state import ScenarioState

__all__ = [
    "hooked",
    "LogSlider",
    "Player",
    "model_controls",
    "router_controls",
    "WIDGET_OF",
]

#: State parameter -> key of its widget in :func:`model_controls` / :func:`router_controls`
#: (a layout that shows "the slider of λ" looks it up here).
WIDGET_OF = {
    "d": "d",
    "vocab": "vocab",
    "k": "k",
    "batch": "batch",
    "hardware": "hardware_select",
    "dtype": "dtype_select",
    "tau": "tau_slider",
    "eps": "eps_slider",
    "decode_length": "decode_length",
    "router": "router_select",
    "compare": "compare_select",
    "alpha": "alpha_slider",
    "lam": "lam_slider",
    "horizon": "horizon",
    "seed": "seed_input",
    "drift": "drift_toggle",
    "workload": "workload_select",
}


@functools.cache
def _hooked_class(cls):
    class Hooked(cls):
        hook = param.String(default=None, allow_None=True, doc="Bokeh model name (test hook).")
        _rename = {"hook": "name"}

    Hooked.__name__ = Hooked.__qualname__ = f"Hooked{cls.__name__}"
    return Hooked


def hooked(cls, hook: str, *, param_ref=None, **params):
    """Widget of type ``cls`` whose Bokeh model is named ``hook`` and has CSS class ``hook``.

    With ``param_ref`` (a ``state.param.x``) the widget is built by ``from_param`` and stays
    linked both ways.
    """
    params["css_classes"] = [*params.get("css_classes", []), hook]
    klass = _hooked_class(cls)
    if param_ref is not None:
        return klass.from_param(param_ref, hook=hook, **params)
    return klass(hook=hook, **params)


# The handle shows the integer, not its log10. A Bokeh model belongs to one document, and every
# session (and the static page's pre-render) has its own: the sliders of one group of controls
# share one formatter (one Bokeh model instead of one per slider).
_INT_FORMAT_JS = "return Math.round(10 ** tick).toLocaleString()"


def int_formatter() -> CustomJSTickFormatter:
    """A log slider's handle label: the integer ``10 ** value`` (share it within a group)."""
    return CustomJSTickFormatter(code=_INT_FORMAT_JS)


class LogSlider(pn.viewable.Viewer):
    """A slider over ``log10`` of an integer state parameter plus an exact-entry box.

    Hooks ``<hook>_slider`` (value is ``log10`` of the parameter) and ``<hook>_input`` (value is
    the parameter itself).
    """

    def __init__(
        self,
        state: ScenarioState,
        name: str,
        hook: str,
        step: float = 0.005,
        formatter: CustomJSTickFormatter | None = None,
    ):
        super().__init__()
        self.state, self.pname = state, name
        p = state.param[name]
        lo, hi = p.bounds
        soft_lo, soft_hi = p.softbounds or (lo, hi)
        self._syncing = False
        self.slider = hooked(
            pn.widgets.FloatSlider,
            f"{hook}_slider",
            label=p.label,
            start=math.log10(soft_lo),
            end=math.log10(soft_hi),
            step=step,
            value=self._log(getattr(state, name)),
            format=formatter if formatter is not None else int_formatter(),
            sizing_mode="stretch_width",
            margin=(5, 10, 0, 10),
        )
        self.input = hooked(
            pn.widgets.IntInput,
            f"{hook}_input",
            start=lo,
            end=hi,
            value=getattr(state, name),
            width=110,
            margin=(0, 10, 5, 10),
        )
        self.slider.param.watch(self._from_slider, "value")
        self.input.param.watch(self._from_input, "value")
        state.param.watch(self._from_state, name)

    def _log(self, value: int) -> float:
        lo, hi = math.log10(self._soft()[0]), math.log10(self._soft()[1])
        return min(max(math.log10(value), lo), hi)

    def _soft(self):
        p = self.state.param[self.pname]
        return p.softbounds or p.bounds

    def _from_slider(self, event) -> None:
        if not self._syncing:
            self._set(round(10**event.new))

    def _from_input(self, event) -> None:
        if not self._syncing and event.new is not None:
            self._set(int(event.new))

    def _set(self, value: int) -> None:
        lo, hi = self.state.param[self.pname].bounds
        setattr(self.state, self.pname, min(max(value, lo), hi))
        if getattr(self.state, self.pname) != value:  # clamped (e.g. K above |V|): show it
            self._from_state()

    def _from_state(self, *events) -> None:
        value = getattr(self.state, self.pname)
        self._syncing = True
        try:
            if round(10**self.slider.value) != value:
                self.slider.value = self._log(value)
            self.input.value = value
        finally:
            self._syncing = False

    def set_upper(self, hi: int) -> None:
        """Move the slider's and the box's upper end (K follows |V|)."""
        self.slider.end = math.log10(max(hi, 2))
        self.input.end = hi
        self._from_state()

    def __panel__(self):
        return pn.Column(self.slider, self.input, sizing_mode="stretch_width", margin=0)


def model_controls(state: ScenarioState) -> dict:
    """Widgets of the model inputs (Figures 1–2 and the plan table), keyed by hook."""
    p = state.param
    fmt = int_formatter()
    w = {
        "d": LogSlider(state, "d", "d", formatter=fmt),
        "vocab": LogSlider(state, "vocab", "vocab", formatter=fmt),
        "k": LogSlider(state, "k", "k", formatter=fmt),
        "batch": LogSlider(state, "batch", "batch", formatter=fmt),
        "hardware_select": hooked(pn.widgets.Select, "hardware_select", param_ref=p.hardware),
        "dtype_select": hooked(pn.widgets.Select, "dtype_select", param_ref=p.dtype),
        "tau_slider": hooked(pn.widgets.FloatSlider, "tau_slider", param_ref=p.tau, step=0.01),
        "eps_slider": hooked(pn.widgets.FloatSlider, "eps_slider", param_ref=p.eps, step=0.005),
        "decode_length": LogSlider(state, "decode_length", "decode_length", formatter=fmt),
    }
    w["k"].set_upper(state.vocab)
    state.param.watch(lambda e: w["k"].set_upper(e.new), "vocab")
    return w


def router_controls(state: ScenarioState) -> dict:
    """Widgets of the router run (Figure 3) and the workload choice, keyed by hook. On the
    real trace α, λ and drift do not apply (the routers run with the registry's real-trace
    parameters on measured seconds): their widgets are disabled."""
    p = state.param
    w = {
        "workload_select": hooked(pn.widgets.Select, "workload_select", param_ref=p.workload),
        "router_select": hooked(pn.widgets.Select, "router_select", param_ref=p.router),
        "compare_select": hooked(pn.widgets.MultiChoice, "compare_select", param_ref=p.compare),
        "alpha_slider": hooked(
            pn.widgets.FloatSlider, "alpha_slider", param_ref=p.alpha, step=0.01
        ),
        "lam_slider": hooked(pn.widgets.FloatSlider, "lam_slider", param_ref=p.lam, step=0.01),
        "horizon": LogSlider(state, "horizon", "horizon", step=0.01),
        "seed_input": hooked(pn.widgets.IntInput, "seed_input", param_ref=p.seed),
        "drift_toggle": hooked(pn.widgets.Checkbox, "drift_toggle", param_ref=p.drift),
    }

    def synthetic_only(*events):
        for key in ("alpha_slider", "lam_slider", "drift_toggle"):
            w[key].disabled = state.workload == "real"

    state.param.watch(synthetic_only, "workload")
    synthetic_only()
    return w


class Player(pn.viewable.Viewer):
    """Play / pause / step / reset for a :class:`~app.widgets.session.RouterSession`.

    Playing advances the runs by ``chunk`` steps every ``period`` ms through
    ``pn.state.add_periodic_callback`` (a session callback under ``panel serve``, an asyncio task
    in Pyodide). ``tick()`` is one such step, callable directly (tests). Play and Step on a
    finished run (what the page shows at load) start a fresh run.
    """

    def __init__(self, session, period: int = 100, chunk=None):
        super().__init__()
        self.session, self.period, self._chunk = session, period, chunk
        self._callback = None
        self.play = hooked(
            pn.widgets.Toggle, "play_button", label="▶ Play", color="primary", width=90
        )
        self.step = hooked(pn.widgets.Button, "step_button", label="Step", width=70)
        self.reset = hooked(pn.widgets.Button, "reset_button", label="Reset", width=70)
        self.play.param.watch(self._on_play, "value")
        self.step.on_click(lambda e: self.step_once())
        self.reset.on_click(lambda e: self.restart())

    @property
    def chunk(self) -> int:
        """Steps per tick: the whole horizon in about 200 ticks (20 s at 100 ms)."""
        if self._chunk:
            return self._chunk
        stream = self.session.stream
        return max(10, stream.steps // 200) if stream is not None else 10

    def tick(self) -> bool:
        """Advance one chunk; stop playing when the run is complete. Returns ``done``. A run
        that is finishing in the background (its inputs changed while playing) starts
        afresh: the animation goes on with the new scenario."""
        if self.session.finishing:
            self.restart()
        done = self.session.advance(self.chunk)
        if done and self.play.value:
            self.play.value = False
        return done

    def step_once(self) -> bool:
        """One chunk; a finished run (or one finishing in the background) starts afresh
        first."""
        if self.session.done:
            self.restart()
        return self.tick()

    def restart(self) -> None:
        """Back to step 0 with fresh routers on the same stream (keeps playing if it was)."""
        self.session.rewind()

    def _on_play(self, event) -> None:
        self.play.label = "⏸ Pause" if event.new else "▶ Play"
        if event.new:
            if self.session.done or self.session.finishing:
                self.restart()
            if self._callback is None:
                self._callback = pn.state.add_periodic_callback(self.tick, self.period)
        elif self._callback is not None:
            self._callback.stop()
            self._callback = None

    def __panel__(self):
        return pn.Row(self.play, self.step, self.reset, margin=0)
