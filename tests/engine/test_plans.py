"""The head kernels: DenseHead and SparseHead pick the same token, with the same score, always."""

import numpy as np
import pytest

from app.engine.plans import PAD_ROWS, dense_head, forced_token, margin_of, sparse_head


def _random_case(rng, vocab=4096, d=96):
    W = rng.standard_normal((vocab, d), dtype=np.float32)
    h = rng.standard_normal(d, dtype=np.float32)
    return W, h


def test_dense_equals_sparse_on_random_tensors():
    rng = np.random.default_rng(1)
    W, _ = _random_case(rng)
    for _ in range(300):
        h = rng.standard_normal(W.shape[1], dtype=np.float32)
        k = int(rng.integers(1, W.shape[0]))
        legal = np.sort(rng.choice(W.shape[0], k, replace=False))
        d_tok, d_margin = dense_head(W, h, legal)
        s_tok, s_margin = sparse_head(W, h, legal)
        assert d_tok == s_tok and d_tok in legal
        assert d_margin == s_margin  # the same floats, not merely close ones


def test_ties_go_to_the_lowest_id():
    rng = np.random.default_rng(2)
    W, h = _random_case(rng, vocab=1024)
    legal = np.array([10, 200, 201, 700, 1000])
    best = (W @ h)[legal]
    W[700] = W[200] = W[1000] = W[int(legal[best.argmax()])]  # three-way tie at the top
    legal_scores = (W @ h)[legal]  # the full GEMV: every row on the same kernel
    assert (legal_scores == legal_scores.max()).sum() >= 3
    winner = int(legal[legal_scores == legal_scores.max()].min())
    assert dense_head(W, h, legal)[0] == winner == sparse_head(W, h, legal)[0]
    assert dense_head(W, h, legal)[1] == 0.0  # a tie has zero margin


def test_sparse_scores_every_row_count_like_the_dense_gemv():
    """Unpadded, a GEMV's last rows round differently; padded, every K matches bit for bit."""
    rng = np.random.default_rng(3)
    W, h = _random_case(rng, vocab=PAD_ROWS * 40)
    full = W @ h
    for k in range(1, 3 * PAD_ROWS):
        legal = np.sort(rng.choice(W.shape[0], k, replace=False))
        padded = np.zeros(k + (-k) % PAD_ROWS, np.int64)
        padded[:k] = legal
        assert np.array_equal((W[padded] @ h)[:k], full[legal])


def test_real_head(engine):
    """On the model's own output matrix and a real state, over legal sets of every size."""
    rng = np.random.default_rng(4)
    ids = engine.tokenizer.encode("The capital of France is")
    h = engine.body.forward(ids, engine.body.new_cache())[-1]
    for k in (1, 2, 3, 17, 64, 65, 1000, 24_000, engine.config.vocab - 1, engine.config.vocab):
        legal = np.sort(rng.choice(engine.config.vocab, k, replace=False))
        assert dense_head(engine.output, h, legal) == sparse_head(engine.output, h, legal)
    everything = np.arange(engine.config.vocab)
    assert engine.tokenizer.decode([dense_head(engine.output, h, everything)[0]]) == " Paris"


def test_forced_and_margin():
    assert forced_token(np.array([42])) == (42, None)
    assert margin_of(np.array([1.0])) is None
    assert margin_of(np.array([0.5, 3.0, 2.0], np.float32)) == pytest.approx(1.0)
