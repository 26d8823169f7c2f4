"""An 8 x float32 SIMD register as a Numba type, the five operations the kernels build dot products from, and
a prefetch hint.

Numba has no vector type: it vectorizes loops when LLVM decides it can, and keeps a running sum in a register
only when the loop around it is simple enough. The matmul tile needs twelve 8-lane running sums to stay in
registers for the whole length of a row, which LLVM's vectorizer does not do by itself (the auto-vectorized
tile was measurably slower: bench/results.md, "Kernel design measurements"). So the kernels say it explicitly:

    acc = vzero()                      # 8 lanes of 0.0
    for k in range(0, kend, WIDTH):
        acc = vfma(vload(x, m, k), vload(W, n, k), acc)   # lane l: acc[l] = x[m, k+l] * W[n, k+l] + acc[l]

Each operation is one LLVM instruction on a <8 x float> value (one AVX2 register on x86, two NEON registers on
ARM). `vfma` is llvm.fma, a fused multiply-add rounded once, on every machine: the sums the kernels compute
do not depend on whether the compiler chose to fuse. (A CPU without FMA instructions gets it computed in
software: the same bits, much slower.) `fma` is the same for one float32.

The loads read x[i, k .. k+7] of a C-contiguous float32 2-D array without bounds checks (as Numba's own
indexing does by default): the callers keep k + 8 <= the row length.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

WIDTH = 8  # float32 lanes in one register (AVX2: 256 bits)
_VEC = ir.VectorType(ir.FloatType(), WIDTH)


class F32x8(types.Type):
    """The Numba type of an 8 x float32 register value."""

    def __init__(self):
        super().__init__(name="f32x8")


f32x8 = F32x8()


@register_model(F32x8)
class _F32x8Model(models.PrimitiveModel):  # lowered to LLVM's <8 x float>: lives in a register
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _VEC)


def _f32_array(a, ndim, layouts="C"):  # is the Numba type a float32 array of ndim dimensions, of these layouts?
    return isinstance(a, types.Array) and a.ndim == ndim and a.dtype == types.float32 and a.layout in layouts


def _llvm_fma(builder, vtype):
    name = "llvm.fma.v8f32" if vtype is _VEC else "llvm.fma.f32"
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(vtype, [vtype] * 3), name)


@intrinsic
def vzero(typingctx):  # () -> f32x8 of zeros
    def codegen(context, builder, sig, args):
        return ir.Constant(_VEC, [0.0] * WIDTH)
    return f32x8(), codegen


@intrinsic
def vload(typingctx, a, i, k):  # a [R, K] float32, row i, column k -> f32x8 of a[i, k : k+8]
    if not _f32_array(a, 2, "CA"):  # rows may be strided (attention's keys of one head); a row's 8 are adjacent
        return None  # not a C-contiguous float32 matrix: Numba reports that no signature matches
    def codegen(context, builder, sig, args):
        arr = context.make_array(sig.args[0])(context, builder, args[0])
        p = cgutils.get_item_pointer(context, builder, sig.args[0], arr, [args[1], args[2]])
        return builder.load(builder.bitcast(p, _VEC.as_pointer()), align=4)
    return f32x8(a, types.intp, types.intp), codegen


@intrinsic
def vstore(typingctx, a, i, j, v):  # a [R, S, 8] float32, v -> a[i, j, 0:8] = v
    if not _f32_array(a, 3):
        return None
    def codegen(context, builder, sig, args):
        arr = context.make_array(sig.args[0])(context, builder, args[0])
        zero = ir.Constant(ir.IntType(64), 0)
        p = cgutils.get_item_pointer(context, builder, sig.args[0], arr, [args[1], args[2], zero])
        builder.store(args[3], builder.bitcast(p, _VEC.as_pointer()), align=4)
        return context.get_dummy_value()
    return types.void(a, types.intp, types.intp, f32x8), codegen


@intrinsic
def vput(typingctx, a, i, k, v):  # a [R, K] float32, v -> a[i, k : k+8] = v
    if not _f32_array(a, 2):
        return None
    def codegen(context, builder, sig, args):
        arr = context.make_array(sig.args[0])(context, builder, args[0])
        p = cgutils.get_item_pointer(context, builder, sig.args[0], arr, [args[1], args[2]])
        builder.store(args[3], builder.bitcast(p, _VEC.as_pointer()), align=4)
        return context.get_dummy_value()
    return types.void(a, types.intp, types.intp, f32x8), codegen


@intrinsic
def vsplat(typingctx, x):  # float32 -> f32x8 with x in every lane
    def codegen(context, builder, sig, args):
        v = builder.insert_element(ir.Constant(_VEC, ir.Undefined), args[0], ir.Constant(ir.IntType(32), 0))
        return builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(ir.IntType(32), WIDTH), [0] * WIDTH))
    return f32x8(types.float32), codegen


@intrinsic
def vfma(typingctx, a, b, c):  # f32x8 x3 -> a * b + c, lane by lane, each rounded once
    def codegen(context, builder, sig, args):
        return builder.call(_llvm_fma(builder, _VEC), args)
    return f32x8(f32x8, f32x8, f32x8), codegen


@intrinsic
def vsum(typingctx, v):  # f32x8 -> float32: lane l + 4 added onto lane l, then l + 2, then l + 1
    """The 8 lanes added as the kernels' fixed tree, in registers: v[l] + v[l + 4] for l < 4, those four
    folded the same way onto two, then the two added. Each step is one float32 addition, so the result is
    bitwise the scalar tree's (kernels._finish without remainder terms)."""
    def codegen(context, builder, sig, args):
        i32 = ir.IntType(32)

        def lanes(a, idx):
            return builder.shuffle_vector(a, a, ir.Constant(ir.VectorType(i32, len(idx)), idx))
        four = builder.fadd(lanes(args[0], [0, 1, 2, 3]), lanes(args[0], [4, 5, 6, 7]))
        two = builder.fadd(lanes(four, [0, 1]), lanes(four, [2, 3]))
        return builder.fadd(builder.extract_element(two, ir.Constant(i32, 0)),
                            builder.extract_element(two, ir.Constant(i32, 1)))
    return types.float32(f32x8), codegen


@intrinsic
def fma(typingctx, a, b, c):  # float32 x3 -> a * b + c rounded once
    def codegen(context, builder, sig, args):
        return builder.call(_llvm_fma(builder, ir.FloatType()), args)
    return types.float32(types.float32, types.float32, types.float32), codegen


@intrinsic
def prefetch(typingctx, a, i, k):  # a [R, K] float32: ask for the cache line holding a[i, k]; no result
    """A hint (llvm.prefetch): the CPU starts loading the line into its caches and goes on. It never faults,
    so a row past the end would be harmless; the kernels only name rows they will read."""
    if not _f32_array(a, 2):
        return None
    def codegen(context, builder, sig, args):
        arr = context.make_array(sig.args[0])(context, builder, args[0])
        p = cgutils.get_item_pointer(context, builder, sig.args[0], arr, [args[1], args[2]])
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        f = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                                           "llvm.prefetch.p0i8")
        read, all_levels, data = (ir.Constant(i32, v) for v in (0, 3, 1))
        builder.call(f, [builder.bitcast(p, i8p), read, all_levels, data])
        return context.get_dummy_value()
    return types.void(a, types.intp, types.intp), codegen
