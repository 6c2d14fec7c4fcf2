"""Offline batches (``llmqp decode --requests FILE --batch N``): a request file decoded with N
sequences in flight through the :class:`~app.engine.scheduler.Scheduler`, results written in the
file's order as soon as every earlier one is done, a progress bar on stderr. Each request's
tokens are those of ``--batch 1`` (the scheduler is exact whoever shares a pass)."""

from __future__ import annotations

import sys
import time

from ..model.validate import check_int
from .batch_limits import BatchLimits
from .scheduler import Scheduler

__all__ = ["MAX_BATCH", "check_batch", "decode_file"]

MAX_BATCH = 256


def check_batch(value) -> int:
    """``--batch``: an integer in [1, MAX_BATCH]; ``ValueError`` naming it otherwise."""
    return check_int("batch", value, 1, MAX_BATCH)


class _Progress:
    """One line on ``stream``, rewritten in place: requests done, tokens, tokens/s."""

    def __init__(self, total: int, stream=None, show: bool = True):
        self.total, self.stream, self.show = total, stream or sys.stderr, show
        self.done = self.tokens = 0
        self.t0 = time.perf_counter()

    def update(self, result) -> None:
        self.done += 1
        self.tokens += len(result.tokens)
        if not self.show:
            return
        width = 24
        fill = width * self.done // max(self.total, 1)
        rate = self.tokens / max(time.perf_counter() - self.t0, 1e-9)
        end = "\n" if self.done == self.total else ""
        print(f"\r  [{'#' * fill}{'.' * (width - fill)}] {self.done}/{self.total} requests, "
              f"{self.tokens} tokens, {rate:.1f} tokens/s", end=end, file=self.stream,
              flush=True)  # fmt: skip


def decode_file(session, requests, options, batch: int, emit, show: bool = True) -> list:
    """Decode ``requests`` with ``batch`` in flight under ``options``; ``emit(result)`` is called
    in the requests' order. Returns the results (in order)."""
    batch = check_batch(batch)
    sched = Scheduler(session, BatchLimits(max_batch=batch, max_tokens=max(256, 16 * batch)))
    progress = _Progress(len(requests), show=show)
    ready: dict[int, object] = {}
    next_out = [0]

    def on_done(i, result):
        progress.update(result)
        ready[i] = result
        while next_out[0] in ready:
            emit(ready.pop(next_out[0]))
            next_out[0] += 1

    return sched.decode_all(requests, options, on_done=on_done)
