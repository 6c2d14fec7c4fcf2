"""The standard Python stack for constrained decoding, as a baseline for the numpy engine.

transformers (torch, CPU, float32, one thread) decodes SmolLM2-135M-Instruct from the project's
GGUF greedily, with llguidance's token mask applied to every step's logits: illegal tokens get
``-inf``, the argmax is taken (``torch.argmax`` returns the first maximum, so ties go to the lowest
token id) and the chosen token is consumed by the matcher. The loop keeps a KV cache
(``past_key_values``), computes only the last position's logits, and does no fast-forwarding:
every emitted token costs one forward pass, the way a logits processor inside ``generate()`` works.

Stopping, in this order after each chosen token ``t`` is appended to the output:

* ``t`` is EOS (2, ``<|im_end|>``): stop; EOS is the last returned id (and is consumed by the
  matcher first, so its stop reason is ``EndOfSentence``).
* the matcher is stopped after consuming ``t`` (the grammar admits no more bytes): stop, no EOS.
* ``max_tokens`` ids have been returned: stop.

Batched (``--batch 1,4,8,16,32 --bfcl 32``, :func:`batched_decode`): the same loop over a
left-padded batch of B sequences, as transformers batches: one forward a step for every sequence
still running (attention mask over the padding, position ids counted from each sequence's first
real token), each sequence's own llguidance mask and greedy pick, a finished sequence retired at
once (its rows dropped from the batch and the KV cache). At each B the N requests run as
consecutive batches of B (static batching: a batch ends when its last sequence does). Reported
per B: aggregate tokens/s, time to first token, per-token gaps, peak memory, and how many
requests' tokens equal B = 1's and the engine's (``--engine-tokens``, a
bench/service_load.py BFCL result); bench/results/stack_batch_bfcl.json.

Needs the ``reference`` extra (torch, transformers, accelerate) plus ``gguf``, ``tokenizers`` and
``llguidance``; none of them is imported by the project's app at import time.

Usage::

    python bench/standard_stack.py [--gguf PATH] [--max-tokens 64] [--repeats 3]
    python bench/standard_stack.py --requests bench/workload/requests.jsonl --json [--limit N]
    python bench/standard_stack.py --requests FILE --serve   # request indices on stdin
    python bench/standard_stack.py --batch 1,4,8,16,32 --bfcl 32 --max-tokens 128
                                   [--engine-tokens bench/results/service_stream_bfcl.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from app.engine.fetch import default_model_path  # noqa: E402

N_VOCAB = 49152
EOS_ID = 2

# The request used by ``__main__`` (and a convenient default for other benches).
EXAMPLE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "city": {"type": "string", "enum": ["Paris", "Lyon", "Berlin"]},
    },
    "required": ["name", "age", "city"],
    "additionalProperties": False,
}
EXAMPLE_INSTRUCTION = (
    "Extract the person as JSON with keys name, age and city. "
    "Text: Bob Smith is 42 years old and lives in Lyon."
)


@dataclass
class StandardStack:
    """What :func:`standard_stack_decode` needs, as :func:`load_standard_stack` builds it."""

    model: Any  # transformers LlamaForCausalLM, float32, eval mode
    hf_tokenizer: Any  # transformers tokenizer loaded from the same GGUF
    lltok: Any  # llguidance.LLTokenizer over the same vocabulary
    tokenizer_json: str  # the ``tokenizers`` JSON both were built from


def _set_one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def load_transformers(gguf_path: str | os.PathLike, dtype: str = "float32"):
    """(model, tokenizer) from the GGUF with transformers: dequantized, on the CPU, eval mode."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _set_one_thread()
    p = Path(gguf_path)
    tok = AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(p.parent), gguf_file=p.name, dtype=getattr(torch, dtype)
    )
    model.eval()
    return model, tok


def make_lltokenizer(tokenizer_json_str_or_lltok: Any):
    """An ``llguidance.LLTokenizer`` from a ``tokenizers`` JSON string (or one, passed through)."""
    import llguidance

    if isinstance(tokenizer_json_str_or_lltok, llguidance.LLTokenizer):
        return tokenizer_json_str_or_lltok
    return llguidance.LLTokenizer(tokenizer_json_str_or_lltok, n_vocab=N_VOCAB, eos_token=EOS_ID)


def load_standard_stack(gguf_path: str | os.PathLike | None = None) -> tuple[StandardStack, float]:
    """Load model, tokenizer and llguidance tokenizer; returns (stack, seconds it took)."""
    t0 = time.perf_counter()
    model, tok = load_transformers(gguf_path or default_model_path())
    tok_json = tok.backend_tokenizer.to_str()
    lltok = make_lltokenizer(tok_json)
    return StandardStack(model, tok, lltok, tok_json), time.perf_counter() - t0


def grammar_from_spec(grammar_spec: dict[str, Any]) -> str:
    """llguidance grammar text for ``{"schema": obj} | {"regex": s} | {"choices": [..]} |
    {"lark": s} | {"json_object": None}``: the engine's own compilation (app.engine.grammar), so
    both stacks decode under the same grammar, compact JSON separators included."""
    from app.engine.grammar import compile_grammar

    if len(grammar_spec) != 1:
        raise ValueError(f"grammar spec needs exactly one key, got {sorted(grammar_spec)}")
    ((kind, value),) = grammar_spec.items()
    return compile_grammar(kind, value)


def make_matcher(lltok: Any, grammar_spec: dict[str, Any]):
    from llguidance import LLMatcher

    m = LLMatcher(lltok, grammar_from_spec(grammar_spec))
    if m.is_error():
        raise ValueError(f"grammar rejected by llguidance: {m.get_error()}")
    return m


def allowed_mask(matcher: Any, n_vocab: int = N_VOCAB) -> np.ndarray:
    """The matcher's next-token mask as a bool array of length ``n_vocab``."""
    bits = np.frombuffer(matcher.compute_bitmask(), dtype=np.uint8)
    return np.unpackbits(bits, bitorder="little")[:n_vocab].astype(bool)


class LLGuidanceLogitsProcessor:
    """Masks a (1, V) or (V,) logits tensor in place to what the matcher allows next.

    Shaped like a transformers ``LogitsProcessor`` (``__call__(input_ids, scores)``), but the
    caller consumes tokens itself (:meth:`consume`), which keeps the state explicit."""

    def __init__(self, matcher: Any, n_vocab: int = N_VOCAB):
        self.matcher = matcher
        self.n_vocab = n_vocab

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        allowed = torch.from_numpy(allowed_mask(self.matcher, self.n_vocab))
        if scores.shape[-1] > self.n_vocab:
            scores[..., self.n_vocab :] = float("-inf")
        scores[..., : self.n_vocab].masked_fill_(~allowed, float("-inf"))
        return scores

    def consume(self, token: int) -> None:
        if not self.matcher.consume_token(int(token)):
            raise RuntimeError(f"matcher refused token {token}: {self.matcher.get_error()}")


def new_kv_cache(model: Any) -> dict[str, Any]:
    """A fresh ``DynamicCache`` as the keyword the model's forward takes: ``cache`` in
    transformers 5.x, ``past_key_values`` before. The cache object is updated in place."""
    import inspect

    from transformers import DynamicCache

    params = inspect.signature(type(model).forward).parameters
    key = "cache" if "cache" in params else "past_key_values"
    try:
        cache = DynamicCache(config=model.config)
    except TypeError:  # older transformers: layers are created lazily
        cache = DynamicCache()
    return {key: cache}


def standard_stack_decode(
    model: Any,
    tokenizer_json_str_or_lltok: Any,
    prompt_ids: list[int] | np.ndarray,
    grammar_spec: dict[str, Any] | None,
    max_tokens: int,
    timings: dict | None = None,
) -> tuple[list[int], float]:
    """Greedy constrained decode; returns (generated token ids, seconds). ``timings``, if
    given, receives ``prefill_s`` (the prompt's forward and the first logits).

    ``grammar_spec`` None decodes unconstrained (still stopping on EOS). ``seconds`` is the wall
    time from the prefill to the last token, masks included; building the matcher (grammar
    compilation) is not included. Token ids exclude the prompt; see the module docstring for
    the stopping rules."""
    import torch

    _set_one_thread()
    if max_tokens < 1:
        raise ValueError("max_tokens must be >= 1")
    lltok = make_lltokenizer(tokenizer_json_str_or_lltok) if grammar_spec is not None else None
    proc = LLGuidanceLogitsProcessor(make_matcher(lltok, grammar_spec)) if lltok else None
    ids = torch.tensor([list(map(int, prompt_ids))], dtype=torch.long)
    out: list[int] = []
    t0 = time.perf_counter()
    cache = new_kv_cache(model)
    with torch.inference_mode():
        res = model(input_ids=ids, use_cache=True, logits_to_keep=1, **cache)
        if timings is not None:
            timings["prefill_s"] = time.perf_counter() - t0
        while True:
            scores = res.logits[0, -1, :].float().clone()
            if proc is not None:
                proc(None, scores)
            tok = int(torch.argmax(scores))
            out.append(tok)
            if proc is not None:
                proc.consume(tok)
            if tok == EOS_ID:
                break
            if proc is not None and proc.matcher.is_stopped():
                break
            if len(out) >= max_tokens:
                break
            step = torch.tensor([[tok]], dtype=torch.long)
            res = model(input_ids=step, use_cache=True, **cache)
    return out, time.perf_counter() - t0


def standard_stack_generate(
    model: Any,
    tokenizer_json_str_or_lltok: Any,
    prompt_ids: list[int] | np.ndarray,
    grammar_spec: dict[str, Any],
    max_tokens: int,
) -> tuple[list[int], float]:
    """The same decode through ``model.generate()`` with the mask as a ``LogitsProcessor``
    (how the stack is usually wired); returns (generated ids, seconds).

    Differs from :func:`standard_stack_decode` only where the grammar stops by itself: the
    matcher then allows nothing but EOS, so ``generate()`` spends one more forward and appends
    EOS. ``seconds`` excludes grammar compilation, as there."""
    import torch
    from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

    _set_one_thread()
    proc = LLGuidanceLogitsProcessor(
        make_matcher(make_lltokenizer(tokenizer_json_str_or_lltok), grammar_spec)
    )
    n_prompt = len(prompt_ids)

    class _Masked(LogitsProcessor):
        def __call__(self, input_ids, scores):
            if input_ids.shape[1] > n_prompt:  # the token chosen last step
                proc.consume(int(input_ids[0, -1]))
            return proc(input_ids, scores)

    config = GenerationConfig(
        do_sample=False,
        num_beams=1,
        max_new_tokens=max_tokens,
        eos_token_id=EOS_ID,
        pad_token_id=EOS_ID,
    )
    ids = torch.tensor([list(map(int, prompt_ids))], dtype=torch.long)
    t0 = time.perf_counter()
    with torch.inference_mode():
        seq = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            generation_config=config,
            logits_processor=LogitsProcessorList([_Masked()]),
        )
    return [int(t) for t in seq[0, n_prompt:]], time.perf_counter() - t0


def batched_decode(
    stack: StandardStack, prompts: list[list[int]], specs: list[dict], max_tokens: list[int]
) -> list[dict]:
    """Greedy constrained decodes of ``prompts`` as one left-padded batch (see the module
    docstring); per sequence its ``tokens`` and the seconds from the batch's start (its
    matchers' compilation included) to each token (``times``)."""
    import torch

    _set_one_thread()
    t0 = time.perf_counter()
    procs = [LLGuidanceLogitsProcessor(make_matcher(stack.lltok, s)) for s in specs]
    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), EOS_ID, dtype=torch.long)  # padding: masked out
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
        mask[i, width - len(p) :] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = new_kv_cache(stack.model)
    (kv,) = cache.values()
    out: list[dict] = [{"tokens": [], "times": []} for _ in prompts]
    active = list(range(len(prompts)))  # the sequence of each batch row
    with torch.inference_mode():
        res = stack.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True,
                          logits_to_keep=1, **cache)  # fmt: skip
        while True:
            logits, keep = res.logits[:, -1, :].float(), []
            for row, i in enumerate(active):
                scores = logits[row].clone()
                procs[i](None, scores)
                tok = int(torch.argmax(scores))
                procs[i].consume(tok)
                out[i]["tokens"].append(tok)
                out[i]["times"].append(time.perf_counter() - t0)
                stopped = tok == EOS_ID or procs[i].matcher.is_stopped()
                if not (stopped or len(out[i]["tokens"]) >= max_tokens[i]):
                    keep.append(row)
            if not keep:
                return out
            step = torch.tensor([[out[active[r]]["tokens"][-1]] for r in keep], dtype=torch.long)
            if len(keep) < len(active):  # retire the finished sequences
                rows = torch.tensor(keep, dtype=torch.long)
                kv.batch_select_indices(rows)
                mask, pos = mask[rows], pos[rows]
                active = [active[r] for r in keep]
            mask = torch.cat([mask, torch.ones((len(active), 1), dtype=torch.long)], dim=1)
            pos = pos[:, -1:] + 1
            res = stack.model(input_ids=step, attention_mask=mask, position_ids=pos,
                              use_cache=True, **cache)  # fmt: skip


def _peak_rss_reset() -> bool:
    """Reset this process's VmHWM (Linux ``clear_refs``); whether it could."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _vm_hwm() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def batch_level(stack: StandardStack, reqs: list, batch: int, stop_at: float) -> dict:
    """``reqs`` (DecodeRequests) as consecutive batches of ``batch``: the level's totals and
    each request's tokens. TTFT two ways: from its batch's start, and as ``batch`` clients of a
    static-batching server see it (client r sends its next request when its last one ends and
    it joins the next batch: row r of batch j follows row r of batch j - 1)."""
    from stream_load import percentile

    reset = _peak_rss_reset()
    results, wall, prev_end = [], 0.0, {}
    ttft, ttft_client, gaps, rows, padded = [], [], [], 0, 0
    for j in range(0, len(reqs), batch):
        if time.monotonic() > stop_at:
            break
        group = reqs[j : j + batch]
        prompts = [chat_prompt_ids(stack.hf_tokenizer, r.prompt) for r in group]
        specs = [{r.grammar[0]: r.grammar[1]} for r in group]
        out = batched_decode(stack, prompts, specs, [r.max_tokens for r in group])
        rows += sum(map(len, prompts))
        padded += len(prompts) * max(map(len, prompts))
        for r, (req, o) in enumerate(zip(group, out)):
            ttft.append(o["times"][0])
            ttft_client.append(wall + o["times"][0] - prev_end.get(r, 0.0))
            prev_end[r] = wall + o["times"][-1]
            gaps += [b - a for a, b in zip(o["times"], o["times"][1:])]
            results.append({"id": req.id, "tokens": o["tokens"]})
        wall += max(o["times"][-1] for o in out)
    tokens = sum(len(r["tokens"]) for r in results)
    return {
        "batch": batch,
        "requests": len(results),
        "tokens": tokens,
        "wall_s": round(wall, 2),
        "tokens_per_s": round(tokens / wall, 2) if wall else None,
        "ttft_s": {"p50": percentile(ttft, 0.5), "p99": percentile(ttft, 0.99)},
        "ttft_clients_s": {
            "p50": percentile(ttft_client, 0.5),
            "p99": percentile(ttft_client, 0.99),
        },
        "per_token_s": {"p50": percentile(gaps, 0.5), "p99": percentile(gaps, 0.99)},
        "prompt_rows": rows,
        "padded_prompt_rows": padded,
        "peak_rss_bytes": _vm_hwm() if reset else None,
        "results": results,
    }


def run_batched(stack: StandardStack, args) -> dict:
    """Every ``--batch`` level on the first ``--bfcl`` BFCL requests (bench/stream_load.py's,
    the same as bench/service_load.py --bfcl sends), after one unmeasured warm-up decode."""
    import torch
    import transformers
    from stream_load import bfcl_requests

    from app.engine.requests import DecodeRequest

    reqs = [DecodeRequest.from_dict(r) for r in bfcl_requests(args.bfcl, args.max_tokens)]
    engine = {}
    if args.engine_tokens:
        engine = json.loads(Path(args.engine_tokens).read_text())["tokens_first_level"]
    batched_decode(stack, [chat_prompt_ids(stack.hf_tokenizer, reqs[0].prompt)],
                   [{reqs[0].grammar[0]: reqs[0].grammar[1]}], [8])  # fmt: skip
    stop_at = time.monotonic() + args.deadline
    report = {"requests": [r.id for r in reqs], "max_tokens": args.max_tokens,
              "torch_threads": torch.get_num_threads(), "levels": [],
              "versions": {"torch": torch.__version__,
                           "transformers": transformers.__version__}}  # fmt: skip
    solo = None
    for b in args.levels:
        load = os.getloadavg()
        level = batch_level(stack, reqs, b, stop_at)
        level["load_average"] = {"start": load, "end": os.getloadavg()}
        toks = {r["id"]: r["tokens"] for r in level.pop("results")}
        solo = toks if solo is None else solo
        same = [toks[i] == solo[i] for i in toks if i in solo]
        level["equal_to_first_level"] = f"{sum(same)}/{len(same)}"
        level["not_equal_to_first_level"] = [i for i in toks if i in solo and toks[i] != solo[i]]
        same = [toks[i] == engine[i] for i in toks if i in engine]
        level["equal_to_engine"] = f"{sum(same)}/{len(same)}" if engine else None
        level["not_equal_to_engine"] = [i for i in toks if i in engine and toks[i] != engine[i]]
        if b == args.levels[0]:
            report["tokens_first_level"] = toks
        report["levels"].append(level)
        print(json.dumps(level), file=sys.stderr, flush=True)
    report["first_level"] = args.levels[0]
    return report


def chat_prompt_ids(hf_tokenizer: Any, user_text: str) -> list[int]:
    """The GGUF chat template applied to one user message (the template adds SmolLM's default
    system message), with the assistant turn opened; tokenized without extra special tokens."""
    text = hf_tokenizer.apply_chat_template(
        [{"role": "user", "content": user_text}], tokenize=False, add_generation_prompt=True
    )
    return list(hf_tokenizer(text, add_special_tokens=False)["input_ids"])


def decode_request(stack: StandardStack, req) -> dict:
    """One request (app.engine.requests.Request) the standard way: its ids and seconds."""
    if req.chat:
        prompt = chat_prompt_ids(stack.hf_tokenizer, req.prompt)
    else:
        prompt = list(stack.hf_tokenizer(req.prompt, add_special_tokens=False)["input_ids"])
    spec = None if req.grammar is None else {req.grammar[0]: req.grammar[1]}
    timings: dict = {}
    ids, secs = standard_stack_decode(
        stack.model, stack.lltok, prompt, spec, req.max_tokens, timings
    )
    return {
        "id": req.id,
        "prompt_tokens": prompt,
        "tokens": ids,
        "seconds": secs,
        "prefill_s": timings["prefill_s"],
    }


def summarize(results: list[dict]) -> dict:
    """Totals over :func:`decode_request` results, as bench/engine.py reports its plans."""
    import resource

    import torch
    import transformers

    tokens = sum(len(r["tokens"]) for r in results)
    decode_s = sum(r["seconds"] - r["prefill_s"] for r in results)
    return {
        "results": results,
        "requests": len(results),
        "tokens": tokens,
        "decode_s": decode_s,
        "tokens_per_s": tokens / decode_s if decode_s else 0.0,
        "tokens_per_s_with_prefill": tokens / max(sum(r["seconds"] for r in results), 1e-9),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }


def run_requests(stack: StandardStack, path: str, limit: int | None) -> dict:
    """Decode a JSONL workload the standard way; the summary bench/engine.py compares."""
    from app.engine.requests import load_requests

    return summarize([decode_request(stack, req) for req in load_requests(path)[:limit]])


def serve_requests(stack: StandardStack, path: str, inp=sys.stdin, out=sys.stdout) -> None:
    """Line mode, so a bench can interleave this stack with its own per request: each input
    line is a request's index in ``path``; each answer is one JSON line (that request's
    :func:`decode_request`). At end of input, one last line: the :func:`summarize` totals
    without the per-request results."""
    from app.engine.requests import load_requests

    requests = load_requests(path)
    results = []
    print(json.dumps({"ready": True}), file=out, flush=True)
    for line in inp:
        results.append(decode_request(stack, requests[int(line)]))
        print(json.dumps(results[-1]), file=out, flush=True)
    summary = summarize(results)
    summary.pop("results")
    print(json.dumps(summary), file=out, flush=True)


def _check_batched(ap, args) -> None:
    """``--batch`` and ``--bfcl`` at the boundary (each needs the other)."""
    from stream_load import BFCL_MAX

    if not (args.batch and args.bfcl is not None):
        ap.error("--batch and --bfcl go together (batch sizes, and the BFCL requests they run)")
    try:
        args.levels = [int(b) for b in args.batch.split(",")]
    except ValueError:
        ap.error(f"--batch must be comma-separated integers, got {args.batch!r}")
    if not all(1 <= b <= 64 for b in args.levels):
        ap.error(f"--batch sizes must be in [1, 64], got {args.batch}")
    top = max(args.levels)
    if not top <= args.bfcl <= BFCL_MAX:
        ap.error(f"--bfcl must be in [{top}, {BFCL_MAX}] (at least the largest --batch, so "
                 f"that batch is full), got {args.bfcl}")  # fmt: skip
    if not 1 <= args.max_tokens <= 4096:
        ap.error(f"--max-tokens must be in [1, 4096], got {args.max_tokens}")
    if not 0 < args.deadline <= 7200:
        ap.error(f"--deadline must be in (0, 7200] seconds, got {args.deadline}")
    if args.engine_tokens and not Path(args.engine_tokens).is_file():
        ap.error(f"--engine-tokens: no such file {args.engine_tokens}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gguf", default=None, help="GGUF path (default: the project cache)")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--requests", default=None, help="a JSONL workload: decode it all")
    ap.add_argument("--limit", type=int, default=None, help="with --requests: the first N")
    ap.add_argument("--json", action="store_true", help="with --requests: the summary as JSON")
    ap.add_argument(
        "--serve",
        action="store_true",
        help="with --requests: read request indices on stdin, answer one JSON line each",
    )
    ap.add_argument("--batch", default=None, help="batch sizes, e.g. 1,4,8,16,32 (with --bfcl)")
    ap.add_argument("--bfcl", type=int, default=None, metavar="N", help="the first N BFCL requests")
    ap.add_argument("--engine-tokens", default=None, help="a service_load.py --bfcl result")
    ap.add_argument("--deadline", type=float, default=1800.0, help="seconds for the whole run")
    ap.add_argument("--out", default=None, help="default bench/results/stack_batch_bfcl.json")
    args = ap.parse_args(argv)
    if args.batch or args.bfcl:
        _check_batched(ap, args)
        stack, load_s = load_standard_stack(args.gguf)
        report = run_batched(stack, args)
        report["load_s"] = load_s
        out = Path(args.out or Path(__file__).parent / "results" / "stack_batch_bfcl.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {out}")
        return 0

    if args.requests and args.serve:
        stack, _ = load_standard_stack(args.gguf)
        serve_requests(stack, args.requests)
        return 0
    if args.requests:
        stack, load_s = load_standard_stack(args.gguf)
        summary = run_requests(stack, args.requests, args.limit)
        summary["load_s"] = load_s
        print(
            json.dumps(summary)
            if args.json
            else f"{summary['tokens']} tokens, {summary['tokens_per_s']:.2f} tokens/s"
        )
        return 0

    stack, load_s = load_standard_stack(args.gguf)
    print(f"load: {load_s:.1f} s")
    prompt = chat_prompt_ids(stack.hf_tokenizer, EXAMPLE_INSTRUCTION)
    spec = {"schema": EXAMPLE_SCHEMA}
    t0 = time.perf_counter()
    make_matcher(stack.lltok, spec)
    print(f"grammar compile + matcher: {1e3 * (time.perf_counter() - t0):.1f} ms")
    print(f"prompt: {len(prompt)} tokens")
    runs = []
    for _ in range(args.repeats):
        cpu0 = time.process_time()
        ids, secs = standard_stack_decode(stack.model, stack.lltok, prompt, spec, args.max_tokens)
        cpu = time.process_time() - cpu0
        runs.append(secs)
        print(
            f"  {len(ids)} tokens in {secs:.2f} s: {len(ids) / secs:.1f} tokens/s "
            f"({len(ids) / cpu:.1f} per CPU-second)"
        )
    print("ids:", ids)
    print("text:", repr(stack.hf_tokenizer.decode(ids)))
    gen, gen_s = standard_stack_generate(stack.model, stack.lltok, prompt, spec, args.max_tokens)
    same = gen[: len(ids)] == ids
    print(f"generate(): {len(gen)} tokens, {len(gen) / gen_s:.1f} tokens/s; same ids: {same}")
    free, free_s = standard_stack_decode(stack.model, stack.lltok, prompt, None, len(ids))
    print(f"unconstrained, same length: {len(free)} tokens, {len(free) / free_s:.1f} tokens/s")
    best = min(runs)
    print(f"best constrained: {len(ids) / best:.1f} tokens/s (prefill included)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
