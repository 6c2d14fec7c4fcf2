"""measured_latency: the router's per-plan latency from measurements, model outside them."""

import numpy as np
import pytest

from app.measure.kernels import get_kernels
from app.measure.llama import llama_config, scenario_fields
from app.measure.measured import answer_rows, measured_latency
from app.measure.store import Point, ResultStore
from app.measure.sweeps import AmortizedSweep, HeadSweep, Runner
from app.measure.timing import summarize
from app.model import (
    PLAN_NAMES,
    PRESETS,
    Scenario,
    decode_step_cost,
    prefill_cost,
    sparse_head_cost,
)
from app.router.environment import make_stream, model_latency

from .conftest import FAST

US = 1e-6
HW = PRESETS["cpu"]
#: The stored body is the engine's Llama body at (d 64, 2 layers): the bridge gives its shape.
S = Scenario(
    **scenario_fields(llama_config(64, 2, 1024)), k=16, batch=1, dtype="float32",
    hardware="cpu", context=100, decode_length=50, rerank_r=8,
)  # fmt: skip


def _put(store, plan, median_us, device="cpu:test", **kw):
    point = Point(device, "numpy", "numpy-1", plan, d=64, vocab=1024, batch=1, dtype="float32",
                  **kw)  # fmt: skip
    m = median_us * US
    store.put(point, summarize([m, m, m], 1, 0.05), {}, True)


@pytest.fixture
def store():
    st = ResultStore()
    for k, m in [(4, 10.0), (16, 20.0), (256, 80.0), (1024, 300.0)]:
        _put(st, "sparse_head", m, k=k)
    _put(st, "dense_head", 200.0)
    body = dict(k=16, layers=2)
    _put(st, "amortized_step", 50.0, **body)
    for c, full, rerank in [(0, 1000.0, 300.0), (256, 1500.0, 400.0)]:
        _put(st, "full_step", full, context=c, **body)
        _put(st, "amortized_rerank", rerank, context=c, rerank_r=8, **body)
    yield st
    st.close()


def test_composes_measured_components(store):
    f = measured_latency(store, S, hardware=HW)
    lat = f(np.array([16, 16, 4]), np.array([0.0, 128.0, 0.0]), np.zeros(3))
    assert lat.shape == (3, len(PLAN_NAMES))
    full0 = float(prefill_cost(S.shape, 1, 0, 1, "float32", HW).seconds)
    np.testing.assert_allclose(
        lat[0, :5] / US, [980 + 200, 1000, 50, 50 + 250, full0 / US + 20], rtol=1e-12
    )
    forced = PLAN_NAMES.index("ForcedToken")
    np.testing.assert_array_equal(lat[:, forced], lat[:, 0])  # K > 1: it runs DenseHead
    # K = 1: one modelled forward over the forced position, no head, no measured term.
    one = f(np.array([1.0]), np.array([128.0]), np.zeros(1))[0, forced]
    assert one == pytest.approx(float(prefill_cost(S.shape, 1, 128, 1, "float32", HW).seconds))
    # Linear over context: exact body halfway between 980 and 1480; rerank extra 250 -> 350.
    np.testing.assert_allclose(lat[1, :4] / US, [1230 + 200, 1250, 50, 50 + 300], rtol=1e-12)
    # Log-log over K: K=4 is measured exactly; body terms move with s(k) only.
    np.testing.assert_allclose(lat[2, 1:4] / US, [990, 40, 290], rtol=1e-12)


def test_log_log_interpolation_between_measured_k(store):
    f = measured_latency(store, S, hardware=HW)
    mid = f(np.array([8.0]), np.zeros(1), np.zeros(1))[0]
    s8 = np.sqrt(10.0 * 20.0)  # geometric midpoint of 10 and 20 us
    assert mid[2] / US == pytest.approx(30 + s8)


def test_outside_the_measured_range_uses_the_model(store):
    f = measured_latency(store, S, hardware=HW)
    assert f.coverage["sparse_head_k"] == [4.0, 1024.0]
    assert f.coverage["body"]["context"] == [0.0, 256.0] and f.coverage["prefill"] == "model"
    s1 = float(sparse_head_cost(64, 1024, 1, 1, "float32", HW).seconds)
    lat = f(np.array([1.0]), np.zeros(1), np.zeros(1))[0]
    assert lat[2] == pytest.approx(30 * US + s1)  # K=1 below the measured range
    far = f(np.array([16.0]), np.array([1000.0]), np.zeros(1))[0]
    exact = float(decode_step_cost(S.shape, 1000, 1, "float32", HW).seconds)
    assert far[1] == pytest.approx(exact + 20 * US)
    miss = f(np.array([16.0]), np.array([128.0]), np.array([0.5]))[0]
    extra = float(prefill_cost(S.shape, 64, 64, 1, "float32", HW).seconds)
    assert miss[1] == pytest.approx(1250 * US + extra)


def test_errors_name_what_is_missing(store):
    with pytest.raises(ValueError, match="No measured sparse head at d=128"):
        measured_latency(store, S.replace(d=128))
    other = measured_latency(store, S.replace(ffn_mult=4.0), hardware=HW)
    assert other.coverage["body"].startswith("model (the stored body, the engine's Llama body")
    assert "ffn=192" in other.coverage["body"] and "ffn=256" in other.coverage["body"]
    _put(store, "sparse_head", 5.0, device="cpu:other", k=4)
    with pytest.raises(ValueError, match="several devices"):
        measured_latency(store, S)
    assert measured_latency(store, S, device="cpu:test", hardware=HW).coverage["impl"] == "numpy"


def test_without_body_rows_the_body_is_modelled():
    st = ResultStore()
    for k in (4, 64, 1024):
        _put(st, "sparse_head", float(k), k=k)
    f = measured_latency(st, S, hardware=HW)
    assert f.coverage["dense_head"] == "model" and f.coverage["body"].startswith("model")
    k, c, m = np.array([64.0]), np.array([100.0]), np.zeros(1)
    ours = f(k, c, m)[0]
    model = model_latency(S.replace(hardware=HW))(k, c, m)[0]
    s_model = float(sparse_head_cost(64, 1024, 64, 1, "float32", HW).seconds)
    assert ours[0] == pytest.approx(model[0])  # all modelled: exact body + dense head
    for plan in (1, 2, 4):  # the same, but with the measured sparse head (64 us) in it
        assert ours[plan] - 64 * US == pytest.approx(model[plan] - s_model)
    assert np.isfinite(ours).all()


def test_real_sweeps_feed_the_router_stream():
    st = ResultStore()
    runner = Runner(get_kernels("numpy"), st, FAST)
    head = runner.run(HeadSweep(d=64, vocab=1024, k=(1, 16, 256, 1024)))
    body = runner.run(AmortizedSweep(d=64, layers=2, vocab=1024, k=16, context=(0, 64, 256)))
    f = measured_latency(st, S)
    g = measured_latency([head, None, body], S)  # the answers carry the same medians
    k, c, m = np.array([1.0, 16, 300]), np.array([0.0, 100, 256]), np.zeros(3)
    np.testing.assert_allclose(f(k, c, m), g(k, c, m))
    assert len(answer_rows(head)) == 5 and len(answer_rows(body)) == 7
    stream = make_stream(S, 300, np.random.default_rng(0), latency=f)
    assert stream.latency_s.shape == (300, len(PLAN_NAMES)) and np.isfinite(stream.expected).all()
    st.close()


def test_calibrates_on_the_newest_kernel_version(store):
    """Rows of an older kernel version (other launch counts) stay out of the fitted profile."""
    point = Point("cpu:test", "numpy", "numpy-0", "sparse_head", d=64, vocab=1024, batch=1,
                  dtype="float32", k=8)  # fmt: skip
    store.put(point, summarize([1e-3] * 3, 1, 0.05), {}, True)  # older, wildly slower
    _put(store, "sparse_head", 40.0, k=64)  # the newest row: numpy-1
    hw = measured_latency(store, S).coverage["hardware"]
    assert hw["name"].endswith("(calibrated)")
