"""Export the figures for the paper's web version: standalone HTML and Bokeh JSON items.

Pure Bokeh (no Panel, no server). For each figure ``<name>``:

* ``<name>.html`` — a self-contained page with BokehJS inlined (works offline, from ``file://``);
* ``<name>.json`` — ``bokeh.embed.json_item`` output, to embed with ``Bokeh.embed.embed_item``
  and a BokehJS of the same version (see docs/embedding.md).

PNG (and SVG) files need a headless browser with a WebDriver (``bokeh.io.export_png`` drives
selenium), which an offline build machine usually lacks; ``png=True`` tries and raises
``RuntimeError`` saying what is missing. The figures' own toolbar "save" writes PNG, or SVG when
the page's SVG switch is on, with no extra software.

Names: ``crossover`` (Figure 1), ``amortization`` (Figure 2), ``router`` (Figure 3, the chosen
router run to the end of the horizon), ``explain`` (the plan table).
"""

from __future__ import annotations

import json
from pathlib import Path

from bokeh.embed import file_html, json_item
from bokeh.resources import Resources

from app.model import Scenario

from .amortization import AmortizationFigure
from .crossover import CrossoverFigure
from .explain import ExplainTable
from .router import RouterFigure

__all__ = ["export_figures", "build_figures", "FIGURES"]

FIGURES = ("crossover", "amortization", "router", "explain")
_TITLES = {
    "crossover": "LLM-QP Figure 1: dense vs sparse head over K",
    "amortization": "LLM-QP Figure 2: amortized scoring over τ and decode length",
    "router": "LLM-QP Figure 3: router regret against the oracle",
    "explain": "LLM-QP: EXPLAIN plan table",
}


class _InlineCore(Resources):
    """BokehJS inlined, without the external scripts that other imported libraries (Panel's
    ES-module shim, say) register globally: the exported models use none of them."""

    def _collect_external_resources(self, resource_attr) -> list[str]:
        return []

    def clone(self, *, components=None) -> _InlineCore:
        return _InlineCore(
            mode="inline", components=list(self.components) if components is None else components
        )


def build_figures(scenario: Scenario | None = None, router: str = "linucb") -> dict:
    """Fresh Bokeh layouts of every figure for ``scenario`` (``Scenario()`` by default).

    Figure 3 runs ``router`` over the whole horizon (deterministic given the seed).
    """
    s = scenario if scenario is not None else Scenario()
    crossover, amortization, explain = CrossoverFigure(), AmortizationFigure(), ExplainTable()
    crossover.update(s)
    amortization.update(s)
    explain.update(s)
    regret = RouterFigure()
    regret.session.reset(s, router)
    regret.session.run_to_end()
    return {
        "crossover": crossover.layout,
        "amortization": amortization.layout,
        "router": regret.layout,
        "explain": explain.layout,
    }


def export_figures(out_dir, scenario: Scenario | None = None, png: bool = False) -> list[Path]:
    """Write every figure as ``<name>.html`` and ``<name>.json`` (and ``<name>.png`` with
    ``png=True``) under ``out_dir`` (created if missing). Returns the written paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, layout in build_figures(scenario).items():
        html_path, json_path = out / f"{name}.html", out / f"{name}.json"
        page = file_html(layout, resources=_InlineCore(mode="inline"), title=_TITLES[name])
        html_path.write_text(page, encoding="utf-8")
        item = json_item(layout, target=f"llmqp-{name}")
        json_path.write_text(json.dumps(item), encoding="utf-8")
        written += [html_path, json_path]
        if png:
            written.append(_png(layout, out / f"{name}.png"))
    return written


def _png(layout, path: Path) -> Path:
    try:
        from bokeh.io import export_png

        export_png(layout, filename=str(path))
    except Exception as exc:  # selenium / webdriver missing or failing: say which
        raise RuntimeError(
            "PNG export needs selenium and a headless Chrome/Firefox with its WebDriver "
            f"(bokeh.io.export_png); it failed with: {exc!r}. Use the HTML export, or the "
            "figure toolbar's save button in a browser."
        ) from exc
    return path
