"""The executable spec, exact: speculative decoding's output distribution, computed through the real loop.

1. exact      `randomness.exact_distribution` runs `speculative_generate` itself once for every path of its
              random outcomes (the verifier's and the drafter's), with an EnumeratingSource, and adds up the
              probability of each output. It must equal vanilla decoding's exact distribution (enumerated the
              same way) and the product of the target's conditionals (the math), to 1e-12.
2. greedy and coupled, token for token, on table models: fast enough for many examples.
3. the production source: vanilla draws one uniform per token; rejection draws one fresh uniform per checked
   draft and one for the token after them, and nothing else.
4. statistics at scale: thousands of seeded runs of the real loop, longer sequences and more drafts than
   enumeration can reach, against the exact distribution with a G-test.
5. edge cases, deterministic: EOS at every position of an accepted draft, the token limit at every position
   of a step, every k from 1 to the largest allowed, and a prompt longer than the real model's sliding window.

Targets are `toy.TableModel`s (any next-token distribution, microseconds a call) unless a test says otherwise:
the loop, the verifiers and the drafters run unchanged on them. Tests marked `spec` are the ones the mutation
harness (tests/mutation.py) runs against each planted bug; they come in order of cost, cheapest first, because
the harness stops at the first failure.
"""

from math import erfc, log, sqrt

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tinyspec.randomness
import tinyspec.toy
from helpers import (TABLE_DRAFTERS, OracleDrafter, RandomDrafter, WrongDrafter, assert_same_distribution,
                     autoregressive, examples, reference_warp, table_drafter, table_target, tiny, warped)
from tinyspec.decoding import generate_ids
from tinyspec.drafters import DraftModelDrafter, EarlyExitDrafter
from tinyspec.randomness import EnumeratingSource, SeededSource, exact_distribution
from tinyspec.sampling import SamplingParams, warp
from tinyspec.speculative import MAX_K, SpecStats, speculative_generate_ids
from tinyspec.toy import TableModel

SLOW = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def test_the_new_modules_examples_hold():
    import doctest
    for module in (tinyspec.randomness, tinyspec.toy):
        assert doctest.testmod(module).failed == 0, module.__name__


# --- 1. the exact distribution of the real loop --------------------------------------------------------------

def test_enumeration_is_exact_on_a_hand_checked_case():
    """Two coins and a draw, probabilities checked by hand; and every path is visited once."""
    runs = []

    def run(source):
        runs.append(1)
        if source.accept(0.3):
            return "a" + str(source.choice([0.0, 1.0, 3.0]))
        return "b" if source.accept(0.5) else "c"

    out = exact_distribution(run)
    assert out == pytest.approx({"a1": 0.3 * 0.25, "a2": 0.3 * 0.75, "b": 0.35, "c": 0.35}, abs=1e-15)
    assert len(runs) == 4


def test_enumeration_refuses_a_run_with_hidden_randomness():
    rng = np.random.default_rng(0)
    with pytest.raises(RuntimeError, match="did not come from this source"):
        exact_distribution(lambda source: source.choice(np.ones(int(rng.integers(1, 4)))))


# --- 3. the production source ----------------------------------------------------------------------------------

def inverse_cdf(p, u):  # the draw `sampling.sample` documents: the first token whose CDF exceeds u * total
    cdf = np.cumsum(p)
    return int(np.searchsorted(cdf, u * cdf[-1], side="right"))


@pytest.mark.spec
@pytest.mark.parametrize("seed", [0, 1, 7])
def test_vanilla_draws_one_uniform_per_token(seed):
    """Vanilla sampling is numpy.random.default_rng(seed), one uniform per token, CDF inversion: recomputed here
    from the table's logits with a generator of our own."""
    target, params, prompt = table_target(6, seed), SamplingParams(temperature=1.0, top_k=4, seed=seed), [0, 3]
    out = generate_ids(target, prompt, 20, params, stop_at_eos=False)
    rng, context = np.random.default_rng(seed), list(prompt)
    for token in out:
        assert token == inverse_cdf(warp(target.logits(context), 1.0, 4), rng.random())
        context.append(token)


@pytest.mark.spec
@pytest.mark.parametrize("kind", ["draft-model", "random", "ngram"])
def test_rejection_draws_one_fresh_uniform_per_checked_draft(kind):
    """The verifier's stream is default_rng(seed): the first token takes one uniform; each step takes one per
    draft it checks (u < min(1, p/q) keeps the draft) and then one for the correction or the bonus."""
    V, seed = 5, 4
    target, params, prompt = table_target(V, seed), SamplingParams(temperature=1.0, seed=seed), [0, 3]
    trace = []
    out = speculative_generate_ids(target, table_drafter(kind, V, seed), prompt, 30, params, "rejection", k=4,
                                   stop_at_eos=False, trace=trace)
    stream = np.random.default_rng(seed).random(1000)
    used = 1  # the first token
    context = list(prompt) + out[:1]
    checked = 0
    for step in trace:
        n = len(step.uniforms)
        assert n == min(step.accepted + 1, len(step.drafted))
        assert step.uniforms == list(stream[used: used + n])
        ratios = [min(1.0, p / q) for p, q in zip(step.p_draft, step.q_draft)]
        assert [u < a for u, a in zip(step.uniforms, ratios)] == [True] * step.accepted + [False] * (n - step.accepted)
        used += n + 1
        checked += n
        context += step.emitted
    assert context == list(prompt) + out and checked >= 10


# --- 5. edge cases, deterministic --------------------------------------------------------------------------------

V_WIDE = 64  # a wide vocabulary: a greedy continuation rarely repeats a token


def continuation(params, n=14, seed=3, prompt=(5, 9)):
    return generate_ids(table_target(V_WIDE, seed), list(prompt), n, params, stop_at_eos=False)


@pytest.mark.spec
@pytest.mark.parametrize("params", [SamplingParams(), SamplingParams(temperature=1.0, seed=5, coupled=True)],
                         ids=["greedy", "coupled"])
def test_eos_at_every_position_of_an_accepted_draft(params):
    """The answer's token at position j made the EOS token: the loop must stop right after it, wherever it falls
    in a step, and most of all when the drafter proposed it (and more) and the target accepted it."""
    verifier = "greedy" if params.greedy else "coupled"
    answer, prompt = continuation(params), [5, 9]
    inside = set()
    for j, eos in enumerate(answer):
        if eos in answer[:j]:
            continue
        target = table_target(V_WIDE, 3, eos_token_id=eos)
        vanilla = generate_ids(target, prompt, len(answer), params)
        assert vanilla == answer[: j + 1]
        for k in range(1, 9):
            trace = []
            spec = speculative_generate_ids(target, OracleDrafter(len(prompt), answer), prompt, len(answer), params,
                                            verifier, k, trace=trace)
            assert spec == vanilla, (j, k)
            last = trace[-1] if trace else None
            if last is not None and eos in last.drafted[: last.accepted - 1]:
                inside.add(j)  # EOS was an accepted draft with more accepted drafts after it
    assert len(inside) >= len(answer) - 3


@pytest.mark.spec
def test_eos_inside_drafts_under_rejection_sampling():
    """The same with the rejection verifier: the exact distribution with an oracle that drafts past EOS."""
    V, prompt, n = 4, [0, 2], 4
    params = SamplingParams(temperature=1.0)
    answer = generate_ids(table_target(V, 8), prompt, n, SamplingParams(), stop_at_eos=False)
    for eos in range(V):
        target = table_target(V, 8, eos_token_id=eos)
        for k in (1, 2, 3):
            spec = exact_distribution(lambda source: tuple(speculative_generate_ids(
                target, OracleDrafter(len(prompt), answer + answer), prompt, n, params, "rejection", k, random=source)))
            assert_same_distribution(spec, autoregressive(warped(target, params), prompt, n, eos=eos))


@pytest.mark.spec
@pytest.mark.parametrize("params", [SamplingParams(), SamplingParams(temperature=1.0, seed=2, coupled=True)],
                         ids=["greedy", "coupled"])
def test_the_token_limit_at_every_position_of_a_step(params):
    verifier = "greedy" if params.greedy else "coupled"
    answer, prompt = continuation(params), [5, 9]
    target = table_target(V_WIDE, 3)
    for limit in range(len(answer) + 1):
        for k in range(1, 9):
            for drafter in (OracleDrafter(len(prompt), answer), WrongDrafter(len(prompt), answer, V_WIDE)):
                stats = SpecStats()
                spec = speculative_generate_ids(target, drafter, prompt, limit, params, verifier, k, stop_at_eos=False,
                                                stats=stats)
                assert spec == answer[:limit] and stats.new_tokens == limit, (limit, k, drafter.name)


@pytest.mark.spec
def test_the_token_limit_under_rejection_sampling():
    V, prompt, params = 3, [0, 1], SamplingParams(temperature=1.0)
    target = table_target(V, 6)
    answer = generate_ids(target, prompt, 6, SamplingParams(), stop_at_eos=False)
    for limit in range(1, 5):
        for k in (1, 3):
            spec = exact_distribution(lambda source: tuple(speculative_generate_ids(
                target, OracleDrafter(len(prompt), answer), prompt, limit, params, "rejection", k, stop_at_eos=False,
                random=source)))
            assert_same_distribution(spec, autoregressive(warped(target, params), prompt, limit))


def test_every_k_up_to_the_largest_allowed_on_the_batch_invariant_kernels():
    """k = 1 .. MAX_K on a tiny Gemma (numba kernels): verification forwards of every row count up to MAX_K + 1
    give vanilla's tokens; one more draft is refused before anything runs."""
    target = tiny(5, max_position_embeddings=256)
    prompt, n = [2, 7, 4], 2 * MAX_K + 4
    vanilla = generate_ids(target, prompt, n, stop_at_eos=False)
    for k in range(1, MAX_K + 1):
        stats = SpecStats()
        for drafter in (OracleDrafter(len(prompt), vanilla), RandomDrafter(32)):
            assert speculative_generate_ids(target, drafter, prompt, n, k=k, stop_at_eos=False, stats=stats) == vanilla
        assert stats.steps >= 1
    with pytest.raises(ValueError, match=f"must be <= {MAX_K}"):
        speculative_generate_ids(target, OracleDrafter(len(prompt), vanilla), prompt, n, k=MAX_K + 1)


@pytest.mark.real
@pytest.mark.parametrize("prompt_len", [505, 600])
def test_long_prompts_on_the_real_model_roll_back_across_the_sliding_window(gemma, gemma_tokenizer, prompt_len):
    """Gemma 3 270M's local layers see the last 512 positions. A prompt of 505 tokens makes the steps' drafts and
    rollbacks cross position 512, where the window first drops a key; one of 600 starts past it."""
    from pathlib import Path

    from tinyspec.drafters.oracle import OracleDrafter as CoinOracle

    text = "\n".join(p.read_text() for p in sorted(Path(tinyspec.toy.__file__).parent.glob("*.py")))
    prompt = gemma_tokenizer.encode(text)[:prompt_len]
    assert len(prompt) == prompt_len > gemma.cfg.sliding_window - 8
    n = 32
    vanilla = generate_ids(gemma, prompt, n, stop_at_eos=False)
    trace = []
    drafter = CoinOracle(len(prompt), vanilla, alpha=0.6, seed=1)  # right 60% of the time: partial rollbacks
    spec = speculative_generate_ids(gemma, drafter, prompt, n, k=8, stop_at_eos=False, trace=trace)
    assert spec == vanilla
    rollbacks = [s for s in trace if s.accepted < len(s.drafted)]
    assert len(rollbacks) >= 3
    if prompt_len < gemma.cfg.sliding_window:
        assert any(s.position <= gemma.cfg.sliding_window < s.position + len(s.drafted) for s in rollbacks)
    if prompt_len < gemma.cfg.sliding_window:  # a tree's rows too: each node at its depth's position, then moved
        from tinyspec.drafters import NgramDrafter

        trace = []
        assert speculative_generate_ids(gemma, NgramDrafter(max_n=2), prompt, n, k=8, tree=8, stop_at_eos=False,
                                        trace=trace) == vanilla
        assert any(s.path and s.path != list(range(len(s.path))) for s in trace) or \
            any(len(set(s.parents)) < len(s.parents) for s in trace)  # some step held a real tree


# --- 2. greedy and coupled, token for token, on table models ---------------------------------------------------

table_case = dict(V=st.integers(2, 8), seed=st.integers(0, 10_000), n=st.integers(1, 16), k=st.integers(1, 6),
                  prompt=st.lists(st.integers(0, 1), min_size=1, max_size=4), eos=st.booleans(), adaptive=st.booleans(),
                  kind=st.sampled_from(TABLE_DRAFTERS + ["oracle", "wrong"]))


def table_run_drafter(kind, V, seed, prompt, answer):
    if kind == "oracle":
        return OracleDrafter(len(prompt), answer)
    if kind == "wrong":
        return WrongDrafter(len(prompt), answer, V)
    return table_drafter(kind, V, seed)


@pytest.mark.spec
@settings(max_examples=examples(300), **SLOW)
@given(**table_case)
def test_greedy_on_tables(V, seed, n, k, prompt, eos, adaptive, kind):
    target = table_target(V, seed)
    vanilla = generate_ids(target, prompt, n, stop_at_eos=eos)
    stats = SpecStats()
    spec = speculative_generate_ids(target, table_run_drafter(kind, V, seed, prompt, vanilla), prompt, n, k=k,
                                    adaptive=adaptive, stop_at_eos=eos, stats=stats)
    assert spec == vanilla
    assert stats.new_tokens == len(vanilla) and stats.accepted <= stats.drafted <= stats.proposed


@pytest.mark.spec
@settings(max_examples=examples(300), **SLOW)
@given(**table_case, temperature=st.sampled_from([0.5, 1.0, 1.5]), top_k=st.sampled_from([0, 3]),
       top_p=st.sampled_from([1.0, 0.8]))
def test_coupled_on_tables(V, seed, n, k, prompt, eos, adaptive, kind, temperature, top_k, top_p):
    target = table_target(V, seed)
    params = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, coupled=True)
    vanilla = generate_ids(target, prompt, n, params, stop_at_eos=eos)
    spec = speculative_generate_ids(target, table_run_drafter(kind, V, seed, prompt, vanilla), prompt, n, params,
                                    verifier="coupled", k=k, adaptive=adaptive, stop_at_eos=eos)
    assert spec == vanilla


# --- 1. the exact distribution of the real loop (continued) ----------------------------------------------

@st.composite
def exact_cases(draw):
    V = draw(st.integers(2, 5))
    return dict(V=V, seed=draw(st.integers(0, 10_000)), n=draw(st.integers(1, 4)), k=draw(st.integers(1, 3)),
                prompt=draw(st.lists(st.integers(0, V - 1), min_size=1, max_size=3)),
                params=SamplingParams(temperature=draw(st.sampled_from([0.6, 1.0, 1.7])),
                                      top_k=draw(st.sampled_from([0, 2, 3])),
                                      top_p=draw(st.sampled_from([1.0, 0.9, 0.6]))),
                eos=draw(st.booleans()), adaptive=draw(st.booleans()), kind=draw(st.sampled_from(TABLE_DRAFTERS)))


@pytest.mark.spec
@settings(max_examples=examples(60), **SLOW)
@given(case=exact_cases())
def test_rejection_sampling_is_exact_through_the_real_loop(case):
    """P(speculative output = s) == P(vanilla output = s) == prod_t p(s_t | s_<t), for every sequence s."""
    V, seed, n, k, prompt, params, eos, adaptive, kind = (case[key] for key in
                                                           ("V", "seed", "n", "k", "prompt", "params", "eos",
                                                            "adaptive", "kind"))
    target = table_target(V, seed)

    def speculative(source):
        return tuple(speculative_generate_ids(target, table_drafter(kind, V, seed), prompt, n, params, "rejection", k,
                                              adaptive=adaptive, stop_at_eos=eos, random=source))

    def vanilla(source):
        return tuple(generate_ids(target, prompt, n, params, stop_at_eos=eos, random=source))

    exact = autoregressive(warped(target, params), prompt, n, target.cfg.eos_token_id if eos else None)
    assert_same_distribution(exact_distribution(vanilla), exact)
    assert_same_distribution(exact_distribution(speculative), exact)


@pytest.mark.spec
@settings(max_examples=examples(30), **SLOW)
@given(V=st.integers(3, 4), seed=st.integers(0, 10_000), k=st.integers(2, 3), adaptive=st.booleans(),
       kind=st.sampled_from(["draft-model", "early-exit", "short"]), temperature=st.sampled_from([0.6, 1.0, 1.7]),
       top_k=st.sampled_from([0, 3]), top_p=st.sampled_from([1.0, 0.8]), eos=st.booleans())
def test_rejection_sampling_is_exact_when_steps_verify_several_drafts(V, seed, k, adaptive, kind, temperature, top_k,
                                                                       top_p, eos):
    """The same, always deep enough that a step verifies two or three drafts whose q rows differ (a drafter that
    conditions on its own drafts): 4 new tokens, the first from the prefill, then steps of up to 3 drafts."""
    test_rejection_sampling_is_exact_through_the_real_loop.hypothesis.inner_test(dict(
        V=V, seed=seed, n=4, k=k, prompt=[0, 1], adaptive=adaptive, kind=kind, eos=eos,
        params=SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p)))


_gemmas: dict = {}


def gemma_pair(V, seed):
    """A tiny random Gemma target of vocabulary V and a second one as its draft model (kept: numba compiles once
    per shape, and Hypothesis reuses seeds)."""
    if (V, seed) not in _gemmas:
        kw = dict(vocab_size=V, bos_token_id=0, eos_token_id=1, pad_token_id=0, unk_token_id=0)
        _gemmas[V, seed] = tiny(seed, **kw), tiny(seed + 1, **kw)
    return _gemmas[V, seed]


@settings(max_examples=examples(12), **SLOW)
@given(V=st.integers(3, 4), seed=st.integers(0, 3), n=st.integers(1, 3), k=st.integers(1, 2),
       kind=st.sampled_from(["draft-model", "early-exit", "mtp"]), temperature=st.sampled_from([0.7, 1.0, 1.6]),
       top_k=st.sampled_from([0, 2]), top_p=st.sampled_from([1.0, 0.9]), eos=st.booleans(), adaptive=st.booleans())
def test_rejection_sampling_is_exact_with_real_tiny_gemmas(V, seed, n, k, kind, temperature, top_k, top_p, eos,
                                                           adaptive):
    """The drafters that sample, on tiny random Gemma models (real KV caches, the numba kernels); the MTP drafter
    reads the target's cache and hidden state, and its head scores V - 1 of the V tokens (q has a zero)."""
    from test_mtp import tiny_drafter

    target, draft = gemma_pair(V, seed)
    params, prompt = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p), [0, 2]
    make = {"draft-model": lambda: DraftModelDrafter(draft), "early-exit": lambda: EarlyExitDrafter(1),
            "mtp": lambda: tiny_drafter(target, seed=seed, n=V - 1)}[kind]
    logits = {}

    def p_of(context):  # the target's conditionals, each from a fresh cache: no loop involved
        key = tuple(context)
        if key not in logits:
            logits[key] = target.forward(list(context), target.new_cache())[-1]
        return reference_warp(logits[key], temperature, top_k, top_p)

    spec = exact_distribution(lambda source: tuple(speculative_generate_ids(
        target, make(), prompt, n, params, "rejection", k, adaptive=adaptive, stop_at_eos=eos, random=source)))
    assert_same_distribution(spec, autoregressive(p_of, prompt, n, eos=1 if eos else None))


# --- 4. statistics at scale: the real loop, seeded, against the exact distribution ----------------------------

def chi2_upper_tail(stat: float, dof: int) -> float:
    """P(X >= stat) for X ~ chi-square(dof), by the Wilson-Hilferty cube-root normal approximation."""
    z = ((stat / dof) ** (1 / 3) - (1 - 2 / (9 * dof))) / sqrt(2 / (9 * dof))
    return 0.5 * erfc(z / sqrt(2))


def g_test(counts: dict, exact: dict, runs: int) -> float:
    """The G-test's p-value of observed sequence counts against exact probabilities; cells expecting fewer than
    5 counts are pooled into one (the chi-square approximation needs about 5 per cell)."""
    seqs = sorted(exact)
    observed = np.array([counts.get(s, 0) for s in seqs], dtype=np.float64)
    expected = runs * np.array([exact[s] for s in seqs])
    assert sum(counts.values()) == runs and set(counts) <= set(exact), "a sequence of probability 0 was emitted"
    small = expected < 5
    observed = np.append(observed[~small], observed[small].sum())
    expected = np.append(expected[~small], expected[small].sum())
    keep = expected > 0
    o, e = observed[keep], expected[keep]
    g = 2.0 * sum(oi * log(oi / ei) for oi, ei in zip(o, e) if oi > 0)
    return chi2_upper_tail(g, max(len(o) - 1, 1))


# Fixed seeds make every run below deterministic: the test cannot flake. Under correct code the p-value is
# uniform over seed choices, so a threshold of 1e-4 means these seeds had a 1 in 10,000 chance of failing a
# correct loop when they were chosen; and the test's power is checked on a wrong loop below.
P_MIN = 1e-4
RUNS = 6000
STAT_CASES = {  # V, new tokens, k, sampling, drafter, adaptive (the cheap draft table: c = 1/40, so it drafts)
    "draft-model k4": (3, 6, 4, SamplingParams(temperature=1.0), "draft-model", False),
    "early-exit top-k": (4, 6, 3, SamplingParams(temperature=0.7, top_k=3), "early-exit", False),
    "adaptive top-p": (4, 6, 4, SamplingParams(temperature=1.0, top_p=0.9), "draft-model", True),
    "sparse q": (3, 7, 4, SamplingParams(temperature=0.7, top_p=0.8), "sparse", False),
}


def seeded_runs(V, n, k, params, kind, adaptive, runs=RUNS, source=None):
    """Counts of each output of `runs` runs with seeds 0 .. runs-1 (the verifier on [seed], the drafter on its own
    stream [seed, stream]), the largest number of drafts one step verified, and the drafts verified in all."""
    target = table_target(V, 5)
    counts, most, verified = {}, 0, 0
    for seed in range(runs):
        trace = []
        p = SamplingParams(temperature=params.temperature, top_k=params.top_k, top_p=params.top_p, seed=seed)
        out = tuple(speculative_generate_ids(target, table_drafter(kind, V, 5), [0, 2], n, p, "rejection", k,
                                             adaptive=adaptive, trace=trace,
                                             random=None if source is None else source(seed)))
        counts[out] = counts.get(out, 0) + 1
        most = max([most] + [len(s.drafted) for s in trace])
        verified += sum(len(s.drafted) for s in trace)
    exact = autoregressive(warped(target, params), [0, 2], n, eos=target.cfg.eos_token_id)
    return counts, exact, most, verified


@pytest.mark.spec
@pytest.mark.parametrize("name", list(STAT_CASES))
def test_rejection_loop_at_scale_passes_a_g_test(name):
    V, n, k, params, kind, adaptive = STAT_CASES[name]
    counts, exact, most, verified = seeded_runs(V, n, k, params, kind, adaptive)
    assert most >= (2 if adaptive else 3), "the runs must verify several drafts in one step"
    assert verified >= 2 * RUNS, "the drafter must really draft (and the break-even rule verify)"
    assert g_test(counts, exact, RUNS) > P_MIN


class OneUniformPerStep(SeededSource):
    """A wrong verifier's randomness: one uniform per step, reused for every draft it checks."""

    def accept(self, probability):
        if self.last_uniform is None:
            self.last_uniform = float(self.rng.random())
        return self.last_uniform < probability

    def choice(self, p):
        self.last_uniform = None
        return super().choice(p)


def test_the_g_test_catches_a_uniform_reused_within_a_step():
    counts, exact, _, _ = seeded_runs(*STAT_CASES["draft-model k4"], source=lambda seed: OneUniformPerStep(seed))
    assert g_test(counts, exact, RUNS) < P_MIN
