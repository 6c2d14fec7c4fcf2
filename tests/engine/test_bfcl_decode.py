"""Real decodes of converted BFCL-shaped requests: the output is JSON valid under its schema.

The entries are written here in BFCL's shape (tests run offline); the fetched data, where it is
in the cache, adds two real ones.
"""

import json

import jsonschema
import pytest

from app.engine.bfcl import BfclEntry, load_entries, to_request
from app.engine.bfcl_score import score_call
from app.engine.fetch import bfcl_dir
from app.engine.requests import DecodeRequest


def _fn(name, props, required):
    return {
        "name": name,
        "description": name.replace("_", " "),
        "parameters": {"type": "dict", "properties": props, "required": required},
    }


TRIANGLE = _fn(
    "calculate_triangle_area",
    {"base": {"type": "integer"}, "height": {"type": "integer"}, "unit": {"type": "string"}},
    ["base", "height"],
)
DISTANCE = _fn(
    "geo_distance",
    {"start": {"type": "tuple", "items": {"type": "float"}}, "miles": {"type": "boolean"}},
    ["start"],
)
ENTRIES = [
    BfclEntry(
        "simple_python_t",
        "simple_python",
        [{"role": "user", "content": "Area of a triangle with base 10 and height 5?"}],
        [TRIANGLE],
        [{"calculate_triangle_area": {"base": [10], "height": [5], "unit": ["", "units"]}}],
    ),
    BfclEntry(
        "multiple_t",
        "multiple",
        [{"role": "user", "content": "How far is it from (48.85, 2.35), in miles?"}],
        [TRIANGLE, DISTANCE],
        [{"geo_distance": {"start": [[48.85, 2.35]], "miles": [True]}}],
    ),
]


def _real_entries():
    if not (bfcl_dir() / "wheel.sha256").is_file():
        return []
    entries = load_entries(bfcl_dir(), ("live_simple",))
    return [e for e in entries if e.id in ("live_simple_0-0-0",)]


@pytest.mark.parametrize("entry", ENTRIES + _real_entries(), ids=lambda e: e.id)
def test_decoded_call_is_valid_json_under_its_schema(engine, entry):
    line = to_request(entry, max_tokens=48)
    result = engine.decode(DecodeRequest.from_dict(line), plan="dense")
    assert result.stop in ("grammar", "eos"), result.text
    call = json.loads(result.text)
    jsonschema.validate(call, line["schema"])
    if len(entry.functions) > 1:
        assert call["name"] in {f["name"] for f in entry.functions}
    verdict = score_call(result.text, entry.functions, entry.answer)
    assert verdict["reason"] in ("ok", "wrong_function", "wrong_value", "missing_parameter")
