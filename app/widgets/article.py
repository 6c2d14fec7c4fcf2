"""The paper's web version: the three results as an article, each with its figure and the few
controls that matter for it (``static/paper.html``, built from ``app/paper.py``).

One :class:`~app.widgets.app.LLMQPApp` (one state, one router session, one Python worker in the
browser) under a different layout: prose from :mod:`.prose`, then per section the controls
named in ``prose.SECTIONS[name]["controls"]`` (state parameter names, see
:data:`~app.widgets.controls.WIDGET_OF`) and the figure. Controls and figures wrap, so the page
reads on a phone-width screen. The router section's play button is started by the page's
``autoplay.js`` when the section scrolls into view.
"""

from __future__ import annotations

import panel as pn

from . import prose
from .app import LLMQPApp, sync_url
from .controls import WIDGET_OF
from .state import ScenarioState

__all__ = ["Article", "build_article", "ARTICLE_CSS"]

#: Page-level style of the article (Panel adds it to the document's stylesheets).
ARTICLE_CSS = """
.llmqp-article { font: 17px/1.55 Georgia, 'Times New Roman', serif; color: #1f2328; }
.llmqp-article h1 { font: 600 30px/1.2 system-ui, sans-serif; margin: 18px 0 6px; }
.llmqp-article h2 { font: 600 22px/1.3 system-ui, sans-serif; margin: 28px 0 4px; }
.llmqp-article p { margin: 8px 0; max-width: 46em; }
.llmqp-article .llmqp-lede { font-size: 18px; }
.llmqp-article .llmqp-small { font-size: 14px; color: #57606a; }
"""


def _text(html: str, **kw):
    return pn.pane.HTML(
        html, sizing_mode="stretch_width", css_classes=["llmqp-article"], margin=(0, 12), **kw
    )


class _WrapRow(pn.Row):
    """A row that wraps onto more lines when narrow (CSS ``flex-wrap``). Panel gives a
    stretching row the sum of its children's minimum widths, which would keep it one line
    wide at any screen size: this one keeps :data:`MIN_WIDTH`. (Panel's ``FlexBox`` wraps too,
    but it is a ReactiveHTML, whose styles need nh3, which the browser build does not carry.)"""

    def _compute_sizing_mode(self, children, props):
        out = super()._compute_sizing_mode(children, props)
        if "min_width" in out:
            out["min_width"] = MIN_WIDTH
        return out


#: The narrowest the article gets (a 390-px phone, less margins).
MIN_WIDTH = 300


def _wrap(*objects):
    return _WrapRow(*objects, sizing_mode="stretch_width", styles={"flex-wrap": "wrap"})


def _figure(model, min_width=300):
    return pn.pane.Bokeh(model, sizing_mode="stretch_width", min_width=min_width)


class Article:
    """The article for one :class:`LLMQPApp` (its state, figures, widgets and player)."""

    def __init__(self, app: LLMQPApp):
        self.app = app
        self.widgets = {**app.model_widgets, **app.router_widgets}

    def controls(self, section: str) -> list:
        """The widgets of ``section``'s state parameters, in the order the prose names them."""
        return [self.widgets[WIDGET_OF[p]] for p in prose.SECTIONS[section]["controls"]]

    def figure(self, section: str) -> list:
        a = self.app
        if section == "crossover":
            return [_figure(a.crossover.layout)]
        if section == "amortization":
            figs = [_figure(f, min_width=320) for f in a.amortization.figures]
            return [_wrap(*figs), _figure(a.amortization.readout)]
        figs = [_figure(a.router.figure, min_width=320), _figure(a.router.shares_figure)]
        return [_wrap(*figs), _figure(a.router.summary_div)]

    def section_body(self, name: str) -> list:
        """The section's controls (wrapping) and its figure: what an embed shows."""
        box = dict(min_width=230, max_width=320, sizing_mode="stretch_width", margin=(0, 6))
        controls = [pn.Column(w, **box) for w in self.controls(name)]
        if name == "router":
            controls.append(pn.Column(self.app.player, **{**box, "margin": (14, 6)}))
        return [_wrap(*controls), *self.figure(name)]

    def section(self, name: str):
        text = prose.SECTIONS[name]
        return pn.Column(
            _text(f"<h2>{text['title']}</h2>{text['before']}"),
            *self.section_body(name),
            _text(text["after"]),
            sizing_mode="stretch_width",
            css_classes=[f"llmqp-section-{name}"],
        )

    def view(self):
        return pn.Column(
            _text(f"<h1>{prose.TITLE}</h1>{prose.INTRO}"),
            *(self.section(name) for name in prose.SECTIONS),
            _text(prose.CLOSING),
            sizing_mode="stretch_width",
            min_width=MIN_WIDTH,
            max_width=980,
            styles={"margin": "0 auto"},
        )


def build_article(state: ScenarioState | None = None):
    """The article for this session, its state synced with the page URL (as the app's)."""
    state = state or ScenarioState()
    if pn.state.location is not None:
        sync_url(state, pn.state.location)
    return Article(LLMQPApp(state, server=False)).view()
