"""How to decode: :class:`DecodeOptions`, frozen and validated once, built alike by the CLI
(``llmqp decode``), the HTTP endpoint and Python callers.

Every option's constraint — its check and the plans it applies to — is declared once, in
:data:`PARAMETER_CONSTRAINTS` (scikit-learn's ``_parameter_constraints`` is the model). An option
given a value other than its default on a plan that ignores it is an error, naming the
parameter (``--tau`` on ``--plan rerank`` is refused, not ignored).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields

from ..model.registry import PLANS
from ..model.validate import check_choice, check_float, check_int
from ..router.registry import REAL_ROUTERS
from .amortized import DEFAULT_RERANK_R
from .drafts import MAX_DRAFT
from .plans import AMORTIZED_CHOICES, PLAN_CHOICES

__all__ = ["DecodeOptions", "Param", "PARAMETER_CONSTRAINTS", "RECALIBRATE_PRESETS"]

#: ``recalibrate``: the hardware presets K* may start from.
RECALIBRATE_PRESETS = ("cpu", "h100", "h200", "a100")


def _check_bool(name, value):
    if not isinstance(value, bool):
        raise ValueError(f"The '{name}' parameter must be True or False. Got {value!r} instead.")
    return value


def _check_costs(name, value):
    if not isinstance(value, Mapping):
        raise ValueError(
            f"The '{name}' parameter must be a mapping {{(request id, step): {{plan: seconds}}}} "
            f"(llmqp traces collect). Got {type(value).__name__} instead."
        )
    return value


@dataclass(frozen=True)
class Param:
    """One option's constraint: ``check(name, value) -> value`` for a non-default value,
    ``plans`` the plans it applies to (None: all), ``required_by`` the plans that need it."""

    check: Callable
    plans: tuple[str, ...] | None = None
    required_by: tuple[str, ...] = ()


#: The plans that refine below a margin τ (the registry's ``refines``) take ``tau`` and ``lossy``.
_REFINING = tuple(p.choice for p in PLANS if p.refines and p.choice) + ("router",)

#: Every option of :class:`DecodeOptions`, declared once.
PARAMETER_CONSTRAINTS: dict[str, Param] = {
    "plan": Param(lambda n, v: check_choice(n, v, PLAN_CHOICES)),
    "router": Param(lambda n, v: check_choice(n, v, REAL_ROUTERS), plans=("router",)),
    "tau": Param(
        lambda n, v: check_float(n, v, 0.0, 1e6, hi_open=True), plans=("amortized", "router")
    ),  # fmt: skip
    "lossy": Param(_check_bool, plans=("amortized", "router")),
    "rerank_r": Param(lambda n, v: check_int(n, v, 1, 1 << 20), plans=("rerank", "router")),
    "oracle": Param(_check_costs, plans=("oracle",), required_by=("oracle",)),
    "recalibrate": Param(lambda n, v: check_choice(n, v, RECALIBRATE_PRESETS), plans=("auto",)),
    "draft": Param(lambda n, v: check_int(n, v, 1, MAX_DRAFT), plans=("lookup",)),
}


@dataclass(frozen=True)
class DecodeOptions:
    """How to decode one request (see the module doc; plans in ``app.engine.plans``).

    ``plan`` a ``llmqp decode --plan`` name; ``router`` the learned router of ``plan="router"``
    (default linucb); ``tau`` the amortized plans' acceptance margin in logits (default 0);
    ``lossy`` trust accepted amortized tokens without verification; ``rerank_r`` the rerank's
    shortlist length (default 8); ``oracle`` the per-step costs ``{(request id, index): {plan:
    seconds}}`` of ``plan="oracle"``; ``recalibrate`` a hardware preset: ``plan="auto"`` starts
    K* there and recalibrates it from measured head times; ``draft`` the prompt-lookup plan's
    draft length, 1 … ``MAX_DRAFT`` tokens (default: the calibrated rule, app.engine.drafts).
    """

    plan: str = "auto"
    router: str | None = None
    tau: float | None = None
    lossy: bool = False
    rerank_r: int | None = None
    oracle: Mapping | None = None
    recalibrate: str | None = None
    draft: int | None = None

    def __post_init__(self):
        defaults = {f.name: f.default for f in fields(self)}
        check_choice("plan", self.plan, PLAN_CHOICES)
        for name, param in PARAMETER_CONSTRAINTS.items():
            value = getattr(self, name)
            if name == "plan":
                continue
            if value is None:
                if self.plan in param.required_by:
                    raise ValueError(f"The '{name}' parameter is required by plan {self.plan!r}.")
                continue
            value = param.check(name, value)
            object.__setattr__(self, name, value)
            if value != defaults[name] and param.plans and self.plan not in param.plans:
                allowed = " or ".join(repr(p) for p in param.plans)
                raise ValueError(
                    f"The '{name}' parameter applies to plan {allowed}, not {self.plan!r}."
                )

    @property
    def router_name(self) -> str:
        return self.router or "linucb"

    @property
    def rerank_value(self) -> int:
        return self.rerank_r or DEFAULT_RERANK_R

    @property
    def needs_amortizer(self) -> bool:
        """Whether the plan cannot run without an amortizer (an amortized plan every step)."""
        return self.plan in AMORTIZED_CHOICES

    @property
    def plan_name(self) -> str | None:
        """The registry plan run at every step (None: chosen per step)."""
        return PLAN_CHOICES[self.plan]
