"""The sweeps' kernels and their stored names come from the plan registry."""

from __future__ import annotations

import pytest

from app.measure.modelled import SWEEP_KERNELS, model_cost
from app.model import PLAN_NAMES, TERMS, Scenario

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
