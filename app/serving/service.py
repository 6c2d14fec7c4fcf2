"""The measurement backend's HTTP JSON service, on Tornado.

Endpoints (see docs/backend.md for examples):

* ``GET  /v1/device``            device, library versions, peak figures, timing, limits
* ``POST /v1/sweeps/head``       dense vs sparse head over K (``"async": true`` -> a job)
* ``POST /v1/sweeps/amortized``  full step vs amortized step (and rerank) over context
* ``GET  /v1/jobs/<id>``         a job's status and progress; its answer once done
* ``GET  /v1/progress``          the running (else the last) job's progress, the queue length
* ``GET  /v1/results``           stored results, filtered by query string (``?plan=...&d=...``)
* ``GET  /v1/calibration``       the calibrated profile and the model's error per plan
* ``GET  /v1/models``, ``POST /v1/chat/completions``, ``POST /v1/completions``: the
  OpenAI-compatible decoding endpoint (:mod:`app.serving.openai_api`)

Errors are JSON ``{"error": "..."}``: 400 bad parameter (naming it, its value and the allowed
range or limit) or malformed request, 403 a Host or Origin not allowed, 404 unknown path or job,
405 wrong method, 409 nothing to calibrate yet, 411 no Content-Length, 413 body too large, 415
not ``application/json``, 431 request head too large, 503 device busy, queue or connections full
(with ``Retry-After``), 500 a bug (the server keeps serving). Binds to 127.0.0.1 unless told
otherwise. Blocking work (measuring, decoding, reading the store) runs on worker threads, so the
event loop keeps answering while the device measures.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import tornado.web
from tornado.netutil import bind_sockets

from ..measure.calibration import Calibration
from ..measure.jobs import Busy, JobManager
from ..measure.kernels import available_impls, peak_figures
from ..measure.limits import Limits
from ..measure.store import INT_FIELDS, Point
from ..measure.sweeps import AmortizedSweep, HeadSweep
from ..model.validate import check_int
from .guard import AccessPolicy, GuardedHTTPServer
from .http_base import ApiError, JsonHandler, PostHandler

__all__ = ["BackendServer", "API_VERSION", "ApiError", "create_server", "JsonHandler"]

API_VERSION = 1
log = logging.getLogger(__name__)
_FILTERS = tuple(Point.__dataclass_fields__)
#: SQLite stores integers as signed 64-bit.
_SQLITE_MAX = 2**63 - 1


class Index(JsonHandler):
    def get(self) -> None:
        self.send_json(200, {
            "service": "llmqp measurement backend",
            "api": API_VERSION,
            "endpoints": [
                "GET /v1/device", "POST /v1/sweeps/head", "POST /v1/sweeps/amortized",
                "GET /v1/jobs/<id>", "GET /v1/progress", "GET /v1/results",
                "GET /v1/calibration", "GET /v1/models", "POST /v1/chat/completions",
                "POST /v1/completions",
            ],
        })  # fmt: skip


class Device(JsonHandler):
    def get(self) -> None:
        r = self.server.runner
        self.send_json(200, {
            **r.info,
            "api": API_VERSION,
            "device_key": r.device_key,
            "peak": peak_figures(r.kernels.device, r.kernels.device_name),
            "timing": r.timing.to_dict(),
            "limits": self.server.limits.to_dict(),
            "impls": {k: v is None for k, v in available_impls().items()},
        })  # fmt: skip


class Progress(JsonHandler):
    def get(self) -> None:
        self.send_json(200, self.server.manager.progress())


class JobStatus(JsonHandler):
    def get(self, job_id: str) -> None:
        job = self.server.manager.get(job_id)
        if job is None:
            raise ApiError(
                404, f"No job {job_id[:80]!r} (finished jobs are kept for a while only)."
            )
        self.send_json(200, job.to_dict(result=job.status == "done"))


class Results(JsonHandler):
    async def get(self) -> None:
        filters, limit = {}, 10_000
        for name, values in self.request.query_arguments.items():
            value = values[-1].decode("utf-8", "replace")
            try:
                if name == "limit":
                    limit = check_int("limit", _int(value), 1, 100_000)
                elif name not in _FILTERS:
                    raise ValueError(
                        f"Unknown filter {name[:40]!r}; allowed: {', '.join(_FILTERS)}, limit."
                    )
                elif name in INT_FIELDS:
                    filters[name] = check_int(name, _int(value), 0, _SQLITE_MAX)
                else:
                    filters[name] = value
            except ValueError as exc:
                raise ApiError(400, str(exc)) from None
        store = self.server.runner.store
        rows = await self.blocking(lambda: store.query(limit=limit, **filters))
        self.send_json(200, {"count": len(rows), "results": rows})


class CalibrationHandler(JsonHandler):
    async def get(self) -> None:
        r = self.server.runner
        cal = await self.blocking(r.calibration)
        if not isinstance(cal, Calibration):
            raise ApiError(409, f"Nothing to calibrate yet: {cal}")
        self.send_json(200, {"device_key": r.device_key, "cache": r.timing.cache, **cal.to_dict()})


class Sweep(PostHandler):
    async def post(self, kind: str) -> None:
        cls = HeadSweep if kind == "head" else AmortizedSweep
        body = self.read_json()
        if not isinstance(body, dict):
            raise ApiError(400, "The request body must be a JSON object.")
        run_async = body.pop("async", False)
        if not isinstance(run_async, bool):
            raise ApiError(400, f"The 'async' parameter must be true or false. Got {run_async!r}.")
        server = self.server
        try:
            sweep = cls.parse(body, server.runner.kernels.dtypes, server.limits)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        manager = server.manager
        try:
            if run_async:
                job = await self.blocking(manager.submit, sweep)
                return self.send_json(202, job.to_dict(result=job.status == "done"))
            with server.device_waiter():
                answer = await self.blocking(manager.run_sync, sweep, pool="device")
        except Busy as exc:
            raise ApiError(503, str(exc), {"Retry-After": "1"}) from None
        self.send_json(200, answer)


def _int(text: str):
    if len(text) > 40 or not text.lstrip("-").isdigit() or not text.isascii():
        return text  # check_int names it in the error
    return int(text)


class _QuietApplication(tornado.web.Application):
    def log_request(self, handler) -> None:  # the access log at debug level only
        log.debug("%d %s %.1fms", handler.get_status(), handler._request_summary(),
                  1000.0 * handler.request.request_time())  # fmt: skip


class BackendServer:
    """One device, one store, one Tornado application, bound before it serves.

    ``serve_forever()`` runs the event loop in the calling thread until :meth:`shutdown`;
    :meth:`close` also stops the job worker and closes the store. ``engine`` is the decoding
    engine (an object with ``decode``, ``info``; see :mod:`app.serving.decoding`), a callable
    that loads one on first use, or ``None`` for no decoding.
    """

    def __init__(self, sockets, manager: JobManager, limits: Limits, policy: AccessPolicy,
                 engine=None, max_device_waiters: int = 64, batch_limits=None):  # fmt: skip
        from .budget import DecodeBudget
        from .decoding import EngineSlot
        from .openai_api import UnknownPath
        from .openai_api import routes as openai_routes

        self.sockets, self.manager, self.runner = sockets, manager, manager.runner
        self.limits, self.policy = limits, policy
        self.engine = EngineSlot(engine)
        self.budget = DecodeBudget()  # the engine's measured rates: what a decode will cost
        self.pools = {
            "io": ThreadPoolExecutor(4, thread_name_prefix="llmqp-io"),
            "device": ThreadPoolExecutor(4, thread_name_prefix="llmqp-device"),
        }
        self.max_device_waiters = int(max_device_waiters)
        self.batch_limits = batch_limits  # None: the scheduler's defaults
        self._batcher = None
        self._batcher_lock = threading.Lock()
        self._waiting = 0
        kw = {"server": self}
        self.app = _QuietApplication(
            [
                (r"/", Index, kw),
                (r"/v1/device/?", Device, kw),
                (r"/v1/progress/?", Progress, kw),
                (r"/v1/results/?", Results, kw),
                (r"/v1/calibration/?", CalibrationHandler, kw),
                (r"/v1/sweeps/(head|amortized)/?", Sweep, kw),
                (r"/v1/jobs/([^/]+)/?", JobStatus, kw),
                *openai_routes(kw),
            ],
            default_handler_class=UnknownPath,
            default_handler_args=kw,
            compress_response=False,
            xsrf_cookies=False,  # no cookies at all: Origin, Host and the JSON type guard POSTs
        )
        self._loop = None
        self._stop = None
        self._stopped = threading.Event()
        self._closed = False

    @property
    def address(self) -> tuple:
        return self.sockets[0].getsockname()[:2]

    @property
    def url(self) -> str:
        host, port = self.address
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}"

    class _Waiter:
        def __init__(self, server):
            self.server = server

        def __enter__(self):
            s = self.server
            if s._waiting >= s.max_device_waiters:
                raise Busy(f"{s._waiting} requests already wait for the device; retry later.")
            s._waiting += 1

        def __exit__(self, *exc):
            self.server._waiting -= 1

    def batcher(self, engine):
        """The continuous-batching decoder of ``engine`` (:mod:`app.serving.batching`), started
        on first use; None where the served engine is not a session the scheduler can drive."""
        from .batching import BatchedDecoder, can_batch

        if self._batcher is None and can_batch(engine):
            with self._batcher_lock:
                if self._batcher is None and not self._closed:
                    self._batcher = BatchedDecoder(engine, self.manager.device_lock,
                                                   self.batch_limits)  # fmt: skip
        return self._batcher if can_batch(engine) else None

    def device_waiter(self):
        """Counts requests waiting for the device (event-loop thread only); Busy beyond the cap."""
        return self._Waiter(self)

    async def _serve(self) -> None:
        lim = self.limits
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        http = GuardedHTTPServer(
            self.app,
            max_connections=lim.max_connections,
            idle_connection_timeout=lim.header_timeout_s,
            body_timeout=lim.body_timeout_s + 5.0,  # a backstop: handlers answer 408 first
            max_body_size=lim.max_body_bytes,
            max_header_size=lim.max_header_bytes,
        )
        http.add_sockets(self.sockets)
        self.http = http
        try:
            await self._stop.wait()
        finally:
            http.stop()
            try:
                await asyncio.wait_for(http.close_all_connections(), 2.0)
            except (asyncio.TimeoutError, Exception):  # closing anyway
                pass

    def serve_forever(self) -> None:
        """Serve on this thread until :meth:`shutdown` (or Ctrl-C: KeyboardInterrupt)."""
        self._stopped.clear()
        try:
            asyncio.run(self._serve())
        finally:
            self._stopped.set()

    def shutdown(self, timeout: float = 5.0) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:  # loop already gone
                return
            self._stopped.wait(timeout)

    def close(self) -> None:
        """Stop serving, stop the worker, close the store."""
        if self._closed:
            return
        self._closed = True
        self.shutdown()
        for sock in self.sockets:
            sock.close()
        if self._batcher is not None:
            self._batcher.close()
        self.manager.close()
        for pool in self.pools.values():
            pool.shutdown(wait=False, cancel_futures=True)
        self.runner.store.close()


def create_server(
    host: str = "127.0.0.1",
    port: int = 0,
    db=None,
    *,
    device: str = "cpu",
    impl: str | None = None,
    timing=None,
    limits: Limits | None = None,
    busy_timeout: float = 2.0,
    threads: int | None = None,
    allow_hosts=(),
    allow_origins=None,
    engine=None,
    fresh: bool = False,
    batch_limits=None,
) -> BackendServer:
    """A ready (bound, not yet serving) backend: kernels, store (``db`` path, ``None`` in
    memory; checked, see :class:`app.measure.store.ResultStore`), runner and job manager.
    ``impl`` defaults to numpy on the CPU and torch on CUDA; ``threads`` limits the numpy
    backend's BLAS threads; ``allow_hosts``/``allow_origins`` extend the access policy
    (:meth:`AccessPolicy.for_address`); ``engine`` enables decoding; ``fresh`` moves an
    existing ``db`` aside (kept, renamed) and starts an empty one; ``batch_limits``
    (:class:`app.engine.batch_limits.BatchLimits`, default its defaults) bound the decodes that
    share body passes."""
    from ..measure.kernels import get_kernels
    from ..measure.kernels_numpy import set_blas_threads
    from ..measure.store import ResultStore
    from ..measure.sweeps import Runner

    impl = impl or ("torch" if device == "cuda" else "numpy")
    kernels = get_kernels(impl, device)
    if threads is not None:
        set_blas_threads(threads)
    limits = limits or Limits()
    sockets = bind_sockets(port, host, backlog=128)
    try:
        store = ResultStore.open(":memory:" if db is None else db, fresh=fresh)
    except BaseException:
        for s in sockets:
            s.close()
        raise
    runner = Runner(kernels, store, timing)
    manager = JobManager(runner, busy_timeout=busy_timeout)
    bound_port = sockets[0].getsockname()[1]
    policy = AccessPolicy.for_address(host, bound_port, allow_hosts, allow_origins)
    return BackendServer(sockets, manager, limits, policy, engine=engine,
                         batch_limits=batch_limits)  # fmt: skip
