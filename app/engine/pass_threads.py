"""How many q-kernel threads a scheduler's body pass uses: chosen by measurement, as it runs.

A second thread pays only when the second core is free: on this 2-core machine a 32-row pass
measured 1.2x faster on two threads when it was quiet and 0.85x when another process kept a core
busy (docs/results.md, "Continuous batching"). So the choice is measured online: for passes of at
least ``min_rows`` rows, keep a moving average of the seconds per row on each thread count, run
the faster one, and try the other every ``explore_every``-th large pass (deterministic: no
randomness), so a change of load is noticed within a few passes. Smaller passes run on one thread
(a thread's start costs more than it saves there).

Exactness: the kernel gives every output the same bits on any number of threads
(:mod:`app.engine.qkernel`), so this choice changes time only.
"""

from __future__ import annotations

import contextlib

from . import qkernel

__all__ = ["ThreadChooser", "kernel_threads"]


class ThreadChooser:
    """``choose(rows)`` -> threads for a pass of ``rows`` rows; ``record(threads, rows, s)``
    after it ran. ``fixed`` (1 …): always that count for large passes (no measuring)."""

    def __init__(self, candidates=(1, 2), min_rows: int = 32, explore_every: int = 8,
                 fixed: int | None = None, weight: float = 0.3):  # fmt: skip
        if not candidates or any(int(c) < 1 for c in candidates):
            raise ValueError(f"The 'candidates' parameter must be thread counts >= 1. "
                             f"Got {candidates!r}.")  # fmt: skip
        if fixed is not None and int(fixed) < 1:
            raise ValueError(f"The 'fixed' parameter must be >= 1 or None. Got {fixed!r}.")
        self.candidates = tuple(int(c) for c in candidates)
        self.min_rows, self.explore_every, self.weight = min_rows, explore_every, weight
        self.fixed = None if fixed is None else int(fixed)
        self.per_row: dict[int, float] = {}  # threads -> moving average of seconds per row
        self.large = 0  # large passes so far
        self.runs = {c: 0 for c in self.candidates}

    def choose(self, rows: int) -> int:
        if rows < self.min_rows:
            return 1
        if self.fixed is not None:
            return self.fixed
        self.large += 1
        untried = [c for c in self.candidates if c not in self.per_row]
        if untried:
            return untried[0]
        best = min(self.candidates, key=lambda c: self.per_row[c])
        if self.large % self.explore_every == 0:  # look at the other count again
            others = [c for c in self.candidates if c != best]
            return others[(self.large // self.explore_every) % len(others)] if others else best
        return best

    def record(self, threads: int, rows: int, seconds: float) -> None:
        if rows < self.min_rows or self.fixed is not None or threads not in self.runs:
            return
        self.runs[threads] += 1
        x = seconds / rows
        old = self.per_row.get(threads)
        self.per_row[threads] = x if old is None else (1 - self.weight) * old + self.weight * x

    def stats(self) -> dict:
        ms = {str(c): round(1e3 * v, 3) for c, v in self.per_row.items()}
        return {"fixed": self.fixed, "min_rows": self.min_rows, "large_passes": self.large,
                "runs": {str(c): n for c, n in self.runs.items()}, "ms_per_row": ms}  # fmt: skip


@contextlib.contextmanager
def kernel_threads(n: int):
    """The q kernel on ``n`` threads within the block, the old count restored after (the
    scheduler's thread is the only one decoding while a pass runs)."""
    old = qkernel.set_threads(n)
    try:
        yield
    finally:
        qkernel.set_threads(old)
