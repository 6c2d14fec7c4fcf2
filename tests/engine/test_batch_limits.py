"""The scheduler's bounds and the batch-aware rule, without the model."""

import numpy as np
import pytest

from app.engine.batch_limits import BatchLimits, kv_bytes_per_position
from app.engine.results import Telemetry
from app.engine.routing import FixedPolicy
from app.engine.rule import CostRule


@pytest.mark.parametrize(
    "field, value",
    [
        ("max_batch", 0),
        ("max_batch", 257),
        ("max_tokens", 0),
        ("kv_bytes", 10),
        ("max_waiting", -1),
        ("max_batch", 2.5),
        ("max_batch", True),
    ],  # fmt: skip
)
def test_limits_are_validated_naming_the_parameter(field, value):
    with pytest.raises(ValueError, match=field):
        BatchLimits(**{field: value})


def test_default_limits_are_sensible():
    lim = BatchLimits()
    assert lim.max_batch >= 8 and lim.max_tokens >= lim.max_batch and lim.kv_bytes >= 1 << 28
    assert set(lim.to_dict()) == {"max_batch", "max_tokens", "kv_bytes", "max_waiting"}


def test_kv_bytes_per_position():
    class C:
        n_layers, n_kv_heads, head_dim = 30, 3, 64

    assert kv_bytes_per_position(C) == 2 * 4 * 30 * 3 * 64


def test_k_star_falls_with_the_batch():
    rule = CostRule(576, 49152, "cpu")
    stars = [rule.at_batch(b).k_star for b in (1, 2, 4, 8, 16)]
    assert stars[0] == rule.k_star
    assert all(a > b for a, b in zip(stars, stars[1:]))
    assert rule.at_batch(8) is rule.at_batch(8)  # found once per size
    assert rule.at_batch(8).to_dict()["batch"] == 8


def test_auto_policy_prices_the_pass_batch():
    rule = CostRule(576, 49152, "cpu")
    k = (rule.k_star + rule.at_batch(16).k_star) // 2  # sparse alone, dense in a batch of 16
    policy = FixedPolicy(None, rule)

    def tel(batch):
        return Telemetry("r", 0, k, 49152, np.arange(k), batch=batch)

    assert policy.choose(tel(1)) == "SparseHead"
    assert policy.choose(tel(16)) == "DenseHead"
