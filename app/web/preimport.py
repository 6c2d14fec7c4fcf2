"""The modules an app imports while it builds its page, found once at build time.

The worker's snapshot (``templates/snapshot.js``) is taken after the imports and before the app
runs, so everything the app build imports lazily (Panel's Markdown pane pulls in markdown-it and
its plugins, the app's seeded generators numpy.random, Panel's location and browser helpers, …)
would be imported again on every restored visit: ~0.4–1 s in Pyodide. The build runs the app
once more in a fresh CPython, as the worker does (same prologue, same epilogue), and lists the
modules that appeared; the worker imports them before its snapshot. CPython imports a few
modules that Pyodide would not and vice versa, so the worker imports each one guarded, and the
browser tests check that a restored visit imports (almost) nothing while building
(``llmqp.snapshot.build_imports``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from app.web.fetch import BuildError

# Run in a fresh interpreter: argv = [JSON list of modules imported beforehand]; stdin = the
# app's source.
_PROBE = r"""
import json, os, sys
os.environ["LLMQP_STATIC_BUILD"] = "1"
import importlib
for name in json.loads(sys.argv[1]):
    try:
        importlib.import_module(name)
    except ImportError:
        pass  # browser-only modules (panel.io.pyodide needs `js`)
before = set(sys.modules)
from bokeh.document import Document
from bokeh.io.doc import set_curdoc
from panel.io.document import MockSessionContext
from panel.io.state import state
doc = Document()
set_curdoc(doc)
doc.hold()
doc._session_context = lambda: MockSessionContext(document=doc)
state.curdoc = doc
exec(compile(sys.stdin.read(), "app.py", "exec"), {"__name__": "__main__"})
template = state._templates.get(doc)
if template is not None and doc not in template._documents:
    template.server_doc(title=template.title, location=True, doc=doc)
print(json.dumps(sorted(set(sys.modules) - before)))
"""

# Top-level packages whose modules may be imported ahead: pure Python or numpy's own
# libraries (which the worker has placed before its snapshot). Not the app's state: only
# modules, whose import has no effect beyond defining things.
PREIMPORTABLE = (
    "app",
    "bokeh",
    "panel",
    "param",
    "pyviz_comms",
    "numpy",
    "markdown",
    "markdown_it",
    "mdit_py_plugins",
    "linkify_it",
    "mdurl",
    "jinja2",
    "markupsafe",
    "yaml",
    "secrets",
)


def build_imports(source: str, imported: list[str]) -> list[str]:
    """Modules (dotted names, sorted) that running the app ``source`` imports after
    ``imported`` (as the worker runs it, in browser mode).

    Only those under :data:`PREIMPORTABLE` top-level packages; private C helpers (``_cython_…``)
    and test/server-only packages are left to the app build.
    """
    env = dict(os.environ, LLMQP_STATIC_BUILD="1")
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    try:
        done = subprocess.run(
            [sys.executable, "-c", _PROBE, json.dumps(imported)],
            input=source,
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
            check=True,
        )
    except (subprocess.SubprocessError, OSError) as exc:
        detail = getattr(exc, "stderr", "") or ""
        raise BuildError(f"listing what the app imports failed: {exc!r} {detail[-400:]}") from exc
    names = json.loads(done.stdout.strip().splitlines()[-1])
    return [n for n in names if n.split(".")[0] in PREIMPORTABLE]
