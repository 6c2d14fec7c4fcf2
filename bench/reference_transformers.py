"""Record transformers' logits and greedy tokens for SmolLM2-135M-Instruct as a test fixture.

transformers loads the project's GGUF (dequantized to float32, CPU, one thread) and, for a few
fixed prompts (two plain, two through the GGUF's chat template), records:

* the prompt token ids (transformers' tokenizer, built from the same GGUF);
* 16 greedy token ids: unconstrained argmax with a KV cache, teacher-forced on its own choices
  and *not* stopped at EOS (so every prompt has exactly 16; EOS, id 2, may appear inside);
* the margin between the best and second-best logit at each of the 16 steps;
* for steps 0, 5 and 15 (step k = the logits that choose greedy token k, at sequence position
  ``len(prompt) + k - 1``): the top-64 token ids and logits, the logits of a fixed random subset
  of 256 token ids (``np.random.default_rng(0)``), and the row's max, mean and std over all
  49,152 logits.

It also measures how far two float32 evaluations of the same model drift apart, to size the
tests' tolerance: the cached step-by-step logits against one uncached forward over the whole
sequence (float32), and both against a float64 copy of the model.

Writes ``tests/engine/fixtures/transformers_reference.json``.

Usage::

    python bench/reference_transformers.py [--gguf PATH] [--out PATH]
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from standard_stack import default_model_path, load_transformers  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "tests" / "engine" / "fixtures" / "transformers_reference.json"

N_GREEDY = 16
ROW_STEPS = (0, 5, 15)
TOP_K = 64
N_SUBSET = 256

PROMPTS: list[dict] = [
    {"name": "plain_capital", "kind": "plain", "text": "The capital of France is"},
    {
        "name": "plain_digits",
        "kind": "plain",
        "text": "Alice was born in 1990. In 2024 she turned",
    },
    {"name": "chat_capital", "kind": "chat", "text": "What is the capital of France?"},
    {
        "name": "chat_json",
        "kind": "chat",
        "text": (
            'Extract the person as JSON with keys "name" (string) and "age" (integer). '
            "Text: Bob Smith is 42 years old and lives in Lyon."
        ),
    },
]


def f32(x) -> float:
    """A float32 value as the shortest decimal that reads back to the same float32."""
    return float(np.format_float_positional(np.float32(x), unique=True, trim="0"))


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def prompt_ids_and_text(tok, p: dict) -> tuple[list[int], str]:
    if p["kind"] == "plain":
        text = p["text"]
    else:
        msgs = [{"role": "user", "content": p["text"]}]
        text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    return list(tok(text, add_special_tokens=False)["input_ids"]), text


def greedy_rows(model, prompt: list[int]) -> tuple[list[int], np.ndarray]:
    """16 greedy ids with a KV cache, and the (16, V) float32 logits that chose them."""
    import torch
    from standard_stack import new_kv_cache

    cache = new_kv_cache(model)
    rows, out = [], []
    with torch.inference_mode():
        res = model(input_ids=torch.tensor([prompt]), use_cache=True, logits_to_keep=1, **cache)
        for k in range(N_GREEDY):
            row = res.logits[0, -1].float().numpy().copy()
            rows.append(row)
            out.append(int(np.argmax(row)))  # first maximum: ties go to the lowest id
            if k + 1 < N_GREEDY:
                res = model(input_ids=torch.tensor([[out[-1]]]), use_cache=True, **cache)
    return out, np.stack(rows)


def full_rows(model, prompt: list[int], greedy: list[int]) -> np.ndarray:
    """The same 16 rows from one uncached forward over prompt + greedy[:-1], as float64."""
    import torch

    seq = torch.tensor([prompt + greedy[:-1]])
    with torch.inference_mode():
        logits = model(input_ids=seq, use_cache=False).logits[0]
    n = len(prompt)
    return logits[n - 1 : n - 1 + N_GREEDY].double().numpy()


def row_record(row: np.ndarray, step: int, position: int, subset: np.ndarray) -> dict:
    order = np.argsort(-row, kind="stable")[:TOP_K]  # descending, ties by ascending id
    r64 = row.astype(np.float64)
    return {
        "step": step,
        "position": position,
        "top_ids": [int(i) for i in order],
        "top_logits": [f32(row[i]) for i in order],
        "subset_logits": [f32(row[i]) for i in subset],
        "max": f32(row.max()),
        "mean": float(r64.mean()),
        "std": float(r64.std()),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gguf", default=None, help="GGUF path (default: the project cache)")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--no-float64", action="store_true", help="skip the float64 comparison")
    args = ap.parse_args(argv)

    from importlib.metadata import version

    import torch

    gguf_path = Path(args.gguf) if args.gguf else default_model_path()
    t0 = time.perf_counter()
    model, tok = load_transformers(gguf_path)
    print(f"loaded in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    vocab = int(model.config.vocab_size)
    subset = np.sort(np.random.default_rng(0).choice(vocab, size=N_SUBSET, replace=False))

    records, rows_f32, rows_full = [], [], []
    for p in PROMPTS:
        ids, text = prompt_ids_and_text(tok, p)
        greedy, rows = greedy_rows(model, ids)
        full = full_rows(model, ids, greedy)
        rows_f32.append(rows)
        rows_full.append(full)
        top2 = np.sort(rows, axis=1)[:, -2:]
        rec = {
            "name": p["name"],
            "kind": p["kind"],
            "text": p["text"],
            "prompt_text": text,
            "prompt_ids": ids,
            "greedy_ids": greedy,
            "greedy_text": tok.decode(greedy, skip_special_tokens=False),
            "greedy_top2_gap": [f32(g) for g in top2[:, 1] - top2[:, 0]],
            "rows": [row_record(rows[k], k, len(ids) + k - 1, subset) for k in ROW_STEPS],
            "f32_cached_vs_uncached_max_abs": float(np.abs(full - rows).max()),
        }
        records.append(rec)
        print(f"{p['name']}: {len(ids)} prompt ids -> {rec['greedy_text']!r}", file=sys.stderr)

    measured = {
        "f32_cached_vs_uncached_max_abs": max(r["f32_cached_vs_uncached_max_abs"] for r in records)
    }
    if not args.no_float64:
        model = model.double()
        worst = 0.0
        for rec, rows in zip(records, rows_f32):
            r64 = full_rows(model, rec["prompt_ids"], rec["greedy_ids"])
            rec["f32_vs_f64_max_abs"] = float(np.abs(r64 - rows).max())
            rec["f64_greedy_agrees"] = bool((np.argmax(r64, axis=1) == rec["greedy_ids"]).all())
            worst = max(worst, rec["f32_vs_f64_max_abs"])
        measured["f32_vs_f64_max_abs"] = worst

    fixture = {
        "format": 1,
        "description": "transformers logits for SmolLM2-135M-Instruct Q4_1 (see README.md)",
        "produced_by": {
            "command": "python bench/reference_transformers.py",
            "date": datetime.date.today().isoformat(),
            "python": platform.python_version(),
            **{k: version(k) for k in ("torch", "transformers", "accelerate", "gguf")},
            "tokenizers": version("tokenizers"),
            "numpy": np.__version__,
            "dtype": "float32",
            "device": "cpu",
            "torch_threads": torch.get_num_threads(),
        },
        "gguf_file": gguf_path.name,
        "gguf_sha256": sha256(gguf_path),
        "vocab": vocab,
        "eos_id": 2,
        "n_greedy": N_GREEDY,
        "row_steps": list(ROW_STEPS),
        "top_k": TOP_K,
        "subset_ids": [int(i) for i in subset],
        "measured": measured,
        "prompts": records,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(fixture, indent=1) + "\n")
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB); {measured}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
