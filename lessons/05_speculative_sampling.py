# %% [markdown]
# # Lesson 5: Speculative sampling, and why its output follows p exactly
#
# **Goal.** When we sample instead of taking the argmax, a draft cannot simply be compared with "the"
# target token. Leviathan et al. (2023) and Chen et al. (2023) give a rule that keeps a draft d ~ q with
# probability min(1, p(d) / q(d)) and otherwise draws from the residual norm(max(0, p - q)). We work it out
# on four tokens, prove that the emitted token follows p *exactly*, break the rule three ways to see why
# every piece is needed, and then check it empirically on the real model's own p and q.
#
# **Running time.** Measured 19 s after the one-time conversion (10 s with `TINYSPEC_QUICK=1`) on a
# 2-core machine shared with two heavy jobs (load average 3.5, `NUMBA_NUM_THREADS=1`); an idle laptop is
# faster. lessons/README.md lists every measurement.
#
# Notation (Leviathan et al.): p is the target's warped distribution, q the drafter's, beta the chance a
# draft is accepted.

# %%
import numpy as np

from tinyspec import plots, theory
from tinyspec.drafters import EarlyExitDrafter
from tinyspec.randomness import SeededSource
from tinyspec.sampling import SamplingParams, warp
from tinyspec.show import print_trace
from tinyspec.speculative import SpecStats, acceptance_probability, residual_distribution, \
    speculative_generate_ids, verify
from tinyspec.workshop import load_gemma, quick_mode

QUICK = quick_mode()
SEED = 2023
print(f"quick mode: {QUICK}, seed: {SEED}")

# %% [markdown]
# ## 1. A worked example on four tokens
#
# The drafter proposes d ~ q. The target keeps it with probability a(d) = min(1, p(d) / q(d)): always
# when the target likes d at least as much as the drafter does, less often when the drafter over-proposes
# d. On a rejection, the target draws from the residual r = norm(max(0, p - q)): only tokens the drafter
# *under*-proposes.

# %%
names = ["A", "B", "C", "D"]
p = np.array([0.50, 0.30, 0.15, 0.05])
q = np.array([0.20, 0.50, 0.10, 0.20])
a = np.array([acceptance_probability(p, q, x) for x in range(4)])
r = residual_distribution(p, q)
beta = theory.acceptance_rate(p, q)
print(f"{'x':>2} {'p(x)':>6} {'q(x)':>6} {'a(x)=min(1,p/q)':>16} {'q(x)a(x)':>9} {'max(0,p-q)':>11} {'r(x)':>6}")
for x in range(4):
    print(f"{names[x]:>2} {p[x]:6.2f} {q[x]:6.2f} {a[x]:16.3f} {q[x] * a[x]:9.3f} {max(0, p[x] - q[x]):11.3f} "
          f"{r[x]:6.3f}")
print(f"beta = P(accept) = sum q(x) a(x) = sum min(p, q) = {beta:.2f};  P(reject) = {1 - beta:.2f}")
out = q * a + (1 - beta) * r
print(f"P(emit x) = q(x) a(x) + P(reject) r(x) = {np.round(out, 3).tolist()}  = p = {p.tolist()}")
assert np.allclose(out, p, atol=1e-15) and abs(beta - 0.65) < 1e-12

# %% [markdown]
# ## 2. Why it always works
#
# q(x) a(x) = q(x) min(1, p(x)/q(x)) = min(p(x), q(x)). The residual's normaliser is
# sum max(0, p - q) = sum (p - min(p, q)) = 1 - beta, exactly P(reject). So
#
#     P(emit x) = min(p(x), q(x)) + (1 - beta) * max(0, p(x) - q(x)) / (1 - beta)
#               = min(p(x), q(x)) + max(0, p(x) - q(x)) = p(x).
#
# For every p and every q, with no assumption on how good the drafter is: a bad drafter costs speed (a
# low beta), never correctness. `theory.one_step_distribution` computes P(emit x) with the package's own
# `acceptance_probability` and `residual_distribution`; lesson 9 lets Hypothesis try thousands of (p, q).

# %%
rng = np.random.default_rng(SEED)
worst = 0.0
for _ in range(200 if QUICK else 2000):
    V = int(rng.integers(2, 10))
    pr, qr = rng.dirichlet(np.ones(V) * 0.5), rng.dirichlet(np.ones(V) * 0.5)
    worst = max(worst, float(np.abs(theory.one_step_distribution(pr, qr) - pr).max()))
print(f"random (p, q) pairs: largest |P(emit x) - p(x)| = {worst:.1e}")
assert worst < 1e-12

# %% [markdown]
# ## 3. Three ways to break it
#
# * **accept every draft**: the output follows q, not p.
# * **resample from p (not the residual) after a rejection**: tokens the drafter already proposes often get
#   a second chance, too much mass.
# * **draft the argmax of q but report q** (the bug of jaymody/speculative-sampling issue #3): the
#   verifier's min(1, p/q) assumes d ~ q; a deterministic draft breaks that assumption.

# %%
accept_all = q
resample_p = q * a + (1 - beta) * p
argmax_draft = theory.one_step_distribution(p, q, draft=np.eye(4)[np.argmax(q)])
print(f"{'rule':28} " + " ".join(f"{n:>6}" for n in names) + "   TV distance to p")
for label, dist in [("correct (residual)", out), ("accept every draft", accept_all),
                    ("resample from p", resample_p), ("draft argmax of q", argmax_draft)]:
    tv = 0.5 * np.abs(dist - p).sum()
    print(f"{label:28} " + " ".join(f"{v:6.3f}" for v in dist) + f"   {tv:.3f}")
    assert (tv < 1e-12) == (label == "correct (residual)")

# %% [markdown]
# ## 4. On the real model: one position, its p and q, many draws
#
# Take a real prompt. p is Gemma's distribution of the next token (temperature 1, top-k 8); q is the
# early-exit drafter's (Gemma's first 15 of 18 blocks, then the final norm and head, same warping; with
# fewer blocks its guesses are poor, lesson 6). We run the
# package's `verify` with `verifier="rejection"` many times on these two rows and count the emitted token.
# The claim, asserted below: every frequency lies within 4.5 standard errors sqrt(p (1 - p) / n) of p.

# %%
model, tok = load_gemma()
EXIT = 15
prompt = "Once upon a time, there was a"
ids = tok.encode(prompt)
target_logits = model.forward(ids, model.new_cache(len(ids)), last_only=True)[0]  # [V]
draft_logits = model.forward(ids, model.new_cache(len(ids)), last_only=True, layers=EXIT)[0]  # [V] first 15 blocks
params = SamplingParams(temperature=1.0, top_k=8, seed=SEED)
p_full = warp(target_logits, params.temperature, params.top_k)
q_full = warp(draft_logits, params.temperature, params.top_k)
support = np.flatnonzero((p_full > 0) | (q_full > 0))  # the tokens either may emit
p_small, q_small = p_full[support], q_full[support]  # the same distributions on a small vocabulary
with np.errstate(divide="ignore"):
    rows = np.log(np.stack([p_small, p_small]))  # [2, n] logits whose warp is p again (row 2: the bonus)
p_exact = warp(rows[0], params.temperature, params.top_k)
print(f"after {prompt!r}: p and q together cover {len(support)} tokens; beta = sum min(p, q) = "
      f"{theory.acceptance_rate(p_exact, q_small):.3f}")

n = 3000 if QUICK else 20000
random = SeededSource(SEED)  # numpy.random.default_rng(SEED), one uniform per draw
counts = np.zeros(len(support))
accepted = 0
for _ in range(n):
    d = random.choice(q_small)  # Step 1: the drafter draws from q
    verdict = verify(rows, [d], q_small[None, :], params, "rejection", random, position=0)  # Step 3
    counts[d if verdict.accepted == 1 else verdict.token] += 1
    accepted += verdict.accepted
freq = counts / n
order = np.argsort(-p_exact)
labels = [repr(tok.token_text(int(support[i]))) for i in order]
print(plots.chart(f"{n} speculative steps (seed {SEED}): emitted token vs the exact p", labels,
                  {"emitted": freq[order], "exact p": p_exact[order], "draft q": q_small[order]},
                  png="05_histogram.png", xlabel="token", ylabel="probability"))
se = np.sqrt(p_exact * (1 - p_exact) / n)
z = np.abs(freq - p_exact) / np.maximum(se, 1e-300)
print(f"acceptance: {accepted / n:.3f} (beta = {theory.acceptance_rate(p_exact, q_small):.3f}); "
      f"largest deviation {z[p_exact > 0].max():.2f} standard errors")
assert np.all(freq[p_exact == 0] == 0), "a token the target excludes is never emitted"
assert np.all(z[p_exact > 0] < 4.5), "every frequency within 4.5 standard errors of p"

# %% [markdown]
# ## 5. The whole loop, sampling
#
# `speculative_generate` with `verifier="rejection"` runs this rule at every drafted position. The trace
# shows, for each draft, p(d), q(d) and the uniform u it was tested with (kept when u < p/q).

# %%
trace, stats = [], SpecStats()
sampling = SamplingParams(temperature=0.8, top_p=0.95, seed=SEED)
out_ids = speculative_generate_ids(model, EarlyExitDrafter(EXIT), ids, 4 if QUICK else 12, sampling,
                                   verifier="rejection", k=2, trace=trace, stats=stats)
print_trace(trace, tok)  # + kept, x rejected, . never checked (the lines of `tinyspec generate --trace`)
print(f"\n{prompt}{tok.decode(out_ids)}")
print(f"{stats.accepted} of {stats.drafted} drafts accepted, {stats.tokens_per_forward:.2f} tokens per forward, "
      f"seed {SEED}")
for s in trace:
    for i, u in enumerate(s.uniforms):
        assert (u < s.p_draft[i] / s.q_draft[i]) == (i < s.accepted), "kept exactly when u < p/q"

# %% [markdown]
# ## Try this
#
# 1. Make the drafter worse: `EXIT = 6`. beta drops to almost 0, the histogram still matches p. Make it perfect: use
#    the target's own logits as q (beta = 1, every draft accepted).
# 2. In section 4, replace `residual_distribution` by p in the loop (sample `final` yourself from
#    `p_small` on a rejection). How many draws until the deviation exceeds 4.5 standard errors?
# 3. Show that beta = 1 - TV(p, q), where TV is the total variation distance 0.5 sum |p - q|.
