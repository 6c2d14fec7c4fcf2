"""Plan IR: the logical ``DecodeStep`` and its physical plans, like a database planner.

Compiler side only: :func:`expand` lists the physical plans of a step, :func:`annotate` prices
each operator with the roofline model, :func:`choose` applies the rewrite rule. The router and
the app read the resulting plain objects; nothing here runs a kernel. The plans themselves —
names, trees, cost recipes, error shares, fallbacks — are the registry's (:mod:`.registry`,
arm order there); this module only reads them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from .amortization import decision_error_rate, refine_probability
from .registry import (
    EXACT_PLANS,
    PLAN_NAMES,
    PLANS,
    Operator,
    Setting,
    Step,
    check_plans,
    effective_plan,
    get_plan,
    plan_tree,
    price_tree,
)
from .scenario import Scenario
from .validate import check_float, check_instance

__all__ = [
    "PLAN_NAMES",
    "EXACT_PLANS",
    "Operator",
    "Plan",
    "expand",
    "annotate",
    "choose",
    "plan_costs",
]


@dataclass(frozen=True)
class Plan:
    """A physical plan for one ``DecodeStep``: a root operator plus its estimated properties."""

    name: str
    root: Operator
    latency_s: float = 0.0
    bytes: float = 0.0
    flops: float = 0.0
    refine_prob: float = 0.0
    error_rate: float = 0.0
    utilisation: float = 0.0
    regime: str = ""
    exact: bool = field(default=False)


def expand(s: Scenario, plans=PLANS) -> tuple[Plan, ...]:
    """Plan expansion pass: ``DecodeStep → {DenseHead, SparseHead, AmortizedHead, …}``, one
    :class:`Plan` per registry entry of ``plans`` (a plan that does not apply to the step holds
    a ``Fallback`` node over the plan that runs instead)."""
    check_instance("s", s, Scenario)
    plans = check_plans(plans)
    c, x = Setting.of(s), Step.of(s)
    return tuple(Plan(p.name, plan_tree(p, c, x, plans), exact=p.exact) for p in plans)


def annotate(plan: Plan, s: Scenario, plans=PLANS) -> Plan:
    """Cost annotation: expected latency, bytes, FLOPs, refine probability, decision error rate
    and utilisation (the busy share of the binding resource: ``max(compute, memory) / time``).

    The plan's spec in ``plans`` (or its fallback's, where it does not apply) gives the error:
    ``error_share · decision error rate`` at τ when the plan refines, at 0 otherwise."""
    check_instance("plan", plan, Plan)
    check_instance("s", s, Scenario)
    plans = check_plans(plans)
    spec = effective_plan(get_plan(plan.name, plans), s.k, plans)
    p_refine = float(refine_probability(s.tau, s.margins))
    root = price_tree(plan.root, Setting.of(s), Step.of(s), p_refine)
    c = root.cost
    refine_prob = p_refine if spec.refines else 0.0
    share = float(spec.error_share(s))
    tau = s.tau if spec.refines else 0.0
    error = share * float(decision_error_rate(tau, s.eps, s.margins)) if share > 0 else 0.0
    return Plan(
        plan.name,
        root,
        latency_s=float(c.seconds),
        bytes=float(c.bytes),
        flops=float(c.flops),
        refine_prob=refine_prob,
        error_rate=error,
        utilisation=float(max(c.compute_s, c.memory_s) / c.seconds),
        regime=str(c.regime),
        exact=plan.exact,
    )


def plan_costs(s: Scenario, plans=PLANS) -> tuple[Plan, ...]:
    """Expand and annotate every physical plan of the scenario's step."""
    check_instance("s", s, Scenario)
    return _plan_costs(s, check_plans(plans))


@functools.lru_cache(maxsize=32)
def _plan_costs(s: Scenario, plans: tuple) -> tuple[Plan, ...]:
    # Cached (the arguments and the result are immutable): a K move in the app prices the
    # plans for Figure 1's readout and again for the EXPLAIN table.
    return tuple(annotate(p, s, plans) for p in expand(s, plans))


def choose(plans, error_budget: float = 0.0) -> Plan:
    """Rewrite rule: the fastest plan whose expected decision error is within the budget.

    With a zero budget only plans equivalent to exact decoding qualify — the exact ones, and the
    amortized one once τ reaches the certificate's safe τ. Ties go to the earlier plan.
    """
    error_budget = check_float("error_budget", error_budget, 0.0, 1.0)
    plans = tuple(plans)
    if not plans:
        raise ValueError("The 'plans' parameter must hold at least one Plan. Got none.")
    for p in plans:
        check_instance("plans", p, Plan)
    admissible = [p for p in plans if p.error_rate <= error_budget + 1e-15]
    if not admissible:
        lowest = min(p.error_rate for p in plans)
        raise ValueError(
            f"The 'error_budget' parameter {error_budget:g} admits no plan; the lowest expected "
            f"decision error among the plans given is {lowest:.3g}."
        )
    return min(admissible, key=lambda p: p.latency_s)
