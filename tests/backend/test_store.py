"""The SQLite store: keys, filters, and nothing lost or corrupted by a kill -9 mid-sweep."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.measure.kernels import get_kernels
from app.measure.store import Point, ResultStore
from app.measure.sweeps import HeadSweep, Runner
from app.measure.timing import summarize

from .conftest import FAST

ROOT = Path(__file__).resolve().parents[2]


def _point(**kw):
    base = dict(device="cpu:test", impl="numpy", version="numpy-1", plan="sparse_head", d=64,
                vocab=512, batch=1, dtype="float32", k=8)  # fmt: skip
    return Point(**{**base, **kw})


def _timing(median):
    return summarize([median * 0.9, median, median * 1.1], calls=1, target_rel_spread=0.05)


def test_put_get_query_roundtrip(tmp_path):
    with ResultStore(tmp_path / "r.sqlite") as store:
        a, b = _point(k=8), _point(k=16)
        assert store.get(a) is None and not store.has(a)
        row = store.put(a, _timing(1e-3), {"numpy": "2"}, True)
        store.put(b, _timing(2e-3), {}, None)
        assert store.has(a) and store.count() == 2
        got = store.get(a)
        assert got["median_s"] == row["median_s"] == 1e-3
        assert got["env"] == {"numpy": "2"} and got["tokens_match"] is True
        assert store.get(b)["tokens_match"] is None
        assert [r["k"] for r in store.query(plan="sparse_head", d=64)] == [8, 16]
        assert store.query(k=16)[0]["median_s"] == 2e-3
        assert store.query(limit=1)[0]["k"] == 8
        store.put(a, _timing(5e-3), {}, True)  # a forced re-measurement replaces the row
        assert store.count() == 2 and store.get(a)["median_s"] == 5e-3
        with pytest.raises(ValueError, match=r"Unknown result filter\(s\) \['colour'\]"):
            store.query(colour="red")
        with pytest.raises(ValueError, match=r"'limit' parameter must be an integer in \[1, inf\)"):
            store.query(limit=-1)  # SQLite would read a negative LIMIT as no limit
        assert store.integrity() == "ok"
    conn = sqlite3.connect(tmp_path / "r.sqlite")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT value FROM meta").fetchone()[0] == "1"


def test_keys_differ_in_every_field():
    base = _point()
    keys = {base.key}
    for change in [dict(device="cpu:x"), dict(impl="torch"), dict(version="numpy-2"),
                   dict(d=65), dict(vocab=513), dict(batch=2), dict(dtype="bfloat16"),
                   dict(k=9), dict(layers=1), dict(context=1), dict(rerank_r=1),
                   dict(cache="cold"), dict(plan="dense_head", k=0)]:  # fmt: skip
        keys.add(_point(**change).key)
    assert len(keys) == 14


def test_point_validation():
    with pytest.raises(ValueError, match="'plan' parameter must be one of"):
        _point(plan="magic")
    with pytest.raises(ValueError, match=r"'d' parameter must be an integer in \[1, inf\)"):
        _point(d=0)


CHILD = """
import json, sys
from app.measure.kernels import get_kernels
from app.measure.store import ResultStore
from app.measure.sweeps import HeadSweep, Runner
from app.measure.timing import TimingConfig

store = ResultStore(sys.argv[1])
put = store.put

def logged_put(point, timing, env, match):
    row = put(point, timing, env, match)  # committed when this returns
    print(json.dumps({"key": row["key"], "median_s": row["median_s"]}), flush=True)
    return row

store.put = logged_put
slow = TimingConfig(warmup=0, min_samples=10, max_samples=10, max_time_s=60, min_sample_s=0.01)
Runner(get_kernels("numpy"), store, slow).run(HeadSweep(d=64, vocab=2048, k=tuple(range(1, 41))))
print("FINISHED", flush=True)
"""


def test_kill_9_mid_sweep_loses_nothing_and_rerun_measures_only_the_rest(tmp_path):
    db = tmp_path / "sweep.sqlite"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(db)], stdout=subprocess.PIPE, text=True, env=env,
        cwd=ROOT,
    )  # fmt: skip
    written = []
    deadline = time.monotonic() + 30
    try:
        while len(written) < 3 and time.monotonic() < deadline:
            line = child.stdout.readline()
            assert line and "FINISHED" not in line, "the sweep ended before it was killed"
            written.append(json.loads(line))
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL and len(written) >= 3

    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    store = ResultStore(db)
    for w in written:  # every row the child committed is there, unchanged
        rows = [r for r in store.query() if r["key"] == w["key"]]
        assert len(rows) == 1 and rows[0]["median_s"] == w["median_s"]
    before = {r["key"]: (r["median_s"], r["created"]) for r in store.query()}
    assert 3 <= len(before) < 41

    sweep = HeadSweep(d=64, vocab=2048, k=tuple(range(1, 41)))
    runner = Runner(get_kernels("numpy"), store, FAST)
    assert len(runner.missing(sweep)) == 41 - len(before)
    answer = runner.run(sweep)
    assert answer["counts"] == {"points": 41, "measured": 41 - len(before), "reused": len(before)}
    after = {r["key"]: (r["median_s"], r["created"]) for r in store.query()}
    assert len(after) == 41 and all(after[k] == v for k, v in before.items())
    assert runner.run(sweep)["counts"]["measured"] == 0  # a rerun is all cache hits
    assert store.integrity() == "ok"
    store.close()
