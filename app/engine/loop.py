"""One request's decode state: which tokens it needs run through the body next, and how it
advances once they have run — kept apart from running the body, so a scheduler can advance many
states with one shared body pass (today :func:`decode` drives one).

Generated tokens ``x_0 … x_{t-1}``; ``H_i`` is the exact final state that scores ``x_i`` (the
body's output after ``x_{i-1}``). ``pending`` holds the tokens consumed by the grammar but not
yet run through the body, starting at index ``s``; ``self.h`` is always the exact ``H_s``.

Each step asks the policy for a plan and that plan's kernel (``app.engine.kernels``) for a
body-free guess:

* **ForcedToken** (K = 1) takes its token; it joins ``pending``.
* **PromptLookup** takes the next token of its n-gram draft (app.engine.drafts) — it joins
  ``pending`` *unverified* — until the draft ends; the exact step then runs the draft.
* **AmortizedHead** predicts ``H_t`` with the amortizer and takes the token when the predicted
  margin ≥ τ — it joins ``pending`` *unverified* — else refines with the exact step.
* **An exact step** needs ``pending`` run through the body (:attr:`DecodeState.next_run`), which
  yields ``H_{s+1} … H_t``: every unverified token ``x_i`` is checked against the exact argmax
  under ``H_i``. At the first mismatch the grammar and the KV cache roll back to ``i``, the exact
  token is taken there, and decoding continues: so every plan decodes what always-DenseHead
  decodes, and a wrong guess costs measured time. ``lossy`` trusts accepted tokens.

Steps are passed to ``on_step`` only once verified (a streamed token is never taken back). The
policy gets each step's loss when it is known: a deferred token's share of the batched body
arrives with the forward that runs it (delayed feedback), a rolled-back guess pays for the time
it lost.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np

from ..model.registry import PLANS, effective_plan, get_plan
from . import plans
from .drafts import Drafter
from .grammar import GrammarError
from .kernels import KERNELS, Guess, Kernel
from .results import Step, Telemetry

__all__ = ["BodyRun", "DecodeState", "MAX_SKIP", "PREFILL_CHUNK", "decode", "run_body"]

#: The longest run of body-free steps before an exact step is forced: caps how far predictions
#: chain (their error grows) and how much a rollback can throw away.
MAX_SKIP = 8
#: The ``--plan`` choices whose policy may draft by prompt lookup.
DRAFTING = ("lookup", "auto", "router")
#: Positions per forward of a long run (a prefill, a full recompute) when the caller may stop the
#: decode (``should_stop``): it is asked between chunks.
PREFILL_CHUNK = 64

clock = time.perf_counter


@dataclass(frozen=True)
class BodyRun:
    """Tokens a decode state needs run through the body: ``ids`` at positions ``start`` … of
    ``cache`` (a forced run, a draft of guesses, one token, the prompt, or a whole context)."""

    ids: list[int]
    cache: object
    start: int


def run_body(body, run: BodyRun) -> np.ndarray:
    """The one place a decode calls the body's forward: (len(ids), d) final-normed states."""
    return body.forward(run.ids, run.cache, run.start)


def decode(state: DecodeState, body, should_stop=None) -> DecodeState:
    """Drive one request's ``state`` to its end, one body run at a time.

    ``should_stop()`` (None or a reason: "cancelled", "deadline") is asked at every step
    boundary and between the :data:`PREFILL_CHUNK`-position chunks of a long run (a prompt, a
    full recompute; the body is batch-invariant, so chunks give the states one forward gives);
    a reason ends the decode there (:meth:`DecodeState.halt`)."""
    while (run := state.next_run()) is not None:
        t0 = clock()
        if should_stop is None:
            rows = run_body(body, run)
        else:
            rows = _chunked(body, run, should_stop)
            if isinstance(rows, str):
                state.halt(rows)
                break
        state.advance(rows, clock() - t0)
    return state


def _chunked(body, run: BodyRun, should_stop) -> np.ndarray | str:
    """``run``'s states, forwarded in chunks with ``should_stop`` asked before each; or the
    reason it gave."""
    parts = []
    for lo in range(0, len(run.ids), PREFILL_CHUNK):
        reason = should_stop()
        if reason:
            return reason
        chunk = BodyRun(run.ids[lo : lo + PREFILL_CHUNK], run.cache, run.start + lo)
        parts.append(run_body(body, chunk))
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


@dataclass
class _Pending:
    """An exact step waiting for its body run."""

    index: int
    t0: float
    mask_s: float
    legal: np.ndarray
    run: int
    chosen: str
    plan: str
    kernel: Kernel
    guess: Guess | None
    head_s: float
    ran: int = 0


class DecodeState:
    """The state of one request's decode (see the module doc).

    ``engine`` gives the tokenizer, output head (``output``: app.engine.head, the exact
    scoring every plan shares) and body (for new caches); ``policy`` has
    ``choose(Telemetry) -> plan``, ``feedback(index, plan, seconds)``, ``finish()``;
    ``options`` a :class:`~app.engine.options.DecodeOptions`; ``amortizer`` the amortized plans'
    predictor or None; ``executor`` scores exact steps instead of the kernels (app.compiler);
    ``plans`` and ``kernels`` the registry and kernel table (default the project's).
    """

    def __init__(self, engine, req, prompt, constraint, policy, options, amortizer=None,
                 on_step=None, executor=None, plans=PLANS, kernels=None):  # fmt: skip
        self.e, self.req, self.prompt, self.constraint = engine, req, prompt, constraint
        self.policy, self.options, self.amortizer = policy, options, amortizer
        self.on_step, self.executor = on_step, executor
        self.plans, self.kernels = plans, KERNELS if kernels is None else kernels
        self.output = engine.head
        self.tau = float(options.tau or 0.0)
        self.lossy = bool(options.lossy)
        self.rerank_r = options.rerank_value
        self.tokens: list[int] = []
        self.pending: list[int] = []
        self.steps: list[Step] = []
        self.emitted = 0
        self.unverified: list[tuple[int, np.ndarray, int]] = []  # (index, legal, token)
        self.shares: dict[int, float] = {}  # deferred steps' own seconds, awaiting the body
        self.pred = None  # (index i, predicted H_i)
        self.accept_ema = 0.5  # how often the amortizer's verified guesses were right
        self.cur_run = self.last_run = 0
        self.last_margin: float | None = None
        self.last_head: tuple[str, int, float] | None = None
        self.rollbacks, self.lost_s = 0, 0.0
        self.h = self.cache = self.stop = None
        self.start = self.prefill_s = self._final_t0 = 0.0
        self.budget = min(req.max_tokens, engine.context - len(prompt))
        self._phase: str | None = None  # what the requested body run is for
        self._wait: _Pending | None = None
        self._run: BodyRun | None = None
        self.batch = 1  # sequences sharing the body pass (a scheduler sets it each pass)
        drafting = options.plan in DRAFTING and not options.recalibrate
        self.drafter = (
            Drafter(options.draft) if drafting and "PromptLookup" in self.kernels else None
        )

    # -- what to run ----------------------------------------------------------------------
    @property
    def s(self) -> int:
        return len(self.tokens) - len(self.pending)

    @property
    def done(self) -> bool:
        return self.stop is not None

    @property
    def scoring(self) -> str | None:
        """The plan of the exact step waiting for the requested body run (None: none waits); it
        scores the run's last state unless a guess is rolled back (a scheduler batches the
        DenseHead ones of a pass)."""
        return self._wait.plan if self._phase == "step" and self._wait is not None else None

    def next_run(self) -> BodyRun | None:
        """The tokens to run through the body next (body-free steps are taken on the way), or
        None once the request is finished. Call :meth:`advance` with the run's states."""
        if self._run is not None or self.done:
            return self._run
        if self.h is None:
            self.start = clock()
            self.cache = self.e.body.new_cache(len(self.prompt) + self.req.max_tokens)
            return self._request("prefill", BodyRun(list(self.prompt), self.cache, 0))
        while True:
            stop = self._stopped()
            if stop is not None:
                if not self.unverified:
                    self._finish(stop)
                    return None
                run = self._final_run()
            else:
                run = self._begin_step(len(self.tokens))
            if run is not None:
                return run

    def _request(self, phase: str, run: BodyRun) -> BodyRun:
        self._phase, self._run = phase, run
        return run

    def _final_run(self) -> BodyRun | None:
        """The last guesses are checked before stopping: everything pending but the last token
        runs through the body (None: nothing to run; the check against ``H_s`` is done here)."""
        self._final_t0 = clock()
        if len(self.pending) > 1:
            run = BodyRun(self.pending[:-1], self.cache, len(self.prompt) + self.s)
            return self._request("final", run)
        back = self._verified([self.h], 0.0)
        if back is not None:
            self._charge(back, clock() - self._final_t0)
            self._emit()
        return None

    def _begin_step(self, index: int) -> BodyRun | None:
        """Choose the plan of step ``index`` and take its body-free guess; the body run its exact
        step needs, or None (the step is done, or needed no body)."""
        t0 = clock()
        legal = self.constraint.legal() if self.constraint else self.e.all_ids
        k = int(legal.shape[0])
        if k == 0:
            raise GrammarError(f"request {self.req.id}: no legal token at step {index} (K = 0)")
        forced = len(self.constraint.forced_run()) if self.constraint and k == 1 else 0
        self._track_runs(k)
        t1 = clock()
        chosen = self.policy.choose(self._telemetry(index, legal, forced))
        # the registry's fallback where the plan does not apply (ForcedToken at K > 1: DenseHead)
        plan = effective_plan(get_plan(chosen, self.plans), k, self.plans).name
        kernel = self.kernels[plan]
        tp = clock()
        guess = kernel.guess(self, legal, index)
        head_s = clock() - tp
        w = _Pending(index, t0, t1 - t0, legal, forced, chosen, plan, kernel, guess, head_s)
        if guess is not None and guess.token is not None:
            if guess.verify:
                self.unverified.append((index, legal, guess.token))
            self._commit(w, guess.token, guess.margin, plan, body_s=0.0, deferred=True)
            return None
        if kernel.recompute:
            self.cache = self.e.body.new_cache(len(self.prompt) + self.req.max_tokens)
            w.ran = len(self.prompt) + index
            run = BodyRun(self.prompt + self.tokens, self.cache, 0)
        elif self.pending:
            w.ran = len(self.pending)
            run = BodyRun(list(self.pending), self.cache, len(self.prompt) + self.s)
        else:
            self._score(w, 0.0)
            return None
        self._wait = w
        return self._request("step", run)

    def _track_runs(self, k: int) -> None:
        if k == 1:
            self.cur_run += 1
        elif self.cur_run:
            self.last_run, self.cur_run = self.cur_run, 0

    def _telemetry(self, index: int, legal: np.ndarray, forced: int) -> Telemetry:
        match = draft = 0
        if self.drafter is not None and legal.shape[0] > 1:
            match, draft = self.drafter.peek(self, index)
        return Telemetry(
            request=self.req.id,
            index=index,
            k=int(legal.shape[0]),
            vocab=self.e.config.vocab,
            legal=legal,
            forced_run=forced,
            last_forced_run=self.last_run,
            last_margin=self.last_margin,
            position=len(self.prompt) + index,
            pending=len(self.pending),
            accept=self.accept_ema,
            amortizer=self.amortizer is not None,
            last_head=self.last_head,
            batch=self.batch,
            match=match,
            draft=draft,
            draft_accept=self.drafter.acceptance(match) if self.drafter is not None else 0.0,
        )

    # -- advancing, given the body's states ------------------------------------------------
    def advance(self, rows: np.ndarray, seconds: float) -> None:
        """Take the states ``rows`` (len(run.ids), d) of the run :meth:`next_run` asked for,
        which took ``seconds``: verify the guesses, then score the waiting step."""
        phase, run, self._phase, self._run = self._phase, self._run, None, None
        if phase is None:
            raise RuntimeError("advance() without a body run requested by next_run()")
        if phase == "prefill":
            self.h, self.prefill_s = rows[-1], seconds
            return
        if phase == "final":
            back = self._verified([self.h, *rows], seconds / len(run.ids))
            if back is not None:
                self._charge(back, clock() - self._final_t0)
                self._emit()
            return
        w, self._wait = self._wait, None
        lo = len(self.prompt) + self.s - 1
        states = list(rows[lo:]) if w.kernel.recompute else [self.h, *rows]
        back = self._verified(states, seconds / max(len(self.pending), 1))
        if back is not None:
            self._charge(back, clock() - w.t0)
            self._emit()
            return
        self._score(w, seconds)

    def _verified(self, states: list, share: float) -> int | None:
        """Check the unverified guesses against ``states`` = H_s … H_{s+n}; on a miss roll back
        and return its index, else settle the n tokens run and return None."""
        s = self.s
        for i, legal, token in self.unverified:
            if i - s >= len(states):
                continue
            exact, margin = self._exact(states[i - s], legal)
            drafted = self.drafter is not None and self.drafter.verified(i, exact == token)
            if i < len(self.steps):
                more = {"margin": margin} if drafted else {}
                self.steps[i] = replace(self.steps[i], exact_margin=margin, **more)
            if not drafted:  # the amortizer's acceptance (a feature of the router)
                self.accept_ema = 0.9 * self.accept_ema + 0.1 * (exact == token)
            if exact != token:
                self._rollback(i, states[i - s], exact, margin, share)
                return i
        n = len(states) - 1
        for j in range(s, s + n):
            self._settle(j, share)
        self.unverified = [u for u in self.unverified if u[0] - s > n]
        self.h = states[-1]
        self.pending = self.pending[n:]
        return None

    def _exact(self, h: np.ndarray, legal: np.ndarray):
        """(token, margin) of the exact state ``h`` under ``legal``: the cost rule's head (the
        two pick the same token; SparseHead would gather all of a free-text step's rows)."""
        dense = legal.shape[0] > getattr(self.e.rule, "k_star", legal.shape[0])
        return (plans.dense_head if dense else plans.sparse_head)(self.output, h, legal)

    def _score(self, w: _Pending, body_s: float) -> None:
        """The exact step ``w``: score from ``self.h`` and commit its token."""
        t3 = clock()
        if self.executor is not None:
            tel = {"k": int(w.legal.shape[0]), "position": len(self.prompt) + w.index,
                   "last_margin": self.last_margin}  # fmt: skip
            token, margin, plan = self.executor.run(self.h, w.legal, tel)
        else:
            token, margin, plan = w.kernel.score(self, w.legal, w.guess)
        head_s = clock() - t3
        if self.executor is None:
            self.last_head = (plan, int(w.legal.shape[0]), head_s)
        self.last_margin = margin if margin is not None else self.last_margin
        w.head_s += head_s
        self._commit(w, token, margin, plan, body_s, deferred=False)

    def _commit(self, w: _Pending, token, margin, plan, body_s: float, deferred: bool) -> None:
        """Consume ``token``, record its :class:`Step`; an exact step's is streamed now."""
        t4 = clock()
        if self.constraint:
            self.constraint.consume(token)
        self.tokens.append(token)
        self.pending.append(token)
        if self.pred and self.pred[0] != w.index:
            self.pred = None
        text = self.e.tokenizer.decode([token])
        t5 = clock()
        k = int(w.legal.shape[0])
        st = Step(index=w.index, token=token, text=text, plan=plan, k=k, forced=k == 1,
                  margin=margin, seconds=t5 - w.t0, forced_run=w.run, body_tokens=w.ran,
                  mask_s=w.mask_s + (t5 - t4), body_s=body_s, head_s=w.head_s, chosen=w.chosen,
                  refined=bool(w.guess is not None and w.guess.refined))  # fmt: skip
        self.steps.append(st)
        self.shares[w.index] = st.seconds - body_s  # its body share arrives with its forward
        if not deferred:
            self._emit()

    # -- predictions, feedback, rollback ---------------------------------------------------
    def can_skip(self) -> bool:
        """Whether a body-free guess may chain one more token (an amortizer, ≤ MAX_SKIP)."""
        return len(self.pending) <= MAX_SKIP and self.amortizer is not None

    def predicted(self, t: int) -> np.ndarray:
        """Predicted ``H_t`` (d,), chained from the latest known state through the tokens."""
        at, h = self.pred if self.pred and self.pred[0] > self.s else (self.s, self.h)
        for j in range(at, t):
            h = self.amortizer.predict(h, self.tokens[j])
        self.pred = (t, h)
        return h

    def _settle(self, j: int, share: float) -> None:
        """Step ``j``'s body share is known: its loss goes to the policy."""
        own = self.shares.pop(j, None)
        if own is not None and j < len(self.steps):
            self.policy.feedback(j, self.steps[j].plan, own + share)

    def _rollback(self, i, h_i, exact, margin, share) -> None:
        """x_i was wrong: back to position i, take the exact token, drop the steps after it."""
        t = len(self.tokens)
        if self.drafter is not None:
            self.drafter.rolled_back(i)
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
        self.pending, self.h, self.pred, self.unverified = [exact], h_i, None, []
        old = self.steps[i]
        self.steps = self.steps[:i]
        text = self.e.tokenizer.decode([exact])
        self.steps.append(replace(old, token=exact, text=text, margin=margin, exact_margin=margin,
                                  seconds=old.seconds + lost, rolled_back=t - i))  # fmt: skip
        # the guess's loss (its own time and all it lost) arrives with its token's body share
        self.shares[i] = self.shares.pop(i, old.seconds) + lost
        self.rollbacks += 1
        self.lost_s += lost
        self.last_margin = margin

    def _charge(self, i: int, seconds: float) -> None:
        """Time spent on a step that a rollback threw away goes to the guess at ``i``."""
        self.steps[i] = replace(self.steps[i], seconds=self.steps[i].seconds + seconds)
        self.shares[i] = self.shares.get(i, 0.0) + seconds
        self.lost_s += seconds

    def _emit(self) -> None:
        """Hand the verified steps to ``on_step`` (those before the first unverified one)."""
        upto = self.unverified[0][0] if self.unverified else len(self.steps)
        while self.emitted < upto:
            if self.on_step is not None:
                self.on_step(self.steps[self.emitted])
            self.emitted += 1

    # -- the end ---------------------------------------------------------------------------
    def _stopped(self) -> str | None:
        if not self.tokens:
            return None
        if self.tokens[-1] == self.e.tokenizer.eos:
            return "eos"
        if self.constraint and self.constraint.stopped():
            return "grammar"
        return "length" if len(self.tokens) >= self.budget else None

    def halt(self, reason: str) -> None:
        """End the decode now with ``stop`` = ``reason`` (its client left, a deadline passed),
        keeping the verified tokens only; a requested body run is dropped. A scheduler calls it
        at a step boundary."""
        if self.done:
            return
        if self.unverified:
            cut = self.unverified[0][0]
            self.tokens, self.steps = self.tokens[:cut], self.steps[:cut]
        self._phase = self._run = self._wait = None
        self.start = self.start or clock()
        self._finish(reason)

    def _finish(self, stop: str) -> None:
        self.unverified = []
        self._emit()
        self.policy.finish()
        self.stop = stop
