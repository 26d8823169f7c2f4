"""Bytes of a quantized block in registers, and the few integer operations that unpack a block's fields into 8
small integers q and turn them into the 8 float32 weights they stand for.

tinyspec.fast.simd has the 8 x float32 register (f32x8) the matmul sums in. The quantized kernels fill it from
bytes instead of from floats. 8 consecutive values of a block have their bits in 8 consecutive bytes (or, for
Q5_0's 5th bits, in one 32-bit word), so each format's "8 values" is a few of these operations, one LLVM
instruction each:

    Q8_0    bload, vfloat                     8 bytes as <8 x i8>, read as int8 and converted (vpmovsxbd, vcvtdq2ps)
            (and tinyspec's own S8_16, S8M_32, whose float32 scales `fload` reads)
    others  wload, wshr, wandi, ..., wfloat   8 bytes widened to <8 x i32> (vpmovzxbd), the fields cut out there

    q = wandi(wshr(wload(raw, n, p), 4), 15)     # lane i: raw[n, p+i] >> 4 & 15
    w = vmul(wfloat(waddi(q, -16)), d)            # lane i: d * float32(q[i] - 16)

Why int32 lanes for the fields: AVX2 has no byte shifts, and none that shift each lane by its own count, so
LLVM emulates those on <8 x i8> with chains of word multiplies and packs: in the compiled one-row Q5_0 tile,
about 21 instructions per 8 weights and row, against about 13 in int32 lanes, where `wbits` and a compare pick
one bit per lane and a shift by the same count in every lane is one instruction, whatever the count.

Shift counts and masks are the same in every lane (except `wbits`'s, lane i's own bit), given as integers. The
float operations round as the block formats' definitions do (tinyspec.quant.blocks): `vmul` is one float32
multiply per lane, `vmulsub` a multiply then a subtraction, each rounded, never fused; `vfloat` and `wfloat`
convert small integers, exactly. The loads read raw[n, p .. p+7] of a C-contiguous uint8 matrix without bounds
checks: the callers keep p + 8 <= the row length.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

from ..fast.simd import WIDTH, f32x8

_BYTES = ir.VectorType(ir.IntType(8), WIDTH)
_FLOATS = ir.VectorType(ir.FloatType(), WIDTH)


class U8x8(types.Type):
    """The Numba type of 8 bytes in a register."""

    def __init__(self):
        super().__init__(name="u8x8")


u8x8 = U8x8()


@register_model(U8x8)
class _U8x8Model(models.PrimitiveModel):  # lowered to LLVM's <8 x i8>
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _BYTES)


def _u8_matrix(a):  # is the Numba type a C-contiguous uint8 matrix?
    return isinstance(a, types.Array) and a.ndim == 2 and a.dtype == types.uint8 and a.layout == "C"


def _splat(builder, value, vtype):  # a scalar in every lane of vtype
    v = ir.Constant(vtype, ir.Undefined)
    for lane in range(WIDTH):
        v = builder.insert_element(v, value, ir.Constant(ir.IntType(32), lane))
    return v


def _byte(context, builder, value, ty):  # an integer scalar of Numba type ty -> its low 8 bits as an LLVM i8
    return context.cast(builder, value, ty, types.uint8)


# 1. From memory, from a scalar ----------------------------------------------------------------------------

def _load_at(context, builder, sig, args, ltype):  # (raw, n, p) -> the LLVM value of type ltype at raw[n, p], unaligned
    arr = context.make_array(sig.args[0])(context, builder, args[0])
    ptr = cgutils.get_item_pointer(context, builder, sig.args[0], arr, [args[1], args[2]])
    return builder.load(builder.bitcast(ptr, ltype.as_pointer()), align=1)


@intrinsic
def bload(typingctx, raw, n, p):  # raw [R, B] uint8, row n, byte p -> u8x8 of raw[n, p : p+8]
    if not _u8_matrix(raw):
        return None
    def codegen(context, builder, sig, args):
        return _load_at(context, builder, sig, args, _BYTES)
    return u8x8(raw, types.intp, types.intp), codegen


@intrinsic
def fload(typingctx, raw, n, p):  # raw [R, B] uint8, row n, byte p -> the little-endian float32 in raw[n, p : p+4]
    """A scale stored as 4 bytes inside a block (tinyspec's own layouts, tinyspec.quant.blocks section 4)."""
    if not _u8_matrix(raw):
        return None
    def codegen(context, builder, sig, args):
        return _load_at(context, builder, sig, args, ir.FloatType())
    return types.float32(raw, types.intp, types.intp), codegen


# 2. To float32 --------------------------------------------------------------------------------------------

@intrinsic
def vfloat(typingctx, v, offset):  # u8x8, integer -> f32x8 of float32(int8(v[i]) + offset) (exact)
    """The lanes read as int8 plus a small offset (the callers keep the sum in -128..127), converted exactly."""
    if v != u8x8 or not isinstance(offset, types.Integer):
        return None
    def codegen(context, builder, sig, args):
        q = builder.add(args[0], _splat(builder, _byte(context, builder, args[1], sig.args[1]), _BYTES))
        return builder.sitofp(q, _FLOATS)
    return f32x8(u8x8, offset), codegen


@intrinsic
def vmul(typingctx, v, d):  # f32x8, float32 -> d * v[i], lane by lane, each rounded once
    if v != f32x8 or d != types.float32:
        return None
    def codegen(context, builder, sig, args):
        return builder.fmul(_splat(builder, args[1], _FLOATS), args[0])
    return f32x8(f32x8, types.float32), codegen


@intrinsic
def vmulsub(typingctx, v, s, o):  # f32x8, float32, float32 -> s * v[i] - o: the product rounded, then the difference
    if v != f32x8 or s != types.float32 or o != types.float32:
        return None
    def codegen(context, builder, sig, args):
        product = builder.fmul(_splat(builder, args[1], _FLOATS), args[0])
        return builder.fsub(product, _splat(builder, args[2], _FLOATS))
    return f32x8(f32x8, types.float32, types.float32), codegen


# 3. Eight int32 lanes: where the fields are cut out (see the module docstring for why) ---------------------

_INTS = ir.VectorType(ir.IntType(32), WIDTH)


class I32x8(types.Type):
    """The Numba type of 8 int32 lanes in a register."""

    def __init__(self):
        super().__init__(name="i32x8")


i32x8 = I32x8()


@register_model(I32x8)
class _I32x8Model(models.PrimitiveModel):  # lowered to LLVM's <8 x i32>
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _INTS)


def _int32(context, builder, value, ty):  # an integer scalar of Numba type ty -> an LLVM i32
    return context.cast(builder, value, ty, types.int32)


@intrinsic
def wload(typingctx, raw, n, p):  # raw [R, B] uint8, row n, byte p -> i32x8 of raw[n, p : p+8], zero-extended
    if not _u8_matrix(raw):
        return None
    def codegen(context, builder, sig, args):
        return builder.zext(_load_at(context, builder, sig, args, _BYTES), _INTS)
    return i32x8(raw, types.intp, types.intp), codegen


@intrinsic
def wsplat(typingctx, b):  # integer -> i32x8 with its low 32 bits in every lane
    if not isinstance(b, types.Integer):
        return None
    def codegen(context, builder, sig, args):
        return _splat(builder, _int32(context, builder, args[0], sig.args[0]), _INTS)
    return i32x8(b), codegen


@intrinsic
def wbits(typingctx, j):  # integer j -> i32x8, lane i: 1 << (8 j + i), the mask of bit 8 j + i (0 <= j < 4)
    if not isinstance(j, types.Integer):
        return None
    def codegen(context, builder, sig, args):
        base = ir.Constant(_INTS, [1 << i for i in range(WIDTH)])
        eight_j = builder.mul(_int32(context, builder, args[0], sig.args[0]), ir.Constant(ir.IntType(32), 8))
        return builder.shl(base, _splat(builder, eight_j, _INTS))
    return i32x8(j), codegen


def _lanewise_w(op):  # an intrinsic (i32x8, integer) -> i32x8 applying builder.<op>(v, splat(integer))
    @intrinsic
    def apply(typingctx, v, s):
        if v != i32x8 or not isinstance(s, types.Integer):
            return None
        def codegen(context, builder, sig, args):
            return getattr(builder, op)(args[0], _splat(builder, _int32(context, builder, args[1], sig.args[1]), _INTS))
        return i32x8(i32x8, s), codegen
    return apply


wshr = _lanewise_w("lshr")  # (i32x8, s) -> every lane shifted right by s, zeros in from the left
wshl = _lanewise_w("shl")  # (i32x8, s) -> every lane shifted left by s
wandi = _lanewise_w("and_")  # (i32x8, mask) -> every lane & mask (a negative mask: its two's complement)
waddi = _lanewise_w("add")  # (i32x8, integer) -> every lane + it


@intrinsic
def wand(typingctx, a, b):  # i32x8, i32x8 -> a & b, lane by lane
    if a != i32x8 or b != i32x8:
        return None
    def codegen(context, builder, sig, args):
        return builder.and_(args[0], args[1])
    return i32x8(i32x8, i32x8), codegen


@intrinsic
def wadd(typingctx, a, b):  # i32x8, i32x8 -> a + b, lane by lane
    if a != i32x8 or b != i32x8:
        return None
    def codegen(context, builder, sig, args):
        return builder.add(args[0], args[1])
    return i32x8(i32x8, i32x8), codegen


@intrinsic
def wzero_mask(typingctx, a):  # i32x8 -> lane i: -1 (all bits set) where a[i] == 0, else 0
    if a != i32x8:
        return None
    def codegen(context, builder, sig, args):
        return builder.sext(builder.icmp_unsigned("==", args[0], ir.Constant(_INTS, [0] * WIDTH)), _INTS)
    return i32x8(i32x8), codegen


@intrinsic
def wfloat(typingctx, v):  # i32x8 -> f32x8 of float32(v[i]) (exact for |v| < 2**24)
    if v != i32x8:
        return None
    def codegen(context, builder, sig, args):
        return builder.sitofp(args[0], _FLOATS)
    return f32x8(i32x8), codegen
