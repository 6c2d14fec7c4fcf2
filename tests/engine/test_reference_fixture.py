"""The transformers fixture is internally consistent and belongs to the default model.

Needs nothing beyond numpy: it checks the file that tests/engine/test_forward_torch.py and the
numpy-engine tests compare against (see tests/engine/fixtures/README.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from app.engine.fetch import DEFAULT_MODEL

FIXTURE = Path(__file__).parent / "fixtures" / "transformers_reference.json"


@pytest.fixture(scope="module")
def fx():
    return json.loads(FIXTURE.read_text())


def test_fixture_is_for_the_default_model(fx):
    assert fx["gguf_sha256"] == DEFAULT_MODEL["gguf_sha256"]
    assert fx["gguf_file"] == Path(DEFAULT_MODEL["member"]).name
    assert fx["vocab"] == 49152 and fx["eos_id"] == 2
    assert FIXTURE.stat().st_size < 300_000


def test_subset_ids_are_reproducible(fx):
    rng = np.random.default_rng(0)
    expected = np.sort(rng.choice(fx["vocab"], size=len(fx["subset_ids"]), replace=False))
    assert fx["subset_ids"] == expected.tolist()


def test_rows_agree_with_greedy_ids(fx):
    assert {p["kind"] for p in fx["prompts"]} == {"plain", "chat"}
    subset = fx["subset_ids"]
    for p in fx["prompts"]:
        n = len(p["prompt_ids"])
        assert len(p["greedy_ids"]) == len(p["greedy_top2_gap"]) == fx["n_greedy"]
        assert min(p["greedy_top2_gap"]) >= 0
        assert [r["step"] for r in p["rows"]] == fx["row_steps"]
        for r in p["rows"]:
            top = np.array(r["top_logits"])
            assert r["position"] == n + r["step"] - 1
            assert len(r["top_ids"]) == len(set(r["top_ids"])) == fx["top_k"]
            assert np.all(np.diff(top) <= 0)  # descending
            assert r["top_ids"][0] == p["greedy_ids"][r["step"]]  # the argmax was chosen
            assert top[0] == r["max"]
            gap = top[0] - top[1]
            assert abs(gap - p["greedy_top2_gap"][r["step"]]) < 1e-5
            # A subset id inside the top 64 carries the same logit in both lists.
            pos = {t: i for i, t in enumerate(r["top_ids"])}
            for sid, logit in zip(subset, r["subset_logits"]):
                if sid in pos:
                    assert logit == r["top_logits"][pos[sid]]
                assert logit <= r["max"]
            assert r["std"] > 0 and r["mean"] < r["max"]


def test_chat_prompts_open_the_assistant_turn(fx):
    for p in fx["prompts"]:
        if p["kind"] == "chat":
            assert p["prompt_ids"][0] == 1  # <|im_start|>
            assert p["prompt_text"].endswith("<|im_start|>assistant\n")
            assert p["text"] in p["prompt_text"]
        else:
            assert p["prompt_text"] == p["text"]
