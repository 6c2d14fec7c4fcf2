"""Continuous batching: many requests' decode states advanced by one shared body pass per step.

Each pass (:meth:`Scheduler.step`):

1. sequences whose ``should_stop()`` names a reason (their client left, a deadline) end there,
   with their verified tokens (:meth:`~app.engine.loop.DecodeState.halt`);
2. waiting requests are admitted, first come first served, while the batch has room
   (``max_batch``) and the KV budget holds their reservation (prompt + ``max_tokens`` positions);
3. every active sequence's next body run — a prompt, one token, a forced run, a draft of guesses,
   a whole context: mixed lengths — is packed into one :meth:`forward_batch` of at most
   ``max_tokens`` tokens (short runs first, so decoding sequences are not held up by a long
   prefill, which then runs in chunks over several passes); a prompt starts from the longest
   prefix of a recent prompt it shares (:mod:`app.engine.prefix_cache`: the chat template's
   system turn, a repeated request), so only its new positions run, and a fresh prompt that
   shares much more with one being prefilled waits a pass for that prompt's prefix;
4. each sequence whose run is complete advances (its plan's head scores its own exact state) and
   asks for its next run at once, so a finished sequence leaves the batch in the same pass.

Exactness: the body is batch-invariant (a sequence's rows are bit-identical to its solo forward,
chunked or not) and every head runs per sequence on those rows, so each sequence decodes exactly
what it decodes alone, whoever shares its pass. With a batch-invariant head (the ``q`` kernel's,
app.engine.head) the DenseHead steps of a pass share one head call over their states: each row
of it is that sequence's solo logits bit for bit, and the weights are read once per pass. The
plan decision is batch-aware: the ``auto`` rule prices K* at the pass's batch size
(``Telemetry.batch``); every exact plan gives the same tokens, so the choice changes time only.

Threads: a pass of at least 32 rows (prefills, large batches: compute-bound) runs the q kernel on
one or two threads, whichever its recent large passes measured faster per row
(:mod:`app.engine.pass_threads`: a second thread pays only while the second core is free); the
kernel's results are the same for any thread count, so this changes time only. ``threads`` (or
``LLMQP_KERNEL_THREADS`` in the environment) fixes the large passes' count instead.

The scheduler runs on one thread: ``submit`` may be called from any thread, ``step`` (or the
worker of :meth:`start`) on one; ``on_step`` and ``should_stop`` are called on that thread.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
from collections import deque
from dataclasses import replace

import numpy as np

from . import qkernel
from .batch_limits import DEFAULT_LIMITS, BatchLimits, Full, kv_bytes_per_position
from .forward_numpy import KVCache
from .loop import DecodeState
from .options import DecodeOptions
from .pass_threads import ThreadChooser, kernel_threads
from .prefix_cache import PrefixCache, followers
from .routing import RouterPolicy
from .session import result_of

__all__ = ["Scheduler", "Sequence", "Full", "BatchLimits"]

clock = time.perf_counter

#: Rows (every sequence's new tokens) from which a pass may run the kernel on two threads: on a
#: quiet machine 1.2-1.5x from 32 rows on, slower below 16 (thread start-up against a few ms).
THREAD_MIN_PASS_ROWS = 32


class Sequence:
    """One request in a :class:`Scheduler`: its decode state and what its caller waits on.

    ``result`` (a :class:`~app.engine.results.DecodeResult`) or ``error`` once ``finished``;
    :meth:`wait` blocks for it."""

    def __init__(self, state: DecodeState, should_stop, kv: int, order: int):
        self.state, self.should_stop, self.kv, self.order = state, should_stop, kv, order
        self.run = None  # the BodyRun in progress
        self.off = 0  # its tokens run so far (a prefill may take several passes)
        self.rows: list[np.ndarray] = []
        self.body_s = 0.0  # this run's share of the passes' seconds
        self.looked = -1  # the prefix store's version at this prefill's last lookup
        self.result = self.error = None
        self.on_admit = self.on_done = None  # () and (sequence) callbacks, scheduler thread
        self._done = threading.Event()

    @property
    def finished(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None):
        """The decode's result (blocking); re-raises the error it failed with."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"request {self.state.req.id}: not finished after {timeout} s")
        if self.error is not None:
            raise self.error
        return self.result


class _OwnIndices:
    """A shared learned router seen by one sequence: its step indices are made unique across the
    sequences sharing the router (the router keys delayed feedback by index), and ``finish`` drops
    only this sequence's waiting contexts."""

    def __init__(self, policy: RouterPolicy, ids: itertools.count):
        self.policy, self.ids, self.mine = policy, ids, {}

    def choose(self, tel):
        self.mine[tel.index] = key = next(self.ids)
        return self.policy.choose(replace(tel, index=key))

    def feedback(self, index, plan, seconds):
        if index in self.mine:
            self.policy.feedback(self.mine.pop(index), plan, seconds)

    def finish(self):
        for key in self.mine.values():
            if self.policy.waiting.pop(key, None) is not None:
                self.policy.dropped += 1
            self.policy._chosen_at.pop(key, None)
        self.mine.clear()


class Scheduler:
    """Continuous batching over ``session``'s engine (see the module doc) under ``limits``;
    ``prefixes``: the prompts' :class:`PrefixCache` (default one of its default size; None: no
    reuse); ``threads``: kernel threads for a large pass (default: measured, 1 or 2)."""

    def __init__(self, session, limits: BatchLimits | None = None, prefixes="default",
                 threads: int | None = None):  # fmt: skip
        limits = DEFAULT_LIMITS if limits is None else limits
        if not isinstance(limits, BatchLimits):
            raise ValueError(f"The 'limits' parameter must be BatchLimits. Got {limits!r}.")
        if prefixes == "default":
            prefixes = PrefixCache()
        if prefixes is not None and not isinstance(prefixes, PrefixCache):
            raise ValueError(f"The 'prefixes' parameter must be a PrefixCache or None. "
                             f"Got {prefixes!r}.")  # fmt: skip
        self.prefixes = prefixes
        env = os.environ.get("LLMQP_KERNEL_THREADS")
        fixed = threads if threads is not None else (int(env) if env else None)
        if fixed is not None and not 1 <= int(fixed) <= qkernel.MAX_THREADS:
            raise ValueError(f"The 'threads' parameter must be in [1, {qkernel.MAX_THREADS}]. "
                             f"Got {fixed!r}.")  # fmt: skip
        two = (1, 2) if (os.cpu_count() or 1) >= 2 else (1,)
        self.threads = ThreadChooser(two, THREAD_MIN_PASS_ROWS, fixed=fixed)
        self.session, self.engine, self.limits = session, session.engine, limits
        self.body = self.engine.body
        self.per_position = kv_bytes_per_position(self.engine.config)
        self.waiting: deque[Sequence] = deque()
        self.active: list[Sequence] = []
        self.kv_reserved = 0
        self.passes = 0
        self.dense_batched = 0  # DenseHead steps scored through a pass's shared head call
        self.pass_sizes: list[tuple[int, int]] = []  # (sequences, tokens) per pass, bounded
        self._lock = threading.Condition()
        self._order = itertools.count()
        self._router_ids = itertools.count()
        self._thread: threading.Thread | None = None
        self._guard = None
        self._closed = False

    # -- queueing ------------------------------------------------------------------------------
    def submit(self, req, options: DecodeOptions | None = None, on_step=None,
               should_stop=None, on_admit=None, on_done=None) -> Sequence:  # fmt: skip
        """Queue ``req`` under ``options`` (default ``auto``). ``on_step(step)`` gets each
        verified token, ``should_stop()`` (None or a reason) is asked at every step boundary
        (queued requests too), ``on_admit()`` when it joins the batch, ``on_done(sequence)``
        when it has finished (all on the scheduler's thread).
        Raises ``ValueError`` for a request that can never run (bad prompt or grammar, a KV
        reservation over the whole budget) and :class:`Full` when the queue is full."""
        options = options if options is not None else DecodeOptions()
        if not isinstance(options, DecodeOptions):
            raise ValueError(f"The 'options' parameter must be DecodeOptions. Got {options!r}.")
        e = self.engine
        prompt = e.prompt_ids(req)
        kv = self.per_position * (len(prompt) + req.max_tokens)
        if kv > self.limits.kv_bytes:
            raise ValueError(
                f"request {req.id}: its KV cache ({kv:,} bytes for {len(prompt)} prompt + "
                f"{req.max_tokens} new tokens) exceeds the budget kv_bytes = "
                f"{self.limits.kv_bytes:,}"
            )
        constraint = e.constraint(req)
        policy, amortizer = self.session.policy(options)
        if isinstance(policy, RouterPolicy):
            policy = _OwnIndices(policy, self._router_ids)
        state = DecodeState(e, req, prompt, constraint, policy, options, amortizer, on_step)
        seq = Sequence(state, should_stop, kv, next(self._order))
        seq.on_admit, seq.on_done = on_admit, on_done
        with self._lock:
            room = max(0, self.limits.max_batch - len(self.active))  # joins at the next pass
            if len(self.waiting) - room >= self.limits.max_waiting:
                raise Full(
                    f"The decode queue is full ({len(self.waiting)} waiting, "
                    f"{len(self.active)} running); retry later."
                )
            self.waiting.append(seq)
            self._lock.notify_all()
        return seq

    @property
    def busy(self) -> bool:
        return bool(self.active or self.waiting)

    # -- one pass ------------------------------------------------------------------------------
    def step(self) -> bool:
        """One body pass over every active sequence (see the module doc); whether any work is
        left afterwards."""
        self._stop_asked()
        self._admit()
        batch = len(self.active)
        for seq in list(self.active):
            seq.state.batch = batch
            if seq.run is None:
                self._next_run(seq)
        packed = self._pack()
        if packed:
            self._run_pass(packed)
        return self.busy

    def run_until_done(self) -> None:
        """Step until nothing is waiting or running (the caller's thread)."""
        while self.step():
            pass

    def _stop_asked(self) -> None:
        for seq in list(self.active):
            reason = seq.should_stop() if seq.should_stop is not None else None
            if reason:
                seq.state.halt(reason)
                self._retire(seq)
        stopped = []
        with self._lock:
            for seq in list(self.waiting):
                reason = seq.should_stop() if seq.should_stop is not None else None
                if reason:
                    self.waiting.remove(seq)
                    stopped.append((seq, reason))
        for seq, reason in stopped:  # outside the lock: on_done may call back in
            seq.state.halt(reason)
            self._finish(seq)

    def _admit(self) -> None:
        with self._lock:
            while self.waiting and len(self.active) < self.limits.max_batch:
                seq = self.waiting[0]
                if self.active and self.kv_reserved + seq.kv > self.limits.kv_bytes:
                    break  # first come, first served: the head of the queue waits for room
                self.waiting.popleft()
                self.kv_reserved += seq.kv
                self.active.append(seq)
                if seq.on_admit is not None:
                    seq.on_admit()

    def _next_run(self, seq: Sequence) -> None:
        """Ask ``seq`` for its next body run (its body-free steps happen here); retire it when
        it has finished or failed."""
        try:
            seq.run = seq.state.next_run()
        except Exception as exc:  # noqa: BLE001  (one request's failure is its own)
            seq.error, seq.run = exc, None
        seq.off, seq.rows, seq.body_s, seq.looked = 0, [], 0.0, -1
        if seq.run is None:
            self._retire(seq)

    def _prefill(self, seq: Sequence) -> bool:
        """Whether ``seq``'s run is its prompt's prefill into a fresh numpy cache (what the
        prefix cache can fill and keep)."""
        run = seq.run
        return (self.prefixes is not None and seq.state.h is None and run.start == 0
                and isinstance(run.cache, KVCache))  # fmt: skip

    def _pack(self) -> list[tuple[Sequence, int]]:
        """(sequence, tokens it runs now) for this pass: shortest remaining runs first, within
        ``max_tokens`` (the first always runs, at least partly)."""
        left = self.limits.max_tokens
        waits = self._share_prefixes()
        order = sorted(
            (s for s in self.active if s.run is not None and s not in waits),
            key=lambda s: (len(s.run.ids) - s.off, s.order),
        )
        packed = []
        for seq in order:
            take = min(len(seq.run.ids) - seq.off, left)
            if take <= 0:
                break
            packed.append((seq, take))
            left -= take
        return packed

    def _share_prefixes(self) -> set[Sequence]:
        """Fill each fresh prefill (none of its rows run yet) from the prefix store, again when
        the store has grown; return those that wait a pass for a running prompt's prefix."""
        if self.prefixes is None:
            return set()
        fresh, running = [], []
        for seq in self.active:
            if seq.run is None or not self._prefill(seq):
                continue
            if seq.rows:
                running.append(seq.run.ids)
                continue
            if seq.looked != self.prefixes.version:
                seq.off = self.prefixes.fill(seq.run.ids, seq.run.cache, have=seq.off)
                seq.looked = self.prefixes.version
            fresh.append(seq)
        if len(fresh) + len(running) < 2:
            return set()
        fresh.sort(key=lambda s: s.order)
        waits = followers(running, [(s.run.ids, s.off) for s in fresh])
        return {fresh[i] for i in waits}

    def _run_pass(self, packed: list[tuple[Sequence, int]]) -> None:
        seqs = [(s.run.ids[s.off : s.off + n], s.run.cache, s.run.start + s.off) for s, n in packed]
        total = sum(n for _, n in packed)
        threads = self.threads.choose(total)
        t0 = clock()
        try:
            with kernel_threads(threads):
                outs = self.body.forward_batch(seqs)
        except Exception as exc:  # noqa: BLE001  (fail this pass's sequences, keep serving)
            for seq, _ in packed:
                seq.error = exc
                self._retire(seq)
            return
        seconds = clock() - t0
        self.threads.record(threads, total, seconds)
        self.passes += 1
        self.pass_sizes = self.pass_sizes[-9999:] + [(len(packed), total)]
        ready = []
        for (seq, n), rows in zip(packed, outs):
            seq.rows.append(rows)
            seq.off += n
            seq.body_s += seconds * n / total
            if seq.off < len(seq.run.ids):
                continue  # a prefill in chunks: more passes to go
            if self._prefill(seq):
                self.prefixes.store(seq.run.ids, seq.run.cache)
            ready.append((seq, seq.rows[0] if len(seq.rows) == 1 else np.concatenate(seq.rows)))
        with self._dense_heads(ready):
            for seq, rows in ready:
                try:
                    seq.state.advance(rows, seq.body_s)
                except Exception as exc:  # noqa: BLE001
                    seq.error = exc
                    self._retire(seq)
                    continue
                self._next_run(seq)

    def _dense_heads(self, ready):
        """One head call over the last states of the pass's DenseHead steps, when the head is
        batch-invariant and more than one needs it (else each scores its own, as alone)."""
        head = self.engine.head
        states = [rows[-1] for seq, rows in ready if seq.state.scoring == "DenseHead"]
        if len(states) < 2 or not head.batch_invariant:
            return contextlib.nullcontext()
        self.dense_batched += len(states)
        return head.batched(np.stack(states))

    def _retire(self, seq: Sequence) -> None:
        with self._lock:
            if seq in self.active:
                self.active.remove(seq)
                self.kv_reserved -= seq.kv
        self._finish(seq)

    def _finish(self, seq: Sequence) -> None:
        seq.run = None
        state = seq.state
        if seq.error is None:
            seconds = clock() - state.start if state.start else 0.0
            seq.result = result_of(self.engine, state.req, state, seconds)
        seq._done.set()
        if seq.on_done is not None:
            seq.on_done(seq)

    def stats(self) -> dict:
        """Passes, the dense heads they shared, the prefix cache's counts."""
        prefixes = self.prefixes.stats() if self.prefixes is not None else None
        return {"passes": self.passes, "dense_batched": self.dense_batched,
                "kernel_threads": self.threads.stats(), "prefixes": prefixes}  # fmt: skip

    # -- offline: a list of requests -----------------------------------------------------------
    def decode_all(self, reqs, options: DecodeOptions | None = None, on_done=None) -> list:
        """Decode ``reqs`` with up to ``max_batch`` in flight; their results in order.
        ``on_done(i, result)`` as each finishes. The first failure is raised after the rest."""
        reqs = list(reqs)
        seqs: list[Sequence | None] = [None] * len(reqs)
        nxt, reported = 0, set()
        while nxt < len(reqs) or self.busy:
            while nxt < len(reqs) and len(self.waiting) + len(self.active) < self.limits.max_batch:
                seqs[nxt] = self.submit(reqs[nxt], options)
                nxt += 1
            self.step()
            for i, seq in enumerate(seqs[:nxt]):
                if i not in reported and seq.finished:
                    reported.add(i)
                    if on_done is not None and seq.error is None:
                        on_done(i, seq.result)
        return [seq.wait() for seq in seqs]

    # -- a worker thread (the service) ---------------------------------------------------------
    def start(self, guard=None) -> None:
        """Run passes on a daemon thread of its own while there is work (idempotent); each pass
        inside ``with guard:`` when given (the service's device lock)."""
        if self._thread is None:
            self._guard = guard
            self._thread = threading.Thread(target=self._serve, name="llmqp-scheduler",
                                            daemon=True)  # fmt: skip
            self._thread.start()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _serve(self) -> None:
        while True:
            with self._lock:
                while not self.busy and not self._closed:
                    self._lock.wait()
                if self._closed:
                    return
            if self._guard is None:
                self.step()
            else:
                with self._guard:
                    self.step()
