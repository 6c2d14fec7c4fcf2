"""A short load test of the backend: concurrent clients mixing sweeps and decodes, 127.0.0.1 only.

Usage: ``python bench/service_load.py [--clients 50] [--rounds 1] [--deadline 300]``, or
``--streaming 1,4,8,16`` for the continuous-batching load (:mod:`stream_load`: concurrent
streaming function-call completions at each concurrency, tokens/s, time to first token,
per-token latency, exactness against C = 1; ``--max-batch`` is the server's, by default the
largest level or 16; each level runs against a fresh server after one unmeasured warm-up
request). ``--streaming 1,4,8,16,32 --bfcl 32`` sends BFCL requests instead: every level the
same 32 (the first 8 of each category, mixed), each compared with its C = 1 decode; results in
``bench/results/service_stream_bfcl.json``.

It starts ``python -m app.backend --port 0`` (decoding the fetched model when present, else
measurements only, said in the output), runs ``--clients`` threads of ``--rounds`` requests each
(even clients: a head sweep, submitted as a job and polled every 0.5 s, half of them at a shape
of their own and half at one shared shape; odd ones: a chat completion under a choices
grammar), checks every answer, and reports the 5xx count,
p50/p99 latency per kind, the server's peak resident memory (VmHWM) and its baseline after
start-up. Bounded in count and time: at most clients × rounds requests plus polls, and the
whole run stops at ``--deadline`` seconds. Results go to ``bench/results/service_load.json``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

CHOICES = ["red", "green", "blue"]


def _request(port, method, path, body=None, timeout=300):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if data is not None else {}
    conn.request(method, path, body=data, headers=headers)
    resp = conn.getresponse()
    payload = json.loads(resp.read() or b"null")
    conn.close()
    return resp.status, payload


def _vm(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


class Load:
    def __init__(self, port, model, deadline):
        self.port, self.model, self.deadline = port, model, deadline
        self.lock = threading.Lock()
        self.latency = {"sweep": [], "decode": []}
        self.statuses: dict = {}
        self.wrong: list = []

    def _note(self, status):
        with self.lock:
            self.statuses[status] = self.statuses.get(status, 0) + 1

    def sweep(self, i, r):
        # half the sweep clients ask for a shape of their own (measured), half for one shared
        # shape (measured once, then answered from the store without the device)
        vocab = 512 + 32 * i + 8 * r if i % 4 == 0 else 4096
        body = {"d": 64, "vocab": vocab, "k": [1, 16], "async": True}
        t0 = time.monotonic()
        status, job = _request(self.port, "POST", "/v1/sweeps/head", body)
        self._note(status)
        while status in (200, 202) and job["status"] in ("queued", "running"):
            if time.monotonic() > self.deadline:
                self.wrong.append(f"sweep {i}/{r}: past the deadline")
                return
            time.sleep(0.5)
            status, job = _request(self.port, "GET", job["poll"])
            self._note(status)
        dt = time.monotonic() - t0
        ans = (job or {}).get("result") or {}
        ok = (ans.get("k") == [1, 16] and ans.get("params", {}).get("vocab") == vocab
              and all(ans["plans"]["sparse_head"]["tokens_match"]))  # fmt: skip
        with self.lock:
            self.latency["sweep"].append(dt)
            if not ok:
                self.wrong.append(f"sweep {i}/{r}: status {status}, job {str(job)[:200]}")

    def decode(self, i, r):
        ask = [{"role": "user", "content": f"Client {i} asks: pick a colour."}]
        body = {"model": self.model, "max_tokens": 6, "choices": CHOICES, "messages": ask}
        t0 = time.monotonic()
        status, out = _request(self.port, "POST", "/v1/chat/completions", body)
        dt = time.monotonic() - t0
        self._note(status)
        ok = status == 200 and out["choices"][0]["message"]["content"] in CHOICES
        ok = ok and out["usage"]["completion_tokens"] == len(out["llmqp"]["steps"])
        with self.lock:
            self.latency["decode"].append(dt)
            if not ok:
                self.wrong.append(f"decode {i}/{r}: status {status}, {str(out)[:200]}")

    def client(self, i, rounds, decoding):
        for r in range(rounds):
            if time.monotonic() > self.deadline:
                return
            if decoding and i % 2:
                self.decode(i, r)
            else:
                self.sweep(i, r)


def _pct(values, q):
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def _start(extra=()):
    """(process, port) of ``python -m app.backend --port 0`` (None port: it did not start)."""
    cmd = [sys.executable, "-m", "app.backend", "--port", "0", "--busy-timeout", "30", *extra]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    line = proc.stderr.readline()
    if "llmqp backend on http://127.0.0.1:" not in line:
        print(f"the backend did not start: {line.strip()}", file=sys.stderr)
        return proc, None
    threading.Thread(target=proc.stderr.read, daemon=True).start()  # drain its log
    return proc, int(line.split()[3].rsplit(":", 1)[1])


def _stop(proc) -> None:
    proc.send_signal(2)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def _streaming(args) -> int:
    """The continuous-batching load: each level of ``--streaming`` against a fresh server (its
    prompt-prefix cache empty) after one unmeasured warm-up request."""
    from stream_load import bfcl_requests, chat_body, function_calls, run_level, warm_up

    levels = [int(c) for c in args.streaming.split(",")]
    if not all(1 <= c <= 64 for c in levels):
        raise SystemExit(f"--streaming levels must be in [1, 64], got {args.streaming}")
    max_batch = args.max_batch or max(16, *levels)
    server = ["--max-batch", str(max_batch)]
    if args.max_batch_tokens is not None:
        server += ["--max-batch-tokens", str(args.max_batch_tokens)]
    report = {"max_batch": max_batch, "max_batch_tokens": args.max_batch_tokens,
              "max_tokens": args.max_tokens, "levels": []}  # fmt: skip
    if args.bfcl:
        reqs = bfcl_requests(args.bfcl, args.max_tokens)
        bodies = [chat_body(r, args.max_tokens) for r in reqs]
        server += ["--decode-deadline", str(args.deadline)]  # the bench's bound, not 60 s
        report |= {"workload": "bfcl", "request_ids": [r["id"] for r in reqs]}
    else:
        bodies = function_calls(HERE / "workload" / "requests.jsonl", args.max_tokens)
    report["server_flags"] = server
    solo = None
    for c in levels:
        proc, port = _start(server)
        if port is None:
            return 1
        load = os.getloadavg()
        try:
            model = _request(port, "GET", "/v1/models")[1]["data"][0]["id"]
            report.setdefault("baseline_rss_bytes", _vm(proc.pid, "VmRSS"))
            warm = warm_up(port, model, bodies[0], args.deadline)
            level = run_level(port, model, bodies, c, args.rounds, args.deadline,
                              lambda pid=proc.pid: _vm(pid, "VmHWM"), bool(args.bfcl))  # fmt: skip
        finally:
            _stop(proc)
        level["warm_up_status"] = warm
        level["load_average"] = {"start": load, "end": os.getloadavg()}
        outputs = level.pop("outputs")
        if solo is None:
            solo = outputs
            report["first_level"] = c
            name = (lambda n: bodies[int(n)]["id"]) if args.bfcl else str
            report["tokens_first_level"] = {name(n): outputs[n] for n in sorted(outputs, key=int)}
        same = [outputs[n] == solo[n] for n in outputs if n in solo]
        level["exact_vs_first_level"] = f"{sum(same)}/{len(same)}"
        level["not_exact"] = [n for n in outputs if n in solo and outputs[n] != solo[n]]
        report["levels"].append(level)
        print(json.dumps(level), file=sys.stderr, flush=True)
    name = "service_stream_bfcl.json" if args.bfcl else "service_stream.json"
    out = Path(args.out or HERE / "results" / name)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


def _check_bfcl(p, args) -> None:
    """``--bfcl N`` at the boundary: with --streaming, N in [largest level, 400], one round."""
    from stream_load import BFCL_MAX

    if not args.streaming:
        p.error("--bfcl needs --streaming (the levels it is sent at)")
    try:
        top = max(int(c) for c in args.streaming.split(","))
    except ValueError:
        p.error(f"--streaming must be comma-separated integers, got {args.streaming!r}")
    if not top <= args.bfcl <= BFCL_MAX:
        p.error(f"--bfcl must be in [{top}, {BFCL_MAX}] (at least the largest --streaming "
                f"level, so every client has a request), got {args.bfcl}")  # fmt: skip
    if args.rounds != 1:
        p.error(f"--rounds must be 1 with --bfcl (every level sends the N requests once), "
                f"got {args.rounds}")  # fmt: skip


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--deadline", type=float, default=300.0, help="seconds for the whole run")
    p.add_argument("--out", default=None, help="default bench/results/service_load.json "
                   "(service_stream.json with --streaming)")  # fmt: skip
    p.add_argument("--streaming", default=None, help="concurrency levels, e.g. 1,4,8,16")
    p.add_argument("--max-batch", type=int, default=None,
                   help="the server's --max-batch (default: the largest level, >= 16)")  # fmt: skip
    p.add_argument("--max-tokens", type=int, default=24, help="per streamed request")
    p.add_argument("--bfcl", type=int, default=None, metavar="N",
                   help="with --streaming: each level sends the first N BFCL requests")  # fmt: skip
    p.add_argument("--max-batch-tokens", type=int, default=None,
                   help="the server's --max-batch-tokens (default: the server's)")  # fmt: skip
    args = p.parse_args(argv)
    if not (1 <= args.clients <= 200 and 1 <= args.rounds <= 20 and 0 < args.deadline <= 900):
        p.error("--clients in [1, 200], --rounds in [1, 20], --deadline in (0, 900]")
    if args.max_batch is not None and not 1 <= args.max_batch <= 256:
        p.error(f"--max-batch must be in [1, 256], got {args.max_batch}")
    if not 1 <= args.max_tokens <= 4096:
        p.error(f"--max-tokens must be in [1, 4096], got {args.max_tokens}")
    if args.bfcl is not None:
        _check_bfcl(p, args)
    if args.streaming:
        return _streaming(args)

    from app.engine.fetch import default_model_path

    decoding = default_model_path().exists()
    cmd = [sys.executable, "-m", "app.backend", "--port", "0", "--busy-timeout", "30"]
    if not decoding:
        cmd.append("--no-model")
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        line = proc.stderr.readline()
        if "llmqp backend on http://127.0.0.1:" not in line:
            print(f"the backend did not start: {line.strip()}", file=sys.stderr)
            return 1
        port = int(line.split()[3].rsplit(":", 1)[1])
        threading.Thread(target=proc.stderr.read, daemon=True).start()  # drain its log
        model = None
        if decoding:
            model = _request(port, "GET", "/v1/models")[1]["data"][0]["id"]
        baseline = _vm(proc.pid, "VmRSS")
        load = Load(port, model, time.monotonic() + args.deadline)
        t0 = time.monotonic()
        with ThreadPoolExecutor(args.clients) as pool:
            for f in [pool.submit(load.client, i, args.rounds, decoding)
                      for i in range(args.clients)]:  # fmt: skip
                f.result()
        wall = time.monotonic() - t0
        status, _ = _request(port, "GET", "/v1/device")
        report = {
            "clients": args.clients,
            "rounds": args.rounds,
            "decoding": decoding,
            "wall_s": round(wall, 2),
            "requests_by_status": {str(k): v for k, v in sorted(load.statuses.items())},
            "5xx": sum(v for k, v in load.statuses.items() if k >= 500),
            "wrong_answers": load.wrong[:10],
            "n_wrong": len(load.wrong),
            "device_after": status,
            "peak_rss_bytes": _vm(proc.pid, "VmHWM"),
            "baseline_rss_bytes": baseline,
            "latency_s": {
                kind: {"n": len(v), "p50": _pct(v, 0.5), "p99": _pct(v, 0.99)}
                for kind, v in load.latency.items()
            },
        }
    finally:
        proc.send_signal(2)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    out = Path(args.out or HERE / "results" / "service_load.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    ok = report["5xx"] == 0 and not report["n_wrong"] and report["device_after"] == 200
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
