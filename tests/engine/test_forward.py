"""The numpy Llama forward: against a plain float64 reference, batch invariance, the KV cache."""

import numpy as np
import pytest

from app.engine.forward_numpy import NumpyLlama
from app.engine.weights import LlamaConfig, random_weights

CFG = LlamaConfig(
    n_layers=2,
    d=64,
    d_ff=96,
    n_heads=4,
    n_kv_heads=2,
    head_dim=16,
    vocab=300,
    rope_base=10000.0,
    norm_eps=1e-5,
    context=128,
)


@pytest.fixture(scope="module")
def model():
    return NumpyLlama(random_weights(CFG, np.random.default_rng(0)))


def reference_forward(w, ids):
    """Textbook Llama in float64, no cache: RoPE over adjacent pairs, GQA, causal softmax."""
    c = w.config
    x = w.tok_embd[ids].astype(np.float64)
    t = len(ids)

    def norm(v, g):
        return v / np.sqrt((v * v).mean(-1, keepdims=True) + c.norm_eps) * g

    def rope(v):  # (T, H, hd), pairs (2i, 2i+1) rotated by pos * base^(-2i/hd)
        i = np.arange(c.head_dim // 2)
        ang = np.arange(t)[:, None] * c.rope_base ** (-2.0 * i / c.head_dim)
        cos, sin = np.cos(ang)[:, None], np.sin(ang)[:, None]
        out = v.copy()
        out[..., 0::2] = v[..., 0::2] * cos - v[..., 1::2] * sin
        out[..., 1::2] = v[..., 0::2] * sin + v[..., 1::2] * cos
        return out

    for lw in w.layers:
        a = norm(x, lw.attn_norm)
        q = rope((a @ lw.wq.T).reshape(t, c.n_heads, c.head_dim))
        k = rope((a @ lw.wk.T).reshape(t, c.n_kv_heads, c.head_dim))
        v = (a @ lw.wv.T).reshape(t, c.n_kv_heads, c.head_dim)
        out = np.zeros((t, c.n_heads, c.head_dim))
        for h in range(c.n_heads):
            kv = h // (c.n_heads // c.n_kv_heads)
            s = q[:, h] @ k[:, kv].T / np.sqrt(c.head_dim)
            s[np.triu(np.ones((t, t), bool), 1)] = -np.inf
            p = np.exp(s - s.max(-1, keepdims=True))
            out[:, h] = (p / p.sum(-1, keepdims=True)) @ v[:, kv]
        x = x + out.reshape(t, -1) @ lw.wo.T
        m = norm(x, lw.ffn_norm)
        gate, up = m @ lw.w_gate.T, m @ lw.w_up.T
        x = x + (gate / (1 + np.exp(-gate)) * up) @ lw.w_down.T
    return norm(x, w.norm)


def test_matches_float64_reference(model):
    ids = [5, 17, 299, 0, 42, 42, 7, 128, 3, 250]
    got = model.forward(ids, model.new_cache())
    want = reference_forward(model.w, ids)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-4)
    assert np.abs(want).max() > 0.1  # the comparison is not between two zero vectors


def test_batch_invariant_bit_for_bit(model):
    """T tokens in one forward give exactly the states of T one-token forwards."""
    ids = list(range(3, 40, 3))
    batched = model.forward(ids, model.new_cache())
    cache = model.new_cache()
    single = np.concatenate([model.forward([i], cache) for i in ids])
    assert np.array_equal(batched, single)
    # and split at any point: a prompt prefill, then a forced run of 4, then one token
    cache = model.new_cache()
    parts = [
        model.forward(ids[:5], cache),
        model.forward(ids[5:9], cache),
        model.forward(ids[9:], cache),
    ]
    assert np.array_equal(np.concatenate(parts), batched)


def test_cache_grows_and_truncates(model):
    cache = model.new_cache(capacity=4)
    ids = list(range(10))
    first = model.forward(ids, cache)
    assert cache.length == 10 and cache.k.shape[2] >= 10
    cache.truncate(6)  # roll back four positions, then redo them with other tokens
    model.forward([1, 2, 3, 4], cache)
    fresh = model.forward(ids[:6] + [1, 2, 3, 4], model.new_cache())
    redo = model.new_cache()
    model.forward(ids[:6], redo)
    assert np.array_equal(model.forward([1, 2, 3, 4], redo), fresh[6:])
    assert not np.array_equal(fresh[6:], first[6:])


def test_float32_stays_float32(model):
    """A float64 scalar anywhere (numpy >= 2, NEP 50) would turn every later matmul float64."""
    cache = model.new_cache()
    h = model.forward([1, 2], cache)
    assert h.dtype == np.float32 and cache.k.dtype == np.float32
    assert model.head(h[-1]).dtype == np.float32
