"""Figure 2's numbers: the τ amortization curve and the decode-length crossover N*."""

from __future__ import annotations

import numpy as np

from .amortization import (
    decision_error_rate,
    decode_totals,
    expected_step_cost,
    refine_probability,
    safe_tau,
)
from .costs import sparse_head_cost
from .scenario import Scenario
from .transformer import amortized_update_cost, decode_step_cost
from .validate import check_instance

__all__ = ["amortization_curves", "TAU_GRID"]

TAU_GRID = np.linspace(0.0, 1.0, 101)


def _step_costs(s: Scenario, context):
    args = (s.batch, s.dtype, s.hw)
    head = sparse_head_cost(s.d, s.vocab, s.k, *args)
    exact = decode_step_cost(s.shape, context, *args) + head
    amortized = amortized_update_cost(s.shape, *args) + head
    return amortized, exact


def amortization_curves(s: Scenario, taus=None) -> dict:
    """Amortized-with-refine against full recomputation, per step over τ and in total over N.

    Over τ (at decode position ``s.context``): ``tau``, ``refine_prob``, ``error_rate``,
    ``amortized_s`` (expected seconds per step), ``full_s`` (seconds per exact step), and
    ``safe_tau`` = 2ε. Over decode length ``N = 1..s.decode_length`` starting at position
    ``s.context`` with τ = ``s.tau``: ``n``, ``amortized_total``, ``full_total`` (seconds) and
    ``n_star``. The amortized strategy first pays ``s.warmup_steps`` exact steps to fit its
    stable state, which is what makes it lose on short decodes.
    """
    check_instance("s", s, Scenario)
    taus = TAU_GRID if taus is None else np.asarray(taus, dtype=np.float64)
    amortized, exact = _step_costs(s, s.context)
    p = refine_probability(taus, s.margins)
    per_tau = expected_step_cost(amortized, exact, p)
    positions = s.context + np.arange(s.decode_length, dtype=np.float64)
    amortized_t, exact_t = _step_costs(s, positions)
    p_now = float(refine_probability(s.tau, s.margins))
    amortized_steps = expected_step_cost(amortized_t, exact_t, p_now).seconds
    setup = s.warmup_steps * float(exact.seconds)
    totals = decode_totals(amortized_steps, exact_t.seconds, setup)
    return {
        "tau": taus,
        "refine_prob": np.asarray(p),
        "error_rate": np.asarray(decision_error_rate(taus, s.eps, s.margins)),
        "amortized_s": np.asarray(per_tau.seconds),
        "full_s": float(exact.seconds) * np.ones_like(taus),
        "safe_tau": safe_tau(s.eps),
        "setup_s": setup,
        **totals,
    }
