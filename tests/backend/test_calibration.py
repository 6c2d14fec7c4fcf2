"""Calibration recovers known hardware from timings the model itself generated (+ noise)."""

import numpy as np
import pytest

from app.measure import kernels_numpy
from app.measure.calibration import calibrate, nnls, relative_errors
from app.measure.modelled import level_features, linear_features, model_seconds
from app.model import PRESETS, k_grid

MiB = 1 << 20
#: A CPU core as this machine's numpy backend looks to the model: a 16 MiB effective last-level
#: cache at 80 GB/s over 35 GB/s of DRAM, under a microsecond per numpy call, numpy's launch
#: counts, and a single-core peak far below the 8-core preset's.
CPU = PRESETS["cpu"].replace(
    bandwidth=35e9,
    cache_bytes=16 * MiB,
    cache_bandwidth=80e9,
    overhead=0.9e-6,
    gather_efficiency=0.35,
    peak_flops={k: v * 0.05 for k, v in PRESETS["cpu"].peak_flops.items()},
    launches=kernels_numpy.LAUNCHES,
)


def _rows(dtype="bfloat16", batches=(1, 4)):
    rows = []

    def add(plan, **kw):
        rows.append(dict(device="gpu:test", impl="torch", plan=plan, dtype=dtype, **kw))

    for d, vocab in [(256, 4096), (1024, 32_768), (4096, 128_256)]:
        for batch in batches:
            shape = dict(d=d, vocab=vocab, batch=batch, layers=0, context=0, rerank_r=0)
            add("dense_head", k=0, **shape)
            for k in k_grid(vocab, 8):
                add("sparse_head", k=int(k), **shape)
    for context in (0, 256, 2048):
        body = dict(d=512, vocab=8192, batch=1, layers=2, k=64)
        add("full_step", context=context, rerank_r=0, **body)
        add("amortized_rerank", context=context, rerank_r=8, **body)
    add("amortized_step", d=512, vocab=8192, batch=1, layers=2, k=64, context=0, rerank_r=0)
    return rows


def _cpu_rows(cache="warm"):
    """Numpy rows at this machine's shapes: heads whose weights fit the cache (8 MiB) and do not
    (64 MiB), bodies from 6 to 40 MiB."""
    rows = []

    def add(plan, **kw):
        rows.append(dict(device="cpu:test", impl="numpy", version=kernels_numpy.VERSION,
                         cache=cache, plan=plan, dtype="float32", **kw))  # fmt: skip

    for d, vocab in [(256, 8192), (512, 32_768)]:
        for batch in (1, 4):
            shape = dict(d=d, vocab=vocab, batch=batch, layers=0, context=0, rerank_r=0)
            add("dense_head", k=0, **shape)
            for k in k_grid(vocab, 8):
                add("sparse_head", k=int(k), **shape)
    body = dict(d=256, vocab=8192, batch=1, layers=2, k=64)
    for context in (0, 256, 1024, 4096, 8192):
        add("full_step", context=context, rerank_r=0, **body)
        add("amortized_rerank", context=context, rerank_r=8, **body)
    add("amortized_step", context=0, rerank_r=0, **body)
    return rows


def _timed(rows, hw, noise, seed=0):
    rng = np.random.default_rng(seed)
    t = model_seconds(rows, hw) * (1 + noise * rng.standard_normal(len(rows)))
    return [{**r, "median_s": float(s)} for r, s in zip(rows, t)]


def test_nnls_matches_exact_and_constrained_solutions():
    A = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    np.testing.assert_allclose(nnls(A, A @ [2.0, 3.0]), [2.0, 3.0])
    x = nnls(A, np.array([1.0, -1.0, 0.0]))  # unconstrained answer has a negative entry
    assert (x >= 0).all() and x[1] == 0.0
    np.testing.assert_allclose(x, [0.5, 0.0])


def test_features_separate_stream_and_gather_bytes():
    row = dict(plan="sparse_head", d=64, vocab=1000, batch=1, dtype="float32", k=10)
    kernels, stream, gather, flops = linear_features([row])[0]
    assert kernels == 2 and gather == 10 * 64 * 4 and flops > 0 and stream > 0
    assert linear_features([row], kernels_numpy.LAUNCHES)[0, 0] == 6  # take, pad, matmul, ...


def test_level_features_split_hot_and_cold_bytes():
    row = dict(plan="full_step", d=256, vocab=8192, batch=1, dtype="float32", k=64, layers=2,
               context=4096, rerank_r=0)  # fmt: skip
    none, big, small = level_features([row], [0, 64 * MiB, 16 * MiB])[:, 0]
    assert none[2] == none[4] == 0 and big[1] == big[3] == 0  # all cold; all hot
    assert none[1:5].sum() == pytest.approx(big[1:5].sum())
    # 16 MiB: the two layers with their 4096-position KV caches (23 MB) are cold, the head hot.
    assert small[1] > 20e6 and small[4] == 64 * 256 * 4 and small[3] == 0


@pytest.mark.parametrize("noise", [0.0, 0.03])
def test_recovers_gpu_like_profile(noise):
    true = PRESETS["h100"].replace(bandwidth=2.1e12, overhead=6.5e-6, gather_efficiency=0.45)
    rows = _timed(_rows(), true, noise)
    cal = calibrate(rows, "h100")  # start from different numbers
    hw = cal.hardware
    tol = 1e-6 if noise == 0 else 0.08
    assert hw.bandwidth == pytest.approx(true.bandwidth, rel=tol)
    assert hw.overhead == pytest.approx(true.overhead, rel=tol)
    assert hw.gather_efficiency == pytest.approx(true.gather_efficiency, rel=tol)
    assert hw.peak_flops == true.peak_flops  # memory-bound data: peak untouched
    assert hw.cache_bytes == 0 and hw.launches == {}  # one bandwidth explains it; torch: model's
    assert cal.errors["all"]["median_abs_rel_err"] <= max(1e-6, noise)
    for plan, err in cal.errors.items():
        assert err["median_abs_rel_err"] <= 0.1, plan
    assert cal.base_errors["all"]["median_abs_rel_err"] > 0.1  # the preset alone is off


@pytest.mark.parametrize("noise", [0.0, 0.03])
def test_recovers_cpu_profile_with_a_cache_level(noise):
    rows = _timed(_cpu_rows(), CPU, noise, seed=2)
    cal = calibrate(rows, "cpu")
    hw = cal.hardware
    tol = 1e-6 if noise == 0 else 0.1
    assert hw.launches == kernels_numpy.LAUNCHES  # the rows' implementation's count
    assert hw.bandwidth == pytest.approx(CPU.bandwidth, rel=tol)
    assert hw.cache_bandwidth == pytest.approx(CPU.cache_bandwidth, rel=tol)
    assert hw.overhead == pytest.approx(CPU.overhead, rel=tol)
    assert hw.gather_efficiency == pytest.approx(CPU.gather_efficiency, rel=tol)
    assert hw.peak("float32") == pytest.approx(CPU.peak("float32"), rel=tol if noise else 1e-4)
    # The size itself is only known between two working sets: it must split them alike.
    lo, hi = cal.coefficients["cache_bytes_range"]
    assert lo <= hw.cache_bytes <= hi
    same = level_features(rows, [hw.cache_bytes, CPU.cache_bytes], CPU.launches)
    np.testing.assert_array_equal(same[0], same[1])
    assert cal.coefficients["points_hot"] > 0 and cal.coefficients["points_cold"] > 0
    for plan, err in cal.errors.items():  # the peak is searched: exact to ~1e-5
        assert err["median_abs_rel_err"] <= max(1e-4, noise), plan
    assert any("cache level" in n for n in cal.notes)


def test_no_cache_level_for_flushed_caches_or_when_asked():
    rows = _timed(_cpu_rows(cache="cold"), CPU.replace(cache_bytes=0.0, cache_bandwidth=0.0), 0.0)
    cal = calibrate(rows, "cpu")
    assert cal.hardware.cache_bytes == 0 and cal.coefficients["s_per_cached_byte"] is None
    assert cal.hardware.bandwidth == pytest.approx(CPU.bandwidth, rel=1e-6)
    assert any("flushed" in n for n in cal.notes)
    warm = _timed(_cpu_rows(), CPU, 0.0)
    assert calibrate(warm, "cpu", fit_cache=False).hardware.cache_bytes == 0


def test_launch_counts_matter_and_can_be_given():
    rows = _timed(_cpu_rows(), CPU, 0.0)
    counted = calibrate(rows, "cpu")
    fused = calibrate(rows, "cpu", launches={})  # the model's fused counts: 8 per layer
    assert fused.hardware.launches == {}
    assert counted.errors["all"]["max_abs_rel_err"] < 1e-4
    assert fused.errors["all"]["max_abs_rel_err"] > 0.1


def test_fits_peak_when_points_are_compute_bound():
    # A CPU core: skinny GEMMs (batch 16) run far below the 8-core datasheet peak.
    true = PRESETS["cpu"].replace(
        bandwidth=40e9,
        overhead=5e-6,
        gather_efficiency=0.4,
        peak_flops={k: v * 0.04 for k, v in PRESETS["cpu"].peak_flops.items()},
    )
    rows = [r for r in _rows("float32", batches=(1, 16)) if r["d"] < 4096]
    rows = _timed(rows, true, 0.02, seed=1)
    cal = calibrate(rows, "cpu")
    assert cal.hardware.peak("float32") == pytest.approx(true.peak("float32"), rel=0.15)
    assert cal.hardware.bandwidth == pytest.approx(true.bandwidth, rel=0.1)
    assert cal.errors["all"]["median_abs_rel_err"] < 0.05
    assert any("peak" in n for n in cal.notes)


def test_without_sparse_rows_keeps_the_base_gather_efficiency():
    true = PRESETS["a100"].replace(bandwidth=1.5e12, overhead=8e-6, gather_efficiency=0.3)
    rows = _timed([r for r in _rows() if r["plan"] == "dense_head"], true, 0.0)
    cal = calibrate(rows, "a100")
    assert cal.hardware.gather_efficiency == PRESETS["a100"].gather_efficiency
    assert cal.hardware.bandwidth == pytest.approx(1.5e12, rel=1e-6)
    assert any("gather_efficiency kept" in n for n in cal.notes)


def test_relative_errors_and_serialisation():
    rows = _timed(_rows()[:5], PRESETS["h100"], 0.0)
    errs = relative_errors(rows, PRESETS["h100"])
    assert errs["all"]["n"] == 5 and errs["all"]["max_abs_rel_err"] == pytest.approx(0, abs=1e-9)
    d = calibrate(rows, "h100").to_dict()
    want = {"hardware", "base", "points", "errors", "base_errors", "coefficients", "notes"}
    assert set(d) == want
    assert PRESETS["h100"].__class__.from_dict(d["hardware"]).name == "h100 (calibrated)"


def test_refuses_too_few_or_mixed_rows():
    rows = _timed(_rows(), PRESETS["h100"], 0.0)
    with pytest.raises(ValueError, match="at least 3 measured points; got 2"):
        calibrate(rows[:2], "h100")
    mixed = rows[:3] + [{**rows[3], "device": "cpu:other"}]
    with pytest.raises(ValueError, match="one device, impl and kernel version"):
        calibrate(mixed, "h100")
    old = rows[:3] + [{**rows[3], "version": "numpy-0"}]
    with pytest.raises(ValueError, match="one device, impl and kernel version"):
        calibrate(old, "h100")
