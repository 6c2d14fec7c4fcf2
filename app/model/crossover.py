"""Where the sparse head stops paying: the K-vs-|V| crossover, in two views.

* FLOP-only (the paper's first view): ``2·d·K < 2·d·|V|`` exactly when ``K < |V|``.
* Roofline: with bytes, gathers and launch overheads priced, the sparse head is no slower than
  the dense one only up to some ``K*`` that may sit well below ``|V|`` — or not exist at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .costs import _common, _dense, _sparse
from .validate import check_array, check_int

__all__ = ["Crossover", "find_crossover", "crossover_curve", "k_grid"]


@dataclass(frozen=True)
class Crossover:
    """``k_flop`` is always ``|V|``. ``k_roofline`` is the largest K at which the sparse head is no
    slower than the dense head, ``None`` if sparse loses even at K = 1."""

    k_flop: int
    k_roofline: int | None

    def to_dict(self) -> dict:
        return {"k_flop": self.k_flop, "k_roofline": self.k_roofline}


def _checked(d, vocab, batch, dtype, hardware):
    """The head arguments, checked once: ``(d, vocab, batch, dtype, size, hw)``."""
    d = check_int("d", d, 1, 1 << 20)
    vocab = check_int("vocab", vocab, 1, 1 << 24)
    return (d, vocab, *_common(batch, dtype, hardware))


def find_crossover(d, vocab, batch=1, dtype="bfloat16", hardware="h100") -> Crossover:
    """Both crossovers for one head shape.

    The sparse head's time never decreases with K, so ``K*`` is found by bisection on integers.
    """
    return _find(*_checked(d, vocab, batch, dtype, hardware))


def _find(d, vocab, batch, dtype, size, hw) -> Crossover:
    dense_s = float(_dense(d, vocab, batch, dtype, size, hw).seconds)

    def sparse_wins(k: int) -> bool:
        cost = _sparse(d, vocab, np.float64(k), batch, dtype, size, hw)
        return float(cost.seconds) <= dense_s

    if not sparse_wins(1):
        return Crossover(vocab, None)
    lo, hi = 1, vocab  # invariant: sparse wins at lo
    if sparse_wins(hi):
        return Crossover(vocab, vocab)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if sparse_wins(mid):
            lo = mid
        else:
            hi = mid
    return Crossover(vocab, lo)


def k_grid(vocab, points=64) -> np.ndarray:
    """Geometric grid of integer K from 1 to ``vocab`` inclusive, without duplicates."""
    vocab = check_int("vocab", vocab, 1, 1 << 24)
    points = check_int("points", points, 2, 10_000)
    return _k_grid(vocab, points)


def _k_grid(vocab, points=64) -> np.ndarray:
    return np.unique(np.round(np.geomspace(1, vocab, points)).astype(np.int64))


def crossover_curve(d, vocab, batch=1, dtype="bfloat16", hardware="h100", ks=None) -> dict:
    """Dense and sparse head cost over K, as plain arrays for a figure or a CSV.

    Returns a dict with ``k``, ``dense_s``, ``sparse_s``, ``dense_flops``, ``sparse_flops``,
    ``dense_bytes``, ``sparse_bytes`` (arrays of the length of ``ks``), the regimes of both plans
    at each K, and the :class:`Crossover`.
    """
    args = _checked(d, vocab, batch, dtype, hardware)
    vocab = args[1]
    if ks is None:
        ks = _k_grid(vocab)
    else:
        ks = check_array("ks", ks, 1, vocab, integer=True, shape=(None,))
    d, vocab, batch, dtype, size, hw = args
    dense = _dense(*args)
    sparse = _sparse(d, vocab, ks.astype(np.float64), batch, dtype, size, hw)
    ones = np.ones(len(ks))
    return {
        "k": ks.astype(np.int64),
        "dense_s": dense.seconds * ones,
        "sparse_s": np.asarray(sparse.seconds),
        "dense_flops": dense.flops * ones,
        "sparse_flops": np.asarray(sparse.flops),
        "dense_bytes": dense.bytes * ones,
        "sparse_bytes": np.asarray(sparse.bytes),
        "dense_regime": np.asarray([dense.regime] * len(ks)),
        "sparse_regime": np.asarray(sparse.regime).reshape(-1),
        "crossover": _find(*args),
    }
