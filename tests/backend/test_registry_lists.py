"""Lists that derive from the plan registry (the sweeps' kernels and their stored names), and the
registry's two rerank recipes: the paper's AmortizedRerank and what the engine's kernel runs."""

from __future__ import annotations

import numpy as np
import pytest

from app.measure.modelled import SWEEP_KERNELS, model_cost
from app.model import PLAN_NAMES, PLANS, TERMS, Scenario, Setting, Step, explain_text
from app.model.registry import get_plan, plan_cost, plan_tree

S = Scenario()


def test_sweep_kernels_derive_from_the_registry_and_keep_stored_names():
    """Stored names stay what the result store already holds; every other registry plan is
    priced under its own name, so a plan added to the registry needs no edit in app/measure."""
    from app.measure.modelled import registry_name, stored_name

    legacy = {"dense_head": "DenseScore", "sparse_head": "SparseScore", "full_step": "SparseHead",
              "amortized_step": "AmortizedHead", "amortized_rerank": "AmortizedRerank"}  # fmt: skip
    for stored, what in legacy.items():
        assert SWEEP_KERNELS[stored] == what and stored_name(what) == stored
        assert registry_name(stored) == what
    assert set(SWEEP_KERNELS.values()) == set(TERMS) | set(PLAN_NAMES)
    assert len(SWEEP_KERNELS) == len(set(TERMS) | set(PLAN_NAMES))  # no two share a name
    row = dict(plan="FullRecompute", d=64, vocab=1000, batch=1, dtype="float32", k=16, layers=2,
               context=100, rerank_r=0)  # fmt: skip
    assert float(model_cost(row, S.hw).seconds) > 0
    with pytest.raises(ValueError, match="No cost model"):
        model_cost(dict(row, plan="no_such_kernel"), S.hw)


def _leaves(op):
    return [op.op] if not op.children else [n for k in op.children for n in _leaves(k)]


def test_the_engines_rerank_is_priced_as_what_it_runs_the_papers_figures_unchanged():
    """``tree`` is the paper's plan (the body skipped but the last layer); ``engine_tree`` what
    the engine's kernel of that name runs (the whole body, a shortlist, an exact rescore, a
    refine where ε does not certify): it saves head work, never body work."""
    c, x = Setting.of(S), Step.of(S)
    spec = get_plan("AmortizedRerank")
    paper = _leaves(plan_tree(spec, c, x))
    assert "Rerank" in paper and "DecodeStep" not in paper
    engine = _leaves(plan_tree(spec, c, x, engine=True))
    assert engine[0] == "DecodeStep" and "ShortlistScore" in engine and "Rerank" not in engine
    sparse = plan_cost(get_plan("SparseHead"), c, x)
    amortized = TERMS["AmortizedUpdate"](c, x)
    certified = plan_cost(spec, c, x, engine=True)  # every winner certified: no refine
    want = sparse + amortized + TERMS["ShortlistScore"](c, x)
    assert float(certified.seconds) == float(want.seconds)
    refined = plan_cost(spec, c, x, refine=1.0, engine=True)
    assert float(refined.seconds) == float((want + TERMS["SparseScore"](c, x)).seconds)
    assert float(plan_cost(spec, c, x).seconds) < float(sparse.seconds)  # the paper's skips it
    # Every other plan runs its paper tree in the engine; the default is the paper's.
    for p in PLANS:
        if p.engine_tree is None:
            assert plan_cost(p, c, x, engine=True) == plan_cost(p, c, x)
    assert "last layer exact" in explain_text(S) and "ShortlistScore" not in explain_text(S)
    k = np.array([2.0, 8.0, 5000.0])  # arrays: the shortlist is min(K, r) rows
    xs = Step(k, np.full(3, 100.0))
    short = TERMS["ShortlistScore"](c, xs).bytes
    assert short[0] < short[1] == short[2]
