# %% [markdown]
# # Lesson 8: Coupled sampling: same seed, same text, with or without speculation
#
# **Goal.** Rejection sampling (lesson 5) makes speculative output follow the right *distribution*, but not
# reproduce a given vanilla sample: same seed, different text. Coupled sampling fixes that. Draw each token
# by the Gumbel-max trick, x_t = argmax(log p_t + g_t), with noise g_t that depends only on (seed, t). Then
# vanilla decoding and every speculative run, whatever the drafter, compute the very same argmax at every
# position: identical text, token for token. (Cf. Daliri et al. 2024, "drafter-invariant speculative
# decoding".)
#
# **Running time.** Measured 41 s after the one-time conversion (29 s with `TINYSPEC_QUICK=1`) on a
# 2-core machine shared with two heavy jobs (load average 3.1, `NUMBA_NUM_THREADS=1`); an idle laptop is
# faster. lessons/README.md lists every measurement.

# %%
import numpy as np

from tinyspec import plots
from tinyspec.decoding import generate_ids
from tinyspec.drafters import DraftModelDrafter, NgramDrafter
from tinyspec.sampling import SamplingParams, gumbel_noise, gumbel_token
from tinyspec.speculative import SpecStats, speculative_generate_ids
from tinyspec.workshop import load_gemma, quick_mode, toy_draft_model

QUICK = quick_mode()
SEED = 8
N_NEW = 6 if QUICK else 24
print(f"quick mode: {QUICK}; seed {SEED}; {N_NEW} new tokens")

# %% [markdown]
# ## 1. The Gumbel-max trick
#
# If g_1..g_V are independent Gumbel(0, 1) draws (g = -log(-log u), u uniform), then argmax_x (log p(x) +
# g_x) is distributed exactly as p. `sampling.gumbel_noise(seed, position, V)` draws the noise from a
# generator keyed by (seed, position): position t always gets the same noise, no matter what happened
# before it or how many tokens a forward computed.

# %%
p = np.array([0.5, 0.25, 0.15, 0.1])
n = 1000 if QUICK else 20000
draws = np.array([gumbel_token(p, SEED, t) for t in range(n)])  # one position each: independent noise
freq = np.bincount(draws, minlength=len(p)) / n
print(plots.chart(f"argmax(log p + g) over {n} positions (seed {SEED})", ["A", "B", "C", "D"],
                  {"drawn": freq, "exact p": p}, png="08_gumbel.png"))
assert np.all(np.abs(freq - p) < 4.5 * np.sqrt(p * (1 - p) / n)), "Gumbel-max draws follow p"
assert gumbel_token(p, SEED, 123) == gumbel_token(p, SEED, 123), "same (seed, position), same token"
g = gumbel_noise(SEED, 5, 4)
print(f"noise at position 5, seed {SEED}: {np.round(g, 3).tolist()}; log p + g = {np.round(np.log(p) + g, 3).tolist()}"
      f" -> token {'ABCD'[int(np.argmax(np.log(p) + g))]}")

# %% [markdown]
# ## 2. Why speculation cannot change the text
#
# Vanilla coupled sampling emits x_t = argmax(log p_t + g_t). The coupled verifier accepts a draft d_t
# exactly when d_t == argmax(log p_t + g_t), the same expression with the same g_t (p_t is the same too:
# the batch-invariant kernels of lesson 4 make the logits bitwise equal), and at the first mismatch it
# emits that argmax itself. By induction on t, every emitted token is vanilla's. The drafter only changes
# *how many* tokens each forward yields. A drafter can even use the same noise on its own q: when q is
# close to p, argmax(log q + g) usually equals argmax(log p + g).

# %%
model, tok = load_gemma()
prompt = "Fruits: apple, banana, cherry, grape.\nFruits:"  # room for chance, and for prompt lookup
ids = tok.encode(prompt)
params = SamplingParams(temperature=0.8, top_p=0.95, seed=SEED, coupled=True)
vanilla = generate_ids(model, ids, N_NEW, params)
print(f"vanilla coupled sampling (temperature 0.8, top-p 0.95, seed {SEED}):\n{prompt}{tok.decode(vanilla)!r}")

# %% [markdown]
# ## 3. Same seed, same text: with prompt lookup, and with a drafter that is always wrong
#
# The toy draft model is lesson 6's random tiny Gemma: its guesses are noise. The text stays vanilla's.

# %%
toy = toy_draft_model(model.cfg, seed=SEED)  # 2 blocks of width 64, random weights, Gemma's vocabulary
for name, drafter in [("ngram", NgramDrafter(max_n=3)), ("toy draft model", DraftModelDrafter(toy))]:
    stats = SpecStats()
    spec = speculative_generate_ids(model, drafter, ids, N_NEW, params, verifier="coupled", k=3, stats=stats)
    print(f"coupled speculative, {name:16}: identical to vanilla: {spec == vanilla}; "
          f"{stats.accepted}/{stats.drafted} drafts accepted, {stats.tokens_per_forward:.2f} tokens per forward")
    assert spec == vanilla, f"coupled speculative sampling with {name} must reproduce vanilla coupled sampling"

# %% [markdown]
# ## 4. What rejection sampling and another seed do
#
# Rejection sampling with the same seed is just as correct, in distribution, but it consumes its random
# numbers differently (one uniform per checked draft), so its sample is in general another one. A different seed
# gives different noise, so different text too.

# %%
rejection = speculative_generate_ids(model, NgramDrafter(max_n=3), ids, N_NEW,
                                     SamplingParams(temperature=0.8, top_p=0.95, seed=SEED), verifier="rejection", k=3)
other_seed = generate_ids(model, ids, N_NEW, SamplingParams(temperature=0.8, top_p=0.95, seed=SEED + 1, coupled=True))
print(f"rejection sampling, seed {SEED}:  same as vanilla coupled? {rejection == vanilla}:  {tok.decode(rejection)!r}")
print(f"coupled, seed {SEED + 1}:            same as seed {SEED}? {other_seed == vanilla}:  {tok.decode(other_seed)!r}")

# %% [markdown]
# ## Try this
#
# 1. Change k, the drafter (`EarlyExitDrafter(15)`), `adaptive=True`: can you make the coupled text differ
#    from vanilla's? (Lesson 9 lets Hypothesis try for you.)
# 2. Run `tinyspec generate "Once upon a time" --temperature 0.8 --coupled --seed 1` with and without
#    `--drafter ngram`. Same text?
# 3. Why does the coupled verifier need no uniform draws of its own, while the rejection verifier needs one
#    per checked draft?
