"""One request's decode loop: plan per step, deferred body runs, verification and rollback.

Generated tokens ``x_0 … x_{t-1}``; ``H_i`` is the exact final state that scores ``x_i`` (the
body's output after ``x_{i-1}``). ``pending`` holds the tokens consumed by the grammar but not
yet run through the body, starting at index ``s``; ``self.h`` is always the exact ``H_s``.

* **ForcedToken** (K = 1) appends its token to ``pending``.
* **AmortizedHead** predicts ``H_t`` from the last state (exact or predicted) through the pending
  tokens with the amortizer, scores the legal set, and accepts when the predicted margin ≥ τ —
  the token joins ``pending`` *unverified* — else refines with the exact step.
* **An exact step** runs ``pending`` through the body in one batch-invariant forward, which yields
  ``H_{s+1} … H_t``: every unverified token ``x_i`` is checked against the exact argmax under
  ``H_i``. At the first mismatch the grammar and the KV cache roll back to ``i``, the exact token
  is taken there, and decoding continues: so every plan decodes what always-DenseHead decodes,
  and a wrong guess costs measured time. ``lossy=True`` trusts accepted tokens (the paper's rule).

Steps are passed to ``on_step`` only once verified (a streamed token is never taken back). The
policy gets each step's loss when it is known: a deferred token's share of the batched body
arrives with the forward that runs it (delayed feedback), a rolled-back guess pays for the time
it lost.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from ..model.registry import effective_plan, get_plan
from . import plans
from .amortized import DEFAULT_RERANK_R, amortized_head, amortized_rerank
from .grammar import GrammarError

__all__ = ["DecodeLoop", "MAX_SKIP"]

#: The longest run of body-free steps before an exact step is forced: caps how far predictions
#: chain (their error grows) and how much a rollback can throw away.
MAX_SKIP = 8
#: Positions per forward of a prefill (or a full recompute) when the caller may stop the decode
#: (``should_stop``): it is asked between chunks. The body is batch-invariant, so chunks give
#: the states one forward gives.
PREFILL_CHUNK = 64


class _Halted(Exception):
    """``should_stop`` gave ``reason`` inside a long forward (a prefill, a full recompute)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class DecodeLoop:
    """The state of one request's decode; ``policy`` has ``choose(tel) -> plan`` and
    ``feedback(index, plan, seconds)`` (see app.engine.routing)."""

    def __init__(self, engine, req, prompt, constraint, policy, on_step, executor, options):
        self.e, self.req, self.prompt, self.constraint = engine, req, prompt, constraint
        self.policy, self.on_step, self.executor = policy, on_step, executor
        self.tau = options.get("tau", 0.0)
        self.lossy = options.get("lossy", False)
        self.rerank_r = options.get("rerank_r", DEFAULT_RERANK_R)
        self.amortizer = options.get("amortizer")
        # () -> None or a stop reason ("cancelled", "deadline"): asked before every prefill
        # chunk and at every step boundary; the decode then ends with the tokens so far
        self.should_stop = options.get("should_stop")
        self.last_margin: float | None = None
        self.tokens: list[int] = []
        self.pending: list[int] = []
        self.steps: list = []
        self.emitted = 0
        self.unverified: list[tuple[int, object, int]] = []  # (index, legal, token)
        self.shares: dict[int, float] = {}  # deferred steps' own seconds, awaiting the body
        self.pred = None  # (index i, predicted H_i)
        self.accept_ema = 0.5  # how often the amortizer's verified guesses were right
        self.cur_run = self.last_run = 0
        self.rollbacks = 0
        self.lost_s = 0.0

    # -- states ---------------------------------------------------------------------------
    @property
    def s(self) -> int:
        return len(self.tokens) - len(self.pending)

    def _predicted(self, t: int):
        """Predicted ``H_t``, chained from the latest known state through the tokens since."""
        at, h = self.pred if self.pred and self.pred[0] > self.s else (self.s, self.h)
        for j in range(at, t):
            h = self.amortizer.predict(h, self.tokens[j])
        self.pred = (t, h)
        return h

    def _run_body(self, ids):
        """Forward ``ids`` at the cache's end; the deferred steps' feedback arrives here."""
        rows = self.e.body.forward(ids, self.cache)
        return rows

    def _flush(self, upto: int | None = None):
        """Run ``pending[:upto]`` through the body and verify: (rollback index or None, body s)."""
        run = self.pending if upto is None else self.pending[:upto]
        if not run:
            return None, 0.0
        s = self.s
        t0 = time.perf_counter()
        rows = self._run_body(run)
        body_s = time.perf_counter() - t0
        share = body_s / len(run)
        states = [self.h, *rows]  # H_s … H_{s+len(run)}
        for i, legal, token in self.unverified:
            if i - s >= len(states):
                continue
            exact, margin = plans.sparse_head(self.e.output, states[i - s], legal)
            self._note_exact_margin(i, margin)
            self.accept_ema = 0.9 * self.accept_ema + 0.1 * (exact == token)
            if exact != token:
                self._rollback(i, states[i - s], legal, exact, margin, share)
                return i, body_s
        for j in range(s, s + len(run)):
            self._settle(j, share)
        self.unverified = [u for u in self.unverified if u[0] - s >= len(states)]
        self.h = rows[-1]
        self.pending = self.pending[len(run) :]
        return None, body_s

    def _note_exact_margin(self, i, margin):
        if i < len(self.steps):
            self.steps[i] = replace(self.steps[i], exact_margin=margin)

    def _settle(self, j: int, share: float) -> None:
        """Step ``j``'s body share is known: its loss goes to the policy."""
        own = self.shares.pop(j, None)
        if own is not None and j < len(self.steps):
            self.policy.feedback(j, self.steps[j].plan, own + share)

    def _rollback(self, i, h_i, legal, exact, margin, share) -> None:
        """x_i was wrong: back to position i, take the exact token, drop the steps after it."""
        t = len(self.tokens)
        self.cache.truncate(len(self.prompt) + i)
        if self.constraint:
            self.constraint.rollback(t - i)
        lost = sum(st.seconds for st in self.steps[i + 1 :])
        for j in range(self.s, i):
            self._settle(j, share)
        for j in range(i + 1, t):
            self.shares.pop(j, None)
        if self.constraint:
            self.constraint.consume(exact)
        self.tokens = self.tokens[:i] + [exact]
        self.pending = [exact]
        self.h = h_i
        self.pred = None
        self.unverified = []
        old = self.steps[i]
        self.steps = self.steps[:i]
        self.steps.append(
            replace(
                old,
                token=exact,
                text=self.e.tokenizer.decode([exact]),
                margin=margin,
                exact_margin=margin,
                seconds=old.seconds + lost,
                rolled_back=t - i,
            )
        )
        # the guess's loss (its own time and all it lost) arrives with its token's body share
        self.shares[i] = self.shares.pop(i, old.seconds) + lost
        self.rollbacks += 1
        self.lost_s += lost
        self.last_margin = margin

    # -- one step -------------------------------------------------------------------------
    def _telemetry(self, index: int, k: int, run: int) -> dict:
        return {
            "k": k,
            "vocab": self.e.config.vocab,
            "forced_run": run,
            "last_forced_run": self.last_run,
            "last_margin": self.last_margin,
            "position": len(self.prompt) + index,
            "pending": len(self.pending),
            "accept": self.accept_ema,
            "amortizer": self.amortizer is not None,
            "request": self.req.id,
            "index": index,
        }

    def step(self, index: int):
        """Decode step ``index``; returns the Step, or None when a rollback rewound the loop."""
        clock = time.perf_counter
        t0 = clock()
        legal = self.constraint.legal() if self.constraint else self.e.all_ids
        k = int(legal.shape[0])
        if k == 0:
            raise GrammarError(f"request {self.req.id}: no legal token at step {index} (K = 0)")
        run = len(self.constraint.forced_run()) if self.constraint and k == 1 else 0
        if k == 1:
            self.cur_run += 1
        elif self.cur_run:
            self.last_run, self.cur_run = self.cur_run, 0
        t1 = clock()
        chosen = self.policy.choose(self._telemetry(index, k, run))
        plan, ran, body_s, head_s, refined, deferred = chosen, 0, 0.0, 0.0, False, False
        margin = h_pred = None
        plan = effective_plan(get_plan(plan), k).name  # ForcedToken at K > 1 runs its fallback
        tp = clock()
        if plan == "ForcedToken":
            token, margin = plans.forced_token(legal)
            deferred = True
        elif plan == "AmortizedHead" and self.pending and self._can_skip():
            h = self._predicted(index)
            token, margin = amortized_head(self.e.output, h, legal)
            if margin is None or margin >= self.tau:
                deferred = True
                if not self.lossy:
                    self.unverified.append((index, legal, token))
            else:
                refined = True
        elif plan == "AmortizedRerank" and self.pending and self.amortizer is not None:
            h_pred = self._predicted(index)
        t2 = clock()
        head_s = t2 - tp
        if not deferred:
            ran = len(self.pending) if plan != "FullRecompute" else len(self.prompt) + index
            if plan == "FullRecompute":
                back, body_s = self._full_recompute()
            else:
                back, body_s = self._flush()
            if back is not None:
                self._charge(back, clock() - t0)
                self._emit()
                return None
            t3 = clock()
            token, margin, plan = self._score(plan, legal, k, index, h_pred)
            head_s += clock() - t3
            self._recalibrate(plan, k, legal, clock() - t3)
            self.last_margin = margin if margin is not None else self.last_margin
        t4 = clock()
        if self.constraint:
            self.constraint.consume(token)
        self.tokens.append(token)
        self.pending.append(token)
        if self.pred and self.pred[0] != index:
            self.pred = None
        text = self.e.tokenizer.decode([token])
        t5 = clock()
        from .engine import Step

        st = Step(
            index,
            token,
            text,
            plan,
            k,
            k == 1,
            margin,
            t5 - t0,
            run,
            ran,
            (t1 - t0) + (t5 - t4),
            body_s,
            head_s,
            chosen=chosen,
            refined=refined,
        )
        self.steps.append(st)
        own = st.seconds - body_s
        self.shares[index] = own  # its body share arrives with the forward that runs it
        if not deferred:
            self._emit()
        return st

    def _recalibrate(self, plan: str, k: int, legal, seconds: float) -> None:
        """Feed the head's measured time to an online ``auto`` rule; probe the other head now
        and then (app.engine.recalibrate)."""
        rule = getattr(self.policy, "rule", None)
        if self.executor is not None or not hasattr(rule, "observe"):
            return
        if plan not in ("DenseHead", "SparseHead"):
            return
        rule.observe(plan, k, seconds)
        if rule.probe():
            other = "SparseHead" if plan == "DenseHead" else "DenseHead"
            head = plans.sparse_head if other == "SparseHead" else plans.dense_head
            t0 = time.perf_counter()
            head(self.e.output, self.h, legal)
            rule.observe(other, k, time.perf_counter() - t0)

    def _charge(self, i: int, seconds: float) -> None:
        """Time spent on a step that a rollback threw away goes to the guess at ``i``."""
        self.steps[i] = replace(self.steps[i], seconds=self.steps[i].seconds + seconds)
        self.shares[i] = self.shares.get(i, 0.0) + seconds
        self.lost_s += seconds

    def _can_skip(self) -> bool:
        return len(self.pending) <= MAX_SKIP and self.amortizer is not None

    def _full_recompute(self):
        t0 = time.perf_counter()
        body = self.e.body
        self.cache = body.new_cache(len(self.prompt) + self.req.max_tokens)
        ids = self.prompt + self.tokens
        self.h = self._forward(ids)[-1]
        share = (time.perf_counter() - t0) / max(len(self.pending), 1)
        for j in range(self.s, len(self.tokens)):
            self._settle(j, share)
        self.pending = []
        return None, time.perf_counter() - t0

    def _score(self, plan: str, legal, k: int, index: int, h_pred=None):
        """(token, margin, plan that ran) from the exact state ``self.h``."""
        if self.executor is not None:
            telemetry = {
                "k": k,
                "position": len(self.prompt) + index,
                "last_margin": self.last_margin,
            }
            return self.executor.run(self.h, legal, telemetry)
        if plan == "AmortizedRerank" and h_pred is not None:
            token, margin, lead = amortized_rerank(
                self.e.output, h_pred, self.h, legal, self.rerank_r
            )
            if lead > float(self.amortizer.meta.get("eps_max", float("inf"))):
                return token, margin, plan
            plan = "SparseHead"  # not certified: refine over all of K
        if plan in plans.AMORTIZED_PLANS:
            plan = "SparseHead"
        head = plans.dense_head if plan == "DenseHead" else plans.sparse_head
        token, margin = head(self.e.output, self.h, legal)
        return token, margin, plan

    def _emit(self) -> None:
        """Hand the verified steps to ``on_step`` (those before the first unverified one)."""
        upto = self.unverified[0][0] if self.unverified else len(self.steps)
        while self.emitted < upto:
            if self.on_step is not None:
                self.on_step(self.steps[self.emitted])
            self.emitted += 1

    # -- the loop -------------------------------------------------------------------------
    def _stopped(self, budget: int) -> str | None:
        if not self.tokens:
            return None
        if self.tokens[-1] == self.e.tokenizer.eos:
            return "eos"
        if self.constraint and self.constraint.stopped():
            return "grammar"
        return "length" if len(self.tokens) >= budget else None

    def _halt(self) -> str | None:
        return self.should_stop() if self.should_stop is not None else None

    def _forward(self, ids):
        """``ids`` through the body at the cache's end -> (T, d); in chunks, ``should_stop``
        asked before each, when the caller may stop the decode (:class:`_Halted`)."""
        if self.should_stop is None:
            return self.e.body.forward(ids, self.cache)
        rows = []
        for lo in range(0, len(ids), PREFILL_CHUNK):
            halt = self._halt()
            if halt:
                raise _Halted(halt)
            rows.append(self.e.body.forward(ids[lo : lo + PREFILL_CHUNK], self.cache))
        return rows[0] if len(rows) == 1 else np.concatenate(rows)

    def _halted(self, reason: str) -> str:
        """Stopped inside a step: keep only the verified tokens."""
        if self.unverified:
            cut = self.unverified[0][0]
            self.tokens, self.steps = self.tokens[:cut], self.steps[:cut]
            self.unverified = []
        return reason

    def run(self):
        e, req = self.e, self.req
        start = time.perf_counter()
        self.cache = e.body.new_cache(len(self.prompt) + req.max_tokens)
        try:
            self.h, stop = self._forward(self.prompt)[-1], None
        except _Halted as halted:
            stop = halted.reason
        prefill = time.perf_counter() - start
        budget = min(req.max_tokens, e.context - len(self.prompt))
        while stop is None:
            stop = self._stopped(budget) or self._halt()
            if stop is None:
                try:
                    self.step(len(self.tokens))
                except _Halted as halted:
                    stop = self._halted(halted.reason)
                continue
            if self.unverified:  # the last guesses: run them through the body before stopping
                t0 = time.perf_counter()
                back, _ = self._flush(upto=len(self.pending) - 1)
                if back is not None:
                    self._charge(back, time.perf_counter() - t0)
                    self._emit()
                    stop = None
        self.unverified = []
        self._emit()
        self.policy.finish()
        return self.tokens, stop, self.steps, prefill, start
