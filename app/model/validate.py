"""Input validation shared by every public entry point.

Errors follow one pattern so users can act on them:
``The 'k' parameter must be an integer in [1, 50257]. Got 0 instead.``
"""

from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = [
    "check_int",
    "check_float",
    "check_choice",
    "check_instance",
    "check_array",
    "interval",
]


def interval(lo, hi, lo_open=False, hi_open=False) -> str:
    """Human-readable interval, e.g. ``[0, 1]`` or ``(0, inf)``."""
    left = "(" if lo_open or lo is None else "["
    right = ")" if hi_open or hi is None else "]"
    lo_s = "-inf" if lo is None else f"{lo:g}" if isinstance(lo, float) else str(lo)
    hi_s = "inf" if hi is None else f"{hi:g}" if isinstance(hi, float) else str(hi)
    return f"{left}{lo_s}, {hi_s}{right}"


def _fail(name, kind, lo, hi, value, lo_open=False, hi_open=False):
    raise ValueError(
        f"The '{name}' parameter must be {kind} in {interval(lo, hi, lo_open, hi_open)}. "
        f"Got {value!r} instead."
    )


def check_int(name: str, value, lo: int | None = None, hi: int | None = None) -> int:
    """Return ``value`` as ``int`` if it is an integer within ``[lo, hi]``."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not ok and isinstance(value, numbers.Real) and not isinstance(value, bool):
        ok = math.isfinite(value) and float(value).is_integer()
    if not ok or (lo is not None and value < lo) or (hi is not None and value > hi):
        _fail(name, "an integer", lo, hi, value)
    return int(value)


def check_float(
    name: str,
    value,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
) -> float:
    """Return ``value`` as ``float`` if it is a finite real number within the interval."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        v = float(value)
        ok = not (
            (lo is not None and (v < lo or (lo_open and v == lo)))
            or (hi is not None and (v > hi or (hi_open and v == hi)))
        )
    if not ok:
        _fail(name, "a finite number", lo, hi, value, lo_open, hi_open)
    return float(value)


def check_choice(name: str, value, options) -> str:
    """Return ``value`` if it is one of ``options`` (compared as given)."""
    options = tuple(options)
    if value not in options:
        raise ValueError(
            f"The '{name}' parameter must be one of {', '.join(map(repr, options))}. "
            f"Got {value!r} instead."
        )
    return value


def check_instance(name: str, value, cls: type):
    """Return ``value`` if it is an instance of ``cls``."""
    if not isinstance(value, cls):
        raise ValueError(f"The '{name}' parameter must be a {cls.__name__}. Got {value!r} instead.")
    return value


def check_array(
    name: str,
    value,
    lo: float | None = None,
    hi: float | None = None,
    integer: bool = False,
    shape: tuple | None = None,
) -> np.ndarray:
    """Return ``value`` as a float64 (or int64) array whose entries are finite and in range.

    ``shape`` may contain ``None`` for a free axis, e.g. ``(None, 6)``.
    """
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        msg = f"The '{name}' parameter must be numeric. Got {value!r} instead."
        raise ValueError(msg) from None
    if shape is not None:
        ok = arr.ndim == len(shape) and all(s is None or s == n for s, n in zip(shape, arr.shape))
        if not ok:
            want = "(" + ", ".join("any" if s is None else str(s) for s in shape) + ")"
            raise ValueError(
                f"The '{name}' parameter must have shape {want}. Got shape {arr.shape} instead."
            )
    bad = ~np.isfinite(arr)
    if lo is not None:
        bad |= arr < lo
    if hi is not None:
        bad |= arr > hi
    if integer:
        bad |= arr != np.round(arr)
    if bad.any():
        first = arr.reshape(-1)[int(np.argmax(bad.reshape(-1)))].item()
        if float(first).is_integer():
            first = int(first)
        kind = "integers" if integer else "finite numbers"
        raise ValueError(
            f"The '{name}' parameter must contain {kind} in {interval(lo, hi)}. "
            f"Got {first!r} instead."
        )
    return arr.astype(np.int64) if integer else arr
