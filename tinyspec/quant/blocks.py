"""The block formats of Gemma 3 270M's GGUF, each written out once in plain NumPy: bytes in, float32 out.

A quantized tensor is a run of equal blocks; each block packs `block_size` consecutive values of a row (a
row is never split across blocks) into `type_size` bytes: small integers q plus one or a few scales. The
file uses five types (tinyspec.quant.gguf_file lists which tensor has which):

    type  ggml id  values  bytes  bits/value  value
    F32       0        1      4     32        the float32 itself                        (the norms)
    Q8_0      8       32     34      8.5      d * q                                     (token_embd, some attn_v)
    Q5_0      6       32     22      5.5      d * (q - 16)                              (attn_q/k/v, ffn_gate/up)
    Q4_K     12      256    144      4.5      (d * sc) * q - (dmin * m)                 (attn_output, ffn_down)
    Q6_K     14      256    210      6.5625   (d * sc) * (q - 32)                       (ffn_down)

Section 4 adds two layouts of tinyspec's own (S8_16, S8M_32: a byte per value), into which the quant backend
repacks the layers' blocks at load, the same values, cheaper to unpack.

Every function below reads the layout its docstring draws and computes its values in float32. They are
written from the format definitions in ggml (`ggml-quants.c`: block_q8_0, dequantize_row_q4_K, ...) and
tested bit for bit against the independent `gguf.quants.dequantize` (tests/test_quant.py).

# Why the float32 results are exact, and what a kernel may reorder

All the multiplications here are exact in float32: a float16 scale has 11 significant bits, and multiplying
it by the small integers of a block needs at most 11 + 7 + 5 = 23 bits (Q6_K: int8 scale, 6-bit q), within
float32's 24, and never leaves float32's exponent range. An exact product has one possible value, so the
order of the multiplications cannot change a bit: d * sc * q equals d * (sc * q). The one rounding in these
formats is Q4_K's subtraction, (d * sc) * q - (dmin * m) of two exact products. gguf-py computes it as a
float32 multiply, then a float32 subtract; a fused multiply-add fma(d * sc, q, -(dmin * m)) gives the same
bits because the product it skips rounding was exact. So a kernel that dequantizes in registers, with or
without FMA, produces exactly these values; the tests check it on random blocks (every finite scale) too.

    >>> block = np.frombuffer(np.float16(0.5).tobytes() + bytes([1, 2, 255] + [0] * 29), np.uint8)
    >>> dequantize_q8_0(block, 32)[:4]                  # q = 1, 2, -1 (255 as int8), 0
    array([ 0.5,  1. , -0.5,  0. ], dtype=float32)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


def _blocks(raw: np.ndarray, n_values: int, block_size: int, type_size: int) -> np.ndarray:
    """The bytes of `raw` as [n_blocks, type_size] (a view when raw is contiguous), checking the sizes."""
    raw = np.asarray(raw)
    if raw.dtype != np.uint8:
        raise TypeError(f"expected the raw bytes as uint8, got {raw.dtype}")
    if n_values % block_size != 0:
        raise ValueError(f"{n_values} values are not a whole number of blocks of {block_size}")
    n_blocks = n_values // block_size
    if raw.size != n_blocks * type_size:
        raise ValueError(f"{n_values} values need {n_blocks} blocks of {type_size} bytes = "
                         f"{n_blocks * type_size} bytes, got {raw.size}")
    return raw.reshape(n_blocks, type_size)


def _f16(field: np.ndarray) -> np.ndarray:  # [n_blocks, 2] uint8 -> [n_blocks, 1] float32
    """A little-endian float16 field of every block, widened to float32 (exactly: every float16 is a float32)."""
    return np.ascontiguousarray(field).view("<f2").astype(np.float32)


# --------------------------------------------------------------------------------------------------------
# 1. Plain floats
# --------------------------------------------------------------------------------------------------------

def dequantize_f32(raw: np.ndarray, n_values: int) -> np.ndarray:  # [4 * n] uint8 -> [n] float32
    """F32: no blocks, 4 little-endian bytes per value. The norms' scales are stored this way."""
    return _blocks(raw, n_values, 1, 4).view("<f4").astype(np.float32, copy=False).reshape(n_values)


# --------------------------------------------------------------------------------------------------------
# 2. Blocks of 32 with one scale: Q8_0, Q5_0
# --------------------------------------------------------------------------------------------------------

def dequantize_q8_0(raw: np.ndarray, n_values: int) -> np.ndarray:  # [34 * n / 32] uint8 -> [n] float32
    """Q8_0: 32 values in 34 bytes.

        bytes  0..1   d       float16, the block's scale
        bytes  2..33  q[32]   int8, one per value

        value[i] = d * q[i]          (exact in float32: 11 + 7 significant bits)
    """
    blocks = _blocks(raw, n_values, 32, 34)  # [n_blocks, 34]
    d = _f16(blocks[:, 0:2])  # [n_blocks, 1]
    q = blocks[:, 2:34].view(np.int8).astype(np.float32)  # [n_blocks, 32]
    return (d * q).reshape(n_values)


def dequantize_q5_0(raw: np.ndarray, n_values: int) -> np.ndarray:  # [22 * n / 32] uint8 -> [n] float32
    """Q5_0: 32 values in 22 bytes, 5 bits each: 4 low bits in a nibble, the 5th bit in a 32-bit mask.

        bytes  0..1   d        float16, the block's scale
        bytes  2..5   qh       uint32 (little-endian): bit i is the high (5th) bit of value i
        bytes  6..21  qs[16]   byte j: low nibble = low 4 bits of value j, high nibble = of value j + 16

        q[i]     = (low 4 bits) | (high bit << 4)      in 0..31
        value[i] = d * (q[i] - 16)                     (exact in float32: 11 + 4 significant bits)
    """
    d, q = _q5_0_fields(_blocks(raw, n_values, 32, 22))
    return (d * q.astype(np.float32)).reshape(n_values)


def _q5_0_fields(blocks: np.ndarray):  # [n_blocks, 22] -> d [n_blocks, 1] float32, q - 16 [n_blocks, 32] int8
    d = _f16(blocks[:, 0:2])  # [n_blocks, 1]
    qh = np.ascontiguousarray(blocks[:, 2:6]).view("<u4")  # [n_blocks, 1]
    qs = blocks[:, 6:22]  # [n_blocks, 16]
    low = np.concatenate([qs & 0x0F, qs >> 4], axis=1)  # [n_blocks, 32]  values 0..15, then 16..31
    high = (qh >> np.arange(32, dtype=np.uint32)) & 1  # [n_blocks, 32]
    q = (low | (high.astype(np.uint8) << 4)).astype(np.int8) - np.int8(16)  # [n_blocks, 32]  in -16..15
    return d, q


# --------------------------------------------------------------------------------------------------------
# 3. Super-blocks of 256 with a scale per sub-block: Q4_K, Q6_K ("k-quants")
# --------------------------------------------------------------------------------------------------------

def q4_k_scales_and_mins(scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # [n, 12] -> [n, 8], [n, 8]
    """The eight 6-bit scales sc[j] and mins m[j] of a Q4_K block, unpacked from its 12 scale bytes s.

    Sub-blocks 0..3 keep their 6 bits whole in the low bits of a byte; sub-blocks 4..7 have their low 4 bits
    in a nibble of s[8..11] and their top 2 bits in the spare top bits of s[0..7]:

        j < 4:   sc[j] = s[j] & 63                          m[j] = s[j + 4] & 63
        j >= 4:  sc[j] = (s[j + 4] & 15) | (s[j - 4] >> 6) << 4
                 m[j]  = (s[j + 4] >> 4) | (s[j]     >> 6) << 4

    >>> s = np.array([[0xC1, 2, 3, 4, 5, 6, 7, 8, 0x21, 0x43, 0x65, 0x87]], np.uint8)  # s[0] = 0b11000001
    >>> sc, m = q4_k_scales_and_mins(s); sc.tolist(), m.tolist()    # sc[4] = 1 | 3 << 4
    ([[1, 2, 3, 4, 49, 3, 5, 7]], [[5, 6, 7, 8, 2, 4, 6, 8]])
    """
    s0, s4, s8 = scales[:, 0:4], scales[:, 4:8], scales[:, 8:12]  # [n, 4] each: s[0..3], s[4..7], s[8..11]
    sc = np.concatenate([s0 & 63, (s8 & 15) | ((s0 >> 6) << 4)], axis=1)  # [n, 8]
    m = np.concatenate([s4 & 63, (s8 >> 4) | ((s4 >> 6) << 4)], axis=1)  # [n, 8]
    return sc, m


def dequantize_q4_k(raw: np.ndarray, n_values: int) -> np.ndarray:  # [144 * n / 256] uint8 -> [n] float32
    """Q4_K: 256 values in 144 bytes: 8 sub-blocks of 32, each with a 6-bit scale and a 6-bit min.

        bytes   0..1     d          float16, the scale of the sub-block scales
        bytes   2..3     dmin       float16, the scale of the sub-block mins
        bytes   4..15    scales     sc[8] and m[8], 6 bits each (q4_k_scales_and_mins)
        bytes  16..143   qs[128]    4 chunks of 32 bytes; chunk c holds sub-block 2c in its low nibbles
                                    and sub-block 2c + 1 in its high nibbles (value i of a sub-block in byte i)

        value = (d * sc[j]) * q - (dmin * m[j])    for value q (0..15) of sub-block j

    Float32 order (gguf-py's, which this reproduces): d * sc[j] and dmin * m[j] first, then (d * sc[j]) * q,
    then the subtraction. The products are exact (at most 11 + 6 + 4 bits), so only the subtraction rounds.
    """
    scale, offset, q = _q4_k_fields(_blocks(raw, n_values, 256, 144))
    return (scale * q.astype(np.float32) - offset).reshape(n_values)


def _q4_k_fields(blocks: np.ndarray):  # [n_blocks, 144] -> d * sc, dmin * m [n_blocks, 8, 1] float32, q [n_blocks, 8, 32] uint8
    n_blocks = blocks.shape[0]
    d = _f16(blocks[:, 0:2])  # [n_blocks, 1]
    dmin = _f16(blocks[:, 2:4])  # [n_blocks, 1]
    sc, m = q4_k_scales_and_mins(blocks[:, 4:16])  # [n_blocks, 8] each
    chunks = blocks[:, 16:144].reshape(n_blocks, 4, 1, 32)  # [n_blocks, chunk, 1, 32]
    q = np.concatenate([chunks & 0x0F, chunks >> 4], axis=2)  # [n_blocks, chunk, low/high, 32]
    q = q.reshape(n_blocks, 8, 32)  # [n_blocks, sub-block j = 2c + low/high, 32]  in 0..15
    scale = (d * sc.astype(np.float32))[:, :, None]  # [n_blocks, 8, 1]
    offset = (dmin * m.astype(np.float32))[:, :, None]  # [n_blocks, 8, 1]
    return scale, offset, q


def dequantize_q6_k(raw: np.ndarray, n_values: int) -> np.ndarray:  # [210 * n / 256] uint8 -> [n] float32
    """Q6_K: 256 values in 210 bytes: 16 sub-blocks of 16, each with an int8 scale; 6 bits per value.

        bytes    0..127   ql[128]     the low 4 bits of each value, in nibbles
        bytes  128..191   qh[64]      the high 2 bits of each value, four to a byte
        bytes  192..207   scales[16]  int8, one per sub-block of 16 values
        bytes  208..209   d           float16, the scale of the scales

    The 256 values are two halves of 128; half h reads ql[64h : 64h + 64] and qh[32h : 32h + 32]. Within a
    half, for l in 0..31, four values share qh[l], taking its bits 0-1, 2-3, 4-5, 6-7:

        value l       low bits: ql[l]      & 15    high bits: qh[l]      & 3
        value l + 32  low bits: ql[l + 32] & 15    high bits: qh[l] >> 2 & 3
        value l + 64  low bits: ql[l]      >> 4    high bits: qh[l] >> 4 & 3
        value l + 96  low bits: ql[l + 32] >> 4    high bits: qh[l] >> 6 & 3

        q = low | high << 4  (0..63),   value n = (d * scales[n // 16]) * (q - 32)

    Float32 order (gguf-py's): d * scales first, then times q - 32. Both products are exact (at most
    11 + 7 + 5 significant bits), so any order gives these bits.
    """
    scale, q = _q6_k_fields(_blocks(raw, n_values, 256, 210))
    return (scale * q.astype(np.float32)).reshape(n_values)


def _q6_k_fields(blocks: np.ndarray):  # [n_blocks, 210] -> d * scales [n_blocks, 16, 1] float32, q - 32 [n_blocks, 16, 16] int8
    n_blocks = blocks.shape[0]
    ql = blocks[:, 0:128].reshape(n_blocks, 2, 2, 32)  # [n_blocks, half, ql[l] / ql[l + 32], 32]
    qh = blocks[:, 128:192].reshape(n_blocks, 2, 1, 32)  # [n_blocks, half, 1, 32]
    low = np.concatenate([ql & 15, ql >> 4], axis=2)  # [n_blocks, half, 4, 32]  values l, l+32, l+64, l+96
    high = (qh >> np.array([0, 2, 4, 6], np.uint8)[:, None]) & 3  # [n_blocks, half, 4, 32]
    q = (low | (high << 4)).astype(np.int8) - np.int8(32)  # [n_blocks, half, 4, 32]  in -32..31
    scales = blocks[:, 192:208].view(np.int8).astype(np.float32)  # [n_blocks, 16]
    d = _f16(blocks[:, 208:210])  # [n_blocks, 1]
    return (d * scales)[:, :, None], q.reshape(n_blocks, 16, 16)


# --------------------------------------------------------------------------------------------------------
# 4. tinyspec's own 8-bit layouts: the same values, one byte each, for a cheaper unpacking
# --------------------------------------------------------------------------------------------------------
#
# Turning 8 values of Q8_0 into float32 takes a kernel two instructions (widen the int8s, convert); Q5_0's
# 5-bit values take about 13 (shifts, masks, the 5th bits), and Q4_K's and Q6_K's scales cost more again.
# At one row of x a matmul is bound by that unpacking, not by reading memory (bench/backends.py --matrices).
# So `repack` lays the layers' blocks out again, once, when the quant backend loads them: every q in a byte
# of its own, its scale beside it. The values are the same float32 numbers, so the kernels stay bitwise
# equal to float32; the price is bytes (8.5 to 10 bits a value instead of 4.5 to 6.5). These two layouts
# are tinyspec's, in no file; their numbers continue ggml's from 1000 so that no ggml type is taken:
#
#     type     id    values  bytes  bits/value  value             made from
#     Q8_0      8      32      34     8.5       d * q             Q5_0: the same d, and q - 16 as int8
#     S8_16  1016      16      20    10         scale * q         Q6_K: scale = d * sc (float32), q - 32 as int8
#     S8M_32 1032      32      40    10         scale * q - min   Q4_K: d * sc and dmin * m (float32), q as int8
#
#     S8_16:  bytes 0..3 scale (float32, little-endian), bytes 4..19 q[16] (int8)
#     S8M_32: bytes 0..3 scale, bytes 4..7 min (float32), bytes 8..39 q[32] (int8, 0..15 here)
#
# Every value is the product (and, for S8M_32, the one rounded difference) its file format defines, of the
# same float32 numbers: bitwise the file's values (tests/test_quant.py).

def _f32(field: np.ndarray) -> np.ndarray:  # [n_blocks, 4] uint8 -> [n_blocks, 1] float32
    """A little-endian float32 field of every block (`repack` writes the machine's float32 bytes: tinyspec, like
    GGUF files and the kernels' `fload`, assumes a little-endian machine)."""
    return np.ascontiguousarray(field).view("<f4").astype(np.float32, copy=False)


def dequantize_s8_16(raw: np.ndarray, n_values: int) -> np.ndarray:  # [20 * n / 16] uint8 -> [n] float32
    blocks = _blocks(raw, n_values, 16, 20)  # [n_blocks, 20]
    return (_f32(blocks[:, 0:4]) * blocks[:, 4:20].view(np.int8).astype(np.float32)).reshape(n_values)


def dequantize_s8m_32(raw: np.ndarray, n_values: int) -> np.ndarray:  # [40 * n / 32] uint8 -> [n] float32
    blocks = _blocks(raw, n_values, 32, 40)  # [n_blocks, 40]
    q = blocks[:, 8:40].view(np.int8).astype(np.float32)
    return (_f32(blocks[:, 0:4]) * q - _f32(blocks[:, 4:8])).reshape(n_values)


def _as_bytes(*fields: np.ndarray) -> np.ndarray:  # [n, a], [n, b], ... (any dtypes) -> [n, a + b + ...] uint8
    n = fields[0].shape[0]
    return np.concatenate([np.ascontiguousarray(f).reshape(n, -1).view(np.uint8) for f in fields], axis=1)


def repack(raw: np.ndarray, qtype, shape: tuple[int, ...]) -> tuple["BlockFormat", np.ndarray]:
    """A matrix's Q5_0, Q4_K or Q6_K blocks laid out again as Q8_0, S8M_32 or S8_16 (above): the same
    float32 values, one byte per q. raw is the [rows, bytes per row] blocks of a matrix of `shape`; returns the
    new format and its [rows, bytes per row] blocks. Other formats come back as they are.

    >>> d = np.float16(0.5).tobytes(); qh = bytes([0xFF, 0, 0, 0]); qs = bytes([0x21] * 16)   # values 0, 8, 16: q = 17, 1, 2
    >>> fmt, out = repack(np.frombuffer(d + qh + qs, np.uint8).reshape(1, 22), "Q5_0", (1, 32))
    >>> fmt.name, dequantize(out, fmt.name, (1, 32))[0, [0, 8, 16]], dequantize_q5_0(np.frombuffer(d + qh + qs, np.uint8), 32)[[0, 8, 16]]
    ('Q8_0', array([ 0.5, -7.5, -7. ], dtype=float32), array([ 0.5, -7.5, -7. ], dtype=float32))
    """
    fmt = block_format(qtype)
    rows, n_values = shape[0], int(np.prod(shape, dtype=np.int64))
    if fmt.name == "Q5_0":
        blocks = _blocks(raw, n_values, 32, 22)
        _, q = _q5_0_fields(blocks)
        new, out = FORMATS["Q8_0"], _as_bytes(blocks[:, 0:2], q)  # the same float16 d, q - 16
    elif fmt.name == "Q6_K":
        scale, q = _q6_k_fields(_blocks(raw, n_values, 256, 210))
        new, out = OWN_FORMATS["S8_16"], _as_bytes(scale.reshape(-1, 1), q.reshape(-1, 16))
    elif fmt.name == "Q4_K":
        scale, offset, q = _q4_k_fields(_blocks(raw, n_values, 256, 144))
        new, out = OWN_FORMATS["S8M_32"], _as_bytes(scale.reshape(-1, 1), offset.reshape(-1, 1), q.reshape(-1, 32))
    else:
        return fmt, raw
    return new, out.reshape(rows, -1)


# --------------------------------------------------------------------------------------------------------
# 5. The tables of formats, and one entry point
# --------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BlockFormat:
    name: str  # ggml's name of the type: "Q8_0" (or one of tinyspec's own layouts, section 4)
    ggml_type: int  # its number in GGUF files (ggml's enum ggml_type); from 1000 on, tinyspec's own
    block_size: int  # values per block
    type_size: int  # bytes per block
    dequantize: Callable[[np.ndarray, int], np.ndarray]  # (raw uint8, n_values) -> [n_values] float32

    def n_bytes(self, n_values: int) -> int:
        """Bytes that hold n_values (a whole number of blocks)."""
        if n_values % self.block_size:
            raise ValueError(f"{self.name} stores values in blocks of {self.block_size}; {n_values} is not a multiple")
        return n_values // self.block_size * self.type_size


FORMATS = {f.name: f for f in [
    BlockFormat("F32", 0, 1, 4, dequantize_f32),
    BlockFormat("Q5_0", 6, 32, 22, dequantize_q5_0),
    BlockFormat("Q8_0", 8, 32, 34, dequantize_q8_0),
    BlockFormat("Q4_K", 12, 256, 144, dequantize_q4_k),
    BlockFormat("Q6_K", 14, 256, 210, dequantize_q6_k),
]}
OWN_FORMATS = {f.name: f for f in [  # section 4: made by `repack`, never in a file
    BlockFormat("S8_16", 1016, 16, 20, dequantize_s8_16),
    BlockFormat("S8M_32", 1032, 32, 40, dequantize_s8m_32),
]}
OWN_TYPES = 1000  # the first number of tinyspec's own layouts
BY_GGML_TYPE = {f.ggml_type: f for f in [*FORMATS.values(), *OWN_FORMATS.values()]}


def block_format(qtype) -> BlockFormat:
    """The format of a type given by name ("Q4_K"), ggml number (12) or gguf.GGMLQuantizationType."""
    fmt = (FORMATS.get(qtype) or OWN_FORMATS.get(qtype)) if isinstance(qtype, str) else BY_GGML_TYPE.get(int(qtype))
    if fmt is None:
        raise NotImplementedError(f"block type {getattr(qtype, 'name', qtype)!r} is not one tinyspec reads; "
                                  f"it reads {', '.join(FORMATS)} (the types of Gemma 3 270M Q4_K_M)")
    return fmt


def dequantize(raw: np.ndarray, qtype, shape: tuple[int, ...]) -> np.ndarray:  # raw uint8 -> float32 [*shape]
    """The float32 values of a tensor of `shape` stored as `qtype` blocks in `raw` (rows along the last axis).

    >>> row0 = np.float16(-2).tobytes() + bytes(range(32))     # one Q8_0 block per row: d, then q = 0..31
    >>> row1 = np.float16(0.25).tobytes() + bytes(range(32))
    >>> dequantize(np.frombuffer(row0 + row1, np.uint8), "Q8_0", (2, 32))[:, :3]
    array([[-0.  , -2.  , -4.  ],
           [ 0.  ,  0.25,  0.5 ]], dtype=float32)
    """
    fmt = block_format(qtype)
    shape = tuple(int(n) for n in shape)
    if shape and shape[-1] % fmt.block_size:
        raise ValueError(f"a {fmt.name} row holds whole blocks of {fmt.block_size} values; shape {shape} does not")
    n_values = int(np.prod(shape, dtype=np.int64))
    return fmt.dequantize(raw, n_values).reshape(shape)
