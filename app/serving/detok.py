"""Streamed text that is exact: whole characters only, the same bytes as the whole answer.

A byte-level BPE token may hold part of a UTF-8 character (an emoji or a CJK character is often
split across two or three tokens). :class:`TextStream` feeds each token's exact bytes
(``Tokenizer.token_bytes``) to an incremental UTF-8 decoder, which holds back an incomplete
sequence until the token that completes it arrives; a byte that can never start or continue a
character becomes U+FFFD, exactly as decoding the whole answer at once would make it. So the
joined deltas equal the answer's text byte for byte, for any output.

When the decode ends with an incomplete character (a length stop, or a deadline, in the middle of
one), those bytes are dropped, not shown as U+FFFD: the text ends at the last whole character
and the answer says how many bytes were dropped (``llmqp.incomplete_bytes``).
"""

from __future__ import annotations

import codecs

__all__ = ["TextStream"]


class TextStream:
    """One answer's text, token by token. ``tokenizer`` may lack ``token_bytes`` (a test
    double): each step's own text is used then. The ``eos`` token adds no text."""

    def __init__(self, tokenizer, eos: int | None = None):
        self._bytes = getattr(tokenizer, "token_bytes", None)
        self._eos = eos
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.parts: list[str] = []

    def push(self, token: int, text: str = "") -> str:
        """The new whole characters once ``token`` is added (maybe "")."""
        if self._eos is not None and int(token) == self._eos:
            piece = ""
        elif self._bytes is None:
            piece = text
        else:
            piece = self._decoder.decode(self._bytes(int(token)))
        self.parts.append(piece)
        return piece

    def held(self) -> int:
        """Bytes held back: the start of a character not yet complete."""
        return len(self._decoder.getstate()[0])

    @property
    def text(self) -> str:
        """Everything emitted so far (the answer's text once the decode ends)."""
        return "".join(self.parts)

    @classmethod
    def of(cls, tokenizer, tokens, texts=None, eos=None) -> tuple[str, int]:
        """``(text, incomplete_bytes)`` of a whole answer, as the stream would give it."""
        stream = cls(tokenizer, eos)
        for i, token in enumerate(tokens):
            stream.push(token, texts[i] if texts is not None else "")
        return stream.text, stream.held()
