"""The projection kernel's threads: a call's outputs split between 1, 2, 3 or 8 threads give
the same floats bit for bit, on every stored format, every path this CPU runs, selected groups
too, and a forward over a batch is unchanged."""

import numpy as np
import pytest

from app.engine import qkernel


def _formats(rng, out, inp):
    w = rng.standard_normal((out, inp)).astype(np.float32)
    nb = inp // 32
    d = rng.uniform(0.01, 0.1, (out, nb, 1)).astype(np.float16).view(np.uint8)
    q8 = rng.integers(-127, 128, (out, nb, 32), dtype=np.int8).view(np.uint8)
    q4 = rng.integers(0, 256, (out, nb, 16), dtype=np.uint8)
    m = rng.uniform(-0.1, 0, (out, nb, 1)).astype(np.float16).view(np.uint8)
    return {
        "F32": qkernel.pack_f32(w),
        "Q8_0": qkernel.pack_stored(
            "Q8_0", np.concatenate([d, q8], -1).reshape(out, -1), (out, inp)
        ),  # fmt: skip
        "Q4_0": qkernel.pack_stored(
            "Q4_0", np.concatenate([d, q4], -1).reshape(out, -1), (out, inp)
        ),  # fmt: skip
        "Q4_1": qkernel.pack_stored(
            "Q4_1", np.concatenate([d, m, q4], -1).reshape(out, -1), (out, inp)
        ),  # fmt: skip
    }


@pytest.fixture(autouse=True)
def _restore_threads():
    old = qkernel.threads()
    yield
    qkernel.set_threads(old)


@pytest.mark.parametrize("isa", ["c", "avx2", "avx512"])
def test_any_thread_count_gives_the_same_bits(isa):
    rng = np.random.default_rng(0)
    packs = _formats(rng, 200, 96)  # 13 groups, the last one partial
    with qkernel.forced_isa(isa):
        for name, p in packs.items():
            for t in (1, 4, 5, 16):
                x = rng.standard_normal((t, 96)).astype(np.float32)
                rows = np.array([0, 17, 18, 150, 199])
                qkernel.set_threads(1)
                ref, ref_rows = qkernel.matmul(x, p), qkernel.matmul_rows(x, p, rows)
                for n in (2, 3, 8):
                    qkernel.set_threads(n)
                    assert np.array_equal(qkernel.matmul(x, p), ref), (name, t, n)
                    assert np.array_equal(qkernel.matmul_rows(x, p, rows), ref_rows)


def test_threads_are_validated():
    with pytest.raises(ValueError, match="threads"):
        qkernel.set_threads(0)
    with pytest.raises(ValueError, match="threads"):
        qkernel.set_threads(qkernel.MAX_THREADS + 1)


def test_a_batched_forward_is_unchanged_by_threads(engine):
    body = engine.body
    ids = [[1, 2, 3, 4, 5, 6], [7], [8, 9, 10]]

    def run():
        caches = [body.new_cache(16) for _ in ids]
        return body.forward_batch([(i, c, 0) for i, c in zip(ids, caches)])

    qkernel.set_threads(1)
    one = run()
    qkernel.set_threads(2)
    two = run()
    assert all(np.array_equal(a, b) for a, b in zip(one, two))
