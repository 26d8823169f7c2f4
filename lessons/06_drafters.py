# %% [markdown]
# # Lesson 6: Drafters compared: cheap *and* aligned
#
# **Goal.** A drafter pays off only if its guesses are accepted often (it is *aligned* with the target) and
# it costs little next to a target forward (it is *cheap*). We measure both for every drafter tinyspec has,
# on a code prompt and on a prose prompt: acceptance rate, acceptance by draft position, tokens per target
# forward, the drafter's cost c per draft (in target forwards) and the wall-clock speedup.
#
# | drafter | cheap? | aligned? |
# | --- | --- | --- |
# | ngram (prompt lookup) | free | only where the text repeats itself (code edits) |
# | early exit (first L blocks + the full head) | no: the 671 MB head alone is ~60 % of a forward | more with larger L |
# | toy draft model (a random tiny Gemma) | yes | no |
# | MTP (a small network reading the target's hidden state, trained for it) | yes | as well as its training made it |
#
# **Running time.** Measured 50 s after the one-time conversion (18 s with `TINYSPEC_QUICK=1`) on a
# 2-core machine shared with two heavy jobs (load average 3.4, `NUMBA_NUM_THREADS=1`); an idle laptop is
# faster. lessons/README.md lists every measurement.
# Greedy decoding throughout: every run must equal vanilla, token for token.

# %%
from tinyspec import model as M
from tinyspec import measure, plots, theory
from tinyspec.decoding import Stats, generate
from tinyspec.drafters import DraftModelDrafter, EarlyExitDrafter, NgramDrafter, make_drafter
from tinyspec.drafters.mtp import DEFAULT_WEIGHTS as MTP_WEIGHTS
from tinyspec.show import EXAMPLE_PROMPT
from tinyspec.speculative import SpecStats, speculative_generate
from tinyspec.workshop import load_gemma, quick_mode, toy_draft_model

QUICK = quick_mode()
N_NEW = 4 if QUICK else 16
K = 3
SEED = 6
print(f"quick mode: {QUICK}; greedy; {N_NEW} new tokens per run; k = {K}; toy model seed {SEED}")

model, tok = load_gemma(reuse_prefill=True)  # every drafter decodes the same two prompts: prefill each once
cfg, w = model.cfg, model.weights

PROMPTS = {
    "code": EXAMPLE_PROMPT,  # rename a variable in a function: the answer copies the input
    "prose": "Once upon a time, in a small village at the edge of a great forest, there lived an old "
             "clockmaker and his curious granddaughter. Every morning,",
}
if QUICK:  # CI: the code prompt carries the asserted claims
    del PROMPTS["prose"]

# %% [markdown]
# ## 1. Alignment grows with depth, and so does the cost: early exit
#
# Teacher forcing measures alignment without generating: run the target once over prompt + its own greedy
# continuation and, after every block L, apply the final norm and the head to see what an exit after L
# blocks would guess; count the positions where that guess equals the target's (after all 18 blocks).
# For a greedy drafter that *is* the acceptance rate alpha of its first draft. One pass over the text
# serves every depth: an early exit is just the forward loop of `tinyspec.model` stopped early.
# An untrained exit after L blocks is a poor guesser until L is close to 18, while its cost, L of 18
# blocks plus the whole head, is high from the start.

# %%
model.forward(tok.encode("warm-up"), model.new_cache())  # load the compiled kernels before timing
continuations = {}
for name, text in PROMPTS.items():
    ids = tok.encode(text)
    stats = Stats()
    out = list(generate(model, ids, N_NEW, stats=stats))
    continuations[name] = (ids, out, stats)
    print(f"vanilla on {name}: {stats.target_forwards} forwards, {stats.seconds:.2f} s: {tok.decode(out)!r}")

tf_prompt = "prose" if "prose" in PROMPTS else "code"
ids, out, _ = continuations[tf_prompt]
seq = ids + out
rows = slice(len(ids) - 1, len(seq) - 1)  # the positions whose next token is a generated one
depths = [3, 17] if QUICK else [3, 6, 9, 12, 15, 17]
guess = {}  # L -> [N_NEW] the exit's greedy guess at each generated position
cache = model.new_cache(len(seq))
x = M.embed(seq, w.embed_tokens, cfg.hidden_size)  # [T, d]
for i in range(cfg.num_layers):
    x = M.block(x, w.layers[i], i, cache, 0, cfg, model.ops)  # [T, d]  block i, as model.forward runs it
    if i + 1 in depths or i + 1 == cfg.num_layers:  # exit here: final norm + tied head, only where needed
        guess[i + 1] = model.head(model.ops.rms_norm(x[rows], w.norm, cfg.rms_norm_eps)).argmax(-1)  # [N_NEW]
agreement = [float((guess[L] == guess[cfg.num_layers]).mean()) for L in depths]
wb_block = sum(a.nbytes for a in vars(w.layers[0]).values())
wb_head = w.embed_tokens.nbytes
cost = [(L * wb_block + wb_head) / (cfg.num_layers * wb_block + wb_head) for L in depths]
print(plots.chart(f"early exit after L blocks, on {tf_prompt}: agreement with the target (alpha) and cost "
                  "(bytes read, in target forwards)", [f"L={L}" for L in depths], {"alpha": agreement, "cost c": cost},
                  png="06_early_exit_depth.png", xlabel="blocks", fmt="{:.2f}"))
assert cost[0] > 0.6, "even 3 blocks cost most of a forward: the head dominates"
assert agreement[-1] > agreement[0], "a deeper exit agrees with the target more often"

# %% [markdown]
# ## 2. Every drafter, on code and on prose
#
# For each drafter we run speculative decoding and record: the acceptance rate, tokens per target forward,
# the drafter's cost c (its seconds per drafted token over the target's seconds per token), and the
# speedup in wall-clock decode time (prefill excluded) over the vanilla run of the same prompt. The
# stopwatch columns move with the machine's load; the counts (drafted, accepted, tokens per forward) do not.
#
# The toy draft model is Gemma's architecture shrunk to 2 blocks of width 64 with the real 262,144-token
# vocabulary (a drafter must share the target's tokenizer), and random weights: very cheap, not aligned.
# Early exit runs on the code prompt only: on prose section 1 already showed it guessing poorly, and each
# of its drafts costs most of a forward, so that run would be the slowest of the lesson for nothing new.
# The MTP drafter (`--drafter mtp`, trained by `tinyspec train-mtp`, lesson 10) is included when its trained
# weights are in `weights/`.

# %%
toy = toy_draft_model(cfg, seed=SEED)
drafters = {
    "ngram": lambda: NgramDrafter(max_n=3),
    "early-exit:12": lambda: EarlyExitDrafter(12),
    "toy draft model": lambda: DraftModelDrafter(toy),
}
if MTP_WEIGHTS.exists():
    mtp = make_drafter("mtp")  # the shipped weights/mtp-gemma-3-270m.drafter.safetensors
    drafters["mtp"] = lambda: mtp
    print(f"including the trained MTP drafter ({MTP_WEIGHTS.name})")
else:
    print(f"note: no trained MTP drafter at {MTP_WEIGHTS}: skipping it (`tinyspec train-mtp` makes one)")

results = {}
for prompt_name, (ids, vanilla, vstats) in continuations.items():
    t_token = (vstats.seconds - vstats.prefill_seconds) / max(vstats.target_forwards - 1, 1)  # target s/token
    for name, make in drafters.items():
        if name.startswith("early-exit") and prompt_name != "code":
            continue
        drafter = measure.TimedDrafter(make())
        stats, trace = SpecStats(), []
        spec = list(speculative_generate(model, drafter, ids, N_NEW, k=K, stats=stats, trace=trace))
        assert spec == vanilla, f"{name} on {prompt_name}: speculative output differs from vanilla"
        results[name, prompt_name] = dict(
            alpha=stats.acceptance_rate, tpf=stats.tokens_per_forward, drafted=stats.drafted,
            c=drafter.seconds_per_draft / t_token if drafter.drafted else 0.0,
            speedup=(vstats.seconds - vstats.prefill_seconds) / (stats.seconds - stats.prefill_seconds),
            by_position=theory.acceptance_by_position(trace, K), alpha_step=theory.estimate_alpha(trace),
            cost=drafter.inner.cost)  # the drafter's own estimate of c (early exit: bytes read)

print(f"{'drafter':16} {'prompt':6} {'drafted':>8} {'accepted':>9} {'tokens/fwd':>11} {'c':>6} {'speedup':>8}")
for (name, prompt_name), r in results.items():
    print(f"{name:16} {prompt_name:6} {r['drafted']:8d} {r['alpha']:9.0%} {r['tpf']:11.2f} {r['c']:6.2f} "
          f"{r['speedup']:7.2f}x")
print("(every run produced exactly vanilla's tokens)")
names = list(drafters)
tpf = lambda n, p: results[n, p]["tpf"] if (n, p) in results else 0.0  # 0.0: not run
print(plots.chart("tokens per target forward (0: not run)", names, {p: [tpf(n, p) for n in names] for p in PROMPTS},
                  png="06_tokens_per_forward.png", fmt="{:.2f}"))
print(plots.chart("acceptance by draft position, code prompt (draft i is kept only if 1..i-1 were)",
                  [f"draft {i}" for i in range(1, K + 1)], {n: results[n, "code"]["by_position"] for n in names},
                  png="06_acceptance_by_position.png", fmt="{:.2f}"))
assert results["ngram", "code"]["tpf"] > 1.5, "prompt lookup shines on a code edit"
assert results["toy draft model", "code"]["alpha"] < 0.2, "random weights are not aligned"
toy_bytes = measure.weight_bytes(toy.weights)["total"] / measure.weight_bytes(w)["total"]  # c, in bytes read
print(f"the toy draft model reads {toy_bytes:.1%} of the bytes a target forward reads")
assert results["ngram", "code"]["c"] < 0.2 and toy_bytes < 0.1, "both are cheap"
ee = results["early-exit:12", "code"]
ee_predicted = theory.expected_speedup(ee["alpha_step"], K, c=ee["cost"], v=1.0)
print(f"early exit on code: the cost model, fed its measured alpha {ee['alpha_step']:.2f} and its cost in bytes, "
      f"predicts {ee_predicted:.2f}x even with free verification")
assert ee_predicted < 1.0, "an early exit after 12 of 18 blocks is too expensive to pay off"

# %% [markdown]
# ## 3. What the numbers say
#
# * Prompt lookup is free and, on a code edit, right most of the time: several tokens per forward. On prose
#   it rarely finds a match and falls back to about one token per forward: no gain, and a small loss when it
#   drafts from a false match (the verification forward is wider).
# * Early exit is aligned only when deep, and then it costs almost a whole forward per draft: k drafts
#   plus a verification cost more than the tokens they yield. The formula says it is slower than vanilla,
#   and the stopwatch agrees.
# * The toy model is cheap, but never right: each step pays for k useless drafts and emits one token.
# * The MTP drafter, when present, is cheap by design; how aligned it is depends on its training, and this
#   table is the honest measure of it.
# * The cost model of lesson 7 makes this precise: speedup = (1 - a^(k+1)) / ((1 - a)(k c + v)). A drafter
#   needs a large a **and** a small c.

# %% [markdown]
# ## Try this
#
# 1. Give the ngram drafter `max_n=1`: more matches, worse ones. What happens on each prompt?
# 2. Try `EarlyExitDrafter(17)`: the best-aligned exit. Is it faster than vanilla for any k?
# 3. Train the toy model? It has 2 blocks and about 17 M parameters, almost all in the embedding. What would it
#    need to learn to be aligned, and what would it cost per draft? (Lesson 10 trains a drafter that
#    reads the target's own hidden state instead.)
