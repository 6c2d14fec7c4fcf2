"""Issue 11: the service attacked on 127.0.0.1 — cross-origin requests, slow clients, hostile
bodies and request heads, disconnects, memory, damaged stores, bad command lines."""

import json
import logging
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from app.measure.kernels import get_kernels
from app.measure.limits import Limits
from app.measure.store import ResultStore, StoreError
from app.measure.sweeps import AmortizedSweep, HeadSweep, Runner
from app.serving.client import BackendClient, start_in_process
from app.serving.guard import AccessPolicy, loads_json

from .conftest import FAST
from .test_service import call

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def service():
    url, stop = start_in_process(timing=FAST, busy_timeout=30.0)
    yield url
    stop()


def hostport(url):
    parts = urlsplit(url)
    return parts.hostname, parts.port


def raw_exchange(url, data: bytes, timeout=10.0) -> bytes:
    """Send ``data`` on a fresh connection; everything the server answers until it closes."""
    with socket.create_connection(hostport(url), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            out += chunk
    return out


def status_and_json(answer: bytes):
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    return status, json.loads(body)


SWEEP = {"d": 64, "vocab": 256, "k": [2]}


# -- cross-origin safety -----------------------------------------------------------------------


def test_the_issue_csrf_and_rebinding_requests_are_refused(service):
    port = hostport(service)[1]
    evil = {"Host": "evil.example", "Origin": "http://evil.example", "Content-Type": "text/plain"}
    status, p, _ = call(service, "POST", "/v1/sweeps/head", SWEEP, headers=evil)
    assert status == 403 and "Host 'evil.example'" in p["error"]
    # a page on another local port (the no-cors fetch of the issue): right Host, foreign Origin
    page = {"Origin": "http://127.0.0.1:9999", "Content-Type": "text/plain"}
    status, p, _ = call(service, "POST", "/v1/sweeps/head", SWEEP, headers=page)
    assert status == 403 and "Origin 'http://127.0.0.1:9999'" in p["error"]
    status, p, _ = call(service, "POST", "/v1/sweeps/head", SWEEP, headers={"Origin": "null"})
    assert status == 403
    status, p, _ = call(service, "POST", "/v1/sweeps/head", SWEEP,
                        headers={"Content-Type": "text/plain"})  # fmt: skip
    assert status == 415 and "application/json" in p["error"]
    status, p, _ = call(service, "GET", "/v1/device", headers={"Host": f"evil.example:{port}"})
    assert status == 403
    assert call(service, "GET", "/v1/results")[1]["count"] == 0  # nothing ran
    # the app's own origin and the service's own are allowed; no CORS header is ever sent
    for origin in ("http://127.0.0.1:5006", f"http://localhost:{port}"):
        status, p, headers = call(service, "POST", "/v1/sweeps/head", SWEEP,
                                  headers={"Origin": origin})  # fmt: skip
        assert status == 200, p
        assert not any(h.lower().startswith("access-control") for h in headers)
    status, _, _ = call(service, "GET", "/v1/device", headers={"Host": f"localhost:{port}"})
    assert status == 200


def test_allow_host_and_allow_origin_extend_the_policy():
    url, stop = start_in_process(timing=FAST, allow_hosts=["box.lan"],
                                 allow_origins=["http://box.lan:5006"])  # fmt: skip
    try:
        port = hostport(url)[1]
        ok = {"Host": f"box.lan:{port}", "Origin": "http://box.lan:5006"}
        assert call(url, "GET", "/v1/device", headers=ok)[0] == 200
        # the default app origin is no longer allowed once an allow-list is given
        bad = {"Origin": "http://127.0.0.1:5006"}
        assert call(url, "GET", "/v1/device", headers=bad)[0] == 403
    finally:
        stop()


def test_access_policy_for_a_non_loopback_address():
    policy = AccessPolicy.for_address("10.1.2.3", 8765)
    assert policy.hosts == {"10.1.2.3:8765"}
    assert policy.refusal("GET", {"Host": "localhost:8765"})[0] == 403
    assert policy.refusal("GET", {"Host": "10.1.2.3:8765"}) is None
    assert policy.refusal("GET", {})[0] == 403  # no Host at all


# -- hostile bodies, query strings and request heads ----------------------------------------------


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"[" * 30_000, "nests arrays and objects more than 64 deep"),
        (b'{"d": ' + b"9" * 5000 + b', "vocab": 256}', "a number of 5000 characters"),
        (b'{"d": 64, "vocab": 256, "k": [NaN]}', "NaN, which is not JSON"),
        (b'{"d": 1e999, "vocab": 256}', "overflows a double"),
        (b'{"d": 64, "vocab": "' + b"[" * 20_000 + b'"}', "'vocab' parameter"),  # in a string
    ],
)
def test_hostile_json_is_a_400(service, raw, message):
    status, p, _ = call(service, "POST", "/v1/sweeps/head", raw=raw)
    assert status == 400 and message in p["error"]


def test_loads_json_counts_depth_outside_strings_only():
    assert loads_json(b'{"a": "[[[[[[", "b": [[1]]}', max_depth=3) == {"a": "[[[[[[", "b": [[1]]}
    with pytest.raises(ValueError, match="more than 2 deep"):
        loads_json(b"[[[1]]]", max_depth=2)
    assert loads_json(b'{"s": "\\"[[["}', max_depth=1) == {"s": '"[[['}


@pytest.mark.parametrize(
    "query",
    ["k=9223372036854775808", f"d={10**30}", "d=" + "9" * 5000, "d=-1", "limit=0", "d=%C2%B2"],
)
def test_integer_filters_outside_sqlite_range_are_400(service, query):
    status, p, _ = call(service, "GET", f"/v1/results?{query}")
    assert status == 400 and "parameter must be an integer" in p["error"]


def test_largest_sqlite_integer_filter_is_fine(service):
    status, p, _ = call(service, "GET", "/v1/results?k=9223372036854775807")
    assert status == 200 and p["count"] == 0


@pytest.mark.parametrize("method", ["PATCH", "PUT", "DELETE", "OPTIONS", "FOO"])
def test_other_methods_get_json_405(service, method):
    status, p, headers = call(service, method, "/v1/device")
    assert status == 405 and "accepts GET only" in p["error"] and headers["Allow"] == "GET"


def test_head_gets_405_without_a_body(service):
    host, port = hostport(service)
    answer = raw_exchange(
        service, f"HEAD /v1/device HTTP/1.0\r\nHost: {host}:{port}\r\n\r\n".encode()
    )
    assert answer.startswith(b"HTTP/1.0 405") or answer.startswith(b"HTTP/1.1 405")
    assert answer.endswith(b"\r\n\r\n")


def test_malformed_request_heads_get_json(service):
    host, port = hostport(service)
    status, p = status_and_json(raw_exchange(service, b"\x00\x01garbage\r\n\r\n"))
    assert status == 400 and "Malformed HTTP request" in p["error"]
    long_path = b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    status, p = status_and_json(raw_exchange(service, long_path))
    assert status == 431 and "max_header_bytes" in p["error"]
    many = "".join(f"X-H{i}: {i}\r\n" for i in range(101))
    req = f"GET /v1/device HTTP/1.1\r\nHost: {host}:{port}\r\n{many}Connection: close\r\n\r\n"
    status, p = status_and_json(raw_exchange(service, req.encode()))
    assert status == 200 and p["impl"] == "numpy"
    bad_length = (f"POST /v1/sweeps/head HTTP/1.1\r\nHost: {host}:{port}\r\n"
                  "Content-Type: application/json\r\nContent-Length: -5\r\n\r\n")  # fmt: skip
    status, p = status_and_json(raw_exchange(service, bad_length.encode()))
    assert status == 400
    assert call(service, "GET", "/v1/device")[0] == 200


def test_200_mixed_bad_requests_then_a_correct_sweep(service):
    host, port = hostport(service)
    bad_calls = [
        lambda i: call(service, "POST", "/v1/sweeps/head", {"d": -i, "vocab": 10}),
        lambda i: call(service, "POST", "/v1/sweeps/head", raw=b"[" * (100 + i)),
        lambda i: call(
            service, "POST", "/v1/sweeps/head", SWEEP, headers={"Content-Type": "text/plain"}
        ),  # fmt: skip
        lambda i: call(
            service,
            "POST",
            "/v1/sweeps/amortized",
            {"d": 8, "layers": 1, "vocab": 10, "context": [10**30]},
        ),  # fmt: skip
        lambda i: call(service, "GET", f"/v1/results?k={2**63 + i}"),
        lambda i: call(service, "GET", "/v1/device", headers={"Origin": f"http://x{i}.example"}),
        lambda i: call(service, "PATCH", "/v1/sweeps/head", SWEEP),
        lambda i: call(service, "GET", f"/v1/jobs/{'z' * i}"),
        lambda i: (status_and_json(raw_exchange(service, b"BLAH\r\n\r\n"))[0], None, None),
        lambda i: call(service, "POST", "/v1/chat/completions", {"messages": "x"}),
    ]

    def one(i):
        return bad_calls[i % len(bad_calls)](i)[0]

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(one, range(200)))
    assert all(400 <= s < 500 for s in statuses), sorted(set(statuses))
    status, ans, _ = call(service, "POST", "/v1/sweeps/head", {"d": 32, "vocab": 128, "k": [1, 8]})
    assert status == 200 and ans["k"] == [1, 8] and all(ans["plans"]["sparse_head"]["tokens_match"])


# -- slow clients, connection cap, deadlines ------------------------------------------------------


def _slow_body(url, stop: threading.Event, sockets: list):
    host, port = hostport(url)
    s = socket.create_connection((host, port), timeout=30)
    sockets.append(s)
    s.sendall(f"POST /v1/sweeps/head HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: "
              "application/json\r\nContent-Length: 1000\r\n\r\n".encode())  # fmt: skip
    while not stop.wait(0.5):
        try:
            s.sendall(b" ")
        except OSError:
            return


def test_seventy_slow_clients_do_not_starve_anyone():
    """The issue's attack: 70 connections trickling a body. /v1/device stays prompt (bounded at
    5 s, far above its normal milliseconds), and the deadline drops the trickling ones."""
    limits = replace(Limits(), body_timeout_s=3.0)
    url, stop_server = start_in_process(timing=FAST, limits=limits)
    stop, sockets = threading.Event(), []
    threads = [threading.Thread(target=_slow_body, args=(url, stop, sockets)) for _ in range(70)]
    try:
        for t in threads:
            t.start()
        time.sleep(0.5)
        worst = 0.0
        for _ in range(5):
            t0 = time.monotonic()
            assert call(url, "GET", "/v1/device")[0] == 200
            worst = max(worst, time.monotonic() - t0)
        assert worst < 5.0
        assert call(url, "POST", "/v1/sweeps/head", SWEEP)[0] == 200  # the device too
        # the body deadline (3 s) ends every trickling request with a JSON 408, though each
        # sends a byte every 0.5 s
        deadline = time.monotonic() + 30
        for s in sockets:
            s.settimeout(max(0.1, deadline - time.monotonic()))
            answer = b""
            try:
                while chunk := s.recv(4096):
                    answer += chunk
            except ConnectionResetError:
                pass
            status, p = status_and_json(answer)
            assert status == 408 and "body_timeout_s" in p["error"]
    finally:
        stop.set()
        for t in threads:
            t.join(5)
        for s in sockets:
            s.close()
        stop_server()


def test_header_trickling_is_timed_per_request():
    limits = replace(Limits(), header_timeout_s=1.0)
    url, stop = start_in_process(timing=FAST, limits=limits)
    try:
        host, port = hostport(url)
        s = socket.create_connection((host, port), timeout=20)
        s.sendall(b"GET /v1/device HTTP/1.1\r\n")
        t0, closed = time.monotonic(), False
        while time.monotonic() - t0 < 15:
            try:
                s.sendall(b"X: y\r\n")  # one header line every 0.2 s: each read is quick
            except OSError:
                closed = True
                break
            s.settimeout(0.2)
            try:
                if s.recv(4096) == b"":
                    closed = True
                    break
            except TimeoutError:
                pass
            except OSError:
                closed = True
                break
        s.close()
        assert closed, "a trickled request head was never cut off"
        assert call(url, "GET", "/v1/device")[0] == 200
    finally:
        stop()


def test_connections_beyond_the_cap_get_a_json_503():
    limits = replace(Limits(), max_connections=4)
    url, stop = start_in_process(timing=FAST, limits=limits)
    held = []
    try:
        for _ in range(4):
            held.append(socket.create_connection(hostport(url), timeout=10))
        time.sleep(0.3)
        status, p = status_and_json(raw_exchange(url, b"GET /v1/device HTTP/1.1\r\n\r\n"))
        assert status == 503 and "max_connections" in p["error"]
        for s in held:
            s.close()
        held.clear()
        deadline = time.monotonic() + 10
        while call(url, "GET", "/v1/device")[0] != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        for s in held:
            s.close()
        stop()


# -- disconnects ----------------------------------------------------------------------------------


def test_client_disconnects_are_quiet(service, caplog):
    host, port = hostport(service)
    client = BackendClient(service)
    for i in range(3):
        client.sweep_head(32, 4096 + 512 * i, k=[1, 64, 512, 4096])
    caplog.set_level(logging.INFO)
    request = f"GET /v1/results HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    for _ in range(30):
        with socket.create_connection((host, port), timeout=10) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.sendall(request)
    assert call(service, "GET", "/v1/device")[0] == 200
    time.sleep(0.3)
    assert not [r for r in caplog.records if r.exc_info], "a disconnect logged a traceback"
    assert len(caplog.records) <= 30


# -- memory budget --------------------------------------------------------------------------------


def test_the_issue_memory_request_is_refused_before_allocating(service):
    # A head over the budget of one request is measured in row blocks, not refused.
    sweep = HeadSweep.parse({"d": 16384, "vocab": 32768, "k": [1]}, ("float32",))
    assert sweep.blocks > 1 and sweep.nbytes() <= Limits().max_request_bytes
    body = {"d": 4096, "layers": 2, "vocab": 32768, "context": [8192]}  # under max_model_bytes
    status, p, _ = call(service, "POST", "/v1/sweeps/amortized", body)
    assert status == 400 and "max_request_bytes" in p["error"]
    assert call(service, "GET", "/v1/device")[1]["limits"]["max_request_bytes"] == 1 << 30


@pytest.mark.parametrize(
    "sweep",
    [
        HeadSweep(d=256, vocab=16384, batch=4, k=(1, 64, 16384)),
        HeadSweep(d=256, vocab=16384, batch=4, k=(1, 64, 16384), blocks=4),
        AmortizedSweep(d=256, layers=2, vocab=4096, batch=2, k=64, context=(0, 2048)),
    ],
    ids=["head", "head-in-blocks", "amortized"],
)
def test_the_stated_bytes_bound_what_a_sweep_allocates(sweep):
    """numpy reports its allocations to tracemalloc: the peak stays under the estimate that
    the budget is checked against, and the estimate is not wildly above it."""
    runner = Runner(get_kernels("numpy", "cpu"), ResultStore(), FAST)
    tracemalloc.start()
    try:
        runner.run(sweep)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= sweep.nbytes() <= 2.5 * peak


# -- the store at start-up ------------------------------------------------------------------------


def _filled_store(path: Path) -> None:
    with ResultStore(path) as store:
        with store._conn:
            store._conn.executemany(
                "INSERT INTO meta VALUES (?, ?)", [(f"pad{i}", "x" * 500) for i in range(400)]
            )


def test_a_store_damaged_past_its_first_page_is_refused(tmp_path):
    db = tmp_path / "results.sqlite"
    _filled_store(db)
    data = bytearray(db.read_bytes())
    page = 4096
    assert len(data) > 8 * page
    data[5 * page : 6 * page] = b"\xa5" * page
    db.write_bytes(bytes(data))
    sqlite3.connect(db).execute("SELECT 1").fetchone()  # the first page still opens
    with pytest.raises(StoreError, match="damaged.*--fresh"):
        ResultStore.open(db)
    fresh = ResultStore.open(db, fresh=True)
    try:
        assert fresh.count() == 0 and fresh.moved_aside.endswith(".old")
        assert Path(fresh.moved_aside).read_bytes() == bytes(data)  # nothing lost
    finally:
        fresh.close()


def test_an_unknown_schema_version_is_refused(tmp_path):
    db = tmp_path / "results.sqlite"
    ResultStore(db).close()
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE meta SET value = '999' WHERE name = 'schema_version'")
    with pytest.raises(StoreError, match="schema_version '999'; this build reads version 1"):
        ResultStore.open(db)


def test_cli_refuses_a_damaged_store_in_one_line(tmp_path):
    db = tmp_path / "bad.sqlite"
    db.write_bytes(b"SQLite format 3\x00" + b"\x00" * 84 + b"\xff" * 8000)
    run = subprocess.run(
        [sys.executable, "-m", "app.backend", "--port", "0", "--no-model", "--db", str(db)],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert run.returncode == 1 and "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "--fresh" in lines[0]


# -- command lines --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, message",
    [
        (["serve", "--port", "70000"], "must be an integer in [1, 65535]"),
        (["serve", "--port", "-1"], "must be an integer in [1, 65535]"),
        (["serve", "--address", "no such host.invalid"], "bad --address"),
        (["explain", "--model", ""], "The 'model' parameter must be one of"),
        (["backend", "--busy-timeout", "inf"], "positive finite float"),
        (["backend", "--busy-timeout", "nan"], "positive finite float"),
        (["backend", "--fresh"], "--fresh needs --db"),
    ],
)
def test_cli_bad_arguments_are_one_line(argv, message):
    run = subprocess.run([sys.executable, "-m", "app.cli", *argv], capture_output=True,
                         text=True, cwd=ROOT, timeout=60)  # fmt: skip
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1 and message in lines[0], run.stderr
    assert "serving LLM-QP" not in run.stderr


def test_cli_serve_port_in_use_is_one_line():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        run = subprocess.run([sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
                             capture_output=True, text=True, cwd=ROOT, timeout=60)  # fmt: skip
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1 and "cannot serve on" in lines[0]


def test_the_device_lock_is_granted_in_arrival_order():
    from app.measure.jobs import FairLock

    lock, order = FairLock(), []
    lock.acquire()

    def wait(i):
        assert lock.acquire(timeout=30)
        order.append(i)
        lock.release()

    threads = []
    for i in range(6):
        threads.append(threading.Thread(target=wait, args=(i,)))
        threads[-1].start()
        deadline = time.monotonic() + 10
        while len(lock._queue) < i + 1:  # wait until thread i stands in the queue
            assert time.monotonic() < deadline
            time.sleep(0.005)
    assert not lock.acquire(timeout=0.05)  # a late comer times out and leaves the queue
    lock.release()
    for t in threads:
        t.join(10)
    assert order == list(range(6)) and not lock.locked()


def test_the_apps_in_process_backend_follows_the_same_rules(monkeypatch):
    from app.widgets import measured

    monkeypatch.setenv("LLMQP_APP_ORIGIN", "http://127.0.0.1:5999")
    monkeypatch.setattr(measured, "_IN_PROCESS", {})
    url = measured.in_process_url()
    try:
        assert call(url, "GET", "/v1/device", headers={"Origin": "http://127.0.0.1:5999"})[0] == 200
        for bad in ({"Origin": "http://127.0.0.1:5006"}, {"Host": "evil.example"}):
            assert call(url, "GET", "/v1/device", headers=bad)[0] == 403
        status, _, _ = call(url, "POST", "/v1/sweeps/head", SWEEP,
                            headers={"Content-Type": "text/plain"})  # fmt: skip
        assert status == 415
    finally:
        measured._IN_PROCESS["stop"]()
