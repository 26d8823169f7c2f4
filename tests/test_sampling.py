"""Warping (temperature, top-k, top-p) and the draws: properties from their definitions, and fixed-seed
goodness-of-fit tests (deterministic: the seeds are fixed, so they never flake)."""

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tinyspec.sampling import SamplingParams, gumbel_token, sample, warp

pytestmark = pytest.mark.spec  # part of the spec's fast tests (tests/mutation.py runs them on every mutant)

logits_st = st.lists(st.floats(-20, 20, allow_nan=False, width=32), min_size=1, max_size=40).map(
    lambda xs: np.array(xs, np.float32))


def chi_square_ok(counts, p, n):
    """Pearson's chi-square over cells with p > 0 (pooled below 5 expected), at the 1e-6 level."""
    from math import erfc, sqrt

    exp = n * p
    big = exp >= 5
    obs_c = np.append(counts[big], counts[~big].sum())
    exp_c = np.append(exp[big], exp[~big].sum())
    keep = exp_c > 0
    stat = float((((obs_c - exp_c) ** 2)[keep] / exp_c[keep]).sum())
    dof = max(int(keep.sum()) - 1, 1)
    # Wilson-Hilferty: chi2(dof) -> normal; one-sided p-value
    z = ((stat / dof) ** (1 / 3) - (1 - 2 / (9 * dof))) / sqrt(2 / (9 * dof))
    return 0.5 * erfc(z / sqrt(2)) > 1e-6


def assume_top_p_is_not_on_a_boundary(logits, t, k, top_p):
    """A cumulative mass within rounding of top_p could go either way: such an example is not a test."""
    if top_p < 1.0:
        cut = warp(logits, t, k)
        assume(np.abs(np.cumsum(cut[np.argsort(-cut, kind="stable")]) - top_p).min() > 1e-9)


@settings(max_examples=200, deadline=None)
@given(logits=logits_st, t=st.floats(0.05, 5), k=st.integers(0, 45), top_p=st.floats(0.01, 1.0))
def test_warp_is_a_distribution_on_the_kept_set(logits, t, k, top_p):
    p = warp(logits, t, k, top_p)
    assert p.dtype == np.float64 and abs(p.sum() - 1) < 1e-12 and (p >= 0).all()
    kept = p > 0
    if 0 < k:
        assert kept.sum() <= k
    # every kept token is at least as likely as every dropped one (the set is a top set)
    if (~kept).any():
        assert logits[kept].min() >= logits[~kept].max()
    # the kept tokens keep their relative odds: p_i / p_j = exp((l_i - l_j) / t)
    i, j = np.flatnonzero(kept)[[0, -1]]
    np.testing.assert_allclose(np.log(p[i] / p[j]), (float(logits[i]) - float(logits[j])) / t, atol=1e-9)


@settings(max_examples=300, deadline=None)
@given(logits=logits_st, t=st.sampled_from([0.0, 0.3, 1.0, 2.5]), k=st.integers(0, 45),
       top_p=st.one_of(st.just(1.0), st.floats(0.01, 1.0)))
def test_warp_equals_its_definitions(logits, t, k, top_p):
    """warp against helpers.reference_warp, the definitions written out one token at a time."""
    from helpers import reference_warp

    expected = reference_warp(logits, t, k, top_p)
    if t > 0:
        assume_top_p_is_not_on_a_boundary(logits, t, k, top_p)
    np.testing.assert_allclose(warp(logits, t, k, top_p), expected, rtol=0, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(V=st.integers(65, 5000), levels=st.integers(1, 400), seed=st.integers(0, 2**32 - 1), t=st.floats(0.2, 3),
       k=st.sampled_from([0, 0, 1, 63, 64, 700]), top_p=st.floats(0.05, 1.0))
def test_warp_on_a_large_vocabulary_equals_its_definitions(V, levels, seed, t, k, top_p):
    """Past 64 tokens warp orders only the best ones, growing the set until it holds the nucleus: flat logits
    (a nucleus of hundreds or thousands of tokens) and many ties (few distinct levels) against the definitions."""
    from helpers import reference_warp

    rng = np.random.default_rng(seed)
    logits = (rng.integers(0, levels, V) * (6.0 / levels)).astype(np.float32)
    expected = reference_warp(logits, t, k, top_p)
    assume_top_p_is_not_on_a_boundary(logits, t, k, top_p)
    np.testing.assert_allclose(warp(logits, t, k, top_p), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("spread, top_p, kept", [(1.5, 0.1, (512, 4096)), (0.9, 0.1, (512, 4096)),
                                                   (1.5, 0.5, (4096, 262144))])
def test_warp_on_gemmas_vocabulary_equals_its_definitions(spread, top_p, kept):
    """The real vocabulary's size, with nuclei that need the later rounds of warp's search (4096 tokens, all)."""
    from helpers import reference_warp

    logits = (np.random.default_rng(7).standard_normal(262144) * spread).astype(np.float32)
    p = warp(logits, 1.0, top_p=top_p)
    assert kept[0] < np.count_nonzero(p) <= kept[1]
    np.testing.assert_allclose(p, reference_warp(logits, 1.0, top_p=top_p), rtol=0, atol=1e-12)


@settings(max_examples=100, deadline=None)
@given(logits=logits_st, t=st.floats(0.2, 3), k=st.integers(0, 45), seed=st.integers(0, 2**32 - 1),
       position=st.integers(0, 10**6))
def test_gumbel_token_is_the_argmax_of_its_definition(logits, t, k, seed, position):
    """argmax(log p + g), g = gumbel_noise(seed, position, V), whether p has zeros (top-k) or none."""
    from tinyspec.sampling import gumbel_noise

    p = warp(logits, t, k)
    with np.errstate(divide="ignore"):
        assert gumbel_token(p, seed, position) == int(np.argmax(np.log(p) + gumbel_noise(seed, position, len(p))))


@settings(max_examples=200, deadline=None)
@given(logits=logits_st, top_p=st.floats(0.01, 1.0))
def test_top_p_keeps_the_smallest_set_reaching_top_p(logits, top_p):
    full = warp(logits, 1.0)
    p = warp(logits, 1.0, top_p=top_p)
    kept_mass = full[p > 0].sum()
    smallest_kept = full[p > 0].min()
    assert kept_mass >= top_p - 1e-12 or np.all(p > 0)
    assert kept_mass - smallest_kept < top_p + 1e-12  # dropping the least likely kept token falls short


def test_greedy_and_known_values():
    np.testing.assert_array_equal(warp(np.array([1.0, 3.0, 3.0], np.float32), 0.0), [0, 1, 0])  # ties: lowest id
    p = warp(np.array([0.0, np.log(3.0)], np.float32), 1.0)
    np.testing.assert_allclose(p, [0.25, 0.75], rtol=1e-7)
    p = warp(np.array([0.0, np.log(3.0)], np.float32), 0.5)  # odds 3 -> 9
    np.testing.assert_allclose(p, [0.1, 0.9], rtol=1e-7)


@pytest.mark.parametrize("args", [dict(temperature=-1), dict(top_p=0.0), dict(top_p=1.5), dict(top_k=-2),
                                  dict(temperature=float("nan"))])
def test_bad_settings_are_rejected(args):
    with pytest.raises(ValueError, match="temperature|top-p|top-k"):
        SamplingParams(**args)


def test_sample_fits_p_fixed_seed():
    p = warp(np.array([2.0, 1.0, 0.5, -1.0, 0.0, 3.0], np.float32), 1.0, top_k=5)
    rng = np.random.default_rng(1234)
    n = 20000
    counts = np.bincount([sample(p, rng) for _ in range(n)], minlength=len(p))
    assert counts[p == 0].sum() == 0
    assert chi_square_ok(counts, p, n)


def test_gumbel_fits_p_fixed_seed_and_is_keyed_by_position():
    p = warp(np.array([2.0, 1.0, 0.5, -1.0, 0.0, 3.0], np.float32), 1.0, top_p=0.9)
    n = 20000
    counts = np.bincount([gumbel_token(p, 7, pos) for pos in range(n)], minlength=len(p))
    assert counts[p == 0].sum() == 0
    assert chi_square_ok(counts, p, n)
    assert all(gumbel_token(p, 7, pos) == gumbel_token(p, 7, pos) for pos in range(50))


def test_chi_square_helper_rejects_a_wrong_distribution():
    p = np.array([0.5, 0.5])
    assert not chi_square_ok(np.array([6000, 4000]), p, 10000)
    assert chi_square_ok(np.array([5020, 4980]), p, 10000)


@settings(max_examples=200, deadline=None)
@given(logits=logits_st, t=st.floats(0.05, 5), k=st.sampled_from([0, 10_000]))
def test_untruncated_fast_path_equals_the_sorted_path(logits, t, k):
    """With no top-k / top-p cut, warp skips the sort: it must give the sorted path's distribution."""
    from tinyspec.sampling import truncated_softmax

    fast = warp(logits, t, k, 1.0)
    slow = truncated_softmax(np.asarray(logits, np.float64) / t, k, 1.0)
    np.testing.assert_allclose(fast, slow, rtol=1e-12, atol=1e-300)
    assert fast.argmax() == slow.argmax() and abs(fast.sum() - 1) < 1e-12
