"""The model's tokenizer, built from the GGUF's own vocabulary and merges with ``tokenizers``.

Byte-level BPE (``tokenizer.ggml.model = gpt2``). The ``smollm`` pre-tokenizer splits digits one
by one before the GPT-2 byte-level split; token type 3 marks special (control) tokens, which are
added as special tokens so ``<|im_start|>`` in a prompt is one id.
"""

from __future__ import annotations

from dataclasses import dataclass

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

    def encode(self, text: str) -> list[int]:
        return list(self.hf.encode(text, add_special_tokens=False).ids)

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
    bos = fields.get("tokenizer.ggml.bos_token_id")
    return Tokenizer(
        hf=hf,
        vocab=len(tokens),
        bos=None if bos is None else int(bos),
        eos=int(fields.get("tokenizer.ggml.eos_token_id")),
        chat_template=fields.get("tokenizer.chat_template"),
    )
