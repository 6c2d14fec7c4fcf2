"""Bokeh pieces every figure shares: the toolbar, hover, colours, and the SVG switch."""

from __future__ import annotations

from bokeh.models import HoverTool
from bokeh.plotting import figure

__all__ = [
    "COLORS",
    "TOOLS",
    "new_figure",
    "add_hover",
    "legend_item",
    "set_output_backend",
    "empty_like",
]

#: Tools on every figure: box zoom, pan, wheel zoom, reset and save (PNG; SVG in SVG mode).
TOOLS = "box_zoom,pan,wheel_zoom,reset,save"

#: One colour per plan or curve, colour-blind safe (Okabe–Ito).
COLORS = {
    "DenseHead": "#D55E00",
    "SparseHead": "#0072B2",
    "AmortizedHead": "#009E73",
    "AmortizedRerank": "#CC79A7",
    "FullRecompute": "#E69F00",
    "marker": "#444444",
    "error": "#7F3C8D",
    "reference": "#999999",
}


def new_figure(name: str, title: str, **kwargs):
    """A figure with the shared toolbar, stretching to its container's width."""
    opts = dict(
        tools=TOOLS,
        active_drag="box_zoom",
        toolbar_location="above",
        height=320,
        sizing_mode="stretch_width",
        min_width=320,
    )
    opts.update(kwargs)
    fig = figure(name=name, title=title, **opts)
    fig.title.text_font_size = "11pt"
    return fig


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
