"""The plan registry: one place defines a plan; the IR, EXPLAIN, the environment and the backend
read it. ForcedToken's cost and fallback."""

import ast
from pathlib import Path

import numpy as np
import pytest

from app.measure.llama import body_shape
from app.measure.modelled import SWEEP_KERNELS, model_cost
from app.model import (
    EXACT_PLANS,
    PLAN_NAMES,
    PLANS,
    TERMS,
    PlanSpec,
    Scenario,
    Setting,
    Step,
    arm_index,
    check_plans,
    decode_step_cost,
    dense_head_cost,
    effective_plan,
    error_given_margin,
    expand,
    explain_dict,
    explain_text,
    get_plan,
    plan_costs,
    plan_table,
    prefill_cost,
    routed_plans,
    sparse_head_cost,
)
from app.model.registry import Operator
from app.router.environment import make_stream, model_latency
from app.widgets.explain import explain_html
from app.widgets.plotting import COLORS

S = Scenario()
ARGS = (S.batch, S.dtype, S.hw)


def _twice_sparse(c, x):
    # A throwaway plan: the exact state, then the sparse head run twice.
    sparse = Operator("SparseScore", "again")
    return (Operator("DecodeStep"), sparse, sparse)


TOY = PlanSpec(
    "TwiceSparse",
    True,
    _twice_sparse,
    "tests.fake:twice_sparse",
    applies=lambda k: np.asarray(k) % 2 == 0,  # even K only; SparseHead elsewhere
    fallback="SparseHead",
)
WITH_TOY = PLANS + (TOY,)


def _toy_seconds(k, context):
    decode = decode_step_cost(S.shape, context, *ARGS).seconds
    return decode + 2 * sparse_head_cost(S.d, S.vocab, k, *ARGS).seconds


def test_names_and_exactness_derive_from_the_registry():
    assert PLAN_NAMES == tuple(p.name for p in PLANS) and len(set(PLAN_NAMES)) == len(PLANS)
    assert EXACT_PLANS == {p.name for p in PLANS if p.exact}
    assert set(COLORS) >= set(PLAN_NAMES)
    assert len({COLORS[n] for n in PLAN_NAMES}) == len(PLAN_NAMES)
    forced = get_plan("ForcedToken")
    assert effective_plan(forced, 1) is forced
    assert effective_plan(forced, 2).name == "DenseHead"
    # the engine's kernel table is keyed by these names (tests/engine/test_kernels.py)
    assert routed_plans() == (
        "DenseHead", "SparseHead", "AmortizedHead", "AmortizedRerank", "PromptLookup"
    )  # fmt: skip
    assert [arm_index(n) for n in PLAN_NAMES] == list(range(len(PLANS)))
    with pytest.raises(ValueError, match="'name' parameter"):
        arm_index("NoSuchHead")


def test_readme_plan_table_is_the_registrys():
    table = plan_table()
    assert table.count("\n") == len(PLANS) + 2 and all(f"`{n}`" in table for n in PLAN_NAMES)
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    start = readme.index("| plan | what it does | exact? |")
    assert readme[start:].split("\n\n")[0] + "\n" == table


def test_every_tree_leaf_is_a_kernel_term():
    def leaves(op):
        return [op] if not op.children else [x for k in op.children for x in leaves(k)]

    for s in (S, S.replace(k=1, forced_run=4)):
        for plan in expand(s):
            assert {leaf.op for leaf in leaves(plan.root)} <= set(TERMS)


def test_a_new_plan_appears_everywhere_from_its_spec_alone():
    s = S.replace(k=64)
    annotated = {p.name: p for p in plan_costs(s, WITH_TOY)}
    assert tuple(annotated) == PLAN_NAMES + ("TwiceSparse",)
    assert annotated["TwiceSparse"].latency_s == pytest.approx(float(_toy_seconds(64, 1024)))
    assert annotated["TwiceSparse"].exact and annotated["TwiceSparse"].error_rate == 0
    assert "TwiceSparse" in explain_text(s, WITH_TOY)
    assert [p["name"] for p in explain_dict(s, WITH_TOY)["plans"]][-1] == "TwiceSparse"
    assert "TwiceSparse" not in explain_text(s)  # the default registry is untouched
    # Odd K: the fallback runs, and EXPLAIN says so.
    odd = {p.name: p for p in plan_costs(s.replace(k=63), WITH_TOY)}
    assert odd["TwiceSparse"].root.children[0].op == "Fallback"
    assert odd["TwiceSparse"].latency_s == odd["SparseHead"].latency_s
    # The environment's latency columns and arms.
    k, t = np.array([64.0, 63.0, 2.0]), np.array([1024.0, 1024.0, 10.0])
    lat = model_latency(s, WITH_TOY)(k, t, np.zeros(3))
    assert lat.shape == (3, len(PLANS) + 1)
    np.testing.assert_allclose(lat[[0, 2], -1], _toy_seconds(k[[0, 2]], t[[0, 2]]), rtol=1e-12)
    assert lat[1, -1] == lat[1, PLAN_NAMES.index("SparseHead")]
    st = make_stream(s, 50, np.random.default_rng(0), plans=WITH_TOY)
    assert st.expected.shape == (50, len(PLANS) + 1) and st.theta.shape[1] == len(PLANS) + 1


def test_forced_token_is_cheaper_per_token_than_the_dense_head_for_runs():
    dense = float(
        decode_step_cost(S.shape, S.context, *ARGS).seconds
        + dense_head_cost(S.d, S.vocab, *ARGS).seconds
    )
    per_token = []
    for n in (1, 2, 4, 8, 16):
        plans = {p.name: p for p in plan_costs(S.replace(k=1, forced_run=n))}
        forced = plans["ForcedToken"]
        expect = float(prefill_cost(S.shape, n, S.context, *ARGS).seconds) / n
        assert forced.latency_s == pytest.approx(expect, rel=1e-12)
        assert plans["DenseHead"].latency_s == pytest.approx(dense)
        per_token.append(forced.latency_s)
    assert all(t < dense for t in per_token[1:])
    assert all(b <= a for a, b in zip(per_token, per_token[1:]))  # longer runs share more
    assert per_token[-1] < 0.5 * dense


def test_forced_token_prices_as_its_fallback_where_k_exceeds_one():
    plans = {p.name: p for p in plan_costs(S)}
    forced, dense = plans["ForcedToken"], plans["DenseHead"]
    assert (
        forced.root.children[0].op == "Fallback" and "DenseHead" in forced.root.children[0].detail
    )
    for f in ("latency_s", "bytes", "flops", "error_rate", "regime"):
        assert getattr(forced, f) == getattr(dense, f)
    st = make_stream(S, 2000, np.random.default_rng(1), cold=0.2)
    a, d = PLAN_NAMES.index("ForcedToken"), PLAN_NAMES.index("DenseHead")
    assert (st.k > 1).all()  # the default K distribution never forces a token
    np.testing.assert_array_equal(st.latency_s[:, a], st.latency_s[:, d])
    np.testing.assert_array_equal(st.expected[:, a], st.expected[:, d])


def test_forced_token_in_the_environment_at_k_one():
    s = S.replace(k=4)  # log-uniform K from 1 to 64: some steps have K = 1
    st = make_stream(s, 3000, np.random.default_rng(2), free_text=0.0, cold=0.0)
    one = st.k == 1
    assert one.any() and (~one).any()
    a = PLAN_NAMES.index("ForcedToken")
    expect = prefill_cost(s.shape, 1, st.position[one], *ARGS).seconds
    np.testing.assert_allclose(st.latency_s[one, a], expect, rtol=1e-12)
    assert (st.latency_s[one, a] < st.latency_s[one, PLAN_NAMES.index("SparseHead")]).all()
    # An exact plan: its expected loss is latency alone, whatever the margin.
    assert error_given_margin(st.margin, s.eps).max() > 0
    np.testing.assert_allclose(st.expected[:, a], s.lam * st.latency_s[:, a] / _ref(s))


def _ref(s):
    return float(model_latency(s)(np.array([s.k]), np.array([s.context]), np.zeros(1))[0, 0])


def test_explain_lists_forced_token_and_chooses_it_for_a_forced_run():
    s = S.replace(k=1, forced_run=8)
    text = explain_text(s)
    assert "ForcedToken" in text and "ForcedPrefill" in text and "forced run 8" in text
    d = explain_dict(s)
    assert d["chosen"] == "ForcedToken" and d["scenario"]["forced_run"] == 8
    html = explain_html(s)
    assert 'data-chosen-plan="ForcedToken"' in html and "ForcedPrefill" in html
    assert "ForcedToken" in explain_html(S) and explain_dict(S)["chosen"] != "ForcedToken"


def test_sweep_kernels_are_registry_terms_or_plans():
    assert set(SWEEP_KERNELS.values()) <= set(TERMS) | set(PLAN_NAMES)
    row = dict(plan="full_step", d=64, vocab=1000, batch=1, dtype="float32", k=16, layers=2,
               context=100, rerank_r=0)  # fmt: skip
    hw = S.hw
    got = model_cost(row, hw)
    shape = body_shape(64, 2, 1000)  # the Llama body the backend times at (d, layers)
    want = decode_step_cost(shape, 100, 1, "float32", hw) + sparse_head_cost(
        64, 1000, 16, 1, "float32", hw
    )
    assert float(got.seconds) == pytest.approx(float(want.seconds), rel=1e-12)


def test_model_and_router_never_import_the_engine():
    for folder in ("app/model", "app/router"):
        for path in Path(folder).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom | ast.Import):
                    names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                    names += [a.name for a in node.names]
                    assert not any("engine" in n for n in names), path


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: PlanSpec("not a name", True, _twice_sparse, "m:f"), r"'name' parameter"),
        (
            lambda: PlanSpec("X", True, _twice_sparse, "m:f", applies=lambda k: k == 1),
            r"applies to some steps only: give a 'fallback'",
        ),
        (lambda: check_plans(PLANS + (PLANS[0],)), r"'plans' parameter must have unique names"),
        (lambda: check_plans(()), r"'plans' parameter must be a non-empty tuple of PlanSpec"),
        (lambda: check_plans((TOY,)), r"falls back to 'SparseHead', which must be a plan"),
        (lambda: get_plan("Nope"), r"'name' parameter must be one of DenseHead, SparseHead"),
        (lambda: Scenario(forced_run=0), r"'forced_run' parameter must be an integer in \[1,"),
        (lambda: expand(S, ("DenseHead",)), r"'plans' parameter must be a non-empty tuple"),
    ],
)
def test_registry_boundary_validates(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_setting_and_step_of_a_scenario():
    s = S.replace(k=1, forced_run=3, rerank_r=4, tau=0.3)
    c, x = Setting.of(s), Step.of(s)
    assert (c.shape, c.rerank_r, c.tau, x.k, x.forced, x.missing) == (s.shape, 4, 0.3, 1, 3, 0.0)
