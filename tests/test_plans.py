"""Plan IR: expansion, annotation, the rewrite rule, EXPLAIN, and the Scenario boundary."""

import json

import pytest

from app.model import (
    EXACT_PLANS,
    PLAN_NAMES,
    SCENARIO_LIMITS,
    Scenario,
    amortization_curves,
    annotate,
    choose,
    expand,
    explain_dict,
    explain_text,
    plan_costs,
)


def test_expansion_lists_every_physical_plan():
    plans = expand(Scenario())
    assert tuple(p.name for p in plans) == PLAN_NAMES
    exact = {"DenseHead", "SparseHead", "FullRecompute", "ForcedToken", "PromptLookup"}
    assert {p.name for p in plans if p.exact} == exact == EXACT_PLANS


def test_annotation_sums_children_and_weights_refine():
    s = Scenario()
    by_name = {p.name: p for p in plan_costs(s)}
    amortized = by_name["AmortizedHead"]
    refine = amortized.root.children[-1]
    assert refine.op == "Refine" and 0 < refine.probability < 1
    assert amortized.refine_prob == pytest.approx(refine.probability)
    child_sum = sum(float(c.cost.seconds) for c in amortized.root.children)
    assert amortized.latency_s == pytest.approx(child_sum)
    sparse = by_name["SparseHead"]
    # The refine branch runs the SparseHead plan's work with probability p.
    assert float(refine.cost.seconds) == pytest.approx(refine.probability * sparse.latency_s)
    assert all(0 < p.utilisation <= 1 for p in by_name.values())


def test_rewrite_rule_respects_error_budget_and_safe_tau():
    safe = Scenario(tau=0.2, eps=0.1)  # τ = 2ε: amortized is exact
    assert choose(plan_costs(safe)).name == "AmortizedHead"
    unsafe = Scenario(tau=0.1, eps=0.1)
    assert choose(plan_costs(unsafe)).name == "SparseHead"
    assert choose(plan_costs(unsafe), error_budget=1.0).name == "AmortizedRerank"
    # The paper's head rule: sparse when it is cheaper than dense, else dense.
    free_text = Scenario(k=128_000, tau=0.0)
    heads = [p for p in plan_costs(free_text) if p.name in ("DenseHead", "SparseHead")]
    assert choose(heads).name == "DenseHead"


def test_explain_text_and_json():
    s = Scenario(k=100, hardware="a100")
    text = explain_text(s)
    assert "DecodeStep(d=4096, |V|=128256, K=100" in text and "a100" in text
    for name in PLAN_NAMES:
        assert name in text
    chosen = [line for line in text.splitlines() if line.startswith("* ")]
    assert len(chosen) == 1
    d = json.loads(json.dumps(explain_dict(s)))
    assert chosen[0].split()[1] == d["chosen"]
    assert [p["name"] for p in d["plans"]] == list(PLAN_NAMES)
    assert d["plans"][0]["tree"]["children"][0]["op"] == "DecodeStep"


def test_scenario_bounds_and_errors():
    for name, (lo, hi) in SCENARIO_LIMITS.items():
        base = {"k": 1, "vocab": max(2, Scenario().vocab)} if name == "vocab" else {}
        Scenario(**{**base, name: lo})
        Scenario(**{**base, name: hi})
        below = lo - 1 if isinstance(lo, int) else lo - 1e-3
        with pytest.raises(ValueError, match=f"'{name}' parameter"):
            Scenario(**{**base, name: below})
    with pytest.raises(ValueError, match=r"'k' parameter must be an integer in \[1, 1000\]"):
        Scenario(vocab=1000, k=1001)
    with pytest.raises(ValueError, match="'lam' parameter"):
        Scenario(lam=1.5)
    with pytest.raises(ValueError, match="'tau' parameter"):
        Scenario(tau=float("nan"))
    with pytest.raises(ValueError, match="Unknown Scenario fields"):
        Scenario().replace(width=3)
    with pytest.raises(ValueError, match="'model' parameter"):
        Scenario.from_model("gpt5")
    llama = Scenario.from_model("llama-3-8b")
    assert (llama.ffn, llama.kv_dim, llama.mlp_matrices) == (14_336, 1024, 3)
    assert Scenario(d=256).kv_dim == 64  # shapes scale with d


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: expand({"d": 4096}), r"The 's' parameter must be a Scenario. Got \{'d': 4096\}"),
        (lambda: plan_costs(None), r"The 's' parameter must be a Scenario. Got None instead."),
        (lambda: plan_costs({"k": 1}), r"The 's' parameter must be a Scenario."),  # (cached)
        (lambda: plan_costs(Scenario(), [None]), r"The 'plans' parameter must be a non-empty"),
        (lambda: annotate("DenseHead", Scenario()), r"The 'plan' parameter must be a Plan."),
        (lambda: explain_text("h100"), r"The 's' parameter must be a Scenario."),
        (lambda: amortization_curves(None), r"The 's' parameter must be a Scenario."),
        (lambda: choose(plan_costs(Scenario()), -0.1), r"'error_budget' .* \[0, 1\]. Got -0.1"),
        (lambda: choose(plan_costs(Scenario()), float("nan")), r"'error_budget' parameter"),
        (lambda: choose([]), r"The 'plans' parameter must hold at least one Plan"),
        (lambda: choose(["DenseHead"]), r"The 'plans' parameter must be a Plan"),
    ],
)
def test_plan_entry_points_validate(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_plan_costs_cached_per_scenario():
    """A K move reads the plans twice: the second read is the first's (immutable) result."""
    s = Scenario(k=321)
    assert plan_costs(s) is plan_costs(Scenario(k=321))
    assert plan_costs(s) is not plan_costs(s.replace(k=322))
    assert plan_costs(s) == tuple(annotate(p, s) for p in expand(s))


def test_choose_says_when_the_budget_admits_no_plan():
    s = Scenario(tau=0.0)
    inexact = [p for p in plan_costs(s) if p.error_rate > 0]
    with pytest.raises(ValueError, match=r"'error_budget' parameter 0 admits no plan"):
        choose(inexact)
