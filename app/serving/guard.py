"""What every request passes before a handler sees it: who may call, how big, how deep, how long.

* :class:`AccessPolicy` — the cross-origin rules of Jupyter's and Bokeh's servers: ``Host``
  must name the bound address (or an ``--allow-host``), so a DNS-rebinding page is refused;
  ``Origin``, where a browser sends one, must be on the allow-list (``--allow-origin``; by
  default the service's own origin and the app's), and there is no CORS at all, so no other page
  may read an answer. POST bodies must be ``application/json``, which no page can send to
  another origin without a CORS preflight, which this service never grants.
* :func:`loads_json` — JSON with bounded nesting and number length, and no NaN or infinity,
  so a 30,000-deep ``[[[`` or a 5,000-digit integer is a 400, not a ``RecursionError``.
* :class:`GuardedHTTPServer` — Tornado's HTTP server with a cap on open connections (one more
  gets a JSON 503 at once) and JSON answers where Tornado would answer a malformed request
  line with a bare 400 or drop an oversized header without a word.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
from dataclasses import dataclass

from tornado import iostream
from tornado.httpserver import HTTPServer

__all__ = ["AccessPolicy", "loads_json", "GuardedHTTPServer", "raw_json_response", "JSON_TYPES"]

log = logging.getLogger(__name__)

#: Media types a POST body may declare.
JSON_TYPES = ("application/json",)
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(rb"[\[\]{}]")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _netloc(host: str, port: int) -> str:
    host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"{host}:{port}".lower()


@dataclass(frozen=True)
class AccessPolicy:
    """Allowed ``Host`` values (``host:port``, lower case) and ``Origin`` values (URLs).

    Build one with :meth:`for_address`.
    """

    hosts: frozenset
    origins: frozenset

    @classmethod
    def for_address(cls, host: str, port: int, allow_hosts=(), allow_origins=None):
        """The policy of a service bound to ``host:port``.

        Bound to a loopback address, ``localhost``, ``127.0.0.1`` and ``[::1]`` at that port are
        accepted as ``Host``; bound elsewhere, that address only. ``allow_hosts`` adds names
        (``name`` means at the bound port, ``name:port`` exactly). ``allow_origins`` is the
        ``Origin`` allow-list; ``None`` means the service's own origins and the app's default
        (``http://127.0.0.1:5006``, ``http://localhost:5006``).
        """
        names = _LOOPBACK_NAMES if _is_loopback(host) else (host,)
        hosts = {_netloc(n, port) for n in names}
        for extra in allow_hosts:
            extra = str(extra).strip().lower()
            hosts.add(extra if re.search(r":\d+$", extra) else _netloc(extra, port))
        own = {f"http://{h}" for h in hosts}
        if allow_origins is None:
            origins = own | {"http://127.0.0.1:5006", "http://localhost:5006"}
        else:
            origins = own | {str(o).strip().rstrip("/").lower() for o in allow_origins}
        return cls(frozenset(hosts), frozenset(origins))

    def refusal(self, method: str, headers) -> tuple[int, str] | None:
        """``(status, message)`` when a request with ``headers`` must be refused, else None:
        :meth:`origin_refusal`, then :meth:`body_refusal`."""
        return self.origin_refusal(headers) or self.body_refusal(method, headers)

    def origin_refusal(self, headers) -> tuple[int, str] | None:
        """403 for a ``Host`` not served here or an ``Origin`` not on the allow-list."""
        host = (headers.get("Host") or "").strip().lower()
        if host not in self.hosts:
            return 403, (
                f"Host {host[:100]!r} is not served here; allowed: "
                f"{', '.join(sorted(self.hosts))} (add one with --allow-host)."
            )
        origin = headers.get("Origin")
        if origin is not None and origin.strip().rstrip("/").lower() not in self.origins:
            return 403, (
                f"Origin {origin[:100]!r} may not use this service; allowed: "
                f"{', '.join(sorted(self.origins))} (add one with --allow-origin)."
            )
        return None

    @staticmethod
    def body_refusal(method: str, headers) -> tuple[int, str] | None:
        """415 for a POST/PUT/PATCH whose body is not declared ``application/json``."""
        if method in ("POST", "PUT", "PATCH"):
            ctype = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if ctype not in JSON_TYPES:
                return 415, (
                    f"A {method} body must have Content-Type: application/json; got "
                    f"{ctype[:60] or 'none'!r}."
                )
        return None


def loads_json(raw: bytes, max_depth: int = 64, max_number_chars: int = 40):
    """Parse a request body; every failure is a ``ValueError`` with a one-line reason.

    Nesting is counted on the text (strings removed) before parsing, so no recursion limit is
    ever reached; numbers longer than ``max_number_chars`` and the non-JSON constants ``NaN``
    and ``Infinity`` are refused, as are floats that overflow to infinity.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"The request body is not valid JSON: not UTF-8 ({exc.reason}).") from None
    depth = deepest = 0
    for m in _BRACKET.finditer(_STRING.sub(b'""', raw)):
        depth += 1 if m.group() in (b"[", b"{") else -1
        deepest = max(deepest, depth)
        if deepest > max_depth:
            raise ValueError(
                f"The request body nests arrays and objects more than {max_depth} deep "
                "(max_json_depth)."
            )

    def number(kind):
        def parse(s: str):
            if len(s) > max_number_chars:
                raise ValueError(
                    f"The request body has a number of {len(s)} characters; the limit is "
                    f"{max_number_chars} (max_number_chars)."
                )
            value = kind(s)
            if kind is float and value in (float("inf"), float("-inf")):
                raise ValueError(f"The request body has the number {s}, which overflows a double.")
            return value

        return parse

    def constant(name):
        raise ValueError(f"The request body has {name}, which is not JSON.")

    try:
        return json.loads(
            text or "{}",
            parse_int=number(int),
            parse_float=number(float),
            parse_constant=constant,
        )
    except json.JSONDecodeError as exc:
        raise ValueError(f"The request body is not valid JSON: {exc}.") from None


def raw_json_response(status: int, reason: str, message: str, extra: str = "") -> bytes:
    """A complete HTTP/1.1 response with a JSON error body, closing the connection."""
    body = json.dumps({"error": message}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\nCache-Control: no-store\r\n"
        f"{extra}\r\n"
    )
    return head.encode("latin-1") + body


#: Exactly what Tornado writes for a malformed request (bad request line, bad header, bad
#: Content-Length, a body over max_body_size); replaced by a JSON answer.
_TORNADO_BARE_400 = b"HTTP/1.1 400 Bad Request\r\n\r\n"


class GuardedHTTPServer(HTTPServer):
    """``HTTPServer`` with at most ``max_connections`` open connections and JSON error answers
    for requests Tornado refuses before any handler runs."""

    def initialize(self, *args, max_connections: int = 256, **kwargs) -> None:
        super().initialize(*args, **kwargs)
        self.max_connections = int(max_connections)
        self.refused = 0

    def handle_stream(self, stream: iostream.IOStream, address: tuple) -> None:
        if len(self._connections) >= self.max_connections:
            self.refused += 1
            msg = (
                f"The service has {self.max_connections} connections open "
                "(max_connections); retry later."
            )
            data = raw_json_response(503, "Service Unavailable", msg, "Retry-After: 1\r\n")
            stream.write(data).add_done_callback(lambda f: stream.close())
            return
        _json_bare_errors(stream, self.conn_params.max_header_size)
        super().handle_stream(stream, address)


def _json_bare_errors(stream: iostream.IOStream, max_header_bytes: int) -> None:
    """Make ``stream`` answer in JSON where Tornado answers without a body or not at all."""
    write = stream.write

    def json_write(data, *args, **kwargs):
        if data == _TORNADO_BARE_400:
            data = raw_json_response(
                400, "Bad Request", "Malformed HTTP request (request line, headers or framing)."
            )
        return write(data, *args, **kwargs)

    stream.write = json_write
    close = stream.close

    def close_with_431(exc_info=False):
        # Tornado closes the stream itself when a request head outgrows max_header_size
        # (UnsatisfiableReadError); say why first, in one small non-blocking send.
        exc = exc_info[1] if isinstance(exc_info, tuple) else exc_info
        if isinstance(exc, iostream.UnsatisfiableReadError) and stream.socket is not None:
            msg = (
                f"The request line and headers exceed {max_header_bytes} bytes (max_header_bytes)."
            )
            try:
                stream.socket.send(raw_json_response(431, "Request Header Fields Too Large", msg))
            except OSError:
                pass
        return close(exc_info=exc_info)

    stream.close = close_with_431
