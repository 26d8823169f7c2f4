"""A matmul that reads Q8_0 blocks straight from the GGUF: x @ W.T with W never stored as float32.

The float32 matmul (tinyspec.fast.kernels.matmul_numba) reads W as 4 bytes a value; the token embedding, which
is also the LM head, is 262144 x 640 of them: 671 MB streamed per forward. In the GGUF the same matrix is Q8_0
blocks, 34 bytes per 32 values (tinyspec.quant.blocks.dequantize_q8_0): 178 MB. This kernel reads the blocks
and turns each 8 values into float32 in registers, just before multiplying them:

    w[k .. k+7] = d * float32(q[k .. k+7])          d: the block's float16 scale, as float32

That product is exact (11 + 7 significant bits), so w is bitwise the value the dequantized float32 matrix
holds, and the sums are formed in exactly the float32 kernel's order (its section 1): for out[m, n], lane l
(0 <= l < 8) sums x[m, k] * w[n, k] for k = l, l + 8, l + 16, ... in increasing k, one fused multiply-add
per term, then lane l + 4 onto l, l + 2 onto l, l + 1 onto l. A row of Q8_0 is whole blocks of 32, so K is
a multiple of 8 and there is no remainder to add. Same values, same order, same bits: the logits of the
quantized LM head equal the float32 backend's (tests/test_quant.py checks it for M = 1 .. 8 rows of x).

The tile is the float32 kernel's: 4 rows of W (n, n + S, n + 2S, n + 3S, four streams through memory) x up
to 3 rows of x, twelve 8-lane sums in registers. Unlike the float32 kernel it does not prefetch the next rows
while later tiles compute (a first version: bench/kernels.py is where a measurement of it would go).

    >>> from tinyspec.quant.blocks import dequantize
    >>> raw = np.frombuffer(np.float16(0.5).tobytes() + bytes(range(32)), np.uint8).reshape(1, 34)
    >>> x = np.ones((1, 32), np.float32)
    >>> matmul_q8_0(x, raw), x @ dequantize(raw, "Q8_0", (1, 32)).T     # 0.5 * (0 + 1 + ... + 31)
    (array([[248.]], dtype=float32), array([[248.]], dtype=float32))
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from ..fast.simd import WIDTH, f32x8, vfma, vload, vstore, vzero

BLOCK, BLOCK_BYTES = 32, 34  # Q8_0: 32 values in 34 bytes (2 for the float16 scale d, 32 int8 q)
PARALLEL_MIN_WORK = 1 << 18  # multiply-adds below which the kernel runs on the calling thread alone

# the float32 value of every float16 bit pattern (NumPy's conversion, exact: every float16 is a float32)
F16_TO_F32 = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)


# 1. Two register operations for int8 blocks (tinyspec.fast.simd has the float32 ones) --------------------

def _u8_matrix(a):  # is the Numba type a C-contiguous uint8 matrix?
    return isinstance(a, types.Array) and a.ndim == 2 and a.dtype == types.uint8 and a.layout == "C"


@intrinsic
def vload_q8(typingctx, raw, i, p):  # raw [R, B] uint8, row i, byte p -> f32x8 of float32(int8(raw[i, p : p+8]))
    """Load 8 bytes as 8 int8 and convert them to 8 float32 (exact): LLVM's sitofp on <8 x i8>."""
    if not _u8_matrix(raw):
        return None
    def codegen(context, builder, sig, args):
        arr = context.make_array(sig.args[0])(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, sig.args[0], arr, [args[1], args[2]])
        q = builder.load(builder.bitcast(ptr, ir.VectorType(ir.IntType(8), WIDTH).as_pointer()), align=1)
        return builder.sitofp(q, ir.VectorType(ir.FloatType(), WIDTH))
    return f32x8(raw, types.intp, types.intp), codegen


@intrinsic
def vscale(typingctx, v, d):  # f32x8, float32 -> d * v, lane by lane (one rounding each; exact for Q8_0)
    def codegen(context, builder, sig, args):
        dv = ir.Constant(ir.VectorType(ir.FloatType(), WIDTH), ir.Undefined)
        for lane in range(WIDTH):  # d in every lane
            dv = builder.insert_element(dv, args[1], ir.Constant(ir.IntType(32), lane))
        return builder.fmul(dv, args[0])
    return f32x8(f32x8, types.float32), codegen


# 2. The matmul --------------------------------------------------------------------------------------------

@njit(inline="always")
def _scale(raw, n, b, f16):  # the float32 scale d of block b of row n
    return f16[raw[n, b * BLOCK_BYTES] | (np.int64(raw[n, b * BLOCK_BYTES + 1]) << 8)]


@njit(inline="always")
def _w(raw, n, b, j, d):  # values 8j .. 8j+7 of block b of row n, as float32 -> f32x8
    return vscale(vload_q8(raw, n, b * BLOCK_BYTES + 2 + 8 * j), d)


@njit(inline="always")
def _tile_4x3(acc, i, x, m, raw, n, S, f16):  # x[m:m+3] . W[n + r S] (r < 4) -> acc[i:i+3, 4, WIDTH]
    """Twelve dot products, their lane sums in twelve registers. Rows a, b, c, d of W are n, n + S, n + 2S,
    n + 3S; each block's scale is read once, each 8 values of W are converted once for the 3 rows of x."""
    a0 = vzero(); b0 = vzero(); c0 = vzero(); d0 = vzero()
    a1 = vzero(); b1 = vzero(); c1 = vzero(); d1 = vzero()
    a2 = vzero(); b2 = vzero(); c2 = vzero(); d2 = vzero()
    for blk in range(x.shape[1] // BLOCK):
        da = _scale(raw, n, blk, f16); db = _scale(raw, n + S, blk, f16)
        dc = _scale(raw, n + 2 * S, blk, f16); dd = _scale(raw, n + 3 * S, blk, f16)
        for j in range(BLOCK // WIDTH):
            k = blk * BLOCK + j * WIDTH
            x0 = vload(x, m, k); x1 = vload(x, m + 1, k); x2 = vload(x, m + 2, k)
            w = _w(raw, n, blk, j, da); a0 = vfma(x0, w, a0); a1 = vfma(x1, w, a1); a2 = vfma(x2, w, a2)
            w = _w(raw, n + S, blk, j, db); b0 = vfma(x0, w, b0); b1 = vfma(x1, w, b1); b2 = vfma(x2, w, b2)
            w = _w(raw, n + 2 * S, blk, j, dc); c0 = vfma(x0, w, c0); c1 = vfma(x1, w, c1); c2 = vfma(x2, w, c2)
            w = _w(raw, n + 3 * S, blk, j, dd); d0 = vfma(x0, w, d0); d1 = vfma(x1, w, d1); d2 = vfma(x2, w, d2)
    vstore(acc, i, 0, a0); vstore(acc, i, 1, b0); vstore(acc, i, 2, c0); vstore(acc, i, 3, d0)
    vstore(acc, i + 1, 0, a1); vstore(acc, i + 1, 1, b1); vstore(acc, i + 1, 2, c1); vstore(acc, i + 1, 3, d1)
    vstore(acc, i + 2, 0, a2); vstore(acc, i + 2, 1, b2); vstore(acc, i + 2, 2, c2); vstore(acc, i + 2, 3, d2)


@njit(inline="always")
def _tile_4x2(acc, i, x, m, raw, n, S, f16):  # x[m:m+2] . W[n + r S] (r < 4) -> acc[i:i+2, 4, WIDTH]
    a0 = vzero(); b0 = vzero(); c0 = vzero(); d0 = vzero()
    a1 = vzero(); b1 = vzero(); c1 = vzero(); d1 = vzero()
    for blk in range(x.shape[1] // BLOCK):
        da = _scale(raw, n, blk, f16); db = _scale(raw, n + S, blk, f16)
        dc = _scale(raw, n + 2 * S, blk, f16); dd = _scale(raw, n + 3 * S, blk, f16)
        for j in range(BLOCK // WIDTH):
            k = blk * BLOCK + j * WIDTH
            x0 = vload(x, m, k); x1 = vload(x, m + 1, k)
            w = _w(raw, n, blk, j, da); a0 = vfma(x0, w, a0); a1 = vfma(x1, w, a1)
            w = _w(raw, n + S, blk, j, db); b0 = vfma(x0, w, b0); b1 = vfma(x1, w, b1)
            w = _w(raw, n + 2 * S, blk, j, dc); c0 = vfma(x0, w, c0); c1 = vfma(x1, w, c1)
            w = _w(raw, n + 3 * S, blk, j, dd); d0 = vfma(x0, w, d0); d1 = vfma(x1, w, d1)
    vstore(acc, i, 0, a0); vstore(acc, i, 1, b0); vstore(acc, i, 2, c0); vstore(acc, i, 3, d0)
    vstore(acc, i + 1, 0, a1); vstore(acc, i + 1, 1, b1); vstore(acc, i + 1, 2, c1); vstore(acc, i + 1, 3, d1)


@njit(inline="always")
def _tile_4x1(acc, i, x, m, raw, n, S, f16):  # x[m] . W[n + r S] (r < 4) -> acc[i, 4, WIDTH]
    a = vzero(); b = vzero(); c = vzero(); d = vzero()
    for blk in range(x.shape[1] // BLOCK):
        da = _scale(raw, n, blk, f16); db = _scale(raw, n + S, blk, f16)
        dc = _scale(raw, n + 2 * S, blk, f16); dd = _scale(raw, n + 3 * S, blk, f16)
        for j in range(BLOCK // WIDTH):
            x0 = vload(x, m, blk * BLOCK + j * WIDTH)
            a = vfma(x0, _w(raw, n, blk, j, da), a); b = vfma(x0, _w(raw, n + S, blk, j, db), b)
            c = vfma(x0, _w(raw, n + 2 * S, blk, j, dc), c); d = vfma(x0, _w(raw, n + 3 * S, blk, j, dd), d)
    vstore(acc, i, 0, a); vstore(acc, i, 1, b); vstore(acc, i, 2, c); vstore(acc, i, 3, d)


@njit(inline="always")
def _fold(lanes):  # [WIDTH] -> float32: lane l + 4 onto l, then l + 2, then l + 1 (lanes are overwritten)
    for l in range(4):
        lanes[l] += lanes[l + 4]
    for l in range(2):
        lanes[l] += lanes[l + 2]
    return lanes[0] + lanes[1]


@njit(cache=True)
def _matmul_q8_0_rows(x, raw, f16, out, a, b):  # x [M, K] @ W[a:b].T -> out[:, a:b], W as Q8_0 rows of raw
    """Rows a .. b-1 of W, four at a time (n, n + S, n + 2S, n + 3S with S = (b - a) // 4), every row of x
    three at a time against them; the last (b - a) % 4 rows of W one at a time, through the same 4-row tile
    pointed at the same row four times (S = 0): the tile decides the speed, never the result."""
    M = x.shape[0]
    S = (b - a) // 4
    acc = np.empty((M, 4, WIDTH), np.float32)  # lane sums: every row of x x 4 rows of W
    for n in range(a, a + S):
        for i in range(0, M, 3):
            if M - i >= 3:
                _tile_4x3(acc, i, x, i, raw, n, S, f16)
            elif M - i == 2:
                _tile_4x2(acc, i, x, i, raw, n, S, f16)
            else:
                _tile_4x1(acc, i, x, i, raw, n, S, f16)
        for i in range(M):
            for r in range(4):
                out[i, n + r * S] = _fold(acc[i, r])
    for n in range(a + 4 * S, b):
        for i in range(M):
            _tile_4x1(acc, i, x, i, raw, n, 0, f16)
            out[i, n] = _fold(acc[i, 0])


@njit(parallel=True, cache=True)
def _matmul_q8_0_parallel(x, raw, f16, parts):  # x [M, K] @ W [N, K].T -> [M, N]
    M, N = x.shape[0], raw.shape[0]
    out = np.empty((M, N), np.float32)
    for c in prange(parts):  # one contiguous share of the rows of W per thread: each row is read once
        _matmul_q8_0_rows(x, raw, f16, out, c * N // parts, (c + 1) * N // parts)
    return out


def matmul_q8_0(x, raw):  # [M, K] float32, [N, K / 32 * 34] uint8 -> [M, N] float32
    """x @ W.T where W [N, K] is stored as Q8_0 blocks, row by row, in raw (a GGUF tensor's raw bytes).

    Bitwise equal to tinyspec.fast.kernels.matmul_numba(x, W) with W the dequantized matrix, and so
    batch-invariant in the same way: row m of the result depends on row m of x alone."""
    if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim != 2:
        raise TypeError(f"x: expected a float32 [M, K] array, got {getattr(x, 'dtype', type(x).__name__)} "
                        f"{getattr(x, 'shape', '')}")
    x = np.ascontiguousarray(x)
    if not isinstance(raw, np.ndarray) or raw.dtype != np.uint8 or raw.ndim != 2 or not raw.flags.c_contiguous:
        raise TypeError("raw: expected the C-contiguous uint8 [N, bytes per row] blocks of a Q8_0 tensor")
    M, K = x.shape
    if K % BLOCK or raw.shape[1] != K // BLOCK * BLOCK_BYTES:
        raise ValueError(f"matmul_q8_0: x is {x.shape}, raw is {raw.shape}; a Q8_0 row of K = {K} values "
                         f"is {K // BLOCK} blocks of {BLOCK_BYTES} bytes, and K must be a multiple of {BLOCK}")
    if M * raw.shape[0] * K < PARALLEL_MIN_WORK:
        out = np.empty((M, raw.shape[0]), np.float32)
        _matmul_q8_0_rows(x, raw, F16_TO_F32, out, 0, raw.shape[0])
        return out
    return _matmul_q8_0_parallel(x, raw, F16_TO_F32, numba.get_num_threads())
