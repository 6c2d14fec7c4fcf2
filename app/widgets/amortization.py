"""Figure 2: amortized scoring with refinement, over τ and over decode length.

Left: expected seconds per step and the decision-error rate (right axis) over τ, the current τ
marked and the certificate's safe τ = 2ε. Right: total seconds of a decode of N tokens,
amortized against full recomputation, with the crossover length N* labelled. Every number
comes from :func:`app.model.amortization_curves`.

Bokeh model names (test hooks): ``amortization_cost`` (expected cost line; source
``amortization_cost_source``), ``amortization_error``, ``amortization_full``, ``tau_marker``
(Span at τ), ``safe_tau_marker`` / ``safe_tau_label``, ``amortization_total`` (amortized total;
source ``amortization_total_source``), ``full_total``, ``n_star_marker`` / ``n_star_label``,
``amortization_readout`` (Div), measured scatter ``amortization_measured``; on the real-trace
workload the measured decision error ``amortization_trace_error`` (source
``amortization_trace_source``; hidden otherwise).
"""

from __future__ import annotations

import numpy as np
from bokeh.layouts import column, row
from bokeh.models import ColumnDataSource, Div, Label, LinearAxis, Range1d, Span

from app.model import Scenario, amortization_curves
from app.model.curves import TAU_GRID
from app.model.explain import format_seconds

from .plotting import COLORS, add_hover, legend_item, line, new_figure, scatter

__all__ = ["AmortizationFigure"]

_TRACE_LABEL = "measured decision error, real trace (right)"


class AmortizationFigure:
    """Figure 2 (two panels) and its readout."""

    def __init__(self, measured: bool = True):
        """``measured=False`` leaves out the measured-points scatter (browser mode)."""
        self.has_measured = measured
        self.tau_source = ColumnDataSource(
            {c: [] for c in ("tau", "seconds", "full_s", "error", "refine")},
            name="amortization_cost_source",
        )
        self.total_source = ColumnDataSource(
            {c: [] for c in ("n", "amortized", "full")}, name="amortization_total_source"
        )
        self.measured_source = ColumnDataSource(
            {c: [] for c in ("tau", "seconds", "what")}, name="amortization_measured_source"
        )
        self.trace_source = ColumnDataSource(
            {c: [] for c in ("tau", "error", "accept")}, name="amortization_trace_source"
        )
        self._trace_shown = None  # the real workload drawn (it changes with the workload only)
        self.tau_figure = self._tau_panel()
        self.total_figure = self._total_panel()
        self.readout = Div(name="amortization_readout", sizing_mode="stretch_width")
        self.figures = [self.tau_figure, self.total_figure]
        self.layout = column(
            row(self.tau_figure, self.total_figure, sizing_mode="stretch_width"),
            self.readout,
            sizing_mode="stretch_width",
        )

    def _tau_panel(self):
        fig = new_figure(
            "amortization_tau_figure",
            "Figure 2a · Cost per step and error over τ",
            x_axis_label="refine threshold τ (normalised margin)",
            y_axis_label="seconds per step",
            x_range=(0.0, 1.0),
        )
        src = self.tau_source
        cost = line(
            fig,
            "tau",
            "seconds",
            src,
            name="amortization_cost",
            line_width=2,
            color=COLORS["AmortizedHead"],
            legend_label="amortized + refine",
        )
        full = line(
            fig,
            "tau",
            "full_s",
            src,
            name="amortization_full",
            line_dash="dashed",
            color=COLORS["FullRecompute"],
            legend_label="exact step every time",
        )
        fig.y_range.renderers = [cost, full]  # the error curve has its own axis
        if self.has_measured:
            measured = scatter(
                fig,
                "tau",
                "seconds",
                self.measured_source,
                size=9,
                marker="square",
                color=COLORS["marker"],
                name="amortization_measured",
                legend_label="measured",
            )
            fig.y_range.renderers = [cost, full, measured]
        self.error_range = Range1d(0.0, 1.0)
        fig.extra_y_ranges = {"error": self.error_range}
        fig.add_layout(LinearAxis(y_range_name="error", axis_label="decision error rate"), "right")
        line(
            fig,
            "tau",
            "error",
            src,
            y_range_name="error",
            name="amortization_error",
            color=COLORS["error"],
            line_dash="dotted",
            line_width=2,
            legend_label="decision error (right)",
        )
        self.trace_error = line(
            fig,
            "tau",
            "error",
            self.trace_source,
            y_range_name="error",
            name="amortization_trace_error",
            color=COLORS["error"],
            line_width=2,
            visible=False,
            legend_label=_TRACE_LABEL,
        )
        self.tau_marker = Span(
            dimension="height", line_color=COLORS["marker"], line_width=2, name="tau_marker"
        )
        self.safe_marker = Span(
            dimension="height",
            line_dash="dashed",
            line_color=COLORS["error"],
            name="safe_tau_marker",
        )
        self.safe_label = Label(
            x=0,
            y=8,
            y_units="screen",
            x_offset=4,
            text_font_size="9pt",
            text_color=COLORS["error"],
            name="safe_tau_label",
        )
        self.tau_label = Label(
            x=0, y=26, y_units="screen", x_offset=4, text_font_size="9pt", name="tau_label"
        )
        for model in (self.tau_marker, self.safe_marker, self.safe_label, self.tau_label):
            fig.add_layout(model)
        fig.legend.location = "top_left"
        fig.legend.label_text_font_size = "8pt"
        fig.legend.click_policy = "hide"
        self.measured_legend = None
        if self.has_measured:
            self.measured_legend = legend_item(fig, "measured")
            self.measured_legend.visible = False  # until there are measured points
        self.trace_legend = legend_item(fig, _TRACE_LABEL)
        self.trace_legend.visible = False
        add_hover(
            fig,
            [self.trace_error],
            [
                ("τ", "@tau{0.00}"),
                ("measured error", "@error{0.000}"),
                ("accepted", "@accept{0.0%}"),
            ],
            mode="vline",
        )
        add_hover(
            fig,
            [cost],
            [
                ("τ", "@tau{0.00}"),
                ("cost", "@seconds{0.000e0} s"),
                ("exact step", "@full_s{0.000e0} s"),
                ("refine prob.", "@refine{0.000}"),
                ("error", "@error{0.0e0}"),
            ],
            mode="vline",
        )
        return fig

    def _total_panel(self):
        fig = new_figure(
            "amortization_total_figure",
            "Figure 2b · Decode time: amortized vs full",
            x_axis_label="decode length N (tokens)",
            y_axis_label="total seconds",
        )
        src = self.total_source
        amortized = line(
            fig,
            "n",
            "amortized",
            src,
            name="amortization_total",
            line_width=2,
            color=COLORS["AmortizedHead"],
            legend_label="amortized (at τ)",
        )
        line(
            fig,
            "n",
            "full",
            src,
            name="full_total",
            line_width=2,
            line_dash="dashed",
            color=COLORS["FullRecompute"],
            legend_label="full recomputation",
        )
        self.n_star_marker = Span(
            dimension="height",
            line_dash="dotdash",
            line_color=COLORS["marker"],
            name="n_star_marker",
        )
        self.n_star_label = Label(
            x=0,
            y=8,
            y_units="screen",
            x_offset=4,
            text_font_size="10pt",
            text_font_style="bold",
            name="n_star_label",
        )
        fig.add_layout(self.n_star_marker)
        fig.add_layout(self.n_star_label)
        fig.legend.location = "top_left"
        fig.legend.label_text_font_size = "8pt"
        add_hover(
            fig,
            [amortized],
            [("N", "@n"), ("amortized", "@amortized{0.000e0} s"), ("full", "@full{0.000e0} s")],
            mode="vline",
        )
        return fig

    def update(self, s: Scenario, real: dict | None = None) -> dict:
        """Refill both panels from :func:`app.model.amortization_curves`, and the real trace's
        measured decision error from ``real`` (:func:`~app.widgets.workload.real_workload`;
        None hides it); returns the model's dict."""
        taus = np.union1d(TAU_GRID, [s.tau])  # the grid plus the current τ exactly
        c = amortization_curves(s, taus)
        self.tau_source.data = {
            "tau": c["tau"],
            "seconds": c["amortized_s"],
            "full_s": c["full_s"],
            "error": c["error_rate"],
            "refine": c["refine_prob"],
        }
        top = float(np.max(c["error_rate"])) if len(c["error_rate"]) else 0.0
        i = int(np.searchsorted(taus, s.tau))
        trace_note = self._update_trace(s, real, float(c["error_rate"][i]))
        if real is not None:
            top = max(top, float(np.max(real["error"])))
        self.error_range.end = top * 1.1 if top > 0 else 1.0
        self.tau_marker.location = s.tau
        safe = float(c["safe_tau"])
        self.safe_marker.location = min(safe, 1.0)
        self.safe_label.x = min(safe, 1.0)
        self.safe_label.text = f"safe τ = 2ε = {safe:.3g}"
        self.tau_label.x = s.tau
        self.tau_label.text = f"τ = {s.tau:.3g}"
        self.total_source.data = {
            "n": c["n"],
            "amortized": c["amortized_total"],
            "full": c["full_total"],
        }
        n_star = c["n_star"]
        self.n_star_marker.visible = n_star is not None
        if n_star is not None:
            self.n_star_marker.location = n_star
            self.n_star_label.x = n_star
            self.n_star_label.text = f"N* = {n_star:,}"
        else:
            self.n_star_label.x = 1
            self.n_star_label.text = (
                f"N* = none: amortizing never pays within N ≤ {s.decode_length:,}"
            )
        safe_note = "certified exact" if s.tau >= safe else "not certified (τ < safe τ)"
        self.readout.text = (
            f"<b>At τ = {s.tau:.3g}</b>: refine probability "
            f"{c['refine_prob'][i]:.3f}, expected {format_seconds(float(c['amortized_s'][i]))} "
            f"per step against {format_seconds(float(c['full_s'][i]))} exact; decision error "
            f"{c['error_rate'][i]:.2e}, {safe_note}.{trace_note}"
        )
        return c

    def _update_trace(self, s: Scenario, real: dict | None, model_error: float) -> str:
        """Show (or hide) the measured curve (refilled only when the workload changes); the
        readout's sentence about it."""
        if real is not self._trace_shown:
            self._trace_shown = real
            for model in (self.trace_error, self.trace_legend):
                model.visible = real is not None
            empty = {"tau": [], "error": [], "accept": []}
            self.trace_source.data = empty if real is None else {k: real[k] for k in empty}
        if real is None:
            return ""
        fit = real["fit"]
        j = min(int(round(s.tau * (len(real["tau"]) - 1))), len(real["tau"]) - 1)
        if fit["eps_normalised"] > 0.5:
            verdict = (
                "beyond the model's ε ≤ 0.5, so no τ ≤ 1 is certified: the hypothesis fails "
                "with this amortizer"
            )
        else:
            verdict = f"certified from τ = {2 * fit['eps_normalised']:.3g}"
        return (
            f"<br><small><b>Real trace</b> ({real['steps']} held-out steps; τ in units of the "
            f"largest exact margin, {fit['scale']:.3g} logits): the model's curves use the margin "
            f"law fitted to the trace, Kumaraswamy a = {fit['a']:.2f}, b = {fit['b']:.2f}; "
            f"measured ε̂ = {fit['eps_hat']:.3g} logits = {fit['eps_normalised']:.2f} normalised, "
            f"{verdict}. Measured at τ ≈ {real['tau'][j]:.2f}: {real['accept'][j]:.0%} accepted, "
            f"decision error {real['error'][j]:.3f}; the model, at ε = {s.eps:.3g}: "
            f"{model_error:.3f}.</small>"
        )

    def set_measured(self, points: dict | None) -> None:
        """Measured per-step seconds: ``{"amortized_s": float, "full_s": float}`` drawn at
        τ = 0 (never refine: the amortized step alone) and τ = 1 on the exact-step line."""
        if not self.has_measured:
            return
        self.measured_legend.visible = bool(points)
        if not points:
            self.measured_source.data = {"tau": [], "seconds": [], "what": []}
            return
        rows = [
            (0.0, points.get("amortized_s"), "amortized step"),
            (1.0, points.get("full_s"), "exact step"),
        ]
        rows = [r for r in rows if r[1] is not None and np.isfinite(r[1]) and r[1] > 0]
        self.measured_source.data = {
            "tau": [r[0] for r in rows],
            "seconds": [float(r[1]) for r in rows],
            "what": [r[2] for r in rows],
        }
