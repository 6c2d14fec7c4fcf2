"""The scheduler's thread choice for a pass: one thread for small passes, the measured faster
count for large ones, the other tried again now and then, a fixed count when asked."""

import pytest

from app.engine.pass_threads import ThreadChooser


def _run(chooser, passes, per_row):
    """Drive ``passes`` 64-row passes where ``per_row[t]`` is the seconds per row on t threads;
    the counts chosen."""
    seen = []
    for _ in range(passes):
        t = chooser.choose(64)
        chooser.record(t, 64, per_row[t] * 64)
        seen.append(t)
    return seen


def test_small_passes_run_on_one_thread():
    c = ThreadChooser(min_rows=32)
    assert c.choose(31) == 1 and c.large == 0


def test_the_faster_count_wins_and_the_other_is_retried():
    c = ThreadChooser(explore_every=8)
    seen = _run(c, 40, {1: 3e-3, 2: 2e-3})
    assert seen[:2] == [1, 2]  # each measured once
    assert seen.count(2) > 30 and 1 in seen[8:]  # two threads mostly; one retried
    # the load changes: the second core is now busy, so one thread becomes the faster
    seen = _run(c, 40, {1: 3e-3, 2: 5e-3})
    assert seen[-16:].count(1) >= 14


def test_fixed_count_and_bad_arguments():
    c = ThreadChooser(fixed=2)
    assert c.choose(64) == 2 and c.choose(8) == 1
    with pytest.raises(ValueError, match="candidates"):
        ThreadChooser(candidates=(0, 2))
    with pytest.raises(ValueError, match="fixed"):
        ThreadChooser(fixed=0)
