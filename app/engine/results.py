"""The engine's typed records: a step's :class:`Telemetry` (what a policy sees before choosing),
the :class:`Step` it produced and a request's :class:`DecodeResult`."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Telemetry", "Step", "DecodeResult"]


@dataclass(frozen=True)
class Telemetry:
    """What the decode loop knows before step ``index`` of request ``request``.

    ``k`` legal tokens ``legal`` (K,) ascending int64 out of ``vocab``; ``forced_run`` the tokens
    the grammar forces from here (0 unless K = 1), ``last_forced_run`` the length of the last
    finished forced run; ``last_margin`` the last exact top-1 − top-2 (logits; None before the
    first); ``position`` the decode position (prompt + index); ``pending`` tokens not yet run
    through the body; ``accept`` the amortizer's recent acceptance (an EMA in [0, 1]);
    ``amortizer`` whether one is loaded; ``last_head`` (plan, k, seconds) of the last exact
    step's head, or None; ``batch`` the sequences sharing this step's body pass (1 alone);
    ``match`` the prompt-lookup n-gram match length here (0: none or not drafting), ``draft``
    the tokens the drafter would draft from here (0: none) and ``draft_accept`` its per-token
    acceptance estimate at that match length (app.engine.drafts).
    """

    request: str
    index: int
    k: int
    vocab: int
    legal: np.ndarray
    forced_run: int = 0
    last_forced_run: int = 0
    last_margin: float | None = None
    position: int = 0
    pending: int = 0
    accept: float = 0.5
    amortizer: bool = False
    last_head: tuple[str, int, float] | None = None
    batch: int = 1
    match: int = 0
    draft: int = 0
    draft_accept: float = 0.0


@dataclass(frozen=True)
class Step:
    """One generated token. ``margin`` is None where nothing was scored or K < 2. ``seconds``
    splits into ``mask_s`` (the grammar: legal set, forced run, consuming the token),
    ``body_s`` (the forward of ``body_tokens`` positions), ``head_s`` (scoring) and the rest
    (the policy's decision, bookkeeping)."""

    index: int
    token: int
    text: str
    plan: str
    k: int
    forced: bool
    margin: float | None
    seconds: float
    forced_run: int = 0
    body_tokens: int = 0
    mask_s: float = 0.0
    body_s: float = 0.0
    head_s: float = 0.0
    chosen: str = ""  # the plan the policy named ("" = ``plan``); an amortized one may refine
    refined: bool = False  # an amortized step whose predicted margin fell below τ
    exact_margin: float | None = None  # a verified amortized step's margin under the exact state
    rolled_back: int = 0  # tokens thrown away when this step's guess was wrong

    def to_json(self) -> dict:
        out = {
            "plan": self.plan,
            "k": self.k,
            "forced": self.forced,
            "margin": self.margin,
            "seconds": self.seconds,
        }
        if self.chosen and self.chosen != self.plan:
            out["chosen"] = self.chosen
        if self.rolled_back:
            out["rolled_back"] = self.rolled_back
        return out


@dataclass
class DecodeResult:
    """A decoded request: text, token ids, why it stopped, its steps and seconds (``seconds``
    from the prefill's start to the last step, ``prefill_s`` the prompt's forward)."""

    id: str
    text: str
    prompt_tokens: list[int]
    tokens: list[int]
    stop: str
    steps: list[Step]
    seconds: float
    prefill_s: float
    model: str
    device: str
    versions: dict = field(default_factory=dict)
    rollbacks: int = 0  # amortized guesses that were wrong and rolled back
    lost_s: float = 0.0  # the time those guesses cost
    policy: object = None  # the policy that chose the plans (a router keeps its log)
    drafts: dict | None = None  # prompt-lookup drafts: drafts, drafted, accepted, rejected, …

    @property
    def tokens_per_s(self) -> float:
        return len(self.tokens) / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "text": self.text,
            "prompt_tokens": self.prompt_tokens,
            "tokens": self.tokens,
            "stop": self.stop,
            "steps": [s.to_json() for s in self.steps],
            "tokens_per_s": self.tokens_per_s,
            "seconds": self.seconds,
            "prefill_seconds": self.prefill_s,
            "model": self.model,
            "device": self.device,
            "versions": self.versions,
        }
