"""The forward pass's three heavy operations in plain NumPy, and the backend table the model calls them through.

Read it beside model.py. These three are the operations that sum over many terms, so their last bits could
depend on how many rows are computed together; everything else in the model is element-wise NumPy, which
computes each element alone, the same way whatever the array's length (tests/test_kernels.py checks that on
the machine it runs on).

    matmul     x [M, K] times W [N, K] transposed -> [M, N]
    attention  M new queries over the cache: causal, and on local layers a sliding window
    rms_norm   each row divided by its root mean square, times a scale

and one element-wise operation, in the table only for speed: `rotate`, RoPE's rotation (model.rope), seven
small NumPy operations per call here and one call in the numba table, bitwise the same.

    >>> x = np.arange(6, dtype=np.float32).reshape(2, 3); W = np.ones((4, 3), np.float32)
    >>> matmul(x, W)
    array([[ 3.,  3.,  3.,  3.],
           [12., 12., 12., 12.]], dtype=float32)

The backend table: `get_ops("numpy")` returns the functions below, the readable reference. `get_ops("numba")`
returns the fast kernels of `tinyspec.fast`, which compute each row the same way whatever the other rows
(batch-invariant: speculative decoding's exactness rests on it); Numba is imported only then.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


def matmul(x, W):  # [M, K], [N, K] -> [M, N]
    """x @ W.T: W is stored as the checkpoint stores it, one output feature per row."""
    return x @ W.T  # [M, N]


def attention(q, k_cache, v_cache, start, window, scale):  # [M, Hq, D], [T_cap, Hkv, D] x2 -> [M, Hq, D]
    """Grouped-query attention of M new queries (positions start .. start+M-1) over the cache.

    Query head h reads kv head h // (Hq // Hkv). The query at position p sees keys at positions lo .. p, where
    lo = max(0, p - window + 1) (window counts the current position; window = 0 means no window)."""
    M, Hq, D = q.shape
    T = start + M  # valid cache rows; rows past T are never read
    group = Hq // k_cache.shape[1]
    k = np.repeat(k_cache[:T], group, axis=1)  # [T, Hq, D]  each kv head serves `group` query heads
    v = np.repeat(v_cache[:T], group, axis=1)  # [T, Hq, D]
    scores = np.einsum("mhd,thd->hmt", q, k) * np.float32(scale)  # [Hq, M, T]
    pos_q = np.arange(start, T)[:, None]  # [M, 1]
    pos_k = np.arange(T)[None, :]  # [1, T]
    visible = pos_k <= pos_q  # [M, T]  causal
    if window > 0:
        visible &= pos_k > pos_q - window  # [M, T]  sliding window
    scores = np.where(visible, scores, -np.inf)  # [Hq, M, T]
    p = np.exp(scores - scores.max(axis=-1, keepdims=True))  # [Hq, M, T]
    p /= p.sum(axis=-1, keepdims=True)  # [Hq, M, T]  softmax over the visible keys
    return np.einsum("hmt,thd->mhd", p, v).astype(np.float32)  # [M, Hq, D]


def rms_norm(x, scale, eps):  # [R, D], [D] -> [R, D]
    """x / sqrt(mean(x^2) + eps) * scale, row by row (scale is the full multiplier: Gemma's 1 + w)."""
    return (x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + np.float32(eps)) * scale).astype(np.float32)


def rotate(x, cos, sin):  # [M, heads, hd], [M, 1, hd/2] x2 -> [M, heads, hd]
    """RoPE's "rotate half": dimension i and i + hd/2 of each head rotated by the angle whose cos and sin are
    given (model.rope computes them from the positions)."""
    hd = x.shape[-1]
    x1, x2 = x[..., : hd // 2], x[..., hd // 2:]  # [M, heads, hd/2] each
    return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)  # [M, heads, hd]


# The backend table ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Ops:
    matmul: Callable  # (x [M, K], W [N, K]) -> x @ W.T [M, N]
    attention: Callable  # (q [M, Hq, D], k_cache, v_cache [T_cap, Hkv, D], start, window, scale) -> [M, Hq, D]
    rms_norm: Callable  # (x [R, D], scale [D], eps) -> [R, D]
    rotate: Callable = rotate  # (x [M, heads, hd], cos, sin [M, 1, hd/2]) -> [M, heads, hd]


NUMPY = Ops(matmul=matmul, attention=attention, rms_norm=rms_norm)


def get_ops(name: str) -> Ops:
    """The table of a backend: "numpy" (above), "numba" (tinyspec/fast/kernels.py, imported only here) or
    "quant" (the numba table with matmul on the GGUF's quantized blocks: tinyspec/quant/kernels.py)."""
    if name == "numpy":
        return NUMPY
    if name == "numba":
        from .fast.kernels import NUMBA

        return NUMBA
    if name == "quant":
        from .quant.kernels import QUANT

        return QUANT
    raise ValueError(f"unknown backend {name!r}: choose one of numba, numpy, quant")
