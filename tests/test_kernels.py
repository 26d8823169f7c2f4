"""The kernels against float64 references, and the property speculative decoding rests on: batch invariance.

Accuracy is measured per output row, relative to the size of what was summed, because a dot product that
cancels to ~0 has no meaningful relative error of its own:
    matmul     max_n |out[m, n] - ref[m, n]| / max_n sum_k |x[m, k] W[n, k]|
    attention  max_d |out[m, h, d] - ref[m, h, d]| / max |v| over the keys query (m, h) sees
    rms_norm   max_d |out[r, d] - ref[r, d]| / max_d |ref[r, d]|
and must stay below 1e-5 (float32 carries ~6e-8 per operation).

Batch invariance is checked bitwise (np.array_equal): a row computed alone equals the same row computed in a
batch of up to 16 (matmul: up to 64) rows whatever the other rows hold, and at every row count a verification
forward can have (1 .. MAX_K + 1) at Gemma 3 270M's shapes.

Values come from NumPy generators seeded by Hypothesis, so a failure prints the seed that reproduces it.
"""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tinyspec.fast import kernels
from tinyspec.fast.kernels import attention_numba, matmul_numba, rms_norm_numba, rotate_numba
from tinyspec.ops import attention as attention_numpy, get_ops, matmul as matmul_numpy, rms_norm as rms_norm_numpy
from tinyspec.ops import rotate as rotate_numpy

TOL = 1e-5
FAST = settings(deadline=None, max_examples=40, derandomize=True)  # the same examples every run
seeds = st.integers(0, 2**32 - 1)
ks = st.one_of(st.integers(1, 300), st.sampled_from([128, 256, 640, 1024]))  # K: odd sizes and Gemma's


@pytest.fixture(scope="module", autouse=True)
def compiled():
    kernels.warmup()  # compile once, so Hypothesis does not time the compiler


def randn(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def magnitude(rng):
    return float(10.0 ** rng.uniform(-3, 3))  # values from ~1e-3 to ~1e3


# float64 references, written independently of the kernels ----------------------------------------------

def matmul_error(out, x, W):  # per row: max |err| / max sum |x w|
    ref = x.astype(np.float64) @ W.astype(np.float64).T  # [M, N]
    size = np.abs(x.astype(np.float64)) @ np.abs(W.astype(np.float64)).T  # [M, N]
    return np.max(np.abs(out - ref), axis=1) / np.maximum(np.max(size, axis=1), 1e-300)  # [M]


def attention_ref(q, k_cache, v_cache, start, window, scale):  # float64 loops, one query and head at a time
    M, Hq, D = q.shape
    group = Hq // k_cache.shape[1]
    out = np.zeros((M, Hq, D))
    vmax = np.zeros((M, Hq))
    for m in range(M):
        pos = start + m
        lo = max(0, pos - window + 1) if window > 0 else 0
        for h in range(Hq):
            k = k_cache[lo:pos + 1, h // group].astype(np.float64)  # [n, D]
            v = v_cache[lo:pos + 1, h // group].astype(np.float64)  # [n, D]
            s = k @ q[m, h].astype(np.float64) * scale  # [n]
            p = np.exp(s - s.max())
            out[m, h] = p @ v / p.sum()
            vmax[m, h] = np.abs(v).max()
    return out, vmax


def attention_error(out, q, k_cache, v_cache, start, window, scale):  # [M, Hq]
    ref, vmax = attention_ref(q, k_cache, v_cache, start, window, scale)
    return np.max(np.abs(out - ref), axis=-1) / np.maximum(vmax, 1e-300)


def rms_norm_error(out, x, scale, eps):  # [R]
    x64 = x.astype(np.float64)
    ref = x64 / np.sqrt(np.mean(x64 * x64, axis=-1, keepdims=True) + eps) * scale
    return np.max(np.abs(out - ref), axis=1) / np.maximum(np.max(np.abs(ref), axis=1), 1e-300)


# matmul -----------------------------------------------------------------------------------------------------

@FAST
@given(seeds, st.integers(1, 20), st.integers(1, 70), ks)
def test_matmul_matches_float64(seed, M, N, K):
    rng = np.random.default_rng(seed)
    x, W = randn(rng, M, K, scale=magnitude(rng)), randn(rng, N, K, scale=magnitude(rng))
    for f in (matmul_numba, matmul_numpy):
        out = f(x, W)
        assert out.shape == (M, N) and out.dtype == np.float32
        assert matmul_error(out, x, W).max() < TOL, f.__name__
    size = np.abs(x.astype(np.float64)) @ np.abs(W.astype(np.float64)).T  # the twins agree with each other too
    assert (np.abs(matmul_numba(x, W) - matmul_numpy(x, W)).max(axis=1) / size.max(axis=1)).max() < 2 * TOL


@FAST
@given(seeds, st.integers(1, 16), st.integers(1, 70), ks)
def test_matmul_is_batch_invariant(seed, M, N, K):
    """Row m alone == row m inside a batch of M rows, at every position of the batch, whatever the others."""
    rng = np.random.default_rng(seed)
    W, row = randn(rng, N, K), randn(rng, 1, K)
    alone = matmul_numba(row, W)[0]
    for i in range(M):
        batch = randn(rng, M, K, scale=magnitude(rng))
        batch[i] = row[0]
        assert np.array_equal(matmul_numba(batch, W)[i], alone)


def test_matmul_invariant_up_to_64_rows_and_at_gemma_shapes():
    rng = np.random.default_rng(0)
    for N, K in [(1024, 640), (640, 1024), (256, 640), (2048, 640), (640, 2048)]:
        W = randn(rng, N, K)
        x = randn(rng, 64, K)
        full = matmul_numba(x, W)
        for M in (1, 2, 3, 7, 8, 9, 16, 33, 64):
            assert np.array_equal(matmul_numba(x[:M], W), full[:M]), (N, K, M)
        assert np.array_equal(matmul_numba(x[::-1].copy(), W), full[::-1])  # same rows, other order


def test_matmul_special_values():
    W = np.eye(5, 7, dtype=np.float32)
    assert np.array_equal(matmul_numba(np.zeros((3, 7), np.float32), W), np.zeros((3, 5), np.float32))
    x = np.arange(7, dtype=np.float32)[None]
    assert np.array_equal(matmul_numba(x, W), x[:, :5])  # exact: one nonzero term per output
    x = np.full((1, 7), np.inf, np.float32)  # inf * 0 is nan, as in NumPy
    with np.errstate(invalid="ignore"):
        assert np.array_equal(matmul_numba(x, W), matmul_numpy(x, W), equal_nan=True)


def test_matmul_checks_its_inputs():
    W = np.ones((4, 3), np.float32)
    with pytest.raises(TypeError, match="float32"):
        matmul_numba(np.ones((2, 3)), W)
    with pytest.raises(ValueError, match="x is"):
        matmul_numba(np.ones((2, 5), np.float32), W)
    with pytest.raises(ValueError, match="C-contiguous"):
        matmul_numba(np.ones((2, 4), np.float32), np.ones((3, 4), np.float32).T)
    x = np.ones((3, 2), np.float32).T  # a non-contiguous x is copied, not refused
    assert np.array_equal(matmul_numba(x, np.ones((4, 3), np.float32)), np.full((2, 4), 3, np.float32))


# attention ----------------------------------------------------------------------------------------------

@st.composite
def attention_case(draw, max_m=16):
    """q [M, Hq, D], caches [T_cap, Hkv, D] with garbage past start + M, start, window, scale."""
    seed = draw(seeds)
    ratio = draw(st.sampled_from([1, 2, 4]))
    Hkv = draw(st.integers(1, 2))
    D = draw(st.one_of(st.integers(1, 40), st.sampled_from([128, 256])))
    M = draw(st.integers(1, max_m))
    start = draw(st.integers(0, 40))
    # windows: none, 1 (the query alone), small, around the start (positions at and past the window), large
    window = draw(st.one_of(st.just(0), st.integers(1, 4), st.integers(max(1, start - 2), start + 3),
                            st.integers(1, 100)))
    spare = draw(st.integers(0, 5))
    rng = np.random.default_rng(seed)
    T = start + M
    q = randn(rng, M, Hkv * ratio, D)
    k_cache = randn(rng, T + spare, Hkv, D)
    v_cache = randn(rng, T + spare, Hkv, D, scale=magnitude(rng))
    k_cache[T:] = np.nan  # never to be read
    v_cache[T:] = np.inf
    return q, k_cache, v_cache, start, window, float(D) ** -0.5


@FAST
@given(attention_case())
def test_attention_matches_float64(case):
    q, k_cache, v_cache, start, window, scale = case
    for f in (attention_numba, attention_numpy):
        out = f(q, k_cache, v_cache, start, window, scale)
        assert out.shape == q.shape and out.dtype == np.float32
        assert attention_error(out, q, k_cache, v_cache, start, window, scale).max() < TOL, f.__name__
    twins = [f(q, k_cache, v_cache, start, window, scale) for f in (attention_numba, attention_numpy)]
    assert np.abs(twins[0] - twins[1]).max() <= 2 * TOL * np.abs(v_cache[:start + len(q)]).max()


@FAST
@given(attention_case())
def test_attention_is_batch_invariant(case):
    """Query m of a block (position start+m) == the same query alone with a cache of start+m+1 rows."""
    q, k_cache, v_cache, start, window, scale = case
    block = attention_numba(q, k_cache, v_cache, start, window, scale)
    for m in range(len(q)):
        T = start + m + 1
        alone = attention_numba(q[m:m + 1], k_cache[:T].copy(), v_cache[:T].copy(), start + m, window, scale)
        assert np.array_equal(alone[0], block[m])


@FAST
@given(attention_case(max_m=4), st.integers(1, 50), st.sampled_from([0.0, np.nan, np.inf, 1e30]))
def test_attention_ignores_cache_capacity(case, extra, junk):
    """Rows past start + M (unused capacity) are never read: their size and content change nothing."""
    q, k_cache, v_cache, start, window, scale = case
    T = start + len(q)
    exact = [attention(q, k_cache[:T].copy(), v_cache[:T].copy(), start, window, scale)
             for attention in (attention_numba, attention_numpy)]
    big_k = np.full((T + extra,) + k_cache.shape[1:], junk, np.float32)
    big_v = np.full((T + extra,) + v_cache.shape[1:], junk, np.float32)
    big_k[:T], big_v[:T] = k_cache[:T], v_cache[:T]
    for attention, want in zip((attention_numba, attention_numpy), exact):
        assert np.array_equal(attention(q, big_k, big_v, start, window, scale), want)


def test_attention_edge_cases():
    rng = np.random.default_rng(1)
    v = randn(rng, 1, 1, 8)
    # a cache of one position: the output is that position's value, exactly
    one = attention_numba(randn(rng, 1, 2, 8), randn(rng, 1, 1, 8), v, 0, 0, 0.5)
    assert np.array_equal(one, np.broadcast_to(v, (1, 2, 8)))
    # window 1: each query sees only itself
    k_cache, v_cache = randn(rng, 6, 1, 8), randn(rng, 6, 1, 8)
    out = attention_numba(randn(rng, 3, 1, 8), k_cache, v_cache, 3, 1, 0.5)
    assert np.array_equal(out[:, 0], v_cache[3:6, 0])
    # at the window (window == position + 1: every key visible) and past it (the oldest keys drop out)
    q = randn(rng, 1, 1, 8)
    k_cache, v_cache = randn(rng, 10, 1, 8), randn(rng, 10, 1, 8)
    full = attention_numba(q, k_cache, v_cache, 9, 0, 0.5)
    assert np.array_equal(attention_numba(q, k_cache, v_cache, 9, 10, 0.5), full)
    past = attention_numba(q, k_cache, v_cache, 9, 9, 0.5)
    assert not np.array_equal(past, full)
    assert np.array_equal(past, attention_numba(q, k_cache[1:].copy(), v_cache[1:].copy(), 8, 0, 0.5))


def test_attention_checks_its_inputs():
    q, cache = np.ones((2, 4, 8), np.float32), np.ones((5, 1, 8), np.float32)
    with pytest.raises(ValueError, match="do not fit"):
        attention_numba(q, cache, cache, 4, 0, 1.0)  # positions 4, 5 but only 5 rows
    with pytest.raises(ValueError, match="multiple"):
        attention_numba(np.ones((2, 3, 8), np.float32), np.ones((5, 2, 8), np.float32),
                        np.ones((5, 2, 8), np.float32), 0, 0, 1.0)


# rms_norm -----------------------------------------------------------------------------------------------

@FAST
@given(seeds, st.integers(1, 16), st.one_of(st.integers(1, 300), st.sampled_from([256, 640])),
       st.sampled_from([1e-6, 1e-5, 0.1]))
def test_rms_norm_matches_float64_and_is_batch_invariant(seed, R, D, eps):
    rng = np.random.default_rng(seed)
    x, scale = randn(rng, R, D, scale=magnitude(rng)), randn(rng, D)
    out = rms_norm_numba(x, scale, eps)
    assert out.shape == (R, D) and out.dtype == np.float32
    assert rms_norm_error(out, x, scale, eps).max() < TOL
    assert rms_norm_error(rms_norm_numpy(x, scale, eps), x, scale, eps).max() < TOL
    np.testing.assert_allclose(out, rms_norm_numpy(x, scale, eps), rtol=2 * TOL, atol=2 * TOL * np.abs(out).max())
    for r in range(R):
        other = randn(rng, R, D, scale=magnitude(rng))
        other[r] = x[r]
        assert np.array_equal(rms_norm_numba(other, scale, eps)[r], out[r])
        assert np.array_equal(rms_norm_numba(x[r:r + 1], scale, eps)[0], out[r])


def test_rms_norm_of_zeros_is_zero():
    assert np.array_equal(rms_norm_numba(np.zeros((2, 5), np.float32), np.ones(5, np.float32), 1e-6),
                          np.zeros((2, 5), np.float32))


# RoPE's rotation ------------------------------------------------------------------------------------------

@FAST
@given(seeds, st.integers(1, 17), st.integers(1, 5), st.sampled_from([2, 8, 30, 256]))
def test_rotate_is_bitwise_the_numpy_rotation(seed, M, H, hd):
    """Element-wise, nothing fused: the numba rotation computes NumPy's products and sums exactly, at any size;
    with cos = 1 and sin = 0 it is the identity, and at a quarter turn it swaps the halves (one negated)."""
    rng = np.random.default_rng(seed)
    x = randn(rng, M, H, hd, scale=magnitude(rng))
    angles = rng.uniform(-1e4, 1e4, (M, 1, hd // 2))
    cos, sin = np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)
    assert np.array_equal(rotate_numba(x, cos, sin), rotate_numpy(x, cos, sin))
    ones, zeros = np.ones_like(cos), np.zeros_like(cos)
    assert np.array_equal(rotate_numba(x, ones, zeros), x)
    half = hd // 2
    turned = rotate_numba(x, zeros, ones)
    assert np.array_equal(turned[..., :half], -x[..., half:]) and np.array_equal(turned[..., half:], x[..., :half])


def test_rotate_checks_its_inputs():
    x, t = np.ones((2, 3, 8), np.float32), np.ones((2, 1, 4), np.float32)
    with pytest.raises(ValueError, match="hd even"):
        rotate_numba(x, t[:1], t[:1])
    with pytest.raises(TypeError, match="float32"):
        rotate_numba(x.astype(np.float64), t, t)


# the backend table ----------------------------------------------------------------------------------------

def test_backend_table():
    assert get_ops("numpy").matmul is matmul_numpy
    assert get_ops("numba").attention is attention_numba
    assert get_ops("numba").rotate is rotate_numba and get_ops("numpy").rotate is rotate_numpy
    with pytest.raises(ValueError, match="numba, numpy"):
        get_ops("torch")


def test_numba_table_sends_only_the_prefill_to_blas():
    rng = np.random.default_rng(2)
    W = randn(rng, 33, 40)
    matmul = get_ops("numba").matmul
    small, big = randn(rng, 64, 40), randn(rng, 65, 40)
    assert np.array_equal(matmul(small, W), matmul_numba(small, W))
    assert np.array_equal(matmul(big, W), matmul_numpy(big, W))


@pytest.mark.parametrize("name", ["exp", "tanh", "sin", "cos", "sqrt"])
def test_numpy_elementwise_is_batch_invariant_here(name):
    """The model keeps element-wise ops in NumPy because they compute each element alone, the same way
    whatever the array's length or alignment (SIMD body and tail agree). Checked on this machine."""
    f = getattr(np, name)
    x = np.abs(randn(np.random.default_rng(3), 1000, scale=3.0))
    full = f(x)
    for n in (1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 33, 640):
        for offset in (0, 1, 5):
            assert np.array_equal(f(x[offset:offset + n]), full[offset:offset + n]), (n, offset)
    assert np.array_equal(f(x[::3]), full[::3])


def test_one_thread_and_all_threads_agree_bitwise():
    """Small problems run on the calling thread, large ones on all: the same arithmetic either way."""
    rng = np.random.default_rng(4)
    x, W = randn(rng, 5, 300), randn(rng, 77, 300)
    serial = np.empty((5, 77), np.float32)
    kernels._matmul_rows(x, W, serial, 0, 77)
    for parts in (1, 2, 3, 8):  # each thread's share of W has its own stream spacing and leftover rows
        assert np.array_equal(kernels._matmul_parallel(x, W, parts), serial), parts
    q, k_cache, v_cache = randn(rng, 3, 4, 16), randn(rng, 40, 2, 16), randn(rng, 40, 2, 16)
    for window in (0, 5):
        args = (q, k_cache, v_cache, 30, window, np.float32(0.25))
        for parts in (1, 2, 3):  # tasks sharing a row's dimensions (D = 16: 8 and 8, or 8, 0 and 8)
            assert np.array_equal(kernels._attention_parallel(*args, parts), kernels._attention_serial(*args))
        for M, parts in ((1, 2), (2, 5)):  # four heads of a kv head per task; D = 75 has a 3-dimension remainder
            q4, kv = randn(rng, M, 4, 75), randn(rng, 40, 1, 75)
            args = (q4, kv, kv, 30, window, np.float32(0.25))
            assert np.array_equal(kernels._attention_parallel(*args, parts), kernels._attention_serial(*args))


# every row count the speculative loop can ask for --------------------------------------------------------------

def test_every_row_count_a_verification_can_have_is_batch_invariant():
    """The loop verifies up to MAX_K drafts: forwards of 1 .. MAX_K + 1 rows. At every one of those row counts,
    at Gemma 3 270M's shapes, each row of the numba table's matmul, attention and RMSNorm (the RMSNorm at rows x
    heads, as the model calls it on q and k) is bitwise the row computed alone."""
    from tinyspec.speculative import MAX_K

    rows, ops = MAX_K + 1, get_ops("numba")
    rng = np.random.default_rng(7)
    for N, K in [(1031, 640), (640, 2048)]:  # N not a multiple of the tile: leftover rows on every thread
        W, x = randn(rng, N, K), randn(rng, rows, K)
        alone = np.stack([ops.matmul(x[m:m + 1], W)[0] for m in range(rows)])
        for M in range(1, rows + 1):
            assert np.array_equal(ops.matmul(x[:M], W), alone[:M]), (N, K, M)
    H, Hkv, D, start = 4, 1, 256, 530  # past the 512-token window
    q = randn(rng, rows, H, D)
    k_cache, v_cache = randn(rng, start + rows, Hkv, D), randn(rng, start + rows, Hkv, D)
    for window in (512, 0):  # a local layer and a global one
        alone = np.stack([ops.attention(q[m:m + 1], k_cache[:start + m + 1].copy(), v_cache[:start + m + 1].copy(),
                                        start + m, window, D ** -0.5)[0] for m in range(rows)])
        for M in range(1, rows + 1):
            assert np.array_equal(ops.attention(q[:M], k_cache, v_cache, start, window, D ** -0.5), alone[:M]), M
    for per_row, D in [(H, 256), (Hkv, 256), (1, 640)]:  # q heads, k heads, the residual stream
        x, scale = randn(rng, rows * per_row, D), randn(rng, D)
        alone = np.stack([ops.rms_norm(x[r:r + 1], scale, 1e-6)[0] for r in range(rows * per_row)])
        for M in range(1, rows + 1):
            assert np.array_equal(ops.rms_norm(x[:M * per_row], scale, 1e-6), alone[:M * per_row]), (per_row, M)
