"""The decode state on a tiny random model (no model file): every plan decodes the dense
tokens, a body run is asked for only where a step needs one, and a toy plan inserted at
position 0 of the registry is run by the engine, learned by the router, recorded by the trace
collector and replayed by every router, with nothing but a registry entry and a kernel."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from app.engine.amortized import Amortizer
from app.engine.kernels import KERNELS
from app.engine.kernels.numpy import DenseHeadKernel
from app.engine.loop import BodyRun, DecodeState, decode, run_body
from app.engine.options import DecodeOptions
from app.engine.routing import FixedPolicy, RouterPolicy
from app.engine.session import Session
from app.engine.traces import collect_request
from app.model.registry import PLANS, PlanSpec, get_plan, routed_plans

from .tiny import TinyEngine, requests


@pytest.fixture(scope="module")
def engine():
    return TinyEngine()


@pytest.fixture(scope="module")
def amortizer(engine):
    """ "The state persists": a poor predictor, so guesses are often wrong and roll back. Its ε
    is unbounded, so the rerank never certifies a shortlist (it refines: exact)."""
    d = engine.config.d
    zero = np.zeros((2 * d, d), np.float32)
    return Amortizer(zero, np.zeros(d, np.float32), engine.weights.tok_embd,
                     {"eps_max": float("inf")})  # fmt: skip


@pytest.fixture(scope="module")
def dense(engine):
    return {r.id: engine.decode(r, plan="dense").tokens for r in requests()}


@pytest.mark.parametrize(
    "options",
    [
        DecodeOptions(plan="sparse"),
        DecodeOptions(plan="auto"),
        DecodeOptions(plan="forced"),
        DecodeOptions(plan="full"),
        DecodeOptions(plan="amortized", tau=0.0),
        DecodeOptions(plan="rerank"),
        DecodeOptions(plan="router", router="lints"),
        DecodeOptions(plan="auto", recalibrate="cpu"),
    ],
    ids=lambda o: o.plan + ("-recalibrate" if o.recalibrate else ""),
)
def test_every_plan_decodes_the_dense_tokens(engine, amortizer, dense, options):
    session = Session(engine, amortizer=amortizer)
    for req in requests():
        streamed = []
        got = session.decode(req, options, on_step=streamed.append)
        assert got.tokens == dense[req.id], (options.plan, req.id)
        assert [s.token for s in streamed] == got.tokens  # only verified steps are streamed


def test_amortized_guesses_roll_back_and_lossy_keeps_them(engine, amortizer, dense):
    session = Session(engine, amortizer=amortizer)
    back = sum(session.decode(r, DecodeOptions(plan="amortized")).rollbacks for r in requests())
    assert back > 0
    lossy = DecodeOptions(plan="amortized", lossy=True)
    assert any(session.decode(r, lossy).tokens != dense[r.id] for r in requests())


def test_the_state_asks_for_the_body_only_where_a_step_needs_it(engine, amortizer):
    req = requests(1, max_tokens=12)[0]
    prompt, constraint = engine.prompt_ids(req), engine.constraint(req)
    state = DecodeState(engine, req, prompt, constraint, FixedPolicy("ForcedToken", engine.rule),
                        DecodeOptions(plan="forced"), amortizer)  # fmt: skip
    runs = []
    while (run := state.next_run()) is not None:
        assert isinstance(run, BodyRun) and state.next_run() is run  # asked until advanced
        assert run.start == run.cache.length  # the positions follow what the cache holds
        runs.append(list(run.ids))
        state.advance(run_body(engine.body, run), 1e-3)
    assert runs[0] == prompt  # the prefill
    # a forced token (every third step here) is not run alone: it joins the next step's run
    assert any(len(r) == 2 for r in runs[1:]) and state.done
    # every token but the pending tail (the last step's, and forced ones before it) ran once
    assert sum(len(r) for r in runs[1:]) == len(state.tokens) - len(state.pending) > 0
    with pytest.raises(RuntimeError, match="advance"):
        state.advance(np.zeros((1, engine.config.d), np.float32), 0.0)


class ToyHeadKernel(DenseHeadKernel):
    """The toy plan's kernel: DenseHead's scoring under its own name."""

    name = "ToyHead"

    def score(self, state, legal, guess):
        token, margin, _ = super().score(state, legal, guess)
        return token, margin, self.name

    def cost(self, probe):
        base = super().cost(probe)
        return None if base is None else base * 0.5  # the cheapest plan, so routers pick it


#: The one registry entry of the toy plan, at position 0: every arm index moves by one.
TOY = PlanSpec("ToyHead", True, get_plan("DenseHead").tree, "a toy", routed=True, choice="toy")
TOY_PLANS = (TOY, *PLANS)
TOY_KERNELS = {"ToyHead": ToyHeadKernel(), **KERNELS}


def test_a_toy_plan_at_position_0_is_run_routed_and_recorded(engine, amortizer, dense):
    req = requests(1)[0]
    prompt = engine.prompt_ids(req)
    opts = DecodeOptions(plan="dense")  # the options' plan is not read: the policy chooses

    def run(policy):
        state = DecodeState(engine, req, prompt, engine.constraint(req), policy, opts, amortizer,
                            plans=TOY_PLANS, kernels=TOY_KERNELS)  # fmt: skip
        return decode(state, engine.body)

    toy = run(FixedPolicy("ToyHead", engine.rule, TOY_PLANS))
    assert toy.tokens == dense[req.id]
    assert {s.plan for s in toy.steps} == {"ToyHead"}  # ForcedToken's fallback too: it applies
    router = RouterPolicy("linucb", routed_plans(TOY_PLANS))
    assert router.arms[0] == "ToyHead"
    routed = run(router)
    assert routed.tokens == dense[req.id] and router.log
    rows = collect_request(engine, req, amortizer, dense[req.id], kernels=TOY_KERNELS)
    costs = [r["costs"] for r in rows if r["k"] > 1]
    assert all(c["ToyHead"] > 0 for c in costs)


def test_the_toy_plans_trace_replays_through_every_router(engine, amortizer, dense):
    from app.router.experiment import LiveRun
    from app.router.real_trace import REAL_ROUTER_PARAMS, REAL_ROUTERS, real_stream

    steps = []
    for req in requests():
        steps += collect_request(engine, req, amortizer, dense[req.id], kernels=TOY_KERNELS)
    trace = {"meta": {"vocab": engine.config.vocab}, "steps": steps}
    stream = real_stream(trace, 0, plans=TOY_PLANS)
    assert stream.plans[0] == "ToyHead" and stream.plans.index("DenseHead") == 1
    from app.model import Scenario

    for name in REAL_ROUTERS:
        live = LiveRun(Scenario(horizon=stream.steps), name, stream=stream,
                       params=REAL_ROUTER_PARAMS[name])  # fmt: skip
        live.advance(stream.steps)
        assert live.done and live.summary()


def test_the_synthetic_routers_and_harness_look_arms_up_by_name():
    from app.harness import _experts_vs_thresholds, router_entry
    from app.model import Scenario
    from app.router.environment import make_stream
    from app.router.experiment import LEARNERS, LiveRun
    from app.router.regret import regret_report

    s = Scenario(horizon=400)
    stream = make_stream(s, 400, np.random.Generator(np.random.PCG64(1)), plans=TOY_PLANS)
    assert stream.plans == tuple(p.name for p in TOY_PLANS)
    assert stream.expected.shape[1] == len(TOY_PLANS)
    arms = {}
    for name in LEARNERS:
        live = LiveRun(s, name, stream=stream)
        live.advance(400)
        arms[name] = live.arms
        router = live.router
        if hasattr(router, "refine_arm"):  # the margin rule plays its plans by name
            assert stream.plans[router.refine_arm] == "SparseHead"
            assert stream.plans[router.amortized_arm] == "AmortizedHead"
    taus = live.router.taus_ if hasattr(live.router, "taus_") else np.linspace(0, 1, 11)
    out = _experts_vs_thresholds(stream, arms, taus)
    assert np.isfinite(out["best_threshold_loss"])
    entry = router_entry(regret_report(stream.expected, arms["linucb"]), stream.plans)
    assert set(entry["shares"]) == set(stream.plans)


def test_a_session_owns_the_mutable_state(engine):
    session = Session(engine)
    assert session.router("lints") is session.router("lints")  # warm across requests
    assert not hasattr(engine, "routers") and not hasattr(engine, "amortizer")
    with pytest.raises(ValueError, match="'router' parameter"):
        session.router("nope")
    with pytest.raises(ValueError, match="'options' parameter"):
        session.decode(requests(1)[0], {"plan": "dense"})
    frozen = dataclasses.replace(DecodeOptions(plan="amortized"), tau=1.0)
    assert frozen.tau == 1.0
