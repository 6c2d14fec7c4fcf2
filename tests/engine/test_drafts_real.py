"""Prompt-lookup drafts on the real model under real grammars: the grammar's draft check never
moves the matcher, every drafting plan decodes always-DenseHead's tokens on workload and
function-call requests (drafts accepted and rejected among them), alone and batched, and
``llmqp decode --plan lookup`` validates its ``--draft``."""

import dataclasses
import json

import pytest

from app.cli import main
from app.engine.batch_limits import BatchLimits
from app.engine.options import DecodeOptions
from app.engine.requests import DecodeRequest
from app.engine.scheduler import Scheduler

from .test_batch_exact import _bfcl_like

SUBSET = ("fn-email", "fn-calendar", "ex-address", "nest-team")
MAX_TOKENS = 24


def _calls() -> list[DecodeRequest]:
    """Function calls whose arguments copy names and numbers from the question."""
    book = {
        "type": "object",
        "properties": {
            "restaurant": {"type": "string"},
            "people": {"type": "integer"},
            "date": {"type": "string"},
            "name": {"type": "string"},
        },
        "required": ["restaurant", "people", "date", "name"],
        "additionalProperties": False,
    }
    prompt = ("Book a table at Luigi's Trattoria for 4 people on 2024-07-19 under the name "
              "Maria Gonzalez. Reply with the call's arguments as JSON.")  # fmt: skip
    call = DecodeRequest("call-book", prompt, ("schema", book), MAX_TOKENS, True)
    return [call] + [dataclasses.replace(r, max_tokens=MAX_TOKENS) for r in _bfcl_like()]


@pytest.fixture(scope="module")
def requests(workload):
    by_id = {r.id: r for r in workload}
    return [dataclasses.replace(by_id[i], max_tokens=MAX_TOKENS) for i in SUBSET] + _calls()


@pytest.fixture(scope="module")
def dense(engine, requests):
    session = engine.session()
    return {r.id: session.decode(r, DecodeOptions(plan="dense")).tokens for r in requests}


def test_validating_a_draft_does_not_move_the_matcher(engine, requests, dense):
    req = requests[-3]  # the booking call
    tokens = dense[req.id]
    c = engine.constraint(req)
    for t in tokens[:4]:
        c.consume(t)
    before = (c.legal().tolist(), c.forced_run(), c.stopped())
    ahead = tokens[4:10]
    illegal = next(t for t in range(engine.config.vocab) if t not in set(c.legal().tolist()))
    assert c.validate(ahead) == len(ahead)
    assert c.validate([illegal] + ahead) == 0
    assert c.validate(ahead[:2] + [10**6] + ahead[2:]) == 2  # (llguidance alone would stop)
    assert c.validate([]) == 0
    assert (c.legal().tolist(), c.forced_run(), c.stopped()) == before
    for t in ahead:  # and the real decode goes on from where it was
        c.consume(t)


@pytest.mark.parametrize(
    "options",
    [
        DecodeOptions(plan="lookup"),
        DecodeOptions(plan="lookup", draft=4),
        DecodeOptions(plan="auto"),
        DecodeOptions(plan="router", router="linucb"),
    ],
    ids=["lookup", "lookup-4", "auto", "router"],
)
def test_drafting_plans_decode_the_dense_tokens(engine, requests, dense, options):
    session = engine.session()
    drafted = accepted = rejected = 0
    for req in requests:
        streamed = []
        got = session.decode(req, options, on_step=streamed.append)
        assert got.tokens == dense[req.id], (options.plan, req.id)
        assert [s.token for s in streamed] == got.tokens
        d = got.drafts
        drafted, accepted, rejected = (
            drafted + d["drafted"], accepted + d["accepted"], rejected + d["rejected"]
        )  # fmt: skip
        assert d["drafted"] == d["accepted"] + d["rejected"] + d["unreached"]
        assert got.rollbacks == d["rejected"]
    if options.draft:  # a fixed length drafts wherever anything matches: both outcomes occur
        assert accepted > 0 and rejected > 0
    if options.plan != "router":
        assert drafted > 0


def test_batched_drafts_equal_solo(engine, requests, dense):
    sched = Scheduler(engine.session(), BatchLimits(max_batch=4, max_tokens=4096))
    results = sched.decode_all(requests, DecodeOptions(plan="lookup", draft=3))
    assert [r.tokens for r in results] == [dense[r.id] for r in requests]
    assert max(n for n, _ in sched.pass_sizes) == 4


def test_cli_decode_plan_lookup(capsys, engine):
    argv = ["decode", "--prompt", "Call get_weather for Paris in celsius.", "--chat",
            "--schema", json.dumps(_calls()[1].grammar[1]), "--max-tokens", "12"]  # fmt: skip
    assert main(argv + ["--plan", "lookup", "--draft", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert main(argv + ["--plan", "dense", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tokens"] == out["tokens"]
    assert main(argv + ["--plan", "lookup", "--draft", "0"]) == 2
    assert "'draft' parameter" in capsys.readouterr().err
    assert main(argv + ["--plan", "dense", "--draft", "3"]) == 2
    assert "applies to plan 'lookup'" in capsys.readouterr().err
