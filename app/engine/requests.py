"""A decode request, validated once at the boundary, and JSONL batches of them.

One object a line: ``id``, ``prompt``, at most one of ``schema`` | ``regex`` | ``choices`` |
``lark`` | ``json_object`` (none: unconstrained), optional ``max_tokens`` and ``chat``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .grammar import GRAMMAR_KINDS

__all__ = ["DecodeRequest", "GRAMMAR_KINDS", "load_requests", "DEFAULT_MAX_TOKENS"]

DEFAULT_MAX_TOKENS = 128
MAX_TOKENS_LIMIT = 4096
_KEYS = frozenset({"id", "prompt", "max_tokens", "chat", *GRAMMAR_KINDS})


@dataclass(frozen=True)
class DecodeRequest:
    """``grammar`` is ``(kind, value)`` with ``kind`` in :data:`GRAMMAR_KINDS`, or None.

    ``messages`` (optional) is a whole conversation, ``({"role", "content"}, ...)``, for the
    model's chat template (it overrides ``prompt``/``chat`` for the prompt's ids); contents are
    text there, as ``prompt`` is with ``chat``: control tokens come from the template only."""

    id: str
    prompt: str
    grammar: tuple[str, object] | None = None
    max_tokens: int = DEFAULT_MAX_TOKENS
    chat: bool = False
    messages: tuple | None = None

    def __post_init__(self):
        if not isinstance(self.prompt, str) or not (self.prompt or self.messages):
            raise ValueError(f"request {self.id}: 'prompt' must be a non-empty string")
        mt = self.max_tokens
        if isinstance(mt, bool) or not isinstance(mt, int) or not 1 <= mt <= MAX_TOKENS_LIMIT:
            raise ValueError(
                f"request {self.id}: 'max_tokens' must be an integer in [1, {MAX_TOKENS_LIMIT}], "
                f"got {mt!r}"
            )
        if self.messages is not None and not (
            isinstance(self.messages, tuple | list)
            and self.messages
            and all(
                isinstance(m, dict) and isinstance(m.get("role"), str)
                and isinstance(m.get("content"), str) for m in self.messages
            )
        ):  # fmt: skip
            raise ValueError(f"request {self.id}: 'messages' must be a non-empty list of "
                             "{role, content} strings")  # fmt: skip
        if self.grammar is not None and self.grammar[0] not in GRAMMAR_KINDS:
            raise ValueError(
                f"request {self.id}: grammar kind must be one of {', '.join(GRAMMAR_KINDS)}, "
                f"got {self.grammar[0]!r}"
            )

    @classmethod
    def from_dict(cls, obj, default_id: str = "request", **defaults) -> DecodeRequest:
        """From a JSON object; ``defaults`` (max_tokens, chat) apply where the object is silent."""
        if not isinstance(obj, dict):
            raise ValueError(f"{default_id}: must be a JSON object, got {type(obj).__name__}")
        rid = str(obj.get("id", default_id))
        unknown = sorted(set(obj) - _KEYS)
        if unknown:
            raise ValueError(f"request {rid}: unknown field(s) {', '.join(unknown)}")
        kinds = [k for k in GRAMMAR_KINDS if k in obj]
        if len(kinds) > 1:
            raise ValueError(f"request {rid}: give at most one of {', '.join(GRAMMAR_KINDS)}")
        grammar = (kinds[0], obj[kinds[0]]) if kinds else None
        chat = obj.get("chat", defaults.get("chat", False))
        if not isinstance(chat, bool):
            raise ValueError(f"request {rid}: 'chat' must be true or false, got {chat!r}")
        return cls(
            id=rid,
            prompt=obj.get("prompt"),
            grammar=grammar,
            max_tokens=obj.get("max_tokens", defaults.get("max_tokens", DEFAULT_MAX_TOKENS)),
            chat=chat,
        )


def load_requests(path: str | Path, **defaults) -> list[DecodeRequest]:
    """Every request of a JSONL file; ``ValueError`` naming the line for a bad one."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--requests {path}: no such file")
    out, seen = [], set()
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path.name}:{n}: not valid JSON ({exc.msg})") from None
            try:
                req = DecodeRequest.from_dict(obj, default_id=f"line-{n}", **defaults)
            except ValueError as exc:
                raise ValueError(f"{path.name}:{n}: {exc}") from None
            if req.id in seen:
                raise ValueError(f"{path.name}:{n}: duplicate id {req.id!r}")
            seen.add(req.id)
            out.append(req)
    if not out:
        raise ValueError(f"--requests {path}: no requests in the file")
    return out
