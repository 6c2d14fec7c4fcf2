"""LinUCB variants for drifting losses (paper Section 4, variation budget ``V_T``).

* :class:`SlidingWindowLinUCB` keeps the statistics of the last ``window`` steps only
  (Cheung, Simchi-Levi and Zhu, 2019): each update adds the new observation and removes the one
  that falls out with a Sherman-Morrison downdate.
* :class:`RestartLinUCB` forgets everything every ``period`` steps (restart bandits).

With ``window`` or ``period`` of order ``(d T / V_T)^(2/3)`` both reach dynamic regret
``O~(d^(2/3) V_T^(1/3) T^(2/3))`` (standard).
"""

from __future__ import annotations

import numpy as np

from app.model.validate import check_int

from .linucb import LinUCB, rank_one_update

__all__ = ["SlidingWindowLinUCB", "RestartLinUCB"]


class SlidingWindowLinUCB(LinUCB):
    """LinUCB whose ``theta_a`` and ``A_a^-1`` cover exactly the last ``window`` steps.

    Parameters
    ----------
    n_arms, dim : int
        Number of plans and context length.
    window : int
        Number of most recent steps (over all arms) kept in the statistics, ``>= 1``.
    alpha, reg : float
        As in :class:`LinUCB`.
    refresh : int or None
        Every ``refresh`` updates the state is rebuilt from the ring buffer with
        ``numpy.linalg.solve``, which bounds the round-off that repeated downdates accumulate.
        Defaults to ``max(window, 100)``, an amortised ``O(n_arms d^3 / refresh)`` per step.
    seed : int, Generator or None
        Kept for the shared contract.
    """

    def __init__(self, n_arms, dim, window=500, alpha=1.0, reg=1.0, refresh=None, seed=None):
        self.window = check_int("window", window, 1)
        self.refresh = (
            max(self.window, 100) if refresh is None else check_int("refresh", refresh, 1)
        )
        super().__init__(n_arms, dim, alpha=alpha, reg=reg, seed=seed)

    def reset(self) -> None:
        """Empty the window and the statistics."""
        super().reset()
        w = self.window
        self._xs = np.zeros((w, self.dim))  # ring buffer of contexts, (window, dim)
        self._arms = np.zeros(w, dtype=np.int64)
        self._losses = np.zeros(w)
        self._count = 0  # observations currently in the window
        self._head = 0  # slot the next observation goes to (the oldest when full)

    def update(self, x, arm, loss, losses=None) -> None:
        """Add ``(x, loss)`` to ``arm`` and drop the observation that leaves the window."""
        super().update(x, arm, loss)  # validates, adds the new observation, counts t
        h = self._head
        if self._count == self.window:
            rank_one_update(self._rows[self._arms[h]], self._xs[h], self._losses[h], sign=-1.0)
        else:
            self._count += 1
        self._xs[h] = x
        self._arms[h] = arm
        self._losses[h] = loss
        self._head = (h + 1) % self.window
        if self.t % self.refresh == 0:
            self._rebuild()

    def _rebuild(self) -> None:
        """Recompute ``theta_a = A_a^-1 b_a`` and ``A_a^-1`` from the window by direct solves."""
        n = self._count
        xs, arms, ls = self._xs[:n], self._arms[:n], self._losses[:n]
        eye = np.eye(self.dim)
        for a in range(self.n_arms):
            Xa = xs[arms == a]  # (n_a, dim)
            A = self.reg * eye + Xa.T @ Xa
            sol = np.linalg.solve(A, np.column_stack([Xa.T @ ls[arms == a], eye]))
            self.P_[a] = sol.T  # rows: theta_a, then A_a^-1 (symmetric)

    def window_data(self):
        """Return ``(X, arms, losses)`` of the window, oldest first.

        Shapes ``(n, dim)``, ``(n,)`` and ``(n,)`` with ``n = min(t, window)``.
        """
        n, w = self._count, self.window
        order = (np.arange(n) + (self._head - n)) % w
        return self._xs[order].copy(), self._arms[order].copy(), self._losses[order].copy()


class RestartLinUCB(LinUCB):
    """LinUCB that resets its statistics every ``period`` steps.

    Parameters
    ----------
    period : int
        Steps between restarts, ``>= 1``.
    alpha, reg, seed
        As in :class:`LinUCB`.
    """

    def __init__(self, n_arms, dim, period=1000, alpha=1.0, reg=1.0, seed=None):
        self.period = check_int("period", period, 1)
        super().__init__(n_arms, dim, alpha=alpha, reg=reg, seed=seed)

    def update(self, x, arm, loss, losses=None) -> None:
        super().update(x, arm, loss)
        if self.t % self.period == 0:
            self.reset()
