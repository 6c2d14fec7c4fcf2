"""Amortized plans on the real model: lossless by verification and rollback, ``--lossy`` trusts
the guesses, steps are streamed only once verified, and the router's feedback is delayed until
a step's body has run. A small amortizer is fitted here on two short requests (a poor fit on
purpose: it guesses wrong often, so rollbacks happen)."""

import dataclasses

import numpy as np
import pytest

from app.engine.amortized import fit_amortizer, state_pairs
from app.engine.loop import DecodeState, decode
from app.engine.options import DecodeOptions
from app.engine.session import Session

IDS = ("fn-weather", "re-phone", "date-event")


@pytest.fixture(scope="module")
def requests(workload):
    by_id = {r.id: r for r in workload}
    return [dataclasses.replace(by_id[i], max_tokens=12) for i in IDS]


@pytest.fixture(scope="module")
def session(engine, amortizer):
    return Session(engine, amortizer=amortizer)


@pytest.fixture(scope="module")
def amortizer(engine, workload):
    by_id = {r.id: r for r in workload}
    parts = []
    for rid in ("ex-review", "lark-arith"):
        req = dataclasses.replace(by_id[rid], max_tokens=12)
        res = engine.decode(req, plan="auto")
        parts.append(state_pairs(engine.body, res.prompt_tokens, res.tokens))
    a = fit_amortizer(parts[0], parts[1], engine.weights.tok_embd, lambdas=(1.0, 10.0))
    a.meta["eps_max"] = 30.0
    return a


@pytest.fixture(scope="module")
def reference(engine, requests):
    return {r.id: engine.decode(r, plan="dense").tokens for r in requests}


def test_the_fit_is_deterministic(engine, amortizer, workload):
    by_id = {r.id: r for r in workload}
    req = dataclasses.replace(by_id["ch-capital"], max_tokens=4)
    res = engine.decode(req, plan="auto")
    H, X, Y = state_pairs(engine.body, res.prompt_tokens, res.tokens)
    half = len(H) // 2
    a = fit_amortizer(
        (H[:half], X[:half], Y[:half]), (H[half:], X[half:], Y[half:]), amortizer.embed
    )
    b = fit_amortizer(
        (H[:half], X[:half], Y[:half]), (H[half:], X[half:], Y[half:]), amortizer.embed
    )
    assert np.array_equal(a.W, b.W) and a.meta["lambda"] == b.meta["lambda"]
    # the prediction beats "the state persists" on the pairs it was fitted on
    pred = np.stack([a.predict(H[i], int(X[i])) for i in range(half)])
    assert ((pred - Y[:half]) ** 2).mean() < ((H[:half] - Y[:half]) ** 2).mean()


def test_amortized_decodes_the_dense_tokens_and_rolls_back(session, requests, reference):
    rollbacks = 0
    for req in requests:
        streamed = []
        opts = DecodeOptions(plan="amortized", tau=0.0)
        got = session.decode(req, opts, on_step=streamed.append)
        assert got.tokens == reference[req.id], req.id
        assert [s.token for s in streamed] == got.tokens  # no rolled-back token was streamed
        assert [s.index for s in got.steps] == list(range(len(got.tokens)))
        rollbacks += got.rollbacks
        assert any(s.plan == "AmortizedHead" for s in got.steps) or got.rollbacks
    assert rollbacks > 0  # the poor fit guesses wrong: the rollback path ran


def test_lossy_keeps_the_wrong_guesses(session, requests, reference):
    differs = 0
    for req in requests:
        lossless = session.decode(req, DecodeOptions(plan="amortized", tau=0.0))
        lossy = session.decode(req, DecodeOptions(plan="amortized", tau=0.0, lossy=True))
        assert lossy.rollbacks == 0
        if lossless.rollbacks:
            differs += lossy.tokens != reference[req.id]
    assert differs > 0


def test_a_high_tau_refines_every_step(session, requests, reference):
    req = requests[1]
    got = session.decode(req, DecodeOptions(plan="amortized", tau=1e5))
    assert got.tokens == reference[req.id] and got.rollbacks == 0
    assert not any(s.plan == "AmortizedHead" for s in got.steps)
    assert any(s.refined for s in got.steps)


def test_rerank_and_router_decode_the_dense_tokens(session, requests, reference):
    for req in requests[:2]:
        assert session.decode(req, DecodeOptions(plan="rerank")).tokens == reference[req.id]
        opts = DecodeOptions(plan="router", router="lints")
        assert session.decode(req, opts).tokens == reference[req.id]


class _Recorder:
    """Always AmortizedHead on K >= 2; records the order of choose and feedback calls."""

    def __init__(self):
        self.events = []

    def choose(self, tel):
        self.events.append(("choose", tel.index))
        return "ForcedToken" if tel.k == 1 else "AmortizedHead"

    def feedback(self, index, plan, seconds):
        assert seconds > 0
        self.events.append(("feedback", index))

    def finish(self):
        self.events.append(("finish", None))


def test_feedback_arrives_when_the_body_has_run(engine, amortizer, requests, reference):
    req = requests[0]
    policy = _Recorder()
    options = DecodeOptions(plan="amortized", tau=0.0)
    prompt, constraint = engine.prompt_ids(req), engine.constraint(req)
    loop = decode(DecodeState(engine, req, prompt, constraint, policy, options, amortizer),
                  engine.body)  # fmt: skip
    tokens = loop.tokens
    assert tokens == reference[req.id]
    ev = policy.events
    fed = [i for kind, i in ev if kind == "feedback"]
    assert len(fed) == len(set(fed))  # at most one loss per step
    # some step's feedback came after a later step was chosen (the delay)
    pos = {("choose", i): n for n, (kind, i) in enumerate(ev) if kind == "choose"}
    late = [
        i
        for n, (kind, i) in enumerate(ev)
        if kind == "feedback" and ("choose", i + 1) in pos and pos[("choose", i + 1)] < n
    ]
    assert late
    # every committed step but the last (its token never runs through the body) was settled
    assert set(range(len(tokens) - 1)) <= set(fed) | {s.index for s in loop.steps if s.forced}


def test_router_learns_across_requests_and_keeps_its_state(session, requests, tmp_path):
    from app.engine.routing import RouterPolicy

    router = session.router("linucb")
    before = router.router.t
    session.decode(requests[1], DecodeOptions(plan="router", router="linucb"))
    assert router.router.t > before
    assert router.overhead_s > 0
    path = router.save(tmp_path / "router.json")
    loaded = RouterPolicy.load(path, "linucb")
    assert np.array_equal(loaded.router.P_, router.router.P_)
    x = np.linspace(0.1, 0.9, len(loaded.router.P_[0, 0]))
    assert loaded.router.select(x) == router.router.select(x)
    with pytest.raises(ValueError, match="holds a linucb router"):
        RouterPolicy.load(path, "lints")
