"""The body's fused projections (``linear.QLinear``): one packed Q/K/V (or gate/up) matrix gives,
bit for bit, what the separate projections give side by side; a T-row call gives each row its
one-row result; ``out=`` writes the caller's buffer; bad inputs are refused."""

import numpy as np
import pytest
from gguf import GGMLQuantizationType
from gguf.quants import quantize

from app.engine import qkernel as qk
from app.engine.linear import QLinear

IN = 96
OUTS = (48, 16, 16)  # q, k, v of a small GQA layer (outputs a multiple of 16)
ODD_OUTS = (40, 24, 33)  # parts that end inside a 16-output group


def _raw(kind, out, rng):
    w = rng.standard_normal((out, IN), dtype=np.float32)
    return quantize(w, GGMLQuantizationType[kind]) if kind != "F32" else w


def _pack(kind, raw, out):
    return qk.pack_f32(raw) if kind == "F32" else qk.pack_stored(kind, raw, (out, IN))


@pytest.mark.parametrize("isa", qk.ISAS)
@pytest.mark.parametrize("kind", ("Q4_0", "Q4_1", "Q8_0", "F32"))
@pytest.mark.parametrize("outs", (OUTS, ODD_OUTS))
def test_fused_equals_separate_projections(kind, outs, isa):
    """Packing q|k|v as one matrix (what the body does at load) changes no output bit: each
    output's reduction reads only its own row of weights."""
    rng = np.random.default_rng(7)
    raws = [_raw(kind, o, rng) for o in outs]
    fused = QLinear([_pack(kind, np.concatenate(raws), sum(outs))])
    separate = [_pack(kind, r, o) for r, o in zip(raws, outs)]
    x = rng.standard_normal((16, IN), dtype=np.float32)
    with qk.forced_isa(isa):
        for t in (1, 2, 3, 4, 5, 8, 16):
            want = np.concatenate([qk.matmul(x[:t], p) for p in separate], axis=1)
            assert np.array_equal(fused(x[:t]), want), (t, isa)


@pytest.mark.parametrize("isa", qk.ISAS)
def test_t_rows_equal_t_single_row_calls(isa):
    rng = np.random.default_rng(8)
    lin = QLinear([_pack("Q4_1", _raw("Q4_1", 160, rng), 160)])
    x = rng.standard_normal((16, IN), dtype=np.float32)
    with qk.forced_isa(isa):
        one = np.concatenate([lin(x[r : r + 1]) for r in range(16)])
        for t in range(1, 17):
            assert np.array_equal(lin(x[:t]), one[:t]), t


def test_parts_of_other_kinds_write_their_own_columns_and_out_is_used():
    """A Q4_1 part beside an F32 part (a file that stores them differently): each part's
    columns are its own matmul's; ``out=`` is filled and returned, not copied."""
    rng = np.random.default_rng(9)
    parts = [_pack("Q4_1", _raw("Q4_1", 40, rng), 40), _pack("F32", _raw("F32", 24, rng), 24)]
    lin = QLinear(parts)
    x = rng.standard_normal((3, IN), dtype=np.float32)
    buf = np.full((3, 64), np.nan, np.float32)
    got = lin(x, out=buf)
    assert got is buf
    assert np.array_equal(buf, np.concatenate([qk.matmul(x, p) for p in parts], axis=1))
    assert np.array_equal(lin(x), buf)


def test_bad_inputs_are_refused():
    rng = np.random.default_rng(10)
    lin = QLinear([_pack("Q8_0", _raw("Q8_0", 32, rng), 32)])
    x = rng.standard_normal((2, IN), dtype=np.float32)
    for bad in (x.astype(np.float64), x[:, :64], np.asfortranarray(np.ones((2, IN), np.float32))):
        with pytest.raises(ValueError, match="x must be"):
            lin(bad)
    for out in (np.empty((2, 31), np.float32), np.empty((3, 32), np.float32),
                np.empty((2, 32), np.float64), np.empty((32, 2), np.float32).T):  # fmt: skip
        with pytest.raises(ValueError, match="out must be"):
            lin(x, out=out)
