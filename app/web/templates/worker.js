// Web Worker that runs the app's Python in Pyodide, from this site's own files only.
// Adapted from Panel's pyodide_worker.js (BSD-3-Clause); build.py fills in CONFIG.
"use strict";
const CONFIG = __CONFIG__;
const APP_CODE = __APP_CODE__;
const BASE = new URL("./", self.location.href).href;
const T0 = performance.now();
importScripts(BASE + CONFIG.pyodide_dir + "pyodide.js");

function status(msg, phase) {
  self.postMessage({type: "status", msg: msg, phase: phase, t: performance.now() - T0});
}

function fail(where, err) {
  const text = String(err && err.message ? err.message : err);
  const lines = text.trim().split("\n");
  self.postMessage({type: "error", where: where, msg: lines[lines.length - 1], detail: text});
}

function sendPatch(patch, buffers) {
  self.postMessage({type: "patch", patch: patch, buffers: buffers});
}

// Python run before Panel is imported: compatibility shims and environment.
const PRELUDE = `
import sys, pyodide.ffi
if not hasattr(pyodide.ffi, "jsnull"):
    # Panel 1.9 expects Pyodide >= 0.28; in 0.27 a JS null already arrives as None.
    class _JsNull:
        def __repr__(self):
            return "jsnull"
    pyodide.ffi.jsnull = _JsNull()

from pyodide.webloop import WebLoop
_decrement = WebLoop._decrement_in_progress
def _decrement_in_progress(self, fut=None):
    # Pyodide 0.27 asks a cancelled task for its exception and logs the CancelledError
    # (Panel stops periodic callbacks by cancelling their task). Later Pyodides skip these.
    return _decrement(self, None if fut is not None and fut.cancelled() else fut)
WebLoop._decrement_in_progress = _decrement_in_progress
`;

async function startApplication() {
  status("Loading Python runtime (Pyodide " + CONFIG.pyodide_version + ")", "runtime");
  let missing = [];
  self.pyodide = await loadPyodide({
    indexURL: BASE + CONFIG.pyodide_dir,
    lockFileURL: BASE + CONFIG.pyodide_dir + CONFIG.lock_file,
    packages: CONFIG.packages,
    env: {PANEL_CDN_ROOT: BASE + CONFIG.panel_root, HOME: "/home/pyodide"},
    stdout: (s) => console.log(s),
    stderr: (s) => console.warn(s),
  });
  const loaded = self.pyodide.loadedPackages;
  missing = CONFIG.packages.filter((p) => !(p in loaded));
  if (missing.length) {
    throw new Error("could not install " + missing.join(", ") + " (see the console)");
  }
  status("Python ready; packages installed", "packages");
  self.pyodide.globals.set("sendPatch", sendPatch);
  self.pyodide.runPython(PRELUDE);
  status("Starting the app", "app");
  const [docs_json, render_items, root_ids] = await self.pyodide.runPythonAsync(APP_CODE);
  status("Drawing the live figures", "render");
  self.postMessage({type: "render", docs_json, render_items, root_ids});
}

const ready = startApplication().catch((e) => {
  fail("start", e);
  throw e;
});

async function handle(msg) {
  if (msg.type === "rendered") {
    await self.pyodide.runPythonAsync(`
from panel.io.state import state
from panel.io.pyodide import _link_docs_worker
_link_docs_worker(state.curdoc, sendPatch, setter="js")
`);
    self.postMessage({type: "linked", t: performance.now() - T0});
  } else if (msg.type === "patch") {
    self.pyodide.globals.set("patch", msg.patch);
    try {
      await self.pyodide.runPythonAsync(`
from panel.io.state import state
from panel.io.pyodide import _convert_json_patch
state.curdoc.apply_json_patch(_convert_json_patch(patch), setter="js")
`);
    } finally {
      self.postMessage({type: "idle"});
    }
  } else if (msg.type === "location") {
    self.pyodide.globals.set("location", msg.location);
    await self.pyodide.runPythonAsync(`
import json
from panel.io.state import state
from panel.util import edit_readonly
if state.location:
    loc_data = json.loads(location)
    with edit_readonly(state.location):
        state.location.param.update(
            {k: v for k, v in loc_data.items() if k in state.location.param}
        )
`);
  } else if (msg.type === "eval") {
    // Test and benchmark hook: run Python, answer with its result as JSON text.
    try {
      const ns = self.pyodide.globals.get("dict")();
      const out = await self.pyodide.runPythonAsync(msg.code, {globals: ns});
      const py_json = self.pyodide.pyimport("json");
      const text = py_json.dumps(out);
      ns.destroy();
      self.postMessage({type: "eval-result", id: msg.id, result: text});
    } catch (e) {
      self.postMessage({type: "eval-result", id: msg.id, error: String(e)});
    }
  }
}

// Messages wait for start-up, then run strictly in order.
let queue = ready;
self.onmessage = (event) => {
  queue = queue.then(() => handle(event.data)).catch((e) => fail(event.data.type, e));
};
