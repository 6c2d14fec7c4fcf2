"""The batch dimension, measured: a head sweep at B > 1 times one dense pass over B rows against
B gathers of K rows and finds a crossover, and the app's server mode shows the measured K* at
each batch beside the model's (Figure 1's Batch slider then has measured points)."""

from concurrent.futures import wait

import pytest

from app.measure.kernels import get_kernels
from app.measure.store import ResultStore
from app.measure.sweeps import HeadSweep, Runner
from app.model import find_crossover

from .conftest import FAST

D, VOCAB = 64, 2048
KS = (1, 4, 16, 64, 256, 1024, 2048)


def test_a_head_sweep_at_batch_4_finds_a_crossover():
    runner = Runner(get_kernels("numpy", "cpu"), ResultStore(), FAST)
    one = runner.run(HeadSweep(d=D, vocab=VOCAB, batch=1, k=KS))
    four = runner.run(HeadSweep(d=D, vocab=VOCAB, batch=4, k=KS))
    assert four["params"]["batch"] == 4 and four["counts"]["measured"] == len(KS) + 1
    assert all(four["plans"]["sparse_head"]["tokens_match"])  # B tokens each, same as dense
    cross = four["crossover"]
    # 4 gathers of one row beat a pass over 2,048 rows: the sparse head wins at the first K.
    assert cross["measured_k"] is not None and 1 <= cross["measured_k_interp"] <= VOCAB
    # Each sequence gathers its own rows, the weights are read once: the model's K* falls.
    assert cross["model_k_preset"] < one["crossover"]["model_k_preset"]
    rows = runner.store.query(plan="dense_head")
    assert sorted(r["batch"] for r in rows) == [1, 4]  # one row per batch, stored apart


def test_server_mode_shows_measured_k_star_at_each_batch():
    pytest.importorskip("app.serving.service")
    from app.widgets.app import LLMQPApp
    from app.widgets.measured import batch_grid, kstar_by_batch
    from app.widgets.state import ScenarioState

    assert batch_grid(3, {"batch": [1, 8]}) == [1, 2, 3, 4, 8]
    app = LLMQPApp(ScenarioState(d=D, vocab=VOCAB, k=64, batch=4, horizon=200), server=True)
    panel = app.measured
    assert panel.client is not None, panel.banner.object
    assert not panel.batch_button.disabled
    assert panel.measure(batches=[1, 4])
    wait([panel._future])
    assert panel.poll() and not panel.banner.visible, panel.banner.object
    rows = kstar_by_batch(panel.heads, app.state.scenario)
    assert [r["batch"] for r in rows] == [1, 4]
    hw = app.state.scenario.hw
    assert [r["model_k"] for r in rows] == [
        find_crossover(D, VOCAB, b, "float32", hw).k_roofline for b in (1, 4)
    ]
    assert rows[1]["measured_k"] is not None  # sparse wins at K = 1 with B = 4
    fig = app.crossover
    assert fig.measured_kstar_span.visible
    assert fig.measured_kstar_span.location == pytest.approx(rows[1]["measured_k"])
    assert "B 1:" in fig.batch_readout.text and "<b>B 4:" in fig.batch_readout.text
    assert len(fig.measured["sparse"].data["k"]) == len(panel.heads[(D, VOCAB, 4, "float32")]["k"])
    app.state.batch = 2  # not measured: no points, the readout still lists what was
    assert len(fig.measured["sparse"].data["k"]) == 0 and not fig.measured_kstar_span.visible
    assert "B 4:" in fig.batch_readout.text
    app.state.batch = 1  # measured: its own points come back
    assert len(fig.measured["sparse"].data["k"]) > 0
    assert "<b>B 1:" in fig.batch_readout.text
