"""Accuracy of decoded calls against BFCL's accepted answers (its AST rule, for one call).

BFCL lists, per request, the accepted call: the function's name and, per parameter, the list of
accepted values; ``""`` in that list means the parameter may be left out. A decoded call is
correct when (our reading of the rule BFCL documents, implemented here from that description):

* it is JSON of the request's shape (the arguments object for one function, else
  ``{"name", "arguments"}``) and names the accepted function;
* every parameter it gives is one the answer knows, and its value is accepted;
* every parameter it leaves out is optional (``""`` among the accepted values).

A value is accepted when it equals one accepted value under these comparisons: strings ignore
case, white space and the punctuation ``, . / - _ * ^``; an integer stands for an equal float
(not the other way round); booleans only equal booleans; lists compare item by item in order;
an accepted object gives, per key, a list of accepted values again (keys it marks optional may be
missing).
"""

from __future__ import annotations

import json
import re

__all__ = ["score_call", "value_accepted", "standardize"]

_STRIP = re.compile(r"[\s,./\-_*^]")


def standardize(text: str) -> str:
    """Lower case without white space and ``, . / - _ * ^`` (how strings are compared)."""
    return _STRIP.sub("", text).lower()


def _scalar_equal(got, want) -> bool:
    if isinstance(want, bool) or isinstance(got, bool):
        return isinstance(want, bool) and isinstance(got, bool) and got == want
    if isinstance(want, str):
        return isinstance(got, str) and standardize(got) == standardize(want)
    if isinstance(want, float):
        return isinstance(got, int | float) and float(got) == want
    if isinstance(want, int):
        return isinstance(got, int) and got == want
    return got == want  # None


def _object_accepted(got, want: dict) -> bool:
    """``want`` maps each key to its list of accepted values (``""`` among them: optional)."""
    if not isinstance(got, dict) or set(got) - set(want):
        return False
    for key, options in want.items():
        options = options if isinstance(options, list) else [options]
        if key not in got:
            if "" not in options:
                return False
        elif not any(value_accepted(got[key], o) for o in options):
            return False
    return True


def value_accepted(got, want) -> bool:
    """Whether the decoded value ``got`` matches the one accepted value ``want``."""
    if isinstance(want, dict):
        return _object_accepted(got, want)
    if isinstance(want, list):
        return (
            isinstance(got, list)
            and len(got) == len(want)
            and all(value_accepted(g, w) for g, w in zip(got, want))
        )
    return _scalar_equal(got, want)


def _parse(text: str, functions: list) -> tuple[str, object] | str:
    """(name, arguments) from the decoded text, or the reason it is malformed."""
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return "malformed"
    if len(functions) == 1:
        return (functions[0]["name"], obj) if isinstance(obj, dict) else "malformed"
    if not isinstance(obj, dict) or set(obj) != {"name", "arguments"}:
        return "malformed"
    if not isinstance(obj["name"], str) or not isinstance(obj["arguments"], dict):
        return "malformed"
    return obj["name"], obj["arguments"]


def score_call(text: str, functions: list, answer: list) -> dict:
    """``{"correct": bool, "reason": str}`` for one decoded call.

    ``functions`` is the entry's function list (name, parameters); ``answer`` BFCL's
    ``ground_truth``: a list with one ``{name: {param: [accepted values]}}``. Reasons: ok,
    malformed, wrong_function, unknown_parameter, missing_parameter, wrong_value.
    """
    if not isinstance(answer, list) or len(answer) != 1 or not isinstance(answer[0], dict):
        raise ValueError(f"answer: expected one accepted call, got {answer!r:.80}")
    parsed = _parse(text, functions)
    if isinstance(parsed, str):
        return {"correct": False, "reason": parsed}
    name, args = parsed
    ((want_name, want_args),) = answer[0].items()
    if name != want_name:
        return {"correct": False, "reason": "wrong_function"}
    if set(args) - set(want_args):
        return {"correct": False, "reason": "unknown_parameter"}
    for key, options in want_args.items():
        if key not in args:
            if "" not in options:
                return {"correct": False, "reason": "missing_parameter"}
        elif not any(value_accepted(args[key], o) for o in options):
            return {"correct": False, "reason": "wrong_value"}
    return {"correct": True, "reason": "ok"}
