"""The real-trace replay (app/router, numpy only), ``llmqp bench --workload real``, traces in the
store and the router's saved state — none of it needs the model."""

import json

import numpy as np
import pytest

from app.harness_real import REAL_BENCH_FILES, run_bench_real
from app.measure.store import ResultStore
from app.router.real_trace import (
    REAL_ARMS,
    REAL_FEATURES,
    SHIPPED_TRACE,
    context_features,
    load_trace,
    real_stream,
)


def _trace(seed=0, requests=4, steps=30):
    """A made-up trace with the shipped file's layout: plan costs that depend on K."""
    rng = np.random.default_rng(seed)
    out = []
    for r in range(requests):
        for i in range(steps):
            k = int(rng.choice([1, 2, 5, 40, 3000]))
            row = {"request": f"r{r}", "idx": i, "k": k, "forced": k == 1, "forced_run": 0}
            row.update(position=20 + i, token=7, margin=None, plan="DenseHead", seconds=0.1)
            if k == 1:
                row["costs"] = {"ForcedToken": 0.02}
            else:
                row["margin"] = float(rng.uniform(0, 10))
                row["costs"] = {"DenseHead": 0.2, "SparseHead": 0.16 + 1e-5 * k}
                if i:
                    row["costs"].update(AmortizedHead=0.05 + 0.3 * (k > 100), AmortizedRerank=0.2)
                    row.update(pred_margin=float(rng.uniform(0, 10)), pred_correct=k < 100)
                    row["legal_gap"] = float(rng.uniform(0, 5))
            out.append(row)
    return {"meta": {"vocab": 49152}, "steps": out}


def test_replay_is_deterministic_by_seed_and_shaped(tmp_path):
    trace = _trace()
    a, b, c = real_stream(trace, 3), real_stream(trace, 3), real_stream(trace, 4)
    assert np.array_equal(a.X, b.X) and a.requests == b.requests
    assert a.X.shape == (a.steps, len(REAL_FEATURES)) and a.expected.shape == (a.steps, 4)
    assert sorted(a.requests) == sorted(c.requests)
    assert (a.k >= 2).all() and np.isclose(np.median(a.latency_s[:, 0]), a.ref_s)
    with pytest.raises(ValueError, match="seed"):
        real_stream(trace, -1)


def test_features_match_one_step_and_many():
    one = context_features(40, 49152, 3, 2.0, 100, 1, 0.5)
    many = context_features(np.array([40, 2]), 49152, 3, np.array([2.0, np.nan]), 100, 1, 0.5)
    assert one.shape == (len(REAL_FEATURES),) and np.allclose(many[0], one)
    assert many[1, 3] == 0.0  # no margin yet reads as 0


def test_bench_on_a_trace_is_deterministic_and_learns(tmp_path):
    path = tmp_path / "trace.json"
    path.write_text(json.dumps(_trace()))
    s1 = run_bench_real(5, 600, tmp_path / "a", path)
    run_bench_real(5, 600, tmp_path / "b", path)
    for name in REAL_BENCH_FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    lin = s1["routers"]["linucb"]
    # the made-up costs make AmortizedHead best at small K and SparseHead at large K:
    # a contextual router beats every fixed plan
    assert lin["total_loss"] < s1["fixed"]["best_fixed_loss"]
    assert s1["fixed"]["oracle_loss"] <= lin["total_loss"]


def test_the_shipped_trace_is_small_and_replays():
    assert SHIPPED_TRACE.stat().st_size < 1_000_000
    trace = load_trace()
    stream = real_stream(trace, 0)
    assert stream.steps > 100 and set(trace["meta"]["test_ids"])
    assert np.isfinite(stream.expected).all()


def test_cli_bench_real(tmp_path, capsys):
    from app.cli import main

    path = tmp_path / "trace.json"
    path.write_text(json.dumps(_trace()))
    code = main(
        [
            "bench",
            "--workload",
            "real",
            "--trace",
            str(path),
            "--steps",
            "200",
            "--out",
            str(tmp_path / "o"),
            "--seed",
            "1",
        ]
    )
    assert code == 0 and "linucb" in capsys.readouterr().out
    assert main(["bench", "--trace", str(path)]) == 2


def test_traces_in_the_store(tmp_path):
    steps = _trace(requests=1, steps=5)["steps"]
    with ResultStore(tmp_path / "s.db") as store:
        assert store.put_trace("collect", steps) == 5
        back = store.trace("collect")
        assert store.trace_runs() == ["collect"]
    assert [s["idx"] for s in back] == list(range(5))
    assert back[1]["costs"] == steps[1]["costs"] and back[0]["forced"] == steps[0]["forced"]
    with ResultStore(":memory:") as store, pytest.raises(ValueError, match="missing"):
        store.put_trace("x", [{"request": "r"}])


@pytest.mark.parametrize("name", ["linucb", "sw-linucb", "lints"])
def test_router_state_round_trips(tmp_path, name):
    from app.engine.results import Telemetry
    from app.engine.routing import RouterPolicy

    rng = np.random.default_rng(0)
    pol = RouterPolicy(name)
    for i in range(30):
        k = int(rng.integers(2, 5000))
        tel = Telemetry(request="r", index=i, k=k, vocab=49152, legal=np.arange(k),
                        last_forced_run=1, last_margin=1.0, position=30 + i, pending=1,
                        accept=0.5)  # fmt: skip
        pol.choose(tel)
        pol.feedback(i, "x", float(rng.uniform(0.05, 0.2)))
    loaded = RouterPolicy.load(pol.save(tmp_path / "r.json"), name)
    x = context_features(300, 49152, 1, 1.0, 40, 1, 0.5)
    assert loaded.router.select(x) == pol.router.select(x)
    assert np.array_equal(loaded.router.P_, pol.router.P_) and loaded.ref_s == pol.ref_s
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="not a router state"):
        RouterPolicy.load(tmp_path / "bad.json")
    assert REAL_ARMS == pol.arms
