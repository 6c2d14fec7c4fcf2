"""``llmqp decode --requests FILE --batch N``: the same outputs as ``--batch 1``, in the file's
order, a progress bar on stderr; ``--batch`` validated at the boundary."""

import json

import pytest

from app.cli import main


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def request_file(tmp_path):
    path = tmp_path / "reqs.jsonl"
    lines = [
        {"id": "a", "prompt": "Is water wet?", "choices": ["yes", "no"], "chat": True},
        {"id": "b", "prompt": "Pick a digit:", "regex": r"\d\d\d", "max_tokens": 4},
        {"id": "c", "prompt": "Name a colour.", "max_tokens": 5, "chat": True},
        {
            "id": "d",
            "prompt": "A person as JSON:",
            "max_tokens": 8,
            "schema": {
                "type": "object",
                "properties": {"name": {"type": "string"}},
                "required": ["name"],
            },
        },  # fmt: skip
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return path


def test_batch_gives_the_batch_1_outputs_in_order(capsys, engine, request_file):
    code, out1, _ = _run(capsys, "decode", "--requests", str(request_file), "--json")
    assert code == 0
    code, out4, err = _run(capsys, "decode", "--requests", str(request_file), "--json",
                           "--batch", "4")  # fmt: skip
    assert code == 0
    one = [json.loads(line) for line in out1.splitlines()]
    four = [json.loads(line) for line in out4.splitlines()]
    assert [r["id"] for r in four] == ["a", "b", "c", "d"]
    assert [r["tokens"] for r in four] == [r["tokens"] for r in one]
    assert [r["text"] for r in four] == [r["text"] for r in one]
    assert "4/4 requests" in err and "tokens/s" in err  # the progress bar, on stderr


@pytest.mark.parametrize("value", ["0", "257", "-3"])
def test_batch_out_of_range_is_one_line(capsys, value, request_file):
    code, out, err = _run(capsys, "decode", "--requests", str(request_file), "--batch", value)
    assert code == 2 and out == ""
    assert "'batch'" in err and "256" in err and err.count("\n") == 1


def test_batch_with_the_xla_executor_is_refused(capsys, engine, request_file):
    code, out, err = _run(capsys, "decode", "--requests", str(request_file), "--batch", "2",
                          "--executor", "xla")  # fmt: skip
    assert code == 2 and out == ""
    assert "--batch 1" in err or "[compiler]" in err
