"""The NumPy Gemma 3 forward on tiny random models: against a float64 evaluation of the same equations, written
independently below (whole sequence at once, no cache, per-head loops, RoPE as a complex rotation), and
KV-cache equivalences (one call, token by token, arbitrary chunks, roll back and re-append)."""

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyspec.config import tiny_config
from tinyspec.model import Model, embed, forward_hidden, gelu_tanh, rope
from tinyspec.weights import random_weights

BACKENDS = ["numpy", "numba"]


# --- an independent float64 reference ----------------------------------------------------------------------

def ref_rms(x, scale, eps):
    return x / np.sqrt((x ** 2).mean(-1, keepdims=True) + eps) * scale


def ref_rope(x, pos, theta):  # x [T, hd] -> [T, hd]: pair (i, i + hd/2) as one complex number, rotated
    hd = x.shape[-1]
    z = x[:, : hd // 2] + 1j * x[:, hd // 2:]
    freqs = 1.0 / theta ** (np.arange(hd // 2) * 2.0 / hd)
    z = z * np.exp(1j * pos[:, None] * freqs[None, :])
    return np.concatenate([z.real, z.imag], axis=-1)


def ref_forward(tokens, w, cfg):  # [T] -> logits [T, V], float64
    f = lambda a: np.asarray(a, np.float64)
    T = len(tokens)
    pos = np.arange(T, dtype=np.float64)
    x = f(w.embed_tokens)[tokens] * np.sqrt(cfg.hidden_size)
    for i, L in enumerate(w.layers):
        h = ref_rms(x, f(L.input_layernorm), cfg.rms_norm_eps)
        q, k, v = h @ f(L.q_proj).T, h @ f(L.k_proj).T, h @ f(L.v_proj).T
        heads = []
        for hq in range(cfg.num_heads):
            hk = hq // (cfg.num_heads // cfg.num_kv_heads)
            qh = q[:, hq * cfg.head_dim:(hq + 1) * cfg.head_dim]
            kh = k[:, hk * cfg.head_dim:(hk + 1) * cfg.head_dim]
            vh = v[:, hk * cfg.head_dim:(hk + 1) * cfg.head_dim]
            qh = ref_rope(ref_rms(qh, f(L.q_norm), cfg.rms_norm_eps), pos, cfg.rope_theta(i))
            kh = ref_rope(ref_rms(kh, f(L.k_norm), cfg.rms_norm_eps), pos, cfg.rope_theta(i))
            scores = qh @ kh.T / np.sqrt(cfg.query_pre_attn_scalar)
            allowed = np.tril(np.ones((T, T), bool))
            if not cfg.is_global(i):
                allowed &= ~np.tril(np.ones((T, T), bool), -cfg.sliding_window)  # j <= i - window is too far
            scores = np.where(allowed, scores, -np.inf)
            probs = np.exp(scores - scores.max(-1, keepdims=True))
            heads.append(probs / probs.sum(-1, keepdims=True) @ vh)
        a = np.concatenate(heads, axis=-1) @ f(L.o_proj).T
        x = x + ref_rms(a, f(L.post_attention_layernorm), cfg.rms_norm_eps)
        h = ref_rms(x, f(L.pre_feedforward_layernorm), cfg.rms_norm_eps)
        g = h @ f(L.gate_proj).T
        gelu = 0.5 * g * (1 + np.tanh(np.sqrt(2 / np.pi) * (g + 0.044715 * g ** 3)))
        x = x + ref_rms((gelu * (h @ f(L.up_proj).T)) @ f(L.down_proj).T, f(L.post_feedforward_layernorm),
                        cfg.rms_norm_eps)
    return ref_rms(x, f(w.norm), cfg.rms_norm_eps) @ f(w.embed_tokens).T


def tiny_model(seed=0, backend="numpy", **overrides):
    cfg = tiny_config(**overrides)
    return Model(cfg, random_weights(cfg, seed=seed), backend=backend)


def tokens_strategy(max_len):
    return st.lists(st.integers(0, 31), min_size=1, max_size=max_len)


# --- the equations --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), tokens=tokens_strategy(20))
def test_forward_matches_float64_reference(backend, seed, tokens):
    model = tiny_model(seed, backend)
    logits = model.forward(tokens, model.new_cache())
    ref = ref_forward(np.array(tokens), model.weights, model.cfg)
    assert logits.dtype == np.float32 and logits.shape == (len(tokens), model.cfg.vocab_size)
    np.testing.assert_allclose(logits, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_sliding_window_changes_local_layers_only_past_the_window():
    """With window 4, a token 5 positions back is invisible to local layers but not to the global one."""
    model = tiny_model(3, num_layers=3, sliding_window=4, sliding_window_pattern=3)
    a, b = [2, 9, 9, 9, 9, 9, 9], [2, 5, 9, 9, 9, 9, 9]  # differ at position 1
    la, lb = model.forward(a, model.new_cache()), model.forward(b, model.new_cache())
    assert not np.allclose(la[-1], lb[-1])  # the global layer still sees position 1
    # one local block: (with two, position 5 would see position 4's output, which saw position 1)
    all_local = tiny_model(3, num_layers=1, sliding_window=4, sliding_window_pattern=3)
    la, lb = all_local.forward(a, all_local.new_cache()), all_local.forward(b, all_local.new_cache())
    assert not np.allclose(la[4], lb[4])  # position 4 sees position 1 (4 - 1 < 4) ...
    np.testing.assert_array_equal(la[5:], lb[5:])  # ... positions 5, 6 do not, and nothing leaks through


def test_rope_preserves_norms_and_is_relative():
    rng = np.random.default_rng(0)
    q = rng.standard_normal((1, 1, 8)).astype(np.float32)
    k = rng.standard_normal((1, 1, 8)).astype(np.float32)
    dot = lambda p, s: float((rope(q, np.array([p]), 100.0) * rope(k, np.array([s]), 100.0)).sum())
    np.testing.assert_allclose(np.linalg.norm(rope(q, np.array([7]), 100.0)), np.linalg.norm(q), rtol=1e-6)
    np.testing.assert_allclose(dot(10, 3), dot(27, 20), rtol=1e-5)  # depends only on the distance 7


def test_gelu_tanh_known_values():
    x = np.array([0.0, 1.0, -1.0, 3.0], np.float32)
    # 0.5 x (1 + tanh(sqrt(2/pi)(x + 0.044715 x^3))) evaluated by hand: 0, 0.841192, -0.158808, 2.996363
    np.testing.assert_allclose(gelu_tanh(x), [0.0, 0.8411920, -0.1588080, 2.9963627], rtol=1e-6, atol=1e-7)


# --- several sequences in one forward ------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_one_forward_over_several_caches_equals_a_forward_per_sequence(backend):
    """forward_hidden over B caches of different lengths (the MTP data's batch): each sequence's rows are what
    Model.hidden gives that sequence alone, written to its own cache; bitwise with the batch-invariant kernels."""
    model = tiny_model(4, backend)
    contexts, new = [[2, 5], [2, 9, 10, 11], [2]], np.array([[3, 4], [5, 6], [7, 8]])  # B = 3 sequences, 2 new each
    caches, alone, own_caches = [], [], []
    for context, tokens in zip(contexts, new):
        caches.append(model.new_cache(1))
        model.hidden(context, caches[-1])
        own_caches.append(model.new_cache(1))
        model.hidden(context, own_caches[-1])
        alone.append(model.hidden(tokens, own_caches[-1]))  # [2, d]
    residuals = []
    h = forward_hidden(new.reshape(-1), model.weights, model.cfg, caches, model.ops, residuals=residuals)  # [6, d]
    assert h.shape == (6, model.cfg.hidden_size) and len(residuals) == model.cfg.num_layers
    assert np.array_equal(residuals[0], embed(new.reshape(-1), model.weights.embed_tokens, model.cfg.hidden_size))
    for b, (cache, own) in enumerate(zip(caches, own_caches)):
        assert cache.length == own.length == len(contexts[b]) + 2
        if backend == "numba":
            np.testing.assert_array_equal(h[2 * b: 2 * b + 2], alone[b])
            for i in range(model.cfg.num_layers):
                np.testing.assert_array_equal(cache.k[i][:cache.length], own.k[i][:own.length])
                np.testing.assert_array_equal(cache.v[i][:cache.length], own.v[i][:own.length])
        np.testing.assert_allclose(h[2 * b: 2 * b + 2], alone[b], rtol=1e-5, atol=1e-5)
        for i in range(model.cfg.num_layers):
            np.testing.assert_allclose(cache.k[i][:cache.length], own.k[i][:own.length], rtol=1e-5, atol=1e-5)


def test_the_numpy_backend_never_imports_numba():
    """A learner reading and running backend="numpy" needs NumPy only: tinyspec.ops and tinyspec.model import no
    Numba (get_ops("numba") imports tinyspec.fast when asked for it)."""
    code = ("import sys; from tinyspec.config import tiny_config; from tinyspec.model import Model; "
            "from tinyspec.weights import random_weights; cfg = tiny_config(); "
            "model = Model(cfg, random_weights(cfg), backend='numpy'); model.forward([2, 7], model.new_cache()); "
            "numba = sorted(m for m in sys.modules if m.startswith(('numba', 'tinyspec.fast'))); "
            "assert not numba, numba")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


# --- the KV cache ----------------------------------------------------------------------------------------------

def chunked(model, tokens, sizes):
    cache, out, i = model.new_cache(capacity=1), [], 0
    for n in sizes:
        if i >= len(tokens):
            break
        out.append(model.forward(tokens[i:i + n], cache))
        i += n
    if i < len(tokens):
        out.append(model.forward(tokens[i:], cache))
    assert cache.length == len(tokens)
    return np.concatenate(out)


@settings(max_examples=30, deadline=None)
@given(tokens=tokens_strategy(24), sizes=st.lists(st.integers(1, 8), min_size=1, max_size=24))
def test_any_chunking_gives_the_same_logits(tokens, sizes):
    model = tiny_model(1, "numpy")
    whole = model.forward(tokens, model.new_cache())
    np.testing.assert_allclose(chunked(model, tokens, sizes), whole, rtol=1e-5, atol=1e-5)


@settings(max_examples=30, deadline=None)
@given(tokens=tokens_strategy(24), sizes=st.lists(st.integers(1, 16), min_size=1, max_size=24))
def test_numba_chunking_is_bitwise_identical(tokens, sizes):
    """With the batch-invariant kernels a token's logits do not depend on how the sequence was chunked."""
    model = tiny_model(1, "numba")
    one_by_one = chunked(model, tokens, [1] * len(tokens))
    np.testing.assert_array_equal(chunked(model, tokens, sizes), one_by_one)


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_truncate_then_reappend(backend, data):
    """Roll back to n positions, feed other tokens, then the originals again: same cache and logits."""
    model = tiny_model(2, backend)
    tokens = data.draw(tokens_strategy(16), label="tokens")
    n = data.draw(st.integers(0, len(tokens) - 1), label="keep")
    junk = data.draw(tokens_strategy(8), label="junk")
    cache = model.new_cache(capacity=2)
    first = model.forward(tokens, cache)
    k_before = [k[: len(tokens)].copy() for k in cache.k]
    cache.truncate(n)
    model.forward(junk, cache)
    cache.truncate(n)
    again = model.forward(tokens[n:], cache)
    if backend == "numba":  # batch-invariant kernels: bitwise the same logits and cache
        np.testing.assert_array_equal(again, first[n:])
        for kb, k in zip(k_before, cache.k):
            np.testing.assert_array_equal(k[: len(tokens)], kb)
    np.testing.assert_allclose(again, first[n:], rtol=1e-5, atol=1e-5)
    for kb, k in zip(k_before, cache.k):
        np.testing.assert_allclose(k[: len(tokens)], kb, rtol=1e-5, atol=1e-5)


def test_cache_truncate_rejects_growing():
    model = tiny_model()
    cache = model.new_cache()
    model.forward([1, 2, 3], cache)
    with pytest.raises(ValueError, match="cannot truncate"):
        cache.truncate(4)


def test_forward_rejects_bad_tokens_and_context_overflow():
    model = tiny_model()
    with pytest.raises(ValueError, match="token ids"):
        model.forward([40], model.new_cache())
    with pytest.raises(ValueError, match="non-empty"):
        model.forward([], model.new_cache())
    with pytest.raises(ValueError, match="context length"):
        model.forward([1] * 65, model.new_cache())
