"""Plan IR: the logical ``DecodeStep`` and its physical plans, like a database planner.

Compiler side only: :func:`expand` lists the physical plans of a step, :func:`annotate` prices
each operator with the roofline model, :func:`choose` applies the rewrite rule. The router and
the app read the resulting plain objects; nothing here runs a kernel.

Physical plans (arm order used by the routers):

0. ``DenseHead``       exact decoder state, logits over all of V, mask, argmax
1. ``SparseHead``      exact decoder state, score only the K legal rows, argmax
2. ``AmortizedHead``   amortized state + sparse scoring; refine (exact state + sparse) if m < τ
3. ``AmortizedRerank`` amortized state + sparse scoring, then rerank the top-r with an exactly
                       recomputed last layer; a share ``rerank_factor`` of amortized errors remain
4. ``FullRecompute``   recompute the state over the whole context without the KV cache, sparse
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .amortization import decision_error_rate, refine_probability
from .costs import Cost, dense_head_cost, sparse_head_cost
from .scenario import Scenario
from .transformer import amortized_update_cost, decode_step_cost, prefill_cost
from .validate import check_float, check_instance

__all__ = ["PLAN_NAMES", "Operator", "Plan", "expand", "annotate", "choose", "plan_costs"]

PLAN_NAMES = ("DenseHead", "SparseHead", "AmortizedHead", "AmortizedRerank", "FullRecompute")
EXACT_PLANS = frozenset({"DenseHead", "SparseHead", "FullRecompute"})


@dataclass(frozen=True)
class Operator:
    """One physical operator; ``cost`` is filled in by :func:`annotate`.

    ``probability`` is how often the operator runs per step (below 1 only under ``Refine``).
    """

    op: str
    detail: str = ""
    children: tuple[Operator, ...] = ()
    probability: float = 1.0
    cost: Cost | None = None


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


def _exact_state(s: Scenario) -> Operator:
    return Operator("DecodeStep", f"exact, KV cache of {s.context} positions")


def _sparse(s: Scenario) -> Operator:
    return Operator("SparseScore", f"gather {s.k} rows + GEMV + argmax")


def expand(s: Scenario) -> tuple[Plan, ...]:
    """Plan expansion pass: ``DecodeStep → {DenseHead, SparseHead, AmortizedHead, …}``."""
    check_instance("s", s, Scenario)
    dense = Operator("DenseScore", f"GEMV over |V|={s.vocab} + mask + argmax")
    refine = Operator("Refine", f"if margin < τ={s.tau:g}", (_exact_state(s), _sparse(s)))
    rerank = Operator("Rerank", f"last layer exact + top-{s.rerank_r} rescore")
    full = Operator("Prefill", f"recompute {s.context + 1} positions, no KV cache")
    amortized = Operator("AmortizedUpdate", "h = h_stable + Δh (one d×d map)")
    trees = {
        "DenseHead": (_exact_state(s), dense),
        "SparseHead": (_exact_state(s), _sparse(s)),
        "AmortizedHead": (amortized, _sparse(s), refine),
        "AmortizedRerank": (amortized, _sparse(s), rerank),
        "FullRecompute": (full, _sparse(s)),
    }
    return tuple(
        Plan(name, Operator(name, children=trees[name]), exact=name in EXACT_PLANS)
        for name in PLAN_NAMES
    )


def _leaf_cost(op: Operator, s: Scenario) -> Cost:
    args = (s.batch, s.dtype, s.hw)
    if op.op == "DecodeStep":
        return decode_step_cost(s.shape, s.context, *args)
    if op.op == "DenseScore":
        return dense_head_cost(s.d, s.vocab, *args)
    if op.op == "SparseScore":
        return sparse_head_cost(s.d, s.vocab, s.k, *args)
    if op.op == "AmortizedUpdate":
        return amortized_update_cost(s.shape, *args)
    if op.op == "Prefill":
        return prefill_cost(s.shape, s.context + 1, 0, *args)
    if op.op == "Rerank":
        one_layer = dataclasses.replace(s.shape, layers=1)
        r = min(s.rerank_r, s.k)
        return decode_step_cost(one_layer, s.context, *args) + sparse_head_cost(
            s.d, s.vocab, r, *args
        )
    raise ValueError(f"Unknown operator {op.op!r}.")


def _annotate_op(op: Operator, s: Scenario, probability: float) -> Operator:
    if op.op == "Refine":
        probability = probability * float(refine_probability(s.tau, s.margins))
    if op.children:
        kids = tuple(_annotate_op(c, s, probability) for c in op.children)
        total = kids[0].cost
        for kid in kids[1:]:
            total = total + kid.cost
    else:
        kids, total = (), _leaf_cost(op, s).scale(probability)
    return Operator(op.op, op.detail, kids, probability, total)


def annotate(plan: Plan, s: Scenario) -> Plan:
    """Cost annotation: expected latency, bytes, FLOPs, refine probability, decision error rate
    and utilisation (the busy share of the binding resource: ``max(compute, memory) / time``)."""
    check_instance("plan", plan, Plan)
    check_instance("s", s, Scenario)
    root = _annotate_op(plan.root, s, 1.0)
    c = root.cost
    if plan.name == "AmortizedHead":
        refine_prob = float(refine_probability(s.tau, s.margins))
        error = float(decision_error_rate(s.tau, s.eps, s.margins))
    elif plan.name == "AmortizedRerank":
        refine_prob = 0.0
        error = s.rerank_factor * float(decision_error_rate(0.0, s.eps, s.margins))
    else:
        refine_prob, error = 0.0, 0.0
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


def plan_costs(s: Scenario) -> tuple[Plan, ...]:
    """Expand and annotate every physical plan of the scenario's step."""
    return tuple(annotate(p, s) for p in expand(s))


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
