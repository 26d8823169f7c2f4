# %% [markdown]
# # Lesson 7: Choosing k
#
# **Goal.** Predict the speedup of speculative decoding from three numbers, then check the prediction with
# a stopwatch. With acceptance rate a (each draft kept with probability a, independently), k drafts per
# step, a draft costing c target forwards and the verification forward over k + 1 tokens costing v(k):
#
#     tokens per step = 1 + a + a^2 + ... + a^k = (1 - a^(k+1)) / (1 - a)
#     speedup         = (1 - a^(k+1)) / ((1 - a) (k c + v(k)))
#
# (Leviathan et al. 2023, Theorem 3.8, where v = 1.) More drafts mean more tokens per step, with
# diminishing returns (a^k shrinks), and more cost (k c, and v(k) grows once the verification stops being
# memory-bound): the best k is in between, and depends on a, c and the machine.
#
# **Running time.** Measured 42 s after the one-time conversion (18 s with `TINYSPEC_QUICK=1`) on a
# 2-core machine shared with two heavy jobs (load average 3.3, `NUMBA_NUM_THREADS=1`); an idle laptop is
# faster. lessons/README.md lists every measurement.
# The stopwatch numbers depend on the machine and its load; the lesson asserts only
# what does not.

# %%
from tinyspec import measure, plots, theory
from tinyspec.decoding import Stats, generate
from tinyspec.drafters import NgramDrafter
from tinyspec.drafters.oracle import OracleDrafter
from tinyspec.show import EXAMPLE_PROMPT
from tinyspec.speculative import SpecStats, speculative_generate
from tinyspec.workshop import load_gemma, quick_mode

QUICK = quick_mode()
N_NEW = 8 if QUICK else 32
KS = [1, 4] if QUICK else [1, 2, 4, 6, 8]
ALPHA = 0.8
SEED = 77
print(f"quick mode: {QUICK}; greedy; {N_NEW} new tokens; k in {KS}; oracle alpha {ALPHA}, seed {SEED}")

# %% [markdown]
# ## 1. The formula on paper
#
# With free drafts (c = 0) and free verification (v = 1), more drafts always help: the speedup climbs to
# 1 / (1 - a). With c = 0.1 (a drafter a tenth the cost of the target), it peaks and falls.

# %%
ks_paper = list(range(1, 11))
curves = {f"a={a}, c={c}": [theory.expected_speedup(a, k, c) for k in ks_paper]
          for a, c in [(0.6, 0.0), (0.8, 0.0), (0.8, 0.1), (0.9, 0.1)]}
print(f"{'k':>3} " + " ".join(f"{name:>14}" for name in curves))
for i, k in enumerate(ks_paper):
    print(f"{k:>3} " + " ".join(f"{v[i]:14.2f}" for v in curves.values()))
for a, c in [(0.8, 0.1), (0.9, 0.1), (0.6, 0.05)]:
    print(f"best k for a = {a}, c = {c}: {theory.best_k(a, c)}")
assert theory.best_k(0.8, 0.0) == 16 and theory.best_k(0.8, 0.1) < 16
print(plots.chart("expected speedup vs k (v = 1)", ks_paper, curves, png="07_formula.png", kind="line",
                  xlabel="k", ylabel="speedup", fmt="{:.2f}", width=30))

# %% [markdown]
# ## 2. This machine's v(k)
#
# The verification forward runs k + 1 tokens. Lesson 3 showed that costs little more than one token, but
# not exactly one: v(k) = time(k + 1 tokens) / time(1 token), measured here.

# %%
model, tok = load_gemma(reuse_prefill=True)  # every run below decodes the same prompt: prefill it once
ids = tok.encode(EXAMPLE_PROMPT)
times = measure.forward_times(model, [1] + [k + 1 for k in KS], context=64, repeats=2 if QUICK else 3, seed=SEED)
t1 = times[1]
v = {k: times[k + 1] / t1 for k in KS}
print("v(k): " + ", ".join(f"v({k}) = {v[k]:.2f}" for k in KS) + f"   (one-token forward: {t1 * 1e3:.0f} ms)")

# %% [markdown]
# ## 3. The formula's own drafter: an oracle of quality a
#
# `OracleDrafter` knows vanilla's answer and proposes it, but each drafted token is right only with
# probability a (a seeded coin per token). It costs nothing (c = 0), and every draft is kept with
# probability a, independently: exactly the model behind the formula. So the formula, fed the measured a
# and v(k), should predict the measured speedup.

# %%
vstats = Stats()
vanilla = list(generate(model, ids, N_NEW, stats=vstats))
decode_seconds = lambda s: s.seconds - s.prefill_seconds  # the prefill is the same in every run
print(f"vanilla: {N_NEW} tokens in {decode_seconds(vstats):.2f} s of decoding ({vstats.target_forwards} forwards)")


def sweep(make_drafter, ks=KS):
    rows = []
    for k in ks:
        stats, trace = SpecStats(), []
        out = list(speculative_generate(model, make_drafter(), ids, N_NEW, k=k, stats=stats, trace=trace))
        assert out == vanilla, f"k = {k}: output differs from vanilla"
        full = [s for s in trace if len(s.drafted) == k]  # steps not cut short by the end of the text
        a = theory.estimate_alpha(full)
        rows.append(dict(k=k, alpha=a, tpf=theory.tokens_per_step(full, k),
                         tpf_formula=theory.expected_tokens_per_step(a, k),
                         measured=decode_seconds(vstats) / decode_seconds(stats),
                         formula=theory.expected_speedup(a, k, c=0.0, v=v[k])))
    print(f"{'k':>3} {'alpha':>6} {'tokens/step':>12} {'formula':>8} {'speedup':>8} {'formula':>8}")
    for r in rows:
        print(f"{r['k']:>3} {r['alpha']:6.2f} {r['tpf']:12.2f} {r['tpf_formula']:8.2f} {r['measured']:7.2f}x "
              f"{r['formula']:7.2f}x")
    return rows


oracle_rows = sweep(lambda: OracleDrafter(len(ids), vanilla, alpha=ALPHA, seed=SEED))
print(plots.chart(f"oracle drafter, a = {ALPHA}: speedup vs k", KS,
                  {"measured": [r["measured"] for r in oracle_rows], "formula": [r["formula"] for r in oracle_rows]},
                  png="07_speedup_vs_k.png", kind="line", xlabel="k", ylabel="speedup", fmt="{:.2f}x", hline=1.0))
for r in oracle_rows:  # tokens per step is the formula's count, up to the luck of a short run
    assert abs(r["tpf"] - r["tpf_formula"]) <= 0.3 * r["tpf_formula"], r
best_measured = max(oracle_rows, key=lambda r: r["measured"])["k"]
best_formula = max(oracle_rows, key=lambda r: r["formula"])["k"]
print(f"best k: measured {best_measured}, predicted {best_formula}")

# %% [markdown]
# ## 4. A real drafter: prompt lookup on the code edit
#
# Real acceptance is not a fixed coin: prompt lookup is right for long stretches (copying a line) and then
# wrong at once (the edit). Its a measured over a run is an average over both, and the formula, which
# assumes independence, is only a guide: compare the columns.

# %%
ngram_rows = sweep(lambda: NgramDrafter(max_n=3), ks=[1, 4] if QUICK else [1, 2, 4, 8])
print(f"best k for prompt lookup here: {max(ngram_rows, key=lambda r: r['measured'])['k']}")

# %% [markdown]
# ## Try this
#
# 1. Set `ALPHA = 0.5` and `ALPHA = 0.95`. How does the best k move? Check against `theory.best_k`.
# 2. Give the oracle a cost: wrap it so that `propose` also runs `model.forward` on a few blocks
#    (`layers=3`) per token, making c about 0.7. What does the formula now say about k? And the stopwatch?
# 3. `speculative_generate(..., adaptive=True)` applies the break-even rule: each step it verifies the
#    number of drafts n from 0 to k (0: a plain decode step) with the largest expected speedup, the formula
#    above at k = n, with a estimated from the steps so far. Does it find the best k for prompt lookup?
