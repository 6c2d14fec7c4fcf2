"""Roofline costs, crossovers and regimes against hand-computed numbers."""

import numpy as np
import pytest

from app.model import (
    PRESETS,
    Hardware,
    crossover_curve,
    dense_head_cost,
    find_crossover,
    get_hardware,
    k_grid,
    kernel_cost,
    select_cost,
    sparse_head_cost,
)

TOY = Hardware("toy", {"float32": 1e12, "bfloat16": 2e12, "float16": 2e12}, 1e11, 1e-6, 0.5)


def test_kernel_cost_is_max_of_compute_and_memory_plus_overhead():
    c = kernel_cost(4e12, 1e11, TOY, "float32")  # 4 s of compute, 1 s of memory
    assert c.seconds == pytest.approx(4.0 + 1e-6)
    assert c.regime == "compute-bound"
    c = kernel_cost(1.0, 1e11, TOY, "float32", gather_bytes=1e11)  # 1 s + 2 s (gather at 50%)
    assert c.seconds == pytest.approx(3.0 + 1e-6)
    assert c.regime == "memory-bound"
    assert kernel_cost(1.0, 1.0, TOY, "float32").regime == "overhead-bound"


def test_dense_head_matches_formula():
    d, V, B = 4096, 128_256, 2
    c = dense_head_cost(d, V, B, "bfloat16", TOY)
    assert c.flops == pytest.approx(2 * d * V * B + 2 * V * B)
    weights, states, logits = d * V * 2, B * d * 2, B * V * 2
    mask_pass = B * V * 2 + B * V / 8 + B * 8
    assert c.bytes == pytest.approx(weights + states + logits + mask_pass)
    assert c.kernels == 2
    assert c.seconds == pytest.approx(
        max(2 * d * V * B / 2e12, (weights + states + logits) / 1e11)
        + max(2 * V * B / 2e12, mask_pass / 1e11)
        + 2e-6
    )


def test_sparse_head_formula_and_broadcast():
    d, V = 1024, 50_000
    ks = np.array([1, 10, 1000])
    c = sparse_head_cost(d, V, ks, 1, "float32", TOY)
    assert c.flops[1] == pytest.approx(2 * d * 10 + 10)
    gathered = 10 * d * 4
    assert c.bytes[1] == pytest.approx(gathered + 10 * 4 + d * 4 + 10 * 4 + 10 * 4 + 8)
    assert np.all(np.diff(c.seconds) > 0)  # more legal tokens, more time


def test_flop_crossover_is_vocab_and_roofline_is_below_it():
    for name in PRESETS:
        cross = find_crossover(4096, 128_256, 1, "bfloat16", name)
        assert cross.k_flop == 128_256
        assert cross.k_roofline is not None and cross.k_roofline < cross.k_flop
        dense = dense_head_cost(4096, 128_256, 1, "bfloat16", name).seconds
        at = sparse_head_cost(4096, 128_256, cross.k_roofline, 1, "bfloat16", name).seconds
        above = sparse_head_cost(4096, 128_256, cross.k_roofline + 1, 1, "bfloat16", name)
        assert at <= dense < above.seconds


def test_batching_moves_the_crossover_down():
    one = find_crossover(4096, 128_256, 1, "bfloat16", "h100").k_roofline
    eight = find_crossover(4096, 128_256, 8, "bfloat16", "h100").k_roofline
    assert eight < one / 4  # every sequence gathers its own rows; dense reads weights once


def test_crossover_absent_or_at_vocab():
    perfect_gather = TOY.replace(gather_efficiency=1.0, overhead=0.0)
    # With gathers at full bandwidth only the index list (4 B/token) against the mask
    # (1 bit/token) and the logits separate the two: K* sits just below |V|.
    k_star = find_crossover(64, 1000, 1, "float32", perfect_gather).k_roofline
    assert 950 <= k_star < 1000
    huge_overhead = TOY.replace(overhead=1.0)
    # Sparse has as many launches as dense; make it lose at K = 1 with a tiny vocabulary.
    tiny = find_crossover(64, 2, 64, "float32", huge_overhead.replace(gather_efficiency=0.01))
    assert tiny.k_roofline is None


def test_crossover_curve_and_grid():
    grid = k_grid(128_256, 40)
    assert grid[0] == 1 and grid[-1] == 128_256 and np.all(np.diff(grid) > 0)
    c = crossover_curve(4096, 128_256)
    assert len(c["k"]) == len(c["sparse_s"]) == len(c["dense_s"])
    assert set(c["sparse_regime"]) <= {"compute-bound", "memory-bound", "overhead-bound"}
    assert c["sparse_regime"][0] == "overhead-bound" and c["dense_regime"][0] == "memory-bound"


def test_select_cost_softmax_costs_more_than_argmax():
    a = select_cost(1000, 1, "float32", TOY, "argmax")
    s = select_cost(1000, 1, "float32", TOY, "softmax")
    assert s.seconds > a.seconds and s.kernels == 2


def test_hardware_round_trip_and_presets():
    h = get_hardware("h100")
    assert Hardware.from_dict(h.to_dict()) == h
    assert get_hardware(TOY) is TOY
    assert PRESETS["h200"].bandwidth > PRESETS["h100"].bandwidth > PRESETS["a100"].bandwidth


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: dense_head_cost(0, 100), r"'d' parameter must be an integer in \[1, "),
        (lambda: sparse_head_cost(64, 100, 101), r"'k' parameter .* \[1, 100\]. Got 101"),
        (lambda: sparse_head_cost(64, 100, 0), r"'k' parameter"),
        (lambda: sparse_head_cost(64, 100, [1, np.nan]), r"'k' parameter"),
        (lambda: dense_head_cost(64, 100, hardware="tpu"), r"'hardware' parameter must be one"),
        (lambda: dense_head_cost(64, 100, dtype="int4"), r"'dtype' parameter must be one"),
        (lambda: dense_head_cost(64, 100, batch=0), r"'batch' parameter"),
        (lambda: dense_head_cost(64.5, 100), r"'d' parameter"),
        (lambda: dense_head_cost(True, 100), r"'d' parameter"),
        (lambda: select_cost(10, op="topk"), r"'op' parameter"),
        (lambda: TOY.replace(bandwidth=0.0), r"'bandwidth' parameter .* \(0, inf\)"),
        (lambda: TOY.replace(gather_efficiency=1.5), r"'gather_efficiency'"),
        (lambda: TOY.replace(overhead=float("inf")), r"'overhead'"),
        (lambda: TOY.replace(peak_flops={"float32": 1.0}), r"'peak_flops'"),
        (lambda: Hardware.from_dict({**TOY.to_dict(), "x": 1}), r"Unknown Hardware fields"),
    ],
)
def test_validation_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
