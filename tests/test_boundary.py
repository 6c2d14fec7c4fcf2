"""Validation once at the public boundary: inner loops trust already-checked inputs."""

import pytest

import app.model.costs as costs
import app.model.crossover as crossover
from app.model import Scenario, crossover_curve, find_crossover


def _count_checks(monkeypatch):
    calls = []
    for module in (costs, crossover):
        for name in ("check_int", "check_array", "check_choice"):
            if hasattr(module, name):
                real = getattr(module, name)

                def wrapped(*args, _real=real, **kwargs):
                    calls.append(args[0])
                    return _real(*args, **kwargs)

                monkeypatch.setattr(module, name, wrapped)
    return calls


@pytest.mark.parametrize("vocab", [1_000, 1 << 20])
def test_bisection_checks_its_arguments_once(monkeypatch, vocab):
    calls = _count_checks(monkeypatch)
    found = find_crossover(4096, vocab, 1, "bfloat16", "h100")
    assert found.k_flop == vocab
    assert sorted(calls) == ["batch", "d", "dtype", "vocab"]  # whatever the bisection's depth


def test_curve_checks_once_per_argument(monkeypatch):
    calls = _count_checks(monkeypatch)
    s = Scenario()
    crossover_curve(s.d, s.vocab, s.batch, s.dtype, s.hw, ks=[1, 64, 1000])
    assert sorted(calls) == ["batch", "d", "dtype", "ks", "vocab"]


def test_the_boundary_still_refuses_bad_input():
    with pytest.raises(ValueError, match="'d' parameter"):
        find_crossover(0, 1000)
    with pytest.raises(ValueError, match="'dtype' parameter"):
        crossover_curve(64, 1000, dtype="int3")
    with pytest.raises(ValueError, match="'ks' parameter"):
        crossover_curve(64, 1000, ks=[0, 5])


def test_scenario_derives_its_shape_once():
    s = Scenario()
    assert s.shape is s.shape and s.margins is s.margins and s.hw is s.hw
    assert s.replace(d=2048).shape.d == 2048
