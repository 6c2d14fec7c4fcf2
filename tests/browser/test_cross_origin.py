"""A page on another origin cannot start a sweep or a decode on the backend (issue 11).

The page (served from another local port) tries what the issue's attack did: a ``no-cors``
``fetch`` with ``Content-Type: text/plain``, a CORS ``fetch`` with ``application/json`` (which
needs a preflight the service never grants), and a plain HTML form post. Each request reaches the
service and is refused; afterwards the store holds nothing and no job ran.
"""

from __future__ import annotations

import functools
import http.server
import json
import threading
import urllib.request

from app.measure.timing import TimingConfig
from app.serving.client import start_in_process

FAST = TimingConfig(warmup=1, min_samples=3, max_samples=5, max_time_s=0.02, min_sample_s=0.0)

_PAGE = """<!doctype html><html><body>
<form id="f" method="post" enctype="text/plain" action="{service}/v1/sweeps/head" target="sink">
<input name='{{"d":64,"vocab":256,"k":[2],"x":"' value='"}}'></form>
<iframe name="sink"></iframe>
<script>
const body = JSON.stringify({{d: 64, vocab: 256, k: [2]}});
window.attack = async () => {{
  const out = {{}};
  await fetch("{service}/v1/sweeps/head", {{method: "POST", mode: "no-cors",
    headers: {{"Content-Type": "text/plain"}}, body}}).then(r => out.nocors = r.type);
  out.cors = await fetch("{service}/v1/sweeps/head", {{method: "POST",
    headers: {{"Content-Type": "application/json"}}, body}})
    .then(r => "read " + r.status, e => "blocked");
  out.decode = await fetch("{service}/v1/chat/completions", {{method: "POST", mode: "no-cors",
    headers: {{"Content-Type": "text/plain"}},
    body: JSON.stringify({{messages: [{{role: "user", content: "hi"}}]}})}})
    .then(r => r.type);
  document.getElementById("f").submit();
  return out;
}};
</script></body></html>"""


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def serve_folder(folder):
    handler = functools.partial(_Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}/"


def test_a_page_on_another_origin_cannot_start_a_sweep(browser, tmp_path):
    service, stop = start_in_process(timing=FAST)
    (tmp_path / "attack.html").write_text(_PAGE.format(service=service))
    server, page_url = serve_folder(tmp_path)
    page = browser.new_page()
    seen = []
    page.on("response", lambda r: seen.append((r.request.method, r.url, r.status)))
    try:
        page.goto(page_url + "attack.html")
        out = page.evaluate("window.attack()")
        assert out["nocors"] == "opaque" and out["cors"] == "blocked"
        page.wait_for_timeout(1500)  # the form post
        to_service = [s for s in seen if s[1].startswith(service)]
        assert len(to_service) >= 3, seen  # the requests did arrive ...
        assert all(status in (403, 405, 415) for _, _, status in to_service), to_service
        with urllib.request.urlopen(service + "/v1/results") as resp:
            assert json.loads(resp.read())["count"] == 0  # ... and nothing was measured
        with urllib.request.urlopen(service + "/v1/progress") as resp:
            assert json.loads(resp.read())["status"] == "idle"
    finally:
        page.close()
        server.shutdown()
        stop()
