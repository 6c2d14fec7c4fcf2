"""``llmqp amortizer fit``, ``llmqp traces collect`` and the new ``decode`` flags from the command
line: tiny workloads (a few tokens) and one-line errors."""

import json

import pytest

from app.cli import main


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, workload):
    """Four short requests, two of each split (by id hash), as a JSONL file."""
    from app.engine.amortized import split_of

    picked, seen = [], {"train": 0, "test": 0}
    for r in workload:
        side = split_of(r.id)
        if seen[side] < 2 and r.grammar and r.grammar[0] in ("regex", "choices"):
            seen[side] += 1
            picked.append({"id": r.id, "prompt": r.prompt, r.grammar[0]: r.grammar[1]})
    path = tmp_path_factory.mktemp("tiny") / "requests.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in picked))
    return path


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--plan", "dense", "--tau", "2"], "The 'tau' parameter applies to plan"),
        (["--plan", "rerank", "--tau", "2"], "The 'tau' parameter applies to plan"),  # was ignored
        (["--plan", "sparse", "--lossy"], "The 'lossy' parameter applies to plan"),
        (["--plan", "oracle"], "--plan oracle needs --trace"),
        (["--plan", "sparse", "--router", "lints"], "The 'router' parameter applies to plan"),
        (["--plan", "dense", "--recalibrate", "cpu"], "The 'recalibrate' parameter applies"),
        (["--plan", "amortized", "--amortizer", "no/such.npz"], "no/such.npz"),
    ],
)
def test_bad_plan_flags_are_one_line(capsys, engine, argv, needle):
    code, out, err = _run(capsys, "decode", "--prompt", "hi", "--max-tokens", "2", *argv)
    assert code == 2 and out == "" and needle in err and err.count("\n") == 1


def test_fit_collect_and_decode_with_them(capsys, engine, tiny, tmp_path):
    fit = tmp_path / "fit.npz"
    code, out, _ = _run(
        capsys, "amortizer", "fit", "--requests", str(tiny), "--out", str(fit), "--max-tokens", "3"
    )
    if code == 2:  # the workload's hash split gave fewer than two training requests
        pytest.skip(out)
    assert code == 0 and fit.is_file() and "lambda=" in out
    trace, store = tmp_path / "trace.json", tmp_path / "store.db"
    argv = ["traces", "collect", "--requests", str(tiny), "--amortizer", str(fit)]
    code, out, _ = _run(
        capsys, *argv, "--out", str(trace), "--store", str(store), "--max-tokens", "3"
    )
    assert code == 0
    data = json.loads(trace.read_text())
    assert data["steps"] and all("costs" in s for s in data["steps"])
    common = ["decode", "--requests", str(tiny), "--max-tokens", "3", "--json", "--quiet"]
    code, dense, _ = _run(capsys, *common, "--plan", "dense")
    state = tmp_path / "router.json"
    for plan in (
        ["--plan", "oracle", "--trace", str(trace)],
        ["--plan", "router", "--router-state", str(state), "--amortizer", str(fit)],
        ["--plan", "amortized", "--tau", "0", "--amortizer", str(fit), "--store", str(store)],
    ):
        code, out, _ = _run(capsys, *common, *plan)
        assert code == 0
        assert [json.loads(x)["tokens"] for x in out.splitlines()] == [
            json.loads(x)["tokens"] for x in dense.splitlines()
        ], plan
    assert json.loads(state.read_text())["router"] == "linucb"


def test_amortized_works_without_a_fit_made_by_hand(capsys, engine, tiny, tmp_path, monkeypatch):
    """A fresh install: ``--plan amortized`` fits the default amortizer once (with progress),
    then reuses it; ``--plan router --router lints`` needs no fit at all."""
    import app.engine.fit as fit
    import app.engine.session as session

    path = tmp_path / "cache" / "amortizer.npz"
    monkeypatch.setattr(fit, "default_amortizer_path", lambda: path)
    monkeypatch.setattr(session, "default_amortizer_path", lambda: path)
    monkeypatch.setattr(fit, "DEFAULT_WORKLOAD", tiny)  # the project's workload, cut short
    monkeypatch.setattr(fit, "DEFAULT_FIT_TOKENS", 3)
    common = ["decode", "--requests", str(tiny), "--max-tokens", "3", "--json"]
    code, out, err = _run(capsys, *common, "--plan", "router", "--router", "lints")
    assert code == 0 and not path.exists()
    routed = [json.loads(x)["tokens"] for x in out.splitlines()]
    code, out, err = _run(capsys, *common, "--plan", "amortized")
    if code == 2 and "training split" in err:
        pytest.skip(err)
    assert code == 0 and path.is_file(), err
    assert "fitting the default one once" in err and "amortizer fit [" in err
    assert [json.loads(x)["tokens"] for x in out.splitlines()] == routed
    code, out, err = _run(capsys, *common, "--plan", "amortized")
    assert code == 0 and "fitting" not in err
