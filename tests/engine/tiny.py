"""A tiny random Llama behind the engine's interface, and a deterministic fake grammar: the
decode state, kernels, policies and trace collector run on it in milliseconds, no model file."""

from __future__ import annotations

import numpy as np

from app.engine.forward_numpy import NumpyLlama
from app.engine.head import output_head
from app.engine.heads_numpy import PAD_ROWS
from app.engine.requests import DecodeRequest
from app.engine.rule import CostRule
from app.engine.weights import LlamaConfig, random_weights

CFG = LlamaConfig(n_layers=2, d=32, d_ff=64, n_heads=4, n_kv_heads=2, head_dim=8, vocab=200,
                  context=256)  # fmt: skip


class _Tokenizer:
    eos = -1  # never generated: requests stop by length

    def decode(self, ids):
        return "".join(chr(65 + int(i) % 26) for i in ids)


class FakeConstraint:
    """Every third step forces one token (K = 1); the others allow 3–60 ids, all drawn from the
    tokens consumed so far (so a rollback gives back the same legal sets)."""

    def __init__(self, vocab: int, seed: int = 0):
        self.vocab, self.seed, self.tokens = vocab, seed, []

    def _rng(self):
        return np.random.default_rng([self.seed, len(self.tokens), *self.tokens[-2:]])

    def legal(self) -> np.ndarray:
        rng = self._rng()
        k = 1 if len(self.tokens) % 3 == 2 else int(rng.integers(3, 60))
        return np.sort(rng.choice(self.vocab, size=k, replace=False)).astype(np.int64)

    def forced_run(self) -> list[int]:
        return [int(self.legal()[0])]

    def consume(self, token: int) -> None:
        assert token in self.legal(), token
        self.tokens.append(int(token))

    def rollback(self, n: int) -> None:
        del self.tokens[len(self.tokens) - n :]

    def stopped(self) -> bool:
        return False


class TinyEngine:
    """What the decode state reads off an engine, at :data:`CFG`'s shape."""

    name, device, versions = "tiny", "cpu", {}

    def __init__(self, seed: int = 0, grammar: bool = True):
        self.config = CFG
        self.weights = random_weights(CFG, np.random.default_rng(seed))
        self.body = NumpyLlama(self.weights)
        out, pad = self.weights.output, (-CFG.vocab) % PAD_ROWS
        self.output = np.concatenate([out, np.zeros((pad, CFG.d), out.dtype)])
        self.head = output_head(self.weights, self.output, self.body.kernel)
        self.all_ids = np.arange(CFG.vocab)
        self.tokenizer = _Tokenizer()
        self.context = CFG.context
        self.rule = CostRule(CFG.d, CFG.vocab, "cpu")
        self.grammar = grammar

    def prompt_ids(self, req: DecodeRequest) -> list[int]:
        return [ord(c) % CFG.vocab for c in req.prompt]

    def constraint(self, req: DecodeRequest):
        return FakeConstraint(CFG.vocab, seed=len(req.prompt)) if self.grammar else None

    def decode(self, req, plan="auto", on_step=None, executor=None, **options):
        from app.engine.options import DecodeOptions
        from app.engine.session import Session

        return Session(self).decode(req, DecodeOptions(plan=plan, **options), on_step, executor)


def requests(n: int = 3, max_tokens: int = 14) -> list[DecodeRequest]:
    prompts = ("the quick brown fox", "jumps over", "the lazy dog again and again")
    return [DecodeRequest(f"r{i}", prompts[i % 3], None, max_tokens=max_tokens) for i in range(n)]
