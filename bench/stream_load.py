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
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from pathlib import Path

__all__ = ["function_calls", "run_level", "tagged", "warm_up"]


def function_calls(path: Path, max_tokens: int) -> list[dict]:
    """The workload's JSON-schema requests as chat bodies with ``response_format``."""
    bodies = []
    for line in path.read_text().splitlines():
        req = json.loads(line)
        if "schema" not in req:
            continue
        fmt = {"type": "json_schema", "json_schema": {"name": req["id"], "schema": req["schema"]}}
        bodies.append({"id": req["id"], "messages": [{"role": "user", "content": req["prompt"]}],
                       "response_format": fmt, "max_tokens": max_tokens})  # fmt: skip
    return bodies


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
    times, tokens, stop = [], [], None
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
    conn.close()
    gaps = [b - a for a, b in zip(times, times[1:])]
    return {"status": 200, "tokens": tokens, "stop": stop,
            "ttft": times[0] - t0 if times else None, "gaps": gaps,
            "n_chunks": len(times)}  # fmt: skip


def warm_up(port: int, model: str, body: dict, timeout: float) -> int:
    """One unmeasured request (a server's first decode pays one-time costs); its status."""
    return _stream_one(port, model, tagged(body, "warm-up"), timeout)["status"]


def _pct(values, q):
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, int(round(q * (len(s) - 1))))], 4)


def run_level(port, model, bodies, clients, rounds, deadline_s, rss) -> dict:
    """``clients`` threads × ``rounds`` requests; client i's r-th request is number
    ``n = i * rounds + r``: body ``n % len(bodies)``, :func:`tagged` with n. ``rss()`` reads the
    server's peak memory. ``outputs`` is keyed by n."""
    results: list[tuple[int, dict]] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + deadline_s

    def client(i):
        for r in range(rounds):
            if time.monotonic() > stop_at:
                return
            n = i * rounds + r
            out = _stream_one(port, model, tagged(bodies[n % len(bodies)], n), deadline_s)
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
        "ttft_s": {"p50": _pct(ttft, 0.5), "p99": _pct(ttft, 0.99)},
        "per_token_s": {"p50": _pct(gaps, 0.5), "p99": _pct(gaps, 0.99)},
        "peak_rss_bytes": rss(),
        "outputs": {str(j): o["tokens"] for j, o in ok},
    }
