"""Continuous batching on the real model: every sequence decodes, token for token, what it decodes
alone — under batch 1, 4 and 16, with mixed plans sharing a pass, prefills split across passes, a
KV budget that admits two at a time, and a sequence stopped mid-decode beside the others.

A subset of the project's workload plus BFCL-like function-call requests (inline JSON schemas:
the BFCL data is not in the repository) keeps the test command short; bench/service_load.py runs
the endpoint under load.
"""

import dataclasses

import pytest

from app.engine.batch_limits import BatchLimits
from app.engine.options import DecodeOptions
from app.engine.requests import DecodeRequest
from app.engine.scheduler import Scheduler

SUBSET = ("fn-weather", "ex-review", "re-phone", "ch-capital", "lark-arith", "nest-matrix")
MAX_TOKENS = 10


def _bfcl_like() -> list[DecodeRequest]:
    """Two function-call requests in BFCL's shape: a tool's parameters as a JSON schema."""
    stock = {
        "type": "object",
        "properties": {
            "symbol": {"type": "string"},
            "exchange": {"enum": ["NYSE", "NASDAQ", "LSE"]},
            "days": {"type": "integer"},
        },
        "required": ["symbol", "exchange", "days"],
        "additionalProperties": False,
    }
    area = {
        "type": "object",
        "properties": {"shape": {"enum": ["circle", "square"]}, "size": {"type": "number"}},
        "required": ["shape", "size"],
        "additionalProperties": False,
    }
    stock_prompt = "Get Apple's stock price on NASDAQ for the last 5 days."
    area_prompt = "Compute the area of a circle of radius 3."
    tail = " Reply with the call's arguments as JSON."
    return [
        DecodeRequest("bfcl-stock", stock_prompt + tail, ("schema", stock), MAX_TOKENS, True),
        DecodeRequest("bfcl-area", area_prompt + tail, ("schema", area), MAX_TOKENS, True),
    ]


@pytest.fixture(scope="module")
def requests(workload):
    by_id = {r.id: r for r in workload}
    subset = [dataclasses.replace(by_id[i], max_tokens=MAX_TOKENS) for i in SUBSET]
    return subset + _bfcl_like()


@pytest.fixture(scope="module")
def solo(engine, requests):
    session = engine.session()
    return {r.id: session.decode(r) for r in requests}


@pytest.mark.parametrize("batch", [1, 4, 16])
def test_batched_tokens_equal_solo(engine, requests, solo, batch):
    sched = Scheduler(engine.session(), BatchLimits(max_batch=batch, max_tokens=4096))
    results = sched.decode_all(requests)
    for req, got in zip(requests, results):
        assert got.id == req.id
        assert got.tokens == solo[req.id].tokens, (batch, req.id)
        assert got.stop == solo[req.id].stop
        assert got.text == solo[req.id].text
    sizes = [n for n, _ in sched.pass_sizes]
    assert max(sizes) == min(batch, len(requests))  # the batch was really shared


def test_mixed_plans_chunked_prefills_and_a_stop(engine, requests, solo):
    """Always-DenseHead, SparseHead and auto share passes; 7 tokens a pass splits every prompt
    over several passes; a KV budget of two requests keeps two in flight; one sequence is
    stopped after three tokens and ends with a prefix of its solo tokens."""
    session = engine.session()
    # each request reserves 47-64 positions (prompt + MAX_TOKENS): any two fit in 2 x 65, no three
    per = Scheduler(session).per_position * 65
    sched = Scheduler(session, BatchLimits(max_batch=8, max_tokens=7, kv_bytes=2 * per))
    seen = []
    stop_after = requests[1].id
    plans = ["dense", "sparse", "auto"]
    seqs = []
    for i, req in enumerate(requests[:5]):
        stop = (lambda: "cancelled" if len(seen) >= 3 else None) if req.id == stop_after else None
        on_step = seen.append if req.id == stop_after else None
        opts = DecodeOptions(plan=plans[i % 3])
        seqs.append(sched.submit(req, opts, on_step=on_step, should_stop=stop))
    sched.run_until_done()
    for req, seq in zip(requests[:5], seqs):
        got = seq.wait()
        ref = solo[req.id].tokens
        if req.id == stop_after:
            assert got.stop == "cancelled"
            assert 3 <= len(got.tokens) < len(ref) and got.tokens == ref[: len(got.tokens)]
            assert [s.token for s in seen] == got.tokens
        else:
            assert got.tokens == ref, req.id
    assert max(n for n, _ in sched.pass_sizes) == 2  # the KV budget admitted two at a time
    assert max(t for _, t in sched.pass_sizes) <= 7
    assert sched.kv_reserved == 0 and not sched.busy


def test_router_shared_by_concurrent_sequences(engine, requests, solo):
    """The session's warm router chooses for several sequences at once (its delayed feedback
    keyed per sequence); every exact plan it picks decodes the solo tokens."""
    session = engine.session()
    sched = Scheduler(session, BatchLimits(max_batch=4))
    results = sched.decode_all(requests[:4], DecodeOptions(plan="router"))
    for req, got in zip(requests[:4], results):
        assert got.tokens == solo[req.id].tokens, req.id
    router = session.router("linucb")
    assert router.log and not router.waiting  # feedback arrived; nothing left dangling
