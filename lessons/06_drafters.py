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
# **Running time.** About 40 s on a 2-core laptop after the one-time conversion (about 20 s with
# `TINYSPEC_QUICK=1`). Greedy decoding throughout: every run must equal vanilla, token for token.

# %%
import os
import time

from tinyspec import plots, theory
from tinyspec.cli import EXAMPLE_PROMPT
from tinyspec.config import tiny_config
from tinyspec.decoding import Stats, generate
from tinyspec.drafters import DraftModelDrafter, EarlyExitDrafter, NgramDrafter
from tinyspec.measure import TimedDrafter
from tinyspec.model import Model
from tinyspec.speculative import SpecStats, speculative_generate
from tinyspec.tokenizer import Tokenizer
from tinyspec.weights import ensure_converted, random_weights

try:  # the MTP drafter is optional: its trained weights may not exist yet
    from tinyspec.drafters.mtp import DEFAULT_WEIGHTS as MTP_WEIGHTS, MTPDrafter
except ImportError:
    MTP_WEIGHTS = MTPDrafter = None

QUICK = os.environ.get("TINYSPEC_QUICK", "") not in ("", "0")
N_NEW = 4 if QUICK else 16
K = 3
SEED = 6
print(f"quick mode: {QUICK}; greedy; {N_NEW} new tokens per run; k = {K}; toy model seed {SEED}")

t0 = time.perf_counter()
weights_dir = ensure_converted()
model = Model.load(weights_dir)
tok = Tokenizer.from_file(weights_dir / "tokenizer.json")
cfg = model.cfg
print(f"loaded in {time.perf_counter() - t0:.1f} s; backend {model.backend}")

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
# continuation, run the first L blocks once over the same tokens, and count the positions where their
# argmaxes agree. For a greedy drafter that *is* the acceptance rate alpha of its first draft.
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


def argmaxes(layers=None):  # [N_NEW]: the greedy guess at each generated position, after `layers` blocks
    h = model.hidden(seq, model.new_cache(len(seq)), layers)  # [T, d]  one pass over the whole text
    return model.head(h[rows]).argmax(-1)  # the head only where we need it


target_argmax = argmaxes()
depths = [3, 15] if QUICK else [3, 6, 9, 12, 15, 17]
agreement = []
for L in depths:
    agreement.append(float((argmaxes(L) == target_argmax).mean()))
wb_block = sum(x.nbytes for x in vars(model.weights.layers[0]).values())
wb_head = model.weights.embed_tokens.nbytes
cost = [(L * wb_block + wb_head) / (cfg.num_layers * wb_block + wb_head) for L in depths]
print(plots.chart(f"early exit after L blocks, on {tf_prompt}: agreement with the target (alpha) and cost "
                  "(bytes read, in target forwards)", [f"L={L}" for L in depths], {"alpha": agreement, "cost c": cost},
                  png="06_early_exit_depth.png", xlabel="blocks", fmt="{:.2f}"))
assert cost[0] > 0.6, "even 3 blocks cost most of a forward: the head dominates"

# %% [markdown]
# ## 2. Every drafter, on code and on prose
#
# For each drafter we run speculative decoding and record: the acceptance rate, tokens per target forward,
# the drafter's cost c (its seconds per drafted token over the target's seconds per token), and the
# speedup in wall-clock decode time (prefill excluded) over the vanilla run of the same prompt.
#
# The toy draft model is Gemma's architecture shrunk to 2 blocks of width 64 with the real 262,144-token
# vocabulary (a drafter must share the target's tokenizer), and random weights: very cheap, not aligned.

# %%
tcfg = tiny_config(vocab_size=cfg.vocab_size, hidden_size=64, intermediate_size=128, num_layers=2, head_dim=32,
                   max_position_embeddings=cfg.max_position_embeddings, bos_token_id=cfg.bos_token_id,
                   eos_token_id=cfg.eos_token_id, pad_token_id=cfg.pad_token_id, unk_token_id=cfg.unk_token_id)
toy = Model(tcfg, random_weights(tcfg, seed=SEED), backend=model.backend)
drafters = {
    "ngram": lambda: NgramDrafter(max_n=3),
    "early-exit:12": lambda: EarlyExitDrafter(12),
    "toy draft model": lambda: DraftModelDrafter(toy),
}
if MTP_WEIGHTS is not None and MTP_WEIGHTS.exists():
    drafters["mtp"] = MTPDrafter.load
    print(f"including the trained MTP drafter ({MTP_WEIGHTS.name})")
else:
    print(f"note: no trained MTP drafter ({MTP_WEIGHTS or 'tinyspec.drafters.mtp missing'}): skipping it")

results = {}
for prompt_name, (ids, vanilla, vstats) in continuations.items():
    t_token = (vstats.seconds - vstats.prefill_seconds) / max(vstats.target_forwards - 1, 1)  # target s/token
    for name, make in drafters.items():
        drafter = TimedDrafter(make())
        stats, trace = SpecStats(), []
        spec = list(speculative_generate(model, drafter, ids, N_NEW, k=K, stats=stats, trace=trace))
        assert spec == vanilla, f"{name} on {prompt_name}: speculative output differs from vanilla"
        results[name, prompt_name] = dict(
            alpha=stats.acceptance_rate, tpf=stats.tokens_per_forward, drafted=stats.drafted,
            c=drafter.seconds_per_draft / t_token if drafter.drafted else 0.0,
            speedup=(vstats.seconds - vstats.prefill_seconds) / (stats.seconds - stats.prefill_seconds),
            by_position=theory.acceptance_by_position(trace, K))

print(f"{'drafter':16} {'prompt':6} {'drafted':>8} {'accepted':>9} {'tokens/fwd':>11} {'c':>6} {'speedup':>8}")
for (name, prompt_name), r in results.items():
    print(f"{name:16} {prompt_name:6} {r['drafted']:8d} {r['alpha']:9.0%} {r['tpf']:11.2f} {r['c']:6.2f} "
          f"{r['speedup']:7.2f}x")
print("(every run produced exactly vanilla's tokens)")
names = list(drafters)
print(plots.chart("tokens per target forward", names,
                  {p: [results[n, p]["tpf"] for n in names] for p in PROMPTS}, png="06_tokens_per_forward.png",
                  fmt="{:.2f}"))
print(plots.chart("acceptance by draft position, code prompt (draft i is kept only if 1..i-1 were)",
                  [f"draft {i}" for i in range(1, K + 1)], {n: results[n, "code"]["by_position"] for n in names},
                  png="06_acceptance_by_position.png", fmt="{:.2f}"))
assert results["ngram", "code"]["tpf"] > 1.5, "prompt lookup shines on a code edit"
assert results["toy draft model", "code"]["alpha"] < 0.2, "random weights are not aligned"
assert results["ngram", "code"]["c"] < 0.2 and results["toy draft model", "code"]["c"] < 0.5, "both are cheap"

# %% [markdown]
# ## 3. What the numbers say
#
# * Prompt lookup is free and, on a code edit, right most of the time: several tokens per forward. On prose
#   it rarely finds a match and quietly falls back to one token per forward (no loss, no gain).
# * Early exit is aligned only when deep, and then it costs almost a whole forward per draft: k drafts
#   plus a verification cost more than k + 1 plain steps. It is slower than vanilla.
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
