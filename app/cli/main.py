"""``llmqp``: the command line. ``bench``, ``explain``, ``serve``, ``export``, ``backend``,
``model``, ``decode``.

Bad arguments print one line (``llmqp: error: ...``) and exit with status 2; no tracebacks.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

__all__ = ["main", "build_parser"]


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one clear line instead of usage + message
        raise SystemExit(_fail(f"{self.prog}: error: {message}"))


def _fail(line: str) -> int:
    print(line, file=sys.stderr)
    return 2


def _progress_printer(stream=None):
    """A progress line per stage: redrawn in place on a terminal, one line per quarter in logs
    (on ``stream``, default the current ``sys.stderr``)."""
    stream = stream or sys.stderr
    tty = stream.isatty()
    last = {}

    def show(stage, done, total):
        pct = int(100 * done / max(total, 1))
        step = pct if tty else pct // 25 * 25
        if last.get(stage) == step:
            return
        last[stage] = step
        line = f"  {stage:<22} {pct:3d}%  ({done}/{total} steps)"
        if tty:
            print("\r" + line, end="\n" if done >= total else "", file=stream, flush=True)
        else:
            print(line, file=stream, flush=True)

    return show


def _cmd_bench(args) -> int:
    from ..harness import run_bench

    progress = None if args.quiet else _progress_printer()
    if args.workload == "real":
        from ..harness_real import run_bench_real
        from ..router.real_trace import SHIPPED_TRACE

        steps = 5_000 if args.steps is None else args.steps
        trace = args.trace or SHIPPED_TRACE
        summary = run_bench_real(args.seed, steps, args.out, trace, progress=progress)
        f = summary["fixed"]
        print(f"wrote {args.out}/{{regret.csv, amortization.csv, summary.json}} (real trace)")
        for name, r in summary["routers"].items():
            print(
                f"{name}: loss {r['total_loss']:.1f} vs oracle {f['oracle_loss']:.1f}, "
                f"always-dense {f['always_dense_loss']:.1f}, best fixed {f['best_fixed_plan']} "
                f"{f['best_fixed_loss']:.1f}"
            )
        return 0
    if args.trace:
        raise ValueError("--trace needs --workload real")
    args.steps = 20_000 if args.steps is None else args.steps
    summary = run_bench(args.seed, args.steps, args.out, progress=progress)
    lin = summary["routers"]["linucb"]
    pct = "n/a" if lin["regret_pct"] is None else f"{lin['regret_pct']:.2f}%"
    slope = "n/a" if lin["slope"] is None else f"{lin['slope']:.2f}"
    print(
        f"wrote {args.out}/{{crossover.csv, amortization.csv, regret.csv, summary.json}}\n"
        f"LinUCB: loss {lin['total_loss']:.2f} vs oracle {lin['oracle_loss']:.2f} "
        f"({pct} above), best fixed plan {summary['fixed']['best_fixed_plan']} "
        f"{summary['fixed']['best_fixed_loss']:.2f}, always-dense "
        f"{summary['fixed']['always_dense_loss']:.2f}; regret slope {slope}"
    )
    return 0


def _cmd_explain(args) -> int:
    from ..model import Scenario, explain_dict, explain_text

    fields = ("d", "vocab", "k", "hardware", "batch", "dtype", "layers", "context", "tau", "eps",
              "forced_run")  # fmt: skip
    given = {f: getattr(args, f) for f in fields if getattr(args, f) is not None}
    given["error_budget"] = args.error_budget
    s = Scenario.from_model(args.model, **given) if args.model is not None else Scenario(**given)
    print(json.dumps(explain_dict(s), indent=2) if args.json else explain_text(s))
    return 0


def _check_bind(address: str, port: int) -> str | None:
    """Why ``address:port`` cannot be served (bad address, port in use), else None."""
    import socket

    try:
        infos = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        return f"bad --address {address!r}: {exc}"
    family, _, _, _, sockaddr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(sockaddr)
        except OSError as exc:
            return f"cannot serve on {address}:{port}: {exc.strerror or exc}"
    return None


def _cmd_serve(args) -> int:
    main_py = Path(__file__).with_name("main.py")
    env = dict(os.environ)
    if args.backend:
        env["LLMQP_BACKEND_URL"] = args.backend
    problem = _check_bind(args.address, args.port)
    if problem:
        return _fail(f"llmqp serve: error: {problem}")
    origin = f"{args.address}:{args.port}"
    env["LLMQP_APP_ORIGIN"] = f"http://{origin}"  # the in-process backend allows this origin
    cmd = [
        sys.executable,
        "-m",
        "panel",
        "serve",
        str(main_py),
        "--address",
        args.address,
        "--port",
        str(args.port),
        "--allow-websocket-origin",
        origin,
        "--allow-websocket-origin",
        f"localhost:{args.port}",
    ]
    if args.show:
        cmd.append("--show")
    print(f"serving LLM-QP on http://{origin}/main  (Ctrl-C stops)", file=sys.stderr)
    try:
        return subprocess.call(cmd, env=env)
    except KeyboardInterrupt:
        return 0


def _cmd_export(args) -> int:
    from ..widgets.export import export_figures

    for path in export_figures(args.out):
        print(path)
    return 0


def _cmd_lower(args) -> int:
    from .lower import run_lower

    return run_lower(args)


def _int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    return value


def _port(text):
    value = _int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be an integer in [1, 65535], got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="llmqp", description="LLM-QP: query planning for constrained decoding.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    b = sub.add_parser("bench", help="write the paper's three results (CSV + summary.json)")
    b.add_argument("--seed", type=_int, default=0)
    b.add_argument("--steps", type=_int, default=None, help="20000 (synthetic), 5000 (real)")
    b.add_argument("--workload", choices=("synthetic", "real"), default="synthetic")
    b.add_argument("--trace", default=None, help="a trace file for --workload real")
    b.add_argument("--out", default="out/bench")
    b.add_argument("--quiet", action="store_true", help="no progress line")
    b.set_defaults(func=_cmd_bench)

    e = sub.add_parser(
        "explain",
        help="print the plan tree with estimated costs",
        description="Unset options take the default scenario (Llama-3-8B on an H100).",
    )
    e.add_argument("--d", type=_int)
    e.add_argument("--vocab", type=_int)
    e.add_argument("--k", type=_int)
    e.add_argument("--hardware")
    e.add_argument("--batch", type=_int)
    e.add_argument("--dtype")
    e.add_argument("--layers", type=_int)
    e.add_argument("--context", type=_int)
    e.add_argument("--tau", type=float)
    e.add_argument("--eps", type=float)
    e.add_argument("--forced-run", type=_int, help="tokens forced in a row at K = 1 (ForcedToken)")
    e.add_argument("--error-budget", type=float, default=0.0)
    e.add_argument(
        "--model", default=None, help="body shape preset: llama-3-8b, gpt2-small, smollm2-135m"
    )
    e.add_argument("--json", action="store_true", help="stable JSON instead of text")
    e.set_defaults(func=_cmd_explain)

    s = sub.add_parser("serve", help="serve the Panel app on 127.0.0.1 (server mode)")
    s.add_argument("--address", default="127.0.0.1")
    s.add_argument("--port", type=_port, default=5006)
    s.add_argument("--backend", default=None, help="measurement backend URL (default: in-process)")
    s.add_argument("--show", action="store_true", help="open a browser")
    s.set_defaults(func=_cmd_serve)

    x = sub.add_parser("export", help="write each figure as standalone HTML and Bokeh JSON")
    x.add_argument("--out", default="out/figures")
    x.set_defaults(func=_cmd_export)

    lo = sub.add_parser("lower", help="the decode step as StableHLO: module, plans, routing rule")
    from .lower import add_arguments as add_lower_arguments

    add_lower_arguments(lo)
    lo.set_defaults(func=_cmd_lower)

    try:
        from .backend import add_backend_command
    except ImportError:  # the backend is optional (and absent from the browser build)
        pass
    else:
        add_backend_command(sub)
    from .engine import add_engine_commands

    add_engine_commands(sub)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return int(args.func(args) or 0)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    except BrokenPipeError:  # e.g. `llmqp explain | head`: the reader has left
        sys.stdout = None  # nothing more to flush at exit
        return 0
    except ValueError as exc:  # validation errors name the parameter, value and range
        return _fail(f"llmqp: error: {exc}")
    except OSError as exc:
        return _fail(f"llmqp: error: {exc}")


if __name__ == "__main__":
    sys.exit(main())
