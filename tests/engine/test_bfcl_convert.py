"""BFCL's JSON-Schema dialect to JSON Schema, on small entries in BFCL's shape (offline).

Every converted schema must compile in llguidance, accept the values BFCL means and reject the
ones it rules out; every dropped or changed feature leaves a note.
"""

import jsonschema
import pytest

from app.engine.bfcl import BfclEntry, build_prompt, call_schema, convert_parameters, to_request
from app.engine.grammar import compile_grammar
from app.engine.requests import DecodeRequest

TRIANGLE = {
    "name": "calc.triangle_area",
    "description": "Area of a triangle.",
    "parameters": {
        "type": "dict",
        "properties": {
            "base": {"type": "integer", "description": "The base."},
            "height": {"type": "float", "description": "The height."},
            "unit": {"type": "string", "enum": ["cm", "m"], "default": "m"},
        },
        "required": ["base", "height"],
    },
}
CIRCLE = {
    "name": "circle_area",
    "description": "Area of a circle.",
    "parameters": {
        "type": "dict",
        "properties": {"radius": {"type": "float"}, "exact": {"type": "boolean"}},
        "required": ["radius"],
    },
}


def _conv(node):
    notes = []
    schema = convert_parameters(node, "$", notes)
    compile_grammar("schema", schema)  # raises if llguidance rejects it
    return schema, notes


def _valid(schema, value) -> bool:
    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError:
        return False
    return True


def test_dict_becomes_a_closed_object_with_its_required_keys():
    schema, notes = _conv(TRIANGLE["parameters"])
    assert schema["type"] == "object" and schema["required"] == ["base", "height"]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["height"] == {"type": "number"}  # float -> number
    assert schema["properties"]["unit"] == {"type": "string", "enum": ["cm", "m"]}  # no default
    assert notes == []
    assert _valid(schema, {"base": 3, "height": 2.5, "unit": "cm"})
    assert _valid(schema, {"base": 3, "height": 2})  # an integer is a number
    assert not _valid(schema, {"base": 3})  # height required
    assert not _valid(schema, {"base": 3.5, "height": 2})  # integer stays integer
    assert not _valid(schema, {"base": 3, "height": 2, "colour": "red"})  # closed
    assert not _valid(schema, {"base": 3, "height": 2, "unit": "km"})  # enum


def test_tuple_any_and_open_dict_are_converted_with_notes():
    node = {
        "type": "dict",
        "properties": {
            "coords": {"type": "tuple", "items": {"type": "float"}},
            "data": {"type": "any"},
            "hands": {"type": "dict", "description": "player -> cards"},
        },
        "required": ["coords", "data", "hands"],
    }
    schema, notes = _conv(node)
    assert schema["properties"]["coords"] == {"type": "array", "items": {"type": "number"}}
    assert schema["properties"]["data"] == {}
    assert schema["properties"]["hands"] == {"type": "object"}
    assert sorted(notes) == [
        "$.coords: tuple -> array",
        "$.data: any -> no constraint",
        "$.hands: dict without properties -> any object",
    ]
    assert _valid(schema, {"coords": [1.5, 2], "data": [None, "x"], "hands": {"a": [1]}})
    assert not _valid(schema, {"coords": ["north"], "data": 1, "hands": {}})


def test_optional_flag_unknown_required_and_bad_enum_values():
    node = {
        "type": "dict",
        "properties": {
            "a": {"type": "integer", "optional": True},
            "b": {"type": "boolean", "enum": ["True", "False", "dontcare"]},
            "c": {"type": "integer", "enum": [1, 2, "3"]},
        },
        "required": ["a", "b", "ghost"],
    }
    schema, notes = _conv(node)
    assert schema["required"] == ["b"]
    assert schema["properties"]["b"] == {"type": "boolean"}  # no enum value was a boolean
    assert schema["properties"]["c"] == {"type": "integer", "enum": [1, 2]}
    assert "$.a: 'optional: true' -> not required" in notes
    assert "$: required 'ghost' has no property; dropped" in notes
    assert "$.b: enum values not of type boolean dropped" in notes
    assert "$.c: enum values not of type integer dropped" in notes


def test_enum_on_an_array_constrains_its_items():
    node = {"type": "array", "items": {"type": "string"}, "enum": ["x", "y"]}
    schema, notes = _conv(node)
    assert schema == {"type": "array", "items": {"type": "string", "enum": ["x", "y"]}}
    assert notes == ["$: enum on the array applied to its items"]
    assert _valid(schema, ["x", "y", "x"]) and not _valid(schema, ["z"])


def test_unknown_type_is_unconstrained_with_a_note():
    notes = []
    assert convert_parameters({"type": "datetime"}, "$.when", notes) == {}
    assert notes == ["$.when: type 'datetime' unknown -> no constraint"]


def test_several_functions_become_name_and_arguments_branches():
    schema = call_schema([TRIANGLE, CIRCLE])
    compile_grammar("schema", schema)
    assert _valid(schema, {"name": "circle_area", "arguments": {"radius": 2}})
    assert _valid(schema, {"name": "calc.triangle_area", "arguments": {"base": 1, "height": 2}})
    # each name carries its own arguments: the circle's arguments under the triangle's name fail
    assert not _valid(schema, {"name": "calc.triangle_area", "arguments": {"radius": 2}})
    assert not _valid(schema, {"name": "square_area", "arguments": {}})
    assert not _valid(schema, {"arguments": {"radius": 2}})


def test_a_request_line_is_a_valid_decode_request():
    entry = BfclEntry(
        "simple_python_9",
        "simple_python",
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Base 3?"}],
        [TRIANGLE],
    )
    line = to_request(entry, max_tokens=40)
    req = DecodeRequest.from_dict(line)
    assert req.chat and req.max_tokens == 40 and req.grammar[0] == "schema"
    prompt = build_prompt(entry)
    assert "calc.triangle_area" in prompt and "Be brief." in prompt and "Base 3?" in prompt
    assert prompt.index("Be brief.") < prompt.index("Base 3?")


def test_no_function_is_an_error():
    with pytest.raises(ValueError, match="at least one function"):
        call_schema([])
