"""Linear Thompson sampling on losses (paper Section 4).

Each step samples ``theta~_a ~ N(theta_a, v^2 A_a^-1)`` per arm and plays ``argmin_a theta~_a^T x``.
Only the scalars ``theta~_a^T x`` matter for the decision, and for a fixed ``x``::

    theta~_a^T x ~ N(theta_a^T x, v^2 x^T A_a^-1 x),   independently over arms,

so drawing ``z ~ N(0, I_{n_arms})`` and scoring ``theta_a^T x + v sqrt(x^T A_a^-1 x) z_a`` has
exactly the law of the full ``dim``-dimensional draw, without a Cholesky factor or a
``dim``-vector draw per arm. The statistics (``theta_a``, ``A_a^-1``) and their Sherman-Morrison
update are LinUCB's.
"""

from __future__ import annotations

import numpy as np

from app.model.validate import check_float

from .baselines import _isfinite
from .linucb import LinUCB

__all__ = ["LinTS"]


class LinTS(LinUCB):
    """Linear Thompson sampling: play the arm whose sampled loss ``theta~_a^T x`` is least.

    Parameters
    ----------
    n_arms, dim : int
        Number of plans and context length.
    v : float
        Posterior scale, ``>= 0``. The Bayesian choice is the loss-noise standard deviation; the
        worst-case analysis (Agrawal and Goyal, 2013) uses a larger ``sqrt(dim log T)``-order one.
        ``0`` is greedy ridge regression.
    reg : float
        Ridge strength ``> 0``; the prior is ``N(0, v^2 I / reg)``.
    seed : int, Generator or None
        Seed of the sampling generator: the same seed gives the same arms.

    Attributes
    ----------
    theta_, A_inv_, P_ : ndarray
        As in :class:`LinUCB`.
    """

    def __init__(self, n_arms, dim, v=0.25, reg=1.0, seed=None):
        super().__init__(n_arms, dim, alpha=0.0, reg=reg, seed=seed)
        self.v = check_float("v", v, 0.0)

    def select(self, x) -> int:
        """Return the arm of least sampled loss for ``x`` (shape ``(dim,)``)."""
        if type(x) is not np.ndarray or x.shape != self._shape:
            x = self._check_x(x)
        R = np.dot(self._flat, x).reshape(self._Rshape)  # (n_arms, dim + 1), as in LinUCB
        var = np.dot(R[:, 1:], x)  # (n_arms,)
        z = self.rng.standard_normal(self.n_arms)
        a = int((R[:, 0] + self.v * np.sqrt(var) * z).argmin())
        v = var.item(a)
        if not _isfinite(v):
            self._bad_x(x, v)
        self._cache = (x, a, R[a], v)
        return a
