# %% [markdown]
# # Lesson 2: Inside one forward pass
#
# **Goal.** Compute Gemma 3's forward pass by hand, one step at a time (embeddings, RMSNorm, the q/k/v
# projections, QK-norm, RoPE, grouped-query attention with a causal and a sliding-window mask, GeGLU, the
# tied LM head), and check every step against `tinyspec.model`. At the end our hand-written 18 blocks give
# the same logits as the package, to a stated tolerance.
#
# **Running time.** Measured 17 s after the one-time conversion (16 s with `TINYSPEC_QUICK=1`) on a
# 2-core machine shared with two heavy jobs (load average 3.4, `NUMBA_NUM_THREADS=1`); an idle laptop is
# faster. lessons/README.md lists every measurement.
# Run it with `python lessons/02_forward_pass.py`, or open it as a notebook.
#
# Read `tinyspec/model.py` beside it: every function there is one cell here. The hand versions below are
# written differently on purpose (per-head loops, RoPE as complex rotation, explicit masks), so that
# agreement means something.

# %%
import time

import numpy as np

from tinyspec import model as M
from tinyspec.config import tiny_config
from tinyspec.model import Model
from tinyspec.weights import random_weights
from tinyspec.workshop import load_gemma, quick_mode

QUICK = quick_mode()
SEED = 7
print(f"quick mode: {QUICK}, seed: {SEED}")

model, tok = load_gemma()
cfg, w = model.cfg, model.weights
print(f"d = {cfg.hidden_size}, {cfg.num_layers} blocks, {cfg.num_heads} query heads sharing {cfg.num_kv_heads} "
      f"key/value head, head dim {cfg.head_dim}, MLP width {cfg.intermediate_size}, vocabulary {cfg.vocab_size}")


def close(name, mine, theirs, tol):
    """Print and assert max |mine - theirs| <= tol * max |theirs|."""
    err = float(np.max(np.abs(np.asarray(mine, np.float64) - np.asarray(theirs, np.float64))))
    scale = float(np.max(np.abs(theirs)))
    print(f"  check {name:34} shape {str(np.shape(mine)):15} max |diff| {err:.2e}  (of max |value| {scale:.3g})")
    assert err <= tol * scale, f"{name}: hand computation differs from tinyspec.model by {err}"


prompt = "The capital of France is"
ids = np.array(tok.encode(prompt))  # [T]
T = len(ids)
print(f"prompt {prompt!r}: {T} tokens {ids.tolist()}")

# %% [markdown]
# ## 1. Embeddings: x = E[tokens] * sqrt(d)
#
# Row `id` of the embedding matrix E [V, d] is the token's vector. Gemma multiplies it by sqrt(d) (25.3)
# so that its size matches the residual stream's.

# %%
x = w.embed_tokens[ids] * np.float32(np.sqrt(cfg.hidden_size))  # [T, d]
close("embed", x, M.embed(ids, w.embed_tokens, cfg.hidden_size), 0)

# %% [markdown]
# ## 2. RMSNorm: y = x / sqrt(mean(x^2) + eps) * scale
#
# Every vector is rescaled to unit root-mean-square, then multiplied by a learned scale per dimension.
# (Gemma's checkpoints store w with scale = 1 + w; the GGUF stores 1 + w already added.) Gemma 3 has four
# per block: before and after attention, before and after the MLP.

# %%
def rms_norm(x, scale, eps=cfg.rms_norm_eps):  # [..., n] -> [..., n]
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + np.float32(eps)) * scale


layer = w.layers[0]
h = rms_norm(x, layer.input_layernorm)  # [T, d]
close("input RMSNorm of block 0", h, model.ops.rms_norm(x, layer.input_layernorm, cfg.rms_norm_eps), 1e-6)

# %% [markdown]
# ## 3. Queries, keys, values, and QK-norm
#
# Three projections: q has 4 heads of 256, k and v one head each (grouped-query attention: the 4 query
# heads share one key/value head, so the KV cache is 4x smaller). Gemma 3 then RMS-normalises every q and k
# head on its own ("QK-norm"), which keeps attention logits in range.

# %%
q = (h @ layer.q_proj.T).reshape(T, cfg.num_heads, cfg.head_dim)  # [T, H, hd]
k = (h @ layer.k_proj.T).reshape(T, cfg.num_kv_heads, cfg.head_dim)  # [T, Hkv, hd]
v = (h @ layer.v_proj.T).reshape(T, cfg.num_kv_heads, cfg.head_dim)  # [T, Hkv, hd]
q = rms_norm(q, layer.q_norm)  # [T, H, hd]  each head normalised on its own
k = rms_norm(k, layer.k_norm)  # [T, Hkv, hd]
print(f"  q {q.shape}, k {k.shape}, v {v.shape}")

# %% [markdown]
# ## 4. RoPE: rotate each pair of dimensions by an angle proportional to the position
#
# Dimensions i and i + hd/2 form a pair, read as the complex number z = a + ib, and position m rotates it:
# z * exp(i m theta^(-2i/hd)). Then q_m . k_n depends only on m - n: attention sees *relative* positions.
# Gemma 3's local (sliding-window) layers use theta = 10,000, its global layers theta = 1,000,000.

# %%
def rope_complex(x, positions, theta):  # [T, heads, hd] -> [T, heads, hd]
    half = x.shape[-1] // 2
    z = x[..., :half].astype(np.float64) + 1j * x[..., half:]  # [T, heads, hd/2] complex
    freq = theta ** (-np.arange(half) * 2.0 / x.shape[-1])  # [hd/2]
    z = z * np.exp(1j * positions[:, None, None] * freq)  # rotate
    return np.concatenate([z.real, z.imag], axis=-1).astype(np.float32)


pos = np.arange(T)
theta = cfg.rope_theta(0)
print(f"  block 0 is {'global' if cfg.is_global(0) else 'local'}: theta = {theta:g}")
close("RoPE of q", rope_complex(q, pos, theta), M.rope(q, pos, theta), 1e-5)
q, k = rope_complex(q, pos, theta), rope_complex(k, pos, theta)
# relative: shifting both positions by 100 leaves the score unchanged
q0, k0 = (h @ layer.q_proj.T)[:1, None, : cfg.head_dim], (h @ layer.k_proj.T)[:1, None, :]
s1 = float((rope_complex(q0, np.array([5]), theta) * rope_complex(k0, np.array([2]), theta)).sum())
s2 = float((rope_complex(q0, np.array([105]), theta) * rope_complex(k0, np.array([102]), theta)).sum())
print(f"  q at 5 . k at 2 = {s1:.4f};  q at 105 . k at 102 = {s2:.4f}  (same distance, same score)")
assert abs(s1 - s2) < 1e-3 * abs(s1)

# %% [markdown]
# ## 5. Attention with a causal mask, and the sliding window
#
# Each query head scores every key: s = q . k * 256^-0.5, masked so that position i sees only positions
# j <= i (causal) and, on local layers, only the last 512 of them (j > i - 512). Softmax over j, then a
# weighted sum of the values. The window is invisible on a 6-token prompt, so here it is on a tiny
# window of 4, over 8 positions (1 = may attend):

# %%
def attention_mask(T, window):  # -> [T, T] bool
    i, j = np.arange(T)[:, None], np.arange(T)[None, :]
    allowed = j <= i
    if window:
        allowed &= j > i - window
    return allowed


print("  causal + sliding window 4, 8 positions:")
for row in attention_mask(8, 4).astype(int):
    print("   ", " ".join(map(str, row)))


def attention(q, k, v, window, scale):  # [T, H, hd], [T, Hkv, hd] x2 -> [T, H, hd]
    allowed = attention_mask(len(q), window)  # [T, T]
    out = np.zeros_like(q)
    for head in range(q.shape[1]):
        kv = head // (q.shape[1] // k.shape[1])  # the key/value head this query head shares
        s = (q[:, head] @ k[:, kv].T) * np.float32(scale)  # [T, T]
        s = np.where(allowed, s, -np.inf)
        a = np.exp(s - s.max(axis=-1, keepdims=True))
        out[:, head] = (a / a.sum(axis=-1, keepdims=True)) @ v[:, kv]  # [T, hd]
    return out


att = attention(q, k, v, cfg.window(0), cfg.query_scale)  # [T, H, hd]
a_out = att.reshape(T, -1) @ layer.o_proj.T  # [T, d]
cache = model.new_cache(T)
close("attention block 0 (q..o_proj)", a_out, M.attention_block(h, layer, 0, cache, 0, cfg, model.ops), 1e-4)

# %% [markdown]
# ## 6. GeGLU: down( gelu_tanh(gate(h)) * up(h) )
#
# The MLP widens to 2048 twice, gates one copy with GELU (tanh approximation) and multiplies.

# %%
def gelu(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


x1 = x + rms_norm(a_out, layer.post_attention_layernorm)  # [T, d]  residual
h2 = rms_norm(x1, layer.pre_feedforward_layernorm)  # [T, d]
m_out = (gelu(h2 @ layer.gate_proj.T) * (h2 @ layer.up_proj.T)) @ layer.down_proj.T  # [T, d]
close("GeGLU MLP of block 0", m_out, M.mlp(h2, layer, model.ops), 1e-4)
x_block0 = x1 + rms_norm(m_out, layer.post_feedforward_layernorm)  # [T, d]
close("whole block 0", x_block0, M.block(x, layer, 0, model.new_cache(T), 0, cfg, model.ops), 1e-4)

# %% [markdown]
# ## 7. All 18 blocks, the final norm and the tied head
#
# The same block 18 times (blocks 5, 11 and 17 global, the others local), a final RMSNorm, and logits
# h @ E.T: the output layer *is* the embedding matrix (tied), 262,144 x 640 float32 = 671 MB, the largest
# single read of every forward (lesson 3).

# %%
def hand_block(x, i, cfg, w):  # [T, d] -> [T, d]
    L, T = w.layers[i], len(x)
    pos = np.arange(T)
    h = rms_norm(x, L.input_layernorm, cfg.rms_norm_eps)
    q = rms_norm((h @ L.q_proj.T).reshape(T, cfg.num_heads, cfg.head_dim), L.q_norm, cfg.rms_norm_eps)
    k = rms_norm((h @ L.k_proj.T).reshape(T, cfg.num_kv_heads, cfg.head_dim), L.k_norm, cfg.rms_norm_eps)
    v = (h @ L.v_proj.T).reshape(T, cfg.num_kv_heads, cfg.head_dim)
    q, k = rope_complex(q, pos, cfg.rope_theta(i)), rope_complex(k, pos, cfg.rope_theta(i))
    a = attention(q, k, v, cfg.window(i), cfg.query_scale).reshape(T, -1) @ L.o_proj.T
    x = x + rms_norm(a, L.post_attention_layernorm, cfg.rms_norm_eps)
    h = rms_norm(x, L.pre_feedforward_layernorm, cfg.rms_norm_eps)
    m = (gelu(h @ L.gate_proj.T) * (h @ L.up_proj.T)) @ L.down_proj.T
    return x + rms_norm(m, L.post_feedforward_layernorm, cfg.rms_norm_eps)


def hand_forward(ids, cfg, w):  # [T] -> [T, V]
    x = w.embed_tokens[ids] * np.float32(np.sqrt(cfg.hidden_size))
    for i in range(cfg.num_layers):
        x = hand_block(x, i, cfg, w)
    return rms_norm(x, w.norm, cfg.rms_norm_eps) @ w.embed_tokens.T


t0 = time.perf_counter()
mine = hand_forward(ids, cfg, w)  # [T, V]
t_hand = time.perf_counter() - t0
theirs = model.forward(ids, model.new_cache(T))  # [T, V]
print(f"  hand forward over {T} tokens: {t_hand:.2f} s")
# float32 sums in a different order differ in the last bits; 18 blocks amplify that to ~1e-5 of the logits
close("logits, all 18 blocks + head", mine, theirs, 1e-4)
assert np.array_equal(mine.argmax(-1), theirs.argmax(-1)), "same top token at every position"
top = np.argsort(-mine[-1])[:3]
print("  next token:", ", ".join(f"{tok.token_text(int(i))!r} (logit {mine[-1, i]:.2f})" for i in top))

# %% [markdown]
# ## 8. The sliding window, for real: a tiny Gemma on a longer sequence
#
# The same hand code runs any Gemma-3-shaped config. On `tiny_config()` (3 blocks, window 4, the last one
# global) a 16-token sequence goes well past the window, so the masks of section 5 matter.

# %%
tcfg = tiny_config()
tiny = Model(tcfg, random_weights(tcfg, seed=SEED), backend=model.backend)
seq = np.random.default_rng(SEED).integers(0, tcfg.vocab_size, size=8 if QUICK else 16)
close("tiny model, window 4", hand_forward(seq, tcfg, tiny.weights), tiny.forward(seq, tiny.new_cache()), 1e-4)

# %% [markdown]
# ## Try this
#
# 1. Drop QK-norm from `hand_block` (skip the two `rms_norm` calls on q and k). How far do the logits move?
#    Does the top token change?
# 2. Make every block global (`window` 0 everywhere) on the tiny model in section 8: which positions'
#    logits change, and why only those?
# 3. Forget the sqrt(d) in the embedding. Which part of the network would have to compensate, and why can't
#    the RMSNorm after the embedding undo it? (Hint: the residual stream.)
