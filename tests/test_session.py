"""RouterSession's background finish (the browser's worker): the same result as at once, in
chunks between other events, cancelled by a reset or a rewind."""

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from app.model import Scenario
from app.widgets.controls import Player
from app.widgets.session import RouterSession

S = Scenario(horizon=3000, seed=5)


def _run(coro):
    """``asyncio.run(coro)`` on a thread of its own: the suite's browser tests leave
    Playwright's loop running on the main thread."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _session(**kw):
    sess = RouterSession()
    sess.reset(S, compare=["lints"], **kw)
    return sess


def test_background_finish_equals_at_once_and_lets_other_work_run():
    at_once = _session()
    at_once.run_to_end()

    async def main():
        sess = _session(redraw=False)
        epoch, seen = sess.epoch, []
        sess.run_to_end(chunk=400)
        assert sess.finishing and sess.t == 0  # nothing ran yet: the caller's turn ends first
        while sess.finishing:
            seen.append(sess.t)  # other tasks run between the chunks
            await asyncio.sleep(0)
        return sess, epoch, seen

    sess, epoch, seen = _run(main())
    assert sess.done and sess.epoch == epoch + 1
    assert len(set(seen)) >= 3000 // 400 and seen == sorted(seen)
    for name in ("linucb", "lints"):
        assert np.array_equal(sess.curve(name)[1], at_once.curve(name)[1])
        got, want = sess.runs[name].summary(), at_once.runs[name].summary()
        assert got["shares"] == want["shares"] and got["steps"] == want["steps"]
        assert got["static_regret"] == pytest.approx(want["static_regret"], rel=1e-9)


def test_reset_or_rewind_cancels_a_background_finish():
    async def main(cancel):
        sess = _session()
        sess.run_to_end(chunk=400)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        t = sess.t
        cancel(sess)
        epoch = sess.epoch
        for _ in range(20):
            await asyncio.sleep(0)
        return sess, t, epoch

    sess, t, epoch = _run(main(lambda s: s.rewind()))
    assert 0 < t < 3000 and sess.t == 0 and not sess.finishing and sess.epoch == epoch
    sess, _, epoch = _run(main(lambda s: s.reset(S, "sw-linucb")))
    assert list(sess.runs) == ["sw-linucb"] and sess.t == 0 and sess.epoch == epoch


def test_play_during_a_background_finish_starts_a_fresh_run():
    async def main():
        sess = _session()
        player = Player(sess, chunk=100)
        sess.run_to_end(chunk=400)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        player.step_once()
        for _ in range(20):
            await asyncio.sleep(0)
        return sess

    sess = _run(main())
    assert sess.t == 100 and not sess.finishing


def test_compare_during_a_background_finish_and_bad_arguments():
    async def main():
        sess = _session()
        sess.run_to_end(chunk=400)
        await asyncio.sleep(0)
        epoch = sess.epoch
        sess.set_compare(["lints", "sw-linucb"])  # caught up to the current step, no redraw
        assert sess.epoch == epoch and sess.runs["sw-linucb"].t == sess.t
        while sess.finishing:
            await asyncio.sleep(0)
        return sess, epoch

    sess, epoch = _run(main())
    assert sess.epoch == epoch + 1 and all(run.done for run in sess.runs.values())
    with pytest.raises(ValueError, match="chunk"):
        sess.run_to_end(chunk=0)
    with pytest.raises(ValueError, match="router"):
        sess.set_compare(["nope"])
    with pytest.raises(ValueError, match="router"):
        sess.reset(S, compare=["nope"])


def test_a_tick_while_the_inputs_change_restarts_the_animation():
    async def main():
        sess = _session()
        player = Player(sess, chunk=100)
        player.tick()
        sess.reset(S.replace(seed=6), redraw=False)  # what a slider move does while playing
        sess.run_to_end(chunk=400)
        player.tick()
        return sess

    sess = _run(main())
    assert sess.t == 100 and not sess.finishing and sess.scenario.seed == 6
