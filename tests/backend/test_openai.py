"""The OpenAI-compatible decoding endpoint, driven by the official ``openai`` client.

The real-engine tests decode SmolLM2-135M under llguidance grammars; they skip (saying why)
only where the model file has not been fetched (``llmqp model fetch``; CI fetches it). The
fake-engine tests check the protocol, the bounds and the queueing without a model.
"""

import json
import socket
import time
from dataclasses import dataclass, replace

import pytest

openai = pytest.importorskip("openai")

from app.measure.limits import Limits  # noqa: E402
from app.serving.client import start_in_process  # noqa: E402

from .conftest import FAST  # noqa: E402
from .test_service import call  # noqa: E402


def _model_present() -> bool:
    try:
        from app.engine.fetch import default_model_path
    except ImportError:
        return False
    return default_model_path().exists()


needs_model = pytest.mark.skipif(
    not _model_present(), reason="model file absent: run `llmqp model fetch` (CI fetches it)"
)


@pytest.fixture(scope="module")
def engine():
    from app.engine.engine import Engine

    return Engine.load()


@pytest.fixture(scope="module")
def real(engine):
    url, stop = start_in_process(timing=FAST, engine=engine)
    yield url, openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)
    stop()


# -- the real engine ------------------------------------------------------------------------------


@needs_model
def test_models_lists_the_loaded_model(real, engine):
    url, client = real
    models = client.models.list().data
    assert [m.id for m in models] == [engine.info()["model"]]
    assert "auto" in models[0].llmqp["plans"]


@needs_model
def test_plain_chat_completion(real, engine):
    _, client = real
    model = engine.info()["model"]
    out = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Say hello."}], max_tokens=4
    )
    assert out.object == "chat.completion" and out.model == model
    choice = out.choices[0]
    assert choice.message.role == "assistant" and choice.finish_reason in ("stop", "length")
    assert out.usage.completion_tokens == len(out.llmqp["steps"]) <= 4
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens
    step = out.llmqp["steps"][0]
    assert set(step) >= {"plan", "k", "forced", "margin", "seconds"}


@needs_model
def test_json_schema_answer_parses_and_matches(real, engine):
    _, client = real
    schema = {
        "type": "object",
        "properties": {"colour": {"enum": ["red", "green", "blue"]}, "n": {"type": "integer"}},
        "required": ["colour", "n"],
        "additionalProperties": False,
    }
    out = client.chat.completions.create(
        model=engine.info()["model"],
        messages=[{"role": "user", "content": "A colour and a small number, as JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": "pick", "schema": schema}},
        max_tokens=40,
        extra_body={"llmqp": {"plan": "sparse"}},
    )
    value = json.loads(out.choices[0].message.content)
    assert value["colour"] in ("red", "green", "blue") and isinstance(value["n"], int)
    assert out.llmqp["stop"] == "grammar" and out.llmqp["plan"] == "sparse"
    assert {s["plan"] for s in out.llmqp["steps"]} <= {"SparseHead", "ForcedToken"}


@needs_model
def test_streaming_chat_matches_the_plain_answer(real, engine):
    _, client = real
    model = engine.info()["model"]
    kw = dict(
        model=model,
        messages=[{"role": "user", "content": "Pick one."}],
        max_tokens=8,
        extra_body={"choices": ["alpha", "beta", "gamma"]},
    )
    plain = client.chat.completions.create(**kw)
    chunks = list(client.chat.completions.create(stream=True, **kw))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content and text in ("alpha", "beta", "gamma")
    steps = [c.llmqp["step"] for c in chunks if getattr(c, "llmqp", None) and "step" in c.llmqp]
    assert [s["token"] for s in steps] == plain.llmqp["tokens"]
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].usage.completion_tokens == len(steps)


@needs_model
def test_completions_with_a_regex(real, engine):
    _, client = real
    out = client.completions.create(
        model=engine.info()["model"],
        prompt="The year is ",
        max_tokens=6,
        extra_body={"regex": "[0-9]{4}"},
    )
    assert out.object == "text_completion"
    text = out.choices[0].text
    assert len(text) == 4 and text.isdigit() and out.llmqp["stop"] == "grammar"


@needs_model
def test_bad_requests_are_openai_errors(real, engine):
    _, client = real
    model = engine.info()["model"]
    msgs = [{"role": "user", "content": "x"}]
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.chat.completions.create(model=model, messages=msgs, max_tokens=100_000)
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model=model, messages=msgs, extra_body={"regex": "("})
    assert exc.value.body["type"] == "invalid_request_error" and exc.value.body["message"]
    with pytest.raises(openai.BadRequestError, match="llmqp.plan"):
        client.chat.completions.create(model=model, messages=msgs, max_tokens=2,
                                       extra_body={"llmqp": {"plan": "fastest"}})  # fmt: skip
    with pytest.raises(openai.BadRequestError, match="llmqp.router"):
        client.chat.completions.create(model=model, messages=msgs, max_tokens=2,
                                       extra_body={"llmqp": {"router": "linucb"}})  # fmt: skip
    with pytest.raises(openai.NotFoundError, match="not served here"):
        client.chat.completions.create(model="gpt-4o", messages=msgs, max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="max_prompt_chars"):
        long = [{"role": "user", "content": "y" * 20_000}]
        client.chat.completions.create(model=model, max_tokens=2, messages=long)


@needs_model
def test_a_fresh_server_decodes_with_any_router(real, engine):
    """Every router the engine has is served from the first request (it was refused until an
    earlier request had created one), and the models card lists them."""
    url, client = real
    card = client.models.list().data[0].llmqp
    assert {"linucb", "lints"} <= set(card["routers"])
    msgs = [{"role": "user", "content": "Pick a colour."}]
    out = client.chat.completions.create(
        model=engine.info()["model"], messages=msgs, max_tokens=3,
        extra_body={"choices": ["red", "green"], "llmqp": {"plan": "router", "router": "lints"}},
    )  # fmt: skip
    assert out.choices[0].message.content in ("red", "green")
    assert out.llmqp["router"] == "lints"


@needs_model
def test_decoding_and_sweeps_share_the_device(real, engine):
    url, client = real
    status, ans, _ = call(url, "POST", "/v1/sweeps/head", {"d": 32, "vocab": 256, "k": [1, 16]})
    assert status == 200
    out = client.completions.create(model=engine.info()["model"], prompt="1, 2, 3,", max_tokens=2)
    assert out.usage.completion_tokens >= 1


@needs_model
def test_llmqp_backend_loads_the_model_once_and_serves_openai_clients():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-m", "app.backend", "--port", "0"],
                            stderr=subprocess.PIPE, text=True, cwd=root)  # fmt: skip
    try:
        line = proc.stderr.readline()
        assert line.startswith("llmqp backend on http://127.0.0.1:") and "decoding " in line
        url = line.split()[3]
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)
        model = client.models.list().data[0].id
        out = client.chat.completions.create(model=model, max_tokens=8,
                                             messages=[{"role": "user", "content": "Yes or no?"}],
                                             extra_body={"choices": ["yes", "no"]})  # fmt: skip
        assert out.choices[0].message.content in ("yes", "no")
    finally:
        proc.send_signal(2)
        assert proc.wait(timeout=30) == 0


# -- a fake engine: protocol, bounds, queueing --------------------------------------------------


@dataclass
class _Step:
    index: int
    token: int
    text: str
    plan: str = "DenseHead"
    k: int = 3
    forced: bool = False
    margin: float | None = 0.5
    seconds: float = 0.001


class _Result:
    def __init__(self, req, steps, stop):
        self.text = "".join(s.text for s in steps)
        self.tokens = [s.token for s in steps]
        self.stop, self.steps = stop, steps

    def to_json(self):
        return {"steps": [{"plan": s.plan, "k": s.k, "forced": s.forced, "margin": s.margin,
                           "seconds": s.seconds} for s in self.steps],  # fmt: skip
                "stop": self.stop, "tokens": self.tokens, "seconds": 0.01, "tokens_per_s": 1.0,
                "device": "cpu", "versions": {}}  # fmt: skip


class _Tokenizer:
    chat_template = None

    def encode(self, text):
        return list(range(len(text.split())))

    def chat(self, prompt):
        return "<user> " + prompt


class FakeEngine:
    """Spells "abc..." one letter per step, ``delay`` seconds each."""

    context = 256

    def __init__(self, delay=0.0):
        self.delay, self.tokenizer, self.calls = delay, _Tokenizer(), 0

    def info(self):
        return {"model": "fake-1", "context": self.context, "vocab": 26}

    def decode(self, req, plan="auto", on_step=None, should_stop=None):
        self.calls += 1
        steps = []
        for i in range(req.max_tokens):
            reason = should_stop() if should_stop is not None else None
            if reason:
                return _Result(req, steps, reason)
            time.sleep(self.delay)
            step = _Step(i, i, "abcdefghijklmnopqrstuvwxyz"[i % 26])
            steps.append(step)
            if on_step is not None:
                on_step(step)
        return _Result(req, steps, "length")


@pytest.fixture
def fake():
    engine = FakeEngine()
    url, stop = start_in_process(timing=FAST, engine=engine)
    yield url, engine
    stop()


CHAT = "/v1/chat/completions"


def _chat(**kw):
    return {"model": "fake-1", "messages": [{"role": "user", "content": "hi"}], **kw}


def test_fake_chat_answer_and_models(fake):
    url, _ = fake
    status, out, _ = call(url, "POST", CHAT, _chat(max_tokens=3, temperature=0, seed=7))
    assert status == 200 and out["choices"][0]["message"]["content"] == "abc"
    assert out["choices"][0]["finish_reason"] == "length" and out["usage"]["completion_tokens"] == 3
    assert call(url, "GET", "/v1/models")[1]["data"][0]["id"] == "fake-1"


@pytest.mark.parametrize(
    "body, param",
    [
        (_chat(max_tokens=0), "max_tokens"),
        (_chat(max_tokens=257), "max_tokens"),
        (_chat(n=2), "n"),
        (_chat(stop=["x"]), "stop"),
        (_chat(stream="yes"), "stream"),
        (_chat(regex="a", choices=["a"]), "choices"),
        (_chat(choices=[]), "choices"),
        (_chat(choices=["x"] * 300), "choices"),
        (_chat(lark="x" * 20_000), "lark"),
        (_chat(response_format={"type": "xml"}), "response_format"),
        (_chat(response_format={"type": "json_schema", "json_schema": {"name": "x"}}),
         "response_format"),
        (_chat(llmqp={"plan": "auto", "colour": 1}), "llmqp"),
        (_chat(tools=[]), "tools"),
        ({"model": "fake-1", "messages": []}, "messages"),
        ({"model": "fake-1", "messages": [{"role": "robot", "content": "x"}]}, "messages"),
        ({"model": "fake-1", "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"model": "fake-1", "messages": [{"role": "user", "content": "x " * 200}]}, "messages"),
    ],
)  # fmt: skip
def test_fake_bad_requests_name_the_parameter(fake, body, param):
    url, engine = fake
    status, out, _ = call(url, "POST", CHAT, body)
    assert status == 400, out
    err = out["error"]
    assert err["type"] == "invalid_request_error" and err["param"] == param and err["message"]
    assert engine.calls == 0  # refused before reaching the device


def test_fake_stream_is_server_sent_events(fake):
    url, _ = fake
    host, port = url.split("//")[1].split(":")
    body = json.dumps(_chat(max_tokens=4, stream=True, stream_options={"include_usage": True}))
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall((f"POST {CHAT} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: "
                   f"application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                   f"{body}").encode())  # fmt: skip
        raw = b""
        while chunk := s.recv(65536):
            raw += chunk
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert b"text/event-stream" in head
    events = [line[6:] for line in rest.decode().splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "abcd"
    assert [c["llmqp"]["step"]["index"] for c in chunks if "step" in c.get("llmqp", {})] == [
        0, 1, 2, 3
    ]  # fmt: skip
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 4


def test_fake_stream_stops_when_the_client_leaves():
    engine = FakeEngine(delay=0.05)
    url, stop = start_in_process(timing=FAST, engine=engine)
    try:
        host, port = url.split("//")[1].split(":")
        body = json.dumps(_chat(max_tokens=200, stream=True))
        with socket.create_connection((host, int(port)), timeout=10) as s:
            head = (f"POST {CHAT} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: "
                    f"application/json\r\nContent-Length: {len(body)}\r\n\r\n")  # fmt: skip
            s.sendall((head + body).encode())
            s.recv(4096)  # the first events
        t0 = time.monotonic()
        # the device is free again long before 200 steps x 0.05 s would have finished
        status, out, _ = call(url, "POST", CHAT, _chat(max_tokens=1))
        assert status == 200 and time.monotonic() - t0 < 8.0
    finally:
        stop()


def test_fake_decode_waits_for_the_device_then_gives_up():
    engine = FakeEngine(delay=0.2)
    limits = replace(Limits(), max_queue_wait_s=0.5)
    url, stop = start_in_process(timing=FAST, engine=engine, limits=limits)
    try:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(call, url, "POST", CHAT, _chat(max_tokens=10))
            time.sleep(0.3)
            second = pool.submit(call, url, "POST", CHAT, _chat(max_tokens=1))
            assert first.result()[0] == 200
            status, out, headers = second.result()
        assert status == 503 and "busy" in out["error"]["message"] and headers["Retry-After"]
    finally:
        stop()


def test_no_engine_means_503_and_an_empty_model_list():
    url, stop = start_in_process(timing=FAST)
    try:
        assert call(url, "GET", "/v1/models")[1] == {"object": "list", "data": []}
        status, out, _ = call(url, "POST", CHAT, _chat())
        assert status == 503 and "decoding is off" in out["error"]["message"]
    finally:
        stop()


def test_cross_origin_decode_is_refused(fake):
    url, engine = fake
    status, out, _ = call(url, "POST", CHAT, _chat(), headers={"Origin": "http://evil.example"})
    assert status == 403 and engine.calls == 0
    status, out, _ = call(url, "POST", CHAT, _chat(), headers={"Content-Type": "text/plain"})
    assert status == 415 and engine.calls == 0
