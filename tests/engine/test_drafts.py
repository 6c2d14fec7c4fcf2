"""Prompt-lookup drafts on a tiny random model (no model file): the n-gram proposer, the length
rule, the options, and exactness of the verify-and-roll-back path — drafts that are fully
rejected, partly accepted, fully accepted and crossing forced tokens, alone and under continuous
batching — with drafts made to order (the dense continuation, one token changed)."""

from __future__ import annotations

import pytest

from app.engine import drafts
from app.engine.batch_limits import BatchLimits
from app.engine.drafts import Drafter, lookup, rule_length
from app.engine.loop import DecodeState, run_body
from app.engine.options import DecodeOptions
from app.engine.routing import FixedPolicy
from app.engine.scheduler import Scheduler
from app.engine.session import Session

from .tiny import FakeConstraint, TinyEngine, requests


@pytest.fixture(scope="module")
def engine():
    return TinyEngine()


@pytest.fixture(scope="module")
def dense(engine):
    return {r.id: engine.decode(r, plan="dense").tokens for r in requests()}


def test_lookup_takes_the_longest_latest_match():
    #            0  1  2  3  4  5  6  7  8  9
    seq = [5, 6, 7, 8, 1, 6, 7, 9, 5, 6, 7]
    n, cont = lookup(seq, 3, 4)  # "5 6 7" occurs at 0: continue with 8 1 6 7
    assert (n, cont) == (3, [8, 1, 6, 7])
    n, cont = lookup([1, 6, 7, 2, 6, 7, 3, 9, 6, 7], 3, 2)  # "9 6 7" no; "6 7" latest at 4
    assert (n, cont) == (2, [3, 9])
    assert lookup([1, 2, 3], 3, 4) == (0, [])
    assert lookup([4], 3, 4) == (0, [])
    assert lookup([2, 2, 2], 3, 4) == (2, [2])  # a repeat proposes itself


def test_rule_length_drafts_only_what_pays():
    assert rule_length(0.2, 0.35) == 0 and rule_length(0.35, 0.35) == 0
    lengths = [rule_length(p, 0.35) for p in (0.4, 0.6, 0.8, 0.9, 0.99)]
    assert lengths == sorted(lengths) and lengths[0] == 1 and lengths[-1] == drafts.MAX_DRAFT
    for p in (0.4, 0.6, 0.8, 0.9):  # token L pays, token L + 1 does not
        n = rule_length(p, 0.35)
        assert p**n > 0.35 >= p ** (n + 1)
    d = Drafter()
    assert d.length(0) == 0 and Drafter(5).length(1) == 5


def test_the_draft_option_is_validated_and_only_for_lookup():
    assert DecodeOptions(plan="lookup", draft=4).draft == 4
    for bad in (0, 17, 2.5, True):
        with pytest.raises(ValueError, match="'draft' parameter"):
            DecodeOptions(plan="lookup", draft=bad)
    with pytest.raises(ValueError, match="'draft' parameter applies to plan 'lookup', not 'dense'"):
        DecodeOptions(plan="dense", draft=3)


def _oracle(engine, req, dense_tokens, wrong_at):
    """A ``lookup`` for ``req`` that proposes the dense continuation, with the token at draft
    offset ``wrong_at`` (None: none) swapped for another legal one (taken, then rejected)."""
    prompt_len = len(engine.prompt_ids(req))

    def propose(seq, max_n, limit):
        t = len(seq) - prompt_len
        cont = list(dense_tokens[t : t + limit])
        if wrong_at is not None and wrong_at < len(cont):
            fake = FakeConstraint(engine.config.vocab, seed=len(req.prompt))
            for tok in dense_tokens[: t + wrong_at]:
                fake.consume(tok)
            other = [int(x) for x in fake.legal() if x != cont[wrong_at]]
            if other:
                cont[wrong_at] = other[0]
        return 3, cont

    return propose


@pytest.mark.parametrize("wrong_at", [None, 0, 1], ids=["accepted", "rejected", "partial"])
def test_drafts_decode_the_dense_tokens(engine, dense, monkeypatch, wrong_at):
    session = Session(engine)
    stats = []
    for req in requests():
        monkeypatch.setattr(drafts, "lookup", _oracle(engine, req, dense[req.id], wrong_at))
        streamed = []
        got = session.decode(req, DecodeOptions(plan="lookup", draft=4), on_step=streamed.append)
        assert got.tokens == dense[req.id] and [s.token for s in streamed] == got.tokens
        assert all(s.margin is not None for s in got.steps if s.k > 1)  # scored at verification
        stats.append((got.drafts, got.rollbacks))
    acc = sum(d["accepted"] for d, _ in stats)
    rej = sum(d["rejected"] for d, _ in stats)
    back = sum(b for _, b in stats)
    if wrong_at is None:
        assert acc > 0 and rej == 0 and back == 0
    elif wrong_at == 0:
        assert acc == 0 and rej > 0 and back == rej
    else:
        assert acc > 0 and rej > 0 and back == rej


def test_one_forward_verifies_the_draft_and_the_forced_tokens(engine, dense, monkeypatch):
    """The body runs the token, its draft and the forced tokens between in one forward: every
    third step here is forced (K = 1), so a draft of 4 crosses one."""
    req = requests(1, max_tokens=14)[0]
    prompt = engine.prompt_ids(req)
    monkeypatch.setattr(drafts, "lookup", _oracle(engine, req, dense[req.id], None))
    opts = DecodeOptions(plan="lookup", draft=4)
    state = DecodeState(engine, req, prompt, engine.constraint(req),
                        FixedPolicy("PromptLookup", engine.rule), opts)  # fmt: skip
    runs = []
    while (run := state.next_run()) is not None:
        runs.append((len(state.tokens) - len(run.ids), list(run.ids)))
        state.advance(run_body(engine.body, run), 1e-3)
    assert state.tokens == dense[req.id]
    forced = {i for i, s in enumerate(state.steps) if s.k == 1}
    drafted = {i for i, s in enumerate(state.steps) if s.k > 1 and s.body_tokens == 0}
    crossing = [
        (start, ids)
        for start, ids in runs[1:]
        if len(ids) >= 3
        and {start + j for j in range(len(ids))} & forced
        and {start + j for j in range(len(ids))} & drafted
    ]
    assert crossing, runs  # a forward with drafted and forced tokens together
    assert len(runs) - 1 < len(state.tokens) / 2  # far fewer forwards than tokens


def test_the_drafter_never_keeps_a_draft_across_a_rollback(engine, dense, monkeypatch):
    req = requests(1)[0]
    monkeypatch.setattr(drafts, "lookup", _oracle(engine, req, dense[req.id], 1))
    got = Session(engine).decode(req, DecodeOptions(plan="lookup", draft=3))
    d = got.drafts
    assert got.tokens == dense[req.id] and d["rejected"] == got.rollbacks > 0
    assert d["drafted"] == d["accepted"] + d["rejected"] + d["unreached"]
    assert got.lost_s > 0  # a rolled-back draft costs measured time, never a token


@pytest.mark.parametrize("plan", ["lookup", "auto", "router"])
def test_drafts_under_continuous_batching(engine, dense, monkeypatch, plan):
    """Drafting sequences share passes (mixed run lengths) and decode what they decode alone."""
    reqs = requests()
    oracles = [(engine.prompt_ids(r), _oracle(engine, r, dense[r.id], 1)) for r in reqs]

    def by_request(seq, max_n, limit):  # the oracle of the request whose prompt this is
        prompt, oracle = next(o for o in oracles if seq[: len(o[0])] == o[0])
        return oracle(seq, max_n, limit)

    monkeypatch.setattr(drafts, "lookup", by_request)
    opts = DecodeOptions(plan=plan, draft=3) if plan == "lookup" else DecodeOptions(plan=plan)
    sched = Scheduler(Session(engine), BatchLimits(max_batch=3, max_tokens=4096))
    results = sched.decode_all(reqs, opts)
    assert [r.tokens for r in results] == [dense[r.id] for r in reqs]
    if plan != "router":  # the router may not pick the draft arm
        assert sum(r.drafts["drafted"] for r in results) > 0
    assert max(n for n, _ in sched.pass_sizes) > 1
