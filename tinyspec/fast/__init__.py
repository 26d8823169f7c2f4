"""The fast backend: Numba kernels for the three heavy operations of tinyspec/ops.py.

    kernels.py   matmul, attention and RMSNorm, batch-invariant, and RoPE's rotation; the "numba" backend
                 table (`NUMBA`)
    simd.py      an 8 x float32 register as a Numba type: vload, vfma, vsum, vstore, prefetch (the kernels' tiles)

Nothing here is needed to read or run the model with backend="numpy": `tinyspec.ops.get_ops("numba")` is
what imports this package (and Numba).
"""
