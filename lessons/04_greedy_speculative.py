# %% [markdown]
# # Lesson 4: Greedy speculative decoding, step by step
#
# **Goal.** Run one speculative step by hand (draft, verify, accept, roll back), then the whole loop with
# its trace, and see that the output is *identical* to plain greedy decoding while the target runs far
# fewer forward passes. Finally, see why "identical" needs batch-invariant kernels.
#
# **Running time.** Measured 36 s after the one-time conversion (22 s with `TINYSPEC_QUICK=1`) on a
# 2-core machine shared with two heavy jobs (load average 3.4, `NUMBA_NUM_THREADS=1`); an idle laptop is
# faster. lessons/README.md lists every measurement.
#
# The drafter here is prompt lookup (`NgramDrafter`): it finds the last few tokens earlier in the text and
# proposes what followed them there. It costs nothing, and on a code-editing prompt, where the answer
# copies the input, it is often right.

# %%
import numpy as np

from tinyspec.decoding import Stats, generate, prefill
from tinyspec.drafters import NgramDrafter
from tinyspec.model import Model
from tinyspec.sampling import SamplingParams
from tinyspec.show import EXAMPLE_PROMPT, print_trace
from tinyspec.speculative import SpecStats, speculative_generate_ids, verify
from tinyspec.workshop import load_gemma, quick_mode

QUICK = quick_mode()
N_NEW = 8 if QUICK else 48
K = 4
print(f"quick mode: {QUICK}; greedy decoding (no randomness, no seed); {N_NEW} new tokens; k = {K}")

model, tok = load_gemma()
ids = tok.encode(EXAMPLE_PROMPT)
print(f"the prompt ({len(ids)} tokens):\n{EXAMPLE_PROMPT}")

# %% [markdown]
# ## 1. The reference: vanilla greedy decoding, one forward per token

# %%
model.forward(ids[:4], model.new_cache())  # warm-up: load the compiled kernels before timing
vanilla_stats = Stats()
vanilla = list(generate(model, ids, N_NEW, stats=vanilla_stats))
print(f"vanilla: {len(vanilla)} tokens, {vanilla_stats.target_forwards} target forwards, "
      f"{vanilla_stats.seconds:.2f} s")
print(EXAMPLE_PROMPT.splitlines()[-1] + "\n" + tok.decode(vanilla))

# %% [markdown]
# ## 2. Speculative steps, by hand
#
# After the prefill and the first token (exactly vanilla's), the state is: `context` = prompt + first
# token, and the cache holds every context token but the last.
#
# * **Step 1, draft.** The drafter proposes up to k tokens d1..dk.
# * **Step 2, one target forward over [last, d1..dk]**: k + 1 rows of logits. Row i is the target's
#   prediction for the token after d_i (row 0: after `last`).
# * **Step 3, verify.** Keep d1, d2, ... while d_i equals the argmax of row i-1. At the first mismatch, the
#   target's own argmax replaces the draft (a *correction*); if all k match, row k gives one more token
#   for free (a *bonus*). So every step emits between 1 and k + 1 tokens.
# * **Step 4, roll back.** The cache now holds rows for rejected drafts too: truncate it to the accepted
#   length. Nothing is erased; those rows are overwritten by the next step.
#
# A small prompt where prompt lookup is sometimes wrong, so that we see all three outcomes:

# %%
small = "def add(a, b):\n    return a + b\n\ndef sub(a, b):\n    return"
small_ids = tok.encode(small)
print(small)
cache = model.new_cache(len(small_ids) + 40)
logits, _ = prefill(model, small_ids, cache)  # [V]
context = list(small_ids) + [int(np.argmax(logits))]
drafter = NgramDrafter(max_n=3)
seen = set()
for step in range(8):
    position = len(context)  # absolute position of d1
    drafted = drafter.propose(context, K).tokens  # Step 1
    print(f"\n-- step {step + 1}: cache holds {cache.length} positions, context {len(context)} tokens, "
          f"last = {tok.token_text(context[-1])!r}")
    print(f"Step 1  drafted {len(drafted)}: {[tok.token_text(t) for t in drafted]}")
    rows = model.forward([context[-1]] + drafted, cache)  # [n+1, V]  Step 2
    print(f"Step 2  one forward over {len(drafted) + 1} tokens -> logits {rows.shape}; cache now {cache.length}")
    targets = [int(np.argmax(r)) for r in rows]
    n_ok = 0
    while n_ok < len(drafted) and drafted[n_ok] == targets[n_ok]:
        n_ok += 1
    for i, d in enumerate(drafted):
        verdict = "accept" if i < n_ok else ("REJECT" if i == n_ok else "(not checked)")
        print(f"        d{i + 1} = {tok.token_text(d)!r:12} target's argmax {tok.token_text(targets[i])!r:12} "
              f"{verdict}")
    final = targets[n_ok]
    kind = "bonus" if n_ok == len(drafted) else "correction"
    if drafted:
        print(f"Step 3  {n_ok} accepted + {kind} {tok.token_text(final)!r}: {n_ok + 1} new token(s) from 1 forward")
    else:
        print(f"Step 3  nothing to check (no earlier match): the target's own token {tok.token_text(final)!r}")
    # the package's verifier agrees with our hand-rolled one
    verdict = verify(rows, drafted, None, SamplingParams(), "greedy", None, position)
    assert (verdict.accepted, verdict.token, verdict.kind) == (n_ok, final, kind)
    dropped = cache.length - (position + n_ok)  # rows of rejected or unchecked drafts
    cache.truncate(position + n_ok)  # Step 4: keep `last` and the accepted drafts
    print(f"Step 4  cache rolled back to {cache.length} positions ({dropped} draft rows dropped)")
    context += drafted[:n_ok] + [final]
    drafter.rollback(len(context) - 1)
    seen.add("full" if drafted and n_ok == len(drafted) else "rejected" if drafted else "none")
    if {"full", "rejected"} <= seen:
        break
print("\n" + small + tok.decode(context[len(small_ids):]))

# %% [markdown]
# ## 3. The whole loop, with its trace
#
# `speculative_generate` runs those steps until `N_NEW` tokens. Each trace line: how many drafts were kept,
# the final token, and every draft marked `+` (accepted), `x` (rejected) or `.` (never checked).

# %%
trace, spec_stats = [], SpecStats()
spec = speculative_generate_ids(model, NgramDrafter(max_n=3), ids, N_NEW, k=K, trace=trace, stats=spec_stats)
print_trace(trace[:12], tok)  # the same lines as `tinyspec generate --trace`
if len(trace) > 12:
    print(f"... {len(trace) - 12} more steps")
marked = tok.decode(spec[:1])
for step in trace:  # tokens that came from accepted drafts in [brackets]
    marked += "[" + tok.decode(step.emitted[: step.accepted]) + "]" if step.accepted else ""
    marked += tok.decode(step.emitted[step.accepted:])
print("\n" + marked.replace("[]", ""))

# %% [markdown]
# ## 4. Identical, and cheaper

# %%
print(f"vanilla:     {len(vanilla)} tokens, {vanilla_stats.target_forwards:3} target forwards, "
      f"{vanilla_stats.seconds:.2f} s")
print(f"speculative: {len(spec)} tokens, {spec_stats.target_forwards:3} target forwards, {spec_stats.seconds:.2f} s; "
      f"{spec_stats.accepted} of {spec_stats.drafted} drafts accepted ({spec_stats.acceptance_rate:.0%}), "
      f"{spec_stats.tokens_per_forward:.2f} tokens per forward")
same = sum(a == b for a, b in zip(spec, vanilla))
print(f"identical output: {'yes' if spec == vanilla else 'NO'} ({same} of {len(vanilla)} tokens)")
assert spec == vanilla, "greedy speculative decoding must reproduce greedy decoding token for token"
assert spec_stats.target_forwards < vanilla_stats.target_forwards

# %% [markdown]
# ## 5. Why "identical" needs batch-invariant kernels
#
# Vanilla decoding scores each token in a forward of 1 row; verification scores it inside a forward of
# k + 1 rows. If the two differ in the last bit, a near-tie between two tokens can flip and the outputs
# part ways. NumPy's BLAS picks a different kernel for 1 row than for several; tinyspec's numba kernels
# sum every output element in a fixed order whatever the batch. Compare the logits of the same token
# computed alone and as the last row of a 5-row forward:

# %%
def alone_and_in_batch(m, context=ids[:16], new=ids[16:21]):
    c = m.new_cache(len(context) + len(new))
    m.forward(context, c, last_only=True)
    batch = m.forward(new, c)[-1]  # [V]  5 rows, the 5th is what we compare
    c.truncate(len(context) + len(new) - 1)
    alone = m.forward(new[-1:], c)[0]  # [V]  the same token, alone
    return float(np.max(np.abs(batch - alone))), bool(np.array_equal(batch, alone))


numpy_model = Model(model.cfg, model.weights, backend="numpy")  # same weights, the reference kernels
for name, m in [("numpy (BLAS)", numpy_model), (model.backend, model)]:
    diff, equal = alone_and_in_batch(m)
    print(f"backend {name:13}: max |logit(alone) - logit(in batch)| = {diff:.2e}  bitwise equal: {equal}")
if model.backend == "numba":
    assert alone_and_in_batch(model)[1], "the numba kernels must be batch-invariant"

# %% [markdown]
# ## Try this
#
# 1. Change `K` to 1, 8 and 16. Count target forwards and time each run. Which k is fastest here, and why
#    not the largest? (Lesson 7 answers with a formula.)
# 2. Replace the prompt by `"Once upon a time"`. What happens to the acceptance rate of prompt lookup when
#    the continuation copies nothing?
# 3. From the command line: `tinyspec generate "$(python -c 'from tinyspec.show import EXAMPLE_PROMPT as
#    p; print(p)')" --drafter ngram --k 4 --trace`.
