// Web Worker that runs the app's Python in Pyodide, from this site's own files only.
// Adapted from Panel's pyodide_worker.js (BSD-3-Clause); build.py fills in CONFIG.
"use strict";
const CONFIG = __CONFIG__;
const APP_CODE = __APP_CODE__;
const BASE = new URL("./", self.location.href).href;
const T0 = performance.now();
importScripts(BASE + CONFIG.pyodide_dir + "pyodide.js");

__SNAPSHOT_JS__

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

// Links the worker's document to the page's, as Panel's _link_docs_worker does, but with the
// document changes of one turn of the event loop sent as one patch: Panel sends each change
// as its own patch (a K move makes about 15), scanning every model for newly referenced ones
// each time, and the page applies each one separately. Each change is encoded when it
// happens (a source's data set and then streamed to in one turn must not be sent with the
// streamed rows twice); the batch goes out on the next turn, or at once by _llmqp_flush()
// (after the held events, and after each patch from the page, before "linked"/"idle").
const LINK = `
import asyncio
import functools
import traceback

import js
import pyodide.ffi
from bokeh.core.serialization import Serializer
from bokeh.document.events import RootAddedEvent, RootRemovedEvent, TitleChangedEvent
from bokeh.document.json import PatchJson
from bokeh.events import DocumentReady
from panel.io.pyodide import _dict_converter, _serialize_buffers
from panel.io.state import state

def _llmqp_link(doc, send, setter, report):
    batch = []  # [Serializer, encoded events] of the current turn, or empty

    def flush():
        if not batch:
            return
        serializer, events = batch
        batch.clear()
        try:
            doc.models.flush_synced(lambda model: not serializer.has_ref(model))
            buffers = {b.id: pyodide.ffi.to_js(b.to_bytes()).buffer for b in serializer.buffers}
            patch = _serialize_buffers(PatchJson(events=events), buffers=buffers)
            send(
                pyodide.ffi.to_js(patch, dict_converter=_dict_converter),
                js.Map.new(js.Object.entries(pyodide.ffi.to_js(buffers))),
            )
        except Exception:
            report(traceback.format_exc())  # the page shows the error state
            raise

    def on_change(event):
        if getattr(event, "setter", None) == setter:
            return
        if not batch:
            batch.extend([Serializer(references=doc.models.synced_references), []])
            asyncio.get_event_loop().call_soon(flush)
        batch[1].append(batch[0].encode(event))

    doc.on_change(on_change)
    doc.unhold()
    doc.on_event("document_ready", functools.partial(state._schedule_on_load, doc))
    doc.callbacks.trigger_event(DocumentReady())
    flush()
    return flush

# The page's document already has these roots and title (pre-rendered or drawn from ours):
# resending them would serialise the whole document once more.
held = state.curdoc.callbacks._held_events
held[:] = [
    e for e in held if not isinstance(e, (RootAddedEvent, RootRemovedEvent, TitleChangedEvent))
]
_llmqp_flush = _llmqp_link(state.curdoc, sendPatch, "js", reportFailure)
`;

// The start-up packages come as one gzip'd archive of their files (app/web/startup.py),
// fetched while the runtime boots, inflated natively and written into site-packages from
// JavaScript, and their WebAssembly libraries as separate files compiled meanwhile, in
// parallel (streaming compilation; a repeat visit gets the compiled code from the browser's
// cache). Much cheaper than Pyodide unzipping each wheel in Python and compiling the
// libraries one by one. Without DecompressionStream or compileStreaming: null, and
// loadPackage installs the wheels as usual.
function fetchStartup(bundle) {
  if (
    bundle == null ||
    typeof DecompressionStream === "undefined" ||
    typeof WebAssembly.compileStreaming !== "function"
  ) {
    return null;
  }
  const get = async (url, integrity) => {
    const response = await fetch(BASE + CONFIG.pyodide_dir + url, {integrity: integrity});
    if (!response.ok) {
      throw new Error(url + ": HTTP " + response.status);
    }
    return response;
  };
  const archive = get(bundle.file, bundle.integrity).then(async (response) => {
    let bytes = new Uint8Array(await response.arrayBuffer());
    if (bytes[0] === 0x1f && bytes[1] === 0x8b) {
      // (a host that sent it with Content-Encoding: gzip has inflated it already)
      const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
      bytes = new Uint8Array(await new Response(stream).arrayBuffer());
    }
    return bytes;
  });
  const libs = (bundle.dynlibs || []).map((lib) =>
    get(lib.url, lib.integrity).then((response) => {
      const copy = response.clone();
      return Promise.all([lib.path, WebAssembly.compileStreaming(response), copy.arrayBuffer()]);
    })
  );
  const all = Promise.all([archive, Promise.all(libs)]);
  all.catch(() => {}); // awaited later; no "unhandled rejection" meanwhile
  return all;
}

// Write the archive's files and the libraries' bytes into site-packages (a snapshot holds
// the heap, not the file system: Python reads templates, metadata and lazy modules from it).
function writeStartup(py, [bytes, libs], packages) {
  const text = new TextDecoder();
  if (text.decode(bytes.subarray(0, 8)) !== "LLMQPSP1") {
    throw new Error("the start-up package archive is damaged");
  }
  const size = new DataView(bytes.buffer, bytes.byteOffset + 8, 4).getUint32(0, true);
  const index = JSON.parse(text.decode(bytes.subarray(12, 12 + size)));
  const site = py.runPython("import site; site.getsitepackages()[0]");
  const made = new Set();
  const write = (full, data) => {
    const dir = full.slice(0, full.lastIndexOf("/"));
    if (!made.has(dir)) {
      py.FS.mkdirTree(dir);
      made.add(dir);
    }
    py.FS.writeFile(full, data, {canOwn: true});
  };
  let offset = 12 + size;
  for (const [path, length] of index) {
    write(path.startsWith("/") ? path : site + "/" + path, bytes.subarray(offset, offset + length));
    offset += length;
  }
  for (const [path, , data] of libs) {
    write(site + "/" + path, new Uint8Array(data));
  }
  for (const name of packages) {
    py.loadedPackages[name] = "default channel"; // as loadPackage records it
  }
  py.runPython("import importlib; importlib.invalidate_caches()");
  return site;
}

// What Pyodide's loadPackage does with a package's libraries (loadDynlib), given modules
// compiled already: instantiate each (its memory, its constructors) and keep its exports,
// which the dynamic loader returns when Python imports the extension module. The loader
// records each library's bases (snapshot.js), which a snapshot needs.
function installStartup(py, files, packages) {
  const site = writeStartup(py, files, packages);
  const records = loadLibraries(py._module, site, files[1], null);
  return {records: records, table: py._module.wasmTable.length};
}

function pyodideOptions() {
  return {
    indexURL: BASE + CONFIG.pyodide_dir,
    lockFileURL: BASE + CONFIG.pyodide_dir + CONFIG.lock_file,
    packages: CONFIG.packages,
    env: {PANEL_CDN_ROOT: BASE + CONFIG.panel_root, HOME: "/home/pyodide"},
    stdout: (s) => console.log(s),
    stderr: (s) => console.warn(s),
  };
}

// The interpreter restored from this build's snapshot, or null (one console line says why
// when a snapshot was there and could not be used; the caller then boots as usual).
async function fromSnapshot(saved, startup) {
  let found;
  try {
    found = await saved;
  } catch (e) {
    console.warn("snapshot unusable, starting without it: " + e);
    self.snapshotState = "failed";
    return null;
  }
  self.snapshotState = found.state;
  restoreMark("snapshot_read");
  if (found.state !== "found") {
    if (found.state === "stale") {
      console.warn("snapshot of another build, starting without it (a new one follows)");
    }
    return null;
  }
  try {
    const [py, meta] = await restoreSnapshot(pyodideOptions(), found, startup);
    py.runPython(RESEED);
    restoreMark("reseeded");
    // Site-packages is written once the page is live (filesAfterRestore): everything the
    // app imported is in the heap, and nothing before the link reads a file.
    self.filesPending = async () => writeStartup(py, await startup, CONFIG.bundle.packages);
    self.snapshotState = "restored";
    self.restored = meta;
    return py;
  } catch (e) {
    console.warn("snapshot failed to restore, starting without it: " + e);
    self.snapshotState = "failed";
    return null;
  }
}

// Start Python: from the snapshot if there is a usable one (``self.restored``: its meta), else
// boot, install, import. Returns the libraries' records where a snapshot should be taken
// after the app build (buildApplication), else null.
async function startPython() {
  const bundle = CONFIG.bundle;
  const startup = fetchStartup(bundle);
  const saved = startup == null ? null : openSnapshot();
  if (saved != null) {
    saved.catch(() => {});
    self.pyodide = await fromSnapshot(saved, startup);
    if (self.pyodide != null) {
      status("Python and the app restored from the snapshot", "packages");
      return null;
    }
  }
  const wantSnapshot = saved != null && self.snapshotState !== "off";
  self.pyodide = await loadPyodide(pyodideOptions());
  let placed = null;
  if (bundle != null) {
    let files = null;
    try {
      files = startup == null ? null : await startup;
    } catch (e) {
      console.warn("start-up archive unavailable, installing the wheels instead: " + e);
    }
    if (files != null) {
      placed = installStartup(self.pyodide, files, bundle.packages);
    } else {
      await self.pyodide.loadPackage(bundle.packages);
    }
  }
  const loaded = self.pyodide.loadedPackages;
  const wanted = [...CONFIG.packages, ...(bundle != null ? bundle.packages : [])];
  const missing = wanted.filter((p) => !(p in loaded));
  if (missing.length) {
    throw new Error("could not install " + missing.join(", ") + " (see the console)");
  }
  status("Python ready; packages installed", "packages");
  self.pyodide.runPython(PRELUDE);
  if (wantSnapshot) {
    self.pyodide.runPython(RECORD_RUN_JS);
  }
  try {
    self.pyodide.runPython(CONFIG.imports || "");
  } finally {
    if (wantSnapshot) {
      self.pyodide.runPython(STOP_RECORDING_RUN_JS);
    }
  }
  return wantSnapshot ? placed : null;
}

// Called from Python (the link) when a patch could not be sent: the page shows the error state.
// A named global, so that a snapshot can hold it (snapshot.js serialises JS objects by path).
function reportFailure(text) {
  fail("patch", text);
}

// Build the app (APP_CODE); its fingerprint. A snapshot taken right after (startApplication)
// lets a later visit restore the built app and skip both the imports and the build.
async function buildApplication() {
  self.pyodide.globals.set("sendPatch", sendPatch);
  self.pyodide.globals.set("reportFailure", reportFailure);
  status("Starting the app", "app");
  self.pyodide.runPython("import sys; _llmqp_modules = set(sys.modules)");
  const fingerprint = await self.pyodide.runPythonAsync(APP_CODE);
  // What the app build imported (the worker imports it all before the build): llmqp.snapshot.
  const imported = self.pyodide.runPython(
    "_llmqp_new = sorted(set(sys.modules) - _llmqp_modules); del _llmqp_modules; _llmqp_new"
  );
  self.postMessage({type: "snapshot", build_imports: imported.toJs()});
  imported.destroy();
  self.pyodide.runPython("del _llmqp_new");
  return fingerprint;
}

async function startApplication() {
  status("Loading Python runtime (Pyodide " + CONFIG.pyodide_version + ")", "runtime");
  const placed = await startPython();
  let fingerprint;
  if (self.restored != null) {
    // The app as the snapshot's visit built it; its background work restarts (RESUME).
    fingerprint = self.restored.fingerprint;
    self.pyodide.runPython(RESUME);
    restoreMark("resumed");
  } else {
    fingerprint = await buildApplication();
  }
  status("Drawing the live figures", "render");
  self.postMessage({type: "hydrate", fingerprint: fingerprint});
  if (placed != null) {
    // While the page hydrates: the heap as built, before the link changes it.
    try {
      self.snapshot = takeSnapshot(self.pyodide, placed.records, placed.table, fingerprint);
    } catch (e) {
      console.warn("no snapshot made: " + e);
      self.snapshotState = "unsupported";
    }
  }
  self.postMessage({type: "snapshot", state: self.snapshotState || "off", times: RESTORE_TIMES});
}

// Once the page is live: save the snapshot taken at start-up for the next visit.
async function saveSnapshot() {
  const made = self.snapshot;
  self.snapshot = null;
  if (made == null) {
    return;
  }
  const t = performance.now();
  try {
    const bytes = await storeSnapshot(made);
    self.postMessage({type: "snapshot", state: "stored", bytes: bytes, ms: performance.now() - t});
  } catch (e) {
    console.warn("snapshot not saved: " + e);
    self.postMessage({type: "snapshot", state: "unsaved"});
  }
}

const ready = startApplication().catch((e) => {
  fail("start", e);
  throw e;
});

// After a restore: write site-packages (once), before any Python that may read a file.
async function filesAfterRestore() {
  const write = self.filesPending;
  self.filesPending = null;
  if (write != null) {
    await write();
    restoreMark("files_written");
    self.postMessage({type: "snapshot", times: RESTORE_TIMES});
  }
}

async function handle(msg) {
  if (msg.type !== "rendered") {
    await filesAfterRestore();
  }
  if (msg.type === "doc") {
    // The page could not keep its pre-rendered document: send ours to draw.
    const [docs_json, render_items, root_ids] = self.pyodide.runPython("_llmqp_doc_json()");
    self.postMessage({type: "render", docs_json, render_items, root_ids});
  } else if (msg.type === "rendered") {
    self.pyodide.runPython(LINK);
    const urls = performance.getEntriesByType("resource").map((e) => e.name);
    self.postMessage({type: "linked", t: performance.now() - T0, urls: urls});
    await filesAfterRestore();
    saveSnapshot();
  } else if (msg.type === "patch") {
    self.pyodide.globals.set("patch", msg.patch);
    try {
      self.pyodide.runPython(`
from panel.io.state import state
from panel.io.pyodide import _convert_json_patch
state.curdoc.apply_json_patch(_convert_json_patch(patch), setter="js")
_llmqp_flush()
`);
    } finally {
      self.postMessage({type: "idle"});
    }
  } else if (msg.type === "location") {
    self.pyodide.globals.set("location", msg.location);
    self.pyodide.runPython(`
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
  }
}

// Messages wait for start-up, then run strictly in order. Their Python runs synchronously
// (runPython): runPythonAsync would take turns with the event loop's tasks, e.g. the router
// run finishing in the background, and wait for several of its chunks.
let queue = ready;
self.onmessage = (event) => {
  queue = queue.then(() => handle(event.data)).catch((e) => fail(event.data.type, e));
};
