"""One measurement at a time on the device: a lock, a job queue, and pollable progress.

Synchronous requests take the device lock themselves, waiting at most ``busy_timeout`` seconds
(then :class:`Busy`); asynchronous ones become jobs that one worker thread runs in order (a full
queue is :class:`Busy` too). A sweep whose points are all stored needs no device and never
waits. Every sweep that measures is a job, so ``progress()`` shows it whichever way it came.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
import uuid
from collections import OrderedDict

from .sweeps import HeadSweep, Runner

__all__ = ["Busy", "Job", "JobManager", "FairLock"]


class FairLock:
    """A lock granted in arrival order (``threading.Lock`` is not), so a request that waits for
    the device is served before later ones; ``acquire(timeout=...)`` gives up at the timeout,
    and ``acquire(abandon=f)`` as soon as ``f()`` is true (checked every ``POLL_S``: a waiter
    whose client has left leaves the queue)."""

    POLL_S = 0.05

    def __init__(self):
        self._cond = threading.Condition(threading.Lock())
        self._tickets = itertools.count()
        self._queue: list = []
        self._held = False

    def acquire(self, blocking: bool = True, timeout: float = -1, abandon=None) -> bool:
        with self._cond:
            ticket = next(self._tickets)
            self._queue.append(ticket)
            deadline = None if timeout is None or timeout < 0 else time.monotonic() + timeout
            got = False
            try:
                while self._held or self._queue[0] != ticket:
                    if not blocking:
                        return False
                    left = None if deadline is None else deadline - time.monotonic()
                    if (left is not None and left <= 0) or (abandon is not None and abandon()):
                        return False
                    if abandon is not None:
                        left = self.POLL_S if left is None else min(left, self.POLL_S)
                    self._cond.wait(left)
                self._held = got = True
                return True
            finally:
                self._queue.remove(ticket)
                if not got:  # the next in line may be free to go now
                    self._cond.notify_all()

    def release(self) -> None:
        with self._cond:
            self._held = False
            self._cond.notify_all()

    def locked(self) -> bool:
        return self._held

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()


class Busy(RuntimeError):
    """The device is measuring something else (or the queue is full); retry later."""


class Job:
    """A sweep's life: ``queued`` -> ``running`` -> ``done`` | ``failed``; ``done``/``total``
    count points (stored ones included), ``current`` is the point last finished."""

    _ids = itertools.count(1)

    def __init__(self, sweep):
        self.id = f"{next(self._ids)}-{uuid.uuid4().hex[:8]}"
        self.kind = "head" if isinstance(sweep, HeadSweep) else "amortized"
        self.sweep = sweep
        self.status = "queued"
        self.done = 0
        self.total = 0
        self.current = None
        self.result = None
        self.error = None
        self.created = time.time()
        self.started = self.finished = None
        self.finished_event = threading.Event()

    def on_point(self, done, total, point, reused) -> None:
        self.done, self.total = done, total
        self.current = {
            "plan": point.plan,
            "k": point.k,
            "context": point.context,
            "reused": reused,
        }

    def to_dict(self, result: bool = False) -> dict:
        now = time.time()
        out = {
            "job": self.id,
            "poll": f"/v1/jobs/{self.id}",
            "kind": self.kind,
            "status": self.status,
            "done": self.done,
            "total": self.total,
            "current": self.current,
            "error": self.error,
            "elapsed_s": (self.finished or now) - (self.started or now),
        }
        if result:
            out["result"] = self.result
        return out


class JobManager:
    """Serialises measurements of one :class:`Runner`.

    ``busy_timeout``: how long a synchronous sweep waits for the device; ``max_queue``: pending
    asynchronous jobs; ``keep``: finished jobs remembered for polling.
    """

    def __init__(self, runner: Runner, busy_timeout=2.0, max_queue=64, keep=64):
        self.runner = runner
        self.busy_timeout = float(busy_timeout)
        self.device_lock = FairLock()
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._jobs: OrderedDict = OrderedDict()
        self._jobs_lock = threading.Lock()
        self._keep = keep
        self._running: Job | None = None
        self._last: Job | None = None
        self._worker = threading.Thread(target=self._work, name="llmqp-backend-worker", daemon=True)
        self._worker.start()

    # -- bookkeeping ------------------------------------------------------------------------
    def _remember(self, job: Job) -> None:
        with self._jobs_lock:
            self._jobs[job.id] = job
            while len(self._jobs) > self._keep:
                oldest = next(iter(self._jobs))
                if self._jobs[oldest].status in ("queued", "running"):
                    break
                self._jobs.popitem(last=False)

    def get(self, job_id: str) -> Job | None:
        with self._jobs_lock:
            return self._jobs.get(job_id)

    def progress(self) -> dict:
        """The running job (else the last one) at top level, plus the queue length."""
        job = self._running or self._last
        base = job.to_dict() if job else {"job": None, "status": "idle", "done": 0, "total": 0}
        base["running"] = self._running is not None
        base["queued"] = self._queue.qsize()
        return base

    # -- running ----------------------------------------------------------------------------
    def _execute(self, job: Job) -> None:
        """Run ``job`` (the caller holds the device lock)."""
        job.status, job.started = "running", time.time()
        job.total = len(self.runner.points(job.sweep))
        self._running = job
        try:
            job.result = self.runner.run(job.sweep, job.on_point)
            job.status = "done"
        except Exception as exc:  # reported to the client; the server keeps serving
            job.status, job.error = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            job.finished = time.time()
            self._running, self._last = None, job
            job.finished_event.set()

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            with self.device_lock:
                self._execute(job)

    def submit(self, sweep) -> Job:
        """Queue ``sweep`` as an asynchronous job (answered at once if already stored)."""
        job = Job(sweep)
        self._remember(job)
        if not self.runner.missing(sweep):  # all stored: no device needed
            job.started = time.time()
            job.result = self.runner.result(sweep)
            job.total = job.done = len(self.runner.points(sweep))
            job.status, job.finished = "done", time.time()
            job.finished_event.set()
            return job
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            job.status, job.error = "failed", "queue full"
            raise Busy(
                f"The measurement queue is full ({self._queue.maxsize} jobs); retry later."
            ) from None
        return job

    def run_sync(self, sweep) -> dict:
        """Measure ``sweep`` now and return its answer, or raise :class:`Busy`."""
        if not self.runner.missing(sweep):
            return self.runner.result(sweep)
        if not self.device_lock.acquire(timeout=self.busy_timeout):
            running = self._running.to_dict() if self._running else None
            raise Busy(
                f"The device is busy with another sweep (waited {self.busy_timeout:g} s): "
                f'{_describe(running)}; retry later, or submit with "async": true and poll '
                "/v1/jobs/<id>."
            )
        job = Job(sweep)
        self._remember(job)
        try:
            self._execute(job)
        finally:
            self.device_lock.release()
        if job.status == "failed":
            raise RuntimeError(job.error)
        return job.result

    def close(self) -> None:
        """Stop the worker after the job in hand (queued jobs are dropped)."""
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._queue.put(None)
        self._worker.join(timeout=5.0)


def _describe(job) -> str:
    if not job:
        return "another request"
    return f"job {job['job']} ({job['kind']}, {job['done']}/{job['total']} points)"
