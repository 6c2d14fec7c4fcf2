"""The shared router boundary (:class:`Router`) and the non-learning baselines.

Every router follows one contract:

* ``Name(n_arms, dim, ..., seed=None)`` stores checked parameters and one
  ``numpy.random.Generator(PCG64(seed))``;
* ``select(x) -> int`` picks an arm (a plan index) for the context ``x`` of shape ``(dim,)``;
* ``update(x, arm, loss, losses=None)`` feeds back the observed loss of the played arm (lower is
  better); ``losses`` of shape ``(n_arms,)`` is the full-information row, read only by
  full-information learners.

The baselines here are the fixed plan, the paper's margin rule (refine if ``m < tau``) and the
per-step oracle that reads a table of true expected losses.
"""

from __future__ import annotations

import math

import numpy as np

from app.model.registry import PLAN_NAMES
from app.model.validate import check_array, check_choice, check_float, check_int

from .environment import FEATURES

__all__ = ["Router", "make_rng", "FixedPlan", "ThresholdRouter", "Oracle"]


def make_rng(seed) -> np.random.Generator:
    """Return ``Generator(PCG64(seed))``, or ``seed`` itself when it already is a Generator."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is not None:
        seed = check_int("seed", seed, 0)
    return np.random.Generator(np.random.PCG64(seed))


class Router:
    """Argument checks and the seeded generator shared by every router.

    Parameters
    ----------
    n_arms : int
        Number of plans, ``>= 1``.
    dim : int
        Context length, ``>= 1``.
    seed : int, numpy.random.Generator or None
        Seed of the router's own ``PCG64`` generator.

    Attributes
    ----------
    t : int
        Number of updates received so far.
    """

    def __init__(self, n_arms, dim, seed=None):
        self.n_arms = check_int("n_arms", n_arms, 1)
        self.dim = check_int("dim", dim, 1)
        self.rng = make_rng(seed)
        self.t = 0
        self._shape = (self.dim,)

    def _check_x(self, x) -> np.ndarray:
        """Return ``x`` as a finite float64 array of shape ``(dim,)``."""
        if type(x) is np.ndarray and x.shape == self._shape and x.dtype == np.float64:
            # Fast path: one reduction instead of check_array's several passes.
            if np.isfinite(x).all():
                return x
        return check_array("x", x, shape=self._shape)

    def _check_feedback(self, x, arm, loss, losses=None, need_losses=False):
        """Validate one ``update`` call; return ``(x, arm, loss, losses)`` in canonical types."""
        x = self._check_x(x)
        arm = check_int("arm", arm, 0, self.n_arms - 1)
        loss = check_float("loss", loss)
        if losses is None:
            if need_losses:
                raise ValueError(
                    f"The 'losses' parameter must be an array of shape ({self.n_arms},) for "
                    f"full-information feedback. Got None instead."
                )
        else:
            losses = check_array("losses", losses, shape=(self.n_arms,))
        return x, arm, loss, losses

    def select(self, x) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    def update(self, x, arm, loss, losses=None) -> None:
        """Check the feedback and count the step; baselines learn nothing from it."""
        self._check_feedback(x, arm, loss, losses)
        self.t += 1


#: The margin rule's defaults, by name: the context feature it reads and the arms it plays.
MARGIN_FEATURE, REFINE_PLAN, AMORTIZED_PLAN = "margin", "SparseHead", "AmortizedHead"


def _arm(router, name: str, value, plans) -> int:
    """An arm given as an index, or as a plan name looked up in ``plans`` (the arms' names;
    default the registry's), never by an assumed position."""
    if isinstance(value, str):
        names = tuple(PLAN_NAMES if plans is None else plans)
        value = names.index(check_choice(name, value, names))
    return check_int(name, value, 0, router.n_arms - 1)


def _check_margin_args(router, margin_index, refine_arm, amortized_arm, plans=None):
    """Resolve and check the margin rule's arguments; None means the default, by name."""
    if margin_index is None:
        margin_index = FEATURES.index(MARGIN_FEATURE)
    router.margin_index = check_int("margin_index", margin_index, 0, router.dim - 1)
    refine = REFINE_PLAN if refine_arm is None else refine_arm
    amortized = AMORTIZED_PLAN if amortized_arm is None else amortized_arm
    router.refine_arm = _arm(router, "refine_arm", refine, plans)
    router.amortized_arm = _arm(router, "amortized_arm", amortized, plans)


class FixedPlan(Router):
    """Always play ``arm``: the fixed policies the paper's router must beat."""

    def __init__(self, n_arms, dim, arm, seed=None):
        super().__init__(n_arms, dim, seed)
        self.arm = check_int("arm", arm, 0, self.n_arms - 1)

    def select(self, x) -> int:
        self._check_x(x)
        return self.arm


class ThresholdRouter(Router):
    """The paper's margin rule: refine if ``x[margin_index] < tau``, else amortized scoring.

    Parameters
    ----------
    tau : float
        Threshold on the normalised margin, in ``[0, 1]``; ``0`` never refines, ``1`` (almost)
        always does.
    margin_index : int, optional
        Position of the normalised margin ``m`` in the context (default: the environment's
        ``"margin"`` feature).
    refine_arm, amortized_arm : int or str, optional
        Arms played below and at/above the threshold, as indices or plan names (default
        ``"SparseHead"`` and ``"AmortizedHead"``), names looked up in ``plans``.
    plans : sequence of str, optional
        The arms' plan names (default: the registry's ``PLAN_NAMES``).
    """

    def __init__(self, n_arms, dim, tau, margin_index=None, refine_arm=None, amortized_arm=None,
                 plans=None, seed=None):  # fmt: skip
        super().__init__(n_arms, dim, seed)
        self.tau = check_float("tau", tau, 0.0, 1.0)
        _check_margin_args(self, margin_index, refine_arm, amortized_arm, plans)

    def select(self, x) -> int:
        m = self._check_x(x)[self.margin_index]
        return self.refine_arm if m < self.tau else self.amortized_arm


class Oracle(Router):
    """Play the arm of least true expected loss at each step (ties go to the lowest index).

    Parameters
    ----------
    expected_losses : array_like, shape (T, n_arms)
        True expected loss of every arm at every step; ``select`` reads row ``t`` and ``update``
        advances ``t``.
    """

    def __init__(self, n_arms, dim, expected_losses, seed=None):
        super().__init__(n_arms, dim, seed)
        table = check_array("expected_losses", expected_losses, shape=(None, self.n_arms))
        self.expected_losses = table
        self._best = np.argmin(table, axis=1)  # (T,) argmin keeps the first of equal minima

    def select(self, x) -> int:
        self._check_x(x)
        if self.t >= len(self._best):
            raise ValueError(
                f"The 'expected_losses' parameter has {len(self._best)} rows; "
                f"the oracle was asked for step {self.t}."
            )
        return int(self._best[self.t])


def _isfinite(value) -> bool:
    """``math.isfinite`` that answers False instead of raising for non-numbers."""
    try:
        return math.isfinite(value)
    except TypeError:
        return False
