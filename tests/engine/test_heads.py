"""The output projection on the quantized kernel (app.engine.head): the gather equals the dense
head bit for bit, rows of a batched dense call equal solo calls, DenseHead and SparseHead pick the
same token on the real model, and the scheduler scores a pass's DenseHead steps in one call."""

import dataclasses

import numpy as np
import pytest

from app.engine import qkernel
from app.engine.batch_limits import BatchLimits
from app.engine.head import BlasHead, QHead, as_head, output_head
from app.engine.options import DecodeOptions
from app.engine.plans import dense_head, sparse_head
from app.engine.scheduler import Scheduler
from app.engine.weights import LlamaConfig, random_weights


def _state(engine, text="The capital of France is"):
    ids = engine.tokenizer.encode(text)
    return engine.body.forward(ids, engine.body.new_cache())[-1]


def test_the_engine_head_reads_the_stored_q8_0_blocks(engine):
    head = engine.head
    assert isinstance(head, QHead) and head.batch_invariant
    assert head.packed.fmt == qkernel.Q8  # the tied embedding, as the GGUF stores it
    assert head.packed.out == engine.config.vocab and head.packed.inp == engine.config.d
    assert head.packed.nbytes < engine.output.nbytes / 3  # int8 + f16 scales vs float32


def test_gather_equals_dense_bit_for_bit_on_the_real_head(engine):
    rng = np.random.default_rng(0)
    h = _state(engine)
    full = engine.head.logits(h[None])[0]
    vocab = engine.config.vocab
    for k in (1, 2, 15, 16, 17, 64, 1000, 24_000, vocab - 1, vocab):
        ids = np.sort(rng.choice(vocab, k, replace=False))
        assert np.array_equal(engine.head.rows(h[None], ids)[0], full[ids]), k
    assert np.array_equal(engine.head.rows(h[None], np.array([vocab - 1]))[0], full[-1:])


def test_dense_and_sparse_pick_the_same_token_with_the_same_margin(engine):
    rng = np.random.default_rng(1)
    h = _state(engine)
    for k in (2, 3, 17, 65, 1000, 24_000, engine.config.vocab):
        legal = np.sort(rng.choice(engine.config.vocab, k, replace=False))
        assert dense_head(engine.head, h, legal) == sparse_head(engine.head, h, legal), k
    everything = np.arange(engine.config.vocab)
    assert engine.tokenizer.decode([dense_head(engine.head, h, everything)[0]]) == " Paris"


def test_q_head_is_the_float32_head_within_rounding(engine):
    """Same weights (Q8_0 dequantized exactly), other summation order: |Δ| ≤ 2 γ_d |W| |h|."""
    h = _state(engine, "Write a JSON object with a name:")
    q = engine.head.logits(h[None])[0].astype(np.float64)
    b = BlasHead(engine.output).logits(h[None])[0][: engine.config.vocab].astype(np.float64)
    d, u = engine.config.d, 2.0**-24
    bound = 2 * (d * u / (1 - d * u)) * (np.abs(engine.output[: len(q)]) @ np.abs(h))
    assert np.all(np.abs(q - b) <= bound)
    assert q.argmax() == b.argmax()


def test_batched_rows_equal_solo_rows_and_batched_is_looked_up(engine):
    rng = np.random.default_rng(2)
    states = rng.standard_normal((16, engine.config.d), dtype=np.float32)
    solo = [engine.head.logits(s[None])[0] for s in states]
    for b in (2, 3, 4, 5, 16):
        out = engine.head.logits(states[:b])
        assert all(np.array_equal(out[i], solo[i]) for i in range(b)), b
    with engine.head.batched(states[:4]) as out:
        got = engine.head.logits(states[2][None])[0]
        assert np.shares_memory(got, out)  # looked up, not recomputed
        assert np.array_equal(got, solo[2])
    assert not engine.head._primed  # forgotten after the block


def test_a_float32_model_gets_a_q_head_over_its_float32_matrix():
    cfg = LlamaConfig(n_layers=1, d=64, d_ff=96, n_heads=4, n_kv_heads=2, head_dim=16, vocab=203)
    w = random_weights(cfg, np.random.default_rng(3))
    head = output_head(w, w.output, "q")
    assert head.packed.fmt == qkernel.F32
    rng = np.random.default_rng(4)
    for _ in range(50):
        h = rng.standard_normal(cfg.d, dtype=np.float32)
        legal = np.sort(rng.choice(cfg.vocab, int(rng.integers(2, cfg.vocab)), replace=False))
        assert dense_head(head, h, legal) == sparse_head(head, h, legal)
    assert isinstance(output_head(w, w.output, "blas"), BlasHead)
    assert as_head(w.output).matrix is w.output and as_head(head) is head
    with pytest.raises(ValueError, match="kernel"):
        output_head(w, w.output, "gemm")


def test_scheduler_scores_a_pass_s_dense_heads_in_one_call(engine, workload):
    """Always-DenseHead under batch 4: the DenseHead steps share their passes' head calls, and
    every request decodes its solo tokens."""
    reqs = [dataclasses.replace(r, max_tokens=6) for r in workload[:4]]
    opts = DecodeOptions(plan="dense")
    session = engine.session()
    solo = [session.decode(r, opts).tokens for r in reqs]
    sched = Scheduler(session, BatchLimits(max_batch=4))
    got = [r.tokens for r in sched.decode_all(reqs, opts)]
    assert got == solo
    assert sched.dense_batched >= 4
