"""The quantized projection kernel: exact dequantization, batch invariance, one result per path,
and the stated bound against a float64 product of the same weights."""

import numpy as np
import pytest
from gguf import GGMLQuantizationType
from gguf.quants import dequantize, quantize

from app.engine import qkernel as qk

KINDS = ("Q4_0", "Q4_1", "Q8_0", "F32")
SHAPES = ((40, 64), (96, 160), (33, 96))  # outputs not a multiple of 16 included


def _weights(kind, shape, rng):
    """(packed, the float32 weights gguf dequantizes to)."""
    w = rng.standard_normal(shape, dtype=np.float32)
    if kind == "F32":
        return qk.pack_f32(w), w
    raw = quantize(w, GGMLQuantizationType[kind])
    wd = dequantize(raw, GGMLQuantizationType[kind]).astype(np.float32)
    return qk.pack_stored(kind, raw, shape), wd


@pytest.mark.parametrize("isa", qk.ISAS)
@pytest.mark.parametrize("kind", KINDS)
def test_dequantizes_exactly_like_gguf(kind, isa):
    """One-hot rows read the weights back: each equals gguf's float32 dequantization."""
    rng = np.random.default_rng(1)
    for shape in SHAPES:
        p, wd = _weights(kind, shape, rng)
        with qk.forced_isa(isa):
            cols = qk.matmul(np.eye(shape[1], dtype=np.float32), p)
        assert np.array_equal(cols, wd.T)


@pytest.mark.parametrize("kind", KINDS)
def test_rows_are_batch_invariant_and_paths_agree(kind):
    """Row r of a T-row call is the one-row call's, bit for bit, for T = 1 … 16 and every path;
    the AVX-512, AVX2 and plain-C paths give the same bits."""
    rng = np.random.default_rng(2)
    p, _ = _weights(kind, (96, 160), rng)
    x = rng.standard_normal((16, 160), dtype=np.float32)
    results = []
    for isa in qk.ISAS:
        with qk.forced_isa(isa):
            one = np.concatenate([qk.matmul(x[r : r + 1], p) for r in range(16)])
            for t in range(1, 17):
                assert np.array_equal(qk.matmul(x[:t], p), one[:t]), (isa, t)
            results.append(one)
    for other in results[1:]:
        assert np.array_equal(other, results[0])


@pytest.mark.parametrize("kind", KINDS)
def test_within_the_summation_bound_of_a_float64_product(kind):
    """|y - y64| <= γ_in · (|x| @ |W|ᵀ), γ_n = n·u/(1 - n·u), u = 2⁻²⁴ (the weights are the
    same floats, so only the float32 fused summation differs)."""
    rng = np.random.default_rng(3)
    for shape in SHAPES + ((576, 1536),):
        p, wd = _weights(kind, shape, rng)
        x = rng.standard_normal((5, shape[1]), dtype=np.float32)
        y = qk.matmul(x, p)
        exact = x.astype(np.float64) @ wd.T.astype(np.float64)
        n, u = shape[1], 2.0**-24
        bound = n * u / (1 - n * u) * (np.abs(x).astype(np.float64) @ np.abs(wd.T))
        assert np.all(np.abs(y - exact) <= bound)
        assert np.abs(y - exact).max() > 0  # float32 rounding is there: the test can fail


def test_fused_output_columns_and_validation():
    rng = np.random.default_rng(4)
    p, wd = _weights("Q4_1", (40, 64), rng)
    x = rng.standard_normal((3, 64), dtype=np.float32)
    wide = np.full((3, 100), 7.0, np.float32)
    qk.matmul(x, p, wide, col=30)
    assert np.array_equal(wide[:, 30:70], qk.matmul(x, p))
    assert np.all(wide[:, :30] == 7.0) and np.all(wide[:, 70:] == 7.0)  # nothing else written
    with pytest.raises(ValueError, match="x must be"):
        qk.matmul(x[:, :32], p)
    with pytest.raises(ValueError, match="out must be"):
        qk.matmul(x, p, wide, col=61)
    with pytest.raises(ValueError, match="kind must be"):
        qk.pack_stored("Q5_0", np.zeros((40, 44), np.uint8), (40, 64))
    with pytest.raises(ValueError, match="isa must be"):
        with qk.forced_isa("neon"):
            pass
    assert qk.best_isa() in qk.ISAS


@pytest.mark.parametrize("isa", qk.ISAS)
def test_f16_scales_widen_exactly_subnormals_included(isa):
    """Q8_0 blocks whose f16 scales are subnormal, zero, negative, large: every path reads the
    weights gguf dequantizes to."""
    rng = np.random.default_rng(5)
    scales = np.array([6e-8, 3e-5, -1e-7, 0.0, -0.0, 2.5, -60000.0, 1.0], np.float16)
    out, nb = 16, 4
    d = rng.choice(scales, size=(out, nb)).astype(np.float16)
    q = rng.integers(-128, 128, size=(out, nb, 32), dtype=np.int8)
    raw = np.concatenate([d[..., None].view(np.uint8), q.view(np.uint8)], axis=-1)
    raw = raw.reshape(out, nb * 34)
    want = dequantize(raw, GGMLQuantizationType.Q8_0).astype(np.float32)
    p = qk.pack_stored("Q8_0", raw, (out, nb * 32))
    with qk.forced_isa(isa):
        got = qk.matmul(np.eye(nb * 32, dtype=np.float32), p).T
    assert np.array_equal(got, want)
    assert np.any((np.abs(d) < 6.1e-5) & (d != 0))  # subnormal scales are there


@pytest.mark.parametrize("isa", qk.ISAS)
@pytest.mark.parametrize("kind", KINDS)
def test_selected_rows_equal_the_dense_rows(kind, isa):
    """The head's gather variant: any legal set scores exactly the dense call's floats."""
    rng = np.random.default_rng(6)
    p, _ = _weights(kind, (200, 64), rng)
    x = rng.standard_normal((3, 64), dtype=np.float32)
    with qk.forced_isa(isa):
        dense = qk.matmul(x, p)
        for k in (1, 5, 17, 64, 200):
            rows = np.sort(rng.choice(200, size=k, replace=False))
            assert np.array_equal(qk.matmul_rows(x, p, rows), dense[:, rows])
    assert qk.matmul_rows(x, p, []).shape == (3, 0)
    with pytest.raises(ValueError, match="rows must be in"):
        qk.matmul_rows(x, p, [200])
