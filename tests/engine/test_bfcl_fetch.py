"""The BFCL data fetch (sha256 pinned) and the ``llmqp bfcl`` commands, offline.

A small wheel in BFCL's layout is written by the test; the pinned checksum is pointed at it, so
the real unpack path runs, and a tampered copy is refused with nothing unpacked.
"""

import hashlib
import json
import zipfile

import pytest

from app.cli import main
from app.engine import fetch
from app.engine.bfcl import BFCL_CATEGORIES

ENTRY = {
    "question": [[{"role": "user", "content": "Area of a circle of radius 2?"}]],
    "function": [
        {
            "name": "circle_area",
            "description": "Area of a circle.",
            "parameters": {
                "type": "dict",
                "properties": {"radius": {"type": "float"}, "center": {"type": "tuple"}},
                "required": ["radius"],
            },
        }
    ],
}


def _write_wheel(path):
    with zipfile.ZipFile(path, "w") as zf:
        for cat in BFCL_CATEGORIES:
            lines, answers = [], []
            for n in range(3):
                rid = f"{cat}_{n}"
                lines.append(json.dumps({"id": rid, **ENTRY}))
                gt = [{"circle_area": {"radius": [2.0], "center": [""]}}]
                answers.append(json.dumps({"id": rid, "ground_truth": gt}))
            zf.writestr(f"bfcl_eval/data/BFCL_v4_{cat}.json", "\n".join(lines) + "\n")
            zf.writestr(f"bfcl_eval/data/possible_answer/BFCL_v4_{cat}.json", "\n".join(answers))
        zf.writestr("bfcl_eval/__init__.py", "")
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def wheel(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMQP_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "bfcl_eval-0-py3-none-any.whl"
    monkeypatch.setitem(fetch.BFCL_DATA, "wheel_sha256", _write_wheel(path))
    return path


def test_fetch_unpacks_only_the_four_categories_and_is_idempotent(wheel):
    folder = fetch.fetch_bfcl(wheel=wheel)
    assert folder == fetch.bfcl_dir()
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.json"))
    assert len(files) == 8 and "possible_answer/BFCL_v4_live_multiple.json" in files
    wheel.unlink()  # the second fetch does not look at the wheel again
    assert fetch.fetch_bfcl(wheel=wheel) == folder


def test_a_tampered_wheel_is_refused_and_nothing_is_unpacked(wheel):
    data = bytearray(wheel.read_bytes())
    data[len(data) // 2] ^= 0xFF
    wheel.write_bytes(bytes(data))
    with pytest.raises(fetch.ModelMissingError, match="sha256 differs"):
        fetch.fetch_bfcl(wheel=wheel)
    assert not fetch.bfcl_dir().exists()


def test_requests_and_score_commands(wheel, tmp_path, capsys):
    assert main(["bfcl", "fetch", "--wheel", str(wheel)]) == 0
    out, notes = tmp_path / "r.jsonl", tmp_path / "notes.json"
    args = ["bfcl", "requests", "--out", str(out), "--limit", "2", "--notes", str(notes)]
    assert main([*args, "--categories", "simple_python,live_multiple"]) == 0
    lines = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert [r["id"] for r in lines] == [
        "simple_python_0",
        "simple_python_1",
        "live_multiple_0",
        "live_multiple_1",
    ]
    assert lines[0]["schema"]["properties"]["center"] == {"type": "array"}
    assert json.loads(notes.read_text())["notes"]["simple_python_0"] == [
        "circle_area.center: tuple -> array"
    ]
    decoded = tmp_path / "decoded.jsonl"
    texts = ['{"radius": 2}', '{"radius": 3}', '{"radius": 2.0, "center": [0, 0]}', "{"]
    decoded.write_text(
        "\n".join(json.dumps({"id": r["id"], "text": t}) for r, t in zip(lines, texts))
    )
    capsys.readouterr()
    assert main(["bfcl", "score", "--results", str(decoded), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["requests"] == 4 and report["accuracy"] == 0.25
    assert report["reasons"] == {"ok": 1, "wrong_value": 2, "malformed": 1}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--categories", "java"], "--categories"),
        (["--limit", "0"], "--limit must be >= 1"),
        (["--max-tokens", "0"], "--max-tokens must be in"),
    ],
)
def test_bad_arguments_are_one_line(wheel, tmp_path, capsys, argv, message):
    main(["bfcl", "fetch", "--wheel", str(wheel)])
    capsys.readouterr()
    assert main(["bfcl", "requests", "--out", str(tmp_path / "x.jsonl"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_commands_without_the_data_say_how_to_get_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LLMQP_CACHE", str(tmp_path / "empty"))
    assert main(["bfcl", "requests", "--out", str(tmp_path / "x.jsonl")]) == 2
    assert "llmqp bfcl fetch" in capsys.readouterr().err
