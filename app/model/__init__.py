"""LLM-QP's models: hardware, roofline costs, crossover, amortization, plans, equivalence.

Pure numpy + standard library, so the very same code runs in CPython and in Pyodide.
"""

from .amortization import (
    MarginDistribution,
    decision_error_rate,
    decode_totals,
    error_given_margin,
    expected_step_cost,
    refine_probability,
    safe_tau,
)
from .costs import REGIMES, Cost, dense_head_cost, kernel_cost, select_cost, sparse_head_cost
from .crossover import Crossover, crossover_curve, find_crossover, k_grid
from .curves import amortization_curves
from .equivalence import (
    EquivalenceReport,
    certified,
    check_equivalence,
    dense_masked_argmax,
    dense_masked_sample,
    sparse_argmax,
    sparse_sample,
    top2_margin,
)
from .explain import explain, explain_dict, explain_text
from .hardware import DTYPE_BYTES, DTYPES, LAUNCHES, PRESETS, Hardware, get_hardware
from .plans import Plan, annotate, choose, expand, plan_costs
from .registry import (
    EXACT_PLANS,
    PLAN_NAMES,
    PLANS,
    TERMS,
    Operator,
    PlanSpec,
    Setting,
    Step,
    arm_index,
    check_plans,
    effective_plan,
    get_plan,
    plan_cost,
    plan_quality,
    plan_seconds,
    plan_table,
    plan_tree,
    price_tree,
    routed_plans,
)
from .scenario import SCENARIO_LIMITS, Scenario
from .transformer import (
    SHAPES,
    TransformerShape,
    amortized_update_cost,
    decode_step_cost,
    prefill_cost,
)

__all__ = [name for name in dir() if not name.startswith("_")]
