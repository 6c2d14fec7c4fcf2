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
        (lambda: crossover_curve(64, 100, ks=64), r"'ks' parameter must have shape \(any\)"),
        (lambda: crossover_curve(64, 100, ks=[1, 101]), r"'ks' parameter .* \[1, 100\]. Got 101"),
        (lambda: crossover_curve(64, 100, ks=[[1, 2]]), r"'ks' parameter must have shape"),
        (lambda: crossover_curve(64, 0), r"'vocab' parameter must be an integer in \[1, "),
    ],
)
def test_validation_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# -- cache level and launch counts (both off in every preset) ----------------------------------

CACHED = TOY.replace(cache_bytes=1e6, cache_bandwidth=4e11)


def test_presets_have_no_cache_level_and_the_models_launch_counts():
    for hw in PRESETS.values():
        assert hw.cache_bytes == 0 and hw.cache_bandwidth == 0 and hw.launches == {}
        assert hw.launch("layer") == 8 and hw.launch("step") == 0
        assert hw.stream_bandwidth(1e3) == hw.bandwidth == hw.stream_bandwidth(1e12)


def test_working_sets_that_fit_stream_at_the_cache_rate():
    assert CACHED.stream_bandwidth(1e6) == 4e11 and CACHED.stream_bandwidth(1e6 + 1) == 1e11
    np.testing.assert_array_equal(CACHED.stream_bandwidth([1e5, 2e6]), [4e11, 1e11])
    hot = kernel_cost(1.0, 1e5, CACHED, "float32", gather_bytes=1e5)  # 200 kB fit
    assert hot.seconds == pytest.approx(1e5 / 4e11 + 1e5 / (4e11 * 0.5) + 1e-6)
    # The same bytes inside an operation whose working set does not fit come from memory.
    cold = kernel_cost(1.0, 1e5, CACHED, "float32", gather_bytes=1e5, working_set=5e6)
    assert cold.seconds == pytest.approx(1e5 / 1e11 + 1e5 / (1e11 * 0.5) + 1e-6)
    assert cold.bytes == hot.bytes == 2e5


def test_dense_head_is_hot_below_the_cache_and_cold_above():
    small = dense_head_cost(64, 1000, 1, "float32", CACHED)
    assert small.seconds < dense_head_cost(64, 1000, 1, "float32", TOY).seconds
    # 205 MB of weights come from memory; the 400 kB of logits the argmax rereads are hot.
    big = dense_head_cost(512, 100_000, 1, "float32", CACHED)
    gemm_bytes = 512 * 100_000 * 4 + 512 * 4 + 100_000 * 4
    argmax_bytes = 100_000 * 4 + 100_000 / 8 + 8
    assert float(big.memory_s) == pytest.approx(gemm_bytes / 1e11 + argmax_bytes / 4e11)


def test_sparse_working_set_counts_each_row_once():
    # Batch 8 over a 100-token vocabulary touches at most 100 distinct rows (25.6 kB at d=64):
    # all of it fits a 100 kB cache although 8 x 90 rows are gathered.
    hw = TOY.replace(cache_bytes=1e5, cache_bandwidth=1e12)
    c = sparse_head_cost(64, 100, 90, 8, "float32", hw)
    gathered = 8 * 90 * 64 * 4
    stream = 8 * 90 * 4 + 8 * 64 * 4 + 8 * 90 * 4
    assert float(c.memory_s) == pytest.approx(
        stream / 1e12 + gathered / (1e12 * 0.5) + (8 * 90 * 4 + 8 * 8) / 1e12
    )


def test_decode_step_working_set_is_every_layer():
    from app.model import TransformerShape, decode_step_cost

    shape = TransformerShape(256, 4, 1000)  # 786k params/layer: 3.1 MB per layer in float32
    per_layer = 12 * 256 * 256 * 4 + 2 * 257 * 256 * 4
    fits = TOY.replace(cache_bytes=4.1 * per_layer, cache_bandwidth=1e12)
    too_small = fits.replace(cache_bytes=3.9 * per_layer)  # each layer fits, the step does not
    hot = decode_step_cost(shape, 256, 1, "float32", fits)
    cold = decode_step_cost(shape, 256, 1, "float32", too_small)
    assert float(hot.memory_s) == pytest.approx(4 * per_layer / 1e12)
    assert float(cold.memory_s) == pytest.approx(4 * per_layer / 1e11)


def test_launch_counts_set_the_overhead_term():
    from app.model import LAUNCHES, TransformerShape, amortized_update_cost, decode_step_cost

    numpy_like = TOY.replace(launches={"layer": 31, "step": 7, "gather_gemm": 2, "argmax": 3})
    shape = TransformerShape(64, 3, 1000)
    step = decode_step_cost(shape, [0, 10], 1, "float32", numpy_like)
    np.testing.assert_allclose(step.kernels, 3 * 31 + 7)
    np.testing.assert_allclose(step.overhead_s, (3 * 31 + 7) * 1e-6)
    assert sparse_head_cost(64, 1000, 10, 1, "float32", numpy_like).kernels == 5
    assert dense_head_cost(64, 1000, 1, "float32", numpy_like).kernels == 2  # not overridden
    assert amortized_update_cost(shape, 1, "float32", numpy_like).kernels == 2
    assert decode_step_cost(shape, 0, 1, "float32", TOY).kernels == 3 * LAUNCHES["layer"]
    assert select_cost(10, 1, "float32", numpy_like.replace(launches={"softmax_pass": 3}),
                       "softmax").kernels == 6  # fmt: skip


def test_new_fields_round_trip_and_old_dicts_still_load():
    hw = CACHED.replace(launches={"layer": 31})
    assert Hardware.from_dict(hw.to_dict()) == hw
    old = {k: v for k, v in TOY.to_dict().items()
           if k not in ("cache_bytes", "cache_bandwidth", "launches")}  # fmt: skip
    assert Hardware.from_dict(old) == TOY


@pytest.mark.parametrize(
    "changes, match",
    [
        (dict(cache_bytes=-1.0), r"'cache_bytes'"),
        (dict(cache_bytes=1e6, cache_bandwidth=1e10), r"'cache_bandwidth' .* \[1e\+11, inf\)"),
        (dict(cache_bandwidth=1e12), r"'cache_bandwidth' parameter must be 0"),
        (dict(launches={"warp": 1}), r"'launches' parameter must be one of"),
        (dict(launches={"layer": -1}), r"launches\['layer'\]"),
        (dict(launches=[1]), r"'launches' parameter must be a dict"),
    ],
)
def test_cache_and_launch_validation(changes, match):
    with pytest.raises(ValueError, match=match):
        TOY.replace(**changes)
