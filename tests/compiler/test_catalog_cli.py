"""The plan catalog (numpy only) and ``llmqp lower``."""

from __future__ import annotations

import json

import pytest

from app.compiler.catalog import LADDER, build_catalog
from app.engine.rule import CostRule


@pytest.mark.parametrize("shape", [(64, 1000), (576, 49152), (32, 40), (4096, 128256)])
def test_buckets_end_at_k_star_and_price_below_dense(shape):
    cat = build_catalog(*shape)
    rule = CostRule(*shape, "cpu", "float32")
    assert cat.k_star == rule.k_star
    if cat.k_star:
        assert cat.buckets[-1] == cat.k_star
        assert cat.buckets[:-1] == tuple(b for b in LADDER if b < min(cat.k_star, cat.vocab))
    dense = cat.plans[cat.DENSE].seconds
    for p in cat.plans:
        assert p.index == cat.plans.index(p)
        if p.plan == "SparseHead":
            assert p.seconds <= dense
    for k in (1, 2, 17, cat.k_star, cat.k_star + 1, cat.vocab):
        if 1 <= k <= cat.vocab:
            plan = cat.plans[cat.rule_branch(k)]
            assert plan.plan == rule.select(k)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"d": 0, "vocab": 10}, "'d' parameter"),
        ({"d": 8, "vocab": 1}, "'vocab' parameter"),
        ({"d": 8, "vocab": 10, "hardware": "abacus"}, "hardware"),
        ({"d": 8, "vocab": 10, "context": 0}, "'context' parameter"),
    ],
)
def test_catalog_validates(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_catalog(**kwargs)


def test_lower_rejects_bad_arguments(capsys):
    from app.cli import main

    assert main(["lower", "--d", "64"]) == 2
    assert "--d and --vocab go together" in capsys.readouterr().err
    assert main(["lower", "--d", "64", "--vocab", "1000", "--emit", "xml"]) == 2
    assert "--emit must be one of summary, plans, stablehlo" in capsys.readouterr().err


def test_lower_emits_module_plans_summary_and_export(tmp_path, capsys):
    pytest.importorskip("jax")
    from app.cli import main
    from app.compiler.artifact import load

    args = ["lower", "--d", "64", "--vocab", "1000"]
    out, blob = tmp_path / "step.mlir", tmp_path / "step.jaxexport"
    assert main([*args, "--emit", "plans", "--out", str(out), "--export", str(blob)]) == 0
    plans = json.loads(capsys.readouterr().out)
    cat = build_catalog(64, 1000)
    assert [p["name"] for p in plans] == [p.name for p in cat.plans]
    text = out.read_text()
    assert text.count('"stablehlo.case"') == 1 and "llmqp.plans" in text
    assert load(blob.read_bytes()).mlir_module().count("stablehlo.case") == 1
    assert main([*args, "--emit", "summary"]) == 0
    summary = capsys.readouterr().out
    assert f"{len(cat.plans)} branches" in summary and "K* = 504" in summary
    assert main([*args, "--emit", "stablehlo"]) == 0
    assert capsys.readouterr().out.strip() == text.strip()


def test_arms_are_the_registry_plans_marked_compiled_in_order():
    """LinUCB's arms come from the registry (``PlanSpec.compiled``), not a list of their own: a
    plan inserted at position 0 moves no arm, and one marked compiled becomes an arm."""
    import dataclasses

    from app.compiler.catalog import ARMS, compiled_arms
    from app.model.registry import PLANS, PlanSpec, get_plan

    assert ARMS == tuple(p.name for p in PLANS if p.compiled)
    assert ARMS == ("DenseHead", "SparseHead", "AmortizedHead")
    toy = PlanSpec("ToyHead", True, get_plan("SparseHead").tree)
    assert compiled_arms((toy, *PLANS)) == ARMS
    marked = dataclasses.replace(toy, compiled=True)
    assert compiled_arms((marked, *PLANS)) == ("ToyHead", *ARMS)
    # arm_branch looks the arm up by name: SparseHead's position decides nothing else.
    cat = build_catalog(64, 1000)
    assert cat.plans[cat.arm_branch(ARMS.index("SparseHead"), 10)].plan == "SparseHead"
    assert cat.plans[cat.arm_branch(ARMS.index("AmortizedHead"), 10)].plan == "AmortizedHead"
    assert cat.plans[cat.arm_branch(ARMS.index("DenseHead"), 10)].plan == "DenseHead"


def test_every_compiled_arm_has_a_jax_kernel():
    pytest.importorskip("jax")
    from app.compiler.catalog import ARMS
    from app.compiler.plans_jax import KERNELS

    assert set(ARMS) <= set(KERNELS)
