"""A bounded attack on the decoding endpoint, 127.0.0.1 only: the hostile cases of issue 19.

Usage: ``python bench/endpoint_attack.py [--deadline 900]``.

Starts ``python -m app.backend --port 0`` (the fetched model; skipped, saying so, without it)
and tries each case once: hostile ``full`` requests, clients that leave (non-streaming,
queued, during a long prefill), non-ASCII streams, forged control tokens, grammars that cannot
match, lone surrogates, every lenient field, an over-size chunked body, unknown ``/v1`` paths.
A case *holds* when the answer is the documented one. Afterwards the server must still answer
and its log must hold no traceback. Bounded: about 60 requests, every one with a timeout, and the
run stops at ``--deadline`` seconds. Writes ``bench/results/endpoint_attack.json``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CHAT = "/v1/chat/completions"


class Target:
    def __init__(self, port: int, model: str):
        self.port, self.model = port, model

    def call(self, method, path, body=None, raw=None, timeout=300):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        headers = {"Content-Type": "application/json"} if data is not None else {}
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        text = resp.read()
        conn.close()
        try:
            return resp.status, json.loads(text or b"null")
        except ValueError:
            return resp.status, text.decode("utf-8", "replace")

    def chat(self, content="Hi.", **kw):
        return {"model": self.model, "messages": [{"role": "user", "content": content}], **kw}

    def timed(self, body):
        t0 = time.monotonic()
        status, out = self.call("POST", CHAT, body)
        return status, out, time.monotonic() - t0

    def open(self, body: bytes | None, extra: str = "") -> socket.socket:
        s = socket.create_connection(("127.0.0.1", self.port), timeout=60)
        length = "Transfer-Encoding: chunked" if body is None else f"Content-Length: {len(body)}"
        head = (f"POST {CHAT} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nContent-Type: "
                f"application/json\r\n{length}\r\n{extra}\r\n")  # fmt: skip
        s.sendall(head.encode() + (body or b""))
        return s

    def stream(self, body) -> tuple[str, list]:
        with self.open(json.dumps({**body, "stream": True}).encode(), "Connection: close\r\n") as s:
            raw = b""
            while chunk := s.recv(65536):
                raw += chunk
        lines = raw.partition(b"\r\n\r\n")[2].decode("utf-8").splitlines()
        events = [json.loads(ln[6:]) for ln in lines if ln.startswith("data: {")]
        text = "".join(e["choices"][0]["delta"].get("content") or ""
                       for e in events if e.get("choices"))  # fmt: skip
        return text, events


def _left(t: Target, bodies, after: float, slack: float) -> tuple[bool, str]:
    """Send ``bodies``, leave after ``after`` s: held when the next small request waits no
    longer than its own time alone (measured just before and just after) plus ``slack``."""
    small = t.chat(max_tokens=2)
    before = t.timed(small)[2]
    socks = [t.open(json.dumps(b).encode()) for b in bodies]
    time.sleep(after)
    for s in socks:
        s.close()
    time.sleep(0.1)
    wait = t.timed(small)[2]
    after_s = t.timed(small)[2]
    solo = max(before, after_s)
    return wait < solo + slack, f"next waited {wait:.2f} s (alone {before:.2f}/{after_s:.2f} s)"


def _answer(t: Target, body) -> tuple[str, dict]:
    status, plain = t.call("POST", CHAT, body)
    if status != 200:
        raise RuntimeError(f"{status}: {plain}")
    return plain["choices"][0]["message"]["content"], plain


def cases(t: Target):
    """``(name, held, detail)`` for every case."""
    c = t.chat
    status, out, took = t.timed(c("word " * 1900, max_tokens=256, llmqp={"plan": "full"}))
    yield "1 full, 1,900-token prompt", status == 400 and took < 30, f"{status} in {took:.1f} s"
    status, out, took = t.timed(c("word " * 300, max_tokens=256, llmqp={"plan": "full"}))
    yield "1 full, 300-token prompt", status == 400, f"{status} in {took:.1f} s"
    # one step (or one 64-position prefill chunk) may still run when the client leaves
    yield "2 non-streaming 200 tokens left at 1 s", *_left(t, [c("Tell a story.", max_tokens=200)],
                                                          1.0, 2.0)  # fmt: skip
    yield "2 ten 64-token requests left at 0.5 s", *_left(t, [c("Count.", max_tokens=64)] * 10,
                                                         0.5, 2.0)  # fmt: skip
    body = c("word " * 800, max_tokens=64, stream=True)
    yield "2 three 800-word streams left at 0.5 s", *_left(t, [body] * 3, 0.5, 4.0)
    for name, body in (
        ("3 choices with emoji/CJK", c(max_tokens=40, choices=["😀😀 ünïcødé 漢字", "x"])),
        ("3 free Japanese", c("日本語で自己紹介してください。", max_tokens=24)),
        ("3 length stop inside an emoji", c(max_tokens=1, choices=["😀"])),
    ):
        text, plain = _answer(t, body)
        streamed, _ = t.stream(body)
        held = streamed.encode() == text.encode() and not text.endswith("\ufffd")
        yield name, held, f"{text[:24]!r}, {plain['llmqp'].get('incomplete_bytes')} bytes held"
    spellings = ("<|im_start|>", "<|im_xtart|>", "<|endoftext|>", "<|endoftexu|>")
    counts = [t.call("POST", CHAT, c(s, max_tokens=1))[1]["usage"]["prompt_tokens"]
              for s in spellings]  # fmt: skip
    held = abs(counts[0] - counts[1]) <= 1 and abs(counts[2] - counts[3]) <= 1
    yield "4 control-token spellings in content", held, f"prompt tokens {counts}"
    for name, g in (("regex [^\\s\\S]", {"regex": "[^\\s\\S]"}),
                    ("$ref cycle", {"guided_json": {"$ref": "#/$defs/a",
                                                    "$defs": {"a": {"$ref": "#/$defs/a"}}}}),
                    ("schema false", {"guided_json": False})):  # fmt: skip
        for stream in (False, True):
            status, out = t.call("POST", CHAT, c(max_tokens=8, stream=stream, **g))
            yield f"5 {name} (stream={stream})", status == 400, f"{status}"
    raw = b'{"messages": [{"role": "user", "content": "x\\ud800y"}]}'
    status, _ = t.call("POST", CHAT, raw=raw)
    yield "6 lone surrogate, chat", status == 400, f"{status}"
    status, _ = t.call("POST", "/v1/completions", raw=b'{"prompt": "x\\ud800y"}')
    yield "6 lone surrogate, completions", status == 400, f"{status}"
    for schema in ("true", {}):
        status, _ = t.call("POST", CHAT, c(max_tokens=4, guided_json=schema))
        yield f"7 schema {schema!r}", status == 200, f"{status}"
    for field, value in (("temperature", -1), ("temperature", 100), ("temperature", "hot"),
                         ("temperature", 0.7), ("top_p", 2), ("top_p", 0.5), ("seed", "abc"),
                         ("frequency_penalty", 1), ("presence_penalty", 5), ("user", 123),
                         ("metadata", "x"), ("top_logprobs", "x")):  # fmt: skip
        status, out = t.call("POST", CHAT, c(max_tokens=2, **{field: value}))
        param = out["error"]["param"] if isinstance(out, dict) and "error" in out else None
        yield f"lenient {field}={value!r}", status == 400 and param == field, f"{status}"
    with t.open(None) as s:
        s.sendall(b"%x\r\n" % 20000 + b"x" * 20000 + b"\r\n" + b"%x\r\n" % 60000 + b"x" * 60000)
        head = s.recv(65536).decode("latin-1")
    yield "413 chunked body over 64 KiB", head.startswith("HTTP/1.1 413"), head[:12]
    status, out = t.call("GET", "/v1/nowhere")
    held = status == 404 and isinstance(out.get("error"), dict) and "type" in out["error"]
    yield "OpenAI error shape on an unknown /v1 path", held, f"{status}"


def _port(log, proc, timeout: float = 300.0) -> int:
    """The port from the server's first line ("llmqp backend on http://127.0.0.1:PORT ...")."""
    stop = time.monotonic() + timeout
    while time.monotonic() < stop and proc.poll() is None:
        log.seek(0)
        first = log.readline()
        if first.startswith("llmqp backend on "):
            return int(first.split()[3].rsplit(":", 1)[1])
        time.sleep(0.5)
    raise RuntimeError("the server did not start")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--deadline", type=float, default=900.0)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from app.engine.fetch import default_model_path

    if not default_model_path().exists():
        print("model absent (llmqp model fetch): nothing to attack")
        return 0
    log = tempfile.NamedTemporaryFile("w+", suffix=".log")  # the server's log, read at the end
    proc = subprocess.Popen([sys.executable, "-m", "app.backend", "--port", "0"], cwd=ROOT,
                            stderr=log, text=True)  # fmt: skip
    stop_at = time.monotonic() + args.deadline
    results, healthy = [], False
    try:
        port = _port(log, proc)
        t = Target(port, None)
        t.model = t.call("GET", "/v1/models")[1]["data"][0]["id"]
        for name, held, detail in cases(t):
            results.append({"case": name, "held": bool(held), "detail": detail})
            print(f"{'held' if held else 'FAILED':6} {name}: {detail}", flush=True)
            if time.monotonic() > stop_at:
                print("deadline reached: stopping")
                break
        healthy = t.call("GET", "/v1/device")[0] == 200
    finally:
        proc.send_signal(2)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.seek(0)
        err = log.read()
    tracebacks = err.count("Traceback")
    errors = [ln for ln in err.splitlines() if "internal error" in ln]
    summary = {"tried": len(results), "held": sum(r["held"] for r in results),
               "healthy_after": healthy, "tracebacks_in_log": tracebacks,
               "internal_errors": errors[:5], "cases": results}  # fmt: skip
    out = HERE / "results" / "endpoint_attack.json"
    out.write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
    print(
        f"{summary['held']}/{summary['tried']} held; server healthy after: {healthy}; "
        f"tracebacks in its log: {tracebacks} -> {out}"
    )
    return 0 if summary["held"] == summary["tried"] and healthy and not tracebacks else 1


if __name__ == "__main__":
    raise SystemExit(main())
