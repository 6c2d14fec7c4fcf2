"""The scheduler's speed paths change time only, never tokens (real model): prompt-prefix reuse
(the chat template's system turn, a repeated prompt) and two kernel threads for large passes."""

import dataclasses

import pytest

from app.engine import qkernel
from app.engine.batch_limits import BatchLimits
from app.engine.scheduler import THREAD_MIN_PASS_ROWS, Scheduler

MAX_TOKENS = 8


@pytest.fixture(scope="module")
def requests(workload):
    chat = [r for r in workload if r.chat and r.grammar and r.grammar[0] == "schema"][:5]
    reqs = [dataclasses.replace(r, max_tokens=MAX_TOKENS) for r in chat]
    return reqs + [dataclasses.replace(reqs[0], id="again")]  # the same prompt once more


@pytest.fixture(scope="module")
def solo(engine, requests):
    session = engine.session()
    return {r.id: session.decode(r).tokens for r in requests}


def test_prefix_reuse_decodes_solo_tokens(engine, requests, solo):
    sched = Scheduler(engine.session(), BatchLimits(max_batch=1))
    results = sched.decode_all(requests)
    assert [r.tokens for r in results] == [solo[r.id] for r in requests]
    stats = sched.prefixes.stats()
    assert stats["hits"] == len(requests) - 1  # every prompt after the first shares the template
    again = len(engine.prompt_ids(requests[-1])) - 1
    assert stats["reused_positions"] >= again + 10 * (len(requests) - 2)


def test_chunked_prefill_after_reuse_and_without_the_cache(engine, requests, solo):
    """Prefixes filled from the store, then the rest in 5-token chunks; and no store at all."""
    for prefixes in ("default", None):
        limits = BatchLimits(max_batch=3, max_tokens=5)
        sched = Scheduler(engine.session(), limits, prefixes=prefixes)
        results = sched.decode_all(requests)
        assert [r.tokens for r in results] == [solo[r.id] for r in requests], prefixes
        assert max(t for _, t in sched.pass_sizes) <= 5


@pytest.mark.parametrize("threads", [1, 2])
def test_kernel_threads_do_not_change_tokens(engine, requests, solo, threads):
    before = qkernel.threads()
    sched = Scheduler(engine.session(), BatchLimits(max_batch=16), prefixes=None,
                      threads=threads)  # fmt: skip
    results = sched.decode_all(requests)
    assert [r.tokens for r in results] == [solo[r.id] for r in requests]
    assert max(t for _, t in sched.pass_sizes) >= THREAD_MIN_PASS_ROWS  # a threaded pass ran
    assert qkernel.threads() == before  # the pass's count is restored


def test_bad_arguments(engine):
    with pytest.raises(ValueError, match="threads"):
        Scheduler(engine.session(), threads=0)
    with pytest.raises(ValueError, match="prefixes"):
        Scheduler(engine.session(), prefixes="yes")


def test_prompts_arriving_together_share_their_prefix(engine, requests, solo):
    """16 slots, an empty store: the first prompt's prefill runs, the others wait a pass for it
    (each shares the chat template's system turn), then reuse it; tokens unchanged."""
    sched = Scheduler(engine.session(), BatchLimits(max_batch=16))
    results = sched.decode_all(requests)
    assert [r.tokens for r in results] == [solo[r.id] for r in requests]
    stats = sched.prefixes.stats()
    assert stats["hits"] == len(requests) - 1
    assert sched.pass_sizes[0][0] == 1  # the first pass ran the leader's prefill alone
