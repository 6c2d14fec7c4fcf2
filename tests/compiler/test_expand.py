"""The logical module, the expansion pass and the exported artifact."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("jax")

from app.compiler.artifact import load  # noqa: E402
from app.compiler.expand import ExpansionError, count_cases, expand  # noqa: E402
from app.compiler.lowering import PLACEHOLDER, lower_logical  # noqa: E402

from .helpers import operands  # noqa: E402


def test_logical_module_is_one_placeholder(small):
    text = lower_logical(small.cat)
    assert text.count(f'stablehlo.composite "{PLACEHOLDER}"') == 1
    assert "stablehlo.case" not in text


def test_expanded_module_has_one_case_with_a_branch_per_plan_and_bucket(small):
    cat, art = small.cat, small.art
    assert art.cases == [len(cat.plans)]
    assert len(cat.plans) == 3 + len(cat.buckets)  # forced, dense, buckets, amortized
    assert "stablehlo.composite" not in art.text
    assert f"@{PLACEHOLDER}(" not in art.text  # the decomposition is gone (symbol-dce)
    for p in cat.plans:
        assert f"llmqp.plan.{p.name}" in art.text
    assert "llmqp.plans = [" in art.text and "llmqp.routing = {" in art.text
    assert f"k_star = {cat.k_star} : i64" in art.text


def test_unexpanded_and_expanded_agree_on_dense_steps(small):
    """The placeholder runs its decomposition (the dense plan); K > K* routes there too."""
    import jax

    from app.compiler.lowering import export_logical

    rng = np.random.default_rng(1)
    legal = np.sort(rng.choice(small.cat.vocab, 800, replace=False))
    ops = operands(small, rng.standard_normal(small.cat.d).astype(np.float32), legal)
    with jax.enable_x64(True):
        logical = [np.asarray(v) for v in export_logical(small.cat).call(*ops)]
    expanded = [np.asarray(v) for v in small.art(*ops)]
    assert int(expanded[4]) == small.cat.DENSE
    assert int(logical[0]) == int(expanded[0])


def test_serialized_artifact_round_trips(small):
    import jax

    rng = np.random.default_rng(2)
    blob = small.art.serialize()
    again = load(blob)
    assert again.mlir_module().count("stablehlo.case") == 1
    for k in (1, 5, 100, 700):
        legal = np.sort(rng.choice(small.cat.vocab, k, replace=False))
        ops = operands(small, rng.standard_normal(small.cat.d).astype(np.float32), legal)
        with jax.enable_x64(True):
            a = [np.asarray(v) for v in again.call(*ops)]
        b = [np.asarray(v) for v in small.art(*ops)]
        assert [int(a[0]), int(a[4])] == [int(b[0]), int(b[4])]


def test_pass_refuses_a_module_without_the_placeholder(small):
    import jax

    text = jax.jit(lambda x: x + 1).lower(np.float32(1)).as_text()
    with pytest.raises(ExpansionError, match="expected one llmqp.decode_step composite, got 0"):
        expand(text, small.cat)


def test_count_cases_sees_the_case(small):
    from app.compiler.lowering import export_logical

    ctx, module = expand(export_logical(small.cat).mlir_module(), small.cat)
    with ctx:
        assert count_cases(module) == [len(small.cat.plans)]
