"""Bokeh pieces every figure shares: the toolbar, hover, colours, and the SVG switch."""

from __future__ import annotations

from bokeh.core.property.vectorization import value
from bokeh.models import (
    AllLabels,
    BasicTicker,
    GlyphRenderer,
    HoverTool,
    Legend,
    LegendItem,
    Line,
    Quad,
    Scatter,
    VBar,
)
from bokeh.plotting import figure

from app.model import PLAN_NAMES

__all__ = [
    "COLORS",
    "PLAN_PALETTE",
    "TOOLS",
    "new_figure",
    "line",
    "scatter",
    "vbar",
    "quad",
    "add_hover",
    "legend_item",
    "set_output_backend",
    "empty_like",
]

#: Tools on every figure: pan, wheel zoom, reset and save (PNG; SVG in SVG mode). No box zoom:
#: its overlay is four Bokeh models per figure (tool, box, handles, visuals), and every model
#: costs start-up in Pyodide and in BokehJS (docs/static-site.md); wheel zoom does the job.
TOOLS = "pan,wheel_zoom,reset,save"

#: The Okabe–Ito colour-blind-safe palette, in the order the registry's plans take it.
PLAN_PALETTE = ("#D55E00", "#0072B2", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442")

#: One colour per plan (by arm order in :data:`app.model.PLAN_NAMES`: a new plan gets the next
#: palette colour without an edit here) and per auxiliary curve.
COLORS = {
    **{name: PLAN_PALETTE[i % len(PLAN_PALETTE)] for i, name in enumerate(PLAN_NAMES)},
    "marker": "#444444",
    "error": "#7F3C8D",
    "reference": "#999999",
}


def new_figure(name: str, title: str, **kwargs):
    """A figure with the shared toolbar, stretching to its container's width."""
    opts = dict(
        tools=TOOLS,
        active_drag="pan",
        toolbar_location="above",
        height=320,
        sizing_mode="stretch_width",
        min_width=320,
    )
    opts.update(kwargs)
    fig = figure(name=name, title=title, **opts)
    fig.title.text_font_size = "11pt"
    _share_axis_models(fig)
    return fig


def _share_axis_models(fig) -> None:
    """The figure's axes share one label policy and one ticker where both have Bokeh's
    stateless defaults (``AllLabels``, a default ``BasicTicker``): two models fewer per
    figure. (Tick formatters stay per axis: BokehJS's ``BasicTickFormatter`` keeps state.)"""
    axes = [*fig.xaxis, *fig.yaxis]
    policies = [a.major_label_policy for a in axes]
    if all(type(p) is AllLabels for p in policies):
        for axis in axes[1:]:
            axis.major_label_policy = policies[0]
    tickers = [a.ticker for a in axes]
    if all(type(t) is BasicTicker and not _non_default(t) for t in tickers):
        for axis in axes[1:]:
            axis.ticker = tickers[0]
        for grid in fig.grid:
            if grid.ticker is not None:
                grid.ticker = tickers[0]


def _non_default(model) -> dict:
    return {
        k: v for k, v in model.properties_with_values(include_defaults=False).items() if k != "id"
    }


_RENDERER_ARGS = ("name", "x_range_name", "y_range_name", "visible")


def _add_glyph(fig, glyph_type, source, *, legend_label=None, color=None, **kwargs):
    """A renderer of one glyph on ``fig``, as ``fig.<glyph>(…, source=source, …)`` makes it but
    without the non-selection and muted copies of the glyph that bokeh.plotting always adds
    (the app neither selects nor mutes; BokehJS derives them if ever needed): three models
    per renderer fewer to build and ship, which counts in Pyodide. ``color`` sets the line and
    fill colours the glyph has; ``legend_label`` adds a legend entry."""
    renderer_args = {k: kwargs.pop(k) for k in _RENDERER_ARGS if k in kwargs}
    if color is not None:
        for prop in ("line_color", "fill_color"):
            if prop in glyph_type.properties():
                kwargs.setdefault(prop, color)
    renderer = GlyphRenderer(glyph=glyph_type(**kwargs), data_source=source, **renderer_args)
    fig.renderers.append(renderer)
    if legend_label is not None:
        legends = fig.legend
        if not legends:
            fig.add_layout(Legend())
            legends = fig.legend
        legends[0].items.append(LegendItem(label=value(legend_label), renderers=[renderer]))
    return renderer


def line(fig, x: str, y: str, source, **kwargs) -> GlyphRenderer:
    """``fig.line(x, y, source=source, **kwargs)``, lighter (see :func:`_add_glyph`)."""
    return _add_glyph(fig, Line, source, x=x, y=y, **kwargs)


def scatter(fig, x: str, y: str, source, **kwargs) -> GlyphRenderer:
    """``fig.scatter(x, y, source=source, **kwargs)``, lighter (see :func:`_add_glyph`)."""
    return _add_glyph(fig, Scatter, source, x=x, y=y, **kwargs)


def vbar(fig, x: str, top: str, source, **kwargs) -> GlyphRenderer:
    """``fig.vbar(x, top=top, source=source, **kwargs)``, lighter (see :func:`_add_glyph`)."""
    return _add_glyph(fig, VBar, source, x=x, top=top, **kwargs)


def quad(fig, source, **kwargs) -> GlyphRenderer:
    """``fig.quad(left, right, bottom, top, source=source, **kwargs)``, lighter (see
    :func:`_add_glyph`)."""
    return _add_glyph(fig, Quad, source, **kwargs)


def add_hover(fig, renderers, tooltips, mode="mouse") -> HoverTool:
    """Hover showing ``tooltips`` (``[(label, "@field{fmt}")]``) on ``renderers``."""
    tool = HoverTool(renderers=list(renderers), tooltips=tooltips, mode=mode)
    fig.add_tools(tool)
    return tool


def legend_item(fig, label: str):
    """The legend entry of ``fig`` labelled ``label`` (to show or hide it with its data)."""
    return next(item for item in fig.legend.items if getattr(item.label, "value", None) == label)


def set_output_backend(figures, backend: str) -> None:
    """Switch figures between canvas and SVG output (``'canvas'`` or ``'svg'``)."""
    if backend not in ("canvas", "svg", "webgl"):
        choices = "'canvas', 'svg' or 'webgl'"
        raise ValueError(f"The 'backend' parameter must be {choices}. Got {backend!r} instead.")
    for fig in figures:
        fig.output_backend = backend


def empty_like(source) -> dict:
    """The columns of ``source`` with no rows (for resetting a streamed source)."""
    return {key: [] for key in source.data}
