"""The benchmark harness and the CLI: determinism, the paper's claims, clean errors."""

import json

import pytest

from app.cli import main
from app.harness import BENCH_FILES, run_bench


def test_same_seed_gives_byte_identical_files(tmp_path):
    run_bench(5, 1500, tmp_path / "a")
    run_bench(5, 1500, tmp_path / "b")
    run_bench(6, 1500, tmp_path / "c")
    for name in BENCH_FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / "regret.csv").read_bytes() != (
        tmp_path / "c" / "regret.csv"
    ).read_bytes()


@pytest.fixture(scope="module")
def summary(tmp_path_factory):
    return run_bench(0, 20_000, tmp_path_factory.mktemp("bench"))


def test_linucb_near_oracle_and_beats_fixed_policies(summary):
    lin = summary["routers"]["linucb"]
    assert lin["regret_pct"] < 5.0
    assert lin["total_loss"] < summary["fixed"]["best_fixed_loss"]
    assert lin["total_loss"] < summary["fixed"]["always_dense_loss"]
    assert lin["shares_last_half"]["DenseHead"] < 0.02
    assert lin["slope"] < 0.8


def test_adaptive_routers_win_under_drift(summary):
    drift = summary["drift"]["routers"]
    assert drift["sw-linucb"]["dynamic_regret"] < drift["linucb"]["dynamic_regret"]
    assert drift["restart-linucb"]["dynamic_regret"] < drift["linucb"]["dynamic_regret"]
    assert summary["drift"]["variation_budget"] > 0


def test_experts_within_small_factor_of_bound(summary):
    assert 0 <= summary["experts"]["experts-hedge"]["ratio"] < 2.0
    assert summary["experts"]["experts-exp4"]["ratio"] < 2.0


def test_summary_has_crossovers_and_n_star(summary):
    one = summary["crossover"]["1"]
    assert one["k_flop"] == 128_256 and one["k_roofline"] < one["k_flop"]
    assert summary["amortization"]["n_star"] > 0
    assert summary["versions"]["numpy"]


def test_cli_bench_and_explain(tmp_path, capsys):
    assert main(["bench", "--seed", "1", "--steps", "300", "--out", str(tmp_path), "--quiet"]) == 0
    assert json.loads((tmp_path / "summary.json").read_text())["seed"] == 1
    capsys.readouterr()
    assert main(["explain", "--k", "10", "--vocab", "1000", "--d", "256", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["scenario"]["k"] == 10 and out["chosen"]


@pytest.mark.parametrize(
    "argv, match",
    [
        (["bench", "--steps", "5"], "'steps' parameter must be an integer in [10,"),
        (["bench", "--steps", "many"], "argument --steps: must be an integer"),
        (["explain", "--k", "0"], "'k' parameter must be an integer in [1, 128256]"),
        (["explain", "--hardware", "tpu"], "'hardware' parameter must be one of"),
        (["explain", "--tau", "-0.5"], "'tau' parameter must be a finite number in [0, 1]"),
        (["explain", "--model", "gpt9"], "'model' parameter must be one of"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_cli_errors_are_one_line(argv, match, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_cli_broken_pipe_exits_quietly():
    import subprocess
    import sys

    proc = subprocess.run(
        f"{sys.executable} -m app.cli explain | head -1",
        shell=True,
        capture_output=True,
        text=True,
    )
    assert proc.stdout.startswith("DecodeStep(") and "Broken pipe" not in proc.stderr


def test_cli_bench_real_shows_progress_unless_quiet(tmp_path, capsys):
    argv = ["bench", "--workload", "real", "--seed", "1", "--steps", "200", "--out"]
    assert main([*argv, str(tmp_path / "a")]) == 0
    assert "100%" in capsys.readouterr().err  # a progress line per router
    assert main([*argv, str(tmp_path / "b"), "--quiet"]) == 0
    assert capsys.readouterr().err == ""


# -- one harness over a Workload ------------------------------------------------------------------


def test_both_workloads_follow_the_protocol_and_run_through_one_path():
    """``run_workload`` (the bench), ``LiveRun.on`` (the app) and a plain ``simulate`` over the
    workload's stream give the same arms, on the synthetic and on the real workload."""
    import numpy as np

    from app.model import Scenario
    from app.router.experiment import LiveRun, run_workload
    from app.router.real_trace import shipped_trace
    from app.router.simulate import make_router, simulate
    from app.router.workloads import RealWorkload, SyntheticWorkload, Workload

    for w in (
        SyntheticWorkload(Scenario(horizon=600, seed=3)),
        RealWorkload(shipped_trace(), 3, 600),
    ):
        assert isinstance(w, Workload)
        stream, runs = run_workload(w, ("linucb",))
        assert stream is w.stream() and stream.X.shape == (600, len(w.features))
        live = LiveRun.on(w, "linucb")
        live.advance(600)
        router = make_router(
            "linucb", len(w.plans), len(w.features), seed=w.seed, **w.router_params("linucb")
        )
        plain = simulate(router, stream.X, stream.observed)
        assert np.array_equal(runs["linucb"][0], live.arms) and np.array_equal(live.arms, plain)


def test_the_features_of_each_workload_are_defined_once():
    import math
    from types import SimpleNamespace

    import numpy as np

    from app.compiler.routing import features as compiler_routing_features
    from app.engine.routing import features as engine_features
    from app.model import Scenario
    from app.router import features as F
    from app.router.environment import FEATURES, make_stream
    from app.router.real_trace import REAL_FEATURES, context_features

    s = Scenario(horizon=50)
    st = make_stream(s, 50, np.random.default_rng(0))
    X = F.synthetic_features(s, st.k, st.margin, st.position, st.cache_miss)
    assert FEATURES is F.SYNTHETIC_FEATURES and np.array_equal(X, st.X)
    assert REAL_FEATURES is F.REAL_FEATURES and context_features is F.real_features
    tel = dict(k=5, vocab=100, last_forced_run=2, last_margin=None, position=7, pending=1,
               accept=0.5, match=3, draft_accept=0.25)  # fmt: skip
    assert np.array_equal(engine_features(SimpleNamespace(**tel)), F.real_features(**tel))
    x = compiler_routing_features(1, 30, 0.1, 49_152, 512)
    want = [1.0, 1.0 * (1.0 / 49_152), 1.0, float(np.float32(0.1)), 30 * (1.0 / 512)]
    assert x.dtype == np.float64 and x.tolist() == want
    assert compiler_routing_features(3, 0, math.nan, 10, 8)[3] == 0.0
    assert len(F.COMPILER_FEATURES) == len(x)


def test_real_bench_progress_follows_quiet(tmp_path, capsys):
    assert main(["bench", "--workload", "real", "--steps", "200", "--out", str(tmp_path)]) == 0
    assert "%" in capsys.readouterr().err
    argv = ["bench", "--workload", "real", "--steps", "200", "--quiet", "--out", str(tmp_path)]
    assert main(argv) == 0
    assert capsys.readouterr().err == ""
