"""``--model PATH``: any Llama-family GGUF — here a tiny one written by the test, with an untied
head and a vocabulary that is not a multiple of the heads' 64-row blocks."""

import json

import gguf
import numpy as np
import pytest

from app.cli import main
from app.engine.engine import Engine
from app.engine.weights import LlamaConfig, random_weights

# byte-level BPE over a tiny alphabet: the 256 byte symbols, a few merges, two control tokens
BYTES = [chr(c) for c in range(33, 127)] + ["Ġ"]  # printable ASCII and the byte-level space
MERGES = ["Ġ t", "h e", "Ġt he"]
TOKENS = ["<|end|>", "<|start|>"] + BYTES + ["Ġt", "he", "Ġthe"]


#: ``mixed=True``: tensors stored as each type the loader reads (d_ff 48: ffn_down's rows are
#: not whole 32-blocks, so it stays float)
MIXED = {"attn_q": "Q4_1", "attn_k": "Q4_0", "attn_v": "Q8_0", "attn_output": "F16"}
MIXED |= {"ffn_gate": "Q4_1", "ffn_up": "Q8_0", "token_embd": "Q8_0", "output": "F16"}


def _tensor_data(name, a, mixed):
    """(array to write, its raw type or None): ``a`` as the type MIXED names for ``name``."""
    kind = MIXED.get(name.split(".")[-2]) if mixed else None
    if kind == "F16":
        return a.astype(np.float16), None
    if kind is not None:
        qtype = gguf.GGMLQuantizationType[kind]
        return gguf.quants.quantize(np.ascontiguousarray(a, dtype=np.float32), qtype), qtype
    return np.ascontiguousarray(a, dtype=np.float32), None


def _write_tiny_gguf(path, tied, mixed=False):
    cfg = LlamaConfig(
        n_layers=2,
        d=32,
        d_ff=48,
        n_heads=4,
        n_kv_heads=2,
        head_dim=8,
        vocab=len(TOKENS),
        rope_base=10000.0,
        norm_eps=1e-5,
        context=64,
        tied=tied,
    )
    w = random_weights(cfg, np.random.default_rng(7))
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-test-llama")
    writer.add_block_count(cfg.n_layers)
    writer.add_context_length(cfg.context)
    writer.add_embedding_length(cfg.d)
    writer.add_feed_forward_length(cfg.d_ff)
    writer.add_head_count(cfg.n_heads)
    writer.add_head_count_kv(cfg.n_kv_heads)
    writer.add_rope_dimension_count(cfg.head_dim)
    writer.add_rope_freq_base(cfg.rope_base)
    writer.add_layer_norm_rms_eps(cfg.norm_eps)
    writer.add_vocab_size(cfg.vocab)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(TOKENS)
    writer.add_token_types([3, 3] + [1] * (len(TOKENS) - 2))
    writer.add_token_merges(MERGES)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(0)
    tensors = {"token_embd.weight": w.tok_embd, "output_norm.weight": w.norm}
    if not tied:
        tensors["output.weight"] = w.output
    names = (
        "attn_norm",
        "attn_q",
        "attn_k",
        "attn_v",
        "attn_output",
        "ffn_norm",
        "ffn_gate",
        "ffn_up",
        "ffn_down",
    )
    for i, lw in enumerate(w.layers):
        for name, a in zip(names, lw.__dict__.values()):
            tensors[f"blk.{i}.{name}.weight"] = a
    for name, a in tensors.items():
        data, qtype = _tensor_data(name, a, mixed)
        writer.add_tensor(name, data, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return w


@pytest.mark.parametrize("tied", [False, True])
def test_a_tiny_llama_gguf_loads_and_every_plan_agrees(tmp_path, monkeypatch, tied):
    monkeypatch.setenv("LLMQP_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "tiny.gguf"
    w = _write_tiny_gguf(path, tied)
    engine = Engine.load(path)
    assert engine.config.tied is tied and engine.config.vocab == len(TOKENS)
    assert np.array_equal(engine.weights.layers[1].w_down, w.layers[1].w_down)
    assert engine.output.shape[0] % 64 == 0  # padded for the heads
    want = [TOKENS.index("t"), TOKENS.index("he"), TOKENS.index("Ġthe")]  # merges applied
    assert engine.tokenizer.encode("the the") == want
    from app.engine.requests import DecodeRequest

    req = DecodeRequest("tiny", "the", ("regex", "[a-z]{3,6}"), 8)
    runs = {
        p: engine.decode(req, plan=p).tokens for p in ("dense", "sparse", "forced", "full", "auto")
    }
    assert len(set(map(tuple, runs.values()))) == 1 and len(runs["dense"]) >= 3


@pytest.mark.parametrize("kernel", ["q", "blas"])
def test_quantized_and_half_tensors_load_and_run(tmp_path, monkeypatch, kernel):
    """Q4_0, Q4_1, Q8_0, F16 and F32 tensors in one file: the q kernel reads the quantized
    blocks as stored, the float32 copies are their exact dequantization, every plan agrees."""
    from gguf.quants import dequantize

    from app.engine.requests import DecodeRequest

    monkeypatch.setenv("LLMQP_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "mixed.gguf"
    _write_tiny_gguf(path, tied=False, mixed=True)
    engine = Engine.load(path, kernel=kernel)
    stored = engine.weights.stored
    assert {s.kind for s in stored.values()} == {"Q4_0", "Q4_1", "Q8_0"}
    st = stored["blk.1.attn_k.weight"]
    assert st.shape == (16, 32)
    want = dequantize(np.asarray(st.data), gguf.GGMLQuantizationType.Q4_0).reshape(st.shape)
    assert np.array_equal(engine.weights.layers[1].wk, want)
    assert engine.body.kernel == kernel
    if kernel == "q":  # q, k, v: a Q4_1, a Q4_0 and a Q8_0 part, read as stored
        assert [p.fmt for p in engine.body.proj[0].qkv.parts] == [1, 1, 2]
    req = DecodeRequest("tiny", "the", ("regex", "[a-z]{3,6}"), 8)
    plans = ("dense", "sparse", "forced", "full", "auto")
    runs = {p: engine.decode(req, plan=p).tokens for p in plans}
    assert len(set(map(tuple, runs.values()))) == 1 and len(runs["dense"]) >= 3


def test_model_info_on_a_path(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LLMQP_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "tiny.gguf"
    _write_tiny_gguf(path, tied=False)
    assert main(["model", "info", "--model", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["model"] == "tiny-test-llama" and info["source"] == {"file": str(path)}
    assert info["config"]["tied"] is False and info["config"]["n_kv_heads"] == 2
