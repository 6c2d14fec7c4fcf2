"""Figure 1: dense and sparse head time over K, with the FLOP-only and roofline crossovers.

Pure Bokeh (no Panel): :class:`CrossoverFigure` owns its sources and models and
:meth:`CrossoverFigure.update` refills them from :func:`app.model.crossover_curve`, so the same
object serves the live app and the static export.

Bokeh model names (test hooks): sources ``crossover_dense_source``, ``crossover_sparse_source``;
line renderers ``crossover_dense``, ``crossover_sparse``; the label ``crossover_label`` (text
contains ``K*``); spans ``crossover_kstar_span``, ``crossover_flop_span``, ``k_marker``; the
regime readout Div ``crossover_readout``; measured scatter ``crossover_measured_dense`` /
``crossover_measured_sparse`` (sources with ``_source`` appended) and the Div saying what was
measured, ``crossover_measured_note``; the measured K* at the current batch, span
``crossover_measured_kstar_span``, and the measured K* at every batch measured beside the
model's, Div ``crossover_batch_readout``; the real trace's K histogram
``crossover_trace_hist`` (source ``crossover_trace_source``, right axis ``crossover_trace_axis``;
hidden on the synthetic workload).
"""

from __future__ import annotations

import html

import numpy as np
from bokeh.layouts import column
from bokeh.models import (
    ColumnDataSource,
    Div,
    FixedTicker,
    Label,
    LinearAxis,
    LinearScale,
    Range1d,
    Span,
)

from app.model import (
    Scenario,
    crossover_curve,
    dense_head_cost,
    k_grid,
    plan_costs,
    sparse_head_cost,
)
from app.model.explain import format_seconds

from .plotting import COLORS, add_hover, legend_item, line, new_figure, quad, scatter
from .ticks import set_log_ticks

__all__ = ["CrossoverFigure"]

_COLUMNS = ("k", "seconds", "flops", "bytes", "regime")
_TRACE_LABEL = "real trace: steps by K (right axis)"


def _source(name: str, columns=_COLUMNS) -> ColumnDataSource:
    return ColumnDataSource({c: [] for c in columns}, name=name)


class CrossoverFigure:
    """Figure 1 and its readout; ``figures`` lists the Bokeh figures, ``layout`` the whole."""

    def __init__(self, measured: bool = True):
        """``measured=False`` leaves out the measured-points scatter (browser mode has no
        backend): fewer models to build."""
        self.dense_source = _source("crossover_dense_source")
        self.sparse_source = _source("crossover_sparse_source")
        self.current_source = _source("crossover_current_source", ("k", "seconds", "plan"))
        self.measured = {
            plan: _source(f"crossover_measured_{plan}_source", ("k", "seconds"))
            for plan in (("dense", "sparse") if measured else ())
        }
        fig = new_figure(
            "crossover_figure",
            "Figure 1 · Head time per decode step over K",
            x_axis_type="log",
            y_axis_type="log",
            x_axis_label="K (legal tokens)",
            y_axis_label="seconds per step",
        )
        self._trace_panel(fig)
        lines, scaled = [], []
        for plan, src in (("DenseHead", self.dense_source), ("SparseHead", self.sparse_source)):
            short = plan[:-4].lower()
            lines.append(
                line(
                    fig,
                    "k",
                    "seconds",
                    src,
                    name=f"crossover_{short}",
                    color=COLORS[plan],
                    line_width=2,
                    legend_label=f"{plan} (model)",
                )
            )
            if measured:
                points = scatter(
                    fig,
                    "k",
                    "seconds",
                    self.measured[short],
                    name=f"crossover_measured_{short}",
                    color=COLORS[plan],
                    size=8,
                    marker="circle" if short == "dense" else "square",
                    fill_alpha=0.5,
                    legend_label=f"{plan} (measured)",
                )
                scaled.append(points)
        current = scatter(
            fig,
            "k",
            "seconds",
            self.current_source,
            color=COLORS["marker"],
            size=9,
            marker="diamond",
            name="crossover_current",
        )
        # The seconds axis follows the curves and points only (not the trace's bars, which
        # have their own axis).
        fig.y_range.renderers = [*lines, *scaled, current]
        self.flop_span = Span(
            dimension="height", line_dash="dashed", line_color="black", name="crossover_flop_span"
        )
        self.kstar_span = Span(
            dimension="height",
            line_dash="dotdash",
            line_width=2,
            line_color=COLORS["SparseHead"],
            name="crossover_kstar_span",
        )
        self.k_span = Span(
            dimension="height", line_color=COLORS["marker"], line_alpha=0.6, name="k_marker"
        )
        self.flop_label = Label(
            x=1,
            y=22,
            y_units="screen",
            x_offset=-4,
            text_align="right",
            text_font_size="9pt",
            name="crossover_flop_label",
        )
        self.label = Label(
            x=1,
            y=42,
            y_units="screen",
            x_offset=-4,
            text_align="right",
            text_font_size="10pt",
            text_font_style="bold",
            text_color=COLORS["SparseHead"],
            name="crossover_label",
        )
        for model in (self.flop_span, self.kstar_span, self.k_span, self.flop_label, self.label):
            fig.add_layout(model)
        fig.legend.location = "top_left"
        fig.legend.click_policy = "hide"
        self.measured_legend = [
            legend_item(fig, f"{plan} (measured)")
            for plan in (("DenseHead", "SparseHead") if measured else ())
        ]
        for item in self.measured_legend:
            item.visible = False  # until there are measured points (server mode)
        self.trace_legend = legend_item(fig, _TRACE_LABEL)
        self.trace_legend.visible = False
        fig.legend.label_text_font_size = "8pt"
        tips = [
            ("K", "@k{0,0}"),
            ("time", "@seconds{0.000e0} s"),
            ("FLOPs", "@flops{0.00a}"),
            ("bytes", "@bytes{0.00a}"),
            ("regime", "@regime"),
        ]
        add_hover(fig, lines, tips, mode="vline")
        add_hover(
            fig, [current], [("plan", "@plan"), ("K", "@k{0,0}"), ("time", "@seconds{0.000e0} s")]
        )
        for axis, grid in ((fig.xaxis[0], fig.xgrid[0]), (fig.yaxis[0], fig.ygrid[0])):
            axis.ticker = grid.ticker = FixedTicker(ticks=[], minor_ticks=[])  # see ticks.py
        self.readout = Div(name="crossover_readout", sizing_mode="stretch_width")
        self.figure = fig
        self.figures = [fig]
        # What the measured points are (shape, blocks, device), beside the curves.
        self.measured_note = Div(name="crossover_measured_note", sizing_mode="stretch_width")
        # Measured K* at the current batch (a span) and at every batch measured (a readout).
        self.measured_kstar_span = Span(
            dimension="height",
            line_dash="dotted",
            line_width=3,
            line_color=COLORS["SparseHead"],
            visible=False,
            name="crossover_measured_kstar_span",
        )
        fig.add_layout(self.measured_kstar_span)
        self.batch_readout = Div(name="crossover_batch_readout", sizing_mode="stretch_width")
        extra = [self.measured_note, self.batch_readout]
        shown = [fig, *extra] if measured else [fig]  # browser mode: no backend
        self.layout = column(*shown, self.readout, sizing_mode="stretch_width")
        self.crossover = None
        self.trace_note = ""
        self._trace_shown = None  # the real workload drawn (it changes with the workload only)

    def _trace_panel(self, fig) -> None:
        """The real trace's steps by K, as bars on their own linear right axis (drawn first,
        under the curves)."""
        self.trace_source = ColumnDataSource(
            {c: [] for c in ("left", "right", "share")}, name="crossover_trace_source"
        )
        self.trace_range = Range1d(0.0, 1.0)
        fig.extra_y_ranges = {"trace": self.trace_range}
        fig.extra_y_scales = {"trace": LinearScale()}
        self.trace_axis = LinearAxis(
            y_range_name="trace",
            axis_label="share of the trace's steps",
            name="crossover_trace_axis",
            visible=False,
        )
        fig.add_layout(self.trace_axis, "right")
        self.trace_hist = quad(
            fig,
            self.trace_source,
            left="left",
            right="right",
            bottom=0.0,
            top="share",
            y_range_name="trace",
            color=COLORS["reference"],
            fill_alpha=0.3,
            line_alpha=0.6,
            name="crossover_trace_hist",
            visible=False,
            legend_label=_TRACE_LABEL,
        )

    def update(self, s: Scenario, real: dict | None = None) -> dict:
        """Refill every model from the model's curves for ``s``, and the real trace's K
        histogram from ``real`` (:func:`~app.widgets.workload.real_workload`; None hides it);
        returns the curve dict."""
        self._update_trace(real)
        ks = np.union1d(k_grid(s.vocab), [s.k])  # the grid plus the current K exactly
        c = crossover_curve(s.d, s.vocab, s.batch, s.dtype, s.hw, ks=ks)
        for src, plan in ((self.dense_source, "dense"), (self.sparse_source, "sparse")):
            src.data = {
                "k": c["k"],
                "seconds": c[f"{plan}_s"],
                "flops": c[f"{plan}_flops"],
                "bytes": c[f"{plan}_bytes"],
                "regime": [str(r) for r in c[f"{plan}_regime"]],
            }
        seconds = np.concatenate([c["dense_s"], c["sparse_s"]])
        set_log_ticks(self.figure.xaxis[0], float(c["k"][0]), float(c["k"][-1]), max_ticks=6)
        set_log_ticks(self.figure.yaxis[0], float(seconds.min()), float(seconds.max()), "s", 5)
        cross = c["crossover"]
        self.crossover = cross
        self.flop_span.location = cross.k_flop
        self.flop_label.x = cross.k_flop
        self.flop_label.text = f"FLOP-only crossover: K = |V| = {cross.k_flop:,}"
        self.label.x = cross.k_roofline or cross.k_flop
        self.kstar_span.visible = cross.k_roofline is not None
        if cross.k_roofline is not None:
            self.kstar_span.location = cross.k_roofline
            head = f"roofline crossover K* = {cross.k_roofline:,}"
        else:
            head = "K* = none: the sparse head is slower at every K"
        self.label.text = f"{head}\n{self._update_current(s)}"
        return c

    def _update_trace(self, real: dict | None) -> None:
        if real is self._trace_shown:  # a slider move: nothing to refill
            return
        self._trace_shown = real
        shown = real is not None
        for model in (self.trace_axis, self.trace_hist, self.trace_legend):
            model.visible = shown
        if not shown:
            self.trace_source.data = {"left": [], "right": [], "share": []}
            self.trace_note = ""
            return
        h = real["hist"]
        self.trace_source.data = {"left": h["left"], "right": h["right"], "share": h["share"]}
        self.trace_range.end = float(h["share"].max()) * 1.15
        big = float(h["share"][h["left"] >= 16384].sum())
        self.trace_note = (
            f"<br><small>Real trace ({h['steps']:,} steps of {html.escape(real['meta']['model'])}, "
            f"|V| = {h['vocab']:,}): {h['forced']:.0%} of steps have K = 1 (ForcedToken), "
            f"{big:.0%} K ≥ 16,384: the grey bars, right axis.</small>"
        )

    def _update_current(self, s: Scenario) -> str:
        """Marker, readout and a one-line verdict at the current K."""
        args = (s.batch, s.dtype, s.hw)
        dense = dense_head_cost(s.d, s.vocab, *args)
        sparse = sparse_head_cost(s.d, s.vocab, s.k, *args)
        d_s, s_s = float(dense.seconds), float(sparse.seconds)
        self.k_span.location = s.k
        self.current_source.data = {
            "k": [s.k, s.k],
            "seconds": [d_s, s_s],
            "plan": ["DenseHead", "SparseHead"],
        }
        faster = "sparse" if s_s <= d_s else "dense"
        ratio = max(d_s, s_s) / min(d_s, s_s)
        verdict = f"at K = {s.k:,} the {faster} head is {ratio:.3g}× faster"
        plans = " · ".join(f"{p.name} {p.regime}" for p in plan_costs(s))
        self.readout.text = (
            f"<b>At K = {s.k:,}</b>: DenseHead is {html.escape(str(dense.regime))} "
            f"({format_seconds(d_s)}), SparseHead is {html.escape(str(sparse.regime))} "
            f"({format_seconds(s_s)}); the {faster} head is {ratio:.3g}× faster."
            f"<br><small>Whole plans: {html.escape(plans)}</small>{self.trace_note}"
        )
        return verdict

    def set_measured_kstar(self, rows: list, batch: int) -> None:
        """Measured K* by batch: ``rows`` of ``{"batch", "measured_k", "model_k"}`` (K* values
        or None where the sparse head never wins), one per batch measured at this head shape.
        The span marks the measured K* at ``batch`` (the Batch slider's value)."""
        here = next((r for r in rows if r["batch"] == batch), None)
        k = here and here["measured_k"]
        self.measured_kstar_span.visible = bool(k)
        if k:
            self.measured_kstar_span.location = float(k)
        if not rows:
            self.batch_readout.text = ""
            return

        def kstar(v):
            return "none" if v is None else f"{v:,.0f}"

        cells = [
            f"{'<b>' if r['batch'] == batch else ''}B {r['batch']}: {kstar(r['measured_k'])} "
            f"(model {kstar(r['model_k'])}){'</b>' if r['batch'] == batch else ''}"
            for r in sorted(rows, key=lambda r: r["batch"])
        ]
        self.batch_readout.text = (
            "<small>Measured K* by batch (dotted line: at this batch): "
            + " · ".join(cells)
            + ". Each sequence gathers its own K rows while the dense head reads the "
            "weights once, so K* falls as B grows.</small>"
        )

    def set_measured(self, points: dict | None, note: str = "") -> None:
        """Show measured head times: ``{"k": …, "dense_s": …, "sparse_s": …}`` (None clears),
        and ``note`` (HTML: what was measured, and how) under the figure."""
        self.measured_note.text = note if points else ""
        for plan, src in self.measured.items():
            if not points or f"{plan}_s" not in points:
                src.data = {"k": [], "seconds": []}
                continue
            k = np.asarray(points["k"], dtype=np.float64)
            y = np.asarray(points[f"{plan}_s"], dtype=np.float64)
            keep = np.isfinite(y) & (y > 0)
            src.data = {"k": k[keep], "seconds": y[keep]}
        for item, src in zip(self.measured_legend, self.measured.values()):
            item.visible = len(src.data["k"]) > 0
