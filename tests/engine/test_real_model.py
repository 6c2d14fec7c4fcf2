"""The numpy engine is the real model: logits and greedy tokens as transformers computes them
from the same GGUF (the fixture, made by bench/reference_transformers.py; tolerances from
tests/engine/fixtures/README.md: atol 1e-3 on logits, greedy ids exactly)."""

import json
from pathlib import Path

import numpy as np
import pytest

FIXTURE = Path(__file__).parent / "fixtures" / "transformers_reference.json"
ATOL = 1e-3


@pytest.fixture(scope="module")
def fx():
    return json.loads(FIXTURE.read_text())


@pytest.fixture(scope="module")
def teacher_forced(engine, fx):
    """Per prompt: the (16, V) logits that chose each greedy id, fed the fixture's own ids."""
    out = {}
    for p in fx["prompts"]:
        ids = p["prompt_ids"] + p["greedy_ids"][:-1]
        h = engine.body.forward(ids, engine.body.new_cache())
        n = len(p["prompt_ids"])
        out[p["name"]] = engine.body.head(h[n - 1 :])
    return out


def test_tokenizer_gives_transformers_ids(engine, fx):
    for p in fx["prompts"]:
        assert engine.tokenizer.encode(p["prompt_text"]) == p["prompt_ids"], p["name"]
        if p["kind"] == "chat":
            assert engine.tokenizer.chat(p["text"]) == p["prompt_text"]


def test_greedy_ids_match(teacher_forced, fx):
    for p in fx["prompts"]:
        assert teacher_forced[p["name"]].argmax(axis=1).tolist() == p["greedy_ids"], p["name"]


def test_logit_rows_within_tolerance(teacher_forced, fx):
    subset = np.array(fx["subset_ids"])
    worst = 0.0
    for p in fx["prompts"]:
        logits = teacher_forced[p["name"]]
        for r in p["rows"]:
            row = logits[r["step"]]
            for ids, want in ((r["top_ids"], r["top_logits"]), (subset, r["subset_logits"])):
                diff = np.abs(row[np.asarray(ids)] - np.asarray(want, np.float32)).max()
                worst = max(worst, float(diff))
            assert abs(float(row.max()) - r["max"]) < ATOL
            assert abs(float(row.astype(np.float64).mean()) - r["mean"]) < ATOL
            assert abs(float(row.astype(np.float64).std()) - r["std"]) < ATOL
    assert worst < ATOL, worst
