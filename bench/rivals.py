"""The CPU stacks a user would pick instead, on the same requests: onnxruntime-genai (int4) and
llama.cpp (the GGUF's own Q4_1/Q8_0 kernels; through llama-cpp-python, or node-llama-cpp's
prebuilt binaries), interleaved per request with the engine's always-DenseHead and ``auto``
(its default: the cost rule's plan per step, drafts included). Results in
bench/results/rivals.json.

    python bench/rivals.py [--workload bfcl|project] [--requests FILE] [--limit N]
                           [--max-tokens 48] [--stacks ortgenai,llamacpp,nodellamacpp]
                           [--kernel NAME]

Every stack gets the engine's prompt token ids (chat template applied once) and one thread.
onnxruntime-genai decodes greedily under its built-in llguidance with the engine's own grammar
(the schema with the engine's compact JSON format as ``x-guidance``), so its tokens can equal
DenseHead's; where they differ, it is numerics (int4 weights, its own kernels), not the grammar.
llama.cpp decodes greedily under its own grammar sampler (GBNF converted from the JSON schema by
llama-cpp-python), whose JSON whitespace differs from llguidance's: its token ids are not
comparable, so agreement is reported as "the same JSON value". node-llama-cpp (``nodellamacpp``)
is the same through its Node.js binding: its own JSON-schema grammar, greedy, stopping where its
chat API stops a JSON grammar (four newlines; the JSON value is unchanged by them). Requests
without a JSON schema (regex, choices, lark) run on onnxruntime-genai only.

Tokens/s counts decode only: the engine's tokens over its time after prefill; a rival's tokens
after the first over the time after its first token (the first token's step includes prefill).

Set-up (a virtual environment of its own, so the project's stays clean)::

    python -m venv .venv-rivals
    .venv-rivals/bin/pip install torch==2.13.0   # the CPU build
    .venv-rivals/bin/pip install -c constraints.txt transformers accelerate gguf tokenizers \\
        llguidance jinja2 threadpoolctl numpy "onnxruntime>=1.31" onnxruntime-genai onnx onnx-ir
    CMAKE_ARGS="-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF \\
        -DLLAVA_BUILD=OFF -DLLAMA_CURL=OFF -DGGML_NATIVE=ON -DGGML_OPENMP=OFF" \\
        .venv-rivals/bin/pip install llama-cpp-python==0.3.36 diskcache   # ~10+ min build
    .venv-rivals/bin/python bench/rivals.py --build-ortgenai   # GGUF -> HF folder -> int4 ONNX

On this machine class llama.cpp built this way segfaults in ``llama_decode`` (see
docs/results.md); ``--stacks ortgenai`` runs the rest. node-llama-cpp ships prebuilt
llama.cpp binaries (no build; Node.js >= 20)::

    npm install --prefix ~/.cache/llmqp/rivals/node node-llama-cpp@3.22.1

The int4 model is built once into ``<cache>/rivals/`` (``$LLMQP_CACHE`` or ``~/.cache/llmqp``):
transformers writes a Hugging Face folder from the same GGUF (dequantized, offline), and
onnxruntime-genai's model builder quantizes it to int4 (MatMulNBits) for the CPU.
"""

from __future__ import annotations

import argparse
import inspect
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from app.engine.fetch import cache_dir, default_model_path  # noqa: E402
from app.engine.grammar import JSON_FORMAT  # noqa: E402

STACKS = ("ortgenai", "llamacpp", "nodellamacpp")


def rivals_dir() -> Path:
    return cache_dir() / "rivals"


def build_ortgenai(progress=print) -> Path:
    """The int4 CPU ONNX model of the default GGUF (built once); returns its folder."""
    out = rivals_dir() / "smollm2-ortgenai-int4-cpu"
    if (out / "genai_config.json").is_file():
        return out
    hf = rivals_dir() / "smollm2-hf"
    if not (hf / "config.json").is_file():
        from standard_stack import load_transformers

        progress(f"writing a Hugging Face folder from the GGUF to {hf}")
        model, tok = load_transformers(default_model_path())
        model.hf_quantizer = None  # dequantized float32 tensors: nothing quantized is left
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(hf)
        tok.save_pretrained(hf)
    progress(f"building the int4 CPU model into {out}")
    cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf)]
    cmd += ["-o", str(out), "-p", "int4", "-e", "cpu", "-c", str(rivals_dir() / "build-cache")]
    subprocess.run(cmd, check=True)
    return out


class OrtGenai:
    """onnxruntime-genai on one thread, greedy, with its llguidance."""

    name = "ortgenai"

    def __init__(self, folder: Path):
        import onnxruntime_genai as og

        self.og = og
        self.version = og.__version__
        config = og.Config(str(folder))
        config.overlay(
            json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": 1}}}})
        )
        self.model = og.Model(config)

    def _guidance(self, grammar) -> tuple[str, str] | None:
        if grammar is None:
            return None
        kind, value = grammar
        if kind in ("schema", "json_object"):
            schema = {"type": "object"} if kind == "json_object" else dict(value)
            schema.setdefault("x-guidance", JSON_FORMAT)
            return "json_schema", json.dumps(schema)
        if kind == "regex":
            return "regex", value
        if kind == "choices":
            return "lark_grammar", "start: " + " | ".join(json.dumps(c) for c in value)
        return "lark_grammar", value

    def decode(self, prompt_ids, grammar, max_tokens: int) -> dict:
        og = self.og
        params = og.GeneratorParams(self.model)
        params.set_search_options(do_sample=False, max_length=len(prompt_ids) + max_tokens)
        guidance = self._guidance(grammar)
        if guidance is not None:
            params.set_guidance(*guidance)
        t0 = time.perf_counter()
        gen = og.Generator(self.model, params)
        gen.append_tokens(list(prompt_ids))
        tokens, first = [], None
        while not gen.is_done() and len(tokens) < max_tokens:
            gen.generate_next_token()
            tokens.append(int(gen.get_next_tokens()[0]))
            first = first or time.perf_counter()
        return {"tokens": tokens, "seconds": time.perf_counter() - t0, "first_s": first - t0}


class LlamaCpp:
    """llama.cpp through llama-cpp-python, one thread, greedy, its own JSON-schema grammar."""

    name = "llamacpp"

    def __init__(self, gguf: Path, n_ctx: int = 8192):
        import llama_cpp
        from llamacpp_anchor import load_llamacpp

        self.version = llama_cpp.__version__
        self.llm, _ = load_llamacpp(gguf, n_ctx=n_ctx, threads=1)

    def decode(self, prompt_ids, grammar, max_tokens: int) -> dict | None:
        from llama_cpp import LlamaGrammar

        if grammar is None or grammar[0] not in ("schema", "json_object"):
            return None
        schema = {"type": "object"} if grammar[0] == "json_object" else grammar[1]
        g = LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
        eos = self.llm.token_eos()
        tokens, first = [], None
        t0 = time.perf_counter()
        for tok in self.llm.generate(list(prompt_ids), temp=0.0, top_k=1, grammar=g, reset=True):
            tokens.append(int(tok))
            first = first or time.perf_counter()
            if tok == eos or len(tokens) >= max_tokens:
                break
        return {"tokens": tokens, "seconds": time.perf_counter() - t0, "first_s": first - t0}


# The node side of NodeLlamaCpp: JSON lines in ({ids, schema, max}), JSON lines out.
NODE_DRIVER = """
const [dir, gguf, nCtx] = process.argv.slice(2);
const nlc = await import(`${dir}/node_modules/node-llama-cpp/dist/index.js`);
const llama = await nlc.getLlama({gpu: false, build: "never", maxThreads: 1, logLevel: "error"});
const model = await llama.loadModel({modelPath: gguf, gpuLayers: 0});
const context = await model.createContext({contextSize: Number(nCtx), threads: 1});
const seq = context.getSequence();
const out = (o) => process.stdout.write(JSON.stringify(o) + "\\n");
out({version: await nlc.getModuleVersion()});
const lines = (await import("node:readline")).createInterface({input: process.stdin});
for await (const line of lines) {
  const {ids, schema, max} = JSON.parse(line);
  await seq.clearHistory();
  let grammar;
  try {
    grammar = await llama.createGrammarForJsonSchema(schema);
  } catch (e) {
    out({error: String(e.message ?? e)});
    continue;
  }
  const state = new nlc.LlamaGrammarEvaluationState({model, grammar});
  const tokens = [];
  let first = null, tail = "";
  const t0 = performance.now();
  for await (const tok of seq.evaluate(ids, {temperature: 0, grammarEvaluationState: state})) {
    tokens.push(tok);
    first ??= performance.now();
    tail = (tail + model.detokenize([tok])).slice(-4);
    if (model.isEogToken(tok) || tail === "\\n\\n\\n\\n" || tokens.length >= max) break;
  }
  out({tokens, seconds: (performance.now() - t0) / 1000, first_s: (first - t0) / 1000});
}
"""


def _one_of(schema):
    """node-llama-cpp's JSON-schema subset spells ``anyOf`` as ``oneOf`` (and ignores ``anyOf``)."""
    if isinstance(schema, dict):
        return {("oneOf" if k == "anyOf" else k): _one_of(v) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_one_of(v) for v in schema]
    return schema


class NodeLlamaCpp:
    """llama.cpp through node-llama-cpp (prebuilt), one thread, greedy, its JSON-schema grammar."""

    name = "nodellamacpp"

    def __init__(self, gguf: Path, n_ctx: int = 8192):
        folder = rivals_dir() / "node"
        driver = folder / "rivals_driver.mjs"  # a file: node-llama-cpp forks with node's own args
        driver.write_text(NODE_DRIVER)
        cmd = ["node", str(driver), str(folder), str(gguf), str(n_ctx)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.version = json.loads(self.proc.stdout.readline())["version"]

    def decode(self, prompt_ids, grammar, max_tokens: int) -> dict | None:
        if grammar is None or grammar[0] not in ("schema", "json_object"):
            return None
        schema = {"type": "object"} if grammar[0] == "json_object" else _one_of(grammar[1])
        msg = {"ids": [int(t) for t in prompt_ids], "schema": schema, "max": max_tokens}
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())


def _json_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def _strip_eos(tokens, eos: int) -> list[int]:
    return tokens[:-1] if tokens and tokens[-1] == eos else list(tokens)


def _requests(args):
    from app.engine.requests import load_requests

    if args.requests:
        path = Path(args.requests)
    elif args.workload == "project":
        path = HERE / "workload" / "requests.jsonl"
    else:
        from app.cli.bfcl import write_requests
        from app.engine.fetch import fetch_bfcl

        fetch_bfcl(progress=lambda s: print(s, file=sys.stderr))
        path = Path(args.out).with_name("bfcl_requests.jsonl")
        write_requests(path, limit=args.limit, max_tokens=args.max_tokens)
        return load_requests(path)
    return load_requests(path)[: args.limit]


def _engine(kernel: str | None):
    from app.engine.engine import Engine

    if kernel is None:
        return Engine.load()
    if "kernel" not in inspect.signature(Engine.load).parameters:
        raise SystemExit("--kernel: this engine's Engine.load takes no kernel (not merged yet)")
    return Engine.load(kernel=kernel)


def _engine_run(result) -> dict:
    return {
        "tokens": len(result.tokens),
        "seconds": result.seconds,
        "decode_s": result.seconds - result.prefill_s,
        "stop": result.stop,
    }


def _row(req, engine, dense, auto, stacks, cap: int) -> dict:
    """One request on the engine (already decoded: always-DenseHead ``dense`` and ``auto``, the
    engine's default plan choice) and on every rival."""
    eos = engine.tokenizer.eos
    ref = _strip_eos(dense.tokens, eos)
    row = {"id": req.id, "dense": _engine_run(dense), "auto": _engine_run(auto)}
    row["auto"]["identical_tokens"] = row["auto"]["same_json"] = auto.tokens == dense.tokens
    want = _json_value(dense.text)
    for stack in stacks:
        out = stack.decode(dense.prompt_tokens, req.grammar, cap)
        if out is None:
            continue
        if "error" in out:  # a grammar the stack rejects: counted, not timed
            row[stack.name] = {"error": out["error"]}
            continue
        toks = _strip_eos(out["tokens"], eos)
        text = engine.tokenizer.decode(toks)
        n = len(out["tokens"])
        row[stack.name] = {
            "tokens": n,
            "seconds": out["seconds"],
            "decode_s": out["seconds"] - out["first_s"],
            "decoded_tokens": n - 1,
            "identical_tokens": toks == ref,
            "same_json": want is not None and _json_value(text) == want,
            "text": text,
        }
    return row


def _totals(rows, name: str) -> dict | None:
    rs = [r[name] for r in rows if name in r and "error" not in r[name]]
    errors = sum(name in r and "error" in r[name] for r in rows)
    if not rs:
        return None
    n = sum(r.get("decoded_tokens", r["tokens"]) for r in rs)
    out = {
        "requests": len(rs),
        "tokens": sum(r["tokens"] for r in rs),
        "tokens_per_s": n / sum(r["decode_s"] for r in rs),
        "tokens_per_s_with_prefill": sum(r["tokens"] for r in rs) / sum(r["seconds"] for r in rs),
    }
    if name != "dense":
        out["identical_tokens"] = sum(r["identical_tokens"] for r in rs)
        out["same_json"] = sum(r["same_json"] for r in rs)
        out["errors"] = errors
    return out


def _auto_speedups(report: dict) -> None:
    """Each rival's ``auto_speedup``: auto's tokens/s over the stack's on the requests the stack
    decoded (llama.cpp takes JSON schemas only)."""
    for name, t in report["totals"].items():
        if t is None or name in ("dense", "auto"):
            continue
        ran = [r for r in report["rows"] if name in r and "error" not in r[name]]
        t["auto_speedup"] = _totals(ran, "auto")["tokens_per_s"] / t["tokens_per_s"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", choices=("bfcl", "project"), default="bfcl")
    ap.add_argument("--requests", default=None, help="a request JSONL instead of --workload")
    ap.add_argument("--limit", type=int, default=10, help="bfcl: per category; else: the first N")
    ap.add_argument("--max-tokens", type=int, default=48, help="cap per request, every stack")
    ap.add_argument("--stacks", default=",".join(STACKS), help=f"comma-separated: {STACKS}")
    ap.add_argument("--kernel", default=None, help="the engine's kernel, where it has one")
    ap.add_argument("--build-ortgenai", action="store_true", help="build the int4 model; exit")
    ap.add_argument("--out", default=str(HERE / "results" / "rivals.json"))
    args = ap.parse_args(argv)
    if args.build_ortgenai:
        print(build_ortgenai())
        return 0
    if args.limit < 1 or not 1 <= args.max_tokens <= 4096:
        raise SystemExit("--limit must be >= 1 and --max-tokens in [1, 4096]")
    names = [s for s in args.stacks.split(",") if s]
    if set(names) - set(STACKS):
        raise SystemExit(f"--stacks: each of {', '.join(STACKS)}")

    import dataclasses

    engine = _engine(args.kernel)
    requests = [
        dataclasses.replace(r, max_tokens=min(r.max_tokens, args.max_tokens))
        for r in _requests(args)
    ]
    stacks = []
    if "ortgenai" in names:
        stacks.append(OrtGenai(build_ortgenai()))
    if "llamacpp" in names:
        stacks.append(LlamaCpp(default_model_path(), n_ctx=engine.context))
    if "nodellamacpp" in names:
        stacks.append(NodeLlamaCpp(default_model_path(), n_ctx=engine.context))
    engine.decode(requests[0], plan="dense")  # warm every stack once
    for s in stacks:
        s.decode(engine.prompt_ids(requests[0]), requests[0].grammar, 4)
    rows = []
    for n, req in enumerate(requests, 1):
        dense = engine.decode(req, plan="dense")
        auto = engine.decode(req, plan="auto")
        rows.append(_row(req, engine, dense, auto, stacks, req.max_tokens))
        print(f"  [{n}/{len(requests)}] {req.id}", file=sys.stderr, flush=True)
    report = {
        "workload": args.requests or args.workload,
        "requests": len(requests),
        "max_tokens": args.max_tokens,
        "kernel": args.kernel or "default",
        "machine": "this CPU, one thread per stack, stacks interleaved per request",
        "versions": {s.name: s.version for s in stacks},
        "totals": {k: _totals(rows, k) for k in ["dense", "auto", *names]},
        "rows": rows,
    }
    _auto_speedups(report)
    for k, t in report["totals"].items():
        if t is None:
            continue
        same = f"  identical tokens {t['identical_tokens']}/{t['requests']}" if k != "dense" else ""
        same += f", same JSON {t['same_json']}/{t['requests']}" if k != "dense" else ""
        same += f"; auto = {t['auto_speedup']:.2f}x it" if k not in ("dense", "auto") else ""
        print(f"{k:>9}: {t['tokens_per_s']:6.2f} tokens/s on {t['requests']} requests{same}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
