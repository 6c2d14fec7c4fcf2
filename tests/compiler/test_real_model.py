"""The real model: branch tokens on real states, and compiled decoding vs the numpy engine."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("jax")

from app.engine import plans  # noqa: E402
from app.engine.requests import DecodeRequest  # noqa: E402

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "city": {"enum": ["Paris", "Rome", "Oslo"]},
    },
    "required": ["name", "age", "city"],
}
REQUESTS = [
    {
        "id": "person",
        "prompt": "Give a person as JSON.",
        "chat": True,
        "max_tokens": 14,
        "schema": PERSON,
    },
    {"id": "free", "prompt": "The capital of France is", "max_tokens": 4},
]


def _states(engine):
    """Real final states: every position of a short prompt through the body."""
    ids = engine.tokenizer.encode("The quick brown fox jumps over the lazy dog. Paris is in")
    return engine.body.forward(ids, engine.body.new_cache(len(ids)))


def test_every_branch_matches_numpy_on_real_states(real):
    ex, engine = real.executor, real.engine
    cat = ex.catalog
    rng = np.random.default_rng(11)
    states = _states(engine)
    seen = set()
    ks = sorted({2, cat.k_star + 1, cat.vocab} | {max(2, b - 3) for b in cat.buckets})
    for i, h in enumerate(states[::3]):
        for k in ks:
            legal = np.sort(rng.choice(cat.vocab, k, replace=False))
            token, margin, name = ex.run(h, legal, {"k": k, "position": i, "last_margin": None})
            want, want_margin = plans.dense_head(engine.output, h, legal)
            assert token == want
            assert plans.sparse_head(engine.output, h, legal)[0] == want
            assert abs(margin - want_margin) < 1e-3
            seen.add(name)
    assert seen == {p.name for p in cat.plans if p.plan in ("DenseHead", "SparseHead")}


@pytest.mark.parametrize("obj", REQUESTS, ids=[r["id"] for r in REQUESTS])
def test_compiled_decode_is_token_identical(real, obj):
    req = DecodeRequest.from_dict(obj)
    want = real.engine.decode(req)
    got = real.engine.decode(req, executor=real.executor)
    assert got.tokens == want.tokens and got.text == want.text
    scored = [s for s in got.steps if s.plan != "ForcedToken"]
    assert scored and all(s.plan in {p.name for p in real.executor.catalog.plans} for s in scored)


def test_decode_cli_with_the_xla_executor(real, capsys):
    from app.cli import main

    args = ["decode", "--prompt", "The capital of France is", "--max-tokens", "3", "--json"]
    assert main(args) == 0
    want = json.loads(capsys.readouterr().out)
    assert main([*args, "--executor", "xla"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["tokens"] == want["tokens"]
    assert main([*args, "--executor", "xla", "--plan", "dense"]) == 2
    assert "--executor xla routes every step itself" in capsys.readouterr().err
