"""The decoding endpoint under careless and hostile clients, on a fake engine (no model needed):
every OpenAI field checked, 413 for every over-size body, OpenAI's error shape on every /v1 path,
a request priced before it runs, the deadline of a running decode, cancellation when the client
leaves (queued or running, streaming or not) in one quiet log line.
"""

import json
import logging
import socket
import threading
import time
from dataclasses import replace

import pytest

from app.measure.limits import Limits
from app.serving.budget import DecodeBudget
from app.serving.decoding import DecodeControl
from app.serving.detok import TextStream
from app.serving.service import create_server

from .conftest import FAST
from .test_openai import CHAT, FakeEngine, _chat
from .test_service import call


def serve(engine, **limits):
    """``(server, url, stop)``: a service on a free loopback port."""
    server = create_server(timing=FAST, engine=engine, limits=replace(Limits(), **limits))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def stop():
        server.close()
        thread.join(5)

    return server, server.url, stop


@pytest.fixture
def fake():
    engine = FakeEngine()
    server, url, stop = serve(engine)
    yield url, engine
    stop()


def _send(url, body: bytes | None, path=CHAT, extra="") -> socket.socket:
    """A raw POST left open (the caller reads or closes it); ``body`` None: chunked."""
    host, port = url.split("//")[1].split(":")
    s = socket.create_connection((host, int(port)), timeout=30)
    length = "Transfer-Encoding: chunked" if body is None else f"Content-Length: {len(body)}"
    s.sendall((f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json"
               f"\r\n{length}\r\n{extra}\r\n").encode() + (body or b""))  # fmt: skip
    return s


# -- the lenient fields of the issue: every one is now checked --------------------------------


@pytest.mark.parametrize(
    "field, value",
    [
        ("temperature", -1), ("temperature", 100), ("temperature", "hot"), ("temperature", 0.7),
        ("top_p", 2), ("top_p", 0.5), ("seed", "abc"), ("seed", 1.5),
        ("frequency_penalty", 3), ("presence_penalty", 0.5), ("presence_penalty", "x"),
        ("logit_bias", {"5": 500}), ("logit_bias", {"5": 10}), ("user", 123),
        ("metadata", "x"), ("metadata", {"k": 1}), ("top_logprobs", "x"), ("top_logprobs", 3),
        ("logprobs", "x"), ("logprobs", True), ("store", "yes"), ("parallel_tool_calls", 1),
        ("n", "2"), ("stop", 5), ("stream_options", {"include_usage": "yes"}),
    ],
)  # fmt: skip
def test_every_openai_field_is_checked(fake, field, value):
    url, engine = fake
    status, out, _ = call(url, "POST", CHAT, _chat(max_tokens=2, **{field: value}))
    assert status == 400, out
    assert out["error"]["param"] == field and out["error"]["type"] == "invalid_request_error"
    assert engine.calls == 0


def test_sampling_is_refused_saying_decoding_is_greedy(fake):
    url, _ = fake
    for field, value in (("temperature", 0.7), ("top_p", 0.9)):
        status, out, _ = call(url, "POST", CHAT, _chat(**{field: value}))
        assert status == 400 and "greedy" in out["error"]["message"]


def test_greedy_values_of_the_sampling_fields_are_accepted(fake):
    url, _ = fake
    body = _chat(max_tokens=2, temperature=0, top_p=1, seed=-5, frequency_penalty=0,
                 presence_penalty=0.0, logit_bias={}, user="u", metadata={"k": "v"},
                 top_logprobs=0, logprobs=False, store=False, n=1, stop=None)  # fmt: skip
    status, out, _ = call(url, "POST", CHAT, body)
    assert status == 200, out


def test_a_lone_surrogate_is_a_400_not_a_500(fake):
    url, engine = fake
    raw = b'{"model": "fake-1", "messages": [{"role": "user", "content": "x\\ud800y"}]}'
    status, out, _ = call(url, "POST", CHAT, raw=raw)
    assert status == 400 and out["error"]["param"] == "messages", out
    assert "surrogate" in out["error"]["message"]
    raw = b'{"model": "fake-1", "prompt": "x\\udfffy"}'
    status, out, _ = call(url, "POST", "/v1/completions", raw=raw)
    assert status == 400 and out["error"]["param"] == "prompt"
    assert engine.calls == 0


def test_a_chunked_body_over_the_limit_is_a_413(fake):
    url, engine = fake
    chunk = b"x" * 16_384
    with _send(url, None) as s:
        s.sendall(b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(5)))
        head = s.recv(65536).decode("latin-1")
    assert head.startswith("HTTP/1.1 413"), head[:200]
    body = json.loads(head.split("\r\n\r\n", 1)[1])
    assert "max_body_bytes" in body["error"]["message"]
    # one declared chunk bigger than the limit: 413 as well, before it is read
    with _send(url, None) as s:
        s.sendall(b"%x\r\n" % (10 << 20) + b"y" * 70_000)
        head = s.recv(65536).decode("latin-1")
    assert head.startswith("HTTP/1.1 413"), head[:200]
    status, _, _ = call(url, "POST", CHAT, _chat(max_tokens=1))
    assert status == 200 and engine.calls == 1  # still serving


@pytest.mark.parametrize(
    "method, path, status",
    [("GET", "/v1/nowhere", 404), ("POST", "/v1/chat/nothing", 404), ("POST", "/v1/models", 405),
     ("GET", "/v1/chat/completions", 405), ("GET", "/v1/embeddings", 404)],
)  # fmt: skip
def test_openai_error_shape_on_every_v1_path(fake, method, path, status):
    url, _ = fake
    got, out, _ = call(url, method, path, {} if method == "POST" else None)
    assert got == status
    assert set(out["error"]) == {"message", "type", "param", "code"} and out["error"]["message"]


# -- a budget before running, a deadline while running ----------------------------------------


def test_the_budget_prices_full_recompute_quadratically():
    budget = DecodeBudget()
    budget.prefill_s, budget.step_s = 0.01, 0.03
    limits = Limits()
    assert budget.estimate(100, 10, "auto") == pytest.approx(0.01 * 100 + 0.03 * 10)
    # full: a prefill, then step i recomputes 100 + i positions
    assert budget.estimate(100, 10, "full") == pytest.approx(0.01 * (100 + 10 * 100 + 45))
    assert budget.refusal(100, 10, "auto", limits) is None
    why = budget.refusal(1900, 256, "full", limits)
    assert "full_deadline_s" in why and "max_tokens" in why
    assert budget.refusal(1900, 256, "auto", limits) is None  # 19 s + 7.7 s < 60 s


def test_a_request_over_its_budget_is_refused_before_it_queues():
    engine = FakeEngine(delay=0.01)
    server, url, stop = serve(engine, decode_deadline_s=1.0)
    try:
        server.budget.probe(engine)
        server.budget.prefill_s, server.budget.step_s = 0.001, 0.05
        status, out, _ = call(url, "POST", CHAT, _chat(max_tokens=100))  # ~5 s > 1 s
        assert status == 400 and "decode_deadline_s" in out["error"]["message"]
        assert out["error"]["param"] == "max_tokens" and engine.calls == 0
        assert call(url, "POST", CHAT, _chat(max_tokens=10))[0] == 200  # ~0.5 s fits
    finally:
        stop()


def test_a_running_decode_ends_at_its_deadline_with_the_tokens_so_far():
    engine = FakeEngine(delay=0.05)
    server, url, stop = serve(engine, decode_deadline_s=0.5)
    try:
        t0 = time.monotonic()
        status, out, _ = call(url, "POST", CHAT, _chat(max_tokens=200))  # 10 s unbounded
        took = time.monotonic() - t0
        assert status == 200 and out["choices"][0]["finish_reason"] == "deadline"
        assert out["llmqp"]["stop"] == "deadline"
        n = out["usage"]["completion_tokens"]
        assert (
            1 <= n < 200
            and out["choices"][0]["message"]["content"] == ("abcdefghijklmnopqrstuvwxyz" * 8)[:n]
        )
        assert took < 3.0
    finally:
        stop()


def test_decode_control_reasons():
    control = DecodeControl(limit_s=0.05)
    assert control.should_stop() is None  # not started: the queue has its own deadline
    control.start()
    assert control.should_stop() is None
    time.sleep(0.08)
    assert control.should_stop() == "deadline"
    control.cancel()
    assert control.should_stop() == "cancelled"


# -- cancellation: the device is free again at the next step -----------------------------------


def _quiet(caplog):
    """The service's records at INFO and above: (level, message)."""
    return [(r.levelname, r.getMessage()) for r in caplog.records
            if r.name.startswith("app.serving") and r.levelno >= logging.INFO]  # fmt: skip


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_leaves_frees_the_device_within_a_step(caplog, stream):
    caplog.set_level(logging.INFO)
    engine = FakeEngine(delay=0.05)  # 200 tokens would hold the device 10 s
    server, url, stop = serve(engine)
    try:
        s = _send(url, json.dumps(_chat(max_tokens=200, stream=stream)).encode())
        time.sleep(1.0)
        s.close()
        t0 = time.monotonic()
        status, out, _ = call(url, "POST", CHAT, _chat(max_tokens=1))
        wait = time.monotonic() - t0
        assert status == 200 and wait < 1.0, wait  # one 0.05 s step, not the 9 s left
        records = _quiet(caplog)
        assert [lvl for lvl, _ in records] == ["INFO"], records  # one line, no traceback
        assert "left before the answer" in records[0][1]
    finally:
        stop()


def test_queued_requests_whose_clients_left_never_run(caplog):
    caplog.set_level(logging.INFO)
    engine = FakeEngine(delay=0.05)
    server, url, stop = serve(engine)
    try:
        first = _send(url, json.dumps(_chat(max_tokens=30)).encode())  # runs 1.5 s
        time.sleep(0.2)
        left = [_send(url, json.dumps(_chat(max_tokens=64, stream=i % 2 == 0)).encode())
                for i in range(10)]  # fmt: skip
        time.sleep(0.5)
        for s in left:
            s.close()
        time.sleep(0.2)
        t0 = time.monotonic()
        status, _, _ = call(url, "POST", CHAT, _chat(max_tokens=1))
        wait = time.monotonic() - t0
        assert status == 200 and wait < 2.0, wait  # the first's 1.5 s at most, not 10 x 3.2 s
        assert engine.calls == 2  # the ten that left never reached the engine
        first.close()
        assert [lvl for lvl, _ in _quiet(caplog)] == ["INFO"] * 10
    finally:
        stop()


# -- exact text, on a tokenizer double with byte pieces -----------------------------------------


class _Bytes:
    """Tokens are single bytes: the hardest split there is."""

    def token_bytes(self, token):
        return bytes([token])


def test_text_stream_holds_back_incomplete_characters():
    data = "😀😀 ünïcødé 漢字 e\u0301".encode()
    stream = TextStream(_Bytes())
    pieces = [stream.push(b) for b in data]
    assert "".join(pieces) == data.decode() and "\ufffd" not in "".join(pieces)
    assert all(p == "" or p.encode() in data for p in pieces)
    # cut inside the first emoji: nothing shown, 2 bytes held (reported, not a U+FFFD)
    assert TextStream.of(_Bytes(), data[:2]) == ("", 2)
    # a byte that can never be part of a character is U+FFFD, as decoding all at once gives
    bad = b"a\xffb\xe6\xbc"
    assert TextStream.of(_Bytes(), bad) == ("a\ufffdb", 2)
