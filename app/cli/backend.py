"""``llmqp backend``: argparse wiring for the measurement service.

``add_backend_command(subparsers)`` adds the subcommand; its ``func`` takes the parsed arguments
and returns an exit code. Bad arguments print one line and exit with status 2; a port already in
use or a missing library prints one line and exits with status 1. No tracebacks.
"""

from __future__ import annotations

import argparse
import logging
import math
import signal
import sys
import threading

__all__ = ["add_backend_command", "run_backend", "DEFAULT_PORT"]

DEFAULT_PORT = 8765


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, 65535], got {text!r}")
    return value


def _positive(kind, hi=None):
    """A positive, finite ``kind`` no larger than ``hi``."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = -1
        if not (value > 0 and math.isfinite(value) and (hi is None or value <= hi)):
            top = "" if hi is None else f" no larger than {hi}"
            raise argparse.ArgumentTypeError(
                f"must be a positive finite {kind.__name__}{top}, got {text!r}"
            )
        return value

    return parse


def _one_line_errors(parser: argparse.ArgumentParser) -> None:
    """argparse prints usage and the message; we print only ``prog: error: message``."""

    def error(message):
        print(f"{parser.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)

    parser.error = error


def add_backend_command(subparsers) -> argparse.ArgumentParser:
    """Add ``backend`` to an argparse sub-parser collection; returns its parser."""
    p = subparsers.add_parser(
        "backend",
        help="run the measurement service (HTTP JSON, 127.0.0.1 by default)",
        description="Time real kernels (dense/sparse head, amortized vs full step), store the "
        "results in SQLite and serve them with the calibrated cost model as HTTP JSON.",
    )
    _one_line_errors(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=DEFAULT_PORT, help="port (0: any free one)")
    p.add_argument("--db", default=None, help="SQLite file for results (default: in memory)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--impl", choices=("numpy", "torch"), default=None,
                   help="kernel backend (default: numpy on cpu, torch on cuda)")  # fmt: skip
    p.add_argument("--threads", type=_positive(int), default=None,
                   help="BLAS threads for the numpy backend (needs threadpoolctl)")  # fmt: skip
    p.add_argument("--busy-timeout", type=_positive(float, 3600), default=2.0,
                   help="seconds a synchronous sweep waits for the device before 503")  # fmt: skip
    p.add_argument(
        "--allow-host", action="append", default=[], metavar="NAME[:PORT]",
        help="another Host header to accept (repeatable; default: the bound address)",
    )  # fmt: skip
    p.add_argument(
        "--allow-origin", action="append", default=None, metavar="URL",
        help="a browser Origin allowed to call the service (repeatable; default: the "
        "service's own and the app's, http://127.0.0.1:5006)",
    )  # fmt: skip
    p.add_argument(
        "--fresh", action="store_true",
        help="move an existing --db aside (renamed, kept) and start an empty store",
    )  # fmt: skip
    p.add_argument(
        "--model", default=None,
        help="GGUF model to decode with (default: the fetched SmolLM2-135M-Instruct)",
    )  # fmt: skip
    p.add_argument(
        "--decode-deadline", type=_positive(float, 86400), default=60.0, metavar="SECONDS",
        help="wall-clock seconds a running decode may hold the device; it then ends with the "
        "tokens so far (finish_reason 'deadline'), and a request priced above it is refused "
        "(default 60)",
    )  # fmt: skip
    p.add_argument(
        "--full-deadline", type=_positive(float, 86400), default=10.0, metavar="SECONDS",
        help="the same bound for the experiment-only plan 'full' (default 10)",
    )  # fmt: skip
    p.add_argument(
        "--max-batch", type=_positive(int, 256), default=16, metavar="N",
        help="decodes sharing one body pass (continuous batching; default 16; 1: one at a time)",
    )  # fmt: skip
    p.add_argument(
        "--max-batch-tokens", type=_positive(int, 65536), default=256, metavar="N",
        help="tokens one body pass runs, every decode's new tokens together; a longer prompt "
        "is prefilled in chunks over several passes (default 256)",
    )  # fmt: skip
    p.add_argument(
        "--kv-budget", type=_positive(int, 1 << 20), default=2048, metavar="MIB",
        help="KV-cache memory the running decodes may reserve together, in MiB (default 2048); "
        "more requests wait, a full queue answers 429",
    )  # fmt: skip
    p.add_argument(
        "--no-model", action="store_true",
        help="serve measurements only: no decoding endpoint, no model loaded",
    )  # fmt: skip
    p.set_defaults(func=run_backend)
    return p


def _fail(message: str, code: int = 1) -> int:
    print(f"llmqp backend: error: {message}", file=sys.stderr)
    return code


def _load_engine(args):
    """``(engine or None, a short note)``: the model is loaded once, before serving."""
    if args.no_model:
        return None, "decoding off (--no-model)"
    try:
        from app.engine.engine import Engine
    except ImportError as exc:
        return None, f"decoding off (engine not installed: {exc})"
    try:
        engine = Engine.load(args.model, device=args.device)
    except (ValueError, OSError) as exc:
        return None, f"decoding off ({exc})"
    return engine, f"decoding {engine.info().get('model', 'model')}"


def _batch_limits(args):
    """The scheduler's bounds from the flags (None without the engine installed)."""
    try:
        from app.engine.batch_limits import BatchLimits
    except ImportError:
        return None
    return BatchLimits(max_batch=args.max_batch, max_tokens=args.max_batch_tokens,
                       kv_bytes=args.kv_budget << 20, max_waiting=64)  # fmt: skip


def run_backend(args) -> int:
    """Serve until interrupted; returns the exit code."""
    if args.device == "cuda" and args.impl == "numpy":
        return _fail("--impl numpy runs on the CPU only; use --impl torch with --device cuda", 2)
    from ..measure.limits import Limits
    from ..measure.store import StoreError
    from ..serving.service import create_server

    if args.fresh and not args.db:
        return _fail("--fresh needs --db (an in-memory store is always fresh)", 2)
    engine, note = _load_engine(args)
    if engine is None and args.model is not None:
        return _fail(note, 2)
    try:
        server = create_server(
            args.host, args.port, args.db, device=args.device, impl=args.impl,
            busy_timeout=args.busy_timeout, threads=args.threads, allow_hosts=args.allow_host,
            allow_origins=args.allow_origin, engine=engine, fresh=args.fresh,
            limits=Limits(decode_deadline_s=args.decode_deadline,
                          full_deadline_s=args.full_deadline),
            batch_limits=_batch_limits(args),
        )  # fmt: skip
    except StoreError as exc:  # damaged, foreign or newer store: one line, nothing touched
        return _fail(str(exc))
    except ValueError as exc:  # e.g. torch missing, no CUDA device
        return _fail(str(exc), 2)
    except OSError as exc:  # port in use, bad address, unwritable database path
        return _fail(f"cannot start on {args.host}:{args.port} with db {args.db!r}: {exc}")
    except Exception as exc:  # e.g. sqlite3.DatabaseError for a file that is not a database
        return _fail(f"{type(exc).__name__}: {exc}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    info = server.runner.info
    moved = server.runner.store.moved_aside
    print(
        f"llmqp backend on {server.url}  ({info['device_name']}, {info['impl']}; "
        f"db {args.db or 'in memory'}{'; old db moved to ' + moved if moved else ''}; "
        f"{note}; Ctrl-C stops)",
        file=sys.stderr,
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the close
        server.close()
    return 0


def main(argv=None) -> int:
    """``python -m app.backend``: the same subcommand on its own."""
    parser = argparse.ArgumentParser(prog="llmqp")
    add_backend_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["backend", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)
