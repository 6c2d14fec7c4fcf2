"""Router speed: our LinUCB (online and vectorised) against MABWiser's LinUCB on one fixed stream.

The stream is realisable: ``E[loss | x] = theta_a^T x`` with ``x = [1, U(0, 1)^(dim - 1)]`` and
Gaussian noise, all drawn from one seeded generator. Every router gets the same contexts and the
same noisy losses; regret is measured on the expected losses against the per-step oracle.

MABWiser maximises rewards, so it receives ``reward = -loss``; its upper bound
``-theta^T x + alpha sqrt(x^T A^-1 x)`` is minus our lower bound, so both make the same decisions
up to round-off. MABWiser is the bench-only extra (``pip install -e ".[bench]"``).

Usage::

    python bench/router_speed.py [--out bench/results/router_speed.json] [--repeats 3]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from app.router import LinUCB, linucb_batch, regret_report  # noqa: E402


def make_stream(steps, n_arms, dim, seed, noise=0.1, rng=None):
    """Contexts ``(steps, dim)``, expected and observed losses ``(steps, n_arms)``."""
    rng = np.random.default_rng(seed) if rng is None else rng
    theta = rng.uniform(0.0, 1.0, size=(n_arms, dim))
    X = np.column_stack([np.ones(steps), rng.random((steps, dim - 1))])
    expected = X @ theta.T
    observed = expected + noise * rng.standard_normal((steps, n_arms))
    return X, expected, observed


def run_ours(X, observed, alpha, reg):
    """Online select+update loop; returns ``(arms, seconds)``."""
    router = LinUCB(observed.shape[1], X.shape[1], alpha=alpha, reg=reg)
    select, update = router.select, router.update
    rows = observed.tolist()
    arms = [0] * len(X)
    start = time.perf_counter()
    for t in range(len(X)):
        x = X[t]
        a = select(x)
        update(x, a, rows[t][a])
        arms[t] = a
    return np.asarray(arms), time.perf_counter() - start


def run_mabwiser(X, observed, alpha, reg, seed):
    """MABWiser online: ``predict`` one context, then ``partial_fit`` on it; ``(arms, seconds)``."""
    from mabwiser.mab import MAB, LearningPolicy  # bench-only dependency

    n, d = observed.shape[1], X.shape[1]
    mab = MAB(list(range(n)), LearningPolicy.LinUCB(alpha=alpha, l2_lambda=reg), seed=seed)
    mab.fit(decisions=np.empty(0, dtype=int), rewards=np.empty(0), contexts=np.empty((0, d)))
    arms = [0] * len(X)
    start = time.perf_counter()
    for t in range(len(X)):
        ctx = X[t : t + 1]
        a = mab.predict(ctx)
        mab.partial_fit([a], [-observed[t, a]], ctx)
        arms[t] = a
    return np.asarray(arms), time.perf_counter() - start


def median_rate(fn, decisions, repeats):
    """Run ``fn()`` ``repeats`` times; return the last result, the median rate and all rates."""
    rates, out = [], None
    for _ in range(repeats):
        out, seconds = fn()
        rates.append(decisions / seconds)
    return out, float(np.median(rates)), rates


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=os.path.join("bench", "results", "router_speed.json"))
    p.add_argument("--steps", type=int, default=20_000)
    p.add_argument("--arms", type=int, default=5)
    p.add_argument("--dim", type=int, default=6)
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--reg", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--mab-repeats", type=int, default=3)
    p.add_argument("--batch-streams", type=int, default=512)
    p.add_argument("--batch-steps", type=int, default=2_000)
    p.add_argument("--no-mabwiser", action="store_true", help="skip MABWiser (not installed)")
    args = p.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    X, expected, observed = make_stream(args.steps, args.arms, args.dim, None, rng=rng)
    T, S, Tb = args.steps, args.batch_streams, args.batch_steps

    ours_arms, ours_rate, ours_rates = median_rate(
        lambda: run_ours(X, observed, args.alpha, args.reg), T, args.repeats
    )
    ours = regret_report(expected, ours_arms)

    # Vectorised path: S streams with the same theta-generating process, drawn from the same rng.
    Xb = np.empty((S, Tb, args.dim))
    Ob = np.empty((S, Tb, args.arms))
    for s in range(S):
        Xb[s], _, Ob[s] = make_stream(Tb, args.arms, args.dim, None, rng=rng)
    batch_arms, batch_rate, batch_rates = median_rate(
        lambda: timed(lambda: linucb_batch(Xb, Ob, args.alpha, args.reg)), S * Tb, args.repeats
    )
    exact = bool(np.array_equal(batch_arms[0], run_ours(Xb[0], Ob[0], args.alpha, args.reg)[0]))

    result = {
        "stream": {
            "steps": T,
            "arms": args.arms,
            "dim": args.dim,
            "seed": args.seed,
            "alpha": args.alpha,
            "reg": args.reg,
            "noise": 0.1,
        },
        "platform": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "machine": platform.machine(),
        },
        "ours_online": {"decisions_per_s": ours_rate, "runs": ours_rates},
        "ours_batch": {
            "decisions_per_s": batch_rate,
            "runs": batch_rates,
            "streams": S,
            "steps": Tb,
            "equals_step_path": exact,
        },
        "regret": {"ours": ours.to_dict(curves=False)},
    }
    rows = [("ours online (select+update)", ours_rate), ("ours vectorised (batch)", batch_rate)]
    if not args.no_mabwiser and importlib.util.find_spec("mabwiser") is None:
        print('MABWiser is not installed (pip install -e ".[bench]"); skipping it.')
        args.no_mabwiser = True
    if not args.no_mabwiser:
        mab_arms, mab_rate, mab_rates = median_rate(
            lambda: run_mabwiser(X, observed, args.alpha, args.reg, args.seed), T, args.mab_repeats
        )
        mab = regret_report(expected, mab_arms)
        result["mabwiser"] = {"decisions_per_s": mab_rate, "runs": mab_rates}
        result["ratios"] = {
            "online_vs_mabwiser": ours_rate / mab_rate,
            "batch_vs_mabwiser": batch_rate / mab_rate,
        }
        result["regret"]["mabwiser"] = mab.to_dict(curves=False)
        result["regret"]["same_decisions_share"] = float(np.mean(ours_arms == mab_arms))
        result["regret"]["ours_not_higher"] = bool(ours.dynamic_regret <= mab.dynamic_regret + 1e-9)
        rows.append(("MABWiser LinUCB online", mab_rate))

    print(f"{'router':32s} {'decisions/s':>14s} {'x MABWiser':>11s}")
    for name, rate in rows:
        ratio = (
            rate / result["mabwiser"]["decisions_per_s"] if "mabwiser" in result else float("nan")
        )
        print(f"{name:32s} {rate:14,.0f} {ratio:11.1f}")
    print(f"\nbatch equals step path: {exact}")
    print(f"{'regret vs oracle':32s} {'dynamic':>10s} {'% oracle':>9s} {'slope':>6s}")
    for name, rep in result["regret"].items():
        if isinstance(rep, dict):
            slope = float("nan") if rep["slope"] is None else rep["slope"]
            print(f"{name:32s} {rep['dynamic_regret']:10.2f} {rep['regret_pct']:9.3f} {slope:6.2f}")
    if "mabwiser" in result:
        print(f"same decisions: {result['regret']['same_decisions_share']:.4f}")

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=2, allow_nan=False)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
