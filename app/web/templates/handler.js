// Main-thread side of the Pyodide worker: progress line, rendering, two-way sync.
// Adapted from Panel's pyodide_handler.js (BSD-3-Clause). build.py fills in CONFIG.
"use strict";
const LLMQP_CONFIG = __CONFIG__;
const llmqp = (window.llmqp = {
  state: "loading",
  timings: {},
  statusLog: [],
});
const statusEl = document.getElementById("llmqp-status");

__BOKEH_PATCHES_JS__
if (window.Bokeh) patchBokehJS(); // before the pre-rendered figures paint

function setState(state, text) {
  llmqp.state = state;
  document.documentElement.dataset.llmqp = state;
  if (text != null && statusEl) {
    statusEl.textContent = text;
  }
  if (statusEl) {
    statusEl.dataset.state = state;
  }
}

function mark(name, when) {
  if (!(name in llmqp.timings)) {
    llmqp.timings[name] = Math.round(when == null ? performance.now() : when);
  }
}

// Pre-rendered figures: mark when Bokeh has finished drawing them.
const prerendered = new Promise((resolve) => {
  const done = () =>
    window.Bokeh && Bokeh.index && Bokeh.index.roots.length > 0 &&
    Bokeh.index.roots.every((v) => v.has_finished());
  const poll = () => {
    if (done()) {
      mark("prerendered");
      resolve();
    } else {
      requestAnimationFrame(poll);
    }
  };
  requestAnimationFrame(poll);
  setTimeout(resolve, 10000); // never let a missing pre-render block the live app
});

if (location.protocol === "file:" || !window.llmqpBoot) {
  setState(
    "static",
    "Static preview: browsers do not run Python from a file:// page. Serve the folder " +
      "(python -m http.server -d static) and open localhost:8000 for live figures."
  );
} else if (window.llmqpBoot.worker != null) {
  startWorker();
} else {
  prerendered.then(swControl).then(startWorker);
}

// On a first visit the service worker (templates/sw.js) installs in a few hundred ms; the
// Python worker starts under its control if it can, so that its downloads (the WebAssembly
// runtime, the packages) are cached for the next visit. Never waits long for it.
async function swControl() {
  const sw = window.llmqpBoot.sw;
  if (sw == null || navigator.serviceWorker.controller != null) {
    return;
  }
  await Promise.race([
    new Promise((resolve) =>
      navigator.serviceWorker.addEventListener("controllerchange", resolve, {once: true})
    ),
    sw.then((reg) => (reg == null ? null : new Promise((r) => setTimeout(r, 500)))),
  ]);
}

// Once the page is live: have the service worker cache what this page loaded before it was
// in control, and let a newer build's service worker take over (for the next visit).
async function swAfterLoad(workerUrls) {
  const reg = window.llmqpBoot.sw == null ? null : await window.llmqpBoot.sw;
  if (reg == null) {
    return;
  }
  const urls = [
    location.origin + location.pathname,
    new URL(window.llmqpBoot.workerUrl, location.href).href,
    ...performance.getEntriesByType("resource").map((e) => e.name),
    ...(workerUrls || []),
  ];
  const active = navigator.serviceWorker.controller || reg.active;
  if (active != null) {
    navigator.serviceWorker.addEventListener("message", (event) => {
      if (event.data && event.data.type === "cached") {
        llmqp.cached = true; // everything this visit loaded is in the cache (tests wait on it)
      }
    });
    active.postMessage({type: "cache", urls: urls});
  }
  const skip = () => reg.waiting && reg.waiting.postMessage({type: "skip-waiting"});
  skip();
  reg.addEventListener("updatefound", () => {
    const next = reg.installing;
    if (next != null) {
      next.addEventListener("statechange", () => next.state === "installed" && skip());
    }
  });
}

function startWorker() {
  // The worker is started by a small script at the top of <head> (see page.py): at once, so
  // Pyodide loads while the browser is still parsing Bokeh's JS, or here after the pre-render.
  const worker = window.llmqpBoot.start();
  llmqp.worker = worker;
  worker.busy = false;
  worker.queue = [];
  let patching = 0;

  function sendChange(jsdoc, event) {
    if ((event.setter_id != null && event.setter_id == "py") || patching > 0) {
      return;
    } else if (worker.busy && event.model && event.attr) {
      worker.queue = worker.queue.filter(
        (old) => !(old.model === event.model && old.attr === event.attr)
      );
      worker.queue.push(event);
      return;
    }
    const patch = jsdoc.create_json_patch([event]);
    worker.busy = true;
    worker.postMessage({type: "patch", patch: patch});
  }

  worker.onerror = (e) => {
    setState("error", "Error: the Python worker failed (" + (e.message || e) + ")");
  };

  // ``received``: when a message that arrived before this script ran was received.
  const onMessage = async (event, received) => {
    const msg = event.data;
    if (msg.type === "idle") {
      if (worker.queue.length) {
        const patch = worker.jsdoc.create_json_patch(worker.queue);
        worker.queue = [];
        worker.postMessage({type: "patch", patch: patch});
      } else {
        worker.busy = false;
        mark("first_idle");
      }
    } else if (msg.type === "status") {
      mark(msg.phase, received);
      llmqp.statusLog.push([Math.round(performance.now()), msg.msg]);
      setState("loading", msg.msg + "\u2026");
    } else if (msg.type === "error") {
      console.error(msg.detail);
      setState("error", "Error (" + msg.where + "): " + msg.msg);
    } else if (msg.type === "snapshot") {
      llmqp.snapshot = {...llmqp.snapshot, ...msg}; // state: restored, missing, stored, …
    } else if (msg.type === "hydrate") {
      await hydrate(msg);
    } else if (msg.type === "render") {
      await render(msg);
    } else if (msg.type === "linked") {
      mark("interactive");
      setState("ready", "");
      swAfterLoad(msg.urls).catch((e) => console.warn("service worker: " + e));
    } else if (msg.type === "patch") {
      try {
        patching += 1;
        worker.jsdoc.apply_json_patch(msg.patch, msg.buffers);
      } finally {
        patching -= 1;
      }
    }
  };

  for (const [event, received] of window.llmqpBoot.buffered.splice(0)) {
    onMessage(event, received);
  }
  worker.onmessage = onMessage;

  // The worker built the same document as the pre-rendered one (same model ids and types,
  // see page.py): keep the drawn figures and link them to Python, instead of having the
  // worker serialise its document and the page draw it all again. Otherwise ask for it.
  async function hydrate(msg) {
    await prerendered;
    const doc = Bokeh.documents.length === 1 ? Bokeh.documents[0] : null;
    const drawn =
      doc != null && doc.roots().every((root) => Bokeh.index.find_one(root) != null);
    const ours = drawn
      ? [...doc.all_models]
          .filter((m) => m.type !== "DocumentConfig") // not among Python's doc.models
          .map((m) => m.id + ":" + m.type)
          .sort()
          .join("\n")
      : null;
    llmqp.hydrated = ours === msg.fingerprint;
    if (!llmqp.hydrated) {
      worker.postMessage({type: "doc"});
      return;
    }
    linkViews(Bokeh.index, doc);
  }

  async function render(msg) {
    await prerendered;
    const docs_json = JSON.parse(msg.docs_json);
    const render_items = JSON.parse(msg.render_items);
    const root_ids = JSON.parse(msg.root_ids);
    // Map the worker's roots onto the pre-rendered elements, in root-id order.
    const data_roots = [];
    for (const el of document.querySelectorAll("[data-root-id]")) {
      data_roots.push([el.getAttribute("data-root-id"), el.id]);
    }
    data_roots.sort((a, b) => (a[0] < b[0] ? -1 : 1));
    const roots = {};
    for (let i = 0; i < data_roots.length; i++) {
      roots[root_ids[i]] = data_roots[i][1];
    }
    render_items[0].roots = roots;
    render_items[0].root_ids = root_ids;
    for (const view of Bokeh.index.roots) {
      view.remove();
    }
    for (const el of document.querySelectorAll("[data-root-id]")) {
      el.innerHTML = "";
    }
    const [views] = await Bokeh.embed.embed_items(docs_json, render_items);
    linkViews(views, [...views.roots.values()][0].model.document);
  }

  function linkViews(views, jsdoc) {
    document.body.classList.remove("pn-loading", LLMQP_CONFIG.loading_spinner);
    for (const el of [...document.getElementsByClassName("pn-loading-msg")]) {
      el.remove();
    }
    mark("rendered");
    lightDivs(views);
    worker.jsdoc = jsdoc;
    worker.jsdoc.on_change(sendChange.bind(null, worker.jsdoc), false);
    worker.postMessage({type: "rendered"});
    worker.postMessage({type: "location", location: JSON.stringify(window.location)});
  }
}

// Bokeh re-renders a Div on any change and then lays the whole page out again: 20-40 ms of
// main-thread work per readout, several per slider move. When only its text changed,
// replacing the markup is enough: the Div's size comes from CSS, so the browser reflows it in
// place. Anything else (visibility, styles, TeX) still takes Bokeh's full path.
function lightDivs(views) {
  for (const view of views.query((v) => v.model.type === "Div")) {
    if (!("markup_el" in view) || typeof view.has_math_disabled !== "function") {
      continue;
    }
    const changed = new Set();
    for (const prop of view.model) {
      view.connect(prop.change, () => changed.add(prop.attr));
    }
    const rerender = view.rerender.bind(view);
    view.rerender = () => {
      const textOnly = changed.size === 1 && changed.has("text");
      changed.clear();
      if (!textOnly || view.markup_el == null || !view.has_math_disabled()) {
        rerender();
      } else if (view.model.render_as_text) {
        view.markup_el.textContent = view.model.text;
      } else {
        view.markup_el.innerHTML = view.model.text;
      }
    };
  }
}
