"""Prompt-lookup drafting: the continuation of the longest n-gram match, proposed as a draft that
the body verifies in one forward (the ``PromptLookup`` plan; its kernel is
``app.engine.kernels.numpy.PromptLookupKernel``).

Function-call arguments copy names, numbers, dates and places from the question, and JSON
repeats its own keys: the tokens that follow the last n tokens (n = :data:`MAX_NGRAM` … 1) at
their latest earlier occurrence in the prompt + output are a cheap guess of what comes next.
A :class:`Drafter` (one per request) proposes up to L such tokens, keeps the prefix the grammar
accepts (llguidance's ``validate_tokens``: a check that does not advance the matcher), and hands
them out one step at a time; the decode state takes each as an unverified guess, so the draft
— with any forced tokens between — runs through the body in **one** forward of 1 + L rows at
the next exact step, where every drafted token is checked against the exact argmax under its
own mask: the agreeing prefix is kept, the first disagreeing position takes the exact token, and
the KV cache and the grammar roll back to it (app.engine.loop). Tokens are therefore always
DenseHead's; a wrong draft costs time only.

**Draft length.** With ``draft=L`` (``llmqp decode --plan lookup --draft L``) every match of
any length drafts L tokens. Otherwise the calibrated rule: drafted token j (1-based) is accepted
with probability ``p^j`` (p the per-token acceptance of drafts at this match length, an EMA
started at :data:`PRIOR`) and costs :data:`ROW_COST` one-token steps (an extra verification row
plus the drafted step's grammar and bookkeeping, measured); it pays while ``p^j > ROW_COST``, so
``L = floor(log ROW_COST / log p)`` clipped to ``[0, MAX_DRAFT]`` — no draft at L = 0.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["MAX_NGRAM", "MAX_DRAFT", "PRIOR", "ROW_COST", "Drafter", "lookup", "rule_length"]

#: The longest n-gram matched (then n - 1 … 1).
MAX_NGRAM = 3
#: The longest draft (rows of a verification forward: 1 + MAX_DRAFT, plus forced tokens).
MAX_DRAFT = 16
#: Per-token acceptance assumed before any draft of this match length was verified.
PRIOR = {1: 0.3, 2: 0.55, 3: 0.7}
#: An extra verification row and its drafted step, in one-token steps: measured on the q kernel
#: here (body 15.3 / 20.1 / 23.4 / 34.1 ms for 1 / 2 / 3 / 5 rows, ~4.7 ms a row, plus ~0.7 ms
#: of grammar per drafted step, against a ~17 ms one-token step).
ROW_COST = 0.35
#: Weight of the newest verified token in a match length's acceptance EMA.
EMA_WEIGHT = 0.2


def lookup(seq, max_n: int = MAX_NGRAM, limit: int = MAX_DRAFT) -> tuple[int, list[int]]:
    """``(n, continuation)``: the longest n ≤ ``max_n`` whose last-n-token suffix of ``seq``
    (token ids) occurs earlier in it, and the ≤ ``limit`` tokens after its latest earlier
    occurrence; ``(0, [])`` without a match."""
    seq = np.asarray(seq, dtype=np.int64)
    size = seq.shape[0]
    for n in range(min(max_n, size - 1), 0, -1):
        windows = np.lib.stride_tricks.sliding_window_view(seq[: size - 1], n)  # starts ≤ size-1-n
        hits = np.flatnonzero((windows == seq[size - n :]).all(axis=1))
        if hits.size:
            at = int(hits[-1]) + n
            return n, seq[at : at + limit].tolist()
    return 0, []


def rule_length(p: float, row_cost: float = ROW_COST, cap: int = MAX_DRAFT) -> int:
    """The calibrated draft length for per-token acceptance ``p``: ``floor(log row_cost / log
    p)`` in ``[0, cap]`` (the last token j with ``p^j > row_cost``)."""
    if p <= row_cost:
        return 0
    if p >= 1.0:
        return cap
    return max(0, min(cap, int(math.floor(math.log(row_cost) / math.log(p) + 1e-9))))


class Drafter:
    """One request's prompt-lookup drafts: the proposal, its queue, acceptance and statistics.

    ``length`` a fixed draft length (None: the calibrated rule). The decode state calls
    :meth:`peek` before each step (telemetry: match length, tokens it would draft), :meth:`take`
    from the kernel (the next drafted token or None), :meth:`verified` per checked token and
    :meth:`rolled_back` when a rollback throws the rest away.
    """

    def __init__(self, length: int | None = None):
        self.fixed = length
        self.p = dict(PRIOR)
        self.queue: list[int] = []
        self.at = 0  # the step index the queue's head is for
        self.match = 0  # match length of the queued draft
        self.owned: dict[int, int] = {}  # drafted step index -> its match length, unverified
        self._peeked: tuple[int, int, list[int]] | None = None  # (index, n, continuation)
        self._fresh = False  # the queue's first token is not taken yet
        self.stats = {"drafts": 0, "drafted": 0, "accepted": 0, "rejected": 0, "unreached": 0}

    # -- proposing ----------------------------------------------------------------------------
    def length(self, match: int) -> int:
        """Tokens to draft after a match of ``match`` tokens (0: none)."""
        if match < 1:
            return 0
        if self.fixed is not None:
            return int(self.fixed)
        return rule_length(self.p[min(match, MAX_NGRAM)])

    def _sync(self, tokens: list[int], index: int) -> None:
        """Drop the queue's head past the tokens taken since (another plan may have run a
        step: a forced token equal to the draft's keeps it going)."""
        while self.queue and self.at < index:
            if self.queue[0] != tokens[self.at]:
                self.queue = []
                break
            self.queue.pop(0)
            self.at += 1

    def peek(self, state, index: int) -> tuple[int, int]:
        """``(match, tokens)`` before step ``index``: the running draft's, or a new proposal's
        (a new draft starts only once the last one is verified)."""
        self._sync(state.tokens, index)
        if self.queue and self.at == index:
            return self.match, len(self.queue)
        if state.unverified:
            return 0, 0
        if self._peeked is None or self._peeked[0] != index:
            n, cont = lookup(state.prompt + state.tokens, MAX_NGRAM, MAX_DRAFT)
            self._peeked = (index, n, cont)
        n = self._peeked[1]
        return n, min(self.length(n), len(self._peeked[2]))

    def take(self, state, legal: np.ndarray, index: int) -> int | None:
        """The drafted token of step ``index`` if it is legal (``legal`` (K,) ascending), else
        None (the draft ends: the step is exact, and its forward verifies the draft)."""
        match, n = self.peek(state, index)
        if not (self.queue and self.at == index):
            if n == 0:
                return None
            self._start(state, index, match, self._peeked[2][:n])
        token = self.queue[0] if self.queue else None
        i = int(np.searchsorted(legal, token)) if token is not None else 0
        if token is None or i >= legal.shape[0] or legal[i] != token:
            self.queue = []
            return None
        self.queue.pop(0)
        self.at = index + 1
        self.owned[index] = self.match
        self.stats["drafted"] += 1
        if self._fresh:  # a draft counts once its first token is taken
            self.stats["drafts"] += 1
            self._fresh = False
        return token

    def _start(self, state, index: int, match: int, cont: list[int]) -> None:
        """Queue ``cont`` cut to the prefix the grammar accepts (the matcher is not advanced)."""
        validate = getattr(state.constraint, "validate", None)
        if validate is not None:
            cont = cont[: validate(cont)]
        self.queue, self.at, self.match, self._fresh = list(cont), index, match, True

    # -- verification ------------------------------------------------------------------------
    def verified(self, index: int, ok: bool) -> bool:
        """Record the check of step ``index``'s token; whether it was a drafted one."""
        match = self.owned.pop(index, None)
        if match is None:
            return False
        self.stats["accepted" if ok else "rejected"] += 1
        n = min(match, MAX_NGRAM)
        self.p[n] = (1 - EMA_WEIGHT) * self.p[n] + EMA_WEIGHT * float(ok)
        return True

    def rolled_back(self, index: int) -> None:
        """Steps after ``index`` were thrown away: their drafted tokens were never checked."""
        gone = [i for i in self.owned if i > index]
        for i in gone:
            del self.owned[i]
        self.stats["unreached"] += len(gone)
        self.queue, self._peeked = [], None

    def acceptance(self, match: int) -> float:
        """The current per-token acceptance estimate at match length ``match`` (0 for none)."""
        return self.p[min(match, MAX_NGRAM)] if match >= 1 else 0.0

    def report(self) -> dict:
        """The statistics: ``drafts`` started, tokens ``drafted``, ``accepted``, ``rejected``
        (the first wrong token of a draft) and ``unreached`` (thrown away after it)."""
        return dict(self.stats)
