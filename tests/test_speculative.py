"""The executable spec of speculative decoding. Speculation may change the speed, never the output:

1. greedy      speculative tokens == vanilla greedy tokens, exactly, for any drafter
2. rejection   one verification step's two formulas reproduce p analytically (1e-12) for arbitrary p and q;
               the proof through the real loop (exact, by enumeration, and statistical) is tests/test_spec_exact.py
3. coupled     for any seed and any drafter, speculative == vanilla coupled sampling, token for token

Models are tiny random Gemma-architecture models on the batch-invariant "numba" backend (on the "numpy"
backend BLAS may round a token's logits differently in a batch than alone, and greedy could flip on a tie).
Drafters include adversarial ones: random tokens, a perfect oracle, one that proposes fewer than k tokens,
and one whose q puts zero mass on most of the vocabulary.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import OracleDrafter, RandomDrafter, ShortDrafter, WrongDrafter, examples, tiny
from tinyspec.adaptive import BreakEven, VerifyCost
from tinyspec.decoding import generate_ids
from tinyspec.drafters import DraftModelDrafter, Drafter, EarlyExitDrafter, NgramDrafter, Proposal, make_drafter
from tinyspec.sampling import SamplingParams
from tinyspec.speculative import SpecStats, acceptance_probability, residual_distribution, speculative_generate_ids
from tinyspec.theory import expected_tokens_per_step as expected_tokens

VOCAB = 32


DRAFTERS = ["random", "oracle", "short", "ngram", "early-exit", "draft-model", "sparse"]


def build_drafter(kind, seed, prompt, answer):
    if kind == "random":
        return RandomDrafter(VOCAB)
    if kind == "sparse":  # q puts zero mass on 28 of the 32 tokens
        return RandomDrafter(VOCAB, support=[1, 5, 9, 17])
    if kind == "oracle":
        return OracleDrafter(len(prompt), answer)
    if kind == "short":
        return ShortDrafter(DraftModelDrafter(tiny(seed + 1)))
    if kind == "ngram":
        return NgramDrafter(max_n=2)
    if kind == "early-exit":
        return EarlyExitDrafter(1)
    return DraftModelDrafter(tiny(seed + 1))


case = dict(seed=st.integers(0, 10_000), prompt=st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=8),
            k=st.integers(1, 8), n=st.integers(1, 24), kind=st.sampled_from(DRAFTERS),
            eos=st.one_of(st.none(), st.integers(0, VOCAB - 1)), adaptive=st.booleans())


def model_with_eos(seed, eos):
    return tiny(seed, eos_token_id=eos) if eos is not None else tiny(seed, eos_token_id=1)


# --- 1. greedy ------------------------------------------------------------------------------------------------

@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(**case)
def test_greedy_speculative_equals_greedy(seed, prompt, k, n, kind, eos, adaptive):
    target = model_with_eos(seed, eos)
    vanilla = generate_ids(target, prompt, n)
    drafter = build_drafter(kind, seed, prompt, vanilla)
    stats = SpecStats()
    spec = speculative_generate_ids(target, drafter, prompt, n, k=k, adaptive=adaptive, stats=stats)
    assert spec == vanilla
    assert stats.new_tokens == len(vanilla)
    assert stats.accepted <= stats.drafted
    if kind == "oracle" and len(vanilla) > 1:
        assert stats.accepted == stats.drafted  # a perfect drafter is never rejected


# --- 3. coupled -----------------------------------------------------------------------------------------------

@settings(max_examples=examples(120), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(**case, temperature=st.sampled_from([0.5, 1.0, 1.5]), top_k=st.sampled_from([0, 5]),
       top_p=st.sampled_from([1.0, 0.8]))
def test_coupled_speculative_equals_coupled_sampling(seed, prompt, k, n, kind, eos, adaptive, temperature, top_k,
                                                     top_p):
    target = model_with_eos(seed, eos)
    params = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, coupled=True)
    vanilla = generate_ids(target, prompt, n, params)
    drafter = build_drafter(kind, seed, prompt, vanilla)
    spec = speculative_generate_ids(target, drafter, prompt, n, params, verifier="coupled", k=k, adaptive=adaptive)
    assert spec == vanilla


# --- 2. rejection: one step's formulas ---------------------------------------------------------------------------

def dist(size, zeros):
    """A probability vector with some exact zeros."""
    return st.lists(st.floats(0.0, 1.0), min_size=size, max_size=size).map(np.array).filter(
        lambda v: v.sum() > 1e-3).map(lambda v: v / v.sum())


@st.composite
def p_and_q(draw):
    V = draw(st.integers(1, 8))
    kind = draw(st.sampled_from(["any", "equal", "disjoint", "q-sparse"]))
    p = draw(dist(V, True))
    if kind == "equal":
        return p, p.copy()
    q = draw(dist(V, True))
    if kind == "disjoint" and V > 1:
        cut = draw(st.integers(1, V - 1))
        p = np.where(np.arange(V) < cut, p + 1e-3, 0.0)
        q = np.where(np.arange(V) >= cut, q + 1e-3, 0.0)
        p, q = p / p.sum(), q / q.sum()
    if kind == "q-sparse":  # q has zeros where p does not
        q = np.where(np.arange(V) % 2 == 0, q + 1e-3, 0.0)
        q = q / q.sum()
    return p, q


def one_step_distribution(p, q):
    """P(output = x) = q(x) a(x) + P(reject) r(x), a = acceptance_probability, r = residual_distribution."""
    accept = np.array([q[x] * acceptance_probability(p, q, x) if q[x] > 0 else 0.0 for x in range(len(p))])
    return accept + (1.0 - accept.sum()) * residual_distribution(p, q)


@settings(max_examples=500, deadline=None)
@given(pq=p_and_q())
def test_one_rejection_step_reproduces_p(pq):
    p, q = pq
    np.testing.assert_allclose(one_step_distribution(p, q), p, rtol=0, atol=1e-12)


def test_acceptance_rejects_tokens_q_never_proposes():
    with pytest.raises(ValueError, match="probability 0"):
        acceptance_probability(np.array([0.5, 0.5]), np.array([1.0, 0.0]), 1)


# --- settings and drafters ----------------------------------------------------------------------------------

def test_bad_settings():
    target = tiny(0)
    with pytest.raises(ValueError, match="k .* must be >= 1"):
        speculative_generate_ids(target, NgramDrafter(), [1, 2], 4, k=0)
    with pytest.raises(ValueError, match="unknown verifier"):
        speculative_generate_ids(target, NgramDrafter(), [1, 2], 4, verifier="magic")
    with pytest.raises(ValueError, match="greedy verifier needs temperature 0"):
        speculative_generate_ids(target, NgramDrafter(), [1, 2], 4, SamplingParams(temperature=1.0))
    other = tiny(0, vocab_size=40)
    with pytest.raises(ValueError, match="vocabulary of 40 tokens, the target 32"):
        speculative_generate_ids(target, DraftModelDrafter(other), [1, 2], 4)
    with pytest.raises(ValueError, match="unknown drafter 'magic'"):
        make_drafter("magic")
    with pytest.raises(ValueError, match="not a whole number"):
        make_drafter("early-exit:x")


def test_early_exit_leaves_the_target_cache_as_it_was():
    target = tiny(4)
    cache = target.new_cache()
    target.forward([2, 3, 4, 5], cache)
    before = [k[:4].copy() for k in cache.k]
    drafter = EarlyExitDrafter(2)
    from tinyspec.drafters import TargetView
    drafter.begin(TargetView(target, cache), [2, 3, 4, 5], SamplingParams())
    proposal = drafter.propose([2, 3, 4, 5, 6], 3)
    assert cache.length == 4 and len(proposal.tokens) == 3
    for b, k in zip(before, cache.k):
        np.testing.assert_array_equal(k[:4], b)


def test_ngram_drafter_examples():
    d = NgramDrafter(max_n=3)
    assert d.propose([1, 2, 3, 9, 1, 2, 3], 2).tokens == [9, 1]  # longest match, most recent
    assert d.propose([4, 5, 6, 4, 7, 4], 3).tokens == [7, 4]  # 1-gram match: [4] last seen before 7
    assert d.propose([1], 3).tokens == []


def test_trace_records_each_step():
    target = tiny(5)
    trace, stats = [], SpecStats()
    out = speculative_generate_ids(target, DraftModelDrafter(tiny(6)), [2, 3], 12,
                                   SamplingParams(temperature=1.0, seed=3), verifier="rejection", k=3,
                                   stop_at_eos=False, trace=trace, stats=stats)
    assert [t for step in trace for t in step.emitted] == out[1:]  # the first token comes from the prefill
    assert sum(s.accepted for s in trace) == stats.accepted
    for s in trace:
        assert len(s.uniforms) == min(s.accepted + 1, len(s.drafted))
        assert s.final_kind == ("bonus" if s.accepted == len(s.drafted) else "correction")
        assert all(0 <= p <= 1 and 0 < q <= 1 for p, q in zip(s.p_draft, s.q_draft))


# --- adaptive k: the break-even rule ------------------------------------------------------------------------

costs = st.builds(VerifyCost, first_extra=st.floats(0.0, 2.0), per_token=st.floats(0.0, 1.0))


@settings(max_examples=300, deadline=None)
@given(cost=costs, c=st.floats(0.0, 0.5), limit=st.integers(0, 16), a1=st.floats(0.0, 1.0), a2=st.floats(0.0, 1.0))
def test_break_even_rule_properties(cost, c, limit, a1, a2):
    lo, hi = sorted((a1, a2))
    rule = lambda a: BreakEven(k_max=16, draft_cost=c, verify_cost=cost, alpha=a)
    n_lo, n_hi = rule(lo).best(limit), rule(hi).best(limit)
    assert 0 <= n_lo <= limit and 0 <= n_hi <= limit
    # n* maximises S(n) = E(alpha, n) / (n c + v(n + 1)), and S(0) = 1 is vanilla: never below break-even
    speeds = [rule(hi).speed(n) for n in range(limit + 1)]
    assert speeds[n_hi] == max(speeds) and speeds[n_hi] >= 1.0 and speeds[0] == 1.0
    # a step that emits E(1) = 1 + alpha tokens for v(2) + c pays iff 1 + alpha > v(2) + c
    if limit >= 1 and 1 + hi > cost(2) + c:
        assert n_hi >= 1
    # no draft pays while 1 / (1 - alpha) <= v(2) + c: E(alpha, n) < 1 / (1 - alpha) for every n
    if lo < 1 and 1 / (1 - lo) <= cost(2) + c:
        assert n_lo == 0
    # more trust never verifies fewer drafts: for n > m, E(alpha, n) / E(alpha, m) grows with alpha
    assert n_lo <= n_hi


def test_expected_tokens_is_the_geometric_sum():
    for a in (0.0, 0.3, 0.9, 1.0):
        for n in range(6):
            assert abs(expected_tokens(a, n) - sum(a ** i for i in range(n + 1))) < 1e-12


def test_break_even_estimate_follows_the_drafts_that_were_right():
    rule = BreakEven(k_max=8)
    context = list(range(100))
    for step in range(10):  # the drafts always match what followed: alpha rises towards 1
        rule.observe(context)
        rule.cut(len(context), list(range(len(context), len(context) + 8)), True)
        context += list(range(len(context), len(context) + 3))  # only 3 were emitted; all 3 agree
    high = rule.alpha
    assert high > 0.9 and rule.best(8) == 8
    for step in range(10):  # every first draft wrong: alpha falls, the rule stops verifying
        rule.observe(context)
        rule.cut(len(context), [-1] * 8, True)
        context += [len(context)]
    assert rule.alpha < 0.1 < high and rule.best(8) == 0


@settings(max_examples=examples(40), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), k=st.integers(2, 8))
def test_break_even_rule_skips_drafts_that_do_not_pay(seed, k):
    """Drafts that are always wrong drive alpha down: after the prior's first steps the rule verifies none, while
    drafts that are always right (the oracle) are all verified; the output is vanilla's either way. Both hold
    for every example: the drafters are deterministic."""
    target, prompt, n = tiny(seed), [2, 3], 40
    vanilla = generate_ids(target, prompt, n, stop_at_eos=False)
    stats = SpecStats()
    out = speculative_generate_ids(target, WrongDrafter(len(prompt), vanilla, VOCAB), prompt, n, k=k, adaptive=True,
                                   stats=stats, stop_at_eos=False)
    assert out == vanilla and stats.accepted == 0
    assert stats.drafted <= stats.proposed / 4  # the prior alone allows some; then alpha falls below break-even
    oracle = SpecStats()
    out = speculative_generate_ids(target, OracleDrafter(len(prompt), vanilla), prompt, n, k=k, adaptive=True,
                                   stats=oracle, stop_at_eos=False)
    assert out == vanilla and oracle.accepted == oracle.drafted
    assert oracle.drafted >= oracle.proposed - 2 * k  # all but the first steps, before alpha has risen


@settings(max_examples=200, deadline=None)
@given(context=st.lists(st.integers(0, 3), min_size=1, max_size=40), k=st.integers(1, 6),
       max_n=st.integers(1, 6), min_n=st.integers(1, 6))
def test_ngram_drafter_equals_the_plain_search(context, k, max_n, min_n):
    """The vectorised search finds what the obvious loop finds: the longest suffix (up to max_n tokens, at
    least min_n) that occurred earlier, its most recent occurrence, and what followed it."""
    if min_n > max_n:
        min_n, max_n = max_n, min_n
    expected = []
    for n in range(min(max_n, len(context) - 1), min_n - 1, -1):
        starts = [s for s in range(len(context) - n - 1, -1, -1) if context[s:s + n] == context[-n:]]
        if starts:
            expected = context[starts[0] + n: starts[0] + n + k]
            break
    assert NgramDrafter(max_n=max_n, min_n=min_n).propose(context, k).tokens == expected
