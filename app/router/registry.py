"""The one list of routers: name, class, fixed and scenario-derived parameters, label, colour.

Everything that names a router reads it from here: :func:`~app.router.simulate.make_router`
(class and fixed arguments), :func:`~app.router.experiment.router_params` (arguments derived
from a scenario), the harness (which routers it runs, which face drift), the app's state and
widgets (choices, legend labels, line colours). Adding a router is one entry below.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from app.model.validate import check_choice

from .baselines import FixedPlan, Oracle, ThresholdRouter
from .experts import ThresholdExperts
from .linucb import LinUCB
from .nonstationary import RestartLinUCB, SlidingWindowLinUCB
from .thompson import LinTS

__all__ = ["RouterSpec", "REGISTRY", "LEARNERS", "DRIFT_ROUTERS", "REAL_ROUTERS", "spec"]


def _window(s) -> int:
    return max(s.horizon // 8, 100)


@dataclass(frozen=True)
class RouterSpec:
    """One router.

    ``fixed``: keyword arguments every instance gets. ``params(s, alpha)``: arguments derived
    from a :class:`~app.model.Scenario` and the exploration scale α (``None``: the router is not
    built from a scenario, e.g. the oracle reads a loss table). ``learner``: a user can pick it
    (the app, the harness's comparison). ``drift``: the harness also runs it on drifting costs.
    ``real``: its arguments on the real decode loop and the real trace (losses are measured
    seconds / a dense step, about 0.3-2, noise-free: α = 0.1 under-explores); ``None``: it needs
    the synthetic environment's layout (a current margin, its arm order) and does not run there.
    """

    name: str
    cls: type
    label: str
    fixed: dict = field(default_factory=dict)
    params: Callable | None = None
    learner: bool = False
    drift: bool = False
    color: str = "#000000"
    real: dict | None = None


_SPECS = (
    RouterSpec(
        "linucb",
        LinUCB,
        "LinUCB",
        params=lambda s, alpha: {"alpha": alpha},
        learner=True,
        drift=True,
        color="#0072B2",
        real={"alpha": 0.5},
    ),
    RouterSpec(
        "lints",
        LinTS,
        "linear Thompson",
        params=lambda s, alpha: {"v": alpha},
        learner=True,
        color="#009E73",
        real={"v": 0.1},
    ),
    RouterSpec(
        "sw-linucb",
        SlidingWindowLinUCB,
        "sliding-window LinUCB",
        params=lambda s, alpha: {"alpha": alpha, "window": _window(s)},
        learner=True,
        drift=True,
        color="#56B4E9",
        real={"alpha": 0.5, "window": 400},
    ),
    RouterSpec(
        "restart-linucb",
        RestartLinUCB,
        "restart LinUCB",
        params=lambda s, alpha: {"alpha": alpha, "period": _window(s)},
        learner=True,
        drift=True,
        color="#CC79A7",
        real={"alpha": 0.5, "period": 400},
    ),
    RouterSpec(
        "experts-hedge",
        ThresholdExperts,
        "experts over τ (Hedge, full information)",
        fixed={"feedback": "full"},
        params=lambda s, alpha: {"horizon": s.horizon},
        learner=True,
        color="#E69F00",
    ),
    RouterSpec(
        "experts-exp4",
        ThresholdExperts,
        "experts over τ (Exp4, bandit feedback)",
        fixed={"feedback": "bandit"},
        params=lambda s, alpha: {"horizon": s.horizon},
        learner=True,
        color="#D55E00",
    ),
    RouterSpec(
        "threshold",
        ThresholdRouter,
        "threshold m < τ",
        params=lambda s, alpha: {"tau": s.tau},
        learner=True,
        color="#000000",
    ),
    RouterSpec("fixed", FixedPlan, "fixed plan"),
    RouterSpec("oracle", Oracle, "per-step oracle"),
)

#: name -> :class:`RouterSpec`, in display order.
REGISTRY: dict[str, RouterSpec] = {s.name: s for s in _SPECS}
#: Routers a user can pick; the oracle and fixed plans are computed from the losses directly.
LEARNERS: tuple[str, ...] = tuple(n for n, s in REGISTRY.items() if s.learner)
#: Routers the harness also runs on drifting costs.
DRIFT_ROUTERS: tuple[str, ...] = tuple(n for n, s in REGISTRY.items() if s.drift)
#: Routers that run on the real decode loop and replay the real trace.
REAL_ROUTERS: tuple[str, ...] = tuple(n for n, s in REGISTRY.items() if s.real is not None)


def spec(name: str) -> RouterSpec:
    """The entry called ``name``; ``ValueError`` naming the options otherwise."""
    return REGISTRY[check_choice("name", name, REGISTRY)]
