"""The prompt-prefix store on its own (small random caches): longest prefix, never the whole
prompt, copies that later cache writes do not change, and the memory bound."""

import numpy as np
import pytest

from app.engine.forward_numpy import KVCache
from app.engine.prefix_cache import PrefixCache


def _cache(n, cap=None, seed=0):
    rng = np.random.default_rng(seed)
    shape = (2, 3, cap or n, 4)
    c = KVCache(rng.standard_normal(shape, np.float32), rng.standard_normal(shape, np.float32))
    c.length = n
    return c


def _empty(cap):
    shape = (2, 3, cap, 4)
    return KVCache(np.full(shape, np.nan, np.float32), np.full(shape, np.nan, np.float32))


def test_longest_prefix_is_copied_and_the_last_token_always_runs():
    pc = PrefixCache()
    a, b = _cache(6, seed=1), _cache(6, seed=2)
    pc.store([1, 2, 3, 4, 5, 6], a)
    pc.store([1, 2, 9, 9, 9, 9], b)
    new = _empty(10)
    assert pc.fill([1, 2, 3, 4, 7], new) == 4  # a's first four beat b's first two
    assert new.length == 4
    assert np.array_equal(new.k[:, :, :4], a.k[:, :, :4])
    assert np.array_equal(new.v[:, :, :4], a.v[:, :, :4])
    assert np.isnan(new.k[:, :, 4:]).all()  # nothing past the prefix written
    same = _empty(10)
    assert pc.fill([1, 2, 3, 4, 5, 6], same) == 5  # a repeated prompt: all but its last token
    assert pc.fill([7, 8], _empty(4)) == 0
    assert pc.stats()["hits"] == 2 and pc.stats()["reused_positions"] == 9


def test_stored_rows_are_copies():
    pc = PrefixCache()
    a = _cache(4, cap=8, seed=3)
    want = a.k[:, :, :4].copy()
    pc.store([5, 6, 7, 8], a)
    a.k[:] = 0.0  # the decode goes on writing (or reusing) its own cache
    new = _empty(8)
    assert pc.fill([5, 6, 7, 8, 9], new) == 4
    assert np.array_equal(new.k[:, :, :4], want)


def test_memory_bound_evicts_least_recently_used():
    one = 2 * _cache(4).k.nbytes
    pc = PrefixCache(max_bytes=2 * one)
    for i in range(3):
        pc.store([i, 1, 2, 3], _cache(4, seed=i))
    assert pc.nbytes <= 2 * one and len(pc.entries) == 2
    assert pc.fill([0, 1, 2, 3, 4], _empty(8)) == 0  # the oldest left
    assert pc.fill([2, 1, 2, 3, 4], _empty(8)) == 4


def test_bad_bound():
    with pytest.raises(ValueError, match="max_bytes"):
        PrefixCache(max_bytes=-1)


def test_followers_wait_only_for_a_longer_shared_prefix():
    from app.engine.prefix_cache import MIN_SHARED, followers

    base = list(range(100, 100 + MIN_SHARED + 4))
    a = base + [1, 2]
    b = base + [3]  # shares MIN_SHARED + 4 positions with a
    c = [7] + base  # shares nothing
    # a leads (first fresh), b waits for it, c runs; b already holding most of it does not wait
    assert followers([], [(a, 0), (b, 0), (c, 0)]) == {1}
    assert followers([], [(a, 0), (b, 8)]) == set()
    assert followers([b], [(a, 0)]) == {0}  # a running prompt leads too
    assert followers([], [(a, 0), (list(a), 0)]) == {1}  # the same prompt twice
