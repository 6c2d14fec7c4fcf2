"""Test-only hooks for the built site: never written into ``static/`` or an embed folder.

The browser tests and ``bench/browser_load.py`` serve the site themselves; their server appends
:data:`WORKER_EVAL` to every ``*worker.js`` it serves (:func:`serve_worker`), and their browser
context runs :data:`PAGE_EVAL` before the page's scripts. Together they give the page
``window.llmqpTest.eval(code)``: run Python in the page's worker, resolve to the JSON of the last
expression. A real visitor's page has neither.
"""

from __future__ import annotations

import http.server
import os

__all__ = ["WORKER_EVAL", "PAGE_EVAL", "serve_worker", "HookedHandler"]

WORKER_EVAL = r"""
// --- test-only (app/web/testhooks.py): {type: "eval"} runs Python, answers "eval-result".
const llmqpHandleWithoutEval = handle;
handle = async (msg) => {
  if (msg.type !== "eval") {
    return llmqpHandleWithoutEval(msg);
  }
  try {
    const ns = self.pyodide.globals.get("dict")();
    const out = await self.pyodide.runPythonAsync(msg.code, {globals: ns});
    const text = self.pyodide.pyimport("json").dumps(out);
    ns.destroy();
    self.postMessage({type: "eval-result", id: msg.id, result: text});
  } catch (e) {
    self.postMessage({type: "eval-result", id: msg.id, error: String(e)});
  }
};
"""

PAGE_EVAL = r"""
(() => {
  const pending = new Map();
  let next = 1;
  const listening = new WeakSet();
  // The page's worker: the app page's (llmqp.worker) or the embed script's (llmqpEmbed.worker).
  const workerOf = () =>
    (window.llmqp && window.llmqp.worker) || (window.llmqpEmbed && window.llmqpEmbed.worker);
  window.llmqpTest = {
    eval(code) {
      const worker = workerOf();
      if (worker == null) return Promise.reject(new Error("no worker on this page yet"));
      if (!listening.has(worker)) {
        listening.add(worker);
        worker.addEventListener("message", (event) => {
          const msg = event.data;
          if (msg && msg.type === "eval-result" && pending.has(msg.id)) {
            const {resolve, reject} = pending.get(msg.id);
            pending.delete(msg.id);
            msg.error != null ? reject(new Error(msg.error)) : resolve(JSON.parse(msg.result));
          }
        });
      }
      return new Promise((resolve, reject) => {
        const id = next++;
        pending.set(id, {resolve, reject});
        worker.postMessage({type: "eval", id, code});
      });
    },
  };
})();
"""


def serve_worker(path: str, body: bytes) -> bytes:
    """``body`` as a test server sends it: a ``worker.js`` gets :data:`WORKER_EVAL` appended."""
    if path.split("?", 1)[0].endswith("worker.js"):
        return body + WORKER_EVAL.encode()
    return body


class HookedHandler(http.server.SimpleHTTPRequestHandler):
    """A quiet static-file handler that serves every ``worker.js`` with :data:`WORKER_EVAL`."""

    def log_message(self, *args):  # keep test and benchmark output clean
        pass

    def do_GET(self):
        path = self.translate_path(self.path)
        if not self.path.split("?", 1)[0].endswith("worker.js") or not os.path.isfile(path):
            return super().do_GET()
        with open(path, "rb") as f:
            body = serve_worker(self.path, f.read())
        self.send_response(200)
        self.send_header("Content-Type", "text/javascript")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
