"""Fit a hardware profile to measurements, and say how far the cost model then is from them.

When every kernel is memory-bound, the model's time of a measured plan ``i`` is linear in the
profile's rates (:func:`app.measure.modelled.level_features` gives the columns)::

    t_i = n_i·overhead + (sc_i + gc_i/eff)·a + (sh_i + gh_i/eff)·c,
          a = 1/bandwidth,  c = 1/cache_bandwidth

with ``n`` launches (counted the way the implementation issues them), ``s`` streamed and ``g``
gathered bytes, split into *cold* ones (``sc``, ``gc``: operations whose working set does not
fit in the cache) and *hot* ones (``sh``, ``gh``). Without a cache level everything is cold and
this is the one-bandwidth roofline ``n·overhead + s·a + g·a/eff``. We minimise the *relative*
squared error ``Σ ((model_i - t_i) / t_i)²`` (rows divided by ``t_i``, so microsecond and
millisecond kernels count alike) under non-negative rates by exact non-negative least squares
(:func:`nnls`); ``eff ≤ 1`` is one more non-negative unknown where gathers are all at one level,
and a one-dimensional search where they are at both. The cache size, a factor on the peak
FLOP/s, and whether there is a cache level at all are searched (see :func:`calibrate`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from ..model import Hardware, get_hardware
from .kernels import launch_counts
from .modelled import level_features, model_costs, model_seconds

__all__ = ["Calibration", "calibrate", "nnls", "relative_errors"]


def nnls(A, b) -> np.ndarray:
    """``argmin_{x ≥ 0} ‖A x - b‖²`` for a few columns, exactly.

    The optimum is the unconstrained least-squares solution on its own support, so trying every
    support and keeping the best feasible one finds it. ``A`` (n, m) with small m; ``b`` (n,).
    Solved on the normal equations of unit-norm columns (a few columns, well scaled).
    """
    A, b = np.asarray(A, dtype=np.float64), np.asarray(b, dtype=np.float64)
    m = A.shape[1]
    norms = np.sqrt((A * A).sum(axis=0))
    live = norms > 0
    scale = np.where(live, norms, 1.0)
    As = A / scale
    G, Ab, bb = As.T @ As, As.T @ b, float(b @ b)
    best, best_res = np.zeros(m), bb
    cols_all = [j for j in range(m) if live[j]]
    for size in range(1, len(cols_all) + 1):
        for support in itertools.combinations(cols_all, size):
            cols = list(support)
            Gs = G[cols][:, cols]
            try:
                x_s = np.linalg.solve(Gs, Ab[cols])
            except np.linalg.LinAlgError:
                x_s, *_ = np.linalg.lstsq(As[:, cols], b, rcond=None)
            if (x_s < 0).any():
                continue
            res = bb - 2 * float(x_s @ Ab[cols]) + float(x_s @ Gs @ x_s)
            if res < best_res:
                best = np.zeros(m)
                best[cols] = x_s
                best_res = res
    return best / scale


def relative_errors(rows, hw: Hardware) -> dict:
    """Per plan: ``n`` and the median / p90 / max of ``|model - measured| / measured``."""
    measured = np.array([r["median_s"] for r in rows], dtype=np.float64)
    rel = np.abs(model_seconds(rows, hw) - measured) / measured
    plans = np.array([r["plan"] for r in rows])
    out = {}
    for plan in dict.fromkeys(plans.tolist()):
        e = rel[plans == plan]
        out[plan] = {
            "n": int(e.size),
            "median_abs_rel_err": float(np.median(e)),
            "p90_abs_rel_err": float(np.percentile(e, 90)),
            "max_abs_rel_err": float(e.max()),
        }
    out["all"] = {
        "n": int(rel.size),
        "median_abs_rel_err": float(np.median(rel)) if rel.size else float("nan"),
        "p90_abs_rel_err": float(np.percentile(rel, 90)) if rel.size else float("nan"),
        "max_abs_rel_err": float(rel.max()) if rel.size else float("nan"),
    }
    return out


@dataclass(frozen=True)
class Calibration:
    """A fitted profile and the model's error against the measurements it was fitted to.

    ``errors`` / ``base_errors``: :func:`relative_errors` with the fitted / the base profile.
    ``coefficients``: the fitted ``overhead_s`` (per launch), ``s_per_byte`` (a),
    ``s_per_gathered_byte`` (a/eff), ``s_per_cached_byte`` (c, or None without a cache level),
    ``cache_bytes`` and the range ``cache_bytes_range`` over which the fit is the same, how many
    points are ``hot``/``cold`` (most of their bytes in / out of the cache), the ``launches``
    used. ``notes``: anything the fit had to assume.
    """

    hardware: Hardware
    base: Hardware
    points: int
    errors: dict
    base_errors: dict
    coefficients: dict
    notes: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "hardware": self.hardware.to_dict(),
            "base": self.base.name,
            "points": self.points,
            "errors": self.errors,
            "base_errors": self.base_errors,
            "coefficients": self.coefficients,
            "notes": list(self.notes),
        }


MIN_POINTS = 3
PEAK_GRID = 41  # candidate peak FLOP/s per decade-spanning search
CACHE_STEP = 2**0.5  # candidate cache sizes: powers of √2 bytes, from 64 KiB
CACHE_MIN = 2.0**16


@dataclass(frozen=True)
class _Levels:
    """One hypothesis on the memory levels: no cache level (``size`` 0), or a cache of
    ``size`` bytes (any size in ``[lo, hi]`` splits the rows the same way: grid sizes, made
    exact working-set edges by :func:`_edges`); ``X`` holds :func:`level_features`' columns."""

    size: float
    lo: float
    hi: float
    X: np.ndarray


@dataclass(frozen=True)
class _Rates:
    overhead: float
    a: float  # s per cold byte
    c: float | None  # s per hot byte; None without a cache level
    eff: float | None  # gather efficiency; None without gathered bytes
    fallback: bool = False  # no bandwidth term found: the best achieved rate stands in


def _rel_nnls(cols, t):
    """NNLS of ``Σ_j x_j·cols_j ≈ t`` in relative error; ``(x, mean squared relative error)``."""
    A = np.stack(cols, axis=1) / t[:, None]
    x = nnls(A, np.ones(len(t)))
    r = A @ x - 1.0
    return x, float(r @ r) / len(t)


def _fit(X, t, levels: bool, eff=None) -> tuple:
    """Memory-bound fit of rows ``X`` (n, 6), times ``t``: ``(_Rates or None, loss)``.

    ``levels=False`` fits one bandwidth to all bytes. ``levels=True`` fits two (cold ``a``,
    hot ``c``), and returns ``None`` unless both are positive and the cache is not slower.
    ``eff`` given: the gather efficiency is held there (only the rates and overhead are fitted).
    """
    n, sc, sh, gc, gh = (X[:, j] for j in range(5))
    if eff is not None:
        if levels:
            (o, a, c), loss = _rel_nnls([n, sc + gc / eff, sh + gh / eff], t)
        else:
            (o, a), loss = _rel_nnls([n, sc + sh + (gc + gh) / eff], t)
            c = None
        if a <= 0 or (levels and (c <= 0 or c > a)):
            return None, loss
        return _Rates(o, a, c, eff if (gc.any() or gh.any()) else None), loss
    if not levels:
        s, g = sc + sh, gc + gh
        if g.any():
            (o, a, b), loss = _rel_nnls([n, s + g, g], t)
            eff = a / (a + b) if a > 0 else None
        else:
            (o, a), loss = _rel_nnls([n, s], t)
            eff = None
        if a <= 0:  # only launches explain the times: take the best rate actually reached
            return _Rates(o, 1.0 / float(((s + g) / t).max()), None, None, True), loss
        return _Rates(o, a, None, eff), loss
    if gc.any() and gh.any():
        # Gathers at both levels: ``eff`` multiplies both rates; search it (golden section).
        def at(log_eff):
            e = np.exp(log_eff)
            x, loss = _rel_nnls([n, sc + gc / e, sh + gh / e], t)
            return loss, x, e

        lo, hi = np.log(1e-3), 0.0
        g = (np.sqrt(5) - 1) / 2
        x1, x2 = hi - g * (hi - lo), lo + g * (hi - lo)
        f1, f2 = at(x1)[0], at(x2)[0]
        for _ in range(30):
            if f1 <= f2:
                hi, x2, f2 = x2, x1, f1
                x1 = hi - g * (hi - lo)
                f1 = at(x1)[0]
            else:
                lo, x1, f1 = x1, x2, f2
                x2 = lo + g * (hi - lo)
                f2 = at(x2)[0]
        loss, (o, a, c), eff = min(at(x1), at(x2), at(0.0), key=lambda z: z[0])
    elif gh.any():
        (o, a, c, c2), loss = _rel_nnls([n, sc, sh + gh, gh], t)
        eff = c / (c + c2) if c > 0 else None
    elif gc.any():
        (o, a, c, a2), loss = _rel_nnls([n, sc + gc, sh, gc], t)
        eff = a / (a + a2) if a > 0 else None
    else:
        (o, a, c), loss = _rel_nnls([n, sc, sh], t)
        eff = None
    if a <= 0 or c <= 0 or c > a:
        return None, loss
    return _Rates(o, a, c, eff), loss


def _profile(base: Hardware, name, rates: _Rates, levels: _Levels, scale, launches) -> Hardware:
    eff = rates.eff if rates.eff is not None else base.gather_efficiency
    cached = rates.c is not None
    return base.replace(
        name=name,
        bandwidth=float(1.0 / rates.a),
        overhead=float(rates.overhead),
        gather_efficiency=float(np.clip(eff, 1e-6, 1.0)),
        peak_flops={k: float(v * scale) for k, v in base.peak_flops.items()},
        cache_bytes=levels.size if cached else 0.0,
        cache_bandwidth=float(1.0 / rates.c) if cached else 0.0,
        launches=dict(launches),
    )


def _better(loss: float, best: float) -> bool:
    """A loss lower than ``best`` by more than rounding (relative 1e-9, or absolute 1e-20:
    two exact fits differ in the last bits of a sum of squares near 1e-32)."""
    return loss < best * (1 - 1e-9) and best - loss > 1e-20


def _loss(rows, hw, t) -> float:
    """Mean squared relative error of the full (max-roofline) model."""
    return float((((model_seconds(rows, hw) - t) / t) ** 2).mean())


def _hypotheses(rows, launches, cold_only: bool) -> list:
    """No cache level, then every distinct way a cache size splits the rows' bytes into hot and
    cold (cache sizes on a grid of powers of √2 between the smallest and largest plan)."""
    X0 = level_features(rows, [0.0], launches)[0]
    out = [_Levels(0.0, 0.0, 0.0, X0)]
    if cold_only:
        return out
    total = X0[:, 1:5].sum(axis=1)
    lo = max(CACHE_MIN, total.min() / 4)
    first = np.floor(np.log(lo) / np.log(CACHE_STEP))
    last = np.ceil(np.log(total.max()) / np.log(CACHE_STEP))
    sizes = CACHE_STEP ** np.arange(first, last + 1)
    feats = level_features(rows, sizes, launches)
    groups: list = []  # [first size, last size, X] of runs of sizes that split alike
    for size, X in zip(sizes, feats):
        if groups and np.array_equal(groups[-1][2], X):
            groups[-1][1] = size
        else:
            groups.append([size, size, X])
    for first, last, X in groups:
        hot, cold = X[:, 2] + X[:, 4], X[:, 1] + X[:, 3]
        if hot.any() and cold.any():
            out.append(_Levels(float(np.sqrt(first * last)), float(first), float(last), X))
    return out


def _edges(rows, launches, levels: _Levels) -> _Levels:
    """The exact working sets around a cache hypothesis: the largest one that fits (``lo``) and
    the smallest one that does not (``hi``), by bisection between grid sizes; the cache size is
    then their geometric middle (the data cannot place it more precisely)."""

    def same(size):
        return np.array_equal(level_features(rows, [size], launches)[0], levels.X)

    def bisect(inside, outside):
        for _ in range(16):
            mid = np.sqrt(inside * outside)
            inside, outside = (mid, outside) if same(mid) else (inside, mid)
        return inside, outside

    lo, hi = levels.lo, levels.hi
    below = lo / CACHE_STEP
    if not same(below):
        lo = bisect(lo, below)[0]  # the smallest size that splits alike ≈ the largest hot set
    above = hi * CACHE_STEP
    if not same(above):
        hi = bisect(hi, above)[1]  # just past the largest size that splits alike
    return _Levels(float(np.sqrt(lo * hi)), float(lo), float(hi), levels.X)


def _choose_levels(hyps, t, mask) -> tuple:
    """The hypothesis whose memory-bound fit on rows ``mask`` scores best: ``(levels, rates)``.

    The score is the Bayesian information criterion ``n·ln(loss) + k·ln(n)``: a cache level has
    two more parameters (its rate and size), so it must cut the mean squared relative error by
    a factor ``n^(2/n)`` (about 1.25 for 31 points) to be kept; noise alone does not buy one."""
    n = int(mask.sum())
    best = None
    for h in hyps:
        rates, loss = _fit(h.X[mask], t[mask], levels=h.size > 0)
        if rates is None:
            continue
        score = n * np.log(max(loss, 1e-20)) + (2 * np.log(n) if h.size > 0 else 0.0)
        if best is None or score < best[0] - 1e-9:
            best = (score, h, rates)
    return best[1], best[2]


def _memory_bound(rows, hw) -> np.ndarray:
    """Rows none of whose kernels is compute-bound on ``hw`` (the linear fit holds for them)."""
    c = model_costs(rows, hw)
    return c["seconds"] - c["overhead_s"] <= c["memory_s"] * (1 + 1e-9)


def calibrate(rows, base="cpu", name=None, launches=None, fit_cache=True) -> Calibration:
    """Fit ``overhead``, ``bandwidth``, ``gather_efficiency``, a cache level
    (``cache_bytes``, ``cache_bandwidth``) and, where the data demand it, the peak FLOP/s of
    ``base`` to stored ``rows``.

    ``launches`` is the implementation's launch count per model operation
    (:attr:`app.model.Hardware.launches`); by default the count of the rows' implementation and
    kernel version (:func:`app.measure.kernels.launch_counts`), so ``overhead`` is the cost of
    one of its calls. The fit then goes:

    1. *Levels.* For no cache level and for every distinct way a cache size splits the rows'
       operations into hot (working set fits) and cold, the memory-bound NNLS above; the best
       information criterion wins (see :func:`_choose_levels`: a cache level must explain the
       data clearly better than one bandwidth). A cache level needs points on both sides;
       rows measured with flushed caches (``cache == 'cold'``) get none, nor does
       ``fit_cache=False``.
    2. *Peak.* One factor on ``base``'s peak FLOP/s (all dtypes alike), on a grid from ten
       times the base peak down to the highest FLOP rate actually achieved, refined by golden
       section; for each, the memory-bound fit is redone (gather efficiency held) on the rows
       that stay memory-bound, and the least mean squared relative error of the full
       (max-roofline) model wins (ties to the higher peak, i.e. the base's when nothing is
       compute-bound). On a CPU, where one core's GEMM runs far below a multi-core datasheet
       peak, this matters; on a GPU's memory-bound decode it keeps the base peak.
    3. *Rounds.* Step 1 again on the rows memory-bound at that peak, and step 2 again near it,
       until those rows stay the same (at most three rounds); kept where the full model is
       better for it.
    4. *Cache size.* The data place it only between the largest working set measured hot and
       the smallest measured cold; :func:`_edges` finds both, and the size is their geometric
       middle (``coefficients["cache_bytes_range"]``).

    ``rows``: dicts as :meth:`ResultStore.query` returns them, all of one device,
    implementation and kernel version, at least three. Raises ``ValueError`` when they cannot
    pin the fit down.
    """
    base = get_hardware(base)
    rows = list(rows)
    if len(rows) < MIN_POINTS:
        raise ValueError(
            f"Calibration needs at least {MIN_POINTS} measured points; got {len(rows)}. "
            "Run a head sweep first."
        )
    devices = {(r["device"], r["impl"], r.get("version")) for r in rows}
    if len(devices) != 1:
        raise ValueError(
            f"Calibration rows must come from one device, impl and kernel version; got {devices}."
        )
    (_, impl, version), = devices  # fmt: skip
    if launches is None:
        launches = launch_counts(impl, version)
    name = name or f"{base.name} (calibrated)"
    t = np.array([r["median_s"] for r in rows], dtype=np.float64)
    cold_only = all(r.get("cache") == "cold" for r in rows)
    hyps = _hypotheses(rows, launches, cold_only or not fit_cache)
    F = hyps[0].X[:, 5]
    dtypes = {r["dtype"] for r in rows}
    achieved = max(float((F / t)[[r["dtype"] == dt for r in rows]].max()) / base.peak(dt)
                   for dt in dtypes)  # fmt: skip
    floor = min(achieved, 10.0)

    def at_peak(scale, levels, rates):
        """Full-model loss at a peak factor, the linear fit redone (gather efficiency held) on
        the rows that stay memory-bound: ``(loss, hardware, levels, rates)``."""
        cand = rates
        for _ in range(2):
            mask = _memory_bound(rows, _profile(base, name, cand, levels, scale, launches))
            if mask.sum() < MIN_POINTS:
                break
            fitted, _ = _fit(levels.X[mask], t[mask], levels.size > 0, rates.eff or 1.0)
            if fitted is None:
                break
            cand = fitted
        hw = _profile(base, name, cand, levels, scale, launches)
        return _loss(rows, hw, t), hw, levels, cand

    def golden(lo, hi, levels, rates):
        """Golden-section search of the peak factor over ``[lo, hi]`` (log scale)."""
        lo, hi, g = np.log(lo), np.log(hi), (np.sqrt(5) - 1) / 2
        for _ in range(20):
            x1, x2 = hi - g * (hi - lo), lo + g * (hi - lo)
            if at_peak(np.exp(x1), levels, rates)[0] <= at_peak(np.exp(x2), levels, rates)[0]:
                hi = x2
            else:
                lo = x1
        return at_peak(np.exp((lo + hi) / 2), levels, rates)

    mask = np.ones(len(rows), dtype=bool)
    levels, rates = _choose_levels(hyps, t, mask)
    hw = _profile(base, name, rates, levels, 1.0, launches)
    best = (_loss(rows, hw, t), hw, levels, rates)
    # Stage 2 on a grid from ten times the base peak down to the achieved rate, then refined.
    grid = np.geomspace(10.0, floor, PEAK_GRID)
    tried = [at_peak(scale, levels, rates) for scale in grid]
    i = min(range(len(grid)), key=lambda j: (tried[j][0], j))
    if _better(tried[i][0], best[0]):
        best = min(tried[i], golden(grid[min(i + 1, PEAK_GRID - 1)], grid[max(i - 1, 0)],
                                    levels, rates), key=lambda b: b[0])  # fmt: skip
    # Stage 3: levels and rates again on the rows memory-bound at that peak, and the peak
    # again near its value, until the memory-bound rows stay the same (a few rounds).
    for _ in range(3):
        scale = best[1].peak_flops["float32"] / base.peak_flops["float32"]
        new_mask = _memory_bound(rows, best[1])
        if new_mask.sum() < MIN_POINTS or (new_mask == mask).all():
            break
        mask = new_mask
        levels, rates = _choose_levels(hyps, t, mask)
        cands = [at_peak(scale, levels, rates)]
        if scale < 10.0:
            cands.append(golden(max(scale / 1.5, floor), min(scale * 1.5, 10.0), levels, rates))
        hw = _profile(base, name, rates, levels, scale, launches)
        cands.append((_loss(rows, hw, t), hw, levels, rates))
        cand = min(cands, key=lambda b: b[0])
        if _better(cand[0], best[0]):
            best = cand
    loss, hw, levels, rates = best
    if hw.cache_bytes:
        levels = _edges(rows, launches, levels)
        hw = hw.replace(cache_bytes=levels.size)
    scale = hw.peak_flops["float32"] / base.peak_flops["float32"]
    notes = _notes(hw, base, rates, levels, launches, impl, hyps[0].X, cold_only)
    X = levels.X
    hot = (X[:, 2] + X[:, 4]) >= (X[:, 1] + X[:, 3])
    eff = hw.gather_efficiency
    return Calibration(
        hardware=hw,
        base=base,
        points=len(rows),
        errors=relative_errors(rows, hw),
        base_errors=relative_errors(rows, base),
        coefficients={
            "overhead_s": float(rates.overhead),
            "s_per_byte": float(rates.a),
            "s_per_gathered_byte": float(rates.a / eff),
            "s_per_cached_byte": float(rates.c) if rates.c is not None else None,
            "cache_bytes": hw.cache_bytes,
            "cache_bytes_range": [levels.lo, levels.hi] if hw.cache_bytes else None,
            "points_hot": int(hot.sum()) if hw.cache_bytes else 0,
            "points_cold": int((~hot).sum()) if hw.cache_bytes else len(rows),
            "peak_scale": float(scale),
            "launches": dict(launches),
            "mean_sq_rel_err": loss,
        },
        notes=notes,
    )


def _notes(hw, base, rates, levels, launches, impl, X0, cold_only) -> list:
    notes = []
    if rates.fallback:
        notes.append("the fit found no bandwidth term; bandwidth set to the best achieved rate")
    if launches:
        notes.append(f"launches counted as {impl} issues them; overhead is per call")
    if not (X0[:, 3] + X0[:, 4]).any():
        notes.append("no gathered bytes measured: gather_efficiency kept from the base profile")
    if hw.peak_flops != base.peak_flops:
        notes.append("peak FLOP/s scaled to fit compute-bound points")
    if hw.cache_bytes:
        notes.append(
            f"cache level: working sets up to {levels.lo / 2**20:.3g} MiB measured hot at "
            f"{hw.cache_bandwidth / 1e9:.3g} GB/s, from {levels.hi / 2**20:.3g} MiB cold at "
            f"{hw.bandwidth / 1e9:.3g} GB/s; cache size taken between, "
            f"{hw.cache_bytes / 2**20:.3g} MiB"
        )
    elif cold_only:
        notes.append("caches flushed before every sample: no cache level fitted")
    return notes
