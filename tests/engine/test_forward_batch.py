"""One Llama body under both projection kernels: T-row forwards, rollbacks and multi-sequence
batches give, bit for bit, what one-token forwards give."""

import dataclasses

import numpy as np
import pytest
from gguf import GGMLQuantizationType
from gguf.quants import dequantize, quantize

from app.engine import qkernel
from app.engine.forward_numpy import NumpyLlama
from app.engine.weights import LlamaConfig, StoredTensor, random_weights

CFG = LlamaConfig(
    n_layers=2, d=64, d_ff=96, n_heads=4, n_kv_heads=2, head_dim=16, vocab=300, context=128
)
FIELDS = {"wq": "attn_q", "wk": "attn_k", "wv": "attn_v", "wo": "attn_output"}
FIELDS |= {"w_gate": "ffn_gate", "w_up": "ffn_up", "w_down": "ffn_down"}
KIND = {"attn_v": "Q8_0", "ffn_down": "Q4_0"}  # the rest Q4_1: runs of mixed kinds in a group


def quantized_weights(cfg, rng):
    """Random weights stored as GGUF blocks, with float32 copies that are their dequantization
    (so both kernels use the same weights)."""
    w = random_weights(cfg, rng)
    stored, layers = {}, []
    for i, lw in enumerate(w.layers):
        new = {}
        for field, name in FIELDS.items():
            kind = GGMLQuantizationType[KIND.get(name, "Q4_1")]
            raw = quantize(getattr(lw, field), kind)
            new[field] = dequantize(raw, kind).astype(np.float32)
            shape = getattr(lw, field).shape
            stored[f"blk.{i}.{name}.weight"] = StoredTensor(kind.name, shape, raw)
        layers.append(dataclasses.replace(lw, **new))
    return dataclasses.replace(w, layers=tuple(layers), stored=stored)


@pytest.fixture(scope="module")
def weights():
    return quantized_weights(CFG, np.random.default_rng(0))


@pytest.fixture(scope="module", params=["q", "blas"])
def model(request, weights):
    return NumpyLlama(weights, kernel=request.param)


IDS = [5, 17, 299, 0, 42, 42, 7, 128, 3, 250, 11, 12, 13, 200, 1, 99, 64]


def steps(model, ids, cache=None):
    cache = cache or model.new_cache()
    return np.concatenate([model.forward([t], cache) for t in ids])


def test_every_row_count_equals_one_token_steps(model):
    prefix = IDS[:3]
    want = steps(model, prefix + IDS[3:])[3:]
    for t in range(1, 17):
        cache = model.new_cache(capacity=2)  # the cache grows on the way
        model.forward(prefix, cache, 0)
        got = model.forward(IDS[3 : 3 + t], cache, 3)
        assert np.array_equal(got, want[:t]), t


def test_five_rows_across_a_rollback(model):
    cache = model.new_cache()
    model.forward(IDS[:9], cache)
    other = [1, 2, 3, 4, 5]
    redo = model.forward(other, cache, start=4)  # explicit start: rolls positions 4… back
    assert cache.length == 9
    assert np.array_equal(redo, steps(model, IDS[:4] + other)[4:])
    model.truncate(cache, 2)
    assert np.array_equal(model.forward(other, cache), steps(model, IDS[:2] + other)[2:])
    with pytest.raises(ValueError, match="start must be in"):
        model.forward([1], cache, start=8)


def test_forward_batch_equals_solo_forwards(model):
    lengths, starts = (1, 7, 3, 16, 1), (4, 0, 2, 1, 0)
    seqs, solos = [], []
    for j, (t, s) in enumerate(zip(lengths, starts)):
        ids = [(7 * j + 3 * r) % 300 for r in range(s + t)]
        for who in (seqs, solos):
            cache = model.new_cache(capacity=3)
            model.forward(ids[:s], cache)
            who.append((ids[s:], cache, s))
    got = model.forward_batch(seqs)
    for (ids, cache, s), g, (_, solo_cache, _) in zip(solos, got, seqs):
        assert np.array_equal(g, model.forward(ids, cache, s))
        assert solo_cache.length == cache.length == s + len(ids)
    c = model.new_cache()
    with pytest.raises(ValueError, match="its own cache"):
        model.forward_batch([([1], c, 0), ([2], c, 0)])
    with pytest.raises(ValueError, match="ids must be in"):
        model.forward_batch([([300], model.new_cache(), 0)])


def test_kernels_agree_within_float32_rounding(weights):
    """Same weights, other summation order: the two kernels agree to float32 rounding."""
    q, b = NumpyLlama(weights, "q"), NumpyLlama(weights, "blas")
    hq, hb = q.forward(IDS, q.new_cache()), b.forward(IDS, b.new_cache())
    np.testing.assert_allclose(hq, hb, rtol=0, atol=1e-4)
    # the q body reads the stored blocks: q and k (Q4_1) as one part, v (Q8_0) as another
    assert [p.fmt for p in q.proj[0].qkv.parts] == [qkernel.Q4, qkernel.Q8]
    assert [p.fmt for p in q.proj[0].down.parts] == [qkernel.Q4]  # Q4_0


@pytest.mark.parametrize("isa", qkernel.ISAS)
def test_every_dispatch_path_gives_the_same_body(weights, isa):
    m = NumpyLlama(weights, "q")
    want = m.forward(IDS, m.new_cache())
    with qkernel.forced_isa(isa):
        got = m.forward(IDS[:6], m.new_cache())
        got = np.concatenate([got, steps(m, IDS[6:], _prefilled(m, IDS[:6]))])
    assert np.array_equal(got, want)


def _prefilled(m, ids):
    cache = m.new_cache()
    m.forward(ids, cache)
    return cache


def test_bad_kernel_is_refused(weights):
    with pytest.raises(ValueError, match="kernel must be one of q, blas"):
        NumpyLlama(weights, kernel="int8")


@pytest.mark.parametrize("isa", qkernel.ISAS)
def test_attention_matches_float64_softmax(isa):
    """rowops.attention (its own exponential, exp_neg) against RoPE + causal grouped-query
    softmax attention in float64: relative error ~1e-6 over 300 positions whose scores span
    ±60 (exponents far below the max underflow to nothing, as in float64); T rows after a
    prefix give what one call over everything gives."""
    from app.engine import rowops

    h, hkv, hd, n = 6, 2, 32, 300
    rng = np.random.Generator(np.random.PCG64(7))
    qkv = (rng.standard_normal((n, (h + 2 * hkv) * hd)) * 2.0).astype(np.float32)
    ang = np.arange(n)[:, None] / 10000 ** (np.arange(hd // 2) / (hd // 2))
    cos, sin = np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)

    def run(chunks):
        kc, vc = (np.zeros((hkv, n, hd), np.float32) for _ in range(2))
        with qkernel.forced_isa(isa):
            parts = [
                rowops.attention(qkv[a:b], kc, vc, a, (h, hkv, hd), 0.5, cos, sin)
                for a, b in chunks
            ]  # fmt: skip
        return np.concatenate(parts)

    def rot(x):  # (n, hd) adjacent pairs rotated, in float64
        x0, x1 = x[:, 0::2], x[:, 1::2]
        out = np.empty_like(x)
        out[:, 0::2], out[:, 1::2] = x0 * cos - x1 * sin, x0 * sin + x1 * cos
        return out

    x = qkv.astype(np.float64)
    want = np.empty((n, h * hd))
    for head in range(h):
        kv = head // (h // hkv)
        q = rot(x[:, head * hd : (head + 1) * hd])
        k = rot(x[:, (h + kv) * hd : (h + kv + 1) * hd])
        v = x[:, (h + hkv + kv) * hd : (h + hkv + kv + 1) * hd]
        s = q @ k.T * 0.5
        s[np.triu_indices(n, 1)] = -np.inf
        p = np.exp(s - s.max(axis=1, keepdims=True))
        want[:, head * hd : (head + 1) * hd] = (p / p.sum(axis=1, keepdims=True)) @ v
    whole = run([(0, n)])
    assert np.ptp(x[:, :hd] @ x[:, h * hd : (h + 1) * hd].T * 0.5) > 60  # a wide score range
    np.testing.assert_allclose(whole, want, rtol=2e-5, atol=2e-5)
    assert np.array_equal(run([(0, 117), (117, 118), (118, n)]), whole)
