"""The service's handler base: access rules first, bounded JSON bodies, JSON answers and errors.

:class:`JsonHandler` checks ``Host`` and ``Origin`` (:class:`app.serving.guard.AccessPolicy`),
then the method (405 with ``Allow``), then the body's media type; every error, whatever raised
it, is written as ``{"error": "..."}`` with its status; a client that leaves early is one quiet
log line. :class:`PostHandler` streams its body so that ``Content-Length`` is checked before a
byte is read, a chunked body is counted as it arrives (413 once it passes ``max_body_bytes``,
as a declared length would get), and a body that misses its deadline gets a JSON 408.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math

import tornado.ioloop
import tornado.web

from .guard import loads_json

__all__ = ["ApiError", "JsonHandler", "PostHandler", "NotFound"]

log = logging.getLogger("app.serving.service")


class ApiError(Exception):
    """An answer other than 200: ``status``, a one-line ``message`` and extra ``headers``."""

    def __init__(self, status: int, message: str, headers=None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


class JsonHandler(tornado.web.RequestHandler):
    """Base of every handler: access rules first, JSON answers, JSON errors, quiet disconnects.

    Subclasses list their methods in ``ALLOW``; any other method is a JSON 405 with ``Allow``.
    """

    ALLOW: tuple = ("GET",)

    def initialize(self, server) -> None:  # an app.serving.service.BackendServer
        self.server = server
        self.left = False

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.clear_header("Server")

    def prepare(self) -> None:
        method, headers, policy = self.request.method, self.request.headers, self.server.policy
        refusal = policy.origin_refusal(headers)
        if refusal is not None:
            raise ApiError(*refusal)
        if method not in self.ALLOW:
            path = self.request.path
            raise ApiError(405, f"{path} accepts {', '.join(self.ALLOW)} only.",
                           {"Allow": ", ".join(self.ALLOW)})  # fmt: skip
        refusal = policy.body_refusal(method, headers)
        if refusal is not None:
            raise ApiError(*refusal)

    def send_json(self, status: int, payload) -> None:
        try:
            body = json.dumps(payload, allow_nan=False, default=_jsonable)
        except ValueError:  # NaN or infinity somewhere: JSON has no such numbers
            body = json.dumps(_finite(payload), allow_nan=False, default=_jsonable)
        self.set_status(status)
        self.finish(body)

    def read_json(self):
        """The request body as JSON (bounded nesting and numbers); 400 when it is not."""
        limits = self.server.limits
        try:
            return loads_json(self.request.body, limits.max_json_depth, limits.max_number_chars)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None

    def write_error(self, status_code: int, **kwargs) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ApiError):
            status_code, message = exc.status, exc.message
            for name, value in exc.headers.items():
                self.set_header(name, value)
        elif isinstance(exc, tornado.web.HTTPError):
            message = exc.log_message or self._reason
            if status_code == 405:
                message = f"{self.request.path} accepts {', '.join(self.ALLOW)} only."
                self.set_header("Allow", ", ".join(self.ALLOW))
        elif exc is not None:
            message = f"Internal error: {type(exc).__name__}: {exc}"
        else:
            message = self._reason
        self.set_status(status_code)
        self.set_header("Content-Type", "application/json")
        if self.request.method == "HEAD":
            self.finish()
        else:
            self.finish(json.dumps(self.error_body(status_code, message, exc)))

    def error_body(self, status_code: int, message: str, exc) -> dict:
        """The JSON body of an error answer (``write_error`` has found its status and
        one-line message); subclasses that speak another protocol change its shape."""
        return {"error": message}

    def log_exception(self, typ, value, tb) -> None:
        if isinstance(value, (ApiError, tornado.web.HTTPError)):
            log.debug("%s %s -> %s", self.request.method, self.request.path, value)
        else:  # a bug: one traceback in the log, a 500 to the client, keep serving
            log.error("internal error on %s %s", self.request.method, self.request.path,
                      exc_info=(typ, value, tb))  # fmt: skip

    def on_connection_close(self) -> None:
        if not self.left and not self._finished:
            self.left = True
            log.info("client %s left before the answer to %s %s", self.request.remote_ip,
                     self.request.method, self.request.path)  # fmt: skip

    async def blocking(self, fn, *args, pool: str = "io"):
        """Run ``fn(*args)`` on a worker thread (``pool``: "io" for the store, "device")."""
        return await asyncio.get_running_loop().run_in_executor(self.server.pools[pool], fn, *args)


@tornado.web.stream_request_body
class PostHandler(JsonHandler):
    """A handler that takes a JSON body: Content-Length required and bounded before reading."""

    ALLOW = ("POST",)

    def prepare(self) -> None:
        super().prepare()
        self._chunks, self._size = [], 0
        limit = self.server.limits.max_body_bytes
        length = self.request.headers.get("Content-Length")
        if length is None:
            if "chunked" not in self.request.headers.get("Transfer-Encoding", "").lower():
                raise ApiError(411, "A Content-Length header is required.")
        else:
            if not length.strip().isdigit() or len(length) > 19:
                raise ApiError(400, f"Bad Content-Length {length[:40]!r}.")
            if int(length) > limit:
                raise ApiError(
                    413,
                    f"The request body has {int(length)} bytes; the limit is {limit} "
                    "(max_body_bytes).",
                )
        # A chunked body is counted here, in data_received, so it gets the 413 a declared
        # length gets; Tornado's own count (which answers a bare 400) is only a backstop.
        chunked = length is None
        self.request.connection.set_max_body_size(limit if not chunked else 1 << 62)
        # the body's deadline, answered in JSON (Tornado's own, a little later, only closes)
        self._deadline = tornado.ioloop.IOLoop.current().call_later(
            self.server.limits.body_timeout_s, self._body_too_slow
        )

    def _body_too_slow(self) -> None:
        self._deadline = None
        if self._finished:
            return
        limit = self.server.limits.body_timeout_s
        log.info("client %s sent its body too slowly (%s %s)", self.request.remote_ip,
                 self.request.method, self.request.path)  # fmt: skip
        self._refuse(408, f"The request body did not arrive within {limit:g} s "
                          "(body_timeout_s).")  # fmt: skip

    def _refuse(self, status: int, message: str) -> None:
        """Answer now, while the body is still arriving, and close the connection."""
        self.set_status(status)
        self.set_header("Connection", "close")
        self.finish(json.dumps(self.error_body(status, message, None)))

    def on_finish(self) -> None:
        deadline = getattr(self, "_deadline", None)
        if deadline is not None:
            tornado.ioloop.IOLoop.current().remove_timeout(deadline)
            self._deadline = None

    def data_received(self, chunk: bytes) -> None:
        if self._finished:  # refused already: the rest is read and dropped until the close
            return
        self._size += len(chunk)
        if self._size > self.server.limits.max_body_bytes:
            self._chunks = []
            self._refuse(413, f"The request body is over {self.server.limits.max_body_bytes} "
                              "bytes (max_body_bytes).")  # fmt: skip
            return
        self._chunks.append(chunk)

    def read_json(self):
        if self._finished:  # refused while the body arrived (413, 408): nothing more to say
            raise ApiError(400, "The request was answered before its body was complete.")
        self.on_finish()  # the body is complete: its deadline is met
        self.request.body = b"".join(self._chunks)
        return super().read_json()


class NotFound(JsonHandler):
    ALLOW = ("GET", "POST")

    def prepare(self) -> None:
        refusal = self.server.policy.origin_refusal(self.request.headers)
        if refusal is not None:
            raise ApiError(*refusal)
        raise ApiError(404, f"No endpoint {self.request.path[:200]!r}; see GET / for the list.")


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
