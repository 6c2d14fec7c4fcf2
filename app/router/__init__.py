"""Bandit routers that pick an inference plan per decode step (numpy and the standard library only).

Contract shared by every router: ``Name(n_arms, dim, ..., seed=None)``, ``select(x) -> int`` and
``update(x, arm, loss, losses=None)``; see :mod:`app.router.baselines`.
"""

from .baselines import FixedPlan, Oracle, Router, ThresholdRouter, make_rng
from .batch import linucb_batch
from .environment import FEATURES, Drift, Stream, make_stream, model_latency
from .experiment import LEARNERS, LiveRun, router_params, run_routers, scenario_stream
from .experts import ThresholdExperts
from .linucb import LinUCB
from .nonstationary import RestartLinUCB, SlidingWindowLinUCB
from .registry import DRIFT_ROUTERS, REGISTRY, RouterSpec
from .regret import (
    RegretReport,
    best_fixed_arm,
    cumulative_loss,
    dynamic_regret,
    loglog_slope,
    plan_shares,
    regret_percent,
    regret_report,
    static_regret,
    step_loss,
)
from .simulate import ROUTERS, make_router, run_router, simulate
from .thompson import LinTS

__all__ = [
    "Router",
    "make_rng",
    "FixedPlan",
    "ThresholdRouter",
    "Oracle",
    "LinUCB",
    "LinTS",
    "SlidingWindowLinUCB",
    "RestartLinUCB",
    "ThresholdExperts",
    "linucb_batch",
    "simulate",
    "run_router",
    "make_router",
    "ROUTERS",
    "REGISTRY",
    "RouterSpec",
    "DRIFT_ROUTERS",
    "RegretReport",
    "regret_report",
    "step_loss",
    "cumulative_loss",
    "dynamic_regret",
    "static_regret",
    "best_fixed_arm",
    "regret_percent",
    "plan_shares",
    "loglog_slope",
    "FEATURES",
    "Drift",
    "Stream",
    "make_stream",
    "model_latency",
    "LEARNERS",
    "LiveRun",
    "router_params",
    "run_routers",
    "scenario_stream",
]
