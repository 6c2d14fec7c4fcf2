"""Measured results in SQLite (standard library only).

One row per measured point, keyed by everything that changes the time: device (kind and name),
implementation and its kernel version, plan, shapes, dtype and cache mode. Each measurement is
written in its own transaction in WAL mode with ``synchronous=FULL``, so a crash or a ``kill -9``
mid-sweep loses nothing already written and leaves the file consistent. A rerun looks points up
first and measures only the missing ones (unless forced).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass, fields

from ..model.validate import check_choice, check_int
from .timing import Timing

__all__ = [
    "PLANS",
    "INT_FIELDS",
    "TRACE_FIELDS",
    "Point",
    "ResultStore",
    "SCHEMA_VERSION",
    "StoreError",
]

SCHEMA_VERSION = 1


class StoreError(RuntimeError):
    """The file is not a sound result store of this version (damaged, foreign or newer)."""


#: Measured plans. Head sweep: ``dense_head``, ``sparse_head``. Amortized sweep: ``full_step``
#: (every layer with a KV cache, then the sparse head), ``amortized_step`` (state update, then the
#: sparse head), ``amortized_rerank`` (amortized step, the last layer exact, rescore top-r).
PLANS = ("dense_head", "sparse_head", "full_step", "amortized_step", "amortized_rerank")


@dataclass(frozen=True)
class Point:
    """What was measured. Fields a plan does not use are 0 (``k`` of the dense head, ``layers``
    and ``context`` of the head plans, ``rerank_r`` of all but the rerank)."""

    device: str
    impl: str
    version: str
    plan: str
    d: int
    vocab: int
    batch: int
    dtype: str
    k: int = 0
    layers: int = 0
    context: int = 0
    rerank_r: int = 0
    cache: str = "warm"

    def __post_init__(self):
        check_choice("plan", self.plan, PLANS)
        check_choice("cache", self.cache, ("warm", "cold"))
        for name in ("d", "vocab", "batch"):
            check_int(name, getattr(self, name), 1, None)
        for name in ("k", "layers", "context", "rerank_r"):
            check_int(name, getattr(self, name), 0, None)

    @property
    def key(self) -> str:
        """Canonical text key: every field, in declaration order."""
        return "|".join(f"{f.name}={getattr(self, f.name)}" for f in fields(self))

    def to_dict(self) -> dict:
        return asdict(self)


_POINT = tuple(f.name for f in fields(Point))
#: Point fields stored (and filtered) as integers.
INT_FIELDS = frozenset({"d", "vocab", "batch", "k", "layers", "context", "rerank_r"})
_TIMING = ("median_s", "p10_s", "p25_s", "p75_s", "p90_s", "mean_s", "min_s", "samples", "calls")

_CREATE = f"""
CREATE TABLE IF NOT EXISTS results (
    key TEXT PRIMARY KEY,
    {", ".join(f"{n} {'INTEGER' if n in INT_FIELDS else 'TEXT'} NOT NULL" for n in _POINT)},
    median_s REAL NOT NULL, p10_s REAL NOT NULL, p25_s REAL NOT NULL, p75_s REAL NOT NULL,
    p90_s REAL NOT NULL, mean_s REAL NOT NULL, min_s REAL NOT NULL,
    samples INTEGER NOT NULL, calls INTEGER NOT NULL, stable INTEGER NOT NULL,
    tokens_match INTEGER, env TEXT NOT NULL, created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS results_shape ON results (device, impl, dtype, plan, d, vocab);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS trace_steps (
    run TEXT NOT NULL, request TEXT NOT NULL, idx INTEGER NOT NULL,
    k INTEGER NOT NULL, forced INTEGER NOT NULL, forced_run INTEGER NOT NULL,
    position INTEGER NOT NULL, margin REAL, plan TEXT NOT NULL, seconds REAL NOT NULL,
    extra TEXT NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (run, request, idx)
);
"""
#: A decode trace's per-step columns; anything else a step records (predicted margins, the
#: measured seconds of the plans not run) goes into ``extra`` as JSON.
TRACE_FIELDS = ("request", "idx", "k", "forced", "forced_run", "position", "margin", "plan")


class ResultStore:
    """SQLite store of measurements; safe to share between threads (one lock, one connection).

    ``path=":memory:"`` keeps everything in memory (no WAL there).
    """

    def __init__(self, path=":memory:"):
        self.path = str(path)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, timeout=30.0)
        self._conn.row_factory = sqlite3.Row
        with self._lock:
            if self.path != ":memory:":
                self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            with self._conn:
                self._conn.executescript(_CREATE)
                self._conn.execute(
                    "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
        self.moved_aside = None  # where open(fresh=True) moved an older file
        self.writes = 0  # bumped by every put; lets callers cache derived results

    @classmethod
    def open(cls, path=":memory:", fresh: bool = False) -> ResultStore:
        """A store that passed its start-up checks, else :class:`StoreError` (one line).

        The checks: SQLite can read the file, ``PRAGMA integrity_check`` answers ``ok`` (every
        page, not just the first), and ``schema_version`` is :data:`SCHEMA_VERSION`.
        ``fresh=True`` first moves an existing file (and its ``-wal``/``-shm``) aside to
        ``<path>.<UTC time>.old`` and starts an empty store: nothing is deleted.
        """
        path = str(path)
        moved = _move_aside(path) if fresh and path != ":memory:" else None
        hint = f"start with --fresh to move {path!r} aside and begin an empty store"
        try:
            store = cls(path)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{path!r} is not a readable result store ({exc}); {hint}.") from None
        try:
            verdict = store.integrity()
            version = store.schema_version()
        except sqlite3.DatabaseError as exc:
            store.close()
            raise StoreError(f"{path!r} is damaged ({exc}); {hint}.") from None
        if verdict != "ok":
            store.close()
            raise StoreError(f"{path!r} is damaged (integrity_check: {verdict[:120]}); {hint}.")
        if version != str(SCHEMA_VERSION):
            store.close()
            raise StoreError(
                f"{path!r} has schema_version {version[:20]!r}; this build reads version "
                f"{SCHEMA_VERSION}; {hint}."
            )
        store.moved_aside = moved
        return store

    def schema_version(self) -> str:
        with self._lock:
            row = self._conn.execute(
                "SELECT value FROM meta WHERE name = 'schema_version'"
            ).fetchone()
        return "" if row is None else str(row[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def get(self, point: Point) -> dict | None:
        """The stored row of ``point``, or ``None``."""
        with self._lock:
            row = self._conn.execute("SELECT * FROM results WHERE key = ?", (point.key,)).fetchone()
        return _row(row) if row is not None else None

    def has(self, point: Point) -> bool:
        with self._lock:
            cur = self._conn.execute("SELECT 1 FROM results WHERE key = ?", (point.key,))
            return cur.fetchone() is not None

    def put(self, point: Point, timing: Timing, env: dict, tokens_match: bool | None) -> dict:
        """Store one measurement in one transaction (replacing an older one of the same key)."""
        values = {
            "key": point.key,
            **point.to_dict(),
            **{n: getattr(timing, n) for n in _TIMING},
            "stable": int(timing.stable),
            "tokens_match": None if tokens_match is None else int(bool(tokens_match)),
            "env": json.dumps(env, sort_keys=True),
            "created": time.time(),
        }
        names = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        with self._lock:
            with self._conn:
                self._conn.execute(
                    f"INSERT OR REPLACE INTO results ({names}) VALUES ({marks})",
                    tuple(values.values()),
                )
            self.writes += 1
        return _row(values)

    def query(self, limit: int = 10_000, **filters) -> list[dict]:
        """Rows whose point fields equal ``filters`` (e.g. ``plan='sparse_head', d=256``),
        oldest first, at most ``limit``."""
        limit = check_int("limit", limit, 1, None)
        unknown = set(filters) - set(_POINT)
        if unknown:
            raise ValueError(
                f"Unknown result filter(s) {sorted(unknown)}; allowed: {', '.join(_POINT)}."
            )
        where = " AND ".join(f"{n} = ?" for n in filters) or "1"
        args = [int(v) if n in INT_FIELDS else str(v) for n, v in filters.items()]
        sql = f"SELECT * FROM results WHERE {where} ORDER BY created, key LIMIT ?"
        with self._lock:
            rows = self._conn.execute(sql, (*args, limit)).fetchall()
        return [_row(r) for r in rows]

    def put_trace(self, run: str, steps) -> int:
        """Store one decode trace (rows of :data:`TRACE_FIELDS` + ``seconds`` + extras) under
        ``run`` in one transaction, replacing the same steps of an older write; returns rows."""
        if not isinstance(run, str) or not run:
            raise ValueError(f"The 'run' parameter must be a non-empty string. Got {run!r}.")
        now, rows = time.time(), []
        for st in steps:
            missing = [f for f in (*TRACE_FIELDS, "seconds") if f not in st]
            if missing:
                raise ValueError(f"trace step is missing {', '.join(missing)}")
            extra = {k: v for k, v in st.items() if k not in TRACE_FIELDS and k != "seconds"}
            rows.append(
                (run, str(st["request"]), int(st["idx"]), int(st["k"]), int(bool(st["forced"])))
                + (int(st["forced_run"]), int(st["position"]), st["margin"], str(st["plan"]))
                + (float(st["seconds"]), json.dumps(extra, sort_keys=True), now)
            )
        with self._lock:
            with self._conn:
                self._conn.executemany(
                    "INSERT OR REPLACE INTO trace_steps VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows
                )
            self.writes += 1
        return len(rows)

    def trace(self, run: str) -> list[dict]:
        """The steps of trace ``run`` in request and step order, extras merged back in."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT * FROM trace_steps WHERE run = ? ORDER BY rowid", (run,)
            ).fetchall()
        out = []
        for r in rows:
            d = dict(r)
            d.update(json.loads(d.pop("extra")))
            d.pop("run"), d.pop("created")
            d["forced"] = bool(d["forced"])
            out.append(d)
        return out

    def trace_runs(self) -> list[str]:
        with self._lock:
            rows = self._conn.execute("SELECT DISTINCT run FROM trace_steps ORDER BY run")
            return [r[0] for r in rows.fetchall()]

    def count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM results").fetchone()[0])

    def integrity(self) -> str:
        """``PRAGMA integrity_check``'s answer (``'ok'`` when sound)."""
        with self._lock:
            return str(self._conn.execute("PRAGMA integrity_check").fetchone()[0])


def _move_aside(path: str) -> str | None:
    """Rename ``path`` (and its WAL files) to ``<path>.<UTC time>.old``; the new name or None."""
    if not os.path.exists(path):
        return None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = f"{path}.{stamp}.old"
    n = 1
    while os.path.exists(target):
        n += 1
        target = f"{path}.{stamp}-{n}.old"
    os.replace(path, target)
    for suffix in ("-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.replace(path + suffix, target + suffix)
    return target


def _row(row) -> dict:
    out = dict(row)
    out["env"] = json.loads(out["env"]) if isinstance(out["env"], str) else out["env"]
    out["stable"] = bool(out["stable"])
    if out.get("tokens_match") is not None:
        out["tokens_match"] = bool(out["tokens_match"])
    return out
