"""``llmqp backend``: argparse wiring for the measurement service.

``add_backend_command(subparsers)`` adds the subcommand; its ``func`` takes the parsed arguments
and returns an exit code. Bad arguments print one line and exit with status 2; a port already in
use or a missing library prints one line and exits with status 1. No tracebacks.
"""

from __future__ import annotations

import argparse
import logging
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


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = -1
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be a positive {kind.__name__}, got {text!r}")
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
    p.add_argument("--busy-timeout", type=_positive(float), default=2.0,
                   help="seconds a synchronous sweep waits for the device before 503")  # fmt: skip
    p.set_defaults(func=run_backend)
    return p


def _fail(message: str, code: int = 1) -> int:
    print(f"llmqp backend: error: {message}", file=sys.stderr)
    return code


def run_backend(args) -> int:
    """Serve until interrupted; returns the exit code."""
    if args.device == "cuda" and args.impl == "numpy":
        return _fail("--impl numpy runs on the CPU only; use --impl torch with --device cuda", 2)
    from .service import create_server

    try:
        server = create_server(
            args.host, args.port, args.db, device=args.device, impl=args.impl,
            busy_timeout=args.busy_timeout, threads=args.threads,
        )  # fmt: skip
    except ValueError as exc:  # e.g. torch missing, no CUDA device
        return _fail(str(exc), 2)
    except OSError as exc:  # port in use, unwritable database path
        return _fail(f"cannot start on {args.host}:{args.port} with db {args.db!r}: {exc}")
    except Exception as exc:  # e.g. sqlite3.DatabaseError for a file that is not a database
        return _fail(f"{type(exc).__name__}: {exc}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    info = server.runner.info
    print(
        f"llmqp backend on {server.url}  ({info['device_name']}, {info['impl']}; "
        f"db {args.db or 'in memory'}; Ctrl-C stops)",
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
