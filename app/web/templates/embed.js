// LLM-QP live figures for any page: <script src="llmqp/embed.js" defer></script> and one
// <div data-llmqp-figure="crossover" data-llmqp-params="k=64"></div> per figure.
// Everything comes from the folder this script is in (python build.py --embed DIR): BokehJS,
// Panel's JS, the Pyodide runtime and packages. One Python worker serves every figure on the
// page; figures with the same data-llmqp-group share one state. build.py fills in CONFIG.
"use strict";
(function () {
  const CONFIG = __CONFIG__;
  const script = document.currentScript;
  const BASE = new URL("./", script ? script.src : location.href).href;
  const embed = (window.llmqpEmbed = {state: "loading", timings: {}, worker: null});
  const mark = (name) => {
    if (!(name in embed.timings)) embed.timings[name] = Math.round(performance.now());
  };
  const elements = [...document.querySelectorAll("[data-llmqp-figure]")];
  const setState = (state, text) => {
    embed.state = state;
    for (const el of elements) {
      el.dataset.llmqpState = state;
      if (text != null) el.title = text;
    }
  };
  if (!elements.length) return;
  const specs = elements.map((el, i) => {
    if (!el.id) el.id = "llmqp-figure-" + i;
    return {
      figure: el.dataset.llmqpFigure,
      params: el.dataset.llmqpParams || "",
      group: el.dataset.llmqpGroup || null,
    };
  });
  const unknown = specs.filter((s) => !CONFIG.figures.includes(s.figure));
  if (unknown.length) {
    setState("error", "unknown data-llmqp-figure: " + unknown.map((s) => s.figure).join(", "));
    console.error("llmqp: " + elements[0].title + " (figures: " + CONFIG.figures.join(", ") + ")");
    return;
  }

  __BOKEH_PATCHES_JS__

  const loadScript = (src) =>
    new Promise((resolve, reject) => {
      const tag = document.createElement("script");
      tag.src = BASE + src;
      tag.onload = resolve;
      tag.onerror = () => reject(new Error("could not load " + src));
      document.head.appendChild(tag);
    });

  // Snapshots first (the defaults, pre-computed at build time), so something shows at once;
  // the live figures replace them when Python is ready.
  async function showSnapshots() {
    for (const [i, el] of elements.entries()) {
      const response = await fetch(BASE + "figures/" + specs[i].figure + ".json");
      await Bokeh.embed.embed_item(await response.json(), el.id);
      el.style.opacity = specs[i].params ? "0.55" : "";
    }
    mark("snapshots");
  }

  function startWorker() {
    const worker = new Worker(BASE + CONFIG.worker + "#" + encodeURIComponent(JSON.stringify(specs)));
    embed.worker = worker;
    worker.busy = false;
    worker.queue = [];
    let patching = 0;
    const sendChange = (event) => {
      if ((event.setter_id != null && event.setter_id == "py") || patching > 0) return;
      if (worker.busy && event.model && event.attr) {
        worker.queue = worker.queue.filter((o) => !(o.model === event.model && o.attr === event.attr));
        worker.queue.push(event);
        return;
      }
      worker.busy = true;
      worker.postMessage({type: "patch", patch: worker.jsdoc.create_json_patch([event])});
    };
    worker.onerror = (e) => setState("error", "the Python worker failed: " + (e.message || e));
    worker.onmessage = async (event) => {
      const msg = event.data;
      if (msg.type === "status") {
        mark(msg.phase);
        setState("loading", msg.msg);
      } else if (msg.type === "error") {
        console.error(msg.detail);
        setState("error", msg.where + ": " + msg.msg);
      } else if (msg.type === "hydrate") {
        worker.postMessage({type: "doc"}); // no pre-rendered document to keep: draw the worker's
      } else if (msg.type === "render") {
        await render(worker, msg, sendChange).catch((e) => setState("error", String(e)));
      } else if (msg.type === "linked") {
        mark("interactive");
        setState("ready", "");
      } else if (msg.type === "idle") {
        if (worker.queue.length) {
          const patch = worker.jsdoc.create_json_patch(worker.queue);
          worker.queue = [];
          worker.postMessage({type: "patch", patch: patch});
        } else {
          worker.busy = false;
        }
      } else if (msg.type === "patch") {
        try {
          patching += 1;
          worker.jsdoc.apply_json_patch(msg.patch, msg.buffers);
        } finally {
          patching -= 1;
        }
      }
    };
  }

  async function render(worker, msg, sendChange) {
    const docsJson = JSON.parse(msg.docs_json);
    const items = JSON.parse(msg.render_items);
    const rootIds = JSON.parse(msg.root_ids);
    const ours = new Set(elements);
    for (const view of [...Bokeh.index.roots]) {
      if (elements.some((el) => el.contains(view.el) || el === view.el.parentNode)) view.remove();
    }
    for (const el of ours) {
      el.innerHTML = "";
      el.style.opacity = "";
    }
    // Panel adds a Location and a BrowserInfo root per servable(); the figures are the others,
    // in the page's order.
    const types = new Map(Object.values(docsJson)[0].roots.map((r) => [r.id, r.name]));
    const extra = (id) => /\.(Location|BrowserInfo)$/.test(types.get(id) || "");
    const figureIds = rootIds.filter((id) => !extra(id));
    if (figureIds.length !== elements.length) {
      throw new Error(figureIds.length + " live figures for " + elements.length + " elements");
    }
    // Bokeh pairs roots and elements by position among all roots: the others (no DOM view)
    // get the first element, which they leave as it is.
    const target = new Map(figureIds.map((id, i) => [id, elements[i].id]));
    items[0].roots = Object.fromEntries(rootIds.map((id) => [id, target.get(id) || elements[0].id]));
    items[0].root_ids = rootIds;
    const [views] = await Bokeh.embed.embed_items(docsJson, items);
    mark("rendered");
    worker.jsdoc = [...views.roots.values()][0].model.document;
    worker.jsdoc.on_change(sendChange, false);
    worker.postMessage({type: "rendered"});
  }

  (async () => {
    for (const src of CONFIG.scripts) await loadScript(src); // in order: Bokeh, then Panel
    patchBokehJS();
    mark("scripts");
    const snapshots = showSnapshots().catch((e) => console.warn("llmqp snapshots: " + e));
    if (typeof Worker === "undefined" || location.protocol === "file:") {
      setState("static", "live figures need the page served over http(s)");
      return;
    }
    await snapshots;
    startWorker();
  })().catch((e) => {
    console.error(e);
    setState("error", String(e));
  });
})();
