"""Live figures for any page (``llmqp/embed.js``): the Python side, run in the embed's worker.

The page lists its figures as elements ``<div data-llmqp-figure="crossover"
data-llmqp-params="k=64&vocab=128256" data-llmqp-group="g1">``; the script hands that list to
the worker, which builds one root per element with :func:`build_embed`: the figure and the
controls its article section names (:mod:`.prose`). Elements of one ``group`` share one state
(move K in one, every figure of the group follows); an element without a group has its own.
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl

import panel as pn
import param

from .app import LLMQPApp
from .article import Article
from .state import URL_PARAMS, ScenarioState

__all__ = ["FIGURES", "parse_params", "build_embed"]

#: Figures an element may name, and the state parameters whose controls it shows.
FIGURES = ("crossover", "amortization", "router", "explain")
log = logging.getLogger(__name__)
_BY_URL_KEY = {key: name for name, key in URL_PARAMS.items()}


def parse_params(state: ScenarioState, query: str) -> tuple[dict, list[str]]:
    """``"k=64&vocab=128256"`` (state names or the URL's short keys) as typed values for
    ``state``; returns ``(values, rejected keys)``. Values outside the bounds are left to
    :meth:`ScenarioState.apply_query`, which rejects them."""
    values, rejected = {}, []
    for key, text in parse_qsl(query or "", keep_blank_values=True):
        name = key if key in state.param and key in URL_PARAMS else _BY_URL_KEY.get(key)
        if name is None:
            rejected.append(key)
            continue
        p = state.param[name]
        try:
            if isinstance(p, param.Boolean):
                if text.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(text)
                values[name] = text.lower() in ("true", "1")
            elif isinstance(p, param.Integer):
                values[name] = int(text)
            elif isinstance(p, param.Number):
                values[name] = float(text)
            elif isinstance(p, param.ListSelector):
                values[name] = [v for v in text.split(",") if v]
            else:
                values[name] = text
        except ValueError:
            rejected.append(key)
    return values, rejected


def _piece(article: Article, figure: str):
    if figure == "explain":
        parts = [pn.pane.Bokeh(article.app.explain.layout, sizing_mode="stretch_width")]
    else:
        parts = article.section_body(figure)
    return pn.Column(*parts, sizing_mode="stretch_width")


def build_embed(specs: list[dict]) -> list:
    """One Panel root per ``{"figure", "params", "group"}`` in ``specs``, in order.

    Raises ``ValueError`` for a figure name outside :data:`FIGURES`; parameters that do not
    apply are skipped with a warning (as in a shared link).
    """
    articles: dict = {}
    shown: set = set()
    roots = []
    for i, spec in enumerate(specs):
        figure = spec.get("figure")
        if figure not in FIGURES:
            options = ", ".join(map(repr, FIGURES))
            raise ValueError(
                f"The 'data-llmqp-figure' attribute must be one of {options}. Got {figure!r}."
            )
        group = spec.get("group") or f"element-{i}"
        if (group, figure) in shown:  # one figure's Bokeh models can be drawn in one place
            raise ValueError(
                f"The figure {figure!r} appears twice in data-llmqp-group {group!r}: "
                "a group shows each figure once."
            )
        shown.add((group, figure))
        if group not in articles:
            articles[group] = Article(LLMQPApp(ScenarioState(), server=False))
        state = articles[group].app.state  # a group's elements apply their params in order
        values, rejected = parse_params(state, spec.get("params", ""))
        rejected += state.apply_query(values)
        if rejected:
            log.warning("ignored data-llmqp-params %s of %r", rejected, figure)
        roots.append(_piece(articles[group], figure))
    return roots
