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


def _write_tiny_gguf(path, tied):
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
        writer.add_tensor(name, np.ascontiguousarray(a, dtype=np.float32))
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


def test_model_info_on_a_path(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LLMQP_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "tiny.gguf"
    _write_tiny_gguf(path, tied=False)
    assert main(["model", "info", "--model", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["model"] == "tiny-test-llama" and info["source"] == {"file": str(path)}
    assert info["config"]["tied"] is False and info["config"]["n_kv_heads"] == 2
