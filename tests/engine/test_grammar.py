"""Grammars: legal sets and forced runs from llguidance; one-line errors for bad grammars."""

import pytest

from app.engine.grammar import Constraint, GrammarError, compile_grammar


def _constraint(engine, kind, value):
    text = compile_grammar(kind, value, engine.ll_tokenizer)
    return Constraint(engine.ll_tokenizer, text, engine.config.vocab)


@pytest.mark.parametrize(
    "kind, value, message",
    [
        ("schema", "{not json", r"schema: not valid JSON"),
        ("schema", {"type": "frobnicate"}, r"schema: .*frobnicate"),
        ("schema", [1, 2], r"schema: must be a JSON object"),
        ("regex", "[a-", r"regex: .*unclosed character class"),
        ("regex", "", r"regex: must be a non-empty string"),
        ("choices", [], r"choices: must be a non-empty list"),
        ("choices", ["a", ""], r"choices: must be a non-empty list"),
        ("lark", "start: (", r"lark: "),
        ("yaml", "x", r"grammar kind must be one of schema, json_object, regex, choices, lark"),
    ],
)
def test_bad_grammars_are_one_line_errors(engine, kind, value, message):
    with pytest.raises(GrammarError, match=message) as info:
        compile_grammar(kind, value, engine.ll_tokenizer)
    assert "\n" not in str(info.value)


def test_choices_legal_set_and_forced_run(engine):
    tok = engine.tokenizer
    c = _constraint(engine, "choices", ["Paris", "Pari passu"])
    first = {tok.decode([int(i)]) for i in c.legal()}
    assert "Paris" in first and "Lond" not in first
    assert all("Paris".startswith(t) or "Pari passu".startswith(t) for t in first)
    c = _constraint(engine, "choices", ["Zanzibar"])
    run = c.forced_run()
    assert tok.decode(run) == "Zanzibar"  # one choice: everything is forced


def test_consume_rollback_and_stop(engine):
    tok = engine.tokenizer
    c = _constraint(engine, "regex", r"ab|ac")
    before = set(c.legal().tolist())
    a = tok.encode("a")[0]
    c.consume(a)
    after_a = set(c.legal().tolist())
    assert after_a != before and tok.encode("b")[0] in after_a
    c.rollback(1)
    assert set(c.legal().tolist()) == before
    with pytest.raises(GrammarError, match="rejected"):
        c.consume(tok.encode("z")[0])


def test_compact_json_forces_the_structure(engine):
    """JSON is written with fixed separators, so a schema's keys come out as forced runs."""
    schema = {
        "type": "object",
        "properties": {"colour": {"enum": ["red", "green"]}},
        "required": ["colour"],
        "additionalProperties": False,
    }
    c = _constraint(engine, "schema", schema)
    assert engine.tokenizer.decode(c.forced_run()) == '{"colour": "'
