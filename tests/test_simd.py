"""The SIMD building blocks, and the summation order the kernels document, checked bitwise.

The order (tinyspec/fast/kernels.py, section 1): lane l (0 <= l < 8) sums x[k] * w[k] for k = l, l + 8, ... in
increasing k, one fused multiply-add per term; then lane l + 4 onto l, l + 2 onto l, l + 1 onto l. The
reference below spells that out one scalar at a time, so the vectorized tiles (3-row, 2-row, 1-row, the
one-product remainder, the attention scores) must reproduce it bit for bit.
"""

import numpy as np
from hypothesis import given, settings, strategies as st
from numba import njit

from tinyspec.fast import kernels
from tinyspec.fast.simd import WIDTH, fma, vfma, vload, vput, vsplat, vstore, vsum, vzero

FAST = settings(deadline=None, max_examples=30, derandomize=True)


@njit
def _fma(a, b, c):
    return fma(a, b, c)


@njit
def _vfma_rows(x, W, C):  # x, W, C [1, 8] -> [1, 1, 8]: one vfma, stored
    out = np.empty((1, 1, WIDTH), np.float32)
    vstore(out, 0, 0, vfma(vload(x, 0, 0), vload(W, 0, 0), vload(C, 0, 0)))
    return out


@njit
def _vzero():
    out = np.ones((1, 1, WIDTH), np.float32)
    vstore(out, 0, 0, vzero())
    return out


@njit
def _vsum_rows(x):  # x [R, 8] -> [R]: each row's lanes folded by vsum
    out = np.empty(x.shape[0], np.float32)
    for r in range(x.shape[0]):
        out[r] = vsum(vload(x, r, 0))
    return out


@njit
def _vsplat_put(values):  # [R] -> [R, 8]: row r is vsplat(values[r]), stored by vput
    out = np.empty((values.shape[0], WIDTH), np.float32)
    for r in range(values.shape[0]):
        vput(out, r, 0, vsplat(values[r]))
    return out


@njit
def documented_dot(a, b):  # [K], [K] -> float32, one scalar at a time in the documented order
    lanes = np.zeros(8, np.float32)
    for k in range(a.shape[0]):
        lanes[k % 8] = fma(a[k], b[k], lanes[k % 8])
    for half in (4, 2, 1):
        for l in range(half):
            lanes[l] = lanes[l] + lanes[l + half]
    return lanes[0]


def test_fma_rounds_once():
    """a = 1 + 2^-12: a * a = 1 + 2^-11 + 2^-24 exactly. Rounded to float32 first, the 2^-24 is lost (a tie,
    to even); fused, a * a - (1 + 2^-11) keeps it."""
    a = np.float32(1 + 2.0**-12)
    c = np.float32(-(1 + 2.0**-11))
    assert np.float32(a * a) + c == 0  # two roundings
    assert _fma(a, a, c) == np.float32(2.0**-24)  # one rounding


def test_vfma_is_eight_scalar_fmas():
    rng = np.random.default_rng(0)
    x, W, C = (rng.standard_normal((1, 8)).astype(np.float32) for _ in range(3))
    x[0, 3], W[0, 3], C[0, 3] = 1 + 2.0**-12, 1 + 2.0**-12, -(1 + 2.0**-11)  # a lane where fusing matters
    out = _vfma_rows(x, W, C)[0, 0]
    assert np.array_equal(out, [_fma(x[0, l], W[0, l], C[0, l]) for l in range(8)])
    assert out[3] == np.float32(2.0**-24)
    assert np.array_equal(_vzero()[0, 0], np.zeros(8, np.float32))


@FAST
@given(seed=st.integers(0, 2**32 - 1), M=st.integers(1, 10), N=st.integers(1, 13),
       K=st.one_of(st.integers(1, 70), st.sampled_from([256, 640])))
def test_matmul_sums_in_the_documented_order(seed, M, N, K):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((M, K)).astype(np.float32)
    W = rng.standard_normal((N, K)).astype(np.float32)
    out = kernels.matmul_numba(x, W)
    ref = np.array([[documented_dot(x[m], W[n]) for n in range(N)] for m in range(M)], np.float32).reshape(M, N)
    assert np.array_equal(out, ref)


@njit
def documented_softmax(s):  # [n] float32 -> [n]: exp(s - max) in Numba (the kernel's exp), summed in order
    e = np.exp(s - s.max())
    z = np.float32(0)
    for t in range(s.shape[0]):
        z += e[t]
    return e / z


def test_vsum_folds_the_lanes_as_documented_and_vsplat_vput_broadcast_and_store():
    """vsum: lane l + 4 onto l, then l + 2, then l + 1, each one float32 addition. Lanes of very different sizes
    make every other grouping give other bits."""
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((200, 8)) * 10.0 ** rng.integers(-8, 9, (200, 8))).astype(np.float32)
    x[0] = [1e8, 1, -1e8, 1, 3, 0.5, -3, 0.25]
    want = []
    for row in x:
        lanes = row.copy()
        for half in (4, 2, 1):
            lanes[:half] = lanes[:half] + lanes[half:2 * half]
        want.append(lanes[0])
    assert np.array_equal(_vsum_rows(x), np.array(want, np.float32))
    values = rng.standard_normal(5).astype(np.float32)
    assert np.array_equal(_vsplat_put(values), np.repeat(values[:, None], 8, axis=1))


def test_attention_scores_and_rms_norm_use_the_same_order():
    rng = np.random.default_rng(1)
    D = 75  # 9 whole vectors and 3 leftover terms
    x = rng.standard_normal((3, D)).astype(np.float32)
    scale = np.ones(D, np.float32)
    out = kernels.rms_norm_numba(x, scale, 1e-6)
    for r in range(3):
        inv = np.float32(1.0 / np.sqrt(np.float64(documented_dot(x[r], x[r])) / D + 1e-6))
        assert np.array_equal(out[r], x[r] * inv * scale)
    # attention over 6 keys (tiles of 3); value t is the unit vector e_t, so output d < 6 is the softmax weight
    # of key d: exp(s_d - max) / sum, from the documented scores. Four query heads share the kv head and are
    # computed together; D = 75 has 3 remainder terms per dot product, D = 80 none (the lanes fold in registers)
    for D in (75, 80):
        q = rng.standard_normal((1, 4, D)).astype(np.float32)
        k_cache = rng.standard_normal((6, 1, D)).astype(np.float32)
        v_cache = np.zeros((6, 1, D), np.float32)
        for t in range(6):
            v_cache[t, 0, t] = 1
        p = kernels.attention_numba(q, k_cache, v_cache, 5, 0, 0.125)[0, :, :6]
        for h in range(4):
            s = np.array([documented_dot(q[0, h], k_cache[t, 0]) * np.float32(0.125) for t in range(6)], np.float32)
            assert np.array_equal(p[h], documented_softmax(s)), (D, h)
