"""bench/standard_stack.py (transformers + llguidance mask) on the real model.

Skipped where torch, transformers, llguidance or gguf are missing, or the model is not in the
cache. Checks that every grammar form decodes to text the grammar accepts, and that the
standard stack's greedy constrained tokens equal an independent loop over the numpy forward
with the same llguidance mask (built from the engine's own GGUF tokenizer): exact equality, as
the smallest logit margins in this model (~0.08) are far above float32 drift (~1e-4).
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

for _mod in ("torch", "transformers", "llguidance", "gguf"):
    pytest.importorskip(_mod)

ROOT = Path(__file__).resolve().parents[2]


def _load_bench_module():
    spec = importlib.util.spec_from_file_location(
        "standard_stack", ROOT / "bench" / "standard_stack.py"
    )
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


ss = _load_bench_module()


@pytest.fixture(scope="module")
def stack():
    from app.engine.fetch import default_model_path

    path = default_model_path()
    if not path.exists():
        pytest.skip(f"model not in the cache ({path.name}); `llmqp model fetch` puts it there")
    st, load_s = ss.load_standard_stack(path)
    assert load_s > 0
    return st, path


def _prompt(st, text):
    return ss.chat_prompt_ids(st.hf_tokenizer, text)


def test_json_schema_decode_is_valid(stack):
    st, _ = stack
    prompt = _prompt(st, ss.EXAMPLE_INSTRUCTION)
    ids, secs = ss.standard_stack_decode(
        st.model, st.lltok, prompt, {"schema": ss.EXAMPLE_SCHEMA}, 64
    )
    assert secs > 0 and 0 < len(ids) <= 64
    obj = json.loads(st.hf_tokenizer.decode(ids))
    assert set(obj) == {"name", "age", "city"}
    assert isinstance(obj["age"], int) and obj["city"] in ("Paris", "Lyon", "Berlin")


def test_generate_wiring_gives_the_same_tokens(stack):
    st, _ = stack
    prompt = _prompt(st, ss.EXAMPLE_INSTRUCTION)
    spec = {"schema": ss.EXAMPLE_SCHEMA}
    ours, _ = ss.standard_stack_decode(st.model, st.lltok, prompt, spec, 48)
    gen, secs = ss.standard_stack_generate(st.model, st.lltok, prompt, spec, 48)
    assert secs > 0
    # The JSON object closes the grammar: the loop stops there, generate() adds EOS.
    assert gen == ours or gen == ours + [ss.EOS_ID]


@pytest.mark.parametrize(
    "spec, check",
    [
        (
            {"choices": ["Paris", "Lyon", "Marseille"]},
            lambda s: s in ("Paris", "Lyon", "Marseille"),
        ),
        (
            {"regex": r"[A-Z][a-z]+ is [0-9]{1,3}"},
            re.compile(r"[A-Z][a-z]+ is [0-9]{1,3}").fullmatch,
        ),
        ({"lark": 'start: "yes" | "no"'}, lambda s: s in ("yes", "no")),
    ],
)
def test_other_grammar_forms(stack, spec, check):
    st, _ = stack
    prompt = _prompt(st, "What is the capital of France? Answer in one word.")
    ids, _ = ss.standard_stack_decode(st.model, st.tokenizer_json, prompt, spec, 16)
    text = st.hf_tokenizer.decode([t for t in ids if t != ss.EOS_ID])
    assert check(text), (spec, text)


def test_bad_specs_are_refused(stack):
    st, _ = stack
    with pytest.raises(ValueError):
        ss.grammar_from_spec({"regex": "a", "lark": "start: 'a'"})
    with pytest.raises(ValueError):
        ss.grammar_from_spec({"choices": []})
    with pytest.raises(ValueError):
        ss.make_matcher(st.lltok, {"regex": "(unclosed"})


def _numpy_constrained_greedy(weights, tok_json, prompt, spec, max_tokens):
    """The same rules as standard_stack_decode, over the numpy forward."""
    import llguidance

    from app.engine.forward_numpy import NumpyLlama

    m = NumpyLlama(weights)
    lltok = llguidance.LLTokenizer(tok_json, n_vocab=weights.config.vocab, eos_token=ss.EOS_ID)
    matcher = ss.make_matcher(lltok, spec)
    cache = m.new_cache()
    h = m.forward(prompt, cache)[-1]
    out = []
    while True:
        logits = m.head(h)
        logits[~ss.allowed_mask(matcher, weights.config.vocab)] = -np.inf
        t = int(np.argmax(logits))
        out.append(t)
        assert matcher.consume_token(t)
        if t == ss.EOS_ID or matcher.is_stopped() or len(out) >= max_tokens:
            return out
        h = m.forward([t], cache)[-1]


def test_matches_numpy_engine_loop(stack):
    from app.engine.tokenizer import tokenizer_from_gguf
    from app.engine.weights import load_gguf

    st, path = stack
    fields, weights = load_gguf(path)
    engine_tok = tokenizer_from_gguf(fields)
    prompt = engine_tok.encode(engine_tok.chat(ss.EXAMPLE_INSTRUCTION))
    assert prompt == _prompt(st, ss.EXAMPLE_INSTRUCTION)
    spec = {"schema": ss.EXAMPLE_SCHEMA}
    ours, _ = ss.standard_stack_decode(st.model, st.lltok, prompt, spec, 48)
    theirs = _numpy_constrained_greedy(weights, engine_tok.to_json(), prompt, spec, 48)
    assert ours == theirs


def test_serve_mode_answers_each_index_with_that_request(stack):
    """The line mode bench/engine.py interleaves with: one JSON line per index, in the order
    asked, each the same tokens as decoding that request directly; totals at end of input."""
    import io

    from app.engine.requests import load_requests

    st, _ = stack
    path = ROOT / "bench" / "workload" / "requests.jsonl"
    requests = load_requests(path)
    out = io.StringIO()
    ss.serve_requests(st, path, io.StringIO("1\n0\n"), out)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines[0] == {"ready": True}
    assert [r["id"] for r in lines[1:3]] == [requests[1].id, requests[0].id]
    assert lines[1]["tokens"] == ss.decode_request(st, requests[1])["tokens"]
    assert lines[3]["requests"] == 2
    assert lines[3]["tokens"] == len(lines[1]["tokens"]) + len(lines[2]["tokens"])
