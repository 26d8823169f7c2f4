# %% [markdown]
# # Lesson 1: Tokens and next-token probabilities
#
# **Goal.** See what a language model actually computes: text becomes token ids, one forward pass turns
# them into a probability for every one of Gemma's 262,144 tokens, and decoding picks one. Temperature,
# top-k and top-p reshape that distribution before the pick; a seeded generator makes the pick repeatable.
#
# **Running time.** Measured 28 s after the one-time conversion (12 s with `TINYSPEC_QUICK=1`) on a
# 2-core machine shared with two heavy jobs (load average 3.6, `NUMBA_NUM_THREADS=1`); an idle laptop is
# faster. lessons/README.md lists every measurement.
# Run it with `python lessons/01_tokens.py`, or open it as a notebook.
#
# Real Gemma 3 270M weights (the base model, not the instruction-tuned one). The first lesson you run
# converts them (about a minute, once).

# %%
import numpy as np

from tinyspec import plots
from tinyspec.decoding import generate_ids
from tinyspec.sampling import SamplingParams, sample, warp
from tinyspec.workshop import load_gemma, quick_mode

QUICK = quick_mode()  # CI: fewer tokens and samples, same claims
SEED = 1234
print(f"quick mode: {QUICK}, seed: {SEED}")

model, tok = load_gemma()

# %% [markdown]
# ## 1. Text -> token ids
#
# Gemma's tokenizer cuts text into pieces from a fixed vocabulary. A leading space belongs to the piece
# (" world"), every prompt starts with the special `<bos>` token (id 2), and a character the vocabulary
# lacks is spelled as its UTF-8 bytes (`<0xED>`...), so any text can be encoded.

# %%
for text in ["Hello world", "def fib(n):\n    return n", "speculative decoding", "퓛!"]:
    ids = tok.encode(text)
    print(f"{text!r:32} -> {ids}")
    print(f"{'':32}    {[tok.token_text(i) for i in ids]}")
    assert tok.decode(ids) == text  # decoding gives back the text exactly
assert tok.encode("Hello world") == [2, 9259, 1902]

# %% [markdown]
# ## 2. One forward pass -> a distribution over the next token
#
# The model returns one *logit* per vocabulary entry; the softmax turns logits into probabilities:
# p(x) = exp(z_x) / sum_y exp(z_y). A base model continues text; it does not answer questions, so
# "The capital of France is" is as likely to go on with " the" as with " Paris". One example in the
# prompt changes that.

# %%
def next_token_table(prompt, rows=8):
    ids = tok.encode(prompt)
    logits = model.forward(ids, model.new_cache(len(ids)), last_only=True)[0]  # [V] float32
    p = warp(logits, temperature=1.0)  # [V] float64, the softmax
    top = np.argsort(-p)[:rows]
    print(f"after {prompt!r} ({len(ids)} tokens):")
    for r, i in enumerate(top, 1):
        print(f"  {r}. {tok.token_text(int(i))!r:14} logit {logits[i]:7.3f}   p = {p[i]:6.1%}")
    return logits, p


logits_fr, p_fr = next_token_table("The capital of France is")
logits, p = next_token_table("The capital of France is Paris. The capital of Germany is")
assert abs(p.sum() - 1.0) < 1e-12
berlin = tok.encode(" Berlin", add_bos=False)[0]
assert int(np.argmax(p)) == berlin and p[berlin] > 0.5, "the model should be confident about Berlin"

# %% [markdown]
# ## 3. Temperature, top-k, top-p
#
# Sampling does not use p as is. `tinyspec.sampling.warp` applies, in this order:
#
# * **temperature T**: softmax(z / T). T < 1 sharpens, T > 1 flattens, T -> 0 is greedy (argmax).
# * **top-k**: keep the k most likely tokens, renormalise.
# * **top-p** (nucleus): keep the smallest most-likely set whose mass reaches p, renormalise.
#
# The result is *the* distribution a sampled token follows. Every speculative verifier in later lessons
# must reproduce exactly this warped p.

# %%
def entropy_bits(p):
    nz = p[p > 0]
    return float(-(nz * np.log2(nz)).sum())


print("prompt: 'The capital of France is'")
print(f"{'setting':24} {'kept tokens':>12} {'entropy':>9}   top 3")
entropies = []
for T in [0.0, 0.5, 1.0, 2.0]:
    pw = warp(logits_fr, temperature=T)
    entropies.append(entropy_bits(pw))
    top = [i for i in np.argsort(-pw)[:3] if pw[i] > 0]
    print(f"{'temperature ' + str(T):24} {int((pw > 0).sum()):>12} {abs(entropies[-1]):7.2f} b   "
          + ", ".join(f"{tok.token_text(int(i))!r} {pw[i]:.0%}" for i in top))
assert entropies == sorted(entropies), "higher temperature, flatter distribution"

p_k = warp(logits_fr, temperature=1.0, top_k=5)
p_p = warp(logits_fr, temperature=1.0, top_p=0.5)
for name, pw in [("top-k 5", p_k), ("top-p 0.5", p_p)]:
    top = np.argsort(-pw)[: int((pw > 0).sum())]
    print(f"{name:24} {int((pw > 0).sum()):>12} {entropy_bits(pw):7.2f} b   "
          + ", ".join(f"{tok.token_text(int(i))!r} {pw[i]:.0%}" for i in top[:6]))
assert int((p_k > 0).sum()) == 5 and abs(p_k.sum() - 1) < 1e-12
# top-p keeps the smallest set whose original mass reaches 0.5: without its least likely member it falls short
kept = np.flatnonzero(p_p)
assert p_fr[kept].sum() >= 0.5 and p_fr[kept].sum() - p_fr[kept].min() < 0.5

# %% [markdown]
# ## 4. Drawing a token, with a printed seed
#
# `sampling.sample(p, rng)` inverts the cumulative distribution with one uniform number. One generator
# per run, seeded once and never re-seeded: the same seed gives the same draws. Drawn often enough, the
# frequencies approach p: each within a few standard errors sqrt(p (1 - p) / n).

# %%
n_draws = 300 if QUICK else 2000
pw = warp(logits_fr, temperature=1.0, top_k=6)
rng = np.random.default_rng(SEED)
draws = np.array([sample(pw, rng) for _ in range(n_draws)])
support = np.argsort(-pw)[:6]
freq = np.array([(draws == i).mean() for i in support])
print(plots.chart(f"{n_draws} draws (seed {SEED}) from p at temperature 1, top-k 6",
                  [repr(tok.token_text(int(i))) for i in support],
                  {"drawn": freq, "exact p": pw[support]}, png="01_draws.png"))
stderr = np.sqrt(pw[support] * (1 - pw[support]) / n_draws)
assert np.all(np.abs(freq - pw[support]) < 5 * stderr), "frequencies within 5 standard errors of p"
assert set(draws.tolist()) <= set(support.tolist())  # top-k: nothing outside the 6 kept tokens is ever drawn

# %% [markdown]
# ## 5. Generating: one forward pass per token
#
# Decoding repeats section 2: pick a token, append it, run the model on it (the KV cache of lesson 3
# remembers the rest), pick the next. Greedy always gives the same text; sampling gives the same text
# for the same seed.

# %%
n_new = 4 if QUICK else 16
prompt = "The capital of France is Paris. The capital of Germany is"
ids = tok.encode(prompt)
greedy = generate_ids(model, ids, n_new)
print(f"greedy:               {prompt}{tok.decode(greedy)!r}")
outs = []
for seed in [SEED, SEED, SEED + 1]:
    params = SamplingParams(temperature=0.8, top_p=0.95, seed=seed)
    outs.append(generate_ids(model, ids, n_new, params))
    print(f"T=0.8 top-p 0.95 seed {seed}: {prompt}{tok.decode(outs[-1])!r}")
assert outs[0] == outs[1], "same seed, same text"
assert greedy[0] == berlin

# %% [markdown]
# ## Try this
#
# 1. `tinyspec predict "The capital of France is" --top 10` prints section 2's table from the command line.
#    Find a prompt where the top token has more than 99 % (hint: the middle of a famous quotation).
# 2. At which temperature does " Paris" become more likely than " the" after "The capital of France is"?
#    (It never does: temperature keeps the order. What *does* change the order?)
# 3. Set `top_p=0.9` in section 3 and count the kept tokens. Now do it for the Germany prompt. Why does
#    the nucleus size vary so much from prompt to prompt, while top-k's is fixed?
