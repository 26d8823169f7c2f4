"""The Numba kernels behind `get_ops("numba")`: matmul, attention and RMSNorm, fast and batch-invariant (the
exactness of speculative decoding rests on it), and RoPE's rotation (element-wise: one call for seven NumPy
ones). Their plain NumPy twins, the reference they are tested against, are in tinyspec/ops.py.

# 1. Why batch-invariant

Greedy speculative decoding emits exactly what greedy vanilla decoding emits only if the target scores a token
identically whether it is computed alone (vanilla, M = 1 row) or inside a verification batch (M = k + 1 rows).
BLAS does not promise that: OpenBLAS runs a different kernel for one row (gemv) than for several (gemm), so
the last bits of the logits move and near-ties flip. The kernels below fix the order in which every output
element is summed, and make it depend on nothing but that element's own inputs:

    matmul   out[m, n] = x[m] . W[n]: lane l (0 <= l < 8) sums x[m, k] * W[n, k] for k = l, l + 8, l + 16,
             ... in increasing k, one fused multiply-add (FMA, rounded once) per term, the last K % 8 terms
             included; then the 8 lanes are added as a fixed tree (lane l + 4 onto l, then + 2, then + 1).
    attention  every score is such a dot product; the softmax sum and the weighted sum of values (one FMA per
             term) run over the visible keys in increasing position, for each query row and head on its own.
    rms_norm   the sum of squares of a row is the same lane-ordered dot product of the row with itself.

The dot products are written with explicit 8-lane vector operations (`tinyspec.fast.simd`: vload, vfma), so
the compiler has nothing to choose in them: a 3-row tile, a 1-row tile or a one-product remainder computes
every element with the same FMAs in the same order. No kernel lets the compiler reassociate or fuse anything
(no fastmath): every FMA is written out.

# 2. Why fast

Decoding is memory-bound: the LM head alone is 262144 x 640 float32 = 671 MB per forward. `matmul_numba`
streams each weight row once and uses it for every row of x. The inner tile multiplies 4 rows of W by 3 rows
of x: twelve dot products whose lane sums stay in twelve registers for the whole row, each step loading 7
pieces of 8 floats for 12 FMAs; threads split the rows of W. So verifying 8 tokens costs far less than 8
decodes, where BLAS gemm costs a multiple of gemv. The tile is spelled out with simd.py's vectors because
LLVM's auto-vectorizer does not keep twelve sums in registers across a loop of unknown length (the previous,
auto-vectorized tile, 4 x 2 rows with its sums stored to memory every 128 values, was slower).

How the rows are read matters as much. The 4 rows of a tile are not neighbours but a quarter of the thread's
share apart (rows n, n + S, n + 2S, n + 3S), so each thread reads four long runs of memory front to back,
which the CPU's hardware prefetcher follows well; four neighbouring rows (a 10 KB run, then the next) it
follows badly.

With several rows of x the prefetcher is not enough. Only the first tile of each step reads the four rows
from memory; the later tiles compute on them from cache, and during that time nothing would be read: the
matmul would take the time of streaming the weights plus the time of computing on them in cache, one after
the other. So the later tiles also ask for the next step's rows (`simd.prefetch`, one hint per 64-byte line),
and reading overlaps computing.

Small problems run on the calling thread alone (below PARALLEL_MIN_WORK multiply-adds): waking a second
thread costs more than a k_proj at decode takes. The threshold is set for an idle machine, where splitting a
block's larger matrices over the cores pays. On an oversubscribed machine every parallel call waits for the OS
to schedule its other threads: there, NUMBA_NUM_THREADS=1 makes every kernel single-threaded, with bitwise the
same results.

Measure all of this on your machine with `python bench/kernels.py` (kernels against BLAS, M = 1 against
M = 8, the memory floor); bench/results.md ("Kernel design measurements") keeps the figures behind each choice
above.

# 3. How they are tested

tests/test_kernels.py checks each kernel against a float64 reference and against its NumPy twin, and batch
invariance bitwise: a row computed alone equals the same row inside a batch, at every row count a
verification can have, and one thread equals all threads. tests/test_simd.py spells the summation order of
section 1 out one scalar at a time; every tile must reproduce it bit for bit.

# 4. The table

`NUMBA` is the `Ops` that `tinyspec.ops.get_ops("numba")` returns. It sends matmuls with more than
MAX_INVARIANT_ROWS rows (the prefill) to NumPy/BLAS: the prefill is shared by the vanilla and the speculative
run, so it need not be batch-invariant, only identical in both, and it is. (Element-wise NumPy needs no
kernel: see tinyspec/ops.py.)
"""

from __future__ import annotations

import time

import numpy as np
import numba
from numba import njit, prange

from ..ops import Ops, matmul as matmul_numpy
from .simd import WIDTH, fma, prefetch, vfma, vload, vput, vsplat, vstore, vsum, vzero

PARALLEL_MIN_WORK = 1 << 18  # multiply-adds below which a kernel runs on the calling thread alone (k_proj,
#                               v_proj and short attention at decode); q_proj, o_proj, the MLP and the LM head
#                               run on all threads (see the module docstring)
MAX_INVARIANT_ROWS = 64  # above this many rows (the prefill) the numba table hands matmul to BLAS


# 1. matmul ------------------------------------------------------------------------------------------------

@njit(inline="always")
def _fetch(W, ahead, S, k, r0, r1):  # prefetch the cache lines of W[ahead + r S, k : k + 16] for r0 <= r < r1
    if k % 16 == 0:  # one 64-byte line holds 16 floats: every other step
        for r in range(r0, r1):
            prefetch(W, ahead + r * S, k)


@njit(inline="always")
def _tile_4x3(acc, i, x, m, W, n, S, kend, ahead, r0, r1):  # x[m:m+3] . W[n + r S] (r < 4), K < kend -> acc[i:i+3, 4, WIDTH]
    """Twelve dot products at once, their lane sums in twelve registers: each step loads 3 pieces of x and 4 of W
    (7 loads) for 12 FMAs. Row names: a, b, c, d are W rows n, n + S, n + 2S, n + 3S; 0, 1, 2 are x rows.
    Meanwhile it asks for the rows ahead + r S of W (r0 <= r < r1), which a later call will read."""
    a0 = vzero(); b0 = vzero(); c0 = vzero(); d0 = vzero()
    a1 = vzero(); b1 = vzero(); c1 = vzero(); d1 = vzero()
    a2 = vzero(); b2 = vzero(); c2 = vzero(); d2 = vzero()
    for k in range(0, kend, WIDTH):
        _fetch(W, ahead, S, k, r0, r1)
        x0 = vload(x, m, k); x1 = vload(x, m + 1, k); x2 = vload(x, m + 2, k)
        w = vload(W, n, k); a0 = vfma(x0, w, a0); a1 = vfma(x1, w, a1); a2 = vfma(x2, w, a2)
        w = vload(W, n + S, k); b0 = vfma(x0, w, b0); b1 = vfma(x1, w, b1); b2 = vfma(x2, w, b2)
        w = vload(W, n + 2 * S, k); c0 = vfma(x0, w, c0); c1 = vfma(x1, w, c1); c2 = vfma(x2, w, c2)
        w = vload(W, n + 3 * S, k); d0 = vfma(x0, w, d0); d1 = vfma(x1, w, d1); d2 = vfma(x2, w, d2)
    vstore(acc, i, 0, a0); vstore(acc, i, 1, b0); vstore(acc, i, 2, c0); vstore(acc, i, 3, d0)
    vstore(acc, i + 1, 0, a1); vstore(acc, i + 1, 1, b1); vstore(acc, i + 1, 2, c1); vstore(acc, i + 1, 3, d1)
    vstore(acc, i + 2, 0, a2); vstore(acc, i + 2, 1, b2); vstore(acc, i + 2, 2, c2); vstore(acc, i + 2, 3, d2)


@njit(inline="always")
def _tile_4x2(acc, i, x, m, W, n, S, kend, ahead, r0, r1):  # x[m:m+2] . W[n + r S] (r < 4), K < kend -> acc[i:i+2, 4, WIDTH]
    a0 = vzero(); b0 = vzero(); c0 = vzero(); d0 = vzero()
    a1 = vzero(); b1 = vzero(); c1 = vzero(); d1 = vzero()
    for k in range(0, kend, WIDTH):
        _fetch(W, ahead, S, k, r0, r1)
        x0 = vload(x, m, k); x1 = vload(x, m + 1, k)
        w = vload(W, n, k); a0 = vfma(x0, w, a0); a1 = vfma(x1, w, a1)
        w = vload(W, n + S, k); b0 = vfma(x0, w, b0); b1 = vfma(x1, w, b1)
        w = vload(W, n + 2 * S, k); c0 = vfma(x0, w, c0); c1 = vfma(x1, w, c1)
        w = vload(W, n + 3 * S, k); d0 = vfma(x0, w, d0); d1 = vfma(x1, w, d1)
    vstore(acc, i, 0, a0); vstore(acc, i, 1, b0); vstore(acc, i, 2, c0); vstore(acc, i, 3, d0)
    vstore(acc, i + 1, 0, a1); vstore(acc, i + 1, 1, b1); vstore(acc, i + 1, 2, c1); vstore(acc, i + 1, 3, d1)


@njit(inline="always")
def _tile_4x1(acc, i, x, m, W, n, S, kend, ahead, r0, r1):  # x[m] . W[n + r S] (r < 4), K < kend -> acc[i, 4, WIDTH]
    a = vzero(); b = vzero(); c = vzero(); d = vzero()
    for k in range(0, kend, WIDTH):
        _fetch(W, ahead, S, k, r0, r1)
        x0 = vload(x, m, k)
        a = vfma(x0, vload(W, n, k), a); b = vfma(x0, vload(W, n + S, k), b)
        c = vfma(x0, vload(W, n + 2 * S, k), c); d = vfma(x0, vload(W, n + 3 * S, k), d)
    vstore(acc, i, 0, a); vstore(acc, i, 1, b); vstore(acc, i, 2, c); vstore(acc, i, 3, d)


@njit(inline="always")
def _tile(acc, i, x, W, n, S, kend, ahead, r0, r1):  # rows i .. i+2 of x (fewer at the end) . W[n + r S]
    """The tile for the rows of x left from row i: three (4 x 3), two (4 x 2) or one (4 x 1). The tile decides
    the speed, never the result: each computes every element with the same FMAs in the same order."""
    left = x.shape[0] - i
    if left >= 3:
        _tile_4x3(acc, i, x, i, W, n, S, kend, ahead, r0, r1)
    elif left == 2:
        _tile_4x2(acc, i, x, i, W, n, S, kend, ahead, r0, r1)
    else:
        _tile_4x1(acc, i, x, i, W, n, S, kend, ahead, r0, r1)


@njit(inline="always")
def _finish(lanes, a, b):  # lanes [WIDTH], a [K], b [K] -> a . b (float32)
    """Add the last K % 8 terms (term k goes to lane k % 8, as in the tiles), then add the 8 lanes as a fixed
    tree, folding the upper half onto the lower: lane l + 4 onto lane l, then l + 2, then l + 1.
    (The lanes are overwritten.)"""
    K = a.shape[0]
    for k in range(K - K % WIDTH, K):
        lanes[k % WIDTH] = fma(a[k], b[k], lanes[k % WIDTH])
    for l in range(4):
        lanes[l] += lanes[l + 4]
    for l in range(2):
        lanes[l] += lanes[l + 2]
    return lanes[0] + lanes[1]


@njit(inline="always")
def _dot(x, m, W, n):  # x [M, K] row m, W [N, K] row n -> x[m] . W[n] (float32), the order every kernel uses
    K = x.shape[1]
    s = vzero()
    for k in range(0, K - K % WIDTH, WIDTH):
        s = vfma(vload(x, m, k), vload(W, n, k), s)
    lanes = np.empty((1, 1, WIDTH), np.float32)
    vstore(lanes, 0, 0, s)
    return _finish(lanes[0, 0], x[m], W[n])


@njit(cache=True)
def _matmul_rows(x, W, out, a, b):  # x [M, K] @ W[a:b].T -> out[:, a:b], on one thread
    """Rows a .. b-1 of W, four at a time: rows n, n + S, n + 2S, n + 3S with S = (b - a) // 4, four long
    streams through memory (section 2 of the module docstring says why). The tile's four rows of W serve every
    row of x, three at a time, while they are in cache. Leftover rows (M not a multiple of 3, (b - a) % 4)
    take smaller tiles that do the same arithmetic per element: the tile decides the speed, never the result."""
    M, K = x.shape
    S = (b - a) // 4
    kend = K - K % WIDTH  # the tiles run over k < kend; _finish adds the rest
    acc = np.empty((M, 4, WIDTH), np.float32)  # lane sums: every row of x x 4 rows of W
    later = (M + 2) // 3 - 1  # tiles after the first, for each n
    for n in range(a, a + S):
        # The first tile reads rows n + r S from memory; the later ones find them in cache and meanwhile fetch
        # the next n's rows: one later tile, all four streams; two or more, two streams each in the first two.
        # (The stream numbers are written out as constants so that the compiler drops the fetching code from
        # the tiles that fetch nothing: M = 1, the first tile, the tiles after the second.)
        i = 0
        for t in range(later + 1):
            if t == 0 or t > 2 or n + 1 == a + S:
                _tile(acc, i, x, W, n, S, kend, 0, 0, 0)
            elif later == 1:
                _tile(acc, i, x, W, n, S, kend, n + 1, 0, 4)
            elif t == 1:
                _tile(acc, i, x, W, n, S, kend, n + 1, 0, 2)
            else:
                _tile(acc, i, x, W, n, S, kend, n + 1, 2, 4)
            i += 3
        for i in range(M):
            for r in range(4):
                out[i, n + r * S] = _finish(acc[i, r], x[i], W[n + r * S])
    for n in range(a + 4 * S, b):  # the last (b - a) % 4 rows, one dot product at a time
        for m in range(M):
            out[m, n] = _dot(x, m, W, n)


@njit(parallel=True, cache=True)
def _matmul_parallel(x, W, parts):  # x [M, K] @ W [N, K].T -> [M, N]
    M = x.shape[0]
    N = W.shape[0]
    out = np.empty((M, N), np.float32)
    for c in prange(parts):  # one contiguous share of the rows of W per thread: each row is read once
        _matmul_rows(x, W, out, c * N // parts, (c + 1) * N // parts)
    return out


def matmul_numba(x, W):  # [M, K], [N, K] -> [M, N]
    """x @ W.T, batch-invariant: row m of the result is bitwise the same whatever the other rows of x.

    Small problems run on the calling thread, large ones on all threads: the same arithmetic per element."""
    x = _f32(x, "x", 2)
    W = _f32(W, "W", 2, copy_ok=False)
    if x.shape[1] != W.shape[1]:
        raise ValueError(f"matmul: x is {x.shape} but W is {W.shape}; need x [M, K] and W [N, K]")
    if x.shape[0] * W.size < PARALLEL_MIN_WORK:
        out = np.empty((x.shape[0], W.shape[0]), np.float32)
        _matmul_rows(x, W, out, 0, W.shape[0])
        return out
    return _matmul_parallel(x, W, numba.get_num_threads())


def _f32(a, name, ndim, copy_ok=True):
    """The kernels take float32, C-contiguous arrays: say so rather than convert a wrong dtype silently."""
    if not isinstance(a, np.ndarray) or a.dtype != np.float32:
        raise TypeError(f"{name}: expected a float32 array, got {getattr(a, 'dtype', type(a).__name__)}")
    if a.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape {a.shape}")
    if not a.flags.c_contiguous:
        if not copy_ok:
            raise ValueError(f"{name}: expected a C-contiguous array (copying it on every call would be slow)")
        a = np.ascontiguousarray(a)
    return a


# 2. attention ---------------------------------------------------------------------------------------------

HEADS_PER_TASK = 4  # query heads of one kv head computed together: they read each key and value once


@njit(cache=True)
def _attend(qm, keys, values, start, window, scale, m, q0, S, d0, d1, out):  # row m, 4 heads -> out rows q0 + r S
    """Query row m for the 4 query heads at rows q0 + r S (r < 4) of qm [M * Hq, D], all reading one kv head
    whose keys and values are `keys`, `values` [T_cap, D]; dimensions d0 .. d1-1 of the results into the same
    rows of out [M * Hq, D]. S = 1: four heads, each key and value read once for the four; S = 0: one head
    (computed four times over, for shapes where the heads of a kv head are not a multiple of 4). A slice of
    the dimensions lets two threads share one row (decoding): each computes the scores, the same bits."""
    D = qm.shape[1]
    pos = start + m
    lo = max(0, pos - window + 1) if window > 0 else 0
    n = pos + 1 - lo  # visible keys: positions lo .. pos
    # 1. scores s[r, t] = (q_r . k[lo + t]) * scale, each one lane-ordered dot product, through the matmul's
    #    tile with the keys as the rows of x (three at a time) and the four queries as the rows of W
    seen = keys[lo: pos + 1]  # [n, D]
    s = np.empty((4, n), np.float32)  # [4, n]
    acc = np.empty((3, 4, WIDTH), np.float32)
    lanes = acc.reshape(12, WIDTH)  # the same, one row per score
    kend = D - D % WIDTH
    t = 0
    while t < n:
        c = min(3, n - t)  # keys in this tile
        if c == 3:
            _tile_4x3(acc, 0, seen, t, qm, q0, S, kend, 0, 0, 0)
        elif c == 2:
            _tile_4x2(acc, 0, seen, t, qm, q0, S, kend, 0, 0, 0)
        else:
            _tile_4x1(acc, 0, seen, t, qm, q0, S, kend, 0, 0, 0)
        for j in range(c):
            for r in range(4):
                if kend == D:  # no remainder terms: the lanes folded in registers
                    s[r, t + j] = vsum(vload(lanes, 4 * j + r, 0)) * scale
                else:
                    s[r, t + j] = _finish(acc[j, r], seen[t + j], qm[q0 + r * S]) * scale
        t += c
    # 2. softmax numerators exp(s - max) and their sum, in increasing position, per head
    z = np.empty(4, np.float32)
    for r in range(4):
        mx = s[r, 0]
        for t in range(1, n):
            mx = max(mx, s[r, t])
        z[r] = 0
        for t in range(n):
            s[r, t] = np.exp(s[r, t] - mx)
            z[r] += s[r, t]
    # 3. weighted sum of the values in increasing position, one FMA per term, divided by the sum: 8 dimensions
    #    of the four heads at a time, each value read once for the four
    #    (16 dimensions per sweep when there are 16: eight sums in flight, so no FMA waits for the one before)
    dend = min(d1, D - D % WIDTH)  # d0 is a multiple of 8
    d = d0
    while d < dend:
        if dend - d >= 2 * WIDTH:
            a0 = vzero(); a1 = vzero(); a2 = vzero(); a3 = vzero()
            b0 = vzero(); b1 = vzero(); b2 = vzero(); b3 = vzero()
            for t in range(n):
                va = vload(values, lo + t, d); vb = vload(values, lo + t, d + WIDTH)
                p = vsplat(s[0, t]); a0 = vfma(p, va, a0); b0 = vfma(p, vb, b0)
                p = vsplat(s[1, t]); a1 = vfma(p, va, a1); b1 = vfma(p, vb, b1)
                p = vsplat(s[2, t]); a2 = vfma(p, va, a2); b2 = vfma(p, vb, b2)
                p = vsplat(s[3, t]); a3 = vfma(p, va, a3); b3 = vfma(p, vb, b3)
            vput(out, q0, d, a0); vput(out, q0 + S, d, a1); vput(out, q0 + 2 * S, d, a2); vput(out, q0 + 3 * S, d, a3)
            d += WIDTH
            vput(out, q0, d, b0); vput(out, q0 + S, d, b1); vput(out, q0 + 2 * S, d, b2); vput(out, q0 + 3 * S, d, b3)
            d += WIDTH
        else:
            a0 = vzero(); a1 = vzero(); a2 = vzero(); a3 = vzero()
            for t in range(n):
                va = vload(values, lo + t, d)
                a0 = vfma(vsplat(s[0, t]), va, a0); a1 = vfma(vsplat(s[1, t]), va, a1)
                a2 = vfma(vsplat(s[2, t]), va, a2); a3 = vfma(vsplat(s[3, t]), va, a3)
            vput(out, q0, d, a0); vput(out, q0 + S, d, a1); vput(out, q0 + 2 * S, d, a2); vput(out, q0 + 3 * S, d, a3)
            d += WIDTH
    for r in range(4 if S > 0 else 1):  # (S = 0: the four rows are one)
        for d in range(max(d0, dend), d1):  # the last D % 8 dimensions, the same sums one at a time
            o = np.float32(0)
            for t in range(n):
                o = fma(s[r, t], values[lo + t, d], o)
            out[q0 + r * S, d] = o
        for d in range(d0, d1):
            out[q0 + r * S, d] /= z[r]


@njit(inline="always")
def _heads_per_task(q, k_cache):  # 4 heads of one kv head together, or one when a kv head's heads are not 4k
    return HEADS_PER_TASK if q.shape[1] // k_cache.shape[1] % HEADS_PER_TASK == 0 else 1


@njit(inline="always")
def _tasks(q, k_cache):  # (query row, the heads of one task) pairs
    return q.shape[0] * q.shape[1] // _heads_per_task(q, k_cache)


@njit(inline="always")
def _attend_task(q, k_cache, v_cache, start, window, scale, parts, i, out):  # task i of _tasks(...) -> out
    M, Hq, D = q.shape
    per = _heads_per_task(q, k_cache)
    i, part = i // parts, i % parts
    m, h = i // (Hq // per), i % (Hq // per) * per  # query row, first head
    g = h // (Hq // k_cache.shape[1])  # kv head
    cut = D // WIDTH // parts * WIDTH  # the dimensions split at multiples of 8
    _attend(q.reshape(M * Hq, D), k_cache[:, g, :], v_cache[:, g, :], start, window, scale, m, m * Hq + h,
            1 if per > 1 else 0, part * cut, D if part == parts - 1 else (part + 1) * cut, out.reshape(M * Hq, D))


@njit(parallel=True, cache=True)
def _attention_parallel(q, k_cache, v_cache, start, window, scale, parts):  # -> [M, Hq, D], like _attention_serial
    """Each task: one query row and its heads of one kv head, `parts` tasks sharing its dimensions (when there
    are fewer rows than threads). A task's results depend on nothing else."""
    out = np.empty(q.shape, np.float32)
    for i in prange(_tasks(q, k_cache) * parts):
        _attend_task(q, k_cache, v_cache, start, window, scale, parts, i, out)
    return out


@njit(cache=True)
def _attention_serial(q, k_cache, v_cache, start, window, scale):  # [M, Hq, D], [T_cap, Hkv, D] x2 -> [M, Hq, D]
    out = np.empty(q.shape, np.float32)
    for i in range(_tasks(q, k_cache)):
        _attend_task(q, k_cache, v_cache, start, window, scale, 1, i, out)
    return out


def attention_numba(q, k_cache, v_cache, start, window, scale):  # [M, Hq, D], [T_cap, Hkv, D] x2 -> [M, Hq, D]
    """Same as tinyspec.ops.attention, batch-invariant per query row, reading cache rows 0 .. start+M-1 only."""
    q = _f32(q, "q", 3)
    k_cache = _f32(k_cache, "k_cache", 3, copy_ok=False)
    v_cache = _f32(v_cache, "v_cache", 3, copy_ok=False)
    M, Hq, D = q.shape
    T_cap, Hkv, Dk = k_cache.shape
    if v_cache.shape != k_cache.shape or Dk != D or Hq % Hkv:
        raise ValueError(f"attention: q {q.shape}, k_cache {k_cache.shape}, v_cache {v_cache.shape}: need "
                         "q [M, Hq, D] and caches [T_cap, Hkv, D] with Hq a multiple of Hkv")
    if start < 0 or window < 0 or start + M > T_cap:
        raise ValueError(f"attention: positions {start} .. {start + M - 1} with window {window} do not fit a "
                         f"cache of {T_cap} rows")
    visible = min(start + M, window) if window > 0 else start + M
    if 2 * M * Hq * visible * D < PARALLEL_MIN_WORK:
        return _attention_serial(q, k_cache, v_cache, int(start), int(window), np.float32(scale))
    threads = numba.get_num_threads()
    parts = max(1, min(threads // _tasks(q, k_cache), D // WIDTH))  # fewer rows than threads: split dimensions
    return _attention_parallel(q, k_cache, v_cache, int(start), int(window), np.float32(scale), parts)


# 3. RMSNorm -----------------------------------------------------------------------------------------------

@njit(cache=True)
def _rms_norm_numba(x, scale, eps):  # [R, D], [D] -> [R, D]
    """On the calling thread: a norm is too little work to pay for waking others, even at the prefill."""
    R, D = x.shape
    out = np.empty((R, D), np.float32)
    for r in range(R):
        xr = x[r]  # [D]
        mean_sq = _dot(x, r, x, r) / D  # the sum of squares is the lane-ordered float32 sum; the mean is float64
        inv = np.float32(1.0 / np.sqrt(mean_sq + eps))  # rounded to float32 once
        for d in range(D):
            out[r, d] = xr[d] * inv * scale[d]
    return out


def rms_norm_numba(x, scale, eps):  # [R, D], [D] -> [R, D]
    """Same as tinyspec.ops.rms_norm, each row computed alone."""
    x = _f32(x, "x", 2)
    scale = _f32(scale, "scale", 1)
    if scale.shape[0] != x.shape[1]:
        raise ValueError(f"rms_norm: x is {x.shape} but scale is {scale.shape}")
    return _rms_norm_numba(x, scale, float(eps))


# 4. RoPE's rotation (element-wise) ------------------------------------------------------------------------

@njit(cache=True)
def _rotate_numba(x, cos, sin):  # [M, H, hd], [M, 1, hd/2] x2 -> [M, H, hd]
    """The same products and sums as ops.rotate, element by element (nothing fused: no fastmath)."""
    M, H, hd = x.shape
    half = hd // 2
    out = np.empty((M, H, hd), np.float32)
    for m in range(M):
        for h in range(H):
            for i in range(half):
                a, b, c, s = x[m, h, i], x[m, h, half + i], cos[m, 0, i], sin[m, 0, i]
                out[m, h, i] = a * c - b * s
                out[m, h, half + i] = b * c + a * s
    return out


def rotate_numba(x, cos, sin):  # [M, H, hd], [M, 1, hd/2] x2 -> [M, H, hd]
    """Same as tinyspec.ops.rotate, bitwise: one call instead of seven small NumPy operations."""
    x = _f32(x, "x", 3)
    cos = _f32(cos, "cos", 3)
    sin = _f32(sin, "sin", 3)
    M, H, hd = x.shape
    if hd % 2 or cos.shape != (M, 1, hd // 2) or sin.shape != cos.shape:
        raise ValueError(f"rotate: x {x.shape}, cos {cos.shape}, sin {sin.shape}: need x [M, heads, hd] with hd "
                         "even and cos, sin [M, 1, hd/2]")
    return _rotate_numba(x, cos, sin)


# 5. The table ---------------------------------------------------------------------------------------------

def matmul_decode_or_prefill(x, W):  # [M, K], [N, K] -> [M, N]
    """The numba table's matmul: the batch-invariant kernel for M <= MAX_INVARIANT_ROWS rows (decoding,
    verification); BLAS above (the prefill, which vanilla and speculative runs share, so it needs no invariance)."""
    if x.shape[0] > MAX_INVARIANT_ROWS:
        return matmul_numpy(x, W)
    return matmul_numba(x, W)


NUMBA = Ops(matmul=matmul_decode_or_prefill, attention=attention_numba, rms_norm=rms_norm_numba,
            rotate=rotate_numba)


def warmup() -> float:
    """Compile (first run on this machine) or load from the cache (later runs) every Numba kernel; seconds."""
    t0 = time.perf_counter()
    x = np.ones((3, 200), np.float32)
    matmul_numba(x, np.ones((9, 200), np.float32))
    matmul_numba(np.ones((2, 640), np.float32), np.ones((1024, 640), np.float32))  # the parallel path
    cache = np.ones((5, 1, 8), np.float32)
    attention_numba(np.ones((2, 2, 8), np.float32), cache, cache, 3, 2, 0.5)
    cache = np.ones((600, 1, 256), np.float32)
    attention_numba(np.ones((2, 4, 256), np.float32), cache, cache, 500, 0, 0.5)  # the parallel path
    rms_norm_numba(x, np.ones(200, np.float32), 1e-6)
    rotate_numba(np.ones((1, 2, 8), np.float32), np.ones((1, 1, 4), np.float32), np.ones((1, 1, 4), np.float32))
    return time.perf_counter() - t0
