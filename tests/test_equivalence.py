"""The dense ≡ sparse lemma as property tests, the margin certificate, ε-equivalence."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from app.model import (
    certified,
    check_equivalence,
    dense_masked_argmax,
    dense_masked_sample,
    sparse_argmax,
    sparse_sample,
    top2_margin,
)

# Few distinct values force ties; -inf and huge values exercise the edges.
VALUES = st.sampled_from([-np.inf, -3.5, -1.0, 0.0, 0.0, 1.0, 2.25, 2.25, 60000.0])


@st.composite
def step(draw):
    dtype = draw(st.sampled_from([np.float16, np.float32, np.float64]))
    vocab = draw(st.integers(1, 40))
    logits = draw(arrays(dtype, vocab, elements=VALUES))
    mask = draw(arrays(bool, vocab))
    mask[draw(st.integers(0, vocab - 1))] = True  # at least one legal token
    return logits, mask


def _sparse_view(logits, mask, perm_seed):
    ids = np.flatnonzero(mask)
    order = np.random.default_rng(perm_seed).permutation(len(ids))  # legal set in any order
    return logits[ids[order]], ids[order]


@settings(max_examples=400, deadline=None)
@given(step(), st.integers(0, 1000))
def test_dense_masked_argmax_equals_sparse_argmax(case, perm_seed):
    logits, mask = case
    scores, ids = _sparse_view(logits, mask, perm_seed)
    token = dense_masked_argmax(logits, mask)
    assert token == sparse_argmax(scores, ids)
    assert mask[token]
    best = logits[mask].max()
    # Documented tie-break: the lowest legal id among the maxima.
    assert token == np.flatnonzero(mask & (logits == best))[0]


@settings(max_examples=400, deadline=None)
@given(step(), st.integers(0, 1000), st.floats(0.0, 1.0, exclude_max=True))
def test_restricted_sampling_same_token_from_same_draw(case, perm_seed, u):
    logits, mask = case
    if not np.isfinite(logits[mask].max()):
        with pytest.raises(ValueError, match="finite score"):
            dense_masked_sample(logits, mask, u)
        return
    scores, ids = _sparse_view(logits, mask, perm_seed)
    token = dense_masked_sample(logits, mask, u)
    assert mask[token]
    assert token == sparse_sample(scores, ids, u)


def test_sampling_follows_the_restricted_softmax():
    logits = np.array([0.0, 5.0, np.log(3.0), 9.0])
    mask = np.array([True, False, True, False])  # legal: ids 0 (weight 1) and 2 (weight 3)
    draws = [dense_masked_sample(logits, mask, u) for u in np.linspace(0, 0.999, 1000)]
    assert set(draws) == {0, 2}
    assert abs(draws.count(2) / 1000 - 0.75) < 0.01


def test_all_legal_scores_minus_inf_still_pick_a_legal_token():
    logits = np.array([5.0, -np.inf, -np.inf, 7.0])
    mask = np.array([False, True, True, False])
    assert dense_masked_argmax(logits, mask) == 1
    assert sparse_argmax(logits[[2, 1]], np.array([2, 1])) == 1


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: dense_masked_argmax(np.array([1.0, np.nan]), np.array([True, True])), "NaN"),
        (lambda: dense_masked_argmax(np.array([1.0, 2.0]), np.array([False, False])), "mask"),
        (lambda: dense_masked_argmax(np.array([1.0, 2.0]), np.array([1, 0])), "mask"),
        (lambda: sparse_argmax(np.array([1.0, 2.0]), np.array([3, 3])), "ids"),
        (lambda: sparse_argmax(np.array([1.0]), np.array([0, 1])), "ids"),
        (lambda: dense_masked_sample(np.ones(2), np.ones(2, bool), 1.0), "'u'"),
        (lambda: dense_masked_sample(np.ones(2), np.ones(2, bool), 0.5, 0.0), "temperature"),
        (lambda: certified(np.ones(3), np.ones(3, bool), -0.1), "'eps'"),
    ],
)
def test_bad_inputs_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@settings(max_examples=300, deadline=None)
@given(
    arrays(np.float64, 12, elements=st.floats(-10, 10)),
    arrays(np.float64, 12, elements=st.floats(-1, 1)),
    st.floats(0.0, 2.0),
)
def test_margin_certificate_guarantees_the_same_token(exact, direction, eps):
    mask = np.ones(12, bool)
    cheap = exact + eps * direction  # within eps of the exact logits everywhere
    if certified(exact, mask, eps):
        assert dense_masked_argmax(cheap, mask) == dense_masked_argmax(exact, mask)


def test_certificate_is_tight_at_twice_eps():
    exact = np.array([0.0, 1.0, -5.0])  # margin 1.0, token 1
    mask = np.ones(3, bool)
    assert top2_margin(exact, mask) == 1.0
    assert certified(exact, mask, 0.49)
    assert not certified(exact, mask, 0.5)
    # At margin == 2ε a perturbation within ε can produce a tie the other way.
    flipped = exact + np.array([0.5, -0.5, 0.0])
    assert dense_masked_argmax(flipped, mask) != dense_masked_argmax(exact, mask)


def test_epsilon_equivalence_report():
    rng = np.random.default_rng(0)
    T, V = 30, 50
    exact = rng.normal(size=(T, V))
    masks = rng.random((T, V)) < 0.3
    masks[:, 0] = True
    close = exact + rng.uniform(-1e-6, 1e-6, size=(T, V))
    rep = check_equivalence(exact, close, masks)
    assert rep.identical and rep.first_divergence is None
    assert 0 < rep.max_gap <= 1e-6
    assert rep.certified_steps == T
    far = exact.copy()
    t = 7
    legal = np.flatnonzero(masks[t])
    far[t, legal[-1]] = exact[t, legal].max() + 1.0  # a different winner at step 7 only
    rep = check_equivalence(exact, far, masks)
    assert not rep.identical and rep.first_divergence == t
    assert rep.max_gap >= 1.0
    assert rep.tokens_a[t] != rep.tokens_b[t]


def test_epsilon_equivalence_shape_mismatch():
    with pytest.raises(ValueError, match="share one"):
        check_equivalence(np.zeros((2, 3)), np.zeros((2, 4)), np.ones((2, 3), bool))
