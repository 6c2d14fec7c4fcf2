"""The backend times the engine's Llama body, prices it through the LlamaConfig bridge, and
measures a head over the memory budget in row blocks."""

import dataclasses

import numpy as np
import pytest

from app.engine.forward_numpy import NumpyLlama
from app.engine.weights import random_weights
from app.measure.kernels import get_kernels
from app.measure.limits import Limits
from app.measure.llama import (
    body_shape,
    llama_config,
    scenario_fields,
    served_config,
    transformer_shape,
)
from app.measure.modelled import model_seconds
from app.measure.store import ResultStore
from app.measure.sweeps import AmortizedSweep, HeadSweep, Runner
from app.measure.timing import summarize
from app.model import SHAPES, Scenario, Setting, Step, get_plan, plan_cost

from .conftest import FAST


def test_the_bridge_prices_the_model_that_decodes():
    """The GGUF's config (or, without the file, the shape the backend builds at d 576 and 30
    layers) through the bridge is SmolLM2-135M's shape, as Scenario and as TransformerShape."""
    cfg, _ = served_config()
    cfg = cfg or llama_config(576, 30, 49_152)
    shape = transformer_shape(cfg)
    assert shape == SHAPES["smollm2-135m"] == body_shape(576, 30, 49_152)
    assert Scenario(**scenario_fields(cfg)).shape == shape
    assert Scenario.from_model("smollm2-135m").shape == shape
    with pytest.raises(ValueError, match="n_heads·head_dim"):
        transformer_shape(dataclasses.replace(cfg, head_dim=32))


def test_llama_config_follows_the_llama_recipe():
    assert llama_config(4096, 32).n_heads == 64 and llama_config(4096, 32).d_ff == 10_944
    odd = llama_config(100, 1)  # 64 does not divide d: one head of d
    assert (odd.n_heads, odd.head_dim, odd.n_kv_heads, odd.d_ff) == (1, 100, 1, 320)


def test_the_body_is_the_engines_forward():
    """``decode()`` is the engine's NumpyLlama forward at position ``context`` (every call the
    same), and ``last_layer(h)`` runs the last layer as the body does: with one layer and an
    empty cache, the last layer on the embedding row is ``decode()`` itself."""
    kn = get_kernels("numpy", "cpu")
    body = kn.body(64, 1, 2, "float32", 0, seed=3)
    a, b = body.decode(), body.decode()
    np.testing.assert_array_equal(a, b)
    assert isinstance(body.model, NumpyLlama) and a.shape == (2, 64) and a.dtype == np.float32
    embedded = body.model.w.tok_embd[body.ids[:, 0]]
    np.testing.assert_array_equal(body.last_layer(embedded), a)
    deep = kn.body(64, 3, 1, "float32", 17, seed=3)
    assert deep.decode().shape == (1, 64) and deep.caches[0].length == 18
    kn.release()


def test_the_body_runs_given_weights():
    w = random_weights(llama_config(128, 2), np.random.default_rng(0))
    kn = get_kernels("numpy", "cpu")
    body = kn.body(128, 2, 1, "float32", 4, seed=0, weights=w)
    assert body.model.w is w
    kn.release()


def test_the_amortized_sweep_times_and_prices_the_llama_body():
    sweep = AmortizedSweep(d=64, layers=2, vocab=512, k=16, context=(0, 32))
    runner = Runner(get_kernels("numpy", "cpu"), ResultStore(), FAST)
    answer = runner.run(sweep)
    assert all(answer["plans"]["full_step"]["tokens_match"])
    assert all(answer["plans"]["amortized_rerank"]["tokens_match"])
    row = runner.store.query(plan="full_step", context=32)[0]
    c = Setting(body_shape(64, 2, 512), 1, "float32", "cpu", 1)
    expected = plan_cost(get_plan("SparseHead"), c, Step(np.array([16.0]), np.array([32.0])))
    assert model_seconds([row], c.hw)[0] == pytest.approx(float(expected.seconds[0]))


def test_model_weights_need_the_model_shape():
    with pytest.raises(ValueError, match="'weights' parameter"):
        AmortizedSweep.parse({"d": 64, "layers": 2, "vocab": 512, "weights": "model"}, ("float32",))
    with pytest.raises(ValueError, match="'weights' parameter"):
        AmortizedSweep.parse({"d": 64, "layers": 2, "vocab": 512, "weights": "x"}, ("float32",))
    cfg, _ = served_config()
    if cfg is not None:  # the model file is here: its own shape is accepted
        body = {"d": cfg.d, "layers": cfg.n_layers, "vocab": 512, "weights": "model"}
        assert AmortizedSweep.parse(body, ("float32",)).weights == "model"


def test_the_default_scenario_head_is_measured_in_row_blocks():
    """The issue's first-click failure: d 4,096 and |V| 128,256 are over the 1 GiB budget of
    one request whole; the sweep is accepted in two row blocks that fit it."""
    s = Scenario()
    sweep = HeadSweep.parse({"d": s.d, "vocab": s.vocab}, ("float32",))
    assert (sweep.blocks, sweep.rows) == (2, 64_128)
    assert sweep.nbytes() <= Limits().max_request_bytes < HeadSweep(s.d, s.vocab, k=(1,)).nbytes()


def test_a_head_in_row_blocks_sums_the_blocks():
    limits = Limits(max_request_bytes=6 << 20)
    sweep = HeadSweep.parse({"d": 64, "vocab": 32_768, "k": [1, 64, 32_768]}, ("float32",), limits)
    assert sweep.blocks > 1 and sweep.nbytes() <= limits.max_request_bytes
    assert sweep.pieces(32_768) == sweep.blocks and sweep.pieces(64) == 1
    runner = Runner(get_kernels("numpy", "cpu"), ResultStore(), FAST)
    answer = runner.run(sweep)
    assert answer["measured_in"]["blocks"] == sweep.blocks
    assert all(answer["plans"]["sparse_head"]["tokens_match"])
    rows = runner.store.query(plan="dense_head")
    assert rows[0]["version"].endswith(f"+blocks{sweep.blocks}") and rows[0]["vocab"] == 32_768
    # A blocked row is kept out of calibration (its time is a sum, not one kernel's).
    assert runner.store.query(version=runner.kernels.version) == []


def test_scaled_timing_is_the_sum_of_equal_runs():
    t = summarize([1.0, 2.0, 3.0], 1, 0.05)
    s = t.scaled(4)
    assert (s.median_s, s.min_s, s.p90_s, s.samples) == (8.0, 4.0, 4 * t.p90_s, 3)
    assert t.scaled(1) is t


def test_server_mode_starts_on_the_served_models_scenario():
    from app.widgets.measured import apply_served_scenario
    from app.widgets.state import ScenarioState

    st = ScenarioState()
    apply_served_scenario(st)
    s = st.scenario
    assert s.shape == SHAPES["smollm2-135m"] and (s.dtype, st.hardware) == ("float32", "cpu")
    assert "d 576" in st.served and "49,152" in st.served
    st.d = 1152  # the body keeps the served model's proportions
    assert st.scenario.ffn == 3072 and st.scenario.kv_dim == 384
