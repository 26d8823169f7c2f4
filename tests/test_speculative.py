"""The executable spec of speculative decoding. Speculation may change the speed, never the output:

1. greedy      speculative tokens == vanilla greedy tokens, exactly, for any drafter
2. rejection   exact: one verification step reproduces p analytically (1e-12) for arbitrary p and q; whole
               sequences on tiny models, enumerated, follow the target's autoregressive distribution
3. rejection   empirical: many fixed-seed runs of the real loop pass a chi-square test against that distribution
4. coupled     for any seed and any drafter, speculative == vanilla coupled sampling, token for token

Models are tiny random Gemma-architecture models on the batch-invariant "numba" backend (on the "numpy"
backend BLAS may round a token's logits differently in a batch than alone, and greedy could flip on a tie).
Drafters include adversarial ones: random tokens, a perfect oracle, one that proposes fewer than k tokens,
and one whose q puts zero mass on most of the vocabulary.
"""

import itertools
from math import erfc, sqrt

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinyspec.config import tiny_config
from tinyspec.decoding import generate_ids
from tinyspec.drafters import DraftModelDrafter, Drafter, EarlyExitDrafter, NgramDrafter, Proposal, make_drafter
from tinyspec.model import Model
from tinyspec.sampling import SamplingParams, warp
from tinyspec.speculative import (BreakEven, SpecStats, VerifyCost, acceptance_probability, expected_tokens,
                                  residual_distribution, speculative_generate_ids)
from tinyspec.weights import random_weights

VOCAB = 32


def tiny(seed, backend="numba", **kw):
    cfg = tiny_config(**kw)
    return Model(cfg, random_weights(cfg, seed=seed, scale=1.0), backend)


# --- adversarial drafters ---------------------------------------------------------------------------------------

class RandomDrafter(Drafter):
    """Random tokens. Under sampling its q is uniform over `support` (zero mass elsewhere)."""
    name = "random"

    def __init__(self, seed, support=None, vocab=VOCAB):
        self.rng = np.random.default_rng(seed)
        self.vocab_size = vocab
        self.support = np.arange(vocab) if support is None else np.asarray(support)

    def begin(self, target, prompt, params):
        self.sampling = not params.greedy

    def propose(self, context, k):
        tokens = [int(t) for t in self.rng.choice(self.support, size=k)]
        q = np.zeros((k, self.vocab_size))
        q[:, self.support] = 1.0 / len(self.support)
        return Proposal(tokens, q if self.sampling else None)


class OracleDrafter(Drafter):
    """Knows the answer: proposes the vanilla output's next tokens (deterministic, so q is one-hot)."""
    name = "oracle"

    def __init__(self, prompt_len, answer):
        self.prompt_len, self.answer = prompt_len, answer

    def propose(self, context, k):
        done = len(context) - self.prompt_len
        return Proposal(list(self.answer[done: done + k]))


class ShortDrafter(Drafter):
    """Proposes fewer than k tokens: alternately none and one, wrapping an inner drafter."""
    name = "short"

    def __init__(self, inner):
        self.inner, self.calls = inner, 0
        self.vocab_size = inner.vocab_size

    def begin(self, target, prompt, params):
        self.inner.begin(target, prompt, params)

    def propose(self, context, k):
        self.calls += 1
        p = self.inner.propose(context, k)
        n = self.calls % 2
        return Proposal(p.tokens[:n], None if p.q is None else p.q[:n])

    def rollback(self, n):
        self.inner.rollback(n)


DRAFTERS = ["random", "oracle", "short", "ngram", "early-exit", "draft-model", "sparse"]


def build_drafter(kind, seed, prompt, answer):
    if kind == "random":
        return RandomDrafter(seed)
    if kind == "sparse":  # q puts zero mass on 28 of the 32 tokens
        return RandomDrafter(seed, support=[1, 5, 9, 17])
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

@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
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


# --- 4. coupled -----------------------------------------------------------------------------------------------

@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
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


# --- 2. rejection, exact: one step ---------------------------------------------------------------------------

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


# --- 2. rejection, exact: whole sequences by enumeration -------------------------------------------------------

def enumerate_speculative(p_of, q_of, prompt, length, k):
    """The exact distribution of the first `length` tokens that speculative sampling emits, by enumerating
    every draft and every accept/reject outcome. p_of / q_of map a context to the warped p / q."""
    out = {}

    def emit_prob(context, prob):  # context has grown; continue until `length` new tokens exist
        new = len(context) - len(prompt)
        if new >= length:
            key = tuple(context[len(prompt): len(prompt) + length])
            out[key] = out.get(key, 0.0) + prob
            return
        step(context, prob)

    def step(context, prob):
        kk = min(k, length - (len(context) - len(prompt)) - 1)
        if kk <= 0:  # only one token left: the target samples it from p
            for x, px in enumerate(p_of(context)):
                if px > 0:
                    emit_prob(context + [x], prob * px)
            return
        for drafts in itertools.product(range(len(p_of(context))), repeat=kk):
            ctx, pd = list(context), 1.0
            for d in drafts:  # probability the drafter drafts this sequence
                pd *= q_of(ctx)[d]
                ctx.append(d)
            if pd == 0:
                continue
            ctx, reach = list(context), prob * pd
            for d in drafts:  # accept d with a(d); on rejection draw from the residual
                p, q = p_of(ctx), q_of(ctx)
                a = acceptance_probability(p, q, d)
                if a < 1:
                    for x, rx in enumerate(residual_distribution(p, q)):
                        if rx > 0:
                            emit_prob(ctx + [x], reach * (1 - a) * rx)
                reach *= a
                ctx.append(d)
                if reach == 0:
                    break
            else:  # all accepted: bonus token from p
                for x, px in enumerate(p_of(ctx)):
                    if px > 0:
                        emit_prob(ctx + [x], reach * px)

    step(list(prompt), 1.0)
    return out


def autoregressive(p_of, prompt, length):
    out = {}
    for seq in itertools.product(range(len(p_of(list(prompt)))), repeat=length):
        prob, ctx = 1.0, list(prompt)
        for x in seq:
            prob *= p_of(ctx)[x]
            ctx.append(x)
        if prob > 0:
            out[seq] = prob
    return out


def warped_fn(model, params):
    cache = {}

    def f(context):
        key = tuple(context)
        if key not in cache:
            logits = model.forward(list(context), model.new_cache())[-1]
            cache[key] = warp(logits, params.temperature, params.top_k, params.top_p)
        return cache[key]
    return f


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 1000), V=st.integers(2, 6), length=st.integers(1, 4), k=st.integers(1, 3),
       prompt=st.lists(st.integers(0, 1), min_size=1, max_size=3), temperature=st.sampled_from([0.7, 1.0, 2.0]),
       top_k=st.sampled_from([0, 2, 3]), top_p=st.sampled_from([1.0, 0.9, 0.6]))
def test_rejection_sequences_follow_the_target_exactly(seed, V, length, k, prompt, temperature, top_k, top_p):
    kw = dict(vocab_size=V, bos_token_id=0, eos_token_id=1, pad_token_id=0, unk_token_id=0)
    params = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p)
    p_of = warped_fn(tiny(seed, "numpy", **kw), params)
    q_of = warped_fn(tiny(seed + 1, "numpy", **kw), params)
    spec = enumerate_speculative(p_of, q_of, prompt, length, k)
    exact = autoregressive(p_of, prompt, length)
    assert set(spec) <= set(exact) | {s for s in spec if spec[s] < 1e-15}
    for seq in exact:
        assert abs(spec.get(seq, 0.0) - exact[seq]) < 1e-12
    assert abs(sum(spec.values()) - 1) < 1e-12


# --- 3. rejection, empirical: the real loop against the exact distribution -----------------------------------

def chi_square_p_value(counts, expected):
    keep = expected > 0
    stat = float((((counts - expected) ** 2)[keep] / expected[keep]).sum())
    dof = max(int(keep.sum()) - 1, 1)
    z = ((stat / dof) ** (1 / 3) - (1 - 2 / (9 * dof))) / sqrt(2 / (9 * dof))  # Wilson-Hilferty
    return 0.5 * erfc(z / sqrt(2))


@pytest.mark.parametrize("kind,adaptive", [("draft-model", False), ("sparse", False), ("ngram", False),
                                           ("draft-model", True), ("sparse", True), ("ngram", True)])
def test_rejection_loop_matches_exact_distribution_chi_square(kind, adaptive):
    V, length, runs = 5, 3, 3000
    kw = dict(vocab_size=V, bos_token_id=0, eos_token_id=1, pad_token_id=0, unk_token_id=0)
    params = SamplingParams(temperature=1.0, top_p=0.95)
    target = tiny(11, **kw)
    exact = autoregressive(warped_fn(tiny(11, "numpy", **kw), params), [0, 2], length)
    seqs = sorted(exact)
    counts = np.zeros(len(seqs))
    index = {s: i for i, s in enumerate(seqs)}
    for seed in range(runs):  # fixed seeds: deterministic, never flaky
        drafter = {"draft-model": lambda: DraftModelDrafter(tiny(12, **kw)),
                   "sparse": lambda: RandomDrafter(seed, support=[2, 3], vocab=V),
                   "ngram": lambda: NgramDrafter(max_n=1)}[kind]()
        out = speculative_generate_ids(target, drafter, [0, 2], length,
                                       SamplingParams(temperature=1.0, top_p=0.95, seed=seed),
                                       verifier="rejection", k=2, adaptive=adaptive, stop_at_eos=False)
        counts[index[tuple(out)]] += 1
    expected = runs * np.array([exact[s] for s in seqs])
    # pool cells with fewer than 5 expected counts into one
    small = expected < 5
    counts = np.append(counts[~small], counts[small].sum())
    expected = np.append(expected[~small], expected[small].sum())
    assert chi_square_p_value(counts, expected) > 1e-4


def test_chi_square_detects_a_wrong_sampler():
    """The empirical test has teeth: sampling from q instead of p (taking the draft as is) fails it."""
    expected = 3000 * np.array([0.5, 0.3, 0.2])
    assert chi_square_p_value(np.array([1800.0, 700.0, 500.0]), expected) < 1e-4


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


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), k=st.integers(2, 8))
def test_break_even_rule_skips_drafts_that_do_not_pay(seed, k):
    """Random drafts (1 in 32 right) drive alpha down: the rule verifies far fewer than were offered, while
    drafts that are always right (the oracle) are all verified; the output is vanilla's either way."""
    target, prompt, n = tiny(seed), [2, 3], 40
    vanilla = generate_ids(target, prompt, n, stop_at_eos=False)
    stats = SpecStats()
    out = speculative_generate_ids(target, RandomDrafter(seed), prompt, n, k=k, adaptive=True, stats=stats,
                                   stop_at_eos=False)
    assert out == vanilla
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
