"""The endpoint under continuous batching, on the real engine: 16 concurrent clients (chat and
completions, streaming and not) get the tokens of their solo decodes and share body passes; a
client that leaves mid-stream frees its slot at the next pass; a full queue answers 429.

Skips (saying why) only where the model file has not been fetched.
"""

import json
import threading
import time

import pytest

from app.engine.batch_limits import BatchLimits
from app.measure.limits import Limits
from app.serving.service import create_server

from .conftest import FAST
from .test_endpoint_hostile import _send
from .test_openai import CHAT, needs_model
from .test_service import call

pytestmark = needs_model

COMPLETIONS = "/v1/completions"


def _stream(url, body, path) -> list[dict]:
    """The server-sent events of one streamed request, parsed (``[DONE]`` checked, dropped)."""
    with _send(url, json.dumps(body).encode(), path=path, extra="Connection: close\r\n") as s:
        raw = b""
        while chunk := s.recv(65536):
            raw += chunk
    lines = raw.partition(b"\r\n\r\n")[2].decode("utf-8").splitlines()
    events = [ln[6:] for ln in lines if ln.startswith("data: ")]
    assert events[-1] == "[DONE]", events[-3:]
    return [json.loads(e) for e in events[:-1]]


@pytest.fixture(scope="module")
def engine():
    from app.engine.engine import Engine

    return Engine.load()


def _serve(engine, **batch):
    server = create_server(timing=FAST, engine=engine, limits=Limits(),
                           batch_limits=BatchLimits(**batch))  # fmt: skip
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def stop():
        server.close()
        thread.join(5)

    return server, server.url, stop


@pytest.fixture(scope="module")
def service(engine):
    server, url, stop = _serve(engine, max_batch=16)
    yield server, url
    stop()


def _requests(engine) -> list[tuple[str, dict]]:
    """16 requests: chat and completions, grammars and none, 4 to 8 tokens each."""
    model = engine.info()["model"]
    schema = {"type": "object", "properties": {"city": {"type": "string"},
              "days": {"type": "integer"}}, "required": ["city", "days"]}  # fmt: skip
    grammars = [{"choices": ["yes", "no", "maybe"]}, {"regex": r"[0-9]{3}-[0-9]{4}"},
                {"response_format": {"type": "json_schema",
                                     "json_schema": {"name": "f", "schema": schema}}},
                {}]  # fmt: skip
    out = []
    for i in range(16):
        extra = {"max_tokens": 4 + i % 5, **grammars[i % 4], "stream": i % 3 == 0}
        if i % 2:
            out.append((COMPLETIONS, {"model": model, "prompt": f"Item {i}: the weather in "
                                      f"city {i} is", **extra}))  # fmt: skip
        else:
            msg = [{"role": "user", "content": f"Question {i}: plan a trip for {i} days."}]
            out.append((CHAT, {"model": model, "messages": msg, **extra}))
    return out


def _tokens(url, path, body) -> tuple[list[int], dict]:
    """(tokens, usage) of one request, streamed or not."""
    if body.get("stream"):
        chunks = _stream(url, {**body, "stream_options": {"include_usage": True}}, path)
        tail = [c for c in chunks if c.get("llmqp")][-1]
        return tail["llmqp"]["tokens"], chunks[-1]["usage"]
    status, out, _ = call(url, "POST", path, body)
    assert status == 200, out
    return out["llmqp"]["tokens"], out["usage"]


def test_sixteen_concurrent_clients_get_their_solo_tokens(service, engine):
    server, url = service
    reqs = _requests(engine)
    solo = [_tokens(url, path, body)[0] for path, body in reqs]  # one at a time: batch 1
    before = server._batcher.scheduler.passes
    got: dict[int, tuple] = {}

    def client(i):
        got[i] = _tokens(url, *reqs[i])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(reqs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert len(got) == len(reqs)
    for i, (tokens, usage) in got.items():
        assert tokens == solo[i], (i, reqs[i])
        assert usage["completion_tokens"] == len(tokens)
        assert usage["total_tokens"] == usage["prompt_tokens"] + len(tokens)
    sched = server._batcher.scheduler
    assert max(n for n, _ in sched.pass_sizes[-(sched.passes - before) :]) >= 4  # shared passes
    assert not sched.busy and sched.kv_reserved == 0


def test_a_client_leaving_mid_stream_frees_its_slot(service, engine):
    server, url = service
    body = {"model": engine.info()["model"], "prompt": "Count slowly:", "max_tokens": 48,
            "stream": True}  # fmt: skip
    s = _send(url, json.dumps(body).encode(), path=COMPLETIONS)
    assert s.recv(4096).startswith(b"HTTP/1.1 200")  # streaming has begun
    sched = server._batcher.scheduler
    (seq,) = list(sched.active)
    t0 = time.monotonic()
    s.close()
    while sched.busy and time.monotonic() - t0 < 30:
        time.sleep(0.05)
    assert not sched.busy and sched.kv_reserved == 0
    result = seq.wait(1)
    assert result.stop == "cancelled" and len(result.tokens) < 48  # left before its end


def test_a_full_queue_answers_429_and_keeps_serving(engine):
    server, url, stop = _serve(engine, max_batch=1, max_waiting=0)
    try:
        model = engine.info()["model"]
        long = {"model": model, "prompt": "Count:", "max_tokens": 48, "stream": True}
        s = _send(url, json.dumps(long).encode(), path=COMPLETIONS)
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
        time.sleep(0.2)  # the first one is running; the second waits: the queue holds none
        status, out, headers = call(url, "POST", COMPLETIONS,
                                    {"model": model, "prompt": "Hi", "max_tokens": 2})  # fmt: skip
        assert status == 429 and headers.get("Retry-After") == "1"
        assert "queue is full" in out["error"]["message"]
        s.close()
        time.sleep(0.5)
        status, out, _ = call(url, "POST", COMPLETIONS,
                              {"model": model, "prompt": "Hi", "max_tokens": 2})  # fmt: skip
        assert status == 200 and out["usage"]["completion_tokens"] >= 1
    finally:
        stop()
