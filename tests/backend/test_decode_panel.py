"""The app's Decode panel against a service with a (fake) engine: every step drawn, with the
always-DenseHead time beside it; bad grammars said in one line."""

import time

import pytest

from app.serving.client import BackendClient, start_in_process
from app.widgets.app import LLMQPApp
from app.widgets.decode import request_body

from .conftest import FAST
from .test_openai import FakeEngine


@pytest.fixture
def app():
    url, stop = start_in_process(timing=FAST, engine=FakeEngine())
    yield LLMQPApp(server=True, client=BackendClient(url))
    stop()


def _wait(panel):
    deadline = time.monotonic() + 60
    while not panel.poll():
        assert time.monotonic() < deadline, "the decode never finished"
        time.sleep(0.02)


def test_decode_panel_streams_every_step_beside_dense(app):
    panel = app.decode
    panel.offer()
    assert "sparse" in panel.plan.options
    # the engine's routers are offered from the first request (not once one was created)
    assert "lints" in panel.router.options and not panel.router.disabled
    panel.grammar.value, panel.grammar_text.value = "choices", "red\ngreen"
    panel.plan.value, panel.max_tokens.value = "sparse", 5
    assert panel.decode()
    assert not panel.decode()  # one at a time
    _wait(panel)
    assert panel.error is None and [s["index"] for s in panel.steps] == [0, 1, 2, 3, 4]
    assert len(panel.dense) == 5 and panel.table.object.count("<tr>") == 6
    assert "5 tokens, stop: length" in panel.status.object
    assert "always-DenseHead" in panel.status.object
    assert app.view() is not None


def test_decode_panel_says_what_is_wrong(app):
    panel = app.decode
    panel.grammar.value, panel.grammar_text.value = "JSON schema", "{not json"
    assert not panel.decode() and "not valid JSON" in panel.status.object
    panel.grammar.value, panel.grammar_text.value = "choices", "  \n"
    assert not panel.decode() and "one choice per line" in panel.status.object
    panel.grammar.value, panel.max_tokens.value = "none", 3
    assert panel.decode()
    _wait(panel)
    assert len(panel.steps) == 3


def test_request_body_fields():
    body = request_body("hi", "regex", "[0-9]+", "auto", None, 8)
    assert body["regex"] == "[0-9]+" and body["llmqp"] == {"plan": "auto"}
    body = request_body("hi", "JSON schema", '{"type": "object"}', "dense", "linucb", 4)
    assert body["response_format"]["json_schema"]["schema"] == {"type": "object"}
    assert body["llmqp"] == {"plan": "router", "router": "linucb"} and body["max_tokens"] == 4
    with pytest.raises(ValueError, match="prompt"):
        request_body("  ", "none", "", "auto", None, 4)
