"""Amortization model: refine probability, error rate, safe τ, decode totals, transformer costs."""

import numpy as np
import pytest

from app.model import (
    SHAPES,
    MarginDistribution,
    Scenario,
    amortization_curves,
    decision_error_rate,
    decode_step_cost,
    decode_totals,
    error_given_margin,
    prefill_cost,
    refine_probability,
    safe_tau,
)


def test_refine_probability_is_the_margin_cdf():
    dist = MarginDistribution(1.0, 1.0)  # uniform on [0, 1]
    assert np.allclose(refine_probability([0.0, 0.25, 1.0, 3.0], dist), [0.0, 0.25, 1.0, 1.0])
    dist = MarginDistribution(2.0, 3.0)
    samples = dist.sample(np.random.default_rng(0), 200_000)
    assert abs((samples < 0.4).mean() - float(refine_probability(0.4, dist))) < 0.005
    assert abs(samples.mean() - dist.mean) < 0.002


def test_error_given_margin_and_safe_tau():
    assert safe_tau(0.1) == pytest.approx(0.2)
    assert error_given_margin(0.0, 0.1) == pytest.approx(0.5)
    assert error_given_margin(0.1, 0.1) == pytest.approx(0.125)
    assert error_given_margin([0.2, 0.5], 0.1).tolist() == [0.0, 0.0]


def test_error_rate_matches_monte_carlo_and_vanishes_at_safe_tau():
    dist, eps = MarginDistribution(), 0.1
    m = dist.sample(np.random.default_rng(1), 1_000_000)
    for tau in (0.0, 0.05, 0.15):
        mc = (error_given_margin(m, eps) * (m >= tau)).mean()
        assert float(decision_error_rate(tau, eps, dist)) == pytest.approx(mc, rel=0.02)
    rates = decision_error_rate(np.linspace(0, 1, 51), eps, dist)
    assert np.all(np.diff(rates) <= 1e-15)  # refining more never adds errors
    assert np.all(rates[np.linspace(0, 1, 51) >= safe_tau(eps)] == 0.0)


def test_decode_step_grows_with_context_and_prefill_costs_more():
    shape = SHAPES["llama-3-8b"]
    c = decode_step_cost(shape, np.array([0, 4096, 32768]))
    assert np.all(np.diff(c.seconds) > 0)
    assert float(prefill_cost(shape, 1024).seconds) > float(decode_step_cost(shape, 1024).seconds)
    assert float(prefill_cost(shape, 0).seconds) == 0.0


def test_decode_totals_and_n_star():
    t = decode_totals([1.0, 1.0, 1.0, 1.0], [3.0, 3.0, 3.0, 3.0], setup_s=5.0)
    assert t["amortized_total"].tolist() == [6.0, 7.0, 8.0, 9.0]
    assert t["full_total"].tolist() == [3.0, 6.0, 9.0, 12.0]
    assert t["n_star"] == 3
    assert decode_totals([2.0], [1.0], 0.0)["n_star"] is None


def test_amortization_curves_consistent_with_scenario():
    s = Scenario()
    c = amortization_curves(s)
    assert c["safe_tau"] == pytest.approx(2 * s.eps)
    assert c["amortized_s"][0] < c["full_s"][0] < c["amortized_s"][-1]  # τ=1 always refines
    n_star = c["n_star"]
    assert n_star is not None and n_star > s.warmup_steps
    assert c["amortized_total"][n_star - 1] <= c["full_total"][n_star - 1]
    assert c["amortized_total"][n_star - 2] > c["full_total"][n_star - 2]


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: refine_probability(-0.1), r"'tau' parameter"),
        (lambda: decision_error_rate(0.1, 0.0), r"'eps' parameter"),
        (lambda: error_given_margin([0.1, np.nan], 0.1), r"'m' parameter must contain finite"),
        (lambda: error_given_margin("wide", 0.1), r"'m' parameter must be numeric"),
        (lambda: MarginDistribution(0.0, 1.0), r"'margin_a' parameter"),
        (lambda: decode_totals([1.0, 2.0], [1.0], 0.0), r"'full_s' parameter must have shape"),
        (lambda: decode_totals([1.0], [1.0], -1.0), r"'setup_s' parameter"),
        (lambda: decode_step_cost(SHAPES["gpt2-small"], -1), r"'context' parameter"),
        (lambda: decode_step_cost("gpt2", 10), r"'shape' parameter"),
    ],
)
def test_validation_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_sample_needs_a_generator():
    with pytest.raises(ValueError, match="'rng' parameter"):
        MarginDistribution().sample(0, 10)
