"""Real decodes: every plan decodes exactly the tokens of always-DenseHead, and JSON validates.

A fast subset of the project's workload (bench/workload/requests.jsonl) — one request of each
kind, short outputs — runs in the test command; bench/engine.py runs all of it.
"""

import dataclasses
import json

import jsonschema
import pytest

from app.engine.plans import EXACT_CHOICES

SUBSET = (
    "fn-weather",
    "ex-review",
    "nest-matrix",
    "re-phone",
    "ch-capital",
    "lark-arith",
    "date-event",
    "json-object",
)


@pytest.fixture(scope="module")
def subset(workload):
    by_id = {r.id: r for r in workload}
    return [dataclasses.replace(by_id[i], max_tokens=min(by_id[i].max_tokens, 24)) for i in SUBSET]


@pytest.fixture(scope="module")
def reference(engine, subset):
    return {r.id: engine.decode(r, plan="dense") for r in subset}


@pytest.mark.parametrize("plan", [p for p in EXACT_CHOICES if p not in ("dense", "full")])
def test_every_plan_decodes_the_dense_tokens(engine, subset, reference, plan):
    for req in subset:
        got = engine.decode(req, plan=plan)
        assert got.tokens == reference[req.id].tokens, (plan, req.id)
        assert got.stop == reference[req.id].stop


def test_full_recompute_decodes_the_dense_tokens(engine, subset, reference):
    """FullRecompute rebuilds the state each step: the three shortest requests keep it quick."""
    for req in subset[3:6]:
        assert engine.decode(req, plan="full").tokens == reference[req.id].tokens


def test_outputs_satisfy_their_grammars(reference, subset):
    import re

    for req in subset:
        res = reference[req.id]
        kind, value = req.grammar
        if res.stop == "length":
            continue
        if kind == "schema":
            jsonschema.validate(json.loads(res.text), value)
        elif kind == "json_object":
            assert isinstance(json.loads(res.text), dict)
        elif kind == "regex":
            assert re.fullmatch(value, res.text), res.text
        elif kind == "choices":
            assert res.text in value
    assert sum(reference[r.id].stop != "length" for r in subset) >= 5


def test_plans_are_used_where_the_rule_says(engine, subset):
    res = engine.decode(subset[0], plan="auto")
    plans = {s.plan for s in res.steps}
    assert "ForcedToken" in plans  # the schema's keys are forced
    for s in res.steps:
        assert (s.plan == "ForcedToken") == (s.k == 1)
        if s.plan not in ("ForcedToken", "PromptLookup"):  # a draft may take any K > 1 step
            assert s.plan == ("SparseHead" if s.k <= engine.rule.k_star else "DenseHead")
    assert plans & {"SparseHead", "DenseHead"}  # the cost rule scored some steps itself


def test_result_json_fields(engine, subset):
    seen = []
    res = engine.decode(subset[3], plan="auto", on_step=seen.append)
    d = res.to_json()
    for key in (
        "id",
        "text",
        "prompt_tokens",
        "tokens",
        "stop",
        "steps",
        "tokens_per_s",
        "seconds",
        "model",
        "device",
        "versions",
    ):
        assert key in d
    assert len(d["steps"]) == len(d["tokens"]) == len(seen)
    assert set(d["steps"][0]) == {"plan", "k", "forced", "margin", "seconds"}
    assert d["stop"] in ("eos", "grammar", "length")
    assert [s.token for s in seen] == d["tokens"]
    assert all(s["margin"] is None for s in d["steps"] if s["forced"])
