"""An optional anchor: the same JSON-schema request decoded by llama.cpp (llama-cpp-python).

llama.cpp runs the GGUF's quantized kernels directly (Q4_1 weights, activations quantized on the
fly), so its logits are not the float32 model's: expect its greedy tokens to agree with the
engine's for a while and possibly diverge at a small-margin step. It is a speed anchor for a
compiled CPU runtime, one thread, with llama.cpp's own grammar sampler (GBNF converted from the
JSON schema by llama-cpp-python), greedy (temperature 0).

``llama-cpp-python`` is not a project dependency: it builds from source (≈10 minutes) and has
crashed on some virtual machines. Use a throwaway virtual environment. The Python package
works as soon as ``libllama`` and ``libggml*`` are linked (the rest of the wheel build is the
multimodal library): ``LLAMA_CPP_LIB_PATH=<folder with the .so files>`` and the sdist's
``llama_cpp`` folder on ``PYTHONPATH`` (plus numpy, jinja2, diskcache, typing-extensions).

Measured once (2 shared vCPUs under heavy load, one thread): load 1.5 s; the JSON request 24
tokens at 2.8 tokens/s wall, 14.7 per CPU-second. Its JSON grammar differs in whitespace from
llguidance's (``{ "name": ...}`` on one line), so its ids are not the engine's. Unconstrained,
its greedy ids leave transformers' float32 ones exactly at the fixture's smallest-margin steps
(margins 0.08-0.22): the quantized dot products move logits by about that much.

Usage::

    python bench/llamacpp_anchor.py [--gguf PATH] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from standard_stack import EXAMPLE_INSTRUCTION, EXAMPLE_SCHEMA  # noqa: E402

from app.engine.fetch import default_model_path  # noqa: E402


def load_llamacpp(gguf_path, n_ctx: int = 1024, threads: int = 1):
    """(llama_cpp.Llama, seconds)."""
    from llama_cpp import Llama

    t0 = time.perf_counter()
    llm = Llama(
        model_path=str(gguf_path),
        n_ctx=n_ctx,
        n_threads=threads,
        n_threads_batch=threads,
        n_gpu_layers=0,
        verbose=False,
    )
    return llm, time.perf_counter() - t0


def llamacpp_decode(llm, prompt_ids, schema: dict, max_tokens: int) -> tuple[list[int], float]:
    """Greedy decode under llama.cpp's grammar sampler; (ids incl. a final EOS, seconds)."""
    from llama_cpp import LlamaGrammar

    grammar = LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
    out: list[int] = []
    t0 = time.perf_counter()
    for tok in llm.generate(list(prompt_ids), temp=0.0, top_k=1, grammar=grammar, reset=True):
        out.append(int(tok))
        if tok == llm.token_eos() or len(out) >= max_tokens:
            break
    return out, time.perf_counter() - t0


def fixture_agreement(llm, fixture_path) -> list[dict]:
    """Unconstrained greedy ids from llama.cpp on the transformers fixture's prompts: how many of
    the 16 agree with transformers' float32 greedy ids before the first difference."""
    fx = json.loads(open(fixture_path).read())
    rows = []
    for p in fx["prompts"]:
        out: list[int] = []
        for tok in llm.generate(p["prompt_ids"], temp=0.0, top_k=1, reset=True):
            out.append(int(tok))
            if len(out) >= len(p["greedy_ids"]):
                break
        same = next((i for i, (a, b) in enumerate(zip(out, p["greedy_ids"])) if a != b), len(out))
        rows.append({"name": p["name"], "ids": out, "agree_prefix": same, "n": len(out)})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gguf", default=None)
    ap.add_argument("--max-tokens", type=int, default=64)
    args = ap.parse_args(argv)

    from app.engine.tokenizer import tokenizer_from_gguf
    from app.engine.weights import load_gguf

    path = args.gguf or default_model_path()
    tok = tokenizer_from_gguf(load_gguf(path)[0])
    prompt = tok.encode(tok.chat(EXAMPLE_INSTRUCTION))
    llm, load_s = load_llamacpp(path)
    print(f"load: {load_s:.2f} s; prompt {len(prompt)} tokens")
    cpu0 = time.process_time()
    ids, secs = llamacpp_decode(llm, prompt, EXAMPLE_SCHEMA, args.max_tokens)
    cpu = time.process_time() - cpu0
    print(
        f"{len(ids)} tokens in {secs:.2f} s: {len(ids) / secs:.1f} tokens/s, "
        f"{len(ids) / cpu:.1f} per CPU-second (prefill included)"
    )
    print("ids:", ids)
    print("text:", repr(tok.decode(ids)))
    fixture = os.path.join(
        os.path.dirname(os.path.abspath(__file__)),
        "..",
        "tests",
        "engine",
        "fixtures",
        "transformers_reference.json",
    )
    for row in fixture_agreement(llm, fixture):
        print(f"fixture {row['name']}: first {row['agree_prefix']}/{row['n']} greedy ids agree")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
