"""The BFCL accuracy rule on hand-made answers: what it accepts and what it rejects."""

import json

import pytest

from app.engine.bfcl_score import score_call, standardize, value_accepted

TRIANGLE = {"name": "triangle_area", "parameters": {}}
CIRCLE = {"name": "circle_area", "parameters": {}}
ANSWER = [
    {
        "triangle_area": {
            "base": [10],
            "height": [5.0],
            "unit": ["units", ""],
            "city": ["New York, NY", "NYC"],
            "flags": [[1, 2], ""],
            "exact": [True, ""],
        }
    }
]


def _score(args, functions=(TRIANGLE,)):
    return score_call(json.dumps(args), list(functions), ANSWER)


@pytest.mark.parametrize(
    "args",
    [
        {"base": 10, "height": 5.0, "city": "NYC"},  # optional ones left out
        {"base": 10, "height": 5, "city": "new york ny", "unit": "Units"},  # int for float; case
        {"base": 10, "height": 5.0, "city": "New-York, NY.", "flags": [1, 2], "exact": True},
    ],
)
def test_accepted_calls(args):
    assert _score(args) == {"correct": True, "reason": "ok"}


@pytest.mark.parametrize(
    "args, reason",
    [
        ({"base": 10, "city": "NYC"}, "missing_parameter"),  # height is not optional
        ({"base": 10, "height": 5, "city": "NYC", "colour": "red"}, "unknown_parameter"),
        ({"base": 10.0, "height": 5, "city": "NYC"}, "wrong_value"),  # float for int
        ({"base": 11, "height": 5, "city": "NYC"}, "wrong_value"),
        ({"base": 10, "height": 5, "city": "Boston"}, "wrong_value"),
        ({"base": 10, "height": 5, "city": "NYC", "flags": [2, 1]}, "wrong_value"),  # order
        ({"base": 10, "height": 5, "city": "NYC", "exact": 1}, "wrong_value"),  # not a bool
        ({"base": True, "height": 5, "city": "NYC"}, "wrong_value"),  # a bool is not 10
    ],
)
def test_rejected_calls(args, reason):
    assert _score(args) == {"correct": False, "reason": reason}


def test_malformed_text_and_shapes():
    assert score_call('{"base": 10', [TRIANGLE], ANSWER)["reason"] == "malformed"
    assert score_call("[10, 5]", [TRIANGLE], ANSWER)["reason"] == "malformed"
    two = [TRIANGLE, CIRCLE]
    assert score_call('{"base": 10}', two, ANSWER)["reason"] == "malformed"  # no name/arguments


def test_several_functions_need_the_accepted_name():
    two = [TRIANGLE, CIRCLE]
    good = {"name": "triangle_area", "arguments": {"base": 10, "height": 5, "city": "NYC"}}
    assert _score(good, two)["correct"]
    wrong = {"name": "circle_area", "arguments": {"base": 10, "height": 5, "city": "NYC"}}
    assert _score(wrong, two) == {"correct": False, "reason": "wrong_function"}


def test_nested_objects_take_lists_of_accepted_values():
    want = {"department": ["Science"], "school": ["Bluebird High School", "Bluebird HS"]}
    assert value_accepted({"department": "science", "school": "Bluebird HS"}, want)
    assert not value_accepted({"department": "Science"}, want)  # school is not optional
    assert not value_accepted({"department": "Science", "school": "X", "y": 1}, want)
    assert value_accepted({"department": "Science"}, {**want, "school": ["", "X"]})


def test_standardize_ignores_case_space_and_some_punctuation():
    assert standardize("New York, NY.") == standardize("newyork ny") == "newyorkny"
    assert standardize("a-b_c*d^e/f") == "abcdef"
    assert standardize("a:b") == "a:b"  # other punctuation counts


def test_an_answer_must_be_one_call():
    with pytest.raises(ValueError, match="one accepted call"):
        score_call("{}", [TRIANGLE], [{"a": {}}, {"b": {}}])
