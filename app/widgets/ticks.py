"""Log-axis ticks that never crowd: chosen in Python from the data range, labelled compactly.

Bokeh's own log ticker falls back to evenly spaced (linear) ticks when a range spans few
decades, and those bunch up at the top of a log axis; its labels (``10^-5``, ``2·10^-5``) are
wide. :func:`log_ticks` picks at most ``max_ticks`` positions (powers of ten, every n-th decade
over a wide range, 2× and 5× steps over a narrow one) and :func:`si_label` writes each as
``100 µs`` or ``32k``. :func:`set_log_ticks` puts both on a Bokeh axis (a ``FixedTicker`` and
``major_label_overrides``), so the page shows exactly what the tests check.
"""

from __future__ import annotations

import math

__all__ = ["log_ticks", "si_label", "set_log_ticks"]

_SECONDS = ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs"), (1e-9, "ns"))
_COUNTS = ((1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, ""))


def log_ticks(lo: float, hi: float, max_ticks: int = 6) -> list[float]:
    """Increasing tick positions in ``[lo, hi]`` (``0 < lo <= hi``), at most ``max_ticks``,
    at least one (the nearest power of ten when no nicer value falls inside)."""
    if not (lo > 0 and hi >= lo and math.isfinite(hi)):
        raise ValueError(f"The 'lo' and 'hi' parameters must satisfy 0 < lo <= hi. Got {lo}, {hi}.")
    first, last = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    if max_ticks < 2:
        raise ValueError(f"The 'max_ticks' parameter must be an integer >= 2. Got {max_ticks}.")
    for mantissas in ((1, 2, 5), (1, 3), (1,), tuple(range(1, 10))):
        ticks = _inside(lo, hi, first, last, 1, mantissas)
        if 2 <= len(ticks) <= max_ticks:
            return ticks
    decades = _inside(lo, hi, first, last, 1, (1,))
    if len(decades) > max_ticks:  # wide ranges: every n-th decade
        every = math.ceil(len(decades) / max_ticks)
        return _inside(lo, hi, first, last, every, (1,))
    # Within less than a decade and no 1-9 step inside twice: two 2-digit values.
    ticks = sorted({v for v in (float(f"{lo:.2g}"), float(f"{hi:.2g}")) if lo <= v <= hi})
    return ticks or [float(f"{math.sqrt(lo * hi):.2g}")]


def _inside(lo, hi, first, last, every, mantissas) -> list[float]:
    out = []
    start = first + (-first) % every  # keep 10^0 on the grid: 1, 100, 10^4, …
    for e in range(start, last + 1, every):
        for m in mantissas:
            v = float(f"{m}e{e}")  # exact decimal, so labels and lookups agree
            if lo * (1 - 1e-12) <= v <= hi * (1 + 1e-12):
                out.append(v)
    return out


def si_label(value: float, unit: str = "") -> str:
    """``2e-05, "s"`` → ``20 µs``; ``32000, ""`` → ``32k`` (3 significant digits at most)."""
    scales = _SECONDS if unit == "s" else _COUNTS
    scale, prefix = next(((s, p) for s, p in scales if value >= s * (1 - 1e-9)), scales[-1])
    number = f"{value / scale:.3g}"
    if unit == "s":
        return f"{number} {prefix}"
    return f"{number}{prefix}"


def set_log_ticks(axis, lo: float, hi: float, unit: str = "", max_ticks: int = 6) -> list:
    """Put :func:`log_ticks` of ``[lo, hi]`` and their :func:`si_label` on a Bokeh ``axis``
    whose ticker is a ``FixedTicker``; returns the ticks."""
    ticks = log_ticks(lo, hi, max_ticks)
    axis.ticker.ticks = ticks
    axis.major_label_overrides = {t: si_label(t, unit) for t in ticks}
    return ticks
