"""Grammars through llguidance: per step the legal token set (K, the ids) and the forced run.

A grammar is given as one of ``GRAMMAR_KINDS``; :func:`compile_grammar` turns it into
llguidance's grammar text and checks it once, so a bad schema or regex is one clear
``ValueError`` before decoding starts. :class:`Constraint` is one request's matcher; it refuses
a grammar whose language is empty (``[^\\s\\S]``, a ``$ref`` that only refers to itself: the
matcher stops at once without accepting) or that allows no first token (K = 0), so such a
grammar is an error before decoding, never an empty answer. The schemas ``true`` and ``{}``
allow any JSON value; ``false`` allows none (an error).
"""

from __future__ import annotations

import json

import numpy as np

__all__ = ["GRAMMAR_KINDS", "GrammarError", "compile_grammar", "Constraint", "ll_tokenizer"]

GRAMMAR_KINDS = ("schema", "json_object", "regex", "choices", "lark")
#: JSON is written compactly with fixed separators unless a schema's own ``x-guidance`` says
#: otherwise: the structure is then forced (K = 1) wherever the schema fixes it.
JSON_FORMAT = {"whitespace_flexible": False, "key_separator": ": ", "item_separator": ", "}
MAX_GRAMMAR_BYTES = 256 * 1024


class GrammarError(ValueError):
    """A grammar that llguidance rejects, or a step with no legal token; one line."""


def _one_line(text: str) -> str:
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return " ".join(lines)[:300]


def _grammar_text(kind: str, value) -> str:
    from llguidance import LLMatcher

    if kind == "schema":
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise GrammarError(f"schema: not valid JSON ({exc})") from None
        if not isinstance(value, dict | bool):
            raise GrammarError(f"schema: must be a JSON object, got {type(value).__name__}")
        if value is False:
            raise GrammarError("schema: false matches no JSON value (an empty language)")
        if value is True:  # any JSON value, as {} says
            value = {}
        return LLMatcher.grammar_from_json_schema(json.dumps(value), defaults=JSON_FORMAT)
    if kind == "json_object":
        return LLMatcher.grammar_from_json_schema('{"type": "object"}', defaults=JSON_FORMAT)
    if kind == "regex":
        if not isinstance(value, str) or not value:
            raise GrammarError("regex: must be a non-empty string")
        return LLMatcher.grammar_from_regex(value)
    if kind == "choices":
        if (
            not isinstance(value, list | tuple)
            or not value
            or not all(isinstance(c, str) and c for c in value)
        ):
            raise GrammarError("choices: must be a non-empty list of non-empty strings")
        # Lark string literals take JSON escapes, so any choice text is quoted exactly.
        return LLMatcher.grammar_from_lark("start: " + " | ".join(json.dumps(c) for c in value))
    if kind == "lark":
        if not isinstance(value, str) or not value.strip():
            raise GrammarError("lark: must be a non-empty grammar text")
        return LLMatcher.grammar_from_lark(value)
    raise GrammarError(f"grammar kind must be one of {', '.join(GRAMMAR_KINDS)}; got {kind!r}")


def compile_grammar(kind: str, value, tokenizer=None) -> str:
    """llguidance grammar text for ``(kind, value)``; raises :class:`GrammarError` (one line)
    for a grammar that does not parse or that llguidance does not support."""
    from llguidance import LLMatcher

    text = _grammar_text(kind, value)
    if len(text) > MAX_GRAMMAR_BYTES:
        raise GrammarError(
            f"{kind}: grammar is {len(text):,} bytes; the limit is {MAX_GRAMMAR_BYTES:,}"
        )
    error = LLMatcher.validate_grammar(text, tokenizer)
    if error:
        raise GrammarError(f"{kind}: {_one_line(error)}")
    return text


def ll_tokenizer(tok, vocab: int):
    """The llguidance view of a :class:`~app.engine.tokenizer.Tokenizer` (built once per model)."""
    from llguidance import LLTokenizer

    return LLTokenizer(tok.to_json(), n_vocab=vocab, eos_token=tok.eos)


class Constraint:
    """One request's grammar state: legal ids per step, consume, roll back."""

    def __init__(self, ll_tok, grammar: str, vocab: int):
        from llguidance import LLMatcher
        from llguidance.numpy import allocate_token_bitmask

        self.matcher = LLMatcher(ll_tok, grammar)
        if self.matcher.is_error():
            raise GrammarError(_one_line(self.matcher.get_error()))
        self.vocab = vocab
        self._mask = allocate_token_bitmask(1, vocab)
        k = self.legal().shape[0]  # (llguidance settles "stopped" while computing the mask)
        if self.dead():
            raise GrammarError("the grammar matches no text at all (an empty language)")
        if k == 0:
            raise GrammarError(
                "no legal token at step 0 (K = 0): the grammar allows no first token"
            )

    def legal(self) -> np.ndarray:
        """(K,) int64 legal token ids, ascending (the tie-break's order). K may be 0."""
        from llguidance.numpy import fill_next_token_bitmask

        fill_next_token_bitmask(self.matcher, self._mask, 0)
        bits = np.unpackbits(self._mask.view(np.uint8), bitorder="little")[: self.vocab]
        return np.flatnonzero(bits)

    def forced_run(self) -> list[int]:
        """The tokens the grammar forces from here (llguidance's fast-forward tokens)."""
        return list(self.matcher.compute_ff_tokens())

    def validate(self, tokens: list[int]) -> int:
        """How many of ``tokens`` (a draft) the grammar accepts in a row from here; the matcher
        is not advanced (llguidance's ``validate_tokens``). An id outside the vocabulary ends
        the draft before llguidance sees it: llguidance stops the matcher on one."""
        ids = []
        for t in tokens:
            if not 0 <= int(t) < self.vocab:
                break
            ids.append(int(t))
        return int(self.matcher.validate_tokens(ids)) if ids else 0

    def consume(self, token: int) -> None:
        if not self.matcher.consume_token(int(token)):
            raise GrammarError(f"token {token} rejected: {_one_line(self.matcher.get_error())}")

    def rollback(self, n: int) -> None:
        if n and not self.matcher.rollback(n):
            raise GrammarError(f"rollback of {n} tokens failed")

    def stopped(self) -> bool:
        return bool(self.matcher.is_stopped())

    def accepting(self) -> bool:
        """The text so far is a whole sentence of the grammar."""
        return bool(self.matcher.is_accepting())

    def dead(self) -> bool:
        """Stopped without accepting: no continuation can ever complete the text."""
        return self.stopped() and not self.accepting()
