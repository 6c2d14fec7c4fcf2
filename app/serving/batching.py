"""The endpoint's continuous batching: concurrent ``/v1/chat/completions`` and ``/v1/completions``
decodes of the served session share body passes (:class:`app.engine.scheduler.Scheduler`).

One worker thread runs the passes, taking the device lock for each pass (so a measurement waits
at most one pass, and decodes wait for a running measurement). A request is queued without
holding a thread: the handler awaits a future the scheduler completes. Per request:

* its :class:`~app.serving.decoding.DecodeControl` is asked at every step boundary — a client
  that has left frees its slot at the next pass ("cancelled"), a running decode ends at its
  deadline with the tokens so far ("deadline"), and the deadline's clock starts when the request
  joins the batch;
* a request still queued at its queue deadline leaves with :class:`~app.measure.jobs.Busy` (503);
* a full queue is :class:`~app.engine.batch_limits.Full` (429, ``Retry-After``).

Every request's tokens are its solo decode's (the scheduler is exact whoever shares a pass).
"""

from __future__ import annotations

import asyncio
import time

from ..engine.batch_limits import Full
from ..measure.jobs import Busy
from .decoding import Cancelled, DecodeControl, decode_options

__all__ = ["BatchedDecoder", "Full", "can_batch"]

#: The stop reason of a request that waited past its queue deadline.
_QUEUE_TIMEOUT = "queue-timeout"


def can_batch(engine) -> bool:
    """Whether ``engine`` (what the service serves) is a session the scheduler can drive."""
    return hasattr(engine, "engine") and hasattr(engine, "policy") and hasattr(engine, "decode")


class BatchedDecoder:
    """A :class:`~app.engine.scheduler.Scheduler` over ``session`` whose passes hold
    ``device_lock`` (a :class:`~app.measure.jobs.FairLock`), under ``limits``
    (:class:`~app.engine.batch_limits.BatchLimits`)."""

    def __init__(self, session, device_lock, limits=None):
        from app.engine.scheduler import Scheduler

        self.scheduler = Scheduler(session, limits)
        self.scheduler.start(guard=device_lock)

    @property
    def limits(self):
        return self.scheduler.limits

    def stats(self) -> dict:
        s = self.scheduler
        return {"running": len(s.active), "waiting": len(s.waiting), "passes": s.passes,
                "kv_reserved_bytes": s.kv_reserved, **s.limits.to_dict()}  # fmt: skip

    # -- a request -----------------------------------------------------------------------------
    def submit(self, request, plan: str, router, on_step, deadline: float,
               control: DecodeControl, on_done):  # fmt: skip
        """Queue ``request`` (blocking: it tokenizes and compiles the grammar; call it on a
        worker thread). ``deadline`` is the ``time.monotonic()`` by which it must have joined
        the batch; ``on_done(sequence)`` runs on the scheduler's thread. Raises ``ValueError``
        (a bad request) or ``Full``."""

        def should_stop():
            if control.started is None:  # still queued
                if control.cancelled:
                    return "cancelled"
                return _QUEUE_TIMEOUT if time.monotonic() > deadline else None
            return control.should_stop()

        return self.scheduler.submit(request, decode_options(plan, router), on_step,
                                     should_stop, control.start, on_done)  # fmt: skip

    async def decode(self, request, plan: str, router, on_step, deadline: float,
                     control: DecodeControl, pool=None):  # fmt: skip
        """Decode ``request`` in the shared batch and return its result; :class:`Cancelled` once
        its client has left, :class:`Busy` if it could not join before ``deadline``. ``pool``:
        the executor that runs the (blocking) submission."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def on_done(seq):
            loop.call_soon_threadsafe(lambda: done.done() or done.set_result(seq))

        await loop.run_in_executor(pool, self.submit, request, plan, router, on_step, deadline,
                                   control, on_done)  # fmt: skip
        seq = await done
        result = seq.wait(0)
        if result.stop == "cancelled":
            raise Cancelled()
        if result.stop == _QUEUE_TIMEOUT:
            raise Busy("The decode queue did not reach this request before its deadline; "
                       "retry later.")  # fmt: skip
        return result

    def close(self) -> None:
        self.scheduler.close()
