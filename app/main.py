"""``panel serve app/main.py``: the LLM-QP app (also the page the static Pyodide site converts).

Under ``panel serve`` it runs in server mode (measurement backend panel, in-process backend by
default or ``LLMQP_BACKEND_URL``); in Pyodide the same file runs the model-only app.
"""

import panel as pn

from app.widgets.app import build_app

# apply_signatures rewrites every Panel class's signature for IDE help: ~0.1 s of Pyodide start-up.
pn.extension(sizing_mode="stretch_width", apply_signatures=False)

build_app().servable(title="LLM-QP")
