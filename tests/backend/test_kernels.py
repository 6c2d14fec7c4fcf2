"""Every kernel picks the dense reference's token on the same tensors, ties included.

Tie-break (app.model.equivalence): the lowest token id among the maxima. Integer-valued tensors
make every product and sum exact in float32 and bfloat16 (|score| <= d <= 128), so ties are real
ties on every backend and the comparison is exact.
"""

import numpy as np
import pytest

from app.engine import heads_numpy
from app.measure import kernels_numpy
from app.measure.kernels import get_kernels, preset_for
from app.measure.sweeps import _body_plan
from app.model.equivalence import dense_masked_argmax


def _int_tensors(kn, dtype, vocab, d, batch, seed):
    rng = np.random.default_rng(seed)
    W = rng.integers(-1, 2, size=(vocab, d)).astype(np.float32)
    W[vocab // 2 :] = W[: vocab - vocab // 2]  # every row has a twin: many exact ties
    h = rng.integers(-1, 2, size=(batch, d)).astype(np.float32)
    return W, h, kn.asarray(W, dtype), kn.asarray(h, dtype)


def _reference(W, h, ids, vocab):
    """Per sequence: float64 dense masked argmax with the lowest-id tie-break."""
    out = []
    for b in range(h.shape[0]):
        mask = np.zeros(vocab, dtype=bool)
        mask[ids[b]] = True
        out.append(dense_masked_argmax(W.astype(np.float64) @ h[b].astype(np.float64), mask))
    return np.array(out)


@pytest.mark.parametrize("k", [1, 2, 7, 64, 500, 1024])
def test_dense_and_sparse_match_reference_with_ties(backend, k):
    kn, dtype = backend
    vocab, d, batch = 1024, 96, 3
    W, h, Wt, ht = _int_tensors(kn, dtype, vocab, d, batch, seed=k)
    ids = kn.legal_ids(vocab, batch, k, seed=k)
    ids_np = kn.to_numpy(ids)
    assert (np.diff(ids_np, axis=1) > 0).all()  # ascending, distinct
    ref = _reference(W, h, ids_np, vocab)
    dense = kn.to_numpy(kn.dense_head(Wt, ht, kn.blocked(ids, vocab)))
    sparse = kn.to_numpy(kn.sparse_head(Wt, ht, ids))
    np.testing.assert_array_equal(dense, ref)
    np.testing.assert_array_equal(sparse, ref)


def test_explicit_tie_goes_to_lowest_legal_id(backend):
    kn, dtype = backend
    vocab, d = 16, 8
    W = np.zeros((vocab, d), dtype=np.float32)
    W[[3, 7, 9], 0] = 5.0  # three tied maxima
    h = np.zeros((2, d), dtype=np.float32)
    h[:, 0] = 1.0
    ids = np.array([[1, 3, 7, 9], [2, 7, 9, 12]])
    Wt, ht = kn.asarray(W, dtype), kn.asarray(h, dtype)
    ids_t = kn.asids(ids)
    want = [3, 7]
    assert kn.to_numpy(kn.sparse_head(Wt, ht, ids_t)).tolist() == want
    assert kn.to_numpy(kn.dense_head(Wt, ht, kn.blocked(ids_t, vocab))).tolist() == want


def test_random_floats_match_where_the_margin_is_clear(backend):
    kn, dtype = backend
    vocab, d, batch, k = 4096, 128, 4, 300
    W = kn.random((vocab, d), dtype, seed=1, scale=d**-0.5)
    h = kn.random((batch, d), dtype, seed=2)
    ids = kn.legal_ids(vocab, batch, k, seed=3)
    dense = kn.to_numpy(kn.dense_head(W, h, kn.blocked(ids, vocab)))
    sparse = kn.to_numpy(kn.sparse_head(W, h, ids))
    scores = kn.to_numpy(kn.sparse_scores(W, h, ids)).astype(np.float64)
    top2 = np.sort(scores, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > (1e-2 if dtype == "bfloat16" else 1e-5)
    assert clear.any()
    np.testing.assert_array_equal(dense[clear], sparse[clear])


def test_numpy_sparse_head_in_chunks_matches(monkeypatch):
    kn = get_kernels("numpy")
    # 64 rows per chunk (the fewest: chunks are whole multiples of PAD_ROWS), so K = 150 takes
    # three chunks, the last one padded
    monkeypatch.setattr(heads_numpy, "CHUNK_BYTES", 2 * 64 * 64 * 4)
    vocab, d, batch, k = 256, 64, 2, 150
    W, h, Wt, ht = _int_tensors(kn, "float32", vocab, d, batch, seed=5)
    ids = kn.legal_ids(vocab, batch, k, seed=6)
    np.testing.assert_array_equal(kn.sparse_head(Wt, ht, ids), _reference(W, h, ids, vocab))


def test_top_ids_are_the_r_best_ascending(backend):
    kn, dtype = backend
    scores = kn.asarray(np.array([[0.5, 3.0, 1.0, 2.0, -1.0]]), dtype)
    ids = kn.legal_ids(100, 1, 5, seed=0)
    top = kn.to_numpy(kn.top_ids(scores, ids, 2))
    want = np.sort(kn.to_numpy(ids)[0, [1, 3]])
    np.testing.assert_array_equal(top[0], want)


@pytest.mark.parametrize("plan", ["full_step", "amortized_step", "amortized_rerank"])
def test_body_plans_match_dense_reference(backend, plan):
    kn, dtype = backend
    vocab, d, layers, batch, context = 512, 64, 2, 2, 33
    W = kn.random((vocab, d), dtype, seed=0, scale=d**-0.5)
    ids = kn.legal_ids(vocab, batch, 40, seed=1)
    body = kn.body(d, layers, batch, dtype, context, seed=2)
    fn, check = _body_plan(kn, plan, body, W, ids, kn.blocked(ids, vocab), r=8)
    tokens = kn.to_numpy(fn())
    assert tokens.shape == (batch,)
    assert np.isin(tokens, kn.to_numpy(ids)).all()
    assert check()


def test_body_state_shapes():
    kn = get_kernels("numpy")
    body = kn.body(128, 3, 2, "float32", 10, seed=0)
    for h in (body.decode(), body.amortized(), body.last_layer(body.amortized())):
        assert h.shape == (2, 128) and np.isfinite(h).all()
    a, b = body.decode(), body.decode()
    np.testing.assert_array_equal(a, b)  # the same slot is rewritten: every call is alike


def test_bad_impl_device_and_dtype_name_the_options():
    with pytest.raises(ValueError, match=r"'impl' parameter must be one of 'numpy', 'torch'"):
        get_kernels("cupy")
    with pytest.raises(ValueError, match=r"'device' parameter must be one of 'cpu', 'cuda'"):
        get_kernels("numpy", "tpu")
    with pytest.raises(ValueError, match=r"'device' parameter must be 'cpu' for impl='numpy'"):
        get_kernels("numpy", "cuda")
    with pytest.raises(ValueError, match=r"'dtype' parameter must be one of 'float32'"):
        get_kernels("numpy").random((2, 2), "bfloat16", seed=0)


def test_preset_for_device_names():
    assert preset_for("cuda", "NVIDIA H100 80GB HBM3") == ("h100", True)
    assert preset_for("cuda", "NVIDIA H200") == ("h200", True)
    assert preset_for("cuda", "NVIDIA A100-SXM4-80GB") == ("a100", True)
    assert preset_for("cuda", "NVIDIA L4") == ("h100", False)
    assert preset_for("cpu", "AMD EPYC") == ("cpu", False)


class _Counted(np.ndarray):
    """An array that records every numpy call made on it (ufuncs, array functions, setitem,
    argmax, fancy indexing); basic slicing (views) is not a call."""

    calls: list = []

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kw):
        _Counted.calls.append(f"{ufunc.__name__}.{method}")
        inputs = [np.asarray(i) if isinstance(i, _Counted) else i for i in inputs]
        if out is not None:
            kw["out"] = tuple(np.asarray(o) if isinstance(o, _Counted) else o for o in out)
            getattr(ufunc, method)(*inputs, **kw)
            return out[0] if len(out) == 1 else out
        r = getattr(ufunc, method)(*inputs, **kw)
        return r.view(_Counted) if isinstance(r, np.ndarray) else r

    def __array_function__(self, func, types, args, kwargs):
        if func.__name__ not in ("empty_like",):  # allocates, computes nothing
            _Counted.calls.append(func.__name__)

        def plain(a):
            if isinstance(a, _Counted):
                return np.asarray(a)
            return type(a)(plain(x) for x in a) if isinstance(a, (list, tuple)) else a

        r = func(*plain(args), **{k: plain(v) for k, v in kwargs.items()})
        return r.view(_Counted) if isinstance(r, np.ndarray) else r

    def __setitem__(self, key, value):
        _Counted.calls.append("setitem")
        np.asarray(self)[key] = value

    def __getitem__(self, key):
        keys = key if isinstance(key, tuple) else (key,)
        if any(isinstance(k, np.ndarray) for k in keys):
            _Counted.calls.append("fancy getitem")
        return super().__getitem__(key)

    def argmax(self, *a, **k):
        _Counted.calls.append("argmax")
        return np.asarray(self).argmax(*a, **k)

    def astype(self, *a, **k):
        _Counted.calls.append("astype")
        return np.asarray(self).astype(*a, **k).view(_Counted)


def _counted_body(kn, layers, monkeypatch):
    """The engine's Llama body (batch 1) counting its calls: numpy calls on every array it
    computes with, and each call into the C kernels (a projection part, a row routine)."""
    import dataclasses

    from app.engine import qkernel, rowops
    from app.engine.weights import LayerWeights, LlamaWeights, random_weights
    from app.measure.llama import llama_config

    calls = ((qkernel._qkernel, ("proj",)), (rowops, ("rmsnorm", "attention", "silu_gate")))
    for mod, names in calls:  # proj: every projection-kernel call, through any wrapper
        for name in names:
            fn = getattr(mod, name)
            if getattr(fn, "counted", False):
                continue

            def counted(*a, _fn=fn, _name=name, **k):
                _Counted.calls.append(_name)
                out = _fn(*a, **k)
                return out.view(_Counted) if isinstance(out, np.ndarray) else out

            counted.counted = True
            monkeypatch.setattr(mod, name, counted)
    w = random_weights(llama_config(64, layers), np.random.default_rng(0))

    def c(a):
        return a.view(_Counted)

    lw = tuple(
        LayerWeights(*(c(getattr(x, f.name)) for f in dataclasses.fields(x))) for x in w.layers
    )
    w = LlamaWeights(w.config, c(w.tok_embd), lw, c(w.norm), c(w.output))
    body = kn.body(64, layers, 1, "float32", 5, 0, weights=w)
    for cache in body.caches:
        cache.k, cache.v = c(cache.k), c(cache.v)
    for name in ("h_stable", "e", "U"):
        setattr(body, name, c(getattr(body, name)))
    return body


def _count(fn) -> int:
    _Counted.calls = []
    fn()
    return len(_Counted.calls)


def test_numpy_launch_table_is_what_the_kernels_call(monkeypatch):
    """``kernels_numpy.LAUNCHES`` (what the calibration prices) is the count of numpy calls."""
    kn = get_kernels("numpy", "cpu")
    plain_buffer, plain_arange = kn._buffer, np.arange
    monkeypatch.setattr(kn, "_buffer", lambda *a, **k: plain_buffer(*a, **k).view(_Counted))

    def arange(*a, **k):
        _Counted.calls.append("arange")
        return plain_arange(*a, **k)

    monkeypatch.setattr(np, "arange", arange)
    L = kernels_numpy.LAUNCHES
    W = kn.random((500, 64), "float32", 0).view(_Counted)
    h = kn.random((2, 64), "float32", 1).view(_Counted)
    ids = kn.legal_ids(500, 2, 20, 2)
    blocked = kn.blocked(ids, 500).view(_Counted)
    ids = ids.view(_Counted)
    assert _count(lambda: kn.dense_head(W, h, blocked)) == L["dense_gemm"] + L["masked_argmax"]
    assert _count(lambda: kn.sparse_head(W, h, ids)) == L["gather_gemm"] + L["argmax"]
    one, two = (_counted_body(kn, layers, monkeypatch) for layers in (1, 2))
    per_layer = _count(two.decode) - _count(one.decode)
    assert per_layer == L["layer"]
    assert _count(one.decode) == L["layer"] + L["step"]
    body = one
    assert _count(body.amortized) == L["update"] + L["add"]
