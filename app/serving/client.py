"""A small client of the measurement service, and an in-process service for the Panel server.

    url, stop = start_in_process()          # 127.0.0.1, a free port, results in memory
    client = BackendClient(url)
    answer = client.sweep_head(256, 8192, k=[1, 64, 4096])   # polls the job until done
    stop()

Sweeps are submitted as jobs and polled (``on_progress(job_dict)`` after each poll), so a long
sweep never holds one HTTP request open. An unreachable service raises
:class:`BackendUnavailable`; an error answer raises :class:`BackendError` (``.status``, message
from the server), :class:`BackendBusy` for 503.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from urllib.parse import urlencode

__all__ = [
    "BackendClient",
    "BackendError",
    "BackendBusy",
    "BackendUnavailable",
    "start_in_process",
]


class BackendUnavailable(ConnectionError):
    """The service could not be reached (refused, timed out, not HTTP)."""


class BackendError(RuntimeError):
    """The service answered with an error status; ``status`` and the server's message."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status, self.message = status, message


class BackendBusy(BackendError):
    """503: the device is busy or the job queue is full."""


class BackendClient:
    """Talks JSON to one service at ``url`` (e.g. ``http://127.0.0.1:8765``)."""

    def __init__(self, url: str, timeout: float = 30.0):
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError(f"The 'url' parameter must be an http(s) URL. Got {url!r} instead.")
        self.url = url.rstrip("/")
        self.timeout = float(timeout)

    def _request(self, method: str, path: str, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise _error_of(exc) from None
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise BackendUnavailable(f"No measurement backend at {self.url}: {reason}") from None
        except ValueError as exc:  # not JSON: something else is listening there
            raise BackendUnavailable(f"{self.url} did not answer JSON: {exc}") from None

    # -- endpoints --------------------------------------------------------------------------
    def device(self) -> dict:
        return self._request("GET", "/v1/device")

    def progress(self) -> dict:
        """The running (else last) job: ``job``, ``status``, ``done``, ``total``, ``queued``."""
        return self._request("GET", "/v1/progress")

    def job(self, job_id: str) -> dict:
        return self._request("GET", f"/v1/jobs/{job_id}")

    def results(self, **filters) -> list:
        """Stored rows, e.g. ``results(plan="sparse_head", d=256)``."""
        query = f"?{urlencode(filters)}" if filters else ""
        return self._request("GET", "/v1/results" + query)["results"]

    def calibration(self) -> dict:
        return self._request("GET", "/v1/calibration")

    def sweep_head(
        self, d, vocab, batch=1, dtype=None, k=None, force=False, *, wait=True, on_progress=None
    ) -> dict:
        """Dense vs sparse head at ``(d, vocab, batch, dtype)`` over ``k`` (default: the
        server's geometric grid). ``wait=False`` returns the job instead of its answer."""
        body = _body(d=d, vocab=vocab, batch=batch, dtype=dtype, k=k, force=force)
        return self._sweep("/v1/sweeps/head", body, wait, on_progress)

    def sweep_amortized(
        self,
        d,
        layers,
        vocab,
        k=64,
        batch=1,
        dtype=None,
        context=None,
        rerank_r=None,
        force=False,
        *,
        wait=True,
        on_progress=None,
    ) -> dict:
        """Full step vs amortized step (and rerank) over ``context`` (default: the server's)."""
        body = _body(
            d=d, layers=layers, vocab=vocab, k=k, batch=batch, dtype=dtype, context=context,
            rerank_r=rerank_r, force=force,
        )  # fmt: skip
        return self._sweep("/v1/sweeps/amortized", body, wait, on_progress)

    # -- decoding (the OpenAI-compatible endpoint) -----------------------------------------------
    def models(self) -> list:
        """``GET /v1/models``'s ``data`` (empty when the service decodes nothing)."""
        return self._request("GET", "/v1/models")["data"]

    def chat(self, body: dict) -> dict:
        """``POST /v1/chat/completions`` (no streaming): the whole answer."""
        return self._request("POST", "/v1/chat/completions", {**body, "stream": False})

    def chat_stream(self, body: dict):
        """``POST /v1/chat/completions`` with ``stream: true``: yields each event's chunk as a
        dict, as the server sends it. Errors raise as :meth:`chat` does."""
        data = json.dumps({**body, "stream": True}).encode()
        req = urllib.request.Request(self.url + "/v1/chat/completions", data=data, method="POST")
        req.add_header("Content-Type", "application/json")
        try:
            resp = urllib.request.urlopen(req, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            raise _error_of(exc) from None
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise BackendUnavailable(f"No measurement backend at {self.url}: {reason}") from None
        with resp:
            if "text/event-stream" not in resp.headers.get("Content-Type", ""):
                yield json.loads(resp.read() or b"null")
                return
            for raw in resp:
                line = raw.decode("utf-8").strip()
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    return
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    raise BackendError(500, _message(chunk["error"]))
                yield chunk

    def _sweep(self, path, body, wait, on_progress, poll_s=0.2) -> dict:
        job = self._request("POST", path, {**body, "async": True})
        while wait and job["status"] in ("queued", "running"):
            if on_progress is not None:
                on_progress(job)
            time.sleep(poll_s)
            job = self.job(job["job"])
        if not wait:
            return job
        if on_progress is not None:
            on_progress(job)
        if job["status"] != "done":
            raise BackendError(500, f"Sweep {job['job']} failed: {job.get('error')}")
        return job["result"]


def _message(error) -> str:
    """The text of an error body: ``"..."`` or OpenAI's ``{"message": "..."}``."""
    return str(error.get("message", error) if isinstance(error, dict) else error)


def _error_of(exc) -> BackendError:
    try:
        message = _message(json.loads(exc.read()).get("error", exc.reason))
    except (ValueError, AttributeError):
        message = str(exc.reason)
    cls = BackendBusy if exc.code == 503 else BackendError
    return cls(exc.code, message)


def _body(**fields) -> dict:
    """Drop unset (``None``) fields so the server's defaults apply."""
    return {k: v for k, v in fields.items() if v is not None}


def start_in_process(host: str = "127.0.0.1", port: int = 0, db=None, **options):
    """Run the service in a background thread: returns ``(url, stop_fn)``.

    ``port=0`` picks a free port; ``db=None`` keeps results in memory. ``options`` go to
    :func:`app.serving.service.create_server` (``device``, ``impl``, ``timing``, ``limits``,
    ``busy_timeout``, ``threads``, ``allow_hosts``, ``allow_origins``, ``engine``). The
    service runs on its own event loop in that thread, under the same access rules and limits
    as ``llmqp backend``. ``stop_fn()`` shuts the server down and closes the store.
    """
    from .service import create_server

    server = create_server(host, port, db, **options)
    thread = threading.Thread(target=server.serve_forever, name="llmqp-backend", daemon=True)
    thread.start()
    stopped = threading.Event()

    def stop() -> None:
        if not stopped.is_set():
            stopped.set()
            server.close()
            thread.join(timeout=5.0)

    return server.url, stop
