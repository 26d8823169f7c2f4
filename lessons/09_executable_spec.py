# %% [markdown]
# # Lesson 9: The executable spec: proving equivalence, and watching a bug get caught
#
# **Goal.** "Speculation may change the speed, never the output" is a claim about *every* prompt, drafter,
# k, EOS token and sampling setting. The spec in `tests/` states it as properties and tries to break them.
# Hypothesis generates hundreds of random cases (tiny random Gemma models, adversarial drafters); for
# sampling, the spec computes the *exact* distribution of the real speculative loop's output, by running the
# loop once on every possible path of its random choices. Here we run one greedy property live, break the
# loop on purpose and watch Hypothesis find, and shrink, a counterexample; do the same for the one-step math
# of rejection sampling; then run the exact proof on one tiny case, print every number it compares, and
# watch it catch a planted bug. The last section says how strong the proof is, and what it does not cover.
#
# **Running time.** Measured 7 s (3 s with `TINYSPEC_QUICK=1`) on a 2-core machine shared with another job
# (load average 1.7 to 1.9); an idle laptop is faster. No real weights: the properties run on tiny random
# models and on lookup-table models, where hundreds of cases, or thousands of runs of the loop, take seconds.
#
# Needs Hypothesis (`pip install -e ".[test]"`).

# %%
import inspect
import sys
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, Phase, given, seed, settings

import tinyspec
import tinyspec.speculative
from tinyspec import theory
from tinyspec.decoding import generate_ids
from tinyspec.randomness import EnumeratingSource, exact_distribution
from tinyspec.sampling import SamplingParams
from tinyspec.speculative import speculative_generate_ids
from tinyspec.workshop import quick_mode

QUICK = quick_mode()
SEED = 9  # Hypothesis' seed (the same cases, and the same counterexamples, on every run) and the tiny case's
EXAMPLES = 20 if QUICK else 150
print(f"quick mode: {QUICK}; seed {SEED}; {EXAMPLES} Hypothesis cases per property")

# The spec lives in the repository's tests/ (it is not part of the installed package), and its files import
# each other by name (`from helpers import ...`): put tests/ on the import path, then import them.
TESTS = Path(tinyspec.__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))
import helpers  # tiny models, table models, drafters, the exact distribution from the math
import mutation  # the planted bugs
import test_spec_exact  # the exact proof, the statistical tests, the edge cases
import test_speculative as spec  # the greedy, coupled and one-step properties

print(spec.__doc__)


def run_property(prop, strategies, examples=EXAMPLES):
    """Run `prop` on `examples` Hypothesis cases (fixed seed, no example database). Returns None if every case
    passed, else Hypothesis' report of the smallest failing case it found."""
    phases = [Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink]  # no "explain": keep reports short
    test = seed(SEED)(settings(max_examples=examples, deadline=None, database=None, phases=phases,
                               suppress_health_check=list(HealthCheck))(given(**strategies)(prop)))
    try:
        test()
    except AssertionError as e:
        return "\n".join(getattr(e, "__notes__", [])) or repr(e)
    return None


# %% [markdown]
# ## 1. The greedy property, live
#
# Read it: draw a random tiny model (seed), prompt, k, length, drafter (random guesses, a perfect oracle,
# one that proposes fewer than k, prompt lookup, early exit, a second tiny model), maybe an EOS token and
# adaptive k. Vanilla greedy and speculative greedy must emit the same tokens.

# %%
print(inspect.getsource(spec.test_greedy_speculative_equals_greedy))
cases, failing = [], []


def greedy_speculative_equals_greedy(**case):
    cases.append(case)
    try:
        spec.test_greedy_speculative_equals_greedy.hypothesis.inner_test(**case)
    except AssertionError:
        failing.append(case)  # Hypothesis replays the shrunk case last: failing[-1] is it
        raise


report = run_property(greedy_speculative_equals_greedy, spec.case)
print(f"{len(cases)} random cases, all passed. Three of them:")
for case in [cases[0], cases[len(cases) // 2], cases[-1]]:
    print("  ", case)
assert report is None, report

# %% [markdown]
# ## 2. Break the loop: a verifier that trusts every draft
#
# Replace `tinyspec.speculative.verify` (the loop looks it up by name at every step) with one that keeps
# every draft without checking. A verifier returns a `Verdict`: how many drafts it accepted, and the target's
# own token after them (here the bonus token, the argmax of the row after the last draft). Output still
# *looks* plausible; it is no longer the target's. Hypothesis finds a failing case within a few tries, then
# shrinks it: it keeps simplifying (smaller seed, shorter prompt, smaller k...) while the test still fails,
# and reports the simplest.

# %%
def trusting_verify(logits, drafted, q_rows, params, verifier, random, position):  # logits [n+1, V]
    n = len(drafted)  # BUG: every draft "accepted", no comparison with the target
    return tinyspec.speculative.Verdict(accepted=n, token=int(np.argmax(logits[n])), kind="bonus")


correct_verify = tinyspec.speculative.verify
tinyspec.speculative.verify = trusting_verify
try:
    cases.clear()
    report = run_property(greedy_speculative_equals_greedy, spec.case)
    tried = len(cases)
    # replay the shrunk case by hand, still with the broken verifier
    c = failing[-1]
    target = spec.model_with_eos(c["seed"], c["eos"])
    vanilla = generate_ids(target, c["prompt"], c["n"])
    drafter = spec.build_drafter(c["kind"], c["seed"], c["prompt"], vanilla)
    broken = speculative_generate_ids(target, drafter, c["prompt"], c["n"], k=c["k"], adaptive=c["adaptive"])
finally:
    tinyspec.speculative.verify = correct_verify  # always put the real verifier back
print(f"Hypothesis ran {tried} cases (searching, then shrinking) and reports:\n{report}")
print(f"replayed: vanilla {vanilla}  vs  broken speculative {broken}")
assert report is not None, "Hypothesis must catch the trusting verifier"
assert broken != vanilla

# %% [markdown]
# ## 3. The math of rejection sampling, as a property
#
# The spec's exact check of one rejection step: for any p and q (including q with zeros where p has mass,
# disjoint supports, p == q), P(emit x) computed from `acceptance_probability` and `residual_distribution`
# must equal p(x) to 1e-12. `theory.one_step_distribution` computes P(emit x) with the package's functions.

# %%
failing_pq = []


def one_step_reproduces_p(pq):
    p, q = pq
    try:
        np.testing.assert_allclose(theory.one_step_distribution(p, q), p, rtol=0, atol=1e-12)
    except AssertionError:
        failing_pq.append(pq)  # the last one is the shrunk case
        raise


report = run_property(one_step_reproduces_p, dict(pq=spec.p_and_q()), examples=4 * EXAMPLES)
print(f"{4 * EXAMPLES} random (p, q) pairs: {'all passed' if report is None else report}")
assert report is None

# %% [markdown]
# Now the classic mistake: after a rejection, resample from p itself instead of the residual
# norm(max(0, p - q)). It sounds harmless ("the target decides"), but tokens the drafter already proposes
# often get a second chance on top of the first. (The mutation harness of section 5 plants the same bug in
# the loop under the name "correction-from-p".)

# %%
correct_residual = tinyspec.speculative.residual_distribution
tinyspec.speculative.residual_distribution = lambda p, q: np.asarray(p, dtype=np.float64)  # BUG
try:
    report = run_property(one_step_reproduces_p, dict(pq=spec.p_and_q()), examples=4 * EXAMPLES)
    p, q = failing_pq[-1]
    wrong = theory.one_step_distribution(p, q)  # still with the bug
finally:
    tinyspec.speculative.residual_distribution = correct_residual
print(f"with the residual replaced by p, Hypothesis reports:\n{report}")
assert report is not None, "Hypothesis must catch the wrong residual"
print(f"the shrunk case: p = {np.round(p, 3).tolist()}, q = {np.round(q, 3).tolist()}: the correct rule emits "
      f"{np.round(theory.one_step_distribution(p, q), 3).tolist()}, resampling from p emits "
      f"{np.round(wrong, 3).tolist()}")

# %% [markdown]
# ## 4. The whole sampled loop, exactly: every path of one tiny case
#
# Section 3 proves one step's formulas. The loop does more: the drafter draws several drafts, each
# conditioned on the ones before; one forward checks them all; the cache rolls back; the first token comes
# from the prefill; the run stops at the token limit. A bug in any of these changes the output's
# distribution while the formulas stay right. A statistical test (run many seeds, compare frequencies)
# can only say "close". The spec says "equal", by computing the exact distribution of what the loop emits.
#
# **How.** Every random choice the loop makes goes through one object, a `RandomSource`, which has two
# methods: `accept(a)`, a coin that comes up True with probability a (the verifier's u < min(1, p/q)), and
# `choice(p)`, a token drawn from p (a drafter's guess, a correction, a bonus token, a vanilla token). In a
# normal run it is a `SeededSource`: a seeded numpy generator. An `EnumeratingSource` draws nothing. It is
# handed a *path*: which outcome to take at the run's 1st, 2nd, 3rd... random choice (the first outcome at
# any choice past the path's end). It takes those, and at every choice it writes down how many outcomes
# there were and the probability of the one it took. The product of those probabilities is the chance that
# a real run goes down exactly this path. `exact_distribution(run)` then runs the code again and again: each
# time it goes back to the last choice that still has an untried outcome, takes the next one there, and
# reruns (a depth-first walk of the tree of choices; outcomes of probability 0 are skipped: they cannot
# happen). When no choice has an untried outcome left, every path has run exactly once. The probability of
# an output is the sum over the paths that produced it. Nothing is simulated: it is the real
# `speculative_generate`, run once per path.
#
# The tiny case: a lookup-table language model as the target (`toy.TableModel`: any next-token distribution,
# microseconds a call, a cache the loop rolls back like a KV cache), vocabulary 3; a draft model that is the
# same table plus noise, sampling its drafts; 4 new tokens, k = 2, the rejection verifier. (Why 4 and not 3:
# the first token comes from the prefill, and the loop never drafts more than it could emit, so with 3 new
# tokens no step would check two drafts.) First, one path by hand:

# %%
V, N_NEW, K = 3, 4, 2
PROMPT = [0, 2]
params = SamplingParams(temperature=1.0)
target = helpers.table_target(V, SEED)  # TableModel(3, seed 9): its logits are a fixed function of the context


def speculative(source):  # one run of the real loop; its drafter is a fresh DraftModelDrafter over a noisy table
    return tuple(speculative_generate_ids(target, helpers.table_drafter("draft-model", V, SEED), PROMPT, N_NEW,
                                          params, "rejection", K, stop_at_eos=False, random=source))


def vanilla(source):  # one run of vanilla sampling: one choice(p) per token
    return tuple(generate_ids(target, PROMPT, N_NEW, params, stop_at_eos=False, random=source))


source = EnumeratingSource()  # the empty path: the first outcome at every choice
first = speculative(source)
print(f"the first path: output {first}, probability {source.probability:.6f}")
print(f"its {len(source.taken)} random choices as (outcome taken, of how many): {source.taken}")
print(f"the next path to run: {source.next_path()}")
assert len(source.taken) >= 4 and 0 < source.probability < 1

# %% [markdown]
# Read the choices in order: the first token (3 outcomes), the drafter's two drafts (3 each), the verifier's
# coin for each draft (2 outcomes; a coin "of 1" has probability 1: a draft the target likes at least as much
# as the drafter, always kept), then the bonus token. The next path changes only the last choice that has an
# untried outcome.
#
# Now every path, for both loops, next to the math: the probability of a sequence s_1..s_4 is the product of
# the target's conditionals p(s_1 | prompt) p(s_2 | prompt, s_1) ... (`helpers.autoregressive`, with the
# target's logits warped by `helpers.reference_warp`, written from the definitions independently of
# `tinyspec.sampling`; no loop, no cache).

# %%
paths = {"speculative": 0, "vanilla": 0}


def counted(run, name):
    def wrapped(source):
        paths[name] += 1
        return run(source)
    return wrapped


p_spec = exact_distribution(counted(speculative, "speculative"))  # {sequence: probability}
p_vanilla = exact_distribution(counted(vanilla, "vanilla"))
p_math = helpers.autoregressive(helpers.warped(target, params), PROMPT, N_NEW)
print(f"{paths['speculative']} paths of the speculative loop, {paths['vanilla']} of vanilla sampling "
      f"({V}^{N_NEW}: one draw of {V} outcomes per token), {len(p_math)} possible sequences")
sequences = sorted(p_math, key=lambda s: -p_math[s])
print(f"{'sequence':>14} {'P speculative':>15} {'P vanilla':>15} {'P from the math':>16}")
for s in sequences[:8]:
    print(f"{str(s):>14} {p_spec.get(s, 0.0):15.12f} {p_vanilla.get(s, 0.0):15.12f} {p_math[s]:16.12f}")
print(f"{'...':>14}  ({len(sequences) - 8} more)")
diff = max(max(abs(p_spec.get(s, 0.0) - p_math[s]), abs(p_vanilla.get(s, 0.0) - p_math[s])) for s in p_math)
print(f"largest difference over all {len(p_math)} sequences: {diff:.1e}")
s = sequences[0]
conditionals = [helpers.warped(target, params)(PROMPT + list(s[:t]))[s[t]] for t in range(N_NEW)]
print(f"e.g. P{s} = " + " * ".join(f"{c:.4f}" for c in conditionals) + f" = {np.prod(conditionals):.12f}")
helpers.assert_same_distribution(p_spec, p_math, tol=1e-12)
helpers.assert_same_distribution(p_vanilla, p_math, tol=1e-12)
assert paths["vanilla"] == V ** N_NEW and paths["speculative"] > paths["vanilla"]

# %% [markdown]
# Equal to 1e-12 (the rest is float64 rounding, about 1e-16 per path): not "close, for these seeds", but
# the same distribution, computed by the loop's own code. The spec (`tests/test_spec_exact.py`) does this
# for hundreds of random tiny cases that Hypothesis draws: other vocabularies, prompts, temperature, top-k,
# top-p, EOS, adaptive k, and six drafters.
#
# ## 5. A planted bug, caught by the exact proof
#
# `tests/mutation.py` lists bugs that a real implementation of speculative decoding could have (several have
# shipped in public ones), each as an exact edit of the package's source. Take "acceptance-forgets-q": keep a
# draft d with probability p(d) instead of min(1, p(d) / q(d)). It looks reasonable (the target's own
# probability!), it still emits only tokens the target allows, and for a drafter that is often right it
# accepts often. We plant it in this process by replacing `tinyspec.speculative.acceptance_probability`
# (the verifier looks it up by name), rerun the same enumeration, and put the real function back.

# %%
mutant = next(m for m in mutation.MUTANTS if m.name == "acceptance-forgets-q")
[(file, old, new)] = mutant.edits  # one edit: this text of the file becomes that
print(f"mutant {mutant.name!r}: {mutant.bug}\n  in tinyspec/{file}: {old!r}\n  becomes {new!r}")
correct_acceptance = tinyspec.speculative.acceptance_probability


def acceptance_forgets_q(p, q, token):
    if q[token] <= 0.0:
        raise ValueError(f"the drafter proposed token {token} but its q gives it probability 0")
    return 1.0 if p[token] >= q[token] else float(p[token])


assert old in inspect.getsource(correct_acceptance) and new in inspect.getsource(acceptance_forgets_q), \
    "the function planted here is the harness's mutant"
tinyspec.speculative.acceptance_probability = acceptance_forgets_q
try:
    p_mutant = exact_distribution(speculative)
finally:
    tinyspec.speculative.acceptance_probability = correct_acceptance  # always put the real rule back
worst = max(p_math, key=lambda s: abs(p_mutant.get(s, 0.0) - p_math[s]))
gap = abs(p_mutant.get(worst, 0.0) - p_math[worst])
print(f"with the mutant, the largest difference from the exact distribution is {gap:.4f}, at {worst}: "
      f"P = {p_mutant.get(worst, 0.0):.4f} instead of {p_math[worst]:.4f}")
print(f"the mutant's output still sums to {sum(p_mutant.values()):.12f}: a distribution, just the wrong one")
assert gap > 1e-3, "the exact proof must catch the mutant, far above the 1e-12 tolerance"
helpers.assert_same_distribution(exact_distribution(speculative), p_math)  # the real rule is back: exact again

# %% [markdown]
# Why is it wrong? When the drafter over-proposes d (q(d) > p(d)), the rule keeps it with probability
# p(d) / q(d), so that P(d is drafted and kept) = q(d) p(d) / q(d) = p(d): all of d's mass, and nothing for
# the residual to add. The mutant keeps it with probability p(d) only, so d is emitted with probability
# q(d) p(d) < p(d), and the extra rejections send their mass through the residual to the tokens the drafter
# under-proposes, which come out too often. The loop runs, the tokens look plausible, and only the
# distribution is wrong.
#
# `python tests/mutation.py` runs every planted bug (listed below) against the whole fast spec,
# not just this enumeration: it copies the package into a temporary directory, applies one mutant's edit,
# runs the spec's tests marked `spec`, and reports each mutant killed (some test failed) or SURVIVED, then
# the mutation score. `python tests/mutation.py acceptance-forgets-q` runs one (under a minute: the harness
# first checks that an unmutated copy passes the whole fast spec, then each mutant takes a few seconds).
# `tests/test_mutation.py` runs them all in the test suite: a surviving mutant fails it.

# %%
print(f"{len(mutation.MUTANTS)} planted bugs in tests/mutation.py:")
for m in mutation.MUTANTS:
    print(f"  {m.name:30} {m.bug}")
assert len(mutation.MUTANTS) >= 20

# %% [markdown]
# ## 6. How strong is the proof, and what it does not cover
#
# **Exact, over every path** (to 1e-12): `tests/test_spec_exact.py` enumerates, as above, random tiny cases
# that Hypothesis draws: vocabularies of 2 to 5 tokens, up to 4 new tokens, k up to 3, random prompts,
# temperature, top-k, top-p, EOS, adaptive k; six drafters (a draft model, early exit, random guesses, a q
# with zeros, one that proposes fewer than k, prompt lookup). It runs the real loop, the real verifiers and
# the real drafters, on table models; a second property always makes steps check two or three drafts. The
# drafters that sample also run on real tiny random Gemmas (real KV caches, the numba kernels), including the
# MTP drafter that reads the target's cache and hidden state, in a few fixed cases (vocabulary 4, 3 new
# tokens, k = 2).
#
# **Statistical, at scale**: thousands of seeded runs with the production source (the one every real run
# uses) and G-tests against the exact distribution, on sequences and k that enumeration cannot reach (the
# cases below), and a check that the production source draws one fresh uniform per checked draft.
#
# **Deterministic edge cases**: EOS at every position of an accepted draft, the token limit at every position
# of a step, every k up to the largest the batch-invariant kernels allow, and prompts whose rollbacks cross
# the real model's sliding window. Greedy and coupled sampling are checked token for token, on tiny Gemmas
# and on table models (section 1 ran one of these properties).
#
# **Not covered.** Longer sequences and larger vocabularies are checked only statistically (up to 7 new
# tokens, k up to 4) or not at all: the number of paths grows exponentially (see "Try this"). The real
# 270M model's *sampled* exactness is not enumerated (its vocabulary has 262,144 tokens); for greedy, the
# real model is covered by the bitwise batch invariance of its kernels (a token's logits do not depend on
# how many tokens a forward computes); the sampled proof carries over to it by an argument, not a test: the
# loop sees a model only through its logits and its cache. A bug that shows only beyond these sizes (at
# k = 5, after 10 tokens) would pass. And that a TableModel's cache behaves like a real KV cache is true by
# construction (its cache stores the tokens themselves, and a row reads positions 0 to length - 1), not
# proved: the tiny Gemma cases and the greedy properties on real caches are what test rollback on a real
# cache. The G-tests see differences above a certain size only, and with fixed seeds.

# %%
print(f"the statistical cases ({test_spec_exact.RUNS} seeded runs each; a p-value below {test_spec_exact.P_MIN} "
      "fails):")
print(f"  {'case':18} {'V':>2} {'new tokens':>10} {'k':>2}  drafter")
for name, (v, n, k, sampling, kind, adaptive) in test_spec_exact.STAT_CASES.items():
    print(f"  {name:18} {v:2} {n:10} {k:2}  {kind}{', adaptive k' if adaptive else ''}")
assert max(c[1] for c in test_spec_exact.STAT_CASES.values()) == 7
assert max(c[2] for c in test_spec_exact.STAT_CASES.values()) == 4
print(f"the drafters of the exact proof on table models: {', '.join(helpers.TABLE_DRAFTERS)}")
assert len(helpers.TABLE_DRAFTERS) == 6

# %% [markdown]
# ## Try this
#
# 1. Plant another mutant from `tests/mutation.py` in section 5. "residual-q-minus-p": replace
#    `tinyspec.speculative.residual_distribution` by norm(max(0, q - p)). "draft-argmax-report-q" (the bug of
#    jaymody/speculative-sampling #3): wrap `tinyspec.drafters.draft_model.choose_token` so that it returns
#    `int(np.argmax(q))` with the q it drew from. How large is the largest difference? Then run
#    `python tests/mutation.py draft-argmax-report-q`: which test of the spec catches it first, and why can
#    the greedy property of section 1 never catch it?
# 2. Make the tiny case larger: `V, N_NEW, K = 4, 4, 3`, then `5, 4, 3`, then `4, 5, 3`, and watch the path
#    count grow (and the time: the last one takes a minute or more). Why does vanilla need exactly V^N_NEW
#    paths, and the speculative loop many more? Where would you stop?
# 3. Not every tempting mutant is a bug. Make the draft model report no q (wrap
#    `tinyspec.drafters.DraftModelDrafter.propose` to return `Proposal(proposal.tokens)`): it still samples
#    its drafts, but the verifier now treats each as deterministic (q one-hot at the draft). Enumerate: it is
#    still exact. Why? (Write P(emit x) = q(x) p(x) + sum over d != x of q(d) (1 - p(d)) p(x) / (1 - p(d)).)
#    It keeps an over-proposed draft with probability p(d), like section 5's mutant: why is one exact and the
#    other not? What does it cost?
