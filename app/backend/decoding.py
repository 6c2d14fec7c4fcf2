"""The decoding engine inside the service: loaded once, run one request at a time on the device.

:class:`EngineSlot` holds the engine (an ``app.engine.engine.Engine``, served through one
``Session`` so its routers stay warm across requests, or any object with the same
``decode``/``info``/``tokenizer``/``context``), or a loader called once on first use, or
nothing (decoding off). :func:`run_decode` takes the device lock that sweeps take, so a decode
waits for a measurement and the other way round; it gives up at a deadline (:class:`Busy`).
``on_step`` may raise :class:`Cancelled` to stop a decode whose client has left.
"""

from __future__ import annotations

import threading
import time

from .jobs import Busy

__all__ = ["EngineSlot", "EngineUnavailable", "Cancelled", "run_decode", "engine_loader",
           "plan_choices", "router_choices", "decode_options"]  # fmt: skip


class EngineUnavailable(RuntimeError):
    """No engine here: decoding is off, or the model could not be loaded (the message says)."""


class Cancelled(Exception):
    """Raised from ``on_step`` to stop a decode (its client left)."""


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


def run_decode(manager, engine, request, plan: str, on_step, deadline: float, router=None):
    """Decode ``request`` holding the device lock (waiting until ``deadline``, a
    ``time.monotonic()`` value, else :class:`Busy`). Blocking: call it on a worker thread."""
    wait = deadline - time.monotonic()
    if wait <= 0 or not manager.device_lock.acquire(timeout=wait):
        raise Busy("The device is busy (measuring or decoding) past this request's deadline; "
                   "retry later.")  # fmt: skip
    try:
        return engine.decode(request, decode_options(plan, router), on_step=on_step)
    finally:
        manager.device_lock.release()
