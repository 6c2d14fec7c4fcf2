"""``panel serve app/paper.py``: the paper's web version (the page ``static/paper.html`` converts).

The three results as an article with live figures; see :mod:`app.widgets.article`.
"""

import panel as pn

from app.widgets.article import ARTICLE_CSS, build_article

pn.extension(sizing_mode="stretch_width", apply_signatures=False, raw_css=[ARTICLE_CSS])

build_article().servable(title="LLM-QP · the paper's figures, live")
