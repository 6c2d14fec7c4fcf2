"""Regret accounting against a hand-computed example and known curves."""

import json
import math

import numpy as np
import pytest

from app.router import (
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

# 3 steps, 2 plans. Oracle per step: 1, 1, 2 (total 4). Column totals 6 and 5: best fixed plan 1.
EXPECTED = np.array([[1.0, 2.0], [3.0, 1.0], [2.0, 2.0]])
ARMS = np.array([1, 0, 0])


def test_hand_computed_example():
    np.testing.assert_array_equal(step_loss(EXPECTED, ARMS), [2.0, 3.0, 2.0])
    np.testing.assert_array_equal(cumulative_loss(EXPECTED, ARMS), [2.0, 5.0, 7.0])
    np.testing.assert_array_equal(dynamic_regret(EXPECTED, ARMS), [1.0, 3.0, 3.0])
    assert best_fixed_arm(EXPECTED) == 1
    np.testing.assert_array_equal(static_regret(EXPECTED, ARMS), [0.0, 2.0, 2.0])
    assert regret_percent(EXPECTED, ARMS) == pytest.approx(75.0)
    np.testing.assert_allclose(plan_shares(ARMS, 2), [2 / 3, 1 / 3])
    np.testing.assert_allclose(plan_shares(ARMS, 2, start=1), [1.0, 0.0])


def test_static_regret_can_be_negative():
    expected = np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])  # best fixed: plan 0 (total 1)
    np.testing.assert_array_equal(static_regret(expected, [0, 1, 0]), [0.0, -1.0, -1.0])


def test_best_fixed_arm_ties_go_to_lowest_index():
    assert best_fixed_arm(np.ones((4, 3))) == 0


@pytest.mark.parametrize("power", [0.5, 2 / 3, 1.0])
def test_loglog_slope_recovers_power(power):
    t = np.arange(1, 2001, dtype=np.float64)
    assert loglog_slope(3.0 * t**power) == pytest.approx(power, abs=1e-12)


def test_loglog_slope_uses_second_half_and_positive_values():
    t = np.arange(1, 1001, dtype=np.float64)
    curve = np.where(t < 500, 50.0 * t, t**0.5)  # the first half must not matter
    assert loglog_slope(curve) == pytest.approx(0.5, abs=1e-12)
    assert math.isnan(loglog_slope(np.zeros(100)))


def test_report_to_dict_is_plain_json():
    report = regret_report(EXPECTED, ARMS)
    assert isinstance(report, RegretReport)
    d = report.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["T"] == 3 and d["n_arms"] == 2
    assert d["total_loss"] == 7.0 and d["oracle_loss"] == 4.0
    assert d["best_fixed_arm"] == 1 and d["best_fixed_loss"] == 5.0
    assert d["dynamic_regret"] == 3.0 and d["static_regret"] == 2.0
    assert d["regret_pct"] == pytest.approx(75.0)
    assert d["dynamic_curve"] == [1.0, 3.0, 3.0] and d["static_curve"] == [0.0, 2.0, 2.0]
    assert all(type(v) is float for v in d["shares"] + d["shares_last_half"])
    assert type(d["total_loss"]) is float and type(d["T"]) is int
    short = report.to_dict(curves=False)
    assert "dynamic_curve" not in short and "static_curve" not in short


def test_report_of_oracle_has_zero_regret_and_null_slope():
    arms = EXPECTED.argmin(axis=1)
    d = regret_report(EXPECTED, arms).to_dict()
    assert d["dynamic_regret"] == 0.0 and d["regret_pct"] == 0.0
    assert d["slope"] is None  # no positive regret to fit
    json.dumps(d, allow_nan=False)


@pytest.mark.parametrize(
    "expected, arms, name",
    [
        (EXPECTED, [0, 2, 1], "arms"),
        (EXPECTED, [0, 1], "arms"),
        (EXPECTED, [0, 0.5, 1], "arms"),
        (np.array([[1.0, np.nan]]), [0], "expected"),
        (np.ones(3), [0, 0, 0], "expected"),
    ],
)
def test_regret_validation_names_parameter(expected, arms, name):
    with pytest.raises(ValueError, match=f"'{name}'"):
        dynamic_regret(expected, arms)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_arms": 0}, r"'n_arms' parameter must be an integer in \[1, inf\). Got 0 instead."),
        ({"n_arms": 2, "start": -1}, r"'start' parameter must be an integer in \[0, inf\)"),
        ({"n_arms": 2.5}, r"'n_arms' parameter"),
    ],
)
def test_plan_shares_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        plan_shares([0, 1, 0], **kwargs)
