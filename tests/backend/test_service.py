"""The HTTP service: answers, 4xx with clear messages, busy handling, concurrency, the CLI."""

import http.client
import json
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from app.cli.backend import add_backend_command
from app.measure.timing import TimingConfig
from app.serving.client import BackendClient, BackendUnavailable, start_in_process

from .conftest import FAST

ROOT = Path(__file__).resolve().parents[2]
#: At least 40 samples of 5 ms: 0.2 s a point, whatever the kernel.
SLOW = TimingConfig(warmup=1, min_samples=40, max_samples=40, max_time_s=60, min_sample_s=0.005)


@pytest.fixture
def service():
    url, stop = start_in_process(timing=FAST, busy_timeout=30.0)
    yield url
    stop()


def call(url, method, path, body=None, raw=None, headers=None):
    """``(status, parsed JSON, headers)`` of one request."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)  # a busy CI box
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    sent = {"Content-Type": "application/json"} if data is not None else {}
    conn.request(method, path, body=data, headers={**sent, **(headers or {})})
    resp = conn.getresponse()
    payload = json.loads(resp.read() or b"null")
    conn.close()
    return resp.status, payload, dict(resp.getheaders())


def test_device_and_index(service):
    status, info, headers = call(service, "GET", "/v1/device")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert info["impl"] == "numpy" and info["dtypes"] == ["float32"] and info["numpy"]
    assert info["peak"]["preset"] == "cpu" and info["limits"]["max_head_bytes"] > 0
    assert "POST /v1/sweeps/head" in call(service, "GET", "/")[1]["endpoints"]


def test_head_sweep_answer_beside_the_model(service):
    body = {"d": 64, "vocab": 1024, "batch": 2, "k": [64, 1, 16, 1024]}
    status, ans, _ = call(service, "POST", "/v1/sweeps/head", body)
    assert status == 200 and ans["k"] == [1, 16, 64, 1024]
    for plan in ("dense_head", "sparse_head"):
        col = ans["plans"][plan]
        assert len(col["median_s"]) == 4 and all(m > 0 for m in col["median_s"])
        assert all(a <= b <= c for a, b, c in zip(col["p10_s"], col["median_s"], col["p90_s"]))
        assert all(col["tokens_match"]) and len(col["model_s"]) == 4
    assert set(ans["crossover"]) >= {"measured_k", "measured_k_interp", "model_k", "k_flop"}
    assert ans["counts"] == {"points": 5, "measured": 5, "reused": 0}
    again = call(service, "POST", "/v1/sweeps/head", body)[1]
    assert again["counts"]["measured"] == 0
    assert again["plans"]["sparse_head"]["median_s"] == ans["plans"]["sparse_head"]["median_s"]


def test_amortized_sweep_results_and_calibration(service):
    assert call(service, "GET", "/v1/calibration")[0] == 409  # nothing measured yet
    body = {"d": 64, "layers": 2, "vocab": 512, "k": 32, "context": [0, 64, 256]}
    status, ans, _ = call(service, "POST", "/v1/sweeps/amortized", body)
    assert status == 200 and ans["context"] == [0, 64, 256]
    assert set(ans["plans"]) == {"full_step", "amortized_step", "amortized_rerank"}
    assert all(ans["plans"]["amortized_rerank"]["tokens_match"])
    assert len(ans["speedup"]["amortized_vs_full"]) == 3
    status, rows, _ = call(service, "GET", "/v1/results?plan=full_step&layers=2")
    assert status == 200 and rows["count"] == 3
    status, cal, _ = call(service, "GET", "/v1/calibration")
    assert status == 200 and cal["hardware"]["bandwidth"] > 0
    assert set(cal["errors"]) >= {"full_step", "amortized_step", "amortized_rerank", "all"}


def test_async_job_is_pollable(service):
    status, job, _ = call(service, "POST", "/v1/sweeps/head", {"d": 64, "vocab": 256,
                          "async": True})  # fmt: skip
    assert status == 202 and job["poll"] == f"/v1/jobs/{job['job']}"
    deadline = time.monotonic() + 60  # a deadline, not a speed check: CI machines may be busy
    while True:
        status, job, _ = call(service, "GET", job["poll"])
        if job["status"] == "done" or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert job["status"] == "done" and job["done"] == job["total"] == len(job["result"]["k"]) + 1
    assert call(service, "GET", "/v1/progress")[1]["job"] == job["job"]
    assert call(service, "GET", "/v1/jobs/nope")[0] == 404


@pytest.mark.parametrize(
    "path, body, status, message",
    [
        ("/v1/sweeps/head", {"d": 0, "vocab": 10}, 400, "The 'd' parameter must be an integer"),
        ("/v1/sweeps/head", {"d": 16384, "vocab": 262144}, 400, "limit is 2147483648 bytes"),
        ("/v1/sweeps/head", {"d": 8, "vocab": 10, "k": [11]}, 400, r"'k' parameter"),
        ("/v1/sweeps/head", {"d": 8, "vocab": 10, "k": list(range(1, 100))}, 400, "max_points"),
        ("/v1/sweeps/head", {"d": 8, "vocab": 10, "dtype": "bfloat16"}, 400, "'float32'"),
        ("/v1/sweeps/head", {"d": 8, "vocab": 10, "colour": 1}, 400, "Unknown parameter"),
        ("/v1/sweeps/head", {"d": 8}, 400, "Missing required parameter(s): vocab"),
        ("/v1/sweeps/head", [1, 2], 400, "must be a JSON object"),
        ("/v1/sweeps/head", {"d": 8, "vocab": 10, "async": "yes"}, 400, "'async'"),
        ("/v1/sweeps/amortized", {"d": 4096, "layers": 64, "vocab": 10}, 400, "max_model_bytes"),
        ("/v1/sweeps/amortized", {"d": 8, "layers": 1, "vocab": 10, "context": [-1]}, 400,
         "'context' parameter"),
        ("/v1/nowhere", None, 404, "No endpoint"),
    ],
)  # fmt: skip
def test_bad_requests_get_4xx_naming_the_problem(service, path, body, status, message):
    got, payload, _ = call(service, "POST" if body is not None else "GET", path, body)
    error = payload["error"]  # an unknown /v1 path answers in OpenAI's shape (issue 19)
    assert got == status and message in (error["message"] if isinstance(error, dict) else error)
    assert call(service, "GET", "/v1/device")[0] == 200  # still serving


def test_malformed_and_oversized_bodies(service):
    status, p, _ = call(service, "POST", "/v1/sweeps/head", raw=b"{not json")
    assert status == 400 and "not valid JSON" in p["error"]
    status, p, _ = call(service, "POST", "/v1/sweeps/head", raw=b"\xff\xfe")
    assert status == 400
    big = json.dumps({"d": 8, "vocab": 10, "k": [1] * 40_000}).encode()
    status, p, _ = call(service, "POST", "/v1/sweeps/head", raw=big)
    assert status == 413 and "max_body_bytes" in p["error"]
    status, p, headers = call(service, "GET", "/v1/sweeps/head")
    assert status == 405 and headers["Allow"] == "POST"
    status, p, _ = call(service, "GET", "/v1/results?d=abc")
    assert status == 400 and "'d' parameter" in p["error"]
    status, p, _ = call(service, "GET", "/v1/results?colour=red")
    assert status == 400 and "Unknown filter" in p["error"]
    # No Content-Length at all (hand-written request).
    host, port = urlsplit(service).hostname, urlsplit(service).port
    with socket.create_connection((host, port), timeout=10) as s:
        head = f"POST /v1/sweeps/head HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n"
        s.sendall(head.encode() + b"Content-Type: application/json\r\n\r\n")
        assert b" 411 " in s.recv(4096).split(b"\r\n")[0]
    with socket.create_connection((host, port), timeout=10) as s:  # not HTTP at all
        s.sendall(b"\x00\x01garbage\r\n\r\n")
        s.recv(4096)
    assert call(service, "GET", "/v1/device")[0] == 200


def test_twenty_concurrent_clients_get_correct_answers(service):
    def one(i):
        body = {"d": 32, "vocab": 256 + 16 * i, "k": [1, 8 + i]}
        status, ans, _ = call(service, "POST", "/v1/sweeps/head", body)
        assert status == 200, ans
        assert ans["params"]["vocab"] == 256 + 16 * i and ans["k"] == [1, 8 + i]
        assert all(ans["plans"]["sparse_head"]["tokens_match"])
        assert call(service, "GET", "/v1/device")[0] == 200
        return i

    with ThreadPoolExecutor(20) as pool:
        assert sorted(pool.map(one, range(20))) == list(range(20))
    assert call(service, "GET", "/v1/results?plan=dense_head")[1]["count"] == 20


def test_busy_device_answers_503_then_serves():
    url, stop = start_in_process(timing=SLOW, busy_timeout=0.2)
    try:
        long = {"d": 32, "vocab": 512, "k": [1, 2, 3, 4, 5, 6, 7, 8], "async": True}
        status, job, _ = call(url, "POST", "/v1/sweeps/head", long)
        assert status == 202
        deadline = time.monotonic() + 30  # wait until the worker holds the device
        while not call(url, "GET", "/v1/progress")[1]["running"]:
            assert time.monotonic() < deadline, "the queued job never started"
            time.sleep(0.01)
        other = {"d": 32, "vocab": 300, "k": [1]}
        status, p, headers = call(url, "POST", "/v1/sweeps/head", other)
        assert status == 503 and "busy" in p["error"] and headers["Retry-After"] == "1"
        progress = call(url, "GET", "/v1/progress")[1]
        assert progress["running"] and progress["total"] == 9 and progress["done"] < 9
        client = BackendClient(url)
        answer = client.sweep_head(32, 300, k=[1])  # async + polling: queues behind the job
        assert answer["k"] == [1]
        assert client.job(job["job"])["status"] == "done"
        status, p, _ = call(url, "POST", "/v1/sweeps/head", other)  # stored: no device needed
        assert status == 200 and p["counts"]["measured"] == 0
    finally:
        stop()


def test_client_round_trip_and_unavailable(service):
    client = BackendClient(service, timeout=30)
    seen = []
    ans = client.sweep_head(32, 512, k=[1, 512], on_progress=seen.append)
    assert ans["k"] == [1, 512] and seen[-1]["status"] == "done"
    body = client.sweep_amortized(32, 1, 512, k=8, context=[0, 16])
    assert body["context"] == [0, 16]
    assert len(client.results(plan="sparse_head")) == 2
    assert client.calibration()["points"] == 3 + 5
    assert client.progress()["status"] == "done"
    with pytest.raises(Exception, match="HTTP 400"):
        client.sweep_head(0, 10)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    with pytest.raises(BackendUnavailable, match="No measurement backend"):
        BackendClient(f"http://127.0.0.1:{free}", timeout=2).device()
    with pytest.raises(ValueError, match="'url' parameter"):
        BackendClient("localhost:80")


def _parser():
    import argparse

    p = argparse.ArgumentParser(prog="llmqp")
    add_backend_command(p.add_subparsers(dest="command"))
    return p


def test_cli_parses_and_rejects_in_one_line(capsys):
    args = _parser().parse_args(["backend", "--port", "0", "--device", "cpu"])
    assert args.host == "127.0.0.1" and args.port == 0 and callable(args.func)
    for bad in (["backend", "--port", "70000"], ["backend", "--device", "tpu"]):
        with pytest.raises(SystemExit) as exc:
            _parser().parse_args(bad)
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("llmqp backend: error:")
    args = _parser().parse_args(["backend", "--device", "cuda", "--impl", "numpy"])
    assert args.func(args) == 2
    assert "runs on the CPU only" in capsys.readouterr().err


def test_cli_port_in_use_and_bad_arguments_exit_without_traceback():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        run = subprocess.run(
            [sys.executable, "-m", "app.backend", "--port", str(port)],
            capture_output=True, text=True, cwd=ROOT, timeout=60,
        )  # fmt: skip
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and "cannot start" in run.stderr
    run = subprocess.run(
        [sys.executable, "-m", "app.backend", "--busy-timeout", "-3"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1


def test_cli_serves_until_interrupted():
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.backend", "--port", "0", "--no-model"],
        stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        line = proc.stderr.readline()
        assert line.startswith("llmqp backend on http://127.0.0.1:")
        url = line.split()[3]
        assert BackendClient(url).device()["impl"] == "numpy"
    finally:
        proc.send_signal(2)  # SIGINT: a clean stop
        assert proc.wait(timeout=20) == 0


def test_server_survives_a_thread_storm_of_bad_requests(service):
    def bad(i):
        return call(service, "POST", "/v1/sweeps/head", {"d": -i, "vocab": 10})[0]

    with ThreadPoolExecutor(16) as pool:
        assert set(pool.map(bad, range(64))) == {400}
    assert threading.active_count() < 100
    assert call(service, "GET", "/v1/device")[0] == 200
