"""The Python that ``llmqp/embed.js``'s worker runs: the page's figures as live Bokeh roots.

embed.js puts the page's list of figures (JSON) in the worker URL's fragment; each becomes one
root of the worker's document, in the page's order (see :mod:`app.widgets.embed`).
"""

import json
from urllib.parse import unquote

import panel as pn
from js import location  # the worker's own URL

from app.widgets.embed import build_embed

pn.extension(sizing_mode="stretch_width", apply_signatures=False)

for root in build_embed(json.loads(unquote(location.hash[1:]))):
    root.servable()
