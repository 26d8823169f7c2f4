"""8 bytes of a quantized block as a Numba register value, and the few integer operations that unpack a block's
fields into 8 small integers q and turn them into the 8 float32 weights they stand for.

tinyspec.fast.simd has the 8 x float32 register (f32x8) the matmul sums in. The quantized kernels fill it from
bytes instead of from floats: 8 consecutive values of a block have their bits in 8 consecutive bytes (or, for
Q5_0's 5th bits, in one byte), so each format's "8 values" is a few of these operations, one LLVM instruction
each on an <8 x i8> value:

    q = bor(band(bshr(bload(raw, n, p), 4), 15), bshl(high, 4))     # lane i: (raw[n, p+i] >> 4 & 15) | high[i] << 4
    w = vmul(vfloat(q, -16), d)                                      # lane i: d * float32(q[i] - 16)

Shift counts and masks are the same in every lane (except `bshr_lanes`, which shifts lane i by i), given as
integers; the kernels pass constants, which LLVM folds in. Lanes are unsigned bytes until `vfloat`, which
reads them as int8 (Q8_0's q is int8; the other formats' q fit in 0..63, so int8 reads them unchanged).

The float operations round as the block formats' definitions do (tinyspec.quant.blocks): `vmul` is one float32
multiply per lane, `vmulsub` a multiply then a subtraction, each rounded, never fused. The loads read
raw[n, p .. p+7] of a C-contiguous uint8 matrix without bounds checks: the callers keep p + 8 <= the row length.
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

@intrinsic
def bload(typingctx, raw, n, p):  # raw [R, B] uint8, row n, byte p -> u8x8 of raw[n, p : p+8]
    if not _u8_matrix(raw):
        return None
    def codegen(context, builder, sig, args):
        arr = context.make_array(sig.args[0])(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, sig.args[0], arr, [args[1], args[2]])
        return builder.load(builder.bitcast(ptr, _BYTES.as_pointer()), align=1)
    return u8x8(raw, types.intp, types.intp), codegen


@intrinsic
def bsplat(typingctx, b):  # integer -> u8x8 with its low 8 bits in every lane
    if not isinstance(b, types.Integer):
        return None
    def codegen(context, builder, sig, args):
        return _splat(builder, _byte(context, builder, args[0], sig.args[0]), _BYTES)
    return u8x8(b), codegen


# 2. Bit fields --------------------------------------------------------------------------------------------

def _lanewise(op):  # an intrinsic (u8x8, integer) -> u8x8 applying builder.<op>(v, splat(integer))
    @intrinsic
    def apply(typingctx, v, s):
        if v != u8x8 or not isinstance(s, types.Integer):
            return None
        def codegen(context, builder, sig, args):
            return getattr(builder, op)(args[0], _splat(builder, _byte(context, builder, args[1], sig.args[1]), _BYTES))
        return u8x8(u8x8, s), codegen
    return apply


bshr = _lanewise("lshr")  # (u8x8, s) -> every lane shifted right by s (0 <= s < 8), zeros in from the left
bshl = _lanewise("shl")  # (u8x8, s) -> every lane shifted left by s (0 <= s < 8), high bits dropped
band = _lanewise("and_")  # (u8x8, mask) -> every lane & mask


@intrinsic
def bor(typingctx, a, b):  # u8x8, u8x8 -> a | b, lane by lane
    if a != u8x8 or b != u8x8:
        return None
    def codegen(context, builder, sig, args):
        return builder.or_(args[0], args[1])
    return u8x8(u8x8, u8x8), codegen


@intrinsic
def bshr_lanes(typingctx, v):  # u8x8 -> lane i shifted right by i (8 copies of a byte -> its 8 bits, in lane i's bit 0)
    if v != u8x8:
        return None
    def codegen(context, builder, sig, args):
        return builder.lshr(args[0], ir.Constant(_BYTES, list(range(WIDTH))))
    return u8x8(u8x8), codegen


# 3. To float32 --------------------------------------------------------------------------------------------

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
