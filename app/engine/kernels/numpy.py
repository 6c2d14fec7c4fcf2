"""The registry's plans on the real model, numpy heads (one class per plan; the table is
``app.engine.kernels.KERNELS``). The heads themselves are :mod:`app.engine.plans`' and
:mod:`app.engine.amortized`'s, so DenseHead and SparseHead score every legal row with the same
float and every exact plan decodes the same tokens.
"""

from __future__ import annotations

from ..amortized import DEFAULT_RERANK_R, amortized_head, amortized_rerank
from ..plans import dense_head, forced_token, sparse_head
from .base import Guess, Kernel

__all__ = [
    "NUMPY_KERNELS",
    "DenseHeadKernel",
    "SparseHeadKernel",
    "AmortizedHeadKernel",
    "AmortizedRerankKernel",
    "FullRecomputeKernel",
    "ForcedTokenKernel",
    "PromptLookupKernel",
]


def _exact_step_cost(p, name: str, head) -> float | None:
    """An exact step's hindsight seconds: grammar + one-token body + the head (K ≥ 2 only)."""
    if p.k < 2:
        return None
    return p.grammar_s + p.body1_s + p.timed(name, head, p.output, p.h, p.legal)[1]


class DenseHeadKernel(Kernel):
    """The exact state, all |V| logits, the illegal ones masked, argmax."""

    name = "DenseHead"

    def score(self, state, legal, guess):
        token, margin = dense_head(state.output, state.h, legal)
        return token, margin, self.name

    def cost(self, p):
        return _exact_step_cost(p, self.name, dense_head)


class SparseHeadKernel(Kernel):
    """The exact state, the K legal rows only."""

    name = "SparseHead"

    def cost(self, p):
        return _exact_step_cost(p, self.name, sparse_head)


class AmortizedHeadKernel(Kernel):
    """Skip the body: the amortizer predicts the state through the pending tokens, the legal
    rows are scored with it, and the token is taken when the predicted margin ≥ τ — checked
    against the exact argmax when the body next runs (rolled back on a miss) unless ``lossy``.
    Below τ, or with nothing pending or too much pending, it is the exact SparseHead step."""

    name = "AmortizedHead"

    def guess(self, state, legal, index):
        if not (state.pending and state.can_skip()):
            return None
        token, margin = amortized_head(state.output, state.predicted(index), legal)
        if margin is None or margin >= state.tau:
            return Guess(token, margin, verify=not state.lossy)
        return Guess(refined=True)

    def cost(self, p):
        if p.k < 2 or p.h_pred is None:
            return None
        (token, _), head_s = p.timed("AmortizedHead", amortized_head, p.output, p.h_pred, p.legal)
        seconds = p.grammar_s + p.predict_s + head_s + p.batch_s
        if token != p.token:  # the rollback: the exact step after all
            seconds += p.body1_s + p.timed("SparseHead", sparse_head, p.output, p.h, p.legal)[1]
        return seconds


class AmortizedRerankKernel(Kernel):
    """The engine's AmortizedRerank (exact, unlike the paper's): the predicted state shortlists
    the top-r legal ids, the *exact* state (the body still runs) rescores only those. Accepted
    when the winner's exact score leads the best predicted score outside the shortlist by more
    than the amortizer's measured ε (``eps_max``); else SparseHead over all of K. It saves head
    work at large K, never body work."""

    name = "AmortizedRerank"

    def guess(self, state, legal, index):
        if not (state.pending and state.amortizer is not None):
            return None
        return Guess(h_pred=state.predicted(index))

    def score(self, state, legal, guess):
        if guess is not None and guess.h_pred is not None:
            r = state.rerank_r
            token, margin, lead = amortized_rerank(state.output, guess.h_pred, state.h, legal, r)
            if lead > float(state.amortizer.meta.get("eps_max", float("inf"))):
                return token, margin, self.name
        return super().score(state, legal, guess)  # not certified: refine over all of K

    def cost(self, p):
        if p.k < 2 or p.h_pred is None:
            return None
        args = (p.output, p.h_pred, p.h, p.legal, DEFAULT_RERANK_R)
        (_, _, lead), head_s = p.timed("AmortizedRerank", amortized_rerank, *args)
        seconds = p.grammar_s + p.body1_s + head_s
        if not lead > p.eps_max:
            seconds += p.timed("SparseHead", sparse_head, p.output, p.h, p.legal)[1]
        return seconds


class FullRecomputeKernel(Kernel):
    """The state recomputed over the whole context into a new KV cache, then SparseHead."""

    name = "FullRecompute"
    recompute = True

    def score(self, state, legal, guess):
        token, margin = sparse_head(state.output, state.h, legal)
        return token, margin, self.name


class ForcedTokenKernel(Kernel):
    """K = 1: the only legal token, nothing scored, no body now (the token joins the forced run
    that the next exact step feeds through the body in one forward)."""

    name = "ForcedToken"

    def guess(self, state, legal, index):
        token, margin = forced_token(legal)
        return Guess(token, margin)

    def cost(self, p):
        return p.grammar_s + p.batch_s if p.k == 1 else None


class PromptLookupKernel(Kernel):
    """Draft with prompt lookup (app.engine.drafts): each step of a draft takes the next token
    of the n-gram continuation, unverified, with no body; K = 1 takes the forced token, which
    joins the same forward. The step after the draft is exact: the body runs the token, the
    draft and the forced tokens in one forward (T = 1 + L rows), each drafted token is checked
    against the exact argmax under its own mask and the first wrong one is rolled back. Exact
    steps score with the cost rule's head (SparseHead while K ≤ K*, else DenseHead)."""

    name = "PromptLookup"

    def guess(self, state, legal, index):
        if legal.shape[0] == 1:
            token, margin = forced_token(legal)
            return Guess(token, margin)
        if state.drafter is None:
            return None
        token = state.drafter.take(state, legal, index)
        return None if token is None else Guess(token, None, verify=True)

    def score(self, state, legal, guess):
        head = sparse_head if legal.shape[0] <= state.e.rule.k_star else dense_head
        token, margin = head(state.output, state.h, legal)
        return token, margin, self.name


#: This file's entries of the kernel table, one per registry plan (a new plan's kernel joins here).
NUMPY_KERNELS = (
    DenseHeadKernel(),
    SparseHeadKernel(),
    AmortizedHeadKernel(),
    AmortizedRerankKernel(),
    FullRecomputeKernel(),
    ForcedTokenKernel(),
    PromptLookupKernel(),
)
