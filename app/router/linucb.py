"""LinUCB for loss minimisation with Sherman-Morrison state (paper Section 6, Appendix A).

Per arm ``a`` the ridge statistics are ``A_a = reg*I + sum x x^T`` and ``b_a = sum loss*x``;
the router keeps only ``A_a^-1`` and ``theta_a = A_a^-1 b_a``, packed in one array
``P`` of shape ``(n_arms, dim + 1, dim)``: row 0 of ``P[a]`` is ``theta_a``, rows ``1..dim`` are
``A_a^-1``. One matrix-vector product of the ``(n_arms * (dim + 1), dim)`` view with ``x`` gives
``R`` of shape ``(n_arms, dim + 1)`` with ``R[:, 0] = theta_a^T x`` and ``R[:, 1:] = A_a^-1 x``
for every arm, and ``var = R[:, 1:] x`` is the second and last product per decision.

Rank-one update (Sherman-Morrison), with ``u = A^-1 x``, ``v = x^T u`` and ``k = 1 / (1 + v)``::

    (A + x x^T)^-1 = A^-1 - k u u^T
    theta_new = (A^-1 - k u u^T)(b + loss*x)
              = theta + loss*u - k u (x^T theta) - k loss u v       (u^T b = x^T theta)
              = theta + k (loss - x^T theta) u                      (1 - k v = k)

Both are applied as one outer product ``P[a] -= w u^T`` with ``w = [(x^T theta - loss) k, k u]``.
"""

from __future__ import annotations

import numpy as np

from app.model.validate import check_float

from .baselines import Router, _isfinite

__all__ = ["LinUCB", "rank_one_update"]


def rank_one_update(Pa, x, loss, sign=1.0) -> None:
    """Add (``sign=1``) or remove (``sign=-1``) one observation from one arm's packed state.

    Parameters
    ----------
    Pa : ndarray, shape (dim + 1, dim)
        Packed ``[theta; A^-1]`` of one arm, updated in place.
    x : ndarray, shape (dim,)
        Context of the observation.
    loss : float
        Its observed loss.
    sign : {1.0, -1.0}
        ``A <- A + sign * x x^T`` and ``b <- b + sign * loss * x``.

    Notes
    -----
    Removal is the same formula with ``k = -1 / (1 - v)``: from ``A - x x^T`` Sherman-Morrison gives
    ``A^-1 + u u^T / (1 - v)`` and ``theta - (loss - x^T theta) u / (1 - v)``. ``v < 1`` holds as
    long as the observation is part of ``A``.
    """
    r = Pa @ x  # (dim + 1,): [theta^T x, A^-1 x]
    v = float(r[1:] @ x)
    k = sign / (1.0 + sign * v)
    w = r * k
    w[0] = (r[0] - loss) * k
    Pa -= np.multiply.outer(w, r[1:])


class LinUCB(Router):
    """LinUCB on losses: play ``argmin_a theta_a^T x - alpha * sqrt(x^T A_a^-1 x)``.

    Parameters
    ----------
    n_arms, dim : int
        Number of plans and context length.
    alpha : float
        Exploration width, ``>= 0`` (``0`` is greedy ridge regression).
    reg : float
        Ridge strength ``lambda > 0``; ``A_a`` starts at ``reg * I``.
    seed : int, Generator or None
        Unused by the deterministic rule; kept for the shared contract.

    Attributes
    ----------
    P_ : ndarray, shape (n_arms, dim + 1, dim)
        Packed state: ``P_[a, 0]`` is ``theta_a``, ``P_[a, 1:]`` is ``A_a^-1``.
    theta_ : ndarray, shape (n_arms, dim)
        View of the ridge estimates.
    A_inv_ : ndarray, shape (n_arms, dim, dim)
        View of the inverse design matrices.

    Notes
    -----
    Ties in the bound go to the lowest arm index. ``select`` caches ``(x, arm, R[arm], v)`` so an
    ``update`` with the same ``x`` object and arm reuses the matmul instead of recomputing it
    (do not modify ``x`` in place between the two calls). ``x^T A^-1 x`` stays positive: the
    Sherman-Morrison round-off is of order ``eps / reg``, far below ``1 / (n_a |x|^2)``.
    """

    def __init__(self, n_arms, dim, alpha=1.0, reg=1.0, seed=None):
        super().__init__(n_arms, dim, seed)
        self.alpha = check_float("alpha", alpha, 0.0)
        self.reg = check_float("reg", reg, 0.0, lo_open=True)
        self.reset()

    def reset(self) -> None:
        """Forget every observation: ``theta_a = 0`` and ``A_a^-1 = I / reg``."""
        P = np.zeros((self.n_arms, self.dim + 1, self.dim))
        P[:, 1:] = np.eye(self.dim) / self.reg
        self.P_ = P
        self._rows = list(P)  # per-arm views: a list lookup is cheaper than P[a] on the hot path
        self._flat = P.reshape(-1, self.dim)  # (n_arms * (dim + 1), dim) view: one gemv per select
        self._Rshape = (self.n_arms, self.dim + 1)
        self._cache = None

    @property
    def theta_(self) -> np.ndarray:
        return self.P_[:, 0]

    @property
    def A_inv_(self) -> np.ndarray:
        return self.P_[:, 1:]

    def _bad_x(self, x, var):
        """Raise the precise error for an ``x`` whose bound came out non-finite."""
        x = self._check_x(x)  # raises for a wrong shape or non-finite entries
        raise ValueError(
            f"The 'x' parameter gave a non-finite confidence width {var!r}; its entries are too "
            f"large (max |x| = {np.abs(x).max()!r})."
        )

    def select(self, x) -> int:
        """Return the arm of least lower confidence bound for ``x`` (shape ``(dim,)``)."""
        if type(x) is not np.ndarray or x.shape != self._shape:
            x = self._check_x(x)
        # np.dot runs the same BLAS gemv as `@` with half the call overhead.
        R = np.dot(self._flat, x).reshape(self._Rshape)  # (n_arms, dim + 1)
        var = np.dot(R[:, 1:], x)  # (n_arms,) x^T A_a^-1 x
        a = int((R[:, 0] - self.alpha * np.sqrt(var)).argmin())
        v = var.item(a)
        # A non-finite x makes every var non-finite (A^-1 has a positive diagonal), so this one
        # scalar test replaces an isfinite pass over x.
        if not _isfinite(v):
            self._bad_x(x, v)
        self._cache = (x, a, R[a], v)
        return a

    def update(self, x, arm, loss, losses=None) -> None:
        """Add ``(x, loss)`` to ``arm``'s statistics; ``losses`` is ignored (bandit feedback)."""
        c = self._cache
        self._cache = None
        if c is not None and c[0] is x and c[1] == arm:
            r, v = c[2], c[3]
            a = c[1]
            if not _isfinite(loss):
                check_float("loss", loss)
        else:
            x, a, loss, _ = self._check_feedback(x, arm, loss)
            rank_one_update(self._rows[a], x, loss)
            self.t += 1
            return
        k = 1.0 / (1.0 + v)
        w = r * k  # [theta^T x k, k u]; row 0 fixed below
        w[0] = (r[0] - loss) * k
        self._rows[a] -= np.multiply.outer(w, r[1:])
        self.t += 1
