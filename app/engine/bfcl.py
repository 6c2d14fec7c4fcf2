"""BFCL function-calling entries as decode requests: the prompt, and a JSON Schema for the call.

An entry of the Berkeley Function Calling Leaderboard (one line of ``BFCL_v4_<category>.json``)
has ``id``, ``question`` (chat turns) and ``function`` (name, description and ``parameters`` in a
JSON-Schema dialect). The request's grammar is the JSON Schema of the call:

* one function: the schema of its arguments object (the function's name is implied);
* several: ``{"name": <function name>, "arguments": {...}}``, an ``anyOf`` with one branch per
  function, so each name carries its own arguments' schema.

The dialect's types map to JSON Schema: ``dict`` -> object, ``float`` -> number, ``tuple`` ->
array, ``any`` -> no constraint; ``description``/``default`` stay in the prompt only (they do not
change what may be written). Everything that is dropped or changed is recorded per request as a
note ``"<path>: <what>"``, so the docs can say how faithful the grammars are.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "BFCL_CATEGORIES",
    "BfclEntry",
    "load_entries",
    "convert_parameters",
    "call_schema",
    "build_prompt",
    "to_request",
    "DEFAULT_BFCL_MAX_TOKENS",
]

BFCL_CATEGORIES = ("simple_python", "multiple", "live_simple", "live_multiple")
DEFAULT_BFCL_MAX_TOKENS = 256
_SCALARS = {"string": "string", "integer": "integer", "boolean": "boolean", "float": "number"}
_SCALARS.update({"number": "number", "null": "null"})
_KEPT = ("minimum", "maximum", "format", "pattern", "minItems", "maxItems")
_PY_TYPES = {"string": str, "integer": int, "number": (int, float), "boolean": bool}


@dataclass
class BfclEntry:
    """One BFCL question: ``functions`` as given, ``answer`` the accepted calls (or None)."""

    id: str
    category: str
    messages: list
    functions: list
    answer: list | None = None
    notes: list = field(default_factory=list)


def _read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_entries(folder, categories=BFCL_CATEGORIES) -> list[BfclEntry]:
    """The entries of ``categories`` (in that order) from a fetched BFCL folder, with answers.

    Raises ValueError for an unknown category or a missing file (with how to fetch it).
    """
    folder = Path(folder)
    out = []
    for cat in categories:
        if cat not in BFCL_CATEGORIES:
            raise ValueError(f"--categories: {cat!r} is not one of {', '.join(BFCL_CATEGORIES)}")
        path = folder / f"BFCL_v4_{cat}.json"
        if not path.is_file():
            raise ValueError(f"{path}: no such file; run `llmqp bfcl fetch`")
        answers_path = folder / "possible_answer" / path.name
        answers = {a["id"]: a["ground_truth"] for a in _read_jsonl(answers_path)}
        for obj in _read_jsonl(path):
            turns = obj["question"][0]  # these categories are single-turn
            out.append(BfclEntry(obj["id"], cat, turns, obj["function"], answers.get(obj["id"])))
    return out


def _enum(node: dict, kind: str | None, path: str, notes: list) -> list | None:
    """The node's enum values that fit ``kind`` (the rest dropped, with a note)."""
    values = node["enum"]
    want = _PY_TYPES.get(kind)
    if want is None:
        return list(values)
    ok = [v for v in values if isinstance(v, want) and not (kind != "boolean" and v is True)]
    ok = [v for v in ok if not (kind in ("integer", "number") and isinstance(v, bool))]
    if len(ok) < len(values):
        notes.append(f"{path}: enum values not of type {kind} dropped")
    return ok or None


def _object(node: dict, path: str, notes: list) -> dict:
    props = node.get("properties")
    if not isinstance(props, dict):
        notes.append(f"{path}: dict without properties -> any object")
        return {"type": "object"}
    out = {"type": "object", "properties": {}}
    required = []
    for name, sub in props.items():
        out["properties"][name] = convert_parameters(sub, f"{path}.{name}", notes)
        if isinstance(sub, dict) and sub.get("optional") is True:
            notes.append(f"{path}.{name}: 'optional: true' -> not required")
    for name in node.get("required", []):
        if name not in props:
            notes.append(f"{path}: required {name!r} has no property; dropped")
        elif props[name].get("optional") is True if isinstance(props[name], dict) else False:
            continue
        else:
            required.append(name)
    if "optional" in node:
        notes.append(f"{path}: 'optional' list ignored")
    if required:
        out["required"] = required
    out["additionalProperties"] = False
    return out


def _array(node: dict, kind: str, path: str, notes: list) -> dict:
    out: dict = {"type": "array"}
    if kind == "tuple":
        notes.append(f"{path}: tuple -> array")
    items = node.get("items")
    if isinstance(items, dict):
        items = dict(items)
        if "enum" in node and "enum" not in items:
            items["enum"] = node["enum"]
            notes.append(f"{path}: enum on the array applied to its items")
        out["items"] = convert_parameters(items, f"{path}[]", notes)
    elif "enum" in node:
        notes.append(f"{path}: enum on an array without items dropped")
    for key in _KEPT:
        if key in node:
            out[key] = node[key]
    return out


def convert_parameters(node, path: str = "$", notes: list | None = None) -> dict:
    """JSON Schema for one BFCL dialect node; ``notes`` (a list) receives what changed.

    ``node`` is a dict with ``type`` in dict, object, string, integer, float, number, boolean,
    array, tuple, any; unknown or missing types become "no constraint" (with a note).
    """
    notes = [] if notes is None else notes
    if not isinstance(node, dict):
        notes.append(f"{path}: not an object ({type(node).__name__}) -> no constraint")
        return {}
    kind = node.get("type")
    if kind in ("dict", "object"):
        return _object(node, path, notes)
    if kind in ("array", "tuple"):
        return _array(node, kind, path, notes)
    if kind == "any":
        notes.append(f"{path}: any -> no constraint")
        return {}
    if kind not in _SCALARS:
        notes.append(f"{path}: type {kind!r} unknown -> no constraint")
        return {}
    out = {"type": _SCALARS[kind]}
    if "enum" in node:
        values = _enum(node, _SCALARS[kind], path, notes)
        if values is not None:
            out["enum"] = values
    for key in _KEPT:
        if key in node:
            out[key] = node[key]
    return out


def call_schema(functions: list, notes: list | None = None) -> dict:
    """The schema of the decoded call: the arguments object for one function, else
    ``{"name", "arguments"}`` with one ``anyOf`` branch per function."""
    notes = [] if notes is None else notes
    if not functions:
        raise ValueError("a BFCL entry needs at least one function")
    args = [convert_parameters(f["parameters"], f["name"], notes) for f in functions]
    if len(functions) == 1:
        return args[0]
    branches = [
        {
            "type": "object",
            "properties": {"name": {"const": f["name"]}, "arguments": a},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for f, a in zip(functions, args)
    ]
    return {"anyOf": branches}


def build_prompt(entry: BfclEntry) -> str:
    """The question with the functions' documentation, as one user turn (the model's chat
    template is applied by the engine, ``chat: true``)."""
    docs = json.dumps(entry.functions, ensure_ascii=False, separators=(",", ":"))
    parts = [f"You can call these functions (JSON):\n{docs}"]
    parts += [m["content"] for m in entry.messages if m.get("role") == "system"]
    parts += [m["content"] for m in entry.messages if m.get("role") != "system"]
    if len(entry.functions) == 1:
        parts.append(f"Call {entry.functions[0]['name']}: reply with its arguments as JSON.")
    else:
        parts.append('Pick one function: reply as JSON {"name": ..., "arguments": {...}}.')
    return "\n\n".join(parts)


def to_request(entry: BfclEntry, max_tokens: int = DEFAULT_BFCL_MAX_TOKENS) -> dict:
    """One line of the engine's request JSONL (see app/engine/requests.py); the conversion's
    notes are left in ``entry.notes``."""
    entry.notes = []
    schema = call_schema(entry.functions, entry.notes)
    return {
        "id": entry.id,
        "prompt": build_prompt(entry),
        "chat": True,
        "max_tokens": max_tokens,
        "schema": schema,
    }
