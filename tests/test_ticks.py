"""Figure 1's log-axis ticks: few, inside the data, distinct short labels at every slider end."""

import math

import numpy as np
import pytest

from app.model import SCENARIO_LIMITS
from app.widgets.crossover import CrossoverFigure
from app.widgets.state import ScenarioState
from app.widgets.ticks import log_ticks, si_label


@pytest.mark.parametrize(
    "lo, hi",
    [(1, 128_256), (1, 2), (1, 10), (3e-6, 4e-6), (3.1e-6, 3.2e-6), (1e-7, 0.1), (1, 1e12)],
)
def test_ticks_are_few_increasing_and_inside(lo, hi):
    ticks = log_ticks(lo, hi, max_ticks=6)
    assert 1 <= len(ticks) <= 6
    assert ticks == sorted(set(ticks))
    assert all(lo * (1 - 1e-9) <= t <= hi * (1 + 1e-9) for t in ticks)


def test_random_ranges_never_exceed_the_limit():
    rng = np.random.Generator(np.random.PCG64(0))
    for _ in range(2000):
        a, b = sorted(10.0 ** rng.uniform(-9, 7, size=2))
        ticks = log_ticks(a, b, max_ticks=5)
        assert 1 <= len(ticks) <= 5
        assert len({si_label(t, "s") for t in ticks}) == len(ticks)


def test_labels_are_compact():
    assert si_label(2e-5, "s") == "20 µs"
    assert si_label(1e-3, "s") == "1 ms"
    assert si_label(32_000) == "32k"
    assert si_label(1) == "1"


def test_bad_ranges_are_refused():
    with pytest.raises(ValueError, match="'lo' and 'hi'"):
        log_ticks(0, 10)
    with pytest.raises(ValueError, match="'max_ticks'"):
        log_ticks(1, 10, max_ticks=1)


def _fits(labels, width_px, px_per_char=7.5, gap_px=12):
    """Labels spread evenly over a log axis of ``width_px`` do not touch (9-pt font)."""
    return all(
        (len(a) + len(b)) / 2 * px_per_char + gap_px <= width_px / max(len(labels) - 1, 1)
        for a, b in zip(labels, labels[1:])
    )


@pytest.mark.parametrize("vocab", [SCENARIO_LIMITS["vocab"][0], 2, 1000, 128_256])
@pytest.mark.parametrize("d", [SCENARIO_LIMITS["d"][0], 4096, SCENARIO_LIMITS["d"][1]])
def test_figure_1_axes_at_slider_ends(vocab, d):
    vocab = max(vocab, 2)
    state = ScenarioState(d=d, vocab=vocab, k=1)
    fig = CrossoverFigure(measured=False)
    fig.update(state.scenario)
    for axis, width in ((fig.figure.xaxis[0], 600), (fig.figure.yaxis[0], 250)):
        ticks = axis.ticker.ticks
        labels = [axis.major_label_overrides[t] for t in ticks]
        assert 1 <= len(ticks) <= 6 and len(set(labels)) == len(labels)
        assert _fits(labels, width), labels
    k = np.asarray(fig.dense_source.data["k"])
    xt = fig.figure.xaxis[0].ticker.ticks
    assert min(xt) >= k.min() and max(xt) <= k.max() * (1 + 1e-9)
    assert math.isclose(min(xt), 1.0)
