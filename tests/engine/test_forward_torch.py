"""The torch forward (app/engine/forward_torch.py) against the numpy forward and transformers.

Skipped as a whole where torch is not installed. Tolerances (float32): 1e-4 absolute against the
numpy forward on small random weights (both compute the same float32 operations in a different
order; measured differences are ~1e-6); 1e-3 absolute against the transformers fixture on the
real model (see tests/engine/fixtures/README.md: float32 vs float64 drift there is 5.4e-5).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from app.engine.forward_numpy import NumpyLlama  # noqa: E402
from app.engine.forward_torch import TorchLlama  # noqa: E402
from app.engine.weights import LlamaConfig, random_weights  # noqa: E402

FIXTURE = Path(__file__).parent / "fixtures" / "transformers_reference.json"
ATOL_NUMPY = 1e-4
ATOL_REFERENCE = 1e-3

CFG = LlamaConfig(
    n_layers=2, d=48, d_ff=96, n_heads=6, n_kv_heads=2, head_dim=8, vocab=101, rope_base=10000.0
)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(scope="module")
def small():
    w = random_weights(CFG, np.random.default_rng(7))
    ids = np.random.default_rng(8).integers(0, CFG.vocab, size=12)
    return w, ids


@pytest.mark.parametrize("batch_invariant", [True, False])
@pytest.mark.parametrize("device", DEVICES)
def test_prefill_and_steps_match_numpy(small, device, batch_invariant):
    w, ids = small
    ref, tl = NumpyLlama(w), TorchLlama(w, device=device, batch_invariant=batch_invariant)
    rc, tc = ref.new_cache(capacity=4), tl.new_cache(capacity=4)  # both caches must grow
    h_ref = np.concatenate(
        [ref.forward(ids[:7], rc)] + [ref.forward(ids[i : i + 1], rc) for i in range(7, 12)]
    )
    h_t = np.concatenate(
        [tl.forward(ids[:7], tc, 0)] + [tl.forward(ids[i : i + 1], tc, i) for i in range(7, 12)]
    )
    assert h_t.dtype == np.float32 and h_t.shape == (12, CFG.d)
    assert tc.length == 12
    np.testing.assert_allclose(h_t, h_ref, rtol=0, atol=ATOL_NUMPY)
    logits = tl.head(h_t)
    assert logits.shape == (12, CFG.vocab) and logits.dtype == np.float32
    np.testing.assert_allclose(logits, ref.head(h_ref), rtol=0, atol=ATOL_NUMPY)
    np.testing.assert_allclose(tl.head(h_t[3]), logits[3], rtol=0, atol=ATOL_NUMPY)


@pytest.mark.parametrize("device", DEVICES)
def test_chunked_prefill_equals_one_prefill(small, device):
    w, ids = small
    for batch_invariant in (True, False):
        tl = TorchLlama(w, device=device, batch_invariant=batch_invariant)
        whole = tl.forward(ids, tl.new_cache())
        cache = tl.new_cache()
        parts = np.concatenate([tl.forward(ids[a:b], cache) for a, b in ((0, 5), (5, 6), (6, 12))])
        if batch_invariant:  # bit for bit, however the tokens are grouped
            np.testing.assert_array_equal(parts, whole)
            steps = tl.new_cache()
            np.testing.assert_array_equal(
                np.concatenate([tl.forward([t], steps) for t in ids]), whole
            )
        else:
            np.testing.assert_allclose(parts, whole, rtol=0, atol=ATOL_NUMPY)


@pytest.mark.parametrize("device", DEVICES)
def test_truncate_rolls_back(small, device):
    w, ids = small
    tl = TorchLlama(w, device=device)
    other = (ids[5:9] + 1) % CFG.vocab
    fresh = tl.forward(np.concatenate([ids[:5], other]), tl.new_cache())[5:]

    cache = tl.new_cache()
    tl.forward(ids[:9], cache)
    tl.truncate(cache, 5)
    assert cache.length == 5
    np.testing.assert_allclose(tl.forward(other, cache), fresh, rtol=0, atol=ATOL_NUMPY)

    cache = tl.new_cache()
    tl.forward(ids[:9], cache)
    # Passing an earlier start is the same rollback.
    np.testing.assert_allclose(tl.forward(other, cache, start=5), fresh, rtol=0, atol=ATOL_NUMPY)
    assert cache.length == 9
    with pytest.raises(ValueError):
        tl.forward(ids[:1], cache, start=10)


def test_bfloat16_is_close_but_not_exact(small):
    w, ids = small
    h32 = TorchLlama(w).forward(ids, TorchLlama(w).new_cache())
    tl = TorchLlama(w, dtype="bfloat16")
    h16 = tl.forward(ids, tl.new_cache())
    assert h16.dtype == np.float32
    err = np.abs(h16 - h32).max()
    assert 0 < err < 0.25, err  # bfloat16 keeps 8 bits of mantissa; activations are O(1)


def test_bad_dtype_is_refused(small):
    with pytest.raises(ValueError, match="dtype"):
        TorchLlama(small[0], dtype="int8")


# -- the real model against transformers -----------------------------------------------------


@pytest.fixture(scope="module")
def real():
    pytest.importorskip("gguf")
    from app.engine.fetch import default_model_path
    from app.engine.weights import load_gguf

    path = default_model_path()
    if not path.exists():
        pytest.skip(f"model not in the cache ({path.name}); `llmqp model fetch` puts it there")
    return load_gguf(path)[1]


@pytest.mark.parametrize("device", DEVICES)
def test_real_model_matches_transformers(real, device):
    fx = json.loads(FIXTURE.read_text())
    subset = np.array(fx["subset_ids"])
    tl = TorchLlama(real, device=device)
    for p in fx["prompts"]:
        n = len(p["prompt_ids"])
        cache = tl.new_cache()
        h = tl.forward(p["prompt_ids"], cache)[-1:]
        # The greedy ids come one step at a time, as a decode would feed them.
        h = np.concatenate([h] + [tl.forward([t], cache) for t in p["greedy_ids"][:-1]])
        logits = tl.head(h)  # (16, V): row k chose greedy_ids[k]
        assert list(np.argmax(logits, axis=1)) == p["greedy_ids"], p["name"]
        for r in p["rows"]:
            row = logits[r["step"]]
            assert r["position"] == n + r["step"] - 1
            np.testing.assert_allclose(row[r["top_ids"]], r["top_logits"], atol=ATOL_REFERENCE)
            np.testing.assert_allclose(row[subset], r["subset_logits"], atol=ATOL_REFERENCE)
            stats = [row.max(), row.astype(np.float64).mean(), row.astype(np.float64).std()]
            np.testing.assert_allclose(stats, [r["max"], r["mean"], r["std"]], atol=ATOL_REFERENCE)


@pytest.mark.parametrize("device", DEVICES)
def test_forward_batch_matches_numpy_and_its_own_forward(small, device):
    """Mixed lengths in one call: each sequence's states are its own forward's, bit for bit,
    and the numpy body's within float32 rounding."""
    w, ids = small
    ref, tl = NumpyLlama(w), TorchLlama(w, device=device)
    runs = [(ids[:5], 0), (ids[5:6], 0), (ids[6:9], 0)]
    t_caches, n_caches = [tl.new_cache() for _ in runs], [ref.new_cache() for _ in runs]
    got = tl.forward_batch([(i, c, s) for (i, s), c in zip(runs, t_caches)])
    want = ref.forward_batch([(i, c, s) for (i, s), c in zip(runs, n_caches)])
    for (i, _), g, r, c in zip(runs, got, want, t_caches):
        assert g.shape == (len(i), CFG.d) and c.length == len(i)
        np.testing.assert_allclose(g, r, rtol=0, atol=ATOL_NUMPY)
        np.testing.assert_array_equal(g, tl.forward(i, tl.new_cache()))
    with pytest.raises(ValueError, match="own cache"):
        tl.forward_batch([(ids[:1], t_caches[0], None), (ids[1:2], t_caches[0], None)])
