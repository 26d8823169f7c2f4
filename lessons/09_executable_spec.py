# %% [markdown]
# # Lesson 9: The executable spec: proving equivalence, and watching a bug get caught
#
# **Goal.** "Speculation may change the speed, never the output" is a claim about *every* prompt, drafter,
# k, EOS token and sampling setting. `tests/test_speculative.py` states it as properties, and Hypothesis
# generates hundreds of random cases (tiny random Gemma models, adversarial drafters) trying to break them.
# Here we run one property live, then break the loop on purpose and watch Hypothesis find, and shrink, a
# counterexample. Then the same for the math of rejection sampling.
#
# **Running time.** Measured 9 s (15 s with `TINYSPEC_QUICK=1`, a noisier moment) on a 2-core machine shared
# with two heavy jobs (load average 3.2 to 3.6). No real weights: the properties run on tiny random models,
# where hundreds of cases take seconds.
#
# Needs Hypothesis (`pip install -e ".[test]"`).

# %%
import importlib.util
import inspect
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, Phase, given, seed, settings

import tinyspec
import tinyspec.speculative
from tinyspec import theory
from tinyspec.decoding import generate_ids
from tinyspec.speculative import speculative_generate_ids
from tinyspec.workshop import quick_mode

QUICK = quick_mode()
SEED = 9  # Hypothesis' seed: the same cases, and the same counterexamples, on every run
EXAMPLES = 20 if QUICK else 150
print(f"quick mode: {QUICK}; Hypothesis seed {SEED}; {EXAMPLES} cases per property")

# the spec itself, imported from the repository's tests/ (it is not part of the installed package)
spec_file = Path(tinyspec.__file__).resolve().parent.parent / "tests" / "test_speculative.py"
loader = importlib.util.spec_from_file_location("test_speculative", spec_file)
spec = importlib.util.module_from_spec(loader)
loader.loader.exec_module(spec)
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
# every draft without checking. Output still *looks* plausible; it is no longer the target's. Hypothesis
# finds a failing case within a few tries, then shrinks it: it keeps simplifying (smaller seed, shorter
# prompt, smaller k...) while the test still fails, and reports the simplest.

# %%
def trusting_verify(logits, drafted, q_rows, params, verifier, rng, position):
    n = len(drafted)  # BUG: every draft "accepted", no comparison with the target
    return n, int(np.argmax(logits[n])), "bonus", [1.0] * n, [1.0] * n, []


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
# often get a second chance on top of the first.

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
# ## Try this
#
# 1. Break it the way jaymody/speculative-sampling issue #3 did: make the draft model propose the argmax of
#    its q while reporting q (`tinyspec.drafters.draft_model.sample = lambda q, rng: int(np.argmax(q))`),
#    then run `spec.test_rejection_loop_matches_exact_distribution_chi_square("draft-model", False)`. Which
#    property catches it, and why can't the greedy property?
# 2. An off-by-one in the rollback: wrap `KVCache.truncate` so it keeps one extra position. Which property
#    fails, and what is the shrunk case?
# 3. Run the whole spec: `pytest tests/test_speculative.py -q`. How many cases does Hypothesis try in all?
