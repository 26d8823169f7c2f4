# %% [markdown]
# # Lesson 3: The KV cache, and why decoding is memory-bound
#
# **Goal.** Understand the two facts speculative decoding is built on. (1) The KV cache turns "run the
# model over the whole text again" into "run it over the one new token". (2) Even one new token must read
# every weight from memory, about a gigabyte, while doing only about half a FLOP per byte read, so a forward
# over 8 tokens costs little more than a forward over 1. We measure this on this very machine: its memory
# bandwidth, its arithmetic speed, the roofline they draw, and the real forward times against it. (3) The
# same model on the GGUF's 4-to-8-bit blocks reads several times fewer bytes per token: its decode floor
# falls, but the same arithmetic meets the roofline's ridge sooner, so verifying m tokens costs relatively
# more, and a drafter must be right more often for speculation to pay.
#
# **Running time.** Measured 24 s after the one-time conversion (14 s with `TINYSPEC_QUICK=1`) on a
# 2-core machine shared with two heavy jobs (load average 3.4, `NUMBA_NUM_THREADS=1`); an idle laptop is
# faster. lessons/README.md lists every measurement (taken before section 6, which loads the quant backend too
# and times a few forwards on it, was added).
# Timings vary with the machine and with whatever else runs on it: the lesson prints
# them and asserts only what holds on any machine.

# %%
import numpy as np

from tinyspec import measure, plots
from tinyspec.adaptive import VerifyCost
from tinyspec.workshop import load_gemma, quick_mode

QUICK = quick_mode()
SEED = 3
print(f"quick mode: {QUICK}, seed: {SEED}")

model, tok = load_gemma()
cfg = model.cfg

# %% [markdown]
# ## 1. What the cache holds
#
# Attention at position t needs the keys and values of every earlier position, in every block. They never
# change once computed (a token cannot see the future), so we keep them: per block, K and V of shape
# [positions, 1 KV head, 256]. That is 2 x 18 x 256 float32 = 36 KB per position.

# %%
prompt = ("Speculative decoding lets a small drafter guess the next few tokens; the large model then checks "
          "all of the guesses in a single forward pass and keeps the longest correct prefix.")
ids = tok.encode(prompt)
cache = model.new_cache(capacity=len(ids) + 1)
logits_prefill = model.forward(ids, cache, last_only=True)  # [1, V]: the prefill fills the cache
per_pos = cache.nbytes_per_position()
print(f"prompt: {len(ids)} tokens; cache length {cache.length}; K of block 0: {cache.k[0][:cache.length].shape}")
print(f"{per_pos} bytes per position; {per_pos * len(ids) / 1e6:.2f} MB for this prompt; "
      f"{per_pos * cfg.max_position_embeddings / 1e9:.2f} GB for the full context of {cfg.max_position_embeddings}")
assert per_pos == 2 * cfg.num_layers * cfg.num_kv_heads * cfg.head_dim * 4 == 36864

# %% [markdown]
# ## 2. Cache or recompute: same logits, very different work
#
# With the cache, the next token costs a forward over 1 token. Without it, over all P + 1 tokens. The
# logits agree (to float32 rounding: the sums are done in another order).

# %%
nxt = int(np.argmax(logits_prefill[-1]))
with_cache = model.forward([nxt], cache)[0]  # [V]  1 new token
fresh = model.new_cache(len(ids) + 1)
without = model.forward(ids + [nxt], fresh)[-1]  # [V]  everything again
err = float(np.max(np.abs(with_cache - without)))
print(f"next token {tok.token_text(nxt)!r}: max |logit difference| cache vs recompute = {err:.2e}")
assert err < 1e-3 and int(np.argmax(with_cache)) == int(np.argmax(without))
t_cache = measure.forward_seconds(model, 1, context=len(ids), repeats=2 if QUICK else 3, seed=SEED)
t_none = measure.forward_seconds(model, len(ids) + 1, context=0, repeats=1 if QUICK else 2, seed=SEED)
print(f"one new token: {t_cache * 1e3:.0f} ms with the cache, {t_none * 1e3:.0f} ms recomputing all "
      f"{len(ids) + 1} tokens")
assert t_none < (len(ids) + 1) * t_cache / 2, "recomputing P + 1 tokens in one forward beats P + 1 forwards"

# %% [markdown]
# Recomputing all P + 1 tokens costs far less than P + 1 one-token forwards. That is the second fact of
# this lesson, hiding in plain sight: the cost of a forward is not proportional to the tokens in it.
#
# ## 3. Bytes read, FLOPs done
#
# A one-token forward multiplies a vector by every weight matrix: it reads every weight once, and does
# one multiply-add (2 FLOPs) per weight of 4 bytes.

# %%
wb = measure.weight_bytes(model.weights)
flops1 = measure.forward_flops(cfg, 1, context=len(ids))
print(f"weights read per forward: blocks {wb['blocks'] / 1e6:.0f} MB + LM head {wb['head'] / 1e6:.0f} MB "
      f"= {wb['total'] / 1e9:.2f} GB")
print(f"arithmetic for one token: {flops1 / 1e9:.2f} GFLOP -> {flops1 / wb['total']:.2f} FLOP per byte read")

# %% [markdown]
# ## 4. This machine's roofline
#
# Two numbers describe the machine: how fast it streams memory (bytes/s) and how fast it multiplies
# (FLOP/s). A forward over M tokens needs at least max(bytes / bandwidth, flops(M) / peak) seconds.
# Below the *ridge point* M* = peak x bytes / (flops per token x bandwidth) the memory term wins:
# more tokens per forward are nearly free.

# %%
stream_bytes = 256 << 20 if QUICK else 512 << 20
bw = measure.memory_bandwidth(stream_bytes)
peak = measure.peak_flops(768 if QUICK else 1024)
ridge = peak * wb["total"] / (flops1 * bw)
print(f"memory bandwidth {bw / 1e9:.1f} GB/s (all cores streaming {stream_bytes >> 20} MB); "
      f"matrix multiply {peak / 1e9:.1f} GFLOP/s (NumPy's BLAS)")
print(f"reading the weights once takes at least {wb['total'] / bw * 1e3:.0f} ms; "
      f"the ridge point is at M* = {ridge:.0f} tokens per forward")

# %% [markdown]
# ## 5. Measured: time for M tokens in one forward
#
# Now the real thing, with this backend's kernels: one forward over M new tokens after a short context,
# against the roofline's lower bound. Per token, the cost falls steeply with M: that is what speculative
# decoding exploits. The verifier checks k drafts in one forward over k + 1 tokens, and the ratio
# v = time(k + 1) / time(1) is the "verification cost" of lesson 7's formula.

# %%
Ms = [1, 8] if QUICK else [1, 2, 4, 8, 16]
times = measure.forward_times(model, Ms, context=32, repeats=2 if QUICK else 3, seed=SEED)  # best of the repeats
rows = [(m, times[m], measure.roofline_seconds(wb["total"], measure.forward_flops(cfg, m, 32), bw, peak))
        for m in Ms]
t1 = rows[0][1]
print(f"{'M':>3} {'forward':>10} {'per token':>10} {'v = t(M)/t(1)':>14} {'roofline bound':>15}")
for m, t, bound in rows:
    print(f"{m:>3} {t * 1e3:8.0f} ms {t / m * 1e3:8.0f} ms {t / t1:14.2f} {bound * 1e3:13.0f} ms")
print(plots.chart("milliseconds per token, by tokens per forward M", [f"M={m}" for m, _, _ in rows],
                  {"measured": [t / m * 1e3 for m, t, _ in rows], "roofline": [b / m * 1e3 for m, _, b in rows]},
                  png="03_time_per_token.png", fmt="{:.0f} ms", xlabel="tokens per forward", ylabel="ms per token"))
t8 = dict((m, t) for m, t, _ in rows)[8]
assert t8 < 8 * t1, "8 tokens in one forward must cost less than 8 forwards of one token"

# %% [markdown]
# ## 6. Fewer bytes: the GGUF's quantized blocks
#
# The float32 weights above are the GGUF's quantized blocks written out in full: Q8_0 for the embedding
# (also the LM head), Q5_0, Q4_K and Q6_K for the blocks' matrices, 32 or 256 values sharing a scale. The
# `quant` backend computes on blocks: it turns each 8 values into float32 just before multiplying them, in
# the float32 kernel's order, so its logits are bitwise the numba backend's (tests/test_quant.py checks it).
# The LM head is read in the file's own Q8_0 blocks. The layers' 4- to 6-bit values are laid out again when
# the model loads, one byte each beside their block's scale (`tinyspec/quant/blocks.py`, section 4): the same
# values, but turning 8 of them into floats takes 2 instructions instead of about 13 of shifts and masks. A
# decode forward then reads the blocks' bytes, not 4 bytes a weight, and the memory floor of decoding falls
# by the same factor.

# %%
qmodel, _ = load_gemma(backend="quant")  # maps the GGUF: nothing is converted; the layers' blocks repacked
qb = measure.weight_bytes(qmodel.weights)  # the blocks' bytes (QuantTensor.nbytes)
shrink = wb["total"] / qb["total"]
print(f"bytes read per decoded token: float32 {wb['total'] / 1e6:.0f} MB, quant blocks {qb['total'] / 1e6:.0f} MB "
      f"(LM head {wb['head'] / 1e6:.0f} MB -> {qb['head'] / 1e6:.0f} MB, layers {wb['blocks'] / 1e6:.0f} MB -> "
      f"{qb['blocks'] / 1e6:.0f} MB): {shrink:.1f}x fewer")
print(f"decode floor at {bw / 1e9:.1f} GB/s: float32 {wb['total'] / bw * 1e3:.0f} ms per token, "
      f"quant {qb['total'] / bw * 1e3:.0f} ms per token")
q_logits = qmodel.forward(ids, qmodel.new_cache(len(ids)), last_only=True)  # [1, V]
assert np.array_equal(q_logits.view(np.uint32), logits_prefill.view(np.uint32)), "same logits, bit for bit"
assert qb["total"] < wb["total"]
ridge_q = peak * qb["total"] / (flops1 * bw)
print(f"arithmetic per byte read, one token: float32 {flops1 / wb['total']:.2f} FLOP/byte, "
      f"quant {flops1 / qb['total']:.2f} FLOP/byte (the same FLOPs, fewer bytes)")
print(f"ridge point: float32 M* = {ridge:.1f}, quant M* = {ridge_q:.1f} tokens per forward")
assert ridge_q < ridge

# %% [markdown]
# The arithmetic did not shrink with the bytes: a forward over m tokens still does 2 m FLOPs per weight, and
# the quant backend adds the work of decoding every weight from its block (widen the byte, convert it, multiply
# by the scale): once for every 3 rows of x below 6 rows, once in all from 6 rows on (`tinyspec/quant/kernels.py`).
# So a forward over m rows stops being memory-bound at a smaller m: v(m) = time(m) / time(1) rises sooner
# than on float32, and while the rows are few, faster.
#
# That is bad news for speculation. Verifying k drafts pays only when the tokens a step emits,
# E(alpha, k) = 1 + alpha + ... + alpha^k, beat the step's cost v(k + 1) (lesson 7's formula with free drafts):
# for one draft, when alpha > v(2) - 1. A steeper v(m) raises that break-even acceptance and lowers the best k.
# Measured here, for a few m (the break-even rule fits its line to m = 1..17: `python bench/verify_cost.py`
# times both backends side by side):

# %%
Ms6 = [1, 2, 4, 8] if QUICK else [1, 2, 4, 8, 16]
backends = {"numba (float32)": model, "quant (blocks)": qmodel}
vt = {name: measure.forward_times(which, Ms6, context=32, repeats=2 if QUICK else 3, seed=SEED)
      for name, which in backends.items()}  # best of the repeats, one backend after the other
print(f"{'M':>3} " + " ".join(f"{name:>24}" for name in vt))
for m in Ms6:
    print(f"{m:>3} " + " ".join(f"{t[m] * 1e3:9.0f} ms, v = {t[m] / t[1]:5.2f}" for t in vt.values()))
for name, t in vt.items():
    line = VerifyCost.fit(t)  # the line the break-even rule would use
    pays = [line.break_even_alpha(k) for k in (1, 3, 7)]  # None: never
    floor = backends[name].weight_bytes() / bw
    print(f"{name}: one-token forward {t[1] * 1e3:.0f} ms, {t[1] / floor:.1f}x its floor; k drafts pay above "
          + ", ".join(f"alpha {a:.2f} (k = {k})" if a is not None else f"never (k = {k})"
                      for k, a in zip((1, 3, 7), pays)))

# %% [markdown]
# Printed, not asserted: the ratios move with the machine and its load. What the roofline predicts, to check
# against them: the quant backend's one-token forward is faster (fewer bytes) but further from its floor (its
# arithmetic no longer hides behind the memory reads); its v(m) climbs faster; so its break-even acceptances
# are higher. On small weights a drafter must be right more often for speculation to pay, and each forward it
# saves is worth fewer milliseconds. Where your numbers disagree, the load of the machine or the kernels
# (the quant ones do not prefetch the next rows, the float32 ones do) are the first suspects.
#
# ## Try this
#
# 1. Where does the time of a one-token forward go? Time `model.head(h)` alone for h of shape [1, 640]: the
#    LM head reads 671 MB, about 60 % of all the bytes. What does that mean for a drafter that ends in the
#    same head (the early-exit drafter of lesson 6)?
# 2. Run section 5 again with `model = Model(model.cfg, model.weights, backend="numpy")` (`from tinyspec.model
#    import Model`) and compare: NumPy's BLAS picks different kernels for M = 1 and M > 1 (lesson 4 shows why
#    that matters for exactness).
# 3. Extend `Ms` to 32 and 64. Where does the per-token cost stop falling? Compare with the ridge point.
# 4. Run `python bench/verify_cost.py`: v(m) for m = 1..17 on both backends, the line the break-even rule fits
#    to each, and the acceptance at which k drafts start to pay. Then `tinyspec compare --backend quant
#    --adaptive --verify-cost FIRST_EXTRA,PER_TOKEN` with the quant line it printed, and with the numba one.
# 5. Fewer bytes are not always faster. Run `python bench/backends.py --file-blocks --matrices`: the same
#    matmuls on the file's own 4- to 6-bit blocks (`open_gguf().quantized_weights(repack=False)`) and on the
#    repacked bytes. Which reads less, which finishes first, and why (count the instructions that turn 8
#    weights into floats in `tinyspec/quant/kernels.py`, `_load_q5_0` against `_load_q8_0`)?
