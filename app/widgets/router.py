"""Figure 3: routers learning live against the per-step oracle.

:class:`RouterFigure` draws a :class:`~app.widgets.session.RouterSession` (the runs, their
shared stream, the compare catch-up): it watches the session's ``chunk`` (new points, streamed
into the Bokeh sources) and ``epoch`` (runs replaced or rewound: redrawn from their curves).
Pure Bokeh: the play/pause loop lives in the Panel layer.
The two fixed policies (always DenseHead, best fixed plan in hindsight) are drawn over the whole
horizon for scale; the oracle is the zero line.

Bokeh model names (test hooks): one line per router ``regret_<name>`` (``regret_linucb``, …;
sources ``regret_<name>_source``; hidden unless shown), ``regret_always_dense``,
``regret_best_fixed``, ``regret_oracle`` (source ``regret_reference_source``), the bar chart
``plan_shares`` (source ``plan_shares_source``) and the Div ``regret_summary`` (prose).
"""

from __future__ import annotations

import html

import numpy as np
from bokeh.layouts import column, row
from bokeh.models import ColumnDataSource, Div, FactorRange

from app.model import PLAN_NAMES
from app.router.registry import LEARNERS, REGISTRY

from .plotting import COLORS, add_hover, legend_item, line, new_figure, vbar
from .session import RouterSession

__all__ = ["RouterFigure", "ROUTER_COLORS", "ROUTER_LABELS", "MAX_POINTS"]

#: At most this many points per curve on screen (every ``horizon // MAX_POINTS``-th step).
MAX_POINTS = 1500

#: Legend label and line colour of each router (from the registry).
ROUTER_LABELS = {name: REGISTRY[name].label for name in LEARNERS}
ROUTER_COLORS = {name: REGISTRY[name].color for name in LEARNERS}


class RouterFigure:
    """Figure 3: regret curves, plan-choice shares and the readouts."""

    def __init__(self, session: RouterSession | None = None):
        self.session = session if session is not None else RouterSession()
        # One source and line per router, created the first time it is shown (fewer models
        # to build and ship at start-up, which counts in Pyodide).
        self.sources: dict[str, ColumnDataSource] = {}
        self.lines: dict = {}
        self.legend_items: dict = {}
        self.reference_source = ColumnDataSource(
            {c: [] for c in ("step", "always_dense", "best_fixed", "oracle")},
            name="regret_reference_source",
        )
        self.shares_source = ColumnDataSource(
            {
                "plan": list(PLAN_NAMES),
                "share": [0.0] * len(PLAN_NAMES),
                "color": [COLORS[p] for p in PLAN_NAMES],
            },
            name="plan_shares_source",
        )
        self.figure = self._regret_panel()
        self.shares_figure = self._shares_panel()
        self.summary_div = Div(name="regret_summary", sizing_mode="stretch_width")
        self.figures = [self.figure, self.shares_figure]
        self.layout = column(
            row(self.figure, self.shares_figure, sizing_mode="stretch_width"),
            self.summary_div,
            sizing_mode="stretch_width",
        )
        self.stride = 1
        self.best_fixed_plan = PLAN_NAMES[0]
        self.session.param.watch(self._redraw, "epoch")
        self.session.param.watch(self._draw_chunk, "chunk")
        if self.session.runs:
            self._redraw()

    def _regret_panel(self):
        fig = new_figure(
            "regret_figure",
            "Figure 3 · Regret against the per-step oracle",
            x_axis_label="decode step t",
            y_axis_label="Σ ℓ(a_t) − ℓ(a*_t)",
            height=340,
        )
        ref = self.reference_source
        line(
            fig,
            "step",
            "always_dense",
            ref,
            name="regret_always_dense",
            color=COLORS["DenseHead"],
            line_dash="dashed",
            legend_label="always DenseHead (soon off scale)",
        )
        self._best = line(
            fig,
            "step",
            "best_fixed",
            ref,
            name="regret_best_fixed",
            color=COLORS["reference"],
            line_dash="dashed",
            line_width=2,
            legend_label="best fixed plan",
        )
        oracle = line(
            fig,
            "step",
            "oracle",
            ref,
            name="regret_oracle",
            color="black",
            line_width=1,
            legend_label="oracle",
        )
        self._hover = add_hover(
            fig, [], [("step", "@step{0,0}"), ("regret", "@regret{0.000}")], mode="vline"
        )
        # Scale to the routers and the best fixed plan; always-dense runs off the top for scale.
        fig.y_range.renderers = [self._best, oracle]
        fig.legend.location = "top_left"
        fig.legend.click_policy = "hide"
        fig.legend.label_text_font_size = "8pt"
        return fig

    def _line(self, name: str):
        """The regret line of router ``name`` (created on first use)."""
        if name not in self.lines:
            src = ColumnDataSource({"step": [], "regret": []}, name=f"regret_{name}_source")
            fig, label = self.figure, ROUTER_LABELS[name]
            style = dict(color=ROUTER_COLORS[name], line_width=2, legend_label=label)
            renderer = line(fig, "step", "regret", src, name=f"regret_{name}", **style)
            self._hover.renderers = [*self._hover.renderers, renderer]
            fig.y_range.renderers = [*fig.y_range.renderers, renderer]
            self.sources[name], self.lines[name] = src, renderer
            self.legend_items[name] = legend_item(fig, label)
        return self.lines[name]

    def _show(self, name: str, visible: bool, width: float = 1.5) -> None:
        if name not in self.lines and not visible:
            return
        line = self._line(name)
        line.visible = visible
        line.glyph.line_width = width
        self.legend_items[name].visible = visible
        empty = {"step": [0], "regret": [0.0]} if visible else {"step": [], "regret": []}
        self.sources[name].data = empty

    def _shares_panel(self):
        fig = new_figure(
            "plan_shares_figure",
            "Plan choices so far",
            x_range=FactorRange(*PLAN_NAMES),
            y_range=(0.0, 1.0),
            y_axis_label="share of steps",
            height=340,
            width=300,
            sizing_mode="fixed",
            min_width=None,
        )
        bars = vbar(
            fig,
            "plan",
            "share",
            self.shares_source,
            width=0.8,
            color="color",
            name="plan_shares",
        )
        fig.xaxis.major_label_orientation = 0.7
        add_hover(fig, [bars], [("plan", "@plan"), ("share", "@share{0.0%}")])
        return fig

    # -- drawing the session ---------------------------------------------------------------

    def _redraw(self, *events) -> None:
        """Every line, the reference curves and the readouts from the session's runs."""
        sess = self.session
        horizon = sess.stream.steps
        self.stride = max(1, horizon // MAX_POINTS)
        ref = sess.reference
        keep = self._keep(ref["step"], horizon)
        self.reference_source.data = {
            "step": np.concatenate([[0], ref["step"][keep]]),
            "always_dense": np.concatenate([[0.0], ref["always_dense"][keep]]),
            "best_fixed": np.concatenate([[0.0], ref["best_fixed"][keep]]),
            "oracle": np.zeros(int(keep.sum()) + 1),
        }
        self.best_fixed_plan = ref["best_fixed_plan"]
        for name in LEARNERS:
            self._show(name, name in sess.runs, 3 if name == sess.primary else 1.5)
        for name in sess.runs:
            step, regret = sess.curve(name)
            keep = self._keep(step, horizon)
            self.sources[name].data = {
                "step": np.concatenate([[0], step[keep]]),
                "regret": np.concatenate([[0.0], regret[keep]]),
            }
        self._refresh_readouts()

    def _draw_chunk(self, event) -> None:
        for name, out in event.new.items():
            keep = self._keep(out["step"], self.session.stream.steps)
            if keep.any():
                self.sources[name].stream(
                    {"step": out["step"][keep], "regret": out["dynamic_regret"][keep]}
                )
        self._refresh_readouts()

    def _keep(self, step, horizon) -> np.ndarray:
        return (step % self.stride == 0) | (step == horizon)

    def _refresh_readouts(self) -> None:
        sess = self.session
        primary = sess.summary()
        by_plan = dict(zip(primary.get("plans", ()), primary.get("shares", ())))
        shares = [by_plan.get(plan, 0.0) for plan in PLAN_NAMES]
        self.shares_source.data = {**self.shares_source.data, "share": shares}
        self.shares_figure.title.text = f"Plan choices of {ROUTER_LABELS[sess.primary]}"
        self._best.glyph.line_color = COLORS[self.best_fixed_plan]
        rows = [self._prose(sess.runs[name].summary()) for name in sess.runs]
        where = ""
        if sess.workload == "real":
            stream = sess.stream
            where = (
                f"<b>Real trace</b>: measured per-plan seconds of {stream.pass_steps:,} routed "
                f"steps (K ≥ 2) replayed in passes of a seeded request order; losses are seconds "
                f"/ the median DenseHead step ({stream.ref_s * 1e3:.0f} ms). "
            )
        self.summary_div.text = (
            f"{where}Best fixed plan in hindsight: <b>{html.escape(self.best_fixed_plan)}</b>. "
            + " ".join(rows)
        )

    def _prose(self, summ: dict) -> str:
        name = ROUTER_LABELS[summ["router"]]
        steps = summ.get("steps", 0)
        if not steps:
            return f"<br>{html.escape(name)}: not started (press play or step)."
        pct = summ.get("regret_pct")
        pct_s = "n/a" if pct is None else f"{pct:.2f}%"
        dense = dict(zip(summ["plans"], summ["shares"])).get("DenseHead", 0.0)
        return (
            f"<br><b>{html.escape(name)}</b> after {steps:,} / {self.session.stream.steps:,} "
            f"steps: dynamic regret {summ['dynamic_regret']:.3g} ({pct_s} of the oracle's loss), "
            f"static regret {summ.get('static_regret', 0.0):.3g}; "
            f"DenseHead chosen {dense:.1%} of steps."
        )
