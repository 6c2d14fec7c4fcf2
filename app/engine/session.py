"""A decoding session: the mutable side of serving one loaded :class:`~app.engine.engine.Engine`.

The engine is the immutable artifact (weights, tokenizer, body); a :class:`Session` owns what
changes as requests are decoded — the ``auto`` rule (recalibrated or not), the warm routers and
the amortizer — and decodes requests under :class:`~app.engine.options.DecodeOptions`. The CLI,
the HTTP service and Python callers each hold one session per engine.
"""

from __future__ import annotations

import time

from .amortized import Amortizer, default_amortizer_path
from .fit import default_amortizer
from .loop import DecodeState, decode
from .options import DecodeOptions
from .recalibrate import OnlineRule, RecalibratingPolicy
from .requests import DecodeRequest
from .results import DecodeResult
from .routing import ROUTER_ARMS, ROUTER_CHOICES, FixedPolicy, OraclePolicy, RouterPolicy

__all__ = ["Session"]


class Session:
    """Decode requests with ``engine``; see the module doc.

    ``amortizer``: an :class:`~app.engine.amortized.Amortizer` or a file written by ``llmqp
    amortizer fit`` (default: the cached default fit, fitted once on first use).
    ``progress(line)`` reports that first fit. ``rule``: the ``auto`` rule (default the
    engine's cost rule).
    """

    def __init__(self, engine, amortizer=None, progress=None, rule=None):
        self.engine = engine
        self.rule = rule if rule is not None else engine.rule
        self.routers: dict[str, RouterPolicy] = {}
        self.online_rules: dict[str, OnlineRule] = {}
        self.progress = progress
        self._amortizer: Amortizer | None = None
        if amortizer is not None:
            self.set_amortizer(amortizer)

    # -- what the service reads off its engine ---------------------------------------------
    @property
    def tokenizer(self):
        return self.engine.tokenizer

    @property
    def context(self) -> int:
        return self.engine.context

    def info(self) -> dict:
        return self.engine.info()

    def prompt_ids(self, req: DecodeRequest) -> list[int]:
        return self.engine.prompt_ids(req)

    # -- the state it owns -------------------------------------------------------------------
    def set_amortizer(self, amortizer) -> Amortizer:
        """Use ``amortizer`` (an :class:`Amortizer` or a fit's file) for the amortized plans."""
        e = self.engine
        if not isinstance(amortizer, Amortizer):
            amortizer = Amortizer.load(amortizer, e.weights.tok_embd)
        if amortizer.d != e.config.d:
            raise ValueError(f"amortizer: fitted for d = {amortizer.d}, the model has {e.config.d}")
        self._amortizer = amortizer
        return amortizer

    def amortizer(self, required: bool = True) -> Amortizer | None:
        """The session's amortizer: the one set, else the default fit — fitted and cached now
        if missing and ``required``; with ``required=False`` None where no fit exists yet (the
        router then runs its amortized arms exact)."""
        if self._amortizer is None:
            path = default_amortizer_path()
            if required:
                path = default_amortizer(self.engine, self.progress)
            if path.is_file():
                self.set_amortizer(path)
        return self._amortizer

    def router(self, name: str = "linucb") -> RouterPolicy:
        """The session's warm router ``name`` (created on first use, kept across requests)."""
        if name not in ROUTER_CHOICES:
            raise ValueError(
                f"The 'router' parameter must be one of {', '.join(ROUTER_CHOICES)}. Got {name!r}."
            )
        if name not in self.routers:
            self.routers[name] = RouterPolicy(name, ROUTER_ARMS)
        return self.routers[name]

    def load_router(self, name: str, path) -> RouterPolicy:
        """Replace the warm router ``name`` by the state saved at ``path``."""
        self.routers[name] = RouterPolicy.load(path, name, ROUTER_ARMS)
        return self.routers[name]

    def online_rule(self, preset: str) -> OnlineRule:
        """The ``auto`` rule recalibrated from ``preset`` (one per preset, kept across requests)."""
        if preset not in self.online_rules:
            c = self.engine.config
            self.online_rules[preset] = OnlineRule(c.d, c.vocab, preset)
        return self.online_rules[preset]

    def policy(self, options: DecodeOptions):
        """The :class:`~app.engine.routing.Policy` of ``options`` and the amortizer it needs."""
        plan = options.plan
        if options.needs_amortizer:
            return FixedPolicy(options.plan_name, self.rule), self.amortizer()
        if plan == "router":  # without a fit, its amortized arms run exact (as SparseHead)
            return self.router(options.router_name), self.amortizer(required=False)
        if plan == "oracle":
            return OraclePolicy(options.oracle, self.rule), self._amortizer
        rule = self.online_rule(options.recalibrate) if options.recalibrate else self.rule
        if plan == "auto" and hasattr(rule, "observe"):
            return RecalibratingPolicy(rule, self.engine.head), None
        return FixedPolicy(options.plan_name, rule), None

    # -- decoding --------------------------------------------------------------------------
    def decode(
        self, req: DecodeRequest, options: DecodeOptions | None = None, on_step=None,
        executor=None, should_stop=None,
    ) -> DecodeResult:  # fmt: skip
        """Greedy constrained decoding of ``req`` under ``options`` (default: ``auto``).

        ``on_step(step)`` is called after every token, once the token is verified (amortized
        guesses are checked before they are passed on). ``executor``, if given, scores the exact
        steps: ``run(h, legal, telemetry) -> (token, margin, plan_name)`` for ``h`` (d,)
        float32, ``legal`` (K,) ascending int64 and ``telemetry`` ``{"k", "position",
        "last_margin"}`` — a compiled step (app.compiler) that routes and scores in one call.
        ``should_stop()`` (None or a reason) is asked at every step boundary and between prefill
        chunks; a reason ends the decode there with the verified tokens, ``stop`` = the reason.
        """
        options = options if options is not None else DecodeOptions()
        if not isinstance(options, DecodeOptions):
            raise ValueError(f"The 'options' parameter must be DecodeOptions. Got {options!r}.")
        e = self.engine
        policy, amortizer = self.policy(options)
        prompt = e.prompt_ids(req)
        constraint = e.constraint(req)
        state = DecodeState(e, req, prompt, constraint, policy, options, amortizer, on_step,
                            executor)  # fmt: skip
        decode(state, e.body, should_stop)
        return result_of(e, req, state, time.perf_counter() - state.start)


def result_of(engine, req, state: DecodeState, seconds: float) -> DecodeResult:
    """The :class:`DecodeResult` of a finished decode state."""
    tokens = state.tokens
    text_ids = tokens[:-1] if state.stop == "eos" else tokens
    return DecodeResult(
        id=req.id,
        text=engine.tokenizer.decode(text_ids),
        prompt_tokens=state.prompt,
        tokens=tokens,
        stop=state.stop,
        steps=state.steps,
        seconds=seconds,
        prefill_s=state.prefill_s,
        model=engine.name,
        device=engine.device,
        versions=engine.versions,
        rollbacks=state.rollbacks,
        lost_s=state.lost_s,
        policy=state.policy,
        drafts=state.drafter.report() if state.drafter is not None else None,
    )
