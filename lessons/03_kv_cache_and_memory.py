# %% [markdown]
# # Lesson 3: The KV cache, and why decoding is memory-bound
#
# **Goal.** Understand the two facts speculative decoding is built on. (1) The KV cache turns "run the
# model over the whole text again" into "run it over the one new token". (2) Even one new token must read
# every weight from memory, about a gigabyte, while doing only about half a FLOP per byte read, so a forward
# over 8 tokens costs little more than a forward over 1. We measure this on this very machine: its memory
# bandwidth, its arithmetic speed, the roofline they draw, and the real forward times against it.
#
# **Running time.** Measured 24 s after the one-time conversion (14 s with `TINYSPEC_QUICK=1`) on a
# 2-core machine shared with two heavy jobs (load average 3.4, `NUMBA_NUM_THREADS=1`); an idle laptop is
# faster. lessons/README.md lists every measurement.
# Timings vary with the machine and with whatever else runs on it: the lesson prints
# them and asserts only what holds on any machine.

# %%
import numpy as np

from tinyspec import measure, plots
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
# ## Try this
#
# 1. Where does the time of a one-token forward go? Time `model.head(h)` alone for h of shape [1, 640]: the
#    LM head reads 671 MB, about 60 % of all the bytes. What does that mean for a drafter that ends in the
#    same head (the early-exit drafter of lesson 6)?
# 2. Run section 5 again with `model = Model(model.cfg, model.weights, backend="numpy")` (`from tinyspec.model
#    import Model`) and compare: NumPy's BLAS picks different kernels for M = 1 and M > 1 (lesson 4 shows why
#    that matters for exactness).
# 3. Extend `Ms` to 32 and 64. Where does the per-token cost stop falling? Compare with the ridge point.
