// Memory snapshot of the started interpreter (inlined into the worker by page.py).
//
// Pyodide 0.27 can copy its whole WebAssembly heap (makeMemorySnapshot) and start from such a
// copy (loadPyodide's _loadSnapshot), but the copy holds neither the dynamic libraries'
// instances (numpy's 19 `.so`) nor the function-table slots they fill. So the worker loads
// every library itself, in a fixed order, through Emscripten's loader with a handle of its
// own in which the loader records where the library's data (memory base) and functions
// (table base) went. A restore instantiates the same libraries in the same order at those
// bases (the loader's "already placed" path: handle flag set, bases given) right after the
// runtime is created and before the heap is copied back, so the copied heap's pointers into
// library data and function tables are valid again; then it re-registers the handles that
// Python's dlopen made, writes site-packages again (files are not in the heap) and reseeds
// the random generators. Made on a visit without one, once the page is live; kept in Cache
// Storage (own cache, not the service worker's), keyed by the worker's URL and build key.

const SNAPSHOT_CACHE = "llmqp.snapshot"; // not "llmqp-…": sw.js deletes those of old builds
const SNAPSHOT_MAGIC = "LLMQPSN2";
// Only the heap's non-zero pages are stored (meta.runs: [first page, pages]); a restore starts
// from zeros. Much of a fresh interpreter's heap is still zero: less to read on every visit.
const SNAPSHOT_PAGE = 4096;
const SNAPSHOT_SIZE_HEADER = "x-llmqp-heap-size"; // the heap's bytes (before reading the body)
// Emscripten 3.1.58's `struct dso` (libc dynlink): +8 flag "placed", +12 memory base,
// +16 memory size, +20 table base, +24 table size; +36 the name (unused here).
const DSO_HANDLE_SIZE = 40;

function snapshotUrl() {
  return self.location.href.split("?")[0] + "?llmqp-snapshot=" + CONFIG.snapshot.key;
}

// Instantiate the start-up libraries (``libs``: [path in site-packages, compiled, bytes]) in
// order; with ``placed`` (a snapshot's records) at the recorded bases. Returns the records.
function loadLibraries(module, site, libs, placed) {
  const records = [];
  libs.forEach(([path, compiled], i) => {
    const full = site + "/" + path;
    const handle = module._calloc(1, DSO_HANDLE_SIZE);
    if (placed != null) {
      const want = placed[i];
      if (want == null || want.path !== full) {
        throw new Error("the snapshot's libraries differ from this build's");
      }
      const view = new DataView(module.HEAP8.buffer);
      view.setUint8(handle + 8, 1);
      view.setUint32(handle + 12, want.memoryBase, true);
      view.setUint32(handle + 16, want.memorySize, true);
      view.setUint32(handle + 20, want.tableBase, true);
      view.setUint32(handle + 24, want.tableSize, true);
    }
    const flags = {loadAsync: false, nodelete: true, allowUndefined: true};
    module.preloadedWasm[full] = module.loadWebAssemblyModule(compiled, flags, full, {}, handle);
    const view = new DataView(module.HEAP8.buffer);
    records.push({
      path: full,
      memoryBase: view.getUint32(handle + 12, true),
      memorySize: view.getUint32(handle + 16, true),
      tableBase: view.getUint32(handle + 20, true),
      tableSize: view.getUint32(handle + 24, true),
    });
  });
  module.reportUndefinedSymbols();
  return records;
}

// The saved snapshot for this build: {state: "found", size, parsed} (``size``: the heap's
// bytes, from the entry's header, known before its body is read; ``parsed``: a promise of
// {meta, heap}), or a state saying why not ("missing", "stale": one of another build, "off":
// no Cache Storage or no snapshot build). A damaged entry throws, here or from ``parsed``.
async function openSnapshot() {
  if (CONFIG.snapshot == null || typeof caches === "undefined") {
    return {state: "off"};
  }
  const cache = await caches.open(SNAPSHOT_CACHE);
  const response = await cache.match(snapshotUrl());
  if (response == null) {
    const prefix = snapshotUrl().split("?")[0] + "?";
    const others = (await cache.keys()).filter((r) => r.url.startsWith(prefix));
    return {state: others.length ? "stale" : "missing"};
  }
  const size = Number(response.headers.get(SNAPSHOT_SIZE_HEADER));
  if (!(size > 0)) {
    throw new Error("the saved snapshot is damaged (no size)");
  }
  const parsed = readSnapshot(response, size);
  parsed.catch(() => {}); // awaited by the restore
  return {state: "found", size: size, parsed: parsed};
}

async function readSnapshot(response, heapSize) {
  const bytes = new Uint8Array(await response.arrayBuffer());
  restoreMark("snapshot_read");
  const text = new TextDecoder();
  if (bytes.length < 16 || text.decode(bytes.subarray(0, 8)) !== SNAPSHOT_MAGIC) {
    throw new Error("the saved snapshot is damaged (no header)");
  }
  const size = new DataView(bytes.buffer).getUint32(8, true);
  const meta = JSON.parse(text.decode(bytes.subarray(16, 16 + size)));
  const pages = bytes.subarray(16 + size);
  if (meta.key !== CONFIG.snapshot.key) {
    throw new Error("the saved snapshot is of another build");
  }
  const stored = meta.runs.reduce((sum, run) => sum + runBytes(run, meta.size), 0);
  if (pages.length !== stored || meta.size !== heapSize) {
    throw new Error("the saved snapshot is damaged (" + pages.length + " of " + stored + " bytes)");
  }
  return {meta: meta, pages: pages};
}

// Where a restore's time goes (ms since the worker started), sent with the snapshot's state.
const RESTORE_TIMES = {};
function restoreMark(name) {
  RESTORE_TIMES[name] = Math.round(performance.now() - T0);
}

// loadPyodide from ``found`` (openSnapshot's): the runtime is created while the snapshot is
// read (Pyodide needs only its size first), and the libraries are placed between the runtime's
// creation and the heap's restoration (loadPyodide calls the global _createPyodideModule,
// wrapped meanwhile). Returns [the interpreter, the snapshot's meta].
async function restoreSnapshot(options, found, startup) {
  if (typeof _createPyodideModule !== "function") {
    importScripts(options.indexURL + "pyodide.asm.js");
  }
  const create = _createPyodideModule;
  const heap = new Uint8Array(found.size); // filled before Pyodide copies it into the runtime
  let meta = null;
  self._createPyodideModule = async (config) => {
    const [module, saved, [, libs]] = await Promise.all([create(config), found.parsed, startup]);
    restoreMark("runtime_created");
    meta = saved.meta;
    let offset = 0;
    for (const run of meta.runs) {
      const length = runBytes(run, meta.size);
      heap.set(saved.pages.subarray(offset, offset + length), run[0] * SNAPSHOT_PAGE);
      offset += length;
    }
    const site = meta.libs.length ? meta.libs[0].path.slice(0, -libs[0][0].length - 1) : "";
    loadLibraries(module, site, libs, meta.libs);
    if (module.wasmTable.length !== meta.table) {
      throw new Error("function table " + module.wasmTable.length + " != " + meta.table);
    }
    restoreMark("libraries_placed");
    return module;
  };
  let py;
  try {
    py = await loadPyodide({
      ...options,
      _loadSnapshot: heap,
      _snapshotDeserializer: deserializeJs,
    });
  } finally {
    self._createPyodideModule = create;
  }
  restoreMark("heap_restored");
  const module = py._module;
  for (const [handle, name, global] of meta.handles) {
    const exports = module.preloadedWasm[name];
    if (exports == null) {
      throw new Error("the snapshot's library " + name + " is not loaded");
    }
    const dso = {refcount: Infinity, name: name, exports: exports, global: global};
    module.LDSO.loadedLibsByName[name] = dso;
    module.LDSO.loadedLibsByHandle[handle] = dso;
    if (global) {
      module.mergeLibSymbols(exports, name);
    }
  }
  return [py, meta];
}

// The JS objects Python holds are saved as paths from the global object (``["JSON"]``,
// ``["Object", "entries"]``). Pyodide's own way (loadPyodide's _makeSnapshot) wraps every
// global in a recording proxy, through which a worker's getters and functions throw
// "Illegal invocation"; looking the objects up when the snapshot is taken avoids that.
// Functions that Python made with pyodide.code.run_js while importing (Panel makes one)
// are saved as their code (RECORD_RUN_JS) and evaluated again on restore.
const RUN_JS = new Map();
const RECORD_RUN_JS = `
import pyodide.code, pyodide.ffi
from js import llmqpRecordRunJs
_llmqp_run_js = pyodide.code.run_js
def _llmqp_recording_run_js(code, /):
    result = _llmqp_run_js(code)
    if isinstance(result, pyodide.ffi.JsProxy):
        llmqpRecordRunJs(result, code)
    return result
pyodide.code.run_js = _llmqp_recording_run_js
`;
const STOP_RECORDING_RUN_JS = `
pyodide.code.run_js = _llmqp_run_js
del _llmqp_run_js, _llmqp_recording_run_js, llmqpRecordRunJs
`;
self.llmqpRecordRunJs = (value, code) => RUN_JS.set(value, code);

function serializeJs(value) {
  if (RUN_JS.has(value)) {
    return {code: RUN_JS.get(value)};
  }
  const names = new Set();
  for (let o = globalThis; o != null; o = Object.getPrototypeOf(o)) {
    Object.getOwnPropertyNames(o).forEach((n) => names.add(n));
  }
  const seen = [];
  for (const name of names) {
    let v;
    try {
      v = globalThis[name];
    } catch (e) {
      continue;
    }
    if (v === value) {
      return {path: [name]};
    }
    if (v != null && (typeof v === "object" || typeof v === "function")) {
      seen.push([name, v]);
    }
  }
  for (const [name, v] of seen) {
    for (const member of Object.getOwnPropertyNames(v)) {
      try {
        if (v[member] === value) {
          return {path: [name, member]};
        }
      } catch (e) {
        // a getter that refuses this receiver
      }
    }
  }
  let what = Object.prototype.toString.call(value);
  try {
    what += " " + String(value).slice(0, 60);
  } catch (e) {
    // a revoked proxy or similar: the type is enough
  }
  throw new Error("Python holds a JS object not reachable from the globals: " + what);
}

function deserializeJs(saved) {
  if (saved.code != null) {
    return (0, eval)(saved.code); // global scope, as run_js evaluated it
  }
  return saved.path.reduce((object, key) => object[key], globalThis);
}

// A copy of the heap and what a restore needs to place the libraries and show the app: taken
// right after the app build, before the worker links its document to the page's (the app's
// JS references then are global functions, or code recorded by RECORD_RUN_JS).
// ``fingerprint``: the built document's (the page compares it with its pre-rendered one).
function takeSnapshot(py, records, tableAfterLibs, fingerprint) {
  const module = py._module;
  if (module.wasmTable.length !== tableAfterLibs) {
    throw new Error("the function table grew after the libraries were loaded");
  }
  const handles = Object.entries(module.LDSO.loadedLibsByHandle)
    .filter(([handle]) => Number(handle) !== 0)
    .map(([handle, dso]) => [Number(handle), dso.name, Boolean(dso.global)]);
  const config = py._api.config;
  config._makeSnapshot = true; // makeSnapshot's guard; the globals were never wrapped
  // Pyodide expects its loadedPackages object (a JS-side record, set again on restore) to be
  // empty in a snapshot.
  const loaded = {...py.loadedPackages};
  Object.keys(loaded).forEach((name) => delete py.loadedPackages[name]);
  let heap;
  try {
    heap = py._api.makeSnapshot(serializeJs);
  } finally {
    config._makeSnapshot = false;
    Object.assign(py.loadedPackages, loaded);
  }
  const meta = {
    key: CONFIG.snapshot.key,
    size: heap.length,
    libs: records,
    handles: handles,
    table: module.wasmTable.length,
    fingerprint: fingerprint,
  };
  return {meta: meta, heap: heap};
}

// After a restore: the app's background work (a router run finishing in chunks) was scheduled
// through the snapshot visit's JS timers, which are gone; the app restarts it
// (app.widgets.app.on_restore).
const RESUME = `
import sys
_llmqp_app = sys.modules.get("app.widgets.app")
if _llmqp_app is not None and hasattr(_llmqp_app, "on_restore"):
    _llmqp_app.on_restore()
del _llmqp_app
`;

// After the files are back: the generators must not repeat per visit (hash randomisation
// stays fixed by the snapshot), and a library call checks the placed libraries.
const RESEED = "import random, numpy.random; random.seed(); numpy.random.seed(); numpy.add(1, 2)";

// The bytes of a run of pages ([first, count]) of a heap of ``size`` bytes (the last page may
// be partial).
function runBytes([first, n], size) {
  return Math.min((first + n) * SNAPSHOT_PAGE, size) - first * SNAPSHOT_PAGE;
}

// The runs of non-zero pages of ``heap``: [[first, count], …] (a partial last page counts).
function nonZeroRuns(heap) {
  const words = new Int32Array(heap.buffer, heap.byteOffset, heap.length >> 2);
  const perPage = SNAPSHOT_PAGE >> 2;
  const pages = Math.ceil(heap.length / SNAPSHOT_PAGE);
  const runs = [];
  for (let page = 0; page < pages; page++) {
    let used = page === pages - 1 && heap.length % 4 !== 0; // (bytes past the last word)
    const end = Math.min(page * perPage + perPage, words.length);
    for (let i = page * perPage; i < end; i++) {
      if (words[i] !== 0) {
        used = true;
        break;
      }
    }
    if (!used) {
      continue;
    }
    const last = runs[runs.length - 1];
    if (last != null && last[0] + last[1] === page) {
      last[1] += 1;
    } else {
      runs.push([page, 1]);
    }
  }
  return runs;
}

// Save ``made`` for the next visit, replacing this worker's snapshots of other builds.
async function storeSnapshot(made) {
  const heap = made.heap;
  const runs = nonZeroRuns(heap);
  const metaText = JSON.stringify({...made.meta, runs: runs});
  const meta = new TextEncoder().encode(metaText);
  const size = Math.ceil(meta.length / 16) * 16; // the pages must stay 4-byte aligned
  const header = new Uint8Array(16 + size).fill(32);
  header.set(new TextEncoder().encode(SNAPSHOT_MAGIC));
  new DataView(header.buffer).setUint32(8, size, true);
  header.set(meta, 16);
  const cache = await caches.open(SNAPSHOT_CACHE);
  const prefix = snapshotUrl().split("?")[0] + "?";
  for (const request of await cache.keys()) {
    if (request.url.startsWith(prefix)) {
      await cache.delete(request);
    }
  }
  const parts = runs.map((run) =>
    heap.subarray(run[0] * SNAPSHOT_PAGE, run[0] * SNAPSHOT_PAGE + runBytes(run, heap.length))
  );
  const body = new Blob([header, ...parts]);
  const headers = {"content-type": "application/octet-stream"};
  headers[SNAPSHOT_SIZE_HEADER] = String(heap.length);
  await cache.put(snapshotUrl(), new Response(body, {headers: headers}));
  return body.size;
}
