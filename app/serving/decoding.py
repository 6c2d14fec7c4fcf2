"""The decoding engine inside the service: loaded once, run one request at a time on the device.

:class:`EngineSlot` holds the engine (an ``app.engine.engine.Engine``, served through one
``Session`` so its routers stay warm across requests, or any object with the same
``decode``/``info``/``tokenizer``/``context``), or a loader called once on first use, or
nothing (decoding off). :func:`run_decode` takes the device lock that sweeps take, so a decode
waits for a measurement and the other way round; it gives up at a deadline (:class:`Busy`).

:class:`DecodeControl` is one request's stop flags, set on the event loop and read on the device
thread: ``cancel()`` when the client leaves (a queued request then leaves the queue, a running
one stops at its next step boundary or prefill chunk: :class:`Cancelled`), and the wall-clock
deadline of a running decode (it ends there with the tokens so far, ``stop`` "deadline"). The
engine asks ``should_stop()`` between steps, so a batching scheduler can ask the same flag per
sequence at each pass.
"""

from __future__ import annotations

import inspect
import threading
import time

from ..measure.jobs import Busy

__all__ = ["EngineSlot", "EngineUnavailable", "Cancelled", "DecodeControl", "run_decode",
           "engine_loader", "plan_choices", "router_choices", "decode_options"]  # fmt: skip


class EngineUnavailable(RuntimeError):
    """No engine here: decoding is off, or the model could not be loaded (the message says)."""


class Cancelled(Exception):
    """The decode stopped (or never started) because its client left."""


class DecodeControl:
    """A request's stop flags: ``cancel()`` (any thread) and a running decode's ``limit_s``."""

    def __init__(self, limit_s: float = float("inf")):
        self.limit_s = float(limit_s)
        self.cancelled = False
        self.started: float | None = None  # time.monotonic() when the device was granted

    def cancel(self) -> None:
        self.cancelled = True

    def start(self) -> None:
        self.started = time.monotonic()

    def should_stop(self) -> str | None:
        """ "cancelled", "deadline" or None: the engine asks at every step boundary."""
        if self.cancelled:
            return "cancelled"
        if self.started is not None and time.monotonic() - self.started > self.limit_s:
            return "deadline"
        return None


def engine_loader(model: str | None = None, device: str = "cpu"):
    """A loader for :class:`EngineSlot`: ``Engine.load(model, device)``'s session on first use."""

    def load():
        from app.engine.engine import Engine

        return Engine.load(model, device=device).session()

    return load


class EngineSlot:
    """The engine, loaded at most once (a failed load is remembered and reported)."""

    def __init__(self, engine=None):
        self._lock = threading.Lock()
        self._engine = self._loader = None
        self._error = None
        if callable(engine) and not hasattr(engine, "decode"):
            self._loader = engine
        else:  # a loaded Engine is served through one session (warm routers, the amortizer)
            self._engine = engine.session() if hasattr(engine, "session") else engine

    @property
    def enabled(self) -> bool:
        return self._engine is not None or self._loader is not None

    @property
    def loaded(self):
        return self._engine

    def get(self):
        """The engine, loading it now if needed; :class:`EngineUnavailable` otherwise."""
        if self._engine is not None:
            return self._engine
        with self._lock:
            if self._engine is None:
                if self._error is None and self._loader is None:
                    self._error = "decoding is off in this service (started without a model)"
                if self._error is None:
                    try:
                        self._engine = self._loader()
                    except (ValueError, OSError, ImportError) as exc:
                        self._error = f"the model could not be loaded: {exc}"
                if self._engine is None:
                    raise EngineUnavailable(self._error)
        return self._engine


def plan_choices() -> tuple:
    """Plan names the engine accepts (``plan=``)."""
    try:
        from app.engine.plans import PLAN_CHOICES
    except ImportError:
        return ("auto",)
    return tuple(PLAN_CHOICES)


def router_choices(engine=None) -> tuple:
    """Router names the engine offers (``plan="router"``; ``engine`` is not consulted)."""
    try:
        from app.engine.routing import ROUTER_CHOICES
    except ImportError:
        return ()
    return tuple(ROUTER_CHOICES)


def decode_options(plan: str, router: str | None = None):
    """The engine's ``DecodeOptions`` for a request; ``ValueError`` naming the parameter."""
    from app.engine.options import DecodeOptions

    return DecodeOptions(plan=plan, router=router)


def _takes_should_stop(engine) -> bool:
    try:
        params = inspect.signature(engine.decode).parameters
    except (TypeError, ValueError):
        return False
    return "should_stop" in params or any(p.kind == p.VAR_KEYWORD for p in params.values())


def run_decode(manager, engine, request, plan: str, on_step, deadline: float, router=None,
               control: DecodeControl | None = None):  # fmt: skip
    """Decode ``request`` holding the device lock (waiting until ``deadline``, a
    ``time.monotonic()`` value, else :class:`Busy`; :class:`Cancelled` once ``control`` is
    cancelled, queued or running). Blocking: call it on a worker thread."""
    control = control or DecodeControl()
    wait = deadline - time.monotonic()
    got = wait > 0 and manager.device_lock.acquire(timeout=wait, abandon=lambda: control.cancelled)
    if not got:
        if control.cancelled:
            raise Cancelled()
        raise Busy("The device is busy (measuring or decoding) past this request's deadline; "
                   "retry later.")  # fmt: skip
    try:
        control.start()

        def step(s):  # engines without should_stop still stop at the next token
            if control.cancelled:
                raise Cancelled()
            if on_step is not None:
                on_step(s)

        kwargs = {"on_step": step}
        if _takes_should_stop(engine):
            kwargs["should_stop"] = control.should_stop
        result = engine.decode(request, decode_options(plan, router), **kwargs)
    finally:
        manager.device_lock.release()
    if result.stop == "cancelled":
        raise Cancelled()
    return result
