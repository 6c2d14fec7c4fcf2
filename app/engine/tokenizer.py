"""The model's tokenizer, built from the GGUF's own vocabulary and merges with ``tokenizers``.

Byte-level BPE (``tokenizer.ggml.model = gpt2``). The ``smollm`` pre-tokenizer splits digits one
by one before the GPT-2 byte-level split; token type 3 marks special (control) tokens, which are
added as special tokens so ``<|im_start|>`` in a template is one id.

Prompts are text: :meth:`Tokenizer.encode_text` and :meth:`Tokenizer.chat_ids` never turn a
special token's spelling inside user (or system, assistant) content into its control id; only
the chat template inserts control tokens. :meth:`Tokenizer.encode` parses them (a raw prompt
written with its own template, the reference fixtures). :meth:`Tokenizer.token_bytes` gives a
token's exact bytes, so a caller can cut text at whole characters (streaming).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from functools import cached_property

__all__ = ["Tokenizer", "tokenizer_from_gguf"]

_CONTROL = 3
_DIGIT_SPLIT_PRE = ("smollm", "starcoder", "refact", "qwen2", "llama3", "llama-bpe")


@dataclass(frozen=True)
class Tokenizer:
    """``encode``/``decode`` over a ``tokenizers.Tokenizer``; ids are Python ints."""

    hf: object  # tokenizers.Tokenizer
    vocab: int
    bos: int | None
    eos: int
    chat_template: str | None
    plain: object = None  # the same tokenizer with special-token parsing off (text only)

    def encode(self, text: str) -> list[int]:
        """Ids of ``text``, special tokens' spellings parsed into their control ids."""
        return list(self.hf.encode(text, add_special_tokens=False).ids)

    def encode_text(self, text: str) -> list[int]:
        """Ids of ``text`` as plain text: ``<|im_start|>`` is spelt with ordinary tokens."""
        if self.plain is None:
            raise ValueError("this tokenizer has no plain-text mode (built without 'plain')")
        return list(self.plain.encode(text, add_special_tokens=False).ids)

    @cached_property
    def specials(self) -> dict[str, int]:
        """Every special (control) token of the model: spelling -> id."""
        return {t.content: i for i, t in self.hf.get_added_tokens_decoder().items() if t.special}

    @cached_property
    def _byte_table(self) -> list[bytes]:
        inverse = {c: b for b, c in _byte_chars().items()}
        table = []
        for i in range(self.hf.get_vocab_size()):
            piece = self.hf.id_to_token(i) or ""
            if piece in self.specials:
                table.append(piece.encode("utf-8"))
            else:
                table.append(b"".join(bytes([inverse[c]]) if c in inverse else c.encode()
                                      for c in piece))  # fmt: skip
        return table

    def token_bytes(self, token: int) -> bytes:
        """The exact bytes token ``token`` stands for (a piece of a UTF-8 character maybe)."""
        return self._byte_table[int(token)]

    def decode(self, ids) -> str:
        return self.hf.decode([int(i) for i in ids], skip_special_tokens=False)

    def to_json(self) -> str:
        return self.hf.to_str()

    def chat(self, prompt: str) -> str:
        """``prompt`` as one user turn in the model's chat template, ready for the answer."""
        if not self.chat_template:
            raise ValueError("--chat: this model has no chat template (tokenizer.chat_template)")
        import jinja2

        template = jinja2.Environment(autoescape=False).from_string(self.chat_template)
        return template.render(
            messages=[{"role": "user", "content": prompt}], add_generation_prompt=True
        )

    def chat_ids(self, messages) -> list[int]:
        """Ids of ``messages`` (``[{"role", "content"}, ...]``) in the chat template, ready for
        the answer. Control tokens come from the template only: each content is tokenized as
        text. For content without special-token spellings this equals
        ``encode(render(messages))`` (the tokenizer splits at control tokens anyway)."""
        if not self.chat_template:
            raise ValueError("--chat: this model has no chat template (tokenizer.chat_template)")
        import jinja2.sandbox

        # Render with unguessable stand-ins for the contents, so every control token in the
        # result is the template's; then put the contents back as text.
        tag = secrets.token_hex(12)
        marks = [f"\x00{tag}{i}\x00" for i in range(len(messages))]
        stand_in = [{**m, "content": mark} for m, mark in zip(messages, marks)]
        env = jinja2.sandbox.ImmutableSandboxedEnvironment(autoescape=False)
        text = env.from_string(self.chat_template).render(
            messages=stand_in, add_generation_prompt=True
        )
        if any(text.count(mark) != 1 for mark in marks):
            raise ValueError("the chat template changes message contents; cannot keep them text")
        ids: list[int] = []
        for piece, is_special in _split_specials(text, self.specials):
            if is_special:
                ids.append(self.specials[piece])
                continue
            for mark, m in zip(marks, messages):
                piece = piece.replace(mark, m["content"])
            ids.extend(self.encode_text(piece))
        return ids


def _split_specials(text: str, specials: dict) -> list[tuple[str, bool]]:
    """``text`` cut at every control-token spelling: ``[(piece, is_special), ...]``, the text
    pieces non-empty. The longest spelling wins where two start at one place."""
    if not specials:
        return [(text, False)] if text else []
    names = sorted(specials, key=len, reverse=True)
    out, start = [], 0
    for m in re.finditer("|".join(re.escape(n) for n in names), text):
        if m.start() > start:
            out.append((text[start : m.start()], False))
        out.append((m.group(), True))
        start = m.end()
    if start < len(text):
        out.append((text[start:], False))
    return out


def _byte_chars() -> dict[int, str]:
    """GPT-2's byte-level alphabet: byte -> the printable character that spells it."""
    keep = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    out, extra = {b: chr(b) for b in keep}, 0
    for b in range(256):
        if b not in out:
            out[b] = chr(256 + extra)
            extra += 1
    return out


def tokenizer_from_gguf(fields: dict) -> Tokenizer:
    """Build the tokenizer from GGUF metadata ``fields`` (plain values, as
    :func:`app.engine.weights.load_gguf` returns them); ``ValueError`` for a kind we lack."""

    from tokenizers import AddedToken, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as HFTokenizer

    kind = fields.get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise ValueError(f"tokenizer.ggml.model {kind!r} is not supported (byte-level BPE: 'gpt2')")
    tokens = fields.get("tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in fields.get("tokenizer.ggml.merges") or ()]
    types = fields.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    hf = HFTokenizer(
        models.BPE(
            {t: i for i, t in enumerate(tokens)}, merges, fuse_unk=False, byte_fallback=False
        )
    )
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if fields.get("tokenizer.ggml.pre") in _DIGIT_SPLIT_PRE:
        hf.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), byte_level]
        )
    else:
        hf.pre_tokenizer = byte_level
    hf.decoder = decoders.ByteLevel()
    specials = [t for t, ty in zip(tokens, types) if ty == _CONTROL]
    hf.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    plain = HFTokenizer.from_str(hf.to_str())
    plain.encode_special_tokens = True  # control-token spellings are text here
    bos = fields.get("tokenizer.ggml.bos_token_id")
    return Tokenizer(
        hf=hf,
        plain=plain,
        vocab=len(tokens),
        bos=None if bos is None else int(bos),
        eos=int(fields.get("tokenizer.ggml.eos_token_id")),
        chat_template=fields.get("tokenizer.chat_template"),
    )
