"""An optional anchor: the same JSON-schema request decoded by llama.cpp (llama-cpp-python).

llama.cpp runs the GGUF's quantized kernels directly (Q4_1 weights, activations quantized on the
fly), so its logits are not the float32 model's: expect its greedy tokens to agree with the
engine's for a while and possibly diverge at a small-margin step. It is a speed anchor for a
compiled CPU runtime, one thread, with llama.cpp's own grammar sampler (GBNF converted from the
JSON schema by llama-cpp-python), greedy (temperature 0).

``llama-cpp-python`` is not a project dependency: it builds from source (≈10 minutes) and has
crashed on some virtual machines. Use a throwaway virtual environment.

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
    ids, secs = llamacpp_decode(llm, prompt, EXAMPLE_SCHEMA, args.max_tokens)
    print(f"{len(ids)} tokens in {secs:.2f} s: {len(ids) / secs:.1f} tokens/s (prefill included)")
    print("ids:", ids)
    print("text:", repr(tok.decode(ids)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
