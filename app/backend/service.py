"""The measurement backend's HTTP JSON service (standard library ``http.server`` only).

Endpoints (see docs/backend.md for examples):

* ``GET  /v1/device``            device, library versions, peak figures, timing, limits
* ``POST /v1/sweeps/head``       dense vs sparse head over K (``"async": true`` -> a job)
* ``POST /v1/sweeps/amortized``  full step vs amortized step (and rerank) over context
* ``GET  /v1/jobs/<id>``         a job's status and progress; its answer once done
* ``GET  /v1/progress``          the running (else the last) job's progress, the queue length
* ``GET  /v1/results``           stored results, filtered by query string (``?plan=...&d=...``)
* ``GET  /v1/calibration``       the calibrated profile and the model's error per plan

Errors are JSON ``{"error": "..."}``: 400 bad parameter (naming it, its value and the allowed
range or limit), 404 unknown path or job, 405 wrong method, 409 nothing to calibrate yet, 411 no
Content-Length, 413 body too large, 503 device busy or queue full (with ``Retry-After``), 500 a
bug (the server keeps serving). Binds to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from ..model.validate import check_int
from .calibration import Calibration
from .jobs import Busy, JobManager
from .kernels import available_impls, peak_figures
from .limits import Limits
from .store import INT_FIELDS, Point
from .sweeps import AmortizedSweep, HeadSweep, Runner

__all__ = ["BackendServer", "API_VERSION", "create_server"]

API_VERSION = 1
log = logging.getLogger(__name__)
_FILTERS = tuple(Point.__dataclass_fields__)


class HTTPError(Exception):
    def __init__(self, status: int, message: str, headers=None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


class BackendServer(ThreadingHTTPServer):
    """A threaded HTTP server around one :class:`JobManager` (one device, one store).

    ``max_handlers`` bounds requests served at once (more get 503).
    """

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # listen backlog (socketserver's default of 5 resets bursts)

    def __init__(self, address, manager: JobManager, limits: Limits, max_handlers=64):
        self.manager, self.runner, self.limits = manager, manager.runner, limits
        self.slots = threading.BoundedSemaphore(max_handlers)
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def close(self) -> None:
        """Stop serving, stop the worker, close the store."""
        self.shutdown()
        self.server_close()
        self.manager.close()
        self.runner.store.close()


class _Handler(BaseHTTPRequestHandler):
    server: BackendServer
    timeout = 30  # seconds a client may take to send its request
    server_version = "llmqp-backend/1"

    def log_message(self, fmt, *args):  # quiet: the standard library prints every request
        log.debug("%s " + fmt, self.address_string(), *args)

    # -- plumbing ---------------------------------------------------------------------------
    def _send(self, status: int, payload, headers=None) -> None:
        try:
            body = json.dumps(payload, allow_nan=False, default=_jsonable).encode()
        except ValueError:  # NaN or infinity somewhere: JSON has no such numbers
            body = json.dumps(_finite(payload), allow_nan=False, default=_jsonable).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _dispatch(self, method: str) -> None:
        if not self.server.slots.acquire(blocking=False):
            self._send(503, {"error": "Too many concurrent requests; retry later."},
                       {"Retry-After": "1"})  # fmt: skip
            return
        try:
            path = urlsplit(self.path).path.rstrip("/") or "/"
            status, payload = self._route(method, path)
            self._send(status, payload)
        except HTTPError as exc:
            self._send(exc.status, {"error": exc.message}, exc.headers)
        except Exception as exc:  # a bug: answer 500, keep serving
            log.exception("internal error on %s %s", method, self.path)
            self._send(500, {"error": f"Internal error: {type(exc).__name__}: {exc}"})
        finally:
            self.server.slots.release()

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def _read_json(self):
        length = self.headers.get("Content-Length")
        if length is None:
            raise HTTPError(411, "A Content-Length header is required.")
        try:
            n = int(length)
        except ValueError:
            raise HTTPError(400, f"Bad Content-Length {length!r}.") from None
        limit = self.server.limits.max_body_bytes
        if n < 0 or n > limit:
            self.close_connection = True
            raise HTTPError(
                413, f"The request body has {n} bytes; the limit is {limit} (max_body_bytes)."
            )
        raw = self.rfile.read(n)
        try:
            return json.loads(raw or b"{}")
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise HTTPError(400, f"The request body is not valid JSON: {exc}.") from None

    # -- routes -----------------------------------------------------------------------------
    def _route(self, method: str, path: str):
        routes = {
            "/": ("GET", self._index),
            "/v1/device": ("GET", self._device),
            "/v1/progress": ("GET", lambda: self.server.manager.progress()),
            "/v1/results": ("GET", self._results),
            "/v1/calibration": ("GET", self._calibration),
            "/v1/sweeps/head": ("POST", lambda: self._sweep(HeadSweep)),
            "/v1/sweeps/amortized": ("POST", lambda: self._sweep(AmortizedSweep)),
        }
        if path.startswith("/v1/jobs/"):
            routes[path] = ("GET", lambda: self._job(path[len("/v1/jobs/") :]))
        if path not in routes:
            raise HTTPError(404, f"No endpoint {path!r}; see GET / for the list.")
        allowed, fn = routes[path]
        if method != allowed:
            raise HTTPError(405, f"{path} accepts {allowed} only.", {"Allow": allowed})
        out = fn()
        return out if isinstance(out, tuple) else (200, out)

    def _index(self):
        return {
            "service": "llmqp measurement backend",
            "api": API_VERSION,
            "endpoints": [
                "GET /v1/device",
                "POST /v1/sweeps/head",
                "POST /v1/sweeps/amortized",
                "GET /v1/jobs/<id>",
                "GET /v1/progress",
                "GET /v1/results",
                "GET /v1/calibration",
            ],
        }

    def _device(self):
        r = self.server.runner
        return {
            **r.info,
            "api": API_VERSION,
            "device_key": r.device_key,
            "peak": peak_figures(r.kernels.device, r.kernels.device_name),
            "timing": r.timing.to_dict(),
            "limits": self.server.limits.to_dict(),
            "impls": {k: v is None for k, v in available_impls().items()},
        }

    def _sweep(self, cls):
        body = self._read_json()
        if not isinstance(body, dict):
            raise HTTPError(400, "The request body must be a JSON object.")
        run_async = body.pop("async", False)
        if not isinstance(run_async, bool):
            raise HTTPError(400, f"The 'async' parameter must be true or false. Got {run_async!r}.")
        try:
            sweep = cls.parse(body, self.server.runner.kernels.dtypes, self.server.limits)
        except ValueError as exc:
            raise HTTPError(400, str(exc)) from None
        manager = self.server.manager
        try:
            if run_async:
                job = manager.submit(sweep)
                return 202, job.to_dict(result=job.status == "done")
            return manager.run_sync(sweep)
        except Busy as exc:
            raise HTTPError(503, str(exc), {"Retry-After": "1"}) from None

    def _job(self, job_id: str):
        job = self.server.manager.get(job_id)
        if job is None:
            raise HTTPError(404, f"No job {job_id!r} (finished jobs are kept for a while only).")
        return job.to_dict(result=job.status == "done")

    def _results(self):
        query = parse_qs(urlsplit(self.path).query, keep_blank_values=True)
        filters, limit = {}, 10_000
        for name, values in query.items():
            value = values[-1]
            try:
                if name == "limit":
                    limit = check_int("limit", _int(value), 1, 100_000)
                elif name not in _FILTERS:
                    raise ValueError(
                        f"Unknown filter {name!r}; allowed: {', '.join(_FILTERS)}, limit."
                    )
                elif name in INT_FIELDS:
                    filters[name] = check_int(name, _int(value), 0, None)
                else:
                    filters[name] = value
            except ValueError as exc:
                raise HTTPError(400, str(exc)) from None
        rows = self.server.runner.store.query(limit=limit, **filters)
        return {"count": len(rows), "results": rows}

    def _calibration(self):
        r = self.server.runner
        cal = r.calibration()
        if not isinstance(cal, Calibration):
            raise HTTPError(409, f"Nothing to calibrate yet: {cal}")
        return {"device_key": r.device_key, "cache": r.timing.cache, **cal.to_dict()}


def _int(text: str):
    try:
        return int(text)
    except ValueError:
        return text  # check_int names it in the error


def _finite(value):
    """``value`` with every non-finite float replaced by ``None``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _jsonable(value):
    """numpy scalars and other stragglers."""
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


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
) -> BackendServer:
    """A ready (not yet serving) backend: kernels, store (``db`` path, ``None`` in memory),
    runner and job manager. ``impl`` defaults to numpy on the CPU and torch on CUDA;
    ``threads`` limits the numpy backend's BLAS threads."""
    from .kernels import get_kernels
    from .kernels_numpy import set_blas_threads
    from .store import ResultStore

    impl = impl or ("torch" if device == "cuda" else "numpy")
    kernels = get_kernels(impl, device)
    if threads is not None:
        set_blas_threads(threads)
    store = ResultStore(":memory:" if db is None else db)
    runner = Runner(kernels, store, timing)
    manager = JobManager(runner, busy_timeout=busy_timeout)
    try:
        return BackendServer((host, port), manager, limits or Limits())
    except OSError:
        manager.close()
        store.close()
        raise
