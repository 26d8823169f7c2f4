"""Matmuls on quantized blocks (the GGUF's, or the layers' repacked at load): x @ W.T, W never stored as float32.

The float32 matmul (tinyspec.fast.kernels.matmul_numba) reads W as 4 bytes a value; the token embedding, which
is also the LM head, is 262144 x 640 of them: 671 MB streamed per forward. In the GGUF the same matrix is Q8_0
blocks, 34 bytes per 32 values (tinyspec.quant.blocks): 178 MB; the layers' Q5_0, Q4_K and Q6_K blocks are
smaller still. These kernels read the blocks and turn each 8 values of W into float32 just before multiplying
them (tinyspec.quant.simd: bytes in, an f32x8 out):

    Q8_0   w = d * q                     Q5_0   w = d * (q - 16)
    Q4_K   w = (d * sc) * q - (dmin * m) Q6_K   w = (d * sc) * (q - 32)
    S8_16  w = scale * q                 S8M_32 w = scale * q - min      (tinyspec's own: blocks.py section 4)

in the float32 operations, and the order, that tinyspec.quant.blocks documents: every product is exact, and
Q4_K's subtraction rounds once, after its product. So w is bitwise the value the dequantized float32 matrix
holds, and the sums are formed in exactly the float32 kernel's order (its docstring, section 1): for out[m, n],
lane l (0 <= l < 8) sums x[m, k] * w[n, k] for k = l, l + 8, l + 16, ... in increasing k, one fused
multiply-add per term, then lane l + 4 onto l, l + 2 onto l, l + 1 onto l. A row of blocks is a multiple of
32 values, so there is no K % 8 remainder to add. Same values, same order, same bits: the quantized model's
logits equal the float32 backend's on the dequantized weights, and they are batch-invariant in the same way
(row m of the result depends on row m of x alone). tests/test_quant.py checks both for M = 1 .. 64.

# How one driver serves six formats

The tile loop is the float32 kernel's: 4 rows of W (n, n + S, n + 2S, n + 3S, four streams through memory) x up
to 3 rows of x, twelve 8-lane sums in registers. What differs by format is two small functions (section 1):

    _scales_<fmt>(raw, n, g, f16)  -> s      the scales of group g of row n (the values that share them:
                                             32 for Q8_0, Q5_0, Q4_K's sub-blocks and S8M_32, 16 for
                                             Q6_K's and S8_16)
    _load_<fmt>(raw, n, g, j, s)   -> f32x8  values 8j .. 8j+7 of group g, dequantized with s

The tiles (section 3) read each group's scales once per row of W and each 8 values once for the 3 rows of x,
in registers. From SCRATCH_ROWS rows of x on, 4 rows of W are instead dequantized once into a small float32
scratch that the float32 kernel's own tiles read for every row of x (`_matmul_rows` says why).
They name the format by its ggml type number, a compile-time constant: `_group`, `_scales` and `_load`
(section 2) compile to the format's own function, so each format gets its own machine code, with no branch on
the format in the loop. (Passing the functions themselves as arguments would also compile, but Numba cannot
cache such a kernel on disk, and compiling one takes seconds at every start.)

The quant backend runs the LM head on the file's Q8_0 blocks and the layers on their blocks repacked at load
(Q5_0 as Q8_0, Q6_K as S8_16, Q4_K as S8M_32: tinyspec.quant.blocks.repack), whose values cost the kernels as
few instructions as Q8_0's; the file's own Q5_0, Q4_K and Q6_K kernels stay, bitwise the same, for
`quantized_weights(repack=False)` (`python bench/backends.py --file-blocks` times both).

QUANT (section 5) is the backend table of `get_ops("quant")`: the numba table, with every matmul on a QuantTensor
sent here, at every row count (the numba table sends more than 64 rows to BLAS; this one has no BLAS path).

Unlike the float32 kernel these do not prefetch the next rows while later tiles compute (a first version:
bench/kernels.py is where a measurement of it would go).

    >>> from tinyspec.quant.blocks import dequantize
    >>> raw = np.frombuffer(np.float16(0.5).tobytes() + bytes(range(32)), np.uint8).reshape(1, 34)
    >>> x = np.ones((1, 32), np.float32)
    >>> matmul_q8_0(x, raw), x @ dequantize(raw, "Q8_0", (1, 32)).T     # 0.5 * (0 + 1 + ... + 31)
    (array([[248.]], dtype=float32), array([[248.]], dtype=float32))
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
from numba import literally, njit, prange, types
from numba.extending import overload

from ..fast.kernels import NUMBA
from ..fast.kernels import _tile as _float32_tile
from ..fast.simd import WIDTH, vfma, vload, vstore, vzero
from ..ops import Ops
from .blocks import FORMATS, OWN_FORMATS, BlockFormat, block_format
from .gguf_file import QuantTensor
from .simd import (bload, fload, vfloat, vmul, vmulsub, wadd, waddi, wand, wandi, wbits, wfloat, wload, wshl, wshr,
                   wsplat, wzero_mask)

PARALLEL_MIN_WORK = 1 << 18  # multiply-adds below which a kernel runs on the calling thread alone
SCRATCH_ROWS = 6  # from this many rows of x on, 4 rows of W are dequantized once into a scratch, then read as float32
#                   Tuned on the 2-core AMD EPYC (`python bench/verify_cost.py` with this set to 2 and to 6,
#                   bench/results.md): the in-register tiles are faster at 2 and 3 rows, about level at 4 and 5

# the float32 value of every float16 bit pattern (NumPy's conversion, exact: every float16 is a float32)
F16_TO_F32 = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)


# 1. Each format: its scales, and 8 of its values in a register --------------------------------------------
#    (byte layouts: tinyspec.quant.blocks; n is the row of W, p the first byte of the block in that row)

@njit(inline="always")
def _f16(raw, n, p, f16):  # the little-endian float16 at raw[n, p : p+2], as float32
    return f16[raw[n, p] | (np.int64(raw[n, p + 1]) << 8)]


@njit(inline="always")
def _scales_q8_0(raw, n, g, f16):  # group g = block g: d
    return _f16(raw, n, 34 * g, f16)


@njit(inline="always")
def _load_q8_0(raw, n, g, j, d):  # d * q, q the int8 at bytes 2 + 8j ..
    return vmul(vfloat(bload(raw, n, 34 * g + 2 + 8 * j), 0), d)


@njit(inline="always")
def _scales_q5_0(raw, n, g, f16):  # group g = block g: d, and its 32 high bits qh in every int32 lane
    p = 22 * g
    qh = raw[n, p + 2] | np.int64(raw[n, p + 3]) << 8 | np.int64(raw[n, p + 4]) << 16 | np.int64(raw[n, p + 5]) << 24
    return _f16(raw, n, p, f16), wsplat(qh)


@njit(inline="always")
def _load_q5_0(raw, n, g, j, s):  # d * (q - 16), q = low nibble | high bit << 4
    """In int32 lanes: q - 16 = low + 16 h - 16, which is low where the high bit h is set and low - 16 where it
    is clear: so the lanes whose bit 8j + i of qh is clear get -16 added (a compare and two ANDs, no shifts)."""
    d, qh = s
    low = wandi(wshr(wload(raw, n, 22 * g + 6 + 8 * (j % 2)), 4 * (j // 2)), 15)  # 0..15 low, 16..31 high nibbles
    clear = wzero_mask(wand(qh, wbits(j)))  # -1 where bit 8j + i of qh is 0
    return vmul(wfloat(wadd(low, wandi(clear, -16))), d)


@njit(inline="always")
def _scales_q4_k(raw, n, g, f16):  # group g = sub-block j = g % 8 of block g // 8: d * sc[j], dmin * m[j]
    """The 6-bit sc[j] and m[j] of blocks.q4_k_scales_and_mins, without a branch (so that it inlines): with
    b = the 12 packed bytes, i = j % 4,
        j < 4:   sc = b[i] & 63                        m = b[4 + i] & 63
        j >= 4:  sc = b[8 + i] & 15 | (b[i] >> 6) << 4  m = b[8 + i] >> 4 | (b[4 + i] >> 6) << 4
    both computed, and one kept by a mask of all ones (j >= 4) or zeros."""
    p, j = 144 * (g // 8), g % 8
    s, i = p + 4, j % 4  # the 12 packed scale bytes raw[n, s : s+12] (blocks.q4_k_scales_and_mins)
    b0, b4, b8 = np.int64(raw[n, s + i]), np.int64(raw[n, s + 4 + i]), np.int64(raw[n, s + 8 + i])
    high = -np.int64(j // 4)  # -1 (all bits) for j >= 4, else 0
    sc = (b0 & 63) & ~high | ((b8 & 15) | (b0 >> 6) << 4) & high
    m = (b4 & 63) & ~high | ((b8 >> 4) | (b4 >> 6) << 4) & high
    return _f16(raw, n, p, f16) * np.float32(sc), _f16(raw, n, p + 2, f16) * np.float32(m)


@njit(inline="always")
def _load_q4_k(raw, n, g, j, s):  # (d * sc) * q - (dmin * m), q the low (even g) or high (odd g) nibbles
    scale, offset = s
    p = 144 * (g // 8) + 16 + 32 * (g % 8 // 2) + 8 * j
    return vmulsub(wfloat(wandi(wshr(wload(raw, n, p), 4 * (g % 2)), 15)), scale, offset)


@njit(inline="always")
def _scales_q6_k(raw, n, g, f16):  # group g = sub-block g % 16 of block g // 16: d * scales[g % 16]
    p = 210 * (g // 16)
    return _f16(raw, n, p + 208, f16) * np.float32(np.int8(raw[n, p + 192 + g % 16]))


@njit(inline="always")
def _load_q6_k(raw, n, g, j, scale):  # scale * (q - 32), scale = d * scales[g % 16], q = low 4 | high 2 bits << 4
    p, v = 210 * (g // 16), 16 * (g % 16) + 8 * j  # value v .. v+7 of the block
    half, quarter, l = v // 128, v % 128 // 32, v % 32  # value l + 32 * quarter of that half
    low = wandi(wshr(wload(raw, n, p + 64 * half + 32 * (quarter % 2) + l), 4 * (quarter // 2)), 15)
    high = wandi(wshr(wload(raw, n, p + 128 + 32 * half + l), 2 * quarter), 3)
    return vmul(wfloat(waddi(wadd(low, wshl(high, 4)), -32)), scale)  # low + 16 high - 32: disjoint bits


@njit(inline="always")
def _scales_s8_16(raw, n, g, f16):  # group g = block g: its float32 scale (tinyspec's own layout, made from Q6_K)
    return fload(raw, n, 20 * g)


@njit(inline="always")
def _load_s8_16(raw, n, g, j, scale):  # scale * q, q the int8 at bytes 4 + 8j ..
    return vmul(vfloat(bload(raw, n, 20 * g + 4 + 8 * j), 0), scale)


@njit(inline="always")
def _scales_s8m_32(raw, n, g, f16):  # group g = block g: its float32 scale and min (made from Q4_K)
    return fload(raw, n, 40 * g), fload(raw, n, 40 * g + 4)


@njit(inline="always")
def _load_s8m_32(raw, n, g, j, s):  # scale * q - min, q the int8 at bytes 8 + 8j ..: Q4_K's operations
    scale, offset = s
    return vmulsub(vfloat(bload(raw, n, 40 * g + 8 + 8 * j), 0), scale, offset)


@dataclass(frozen=True)
class KernelFormat:
    block: BlockFormat  # the layout (tinyspec.quant.blocks)
    group: int  # values that share one set of scales; a multiple of WIDTH
    scales: object  # njit (raw, n, g, f16) -> the scales of group g of row n
    load: object  # njit (raw, n, g, j, scales) -> f32x8 of values 8j .. 8j+7 of group g


KERNEL_FORMATS = {f.block.ggml_type: f for f in [
    KernelFormat(FORMATS["Q8_0"], 32, _scales_q8_0, _load_q8_0),
    KernelFormat(FORMATS["Q5_0"], 32, _scales_q5_0, _load_q5_0),
    KernelFormat(FORMATS["Q4_K"], 32, _scales_q4_k, _load_q4_k),
    KernelFormat(FORMATS["Q6_K"], 16, _scales_q6_k, _load_q6_k),
    KernelFormat(OWN_FORMATS["S8_16"], 16, _scales_s8_16, _load_s8_16),
    KernelFormat(OWN_FORMATS["S8M_32"], 32, _scales_s8m_32, _load_s8m_32),
]}
Q8_0, Q5_0, Q4_K, Q6_K = (FORMATS[name].ggml_type for name in ["Q8_0", "Q5_0", "Q4_K", "Q6_K"])


# 2. The format as a compile-time constant -----------------------------------------------------------------
#    fmt is a ggml type number that Numba sees as a literal (see `literally` in _matmul_rows); each of these
#    compiles to that format's entry of KERNEL_FORMATS.

def _group(fmt):  # -> values per group of the format
    raise NotImplementedError("compiled code only")


def _scales(fmt, raw, n, g, f16):  # -> the scales of group g of row n
    raise NotImplementedError("compiled code only")


def _load(fmt, raw, n, g, j, s):  # -> f32x8, values 8j .. 8j+7 of group g of row n
    raise NotImplementedError("compiled code only")


@overload(_group, inline="always")
def _group_of(fmt):
    if isinstance(fmt, types.IntegerLiteral):  # otherwise no implementation: Numba reports the call
        group = KERNEL_FORMATS[fmt.literal_value].group
        return lambda fmt: group


@overload(_scales, inline="always")
def _scales_of(fmt, raw, n, g, f16):
    if isinstance(fmt, types.IntegerLiteral):
        scales = KERNEL_FORMATS[fmt.literal_value].scales
        return lambda fmt, raw, n, g, f16: scales(raw, n, g, f16)


@overload(_load, inline="always")
def _load_of(fmt, raw, n, g, j, s):
    if isinstance(fmt, types.IntegerLiteral):
        load = KERNEL_FORMATS[fmt.literal_value].load
        return lambda fmt, raw, n, g, j, s: load(raw, n, g, j, s)


# 3. The tiles and the driver, shared by all formats -------------------------------------------------------

@njit(inline="always")
def _tile_4x3(fmt, acc, i, x, m, raw, n, S, f16):  # x[m:m+3] . W[n + r S] (r < 4) -> acc[i:i+3, 4, WIDTH]
    """Twelve dot products, their lane sums in twelve registers. Rows a, b, c, d of W are n, n + S, n + 2S,
    n + 3S; each group's scales are read once, each 8 values of W are dequantized once for the 3 rows of x."""
    G = _group(fmt)
    a0 = vzero(); b0 = vzero(); c0 = vzero(); d0 = vzero()
    a1 = vzero(); b1 = vzero(); c1 = vzero(); d1 = vzero()
    a2 = vzero(); b2 = vzero(); c2 = vzero(); d2 = vzero()
    for g in range(x.shape[1] // G):
        sa = _scales(fmt, raw, n, g, f16); sb = _scales(fmt, raw, n + S, g, f16)
        sc = _scales(fmt, raw, n + 2 * S, g, f16); sd = _scales(fmt, raw, n + 3 * S, g, f16)
        for j in range(G // WIDTH):
            k = g * G + j * WIDTH
            x0 = vload(x, m, k); x1 = vload(x, m + 1, k); x2 = vload(x, m + 2, k)
            w = _load(fmt, raw, n, g, j, sa); a0 = vfma(x0, w, a0); a1 = vfma(x1, w, a1); a2 = vfma(x2, w, a2)
            w = _load(fmt, raw, n + S, g, j, sb); b0 = vfma(x0, w, b0); b1 = vfma(x1, w, b1); b2 = vfma(x2, w, b2)
            w = _load(fmt, raw, n + 2 * S, g, j, sc); c0 = vfma(x0, w, c0); c1 = vfma(x1, w, c1); c2 = vfma(x2, w, c2)
            w = _load(fmt, raw, n + 3 * S, g, j, sd); d0 = vfma(x0, w, d0); d1 = vfma(x1, w, d1); d2 = vfma(x2, w, d2)
    vstore(acc, i, 0, a0); vstore(acc, i, 1, b0); vstore(acc, i, 2, c0); vstore(acc, i, 3, d0)
    vstore(acc, i + 1, 0, a1); vstore(acc, i + 1, 1, b1); vstore(acc, i + 1, 2, c1); vstore(acc, i + 1, 3, d1)
    vstore(acc, i + 2, 0, a2); vstore(acc, i + 2, 1, b2); vstore(acc, i + 2, 2, c2); vstore(acc, i + 2, 3, d2)


@njit(inline="always")
def _tile_4x2(fmt, acc, i, x, m, raw, n, S, f16):  # x[m:m+2] . W[n + r S] (r < 4) -> acc[i:i+2, 4, WIDTH]
    G = _group(fmt)
    a0 = vzero(); b0 = vzero(); c0 = vzero(); d0 = vzero()
    a1 = vzero(); b1 = vzero(); c1 = vzero(); d1 = vzero()
    for g in range(x.shape[1] // G):
        sa = _scales(fmt, raw, n, g, f16); sb = _scales(fmt, raw, n + S, g, f16)
        sc = _scales(fmt, raw, n + 2 * S, g, f16); sd = _scales(fmt, raw, n + 3 * S, g, f16)
        for j in range(G // WIDTH):
            k = g * G + j * WIDTH
            x0 = vload(x, m, k); x1 = vload(x, m + 1, k)
            w = _load(fmt, raw, n, g, j, sa); a0 = vfma(x0, w, a0); a1 = vfma(x1, w, a1)
            w = _load(fmt, raw, n + S, g, j, sb); b0 = vfma(x0, w, b0); b1 = vfma(x1, w, b1)
            w = _load(fmt, raw, n + 2 * S, g, j, sc); c0 = vfma(x0, w, c0); c1 = vfma(x1, w, c1)
            w = _load(fmt, raw, n + 3 * S, g, j, sd); d0 = vfma(x0, w, d0); d1 = vfma(x1, w, d1)
    vstore(acc, i, 0, a0); vstore(acc, i, 1, b0); vstore(acc, i, 2, c0); vstore(acc, i, 3, d0)
    vstore(acc, i + 1, 0, a1); vstore(acc, i + 1, 1, b1); vstore(acc, i + 1, 2, c1); vstore(acc, i + 1, 3, d1)


@njit(inline="always")
def _tile_4x1(fmt, acc, i, x, m, raw, n, S, f16):  # x[m] . W[n + r S] (r < 4) -> acc[i, 4, WIDTH]
    G = _group(fmt)
    a = vzero(); b = vzero(); c = vzero(); d = vzero()
    for g in range(x.shape[1] // G):
        sa = _scales(fmt, raw, n, g, f16); sb = _scales(fmt, raw, n + S, g, f16)
        sc = _scales(fmt, raw, n + 2 * S, g, f16); sd = _scales(fmt, raw, n + 3 * S, g, f16)
        for j in range(G // WIDTH):
            x0 = vload(x, m, g * G + j * WIDTH)
            a = vfma(x0, _load(fmt, raw, n, g, j, sa), a); b = vfma(x0, _load(fmt, raw, n + S, g, j, sb), b)
            c = vfma(x0, _load(fmt, raw, n + 2 * S, g, j, sc), c); d = vfma(x0, _load(fmt, raw, n + 3 * S, g, j, sd), d)
    vstore(acc, i, 0, a); vstore(acc, i, 1, b); vstore(acc, i, 2, c); vstore(acc, i, 3, d)


@njit(inline="always")
def _fold(lanes):  # [WIDTH] -> float32: lane l + 4 onto l, then l + 2, then l + 1 (lanes are overwritten)
    for l in range(4):
        lanes[l] += lanes[l + 4]
    for l in range(2):
        lanes[l] += lanes[l + 2]
    return lanes[0] + lanes[1]


@njit(inline="always")
def _dequantize_4(fmt, w, raw, n, S, f16):  # rows n + r S (r < 4) of W, dequantized -> w [4, K / WIDTH, WIDTH]
    G = _group(fmt)
    for r in range(4):
        for g in range(w.shape[1] * WIDTH // G):
            s = _scales(fmt, raw, n + r * S, g, f16)
            for j in range(G // WIDTH):
                vstore(w, r, g * (G // WIDTH) + j, _load(fmt, raw, n + r * S, g, j, s))


@njit
def _matmul_rows(x, raw, f16, out, a, b, fmt):  # x [M, K] @ W[a:b].T -> out[:, a:b], W as fmt blocks in raw
    """Rows a .. b-1 of W, four at a time (n, n + S, n + 2S, n + 3S with S = (b - a) // 4), every row of x
    three at a time against them; the last (b - a) % 4 rows of W one at a time, through the same 4-row tile
    pointed at the same row four times (S = 0): the tile decides the speed, never the result.

    Two ways to feed the tiles, the same values in the same order. Below SCRATCH_ROWS rows of x, the tiles
    above dequantize in registers: each 8 values of W, once per 3 rows of x. From SCRATCH_ROWS rows on, the 4
    rows of W are dequantized once into a small scratch (4 x K float32: 10 to 32 KB, in the L1 or L2 cache),
    and the float32 kernel's own tiles (tinyspec.fast.kernels) read it for every row of x: unpacking no
    longer grows with the rows of x. Each weight is the same float32 either way (a store and a load change no
    bit), and the float32 tiles sum in the order these do (K is a multiple of 32: no remainder terms)."""
    fmt = literally(fmt)  # compile once per format, with the format a constant (section 2)
    M, K = x.shape
    S = (b - a) // 4
    acc = np.empty((M, 4, WIDTH), np.float32)  # lane sums: every row of x x 4 rows of W
    w = np.empty((4 if M >= SCRATCH_ROWS else 0, K // WIDTH, WIDTH), np.float32)  # the scratch: 4 rows of W
    w2 = w.reshape(w.shape[0], K)
    for n in range(a, a + S):
        if M >= SCRATCH_ROWS:
            _dequantize_4(fmt, w, raw, n, S, f16)
            for i in range(0, M, 3):
                _float32_tile(acc, i, x, w2, 0, 1, K, 0, 0, 0)  # scratch rows 0, 1, 2, 3; no prefetching
        else:
            for i in range(0, M, 3):
                if M - i >= 3:
                    _tile_4x3(fmt, acc, i, x, i, raw, n, S, f16)
                elif M - i == 2:
                    _tile_4x2(fmt, acc, i, x, i, raw, n, S, f16)
                else:
                    _tile_4x1(fmt, acc, i, x, i, raw, n, S, f16)
        for i in range(M):
            for r in range(4):
                out[i, n + r * S] = _fold(acc[i, r])
    for n in range(a + 4 * S, b):
        for i in range(M):
            _tile_4x1(fmt, acc, i, x, i, raw, n, 0, f16)
            out[i, n] = _fold(acc[i, 0])


def _compiled(fmt: int):
    """The format's two entry points, compiled once and cached on disk: one thread, all threads."""
    @njit(cache=True)
    def serial(x, raw, f16):  # x [M, K] @ W [N, K].T -> [M, N]
        out = np.empty((x.shape[0], raw.shape[0]), np.float32)
        _matmul_rows(x, raw, f16, out, 0, raw.shape[0], fmt)
        return out

    @njit(parallel=True, cache=True)
    def parallel(x, raw, f16, parts):  # x [M, K] @ W [N, K].T -> [M, N], the rows of W in `parts` shares
        M, N = x.shape[0], raw.shape[0]
        out = np.empty((M, N), np.float32)
        for c in prange(parts):  # one contiguous share of the rows of W per thread: each row is read once
            _matmul_rows(x, raw, f16, out, c * N // parts, (c + 1) * N // parts, fmt)
        return out

    return serial, parallel


_ENTRY = {fmt: _compiled(fmt) for fmt in KERNEL_FORMATS}


# 4. The matmuls -------------------------------------------------------------------------------------------

def _matmul(x, raw, name):  # [M, K] float32, [N, bytes per row] uint8 -> [M, N] float32
    fmt = KERNEL_FORMATS[block_format(name).ggml_type]
    if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim != 2:
        raise TypeError(f"x: expected a float32 [M, K] array, got {getattr(x, 'dtype', type(x).__name__)} "
                        f"{getattr(x, 'shape', '')}")
    x = np.ascontiguousarray(x)
    if not isinstance(raw, np.ndarray) or raw.dtype != np.uint8 or raw.ndim != 2 or not raw.flags.c_contiguous:
        raise TypeError(f"raw: expected the C-contiguous uint8 [N, bytes per row] blocks of a {name} tensor")
    M, K = x.shape
    size, nbytes = fmt.block.block_size, fmt.block.type_size
    if K % size or raw.shape[1] != K // size * nbytes:
        raise ValueError(f"the {name} matmul: x is {x.shape}, raw is {raw.shape}; a {name} row of K = {K} "
                         f"values is {K // size} blocks of {nbytes} bytes, and K must be a multiple of {size}")
    if raw.flags.writeable:  # one compiled kernel for both: the GGUF's mapped blocks are read-only
        raw = raw.view()
        raw.flags.writeable = False
    serial, parallel = _ENTRY[fmt.block.ggml_type]
    if M * raw.shape[0] * K < PARALLEL_MIN_WORK:
        return serial(x, raw, F16_TO_F32)
    return parallel(x, raw, F16_TO_F32, numba.get_num_threads())


def matmul_q8_0(x, raw):  # [M, K] float32, [N, K / 32 * 34] uint8 -> [M, N] float32
    """x @ W.T where W [N, K] is stored as Q8_0 blocks, row by row, in raw (a GGUF tensor's raw bytes).

    Bitwise equal to tinyspec.fast.kernels.matmul_numba(x, W) with W the dequantized matrix, and so
    batch-invariant in the same way: row m of the result depends on row m of x alone. So are the three below."""
    return _matmul(x, raw, "Q8_0")


def matmul_q5_0(x, raw):  # [M, K] float32, [N, K / 32 * 22] uint8 -> [M, N] float32
    """x @ W.T where W [N, K] is stored as Q5_0 blocks, row by row, in raw."""
    return _matmul(x, raw, "Q5_0")


def matmul_q4_k(x, raw):  # [M, K] float32, [N, K / 256 * 144] uint8 -> [M, N] float32
    """x @ W.T where W [N, K] is stored as Q4_K blocks, row by row, in raw (K a multiple of 256)."""
    return _matmul(x, raw, "Q4_K")


def matmul_q6_k(x, raw):  # [M, K] float32, [N, K / 256 * 210] uint8 -> [M, N] float32
    """x @ W.T where W [N, K] is stored as Q6_K blocks, row by row, in raw (K a multiple of 256)."""
    return _matmul(x, raw, "Q6_K")


def matmul_quant(x, tensor):  # [M, K] float32, QuantTensor [N, K] -> [M, N] float32
    """x @ W.T for a GGUF tensor W (tinyspec.quant.gguf_file.QuantTensor), by its block format: the kernel
    above for a quantized one, tinyspec.fast.kernels.matmul_numba for an F32 one. Bitwise equal to
    matmul_numba(x, tensor.dequantize()) either way."""
    name = tensor.format.name
    if len(tensor.shape) != 2 or tensor.raw.shape[0] != tensor.shape[0]:
        raise ValueError(f"matmul_quant: {tensor.name} has shape {tensor.shape} (raw {tensor.raw.shape}); "
                         "a matmul needs a matrix [N, K]")
    if name == "F32":
        from ..fast.kernels import matmul_numba

        return matmul_numba(x, tensor.raw.view("<f4"))  # [N, 4 K] bytes as [N, K] float32, no copy
    if tensor.format.ggml_type not in KERNEL_FORMATS:
        known = ", ".join(f.block.name for f in KERNEL_FORMATS.values())
        raise NotImplementedError(f"matmul_quant: no kernel for {name} ({tensor.name}); there are kernels for F32, {known}")
    return _matmul(x, tensor.raw, name)


# 5. The backend table: get_ops("quant") -------------------------------------------------------------------

def matmul_blocks_or_float(x, W):  # [M, K] float32, QuantTensor or float32 [N, K] -> [M, N] float32
    """The quant table's matmul. A QuantTensor goes to matmul_quant at every row count, the prefill's too: no
    BLAS path, so no dequantized copy of a matrix is ever made. A float32 array (a drafter's own matrices)
    goes where the numba table sends it."""
    if isinstance(W, QuantTensor):
        return matmul_quant(x, W)
    return NUMBA.matmul(x, W)


# the numba table, with matmul on the GGUF's blocks: what tinyspec.ops.get_ops("quant") returns
QUANT = Ops(matmul=matmul_blocks_or_float, attention=NUMBA.attention, rms_norm=NUMBA.rms_norm,
            rotate=NUMBA.rotate)
