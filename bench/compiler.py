"""The compiled decode step under XLA against the numpy engine's kernels, plan by plan.

For every branch of the expanded module (ForcedToken, DenseHead, each SparseHead bucket,
AmortizedHead) the step's operands are built so the routing kernel picks that branch (K = 1,
K = |V|, K = the bucket's size, LinUCB state that prefers AmortizedHead), and in one run:

* ``xla_us``: the median wall time of one call of the expanded module (routing + the branch +
  dispatch), results ready;
* ``numpy_us``: the median of the engine's numpy kernel for the same plan (app.engine.plans; the
  amortizer's map in numpy for AmortizedHead);
* ``ratio`` = xla / numpy.

The routing kernel alone (``llmqp.route`` compiled on its own over the same operands) is timed
against an empty compiled function with the same operands (the dispatch floor); its net cost is
reported as a share of each branch's step. Timings on a shared machine are noisy (medians).

``--workload FILE`` (JSONL requests, e.g. bench/workload/requests.jsonl) also decodes every request
with the numpy engine and with ``XlaStepExecutor`` and reports token identity and tokens/s.

Usage: ``python bench/compiler.py [--repeats 30] [--d 576 --vocab 49152 | default model]
[--workload FILE]``.
Writes bench/results/compiler.json. No GPU was lent to the session that wrote this; on a CUDA
jaxlib the same script runs on the GPU (``jax.devices()`` decides).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _median_us(fn, repeats):
    fn()  # warm (compile)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e6 * statistics.median(times)


def _weights(args):
    """(output matrix padded to the catalog's rows, tok_embd, context, source)."""
    from app.compiler.catalog import build_catalog

    if args.d is not None:
        rng = np.random.default_rng(0)
        out = (rng.standard_normal((args.vocab, args.d)) / np.sqrt(args.d)).astype(np.float32)
        cat = build_catalog(args.d, args.vocab, args.hardware, 2048)
        source = f"random d={args.d} vocab={args.vocab}"
    else:
        from app.engine.fetch import resolve_model
        from app.engine.weights import load_gguf

        _, w = load_gguf(resolve_model(None))
        out, cfg = w.output, w.config
        cat = build_catalog(cfg.d, cfg.vocab, args.hardware, cfg.context)
        source = "SmolLM2-135M-Instruct (default model)"
    padded = np.zeros((cat.rows, cat.d), np.float32)
    padded[: cat.vocab] = out
    return cat, padded, source


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--d", type=int, default=None)
    p.add_argument("--vocab", type=int, default=None)
    p.add_argument("--hardware", default="cpu")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "compiler.json"))
    p.add_argument("--workload", default=None, help="JSONL requests to decode both ways")
    args = p.parse_args(argv)

    import jax
    from threadpoolctl import threadpool_limits

    from app.compiler.artifact import build
    from app.compiler.catalog import ARMS
    from app.compiler.operands import DIM, OPERANDS
    from app.compiler.routing import route
    from app.engine import plans

    cat, out, source = _weights(args)
    art = build(cat)
    rng = np.random.default_rng(1)
    h = rng.standard_normal(cat.d).astype(np.float32)
    d = cat.d
    amort = (np.eye(d, dtype=np.float32), np.zeros((d, d), np.float32), np.zeros(d, np.float32))
    w_dev = jax.device_put(out)  # constants live on the device, as in the executor
    a_dev, b_dev, c_dev = (jax.device_put(a) for a in amort)
    wmax = np.float32(np.linalg.norm(out.astype(np.float64), axis=1).max() * (1 + 1e-6))

    def operands(legal, policy=0, P=None):
        ids = np.full(cat.vocab, cat.sentinel, np.int32)
        ids[: legal.shape[0]] = legal
        if P is None:
            P = np.zeros((len(ARMS), DIM + 1, DIM))
            P[:, 1:] = np.eye(DIM)
        table = dict(
            w=w_dev, h=h, ids=ids, k=np.int32(legal.shape[0]), wmax=wmax,
            position=np.int32(10), last_margin=np.float32(1.0), policy=np.int32(policy),
            theta=np.ascontiguousarray(P[:, 0]), a_inv=np.ascontiguousarray(P[:, 1:]),
            alpha=np.float64(1.0), amort_a=a_dev, amort_b=b_dev, amort_c=c_dev,
            ex=np.zeros(d, np.float32),
        )  # fmt: skip
        return [table[n] for n in OPERANDS]

    def numpy_amortized(legal):
        h2 = amort[0] @ h + amort[1] @ np.zeros(d, np.float32) + amort[2]
        return plans.sparse_head(out, h2, legal)

    prefer_amortized = np.zeros((len(ARMS), DIM + 1, DIM))
    prefer_amortized[:, 1:] = np.eye(DIM)
    prefer_amortized[ARMS.index("AmortizedHead"), 0, 0] = -100.0  # lowest bound by far

    rows = []
    with threadpool_limits(1):  # the engine's numpy runs one BLAS thread
        for plan in cat.plans:
            policy, P = 0, None
            if plan.plan == "ForcedToken":
                k, ref = 1, plans.forced_token
            elif plan.plan == "DenseHead":
                k, ref = cat.vocab, partial(plans.dense_head, out, h)
            elif plan.plan == "SparseHead":
                k, ref = plan.rows, partial(plans.sparse_head, out, h)
            else:
                k, ref, policy, P = cat.amortized_rows, numpy_amortized, 1, prefer_amortized
            legal = np.sort(rng.choice(cat.vocab, k, replace=False))
            ops = operands(legal, policy, P)
            got = art(*ops)
            assert int(got[4]) == plan.index, (plan.name, int(got[4]))

            def call(ops=ops):
                jax.block_until_ready(art(*ops))

            xla = _median_us(call, args.repeats)
            npy = _median_us(partial(ref, legal), args.repeats)
            rows.append({"plan": plan.name, "k": k, "xla_us": xla, "numpy_us": npy,
                         "ratio": xla / npy, "model_us": 1e6 * plan.seconds})  # fmt: skip

        legal = np.sort(rng.choice(cat.vocab, 64, replace=False))
        ops = operands(legal)
        with jax.enable_x64(True):
            routed = jax.jit(partial(route, cat=cat))
            empty = jax.jit(lambda *a: a[3])  # same operands, returns k: the dispatch floor

            def r_call():
                jax.block_until_ready(routed(*ops))

            def e_call():
                jax.block_until_ready(empty(*ops))

            route_us = _median_us(r_call, 5 * args.repeats)
            empty_us = _median_us(e_call, 5 * args.repeats)
    net = max(route_us - empty_us, 0.0)
    for r in rows:
        r["route_share"] = net / r["xla_us"]
    result = {
        "source": source,
        "platform": platform.platform(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(dv) for dv in jax.devices()],
        "repeats": args.repeats,
        "k_star": cat.k_star,
        "buckets": list(cat.buckets),
        "route_us": route_us,
        "empty_call_us": empty_us,
        "route_net_us": net,
        "plans": rows,
    }
    if args.workload:
        result["workload"] = _workload(args.workload)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"{source}; XLA backend {result['backend']}; K* = {cat.k_star:,}")
    print(f"{'plan':<22}{'K':>7}{'xla us':>11}{'numpy us':>11}{'ratio':>8}{'route %':>9}")
    for r in rows:
        print(
            f"{r['plan']:<22}{r['k']:>7}{r['xla_us']:>11.1f}{r['numpy_us']:>11.1f}"
            f"{r['ratio']:>8.2f}{100 * r['route_share']:>8.1f}%"
        )
    print(f"routing kernel alone {route_us:.1f} us, empty call {empty_us:.1f} us, net {net:.1f} us")
    return 0


def _workload(path) -> dict:
    """Decode every request with numpy heads and with the compiled step; compare tokens."""
    from app.compiler.executor import XlaStepExecutor
    from app.engine.engine import Engine
    from app.engine.requests import load_requests

    engine = Engine.load()
    ex = XlaStepExecutor(engine)
    rows, same = [], 0
    for req in load_requests(path):
        a = engine.decode(req)
        b = engine.decode(req, executor=ex)
        same += a.tokens == b.tokens
        rows.append({"id": req.id, "tokens": len(a.tokens), "identical": a.tokens == b.tokens,
                     "numpy_tok_s": a.tokens_per_s, "xla_tok_s": b.tokens_per_s})  # fmt: skip
        line = f"  {req.id:<24} {len(a.tokens):>4} tokens  identical={a.tokens == b.tokens}"
        rate = f"numpy {a.tokens_per_s:5.1f} tok/s  xla {b.tokens_per_s:5.1f} tok/s"
        print(f"{line}  {rate}", flush=True)
    print(f"workload: {same}/{len(rows)} requests token-identical; executor {ex.stats}")
    return {"requests": rows, "identical": same, "total": len(rows), "executor": ex.stats}


if __name__ == "__main__":
    sys.exit(main())
