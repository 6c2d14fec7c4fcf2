"""The page and the worker: Panel's pre-rendered HTML, rewritten to use this site's files.

``panel convert`` machinery runs the app once in CPython and embeds the resulting Bokeh
document in the page, so the figures show before Python starts in the browser. We keep that,
swap Panel's worker hand-off for ours (``templates/handler.js``), write our own worker
(``templates/worker.js``), and point every CDN URL at a local folder.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import importlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from app.web.fetch import BuildError
from app.web.preimport import build_imports

TEMPLATES = Path(__file__).parent / "templates"

# Absolute URLs that may stay: XML namespaces and similar identifiers, never fetched.
HARMLESS_URL = re.compile(
    r"https?://(www\.w3\.org/(1999/xhtml|2000/svg|1999/xlink|1998/Math/MathML|XML/1998/namespace"
    r"|2000/xmlns/))"
)
ANY_URL = re.compile(r"https?://[^\s\"'<>`)\\]+")


@dataclass(frozen=True)
class Page:
    html: str
    worker: str
    bundled: frozenset[str]  # Panel ``dist/bundled/<name>`` folders the page refers to


def _with_bokeh_patches(script: str) -> str:
    """``script`` with ``templates/bokeh_patches.js`` (cheaper K moves) in place."""
    return script.replace("__BOKEH_PATCHES_JS__", (TEMPLATES / "bokeh_patches.js").read_text())


def _handler_template(config: dict):
    from jinja2 import Template

    text = _with_bokeh_patches((TEMPLATES / "handler.js").read_text())
    text = text.replace("__CONFIG__", json.dumps(config))
    return Template("{% raw %}" + text + "{% endraw %}")


@contextlib.contextmanager
def _our_handler(config: dict):
    """Let ``script_to_html`` write our main-thread handler instead of Panel's."""
    from panel.io import convert

    saved = convert.WORKER_HANDLER_TEMPLATE
    convert.WORKER_HANDLER_TEMPLATE = _handler_template(config)
    try:
        yield convert
    finally:
        convert.WORKER_HANDLER_TEMPLATE = saved


STATUS_STYLE = """
<style>
#llmqp-status{position:fixed;left:0;right:0;bottom:0;z-index:1000;padding:4px 10px;
font:13px system-ui,sans-serif;background:#f3f4f6;color:#111;border-top:1px solid #d1d5db}
#llmqp-status[data-state=ready]{display:none}
#llmqp-status[data-state=error]{background:#fee2e2;color:#7f1d1d}
</style>
"""


BOOT_SCRIPT = """<script>
// Register the service worker (if any) and start Python early; handler.js takes over later.
// With start = "head" the worker starts now, while Bokeh's JS is still loading; with
// "prerendered" handler.js starts it once the embedded figures are drawn (less contention
// for the main thread on a first visit).
window.llmqpBoot = (function () {
  if (location.protocol === "file:" || typeof Worker === "undefined") return null;
  const boot = {buffered: [], worker: null, mode: "%(start)s", sw: null, workerUrl: "%(worker)s"};
  if ("%(service_worker)s" && "serviceWorker" in navigator) {
    // Caches the site for repeat visits (templates/sw.js); the page works without it.
    boot.sw = navigator.serviceWorker.register("%(service_worker)s").catch(() => null);
  }
  boot.start = () => {
    if (boot.worker == null) {
      boot.worker = new Worker(boot.workerUrl);
      boot.worker.onmessage = (event) => boot.buffered.push([event, performance.now()]);
      boot.t0 = performance.now();
    }
    return boot.worker;
  };
  // A repeat visit whose files all come from the service worker's cache has nothing to
  // download: start Python at once, alongside the pre-render, whatever the mode.
  if (boot.mode === "head" || (boot.sw && navigator.serviceWorker.controller)) boot.start();
  return boot;
})();
</script>
"""


@contextlib.contextmanager
def _browser_mode():
    """Pre-render what the browser will show, not the server-mode page.

    The app reads ``LLMQP_STATIC_BUILD=1``; ``app.widgets.app.IN_BROWSER`` is also set while
    the app runs, for app versions that only look at ``sys.platform``.
    """
    saved_env = os.environ.get("LLMQP_STATIC_BUILD")
    os.environ["LLMQP_STATIC_BUILD"] = "1"
    try:
        module = importlib.import_module("app.widgets.app")
    except ImportError:
        module = None
    saved = getattr(module, "IN_BROWSER", None)
    if module is not None and saved is not None:
        module.IN_BROWSER = True
    try:
        yield
    finally:
        if module is not None and saved is not None:
            module.IN_BROWSER = saved
        if saved_env is None:
            os.environ.pop("LLMQP_STATIC_BUILD", None)
        else:
            os.environ["LLMQP_STATIC_BUILD"] = saved_env


#: Bokeh model ids restart here, both for the pre-render and in the worker (``p1000001``, …).
ID_BASE = 1_000_000


@contextlib.contextmanager
def _fixed_ids(base: int = ID_BASE):
    """Sequential Bokeh model ids starting after ``base`` for the app's document, as the
    worker's prologue (:data:`PROLOGUE`) sets them: the same app then builds models with the
    same ids in both places, and the page can keep the pre-rendered document."""
    import bokeh.util.serialization as serialization
    from bokeh.application.application import Application
    from bokeh.settings import settings

    original = Application.initialize_document

    def initialize_document(self, doc):
        settings.simple_ids.set_value(True)
        serialization._simple_id = base
        return original(self, doc)

    Application.initialize_document = initialize_document
    try:
        yield
    finally:
        Application.initialize_document = original
        settings.simple_ids.unset_value()


def prerender(app: Path, handler_config: dict) -> tuple[str, str]:
    """Run ``app`` in CPython; return (page HTML with pre-rendered figures, app source)."""
    try:
        with _our_handler(handler_config) as convert, _browser_mode(), _fixed_ids():
            html, _worker = convert.script_to_html(
                str(app),
                requirements=[],
                runtime="pyodide-worker",
                prerender=True,
                panel_version="auto",
            )
    except Exception as exc:  # noqa: BLE001 - report the app's own error on one line
        raise BuildError(f"running {app} to pre-render it failed: {exc!r}") from exc
    source = app.read_text(encoding="utf-8")
    return html, source


# The worker's Python around the app's source. Panel's pyodide prologue (init_doc) and
# epilogue (write_doc), except that model ids are sequential from ID_BASE, as in the
# pre-render, and that the document is not serialised up front: the last expression is a
# fingerprint (every model's id and type) that the page compares with the pre-rendered
# document. Equal: the page keeps its document and links it to this one. Otherwise the page
# asks for the whole document (``_llmqp_doc_json()``) and renders it afresh.
PROLOGUE = """
import asyncio

import panel.io.pyodide  # noqa: F401  (its set-up: CDN resources, worker detection)
import bokeh.util.serialization as _bk_serialization
from bokeh.document import Document as _Document
from bokeh.io.doc import set_curdoc as _set_curdoc
from bokeh.settings import settings as _bk_settings
from panel.io.document import MockSessionContext as _MockSessionContext
from panel.io.state import state as _state

_bk_settings.simple_ids.set_value(True)
_doc = _Document()
_set_curdoc(_doc)
_doc.hold()
_doc._session_context = lambda: _MockSessionContext(document=_doc)
_state.curdoc = _doc
_bk_serialization._simple_id = %(id_base)d
"""

EPILOGUE = """
def _llmqp_doc_json():
    from panel.io.pyodide import _doc_json

    return _doc_json(_state.curdoc)


def _llmqp_ready():
    doc = _state.curdoc
    template = _state._templates.get(doc)
    if template is not None and doc not in template._documents:
        template.server_doc(title=template.title, location=True, doc=doc)
    doc._session_context = None  # as write_doc leaves it
    return "\\n".join(sorted(f"{m.id}:{m.__qualified_model__}" for m in doc.models))


_llmqp_ready()
"""


def worker_code(source: str) -> str:
    """The Python the worker runs: :data:`PROLOGUE`, the app, :data:`EPILOGUE`."""
    return "\n".join([PROLOGUE % {"id_base": ID_BASE}, source, EPILOGUE])


def rewrite_urls(text: str, prefixes: dict[str, str]) -> str:
    for old, new in prefixes.items():
        text = text.replace(old, new)
    return text


def build_page(app: Path, config: dict, prefixes: dict[str, str]) -> Page:
    """Page and worker for ``app``; ``prefixes`` maps CDN URL prefixes to local ones."""
    html, source = prerender(
        app, {"worker": config["worker"], "loading_spinner": config["loading_spinner"]}
    )
    html = rewrite_urls(html, prefixes)
    html = re.sub(
        r"(<body[^>]*>)",
        lambda m: (
            m.group(1) + '\n<div id="llmqp-status" role="status" aria-live="polite" '
            'data-state="loading">Loading the page\u2026</div>'
        ),
        html,
        count=1,
    )
    html = html.replace("</head>", STATUS_STYLE + "</head>", 1)
    html = re.sub(
        r"(<head[^>]*>)",
        lambda m: m.group(1) + "\n" + BOOT_SCRIPT % config,
        html,
        count=1,
    )
    html = html.replace("</head>", '<link rel="icon" href="data:,">\n</head>', 1)  # no /favicon.ico
    for name in config.get("scripts", ()):  # page-specific scripts (templates/<name>)
        script = (TEMPLATES / name).read_text()
        html = html.replace("</body>", f"<script>\n{script}</script>\n</body>", 1)
    during = build_imports(source, snapshot_imports(source)) if config.get("snapshot", True) else []
    worker = worker_script(config["worker_config"], source, config.get("snapshot", True), during)
    bundled = frozenset(re.findall(r"dist/bundled/([^/\"']+)/", html))
    return Page(html=html, worker=worker, bundled=bundled)


#: Modules the worker imports before it takes its snapshot, besides the app's own imports:
#: those of :data:`PROLOGUE` and of the worker's link (``templates/worker.js``).
SNAPSHOT_IMPORTS = (
    "panel",
    "panel.io.pyodide",
    "panel.io.document",
    "panel.io.state",
    "bokeh.core.serialization",
    "bokeh.document",
    "bokeh.document.events",
    "bokeh.document.json",
    "bokeh.events",
    "bokeh.io.doc",
    "bokeh.util.serialization",
)


def snapshot_imports(source: str) -> list[str]:
    """The modules :func:`startup_imports` imports (before ``during_build``)."""
    return [line.split()[1] for line in startup_imports(source).splitlines()]


def startup_imports(source: str, during_build: list[str] = ()) -> str:
    """Python importing what the app ``source`` imports at its top level (not ``js``), after
    :data:`SNAPSHOT_IMPORTS`, then the modules ``during_build`` that running the app imports
    lazily (:func:`app.web.preimport.build_imports`; each guarded, as CPython's list may hold
    one that Pyodide lacks): run before the worker's snapshot, so a restore skips them."""
    names = list(SNAPSHOT_IMPORTS)
    for node in ast.parse(source).body:
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    names = [n for n in dict.fromkeys(names) if n.split(".")[0] not in ("js", "pyodide_js")]
    lines = [f"import {name}" for name in names]
    if during_build:
        lines += [
            "import importlib as _llmqp_importlib",
            f"for _llmqp_name in {sorted(during_build)!r}:",
            "    try:",
            "        _llmqp_importlib.import_module(_llmqp_name)",
            "    except ImportError:",
            "        pass",
            "del _llmqp_importlib, _llmqp_name",
        ]
    return "\n".join(lines)


def worker_script(
    worker_config: dict, source: str, snapshot: bool = True, during_build: list[str] = ()
) -> str:
    """``worker.js`` running the app ``source`` with ``worker_config`` (runtime, packages).

    With ``snapshot`` (and the start-up archive), the worker restores a snapshot of the
    interpreter saved by an earlier visit (``templates/snapshot.js``); its key is a hash of
    the whole worker, so any change of runtime, packages, app or worker makes it stale.
    ``during_build``: modules the app imports while building, imported before the snapshot.
    """
    config = dict(worker_config, imports=startup_imports(source, during_build))
    config["snapshot"] = {"key": "__SNAPSHOT_KEY__"} if snapshot and "bundle" in config else None
    worker = (TEMPLATES / "worker.js").read_text()
    worker = worker.replace("__SNAPSHOT_JS__", (TEMPLATES / "snapshot.js").read_text())
    worker = worker.replace("__CONFIG__", json.dumps(config, indent=1))
    worker = worker.replace("__APP_CODE__", json.dumps(worker_code(source)))
    key = hashlib.sha256(worker.encode()).hexdigest()[:16]
    return worker.replace("__SNAPSHOT_KEY__", key)


def embed_script(config: dict) -> str:
    """``embed.js`` (templates/embed.js) with its ``config``: worker, scripts, figure names."""
    text = _with_bokeh_patches((TEMPLATES / "embed.js").read_text())
    return text.replace("__CONFIG__", json.dumps(config))


def service_worker(build_id: str) -> str:
    """``sw.js`` for the build ``build_id`` (its cache is named after it)."""
    return (TEMPLATES / "sw.js").read_text().replace("__BUILD__", build_id)


def build_id(folder: Path) -> str:
    """A short hash of every file under ``folder``: names and contents."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def remote_urls(text: str) -> list[str]:
    """Absolute http(s) URLs in ``text`` that a browser might fetch (namespaces excluded)."""
    found = []
    for match in ANY_URL.finditer(text):
        if not HARMLESS_URL.match(match.group(0)):
            found.append(match.group(0))
    return found
