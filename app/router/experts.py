"""Margin routing as experts over thresholds (paper Sections 4 and 6).

Expert ``i`` is the margin rule with threshold ``tau_i``: refine if ``m < tau_i``, otherwise the
amortized plan. Exponential weights over the ``N`` experts, kept as cumulative (estimated) losses
``L_i`` with ``w_i proportional to exp(-eta_t L_i)``:

* full information (Hedge): every expert's loss ``losses[advice_i]`` is seen;
  regret ``O(sqrt(T log N))``; ``eta = sqrt(8 ln N / T)`` for a known horizon, else the anytime
  ``eta_t = sqrt(8 ln N / t)`` (Cesa-Bianchi and Lugosi, 2006, Thm 2.3).
* bandit feedback (Exp4): only the played arm's loss is seen; an expert is drawn from
  ``q = (1 - gamma) w / sum(w) + gamma / N``, and the importance-weighted estimate
  ``loss / P(arm)`` (``P(arm)`` = total ``q`` of the experts advising it) is charged to every
  expert that advised the played arm. With ``K = 2`` distinct advices,
  ``eta = sqrt(2 ln N / (T K))`` or the anytime ``sqrt(ln N / (t K))`` gives regret
  ``O(sqrt(T K log N))``, within the paper's ``O(sqrt(T N log N))``
  (Bubeck and Cesa-Bianchi, 2012, Thms 3.1 and 4.2).

Losses are mapped from ``loss_range`` to ``[0, 1]`` and clipped there, as the rates assume.
"""

from __future__ import annotations

import math

import numpy as np

from app.model.validate import check_array, check_choice, check_float, check_int

from .baselines import Router, _check_margin_args

__all__ = ["ThresholdExperts"]


class ThresholdExperts(Router):
    """Exponential weights (Hedge or Exp4) over ``N`` margin thresholds.

    Parameters
    ----------
    n_arms, dim : int
        Number of plans and context length.
    taus : array_like, shape (N,), optional
        Thresholds in ``[0, 1]``; default ``linspace(0, 1, n_thresholds)``.
    n_thresholds : int
        ``N`` when ``taus`` is not given, ``>= 1``.
    feedback : {"bandit", "full"}
        ``"full"`` runs Hedge and needs ``losses`` in every ``update``; ``"bandit"`` runs Exp4.
    eta : float, optional
        Constant learning rate ``> 0``; overrides ``horizon``.
    gamma : float, optional
        Uniform exploration mixed into the expert draw (bandit only), in ``[0, 1]``; default 0:
        loss-based importance weights need no forced exploration.
    horizon : int, optional
        Known horizon ``T``: sets the theoretical constant ``eta``.
    margin_index, refine_arm, amortized_arm, plans : optional
        As in :class:`~app.router.baselines.ThresholdRouter` (arms by plan name).
    loss_range : (float, float)
        Range mapped onto ``[0, 1]`` before clipping.
    seed : int, Generator or None
        Seed of the expert draws.

    Attributes
    ----------
    taus_ : ndarray, shape (N,)
    cum_loss_ : ndarray, shape (N,)
        Cumulative (estimated, in bandit mode) loss of each expert.
    weights_ : ndarray, shape (N,)
        Current normalised weights.
    best_expert_ : int
        Expert of least cumulative (estimated) loss.
    """

    def __init__(
        self,
        n_arms,
        dim,
        taus=None,
        n_thresholds=11,
        feedback="bandit",
        eta=None,
        gamma=None,
        horizon=None,
        margin_index=None,
        refine_arm=None,
        amortized_arm=None,
        loss_range=(0.0, 1.0),
        plans=None,
        seed=None,
    ):
        super().__init__(n_arms, dim, seed)
        if taus is None:
            n = check_int("n_thresholds", n_thresholds, 1)
            taus = np.linspace(0.0, 1.0, n)
        self.taus_ = check_array("taus", taus, lo=0.0, hi=1.0, shape=(None,))
        if self.taus_.size == 0:
            raise ValueError("The 'taus' parameter must hold at least one threshold. Got [].")
        self.feedback = check_choice("feedback", feedback, ("bandit", "full"))
        _check_margin_args(self, margin_index, refine_arm, amortized_arm, plans)
        if self.amortized_arm == self.refine_arm:
            raise ValueError(
                f"The 'amortized_arm' parameter must differ from refine_arm={self.refine_arm}. "
                f"Got {self.amortized_arm} instead."
            )
        self.gamma = 0.0 if gamma is None else check_float("gamma", gamma, 0.0, 1.0)
        self.horizon = None if horizon is None else check_int("horizon", horizon, 1)
        self.eta = None if eta is None else check_float("eta", eta, 0.0, lo_open=True)
        lo, hi = (check_float("loss_range", v) for v in loss_range)
        if not lo < hi:
            raise ValueError(f"The 'loss_range' parameter must have lo < hi. Got {loss_range!r}.")
        self.loss_range = (lo, hi)
        self.cum_loss_ = np.zeros(self.taus_.size)
        self._q = None  # expert probabilities of the last select, (N,)

    @property
    def n_experts(self) -> int:
        return self.taus_.size

    def eta_at(self, t: int) -> float:
        """Learning rate for round ``t`` (1-based): constant, horizon-tuned or anytime."""
        if self.eta is not None:
            return self.eta
        log_n = math.log(max(self.n_experts, 2))  # N = 1: any eta works; keep it finite
        if self.feedback == "full":
            T = self.horizon if self.horizon is not None else t
            return math.sqrt(8.0 * log_n / T)
        K = 2  # distinct advices: refine_arm, amortized_arm
        if self.horizon is not None:
            return math.sqrt(2.0 * log_n / (self.horizon * K))
        return math.sqrt(log_n / (t * K))

    @property
    def weights_(self) -> np.ndarray:
        z = -self.eta_at(self.t + 1) * (self.cum_loss_ - self.cum_loss_.min())
        w = np.exp(z)
        return w / w.sum()

    @property
    def best_expert_(self) -> int:
        return int(np.argmin(self.cum_loss_))

    def advice(self, x) -> np.ndarray:
        """Arm advised by every expert for ``x``: shape ``(N,)`` ints."""
        m = self._check_x(x)[self.margin_index]
        return np.where(m < self.taus_, self.refine_arm, self.amortized_arm)

    def select(self, x) -> int:
        """Draw an expert from the (mixed) weights and return its advice for ``x``."""
        adv = self.advice(x)
        q = self.weights_
        if self.feedback == "bandit" and self.gamma > 0.0:
            q = (1.0 - self.gamma) * q + self.gamma / self.n_experts
        self._q = q
        i = int(np.searchsorted(np.cumsum(q), self.rng.random(), side="right"))
        i = min(i, self.n_experts - 1)  # cumsum may end a hair below 1
        return int(adv[i])

    def update(self, x, arm, loss, losses=None) -> None:
        """Charge each expert its (estimated) loss; ``losses`` (shape ``(n_arms,)``) for Hedge."""
        x, arm, loss, losses = self._check_feedback(
            x, arm, loss, losses, need_losses=self.feedback == "full"
        )
        adv = self.advice(x)
        lo, hi = self.loss_range
        if self.feedback == "full":
            self.cum_loss_ += np.clip((losses[adv] - lo) / (hi - lo), 0.0, 1.0)
        else:
            q = self._q if self._q is not None else self.weights_
            agree = adv == arm
            p_arm = q[agree].sum()
            if p_arm > 0.0:  # an arm no expert advised teaches the experts nothing
                est = min(max((loss - lo) / (hi - lo), 0.0), 1.0) / p_arm
                self.cum_loss_[agree] += est
        self._q = None
        self.t += 1
