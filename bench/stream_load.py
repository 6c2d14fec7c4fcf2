"""Streaming load on the OpenAI endpoint (``bench/service_load.py --streaming 1,4,8,16``):
C concurrent clients, each streaming R chat completions of function-call requests (the
workload's JSON-schema requests, BFCL's shape: a tool's arguments under a JSON schema), at each
concurrency C in turn against one server.

Per level: aggregate tokens/s (every client's tokens over the level's wall time), time to first
token (request sent → first token's chunk) and per-token latency (gaps between token chunks)
p50/p99, the server's peak resident memory so far, the body passes' mean batch, and whether every
request's tokens equal the same request's tokens at C = 1 (exactness under batching). Bounded:
C × R requests per level, each level stopped at its deadline.

Request ``n = i·R + r`` (client i's r-th) is body ``n mod len(bodies)`` with its user turn headed
"Request n." — so no two requests of a level share a whole prompt (the server reuses shared
prompt prefixes: this keeps the reuse to what real traffic shares, the chat template's system
turn), and request n is the same prompt at every level (compared with the C = 1 level's).

BFCL (``--bfcl N``, :func:`bfcl_requests`): every level sends the same N requests, untagged
(BFCL's own prompts), the C clients taking them in order from one queue (each its next when its
last one ends), so every request is compared with its C = 1 decode and every level does the same
work.
"""

from __future__ import annotations

import http.client
import json
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

__all__ = [
    "bfcl_requests",
    "chat_body",
    "function_calls",
    "percentile",
    "run_level",
    "tagged",
    "warm_up",
]

#: How many BFCL requests ``--bfcl`` may ask for (the four categories hold 1,911).
BFCL_MAX = 400


def chat_body(req: dict, max_tokens: int) -> dict:
    """A JSON-schema request (a line of the engine's request JSONL) as a chat body: the prompt
    as the user turn, the schema as ``response_format``."""
    fmt = {"type": "json_schema", "json_schema": {"name": req["id"], "schema": req["schema"]}}
    return {"id": req["id"], "messages": [{"role": "user", "content": req["prompt"]}],
            "response_format": fmt, "max_tokens": max_tokens}  # fmt: skip


def function_calls(path: Path, max_tokens: int) -> list[dict]:
    """The workload's JSON-schema requests as chat bodies with ``response_format``."""
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return [chat_body(req, max_tokens) for req in lines if "schema" in req]


def bfcl_requests(n: int, max_tokens: int) -> list[dict]:
    """The first ``n`` BFCL requests (engine request dicts): bench/engine.py's BFCL requests
    (the first ``ceil(n / 4)`` of each category, converted by ``llmqp bfcl requests``), taken
    one per category in turn (simple_python, multiple, live_simple, live_multiple, then each
    one's second, …), so any prefix of them mixes the categories."""
    from engine import bfcl_requests as write  # bench/engine.py

    from app.engine.bfcl import BFCL_CATEGORIES

    if not 1 <= n <= BFCL_MAX:
        raise ValueError(f"--bfcl must be in [1, {BFCL_MAX}], got {n}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(write(Path(tmp) / "bfcl.jsonl", -(-n // len(BFCL_CATEGORIES)), max_tokens))
        reqs = [json.loads(line) for line in path.read_text().splitlines()]
    by_cat = {c: [r for r in reqs if r["id"].startswith(c + "_")] for c in BFCL_CATEGORIES}
    mixed = [r for row in zip(*by_cat.values()) for r in row]
    return mixed[:n]


def tagged(body: dict, n) -> dict:
    """``body`` with its user turn headed "Request n." (one prompt per request number)."""
    first, *rest = body["messages"]
    head = {**first, "content": f"Request {n}. {first['content']}"}
    return {**body, "messages": [head, *rest]}


def _stream_one(port: int, model: str, body: dict, timeout: float) -> dict:
    """One streamed request: its tokens, TTFT and token gaps (seconds)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    payload = {k: v for k, v in body.items() if k != "id"}
    data = json.dumps({**payload, "model": model, "stream": True}).encode()
    t0 = time.monotonic()
    conn.request("POST", "/v1/chat/completions", body=data,
                 headers={"Content-Type": "application/json"})  # fmt: skip
    resp = conn.getresponse()
    if resp.status != 200:
        out = {"status": resp.status, "error": resp.read()[:200].decode("utf-8", "replace")}
        conn.close()
        return out
    times, tokens, stop, usage = [], [], None, {}
    while line := resp.readline():
        line = line.strip()
        if not line.startswith(b"data: ") or line == b"data: [DONE]":
            continue
        event = json.loads(line[6:])
        step = (event.get("llmqp") or {}).get("step")
        if step is not None:
            times.append(time.monotonic())
        tail = event.get("llmqp") or {}
        if "tokens" in tail:
            tokens, stop = tail["tokens"], tail.get("stop")
        usage = event.get("usage") or usage
    conn.close()
    gaps = [b - a for a, b in zip(times, times[1:])]
    return {"status": 200, "tokens": tokens, "stop": stop,
            "ttft": times[0] - t0 if times else None, "gaps": gaps,
            "n_chunks": len(times), "prompt_tokens": usage.get("prompt_tokens")}  # fmt: skip


def warm_up(port: int, model: str, body: dict, timeout: float) -> int:
    """One unmeasured request (a server's first decode pays one-time costs); its status."""
    return _stream_one(port, model, tagged(body, "warm-up"), timeout)["status"]


def percentile(values, q):
    """The ``q`` quantile of ``values`` (nearest rank, rounded to 0.1 ms); None when empty."""
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, int(round(q * (len(s) - 1))))], 4)


def run_level(port, model, bodies, clients, rounds, deadline_s, rss, shared=False) -> dict:
    """``clients`` threads × ``rounds`` requests; client i's r-th request is number
    ``n = i * rounds + r``: body ``n % len(bodies)``, :func:`tagged` with n. ``shared``
    (``rounds`` unused): request n is body n as it is, every body once, the clients taking the
    next from one queue. ``rss()`` reads the server's peak memory. ``outputs`` is keyed by n."""
    results: list[tuple[int, dict]] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + deadline_s
    queue = iter(range(len(bodies)))

    def requests(i):
        if not shared:
            yield from ((n, tagged(bodies[n % len(bodies)], n))
                        for n in range(i * rounds, (i + 1) * rounds))  # fmt: skip
            return
        while True:
            with lock:
                n = next(queue, None)
            if n is None:
                return
            yield n, bodies[n]

    def client(i):
        for n, body in requests(i):
            if time.monotonic() > stop_at:
                return
            out = _stream_one(port, model, body, deadline_s)
            with lock:
                results.append((n, out))

    t0 = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(deadline_s + 30)
    wall = time.monotonic() - t0
    ok = [(j, o) for j, o in results if o["status"] == 200]
    tokens = sum(len(o["tokens"]) for _, o in ok)
    ttft = [o["ttft"] for _, o in ok if o["ttft"] is not None]
    gaps = [g for _, o in ok for g in o["gaps"]]
    return {
        "clients": clients,
        "requests": len(results),
        "ok": len(ok),
        "statuses": sorted({o["status"] for _, o in results}),
        "wall_s": round(wall, 2),
        "tokens": tokens,
        "tokens_per_s": round(tokens / wall, 2) if wall > 0 else None,
        "ttft_s": {"p50": percentile(ttft, 0.5), "p99": percentile(ttft, 0.99)},
        "per_token_s": {"p50": percentile(gaps, 0.5), "p99": percentile(gaps, 0.99)},
        "peak_rss_bytes": rss(),
        "stops": dict(Counter(str(o["stop"]) for _, o in ok)),
        "prompt_tokens": sum(o["prompt_tokens"] or 0 for _, o in ok),
        "outputs": {str(j): o["tokens"] for j, o in ok},
    }
