"""Both projection kernels are the real model: the transformers fixture's greedy ids and logits
(atol 1e-3) under ``q`` (the engine's default) and ``blas``, and ``--kernel`` on the CLI."""

import json
from pathlib import Path

import numpy as np
import pytest

from app.cli import main
from app.engine.forward_numpy import NumpyLlama

FIXTURE = Path(__file__).parent / "fixtures" / "transformers_reference.json"
ATOL = 1e-3


@pytest.fixture(scope="module")
def fx():
    return json.loads(FIXTURE.read_text())


@pytest.fixture(scope="module")
def forced_logits(engine, fx):
    """kernel -> prompt -> the (16, V) logits that chose each greedy id (teacher-forced)."""
    out = {}
    for kernel in ("q", "blas"):
        body = engine.body if engine.body.kernel == kernel else NumpyLlama(engine.weights, kernel)
        out[kernel] = {}
        for p in fx["prompts"]:
            ids = p["prompt_ids"] + p["greedy_ids"][:-1]
            h = body.forward(ids, body.new_cache())
            out[kernel][p["name"]] = body.head(h[len(p["prompt_ids"]) - 1 :])
    return out


def test_the_default_kernel_is_q(engine):
    assert engine.body.kernel == "q"
    assert engine.body.proj[0].qkv.parts[0].fmt == 1  # Q4_1 blocks, read as stored


@pytest.mark.parametrize("kernel", ["q", "blas"])
def test_greedy_ids_and_logits_match_transformers(forced_logits, fx, kernel):
    worst = 0.0
    for p in fx["prompts"]:
        logits = forced_logits[kernel][p["name"]]
        assert logits.argmax(axis=1).tolist() == p["greedy_ids"], p["name"]
        for r in p["rows"]:
            row = logits[r["step"]]
            ids, want = np.asarray(r["top_ids"]), np.asarray(r["top_logits"], np.float32)
            worst = max(worst, float(np.abs(row[ids] - want).max()))
    assert worst < ATOL, worst


def test_the_kernels_differ_only_by_rounding(forced_logits, fx):
    for p in fx["prompts"]:
        q, b = forced_logits["q"][p["name"]], forced_logits["blas"][p["name"]]
        np.testing.assert_allclose(q, b, rtol=0, atol=ATOL)


def test_cli_kernel_flag(capsys, engine):
    args = ["decode", "--prompt", "Give a time:", "--regex", r"[0-2]\d:[0-5]\d", "--json"]
    texts = []
    for kernel in ("q", "blas"):
        assert main([*args, "--kernel", kernel]) == 0
        texts.append(json.loads(capsys.readouterr().out)["tokens"])
    assert texts[0] == texts[1]
    assert main([*args, "--kernel", "int8"]) == 2  # the CLI answers usage errors with 2
    assert "--kernel: invalid choice: 'int8'" in capsys.readouterr().err
