"""The MTP drafter's layers, each as a forward/backward pair, written out by hand.

Every `*_forward` returns (output, tape): the tape holds what its `*_backward` needs. Every `*_backward` takes
the gradient of the loss with respect to the output and returns the gradient with respect to the input
(and to the layer's parameters). The functions follow the dtype of their input: the drafter runs them in
float32, and tests/test_mtp.py checks every backward against central finite differences in float64.

    >>> x = np.array([[3.0, 4.0]]); y, tape = rms_norm_forward(x, np.array([1.0, 2.0]), eps=0.0)
    >>> np.round(y, 4).tolist()     # rms(x) = sqrt((9 + 16) / 2) = 3.5355
    [[0.8485, 2.2627]]

The target's keys and values are inputs here, never parameters: the drafter only learns to read them.
"""

from __future__ import annotations

import numpy as np

from ..model import gelu_tanh, rope


# --- linear: y = x W^T (a checkpoint's [out, in] layout, like every matrix in tinyspec) --------------------

def linear_forward(x, W, matmul=None):  # [M, K], [N, K] -> [M, N]
    """x W^T; `matmul` (e.g. the target's backend kernel, faster for one row than a busy BLAS) may compute it."""
    return (x @ W.T if matmul is None else matmul(x, W)), (x, W)


def linear_backward(dy, tape):  # [M, N] -> ([M, K], [N, K])
    x, W = tape
    return dy @ W, dy.T @ x  # dx, dW


# --- RMSNorm: y = x / sqrt(mean(x^2) + eps) * scale ---------------------------------------------------------

def rms_norm_forward(x, scale, eps):  # [M, D], [D] -> [M, D]
    r = 1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)  # [M, 1]  1 / rms
    xhat = x * r  # [M, D]
    return xhat * scale, (xhat, r, scale)


def rms_norm_backward(dy, tape):  # [M, D] -> ([M, D], [D])
    """With xhat = x r:  dx = r (g - xhat * mean(g * xhat)),  g = dy * scale."""
    xhat, r, scale = tape
    dscale = np.sum(dy * xhat, axis=0)  # [D]
    g = dy * scale  # [M, D]
    dx = r * (g - xhat * np.mean(g * xhat, axis=-1, keepdims=True))  # [M, D]
    return dx, dscale


# --- GELU (tanh approximation), the target's own function, and its derivative ------------------------------

def gelu_forward(x):  # [...] -> [...]
    return gelu_tanh(x), x


def gelu_backward(dy, x):  # [...] -> [...]
    """d/dx 0.5 x (1 + tanh(u)), u = c (x + a x^3):  0.5 (1 + t) + 0.5 x (1 - t^2) c (1 + 3 a x^2)."""
    c, a = np.float32(np.sqrt(2.0 / np.pi)), np.float32(0.044715)  # the same rounded constants as gelu_tanh
    t = np.tanh(c * (x + a * x * x * x))
    half = np.float32(0.5)
    return dy * (half * (1 + t) + half * x * (1 - t * t) * c * (1 + 3 * a * x * x))


# --- RoPE: a rotation, so its backward is the rotation by the opposite angle -------------------------------

def rope_forward(x, positions, theta):  # [M, heads, hd] -> [M, heads, hd]
    positions = np.asarray(positions)  # [M]
    return rope(x, positions, theta), (positions, theta)


def rope_backward(dy, tape):  # [M, heads, hd] -> [M, heads, hd]
    positions, theta = tape
    return rope(dy, -positions, theta)  # R(-a) = R(a)^T


# --- attention of the drafter's queries over the target's cached keys and values ---------------------------

def visible(positions, lengths, T: int, window: int):  # [M], [M] -> [M, T] bool
    """Which cached positions each query may read: the first `lengths[m]` (what the target's cache held when
    the query was asked), and on a sliding layer only those inside the window of the query's position."""
    j = np.arange(T)[None, :]  # [1, T]
    mask = j < np.asarray(lengths)[:, None]  # [M, T]
    if window:
        mask &= j > np.asarray(positions)[:, None] - window
    return mask


def attention_forward(q, K, V, mask, scale, matmul=None):  # [M, H, hd], [T, hd], [T, hd], [M, T] -> [M, H, hd]
    """softmax(q K^T * scale) V over the visible positions. All query heads share the target's one K/V head.
    `matmul` (x W^T, as in linear_forward) computes both products when given: drafting passes the target's
    kernel, because a small BLAS call next to Numba's busy threads costs many times its arithmetic."""
    M, H, hd = q.shape
    mm = (lambda x, W: x @ W.T) if matmul is None else matmul  # noqa: E731
    s = mm(np.ascontiguousarray(q.reshape(M * H, hd)), K).reshape(M, H, -1) * scale  # [M, H, T]
    s = np.where(mask[:, None, :], s, -np.inf)  # [M, H, T]
    top = np.max(s, axis=-1, keepdims=True)  # [M, H, 1]
    top = np.where(np.isfinite(top), top, 0.0)  # a query that sees nothing gets all-zero weights
    a = np.exp(s - top)  # [M, H, T]
    a = a / np.maximum(np.sum(a, axis=-1, keepdims=True), np.finfo(a.dtype).tiny)  # [M, H, T]
    out = (a.reshape(M * H, -1) @ V if matmul is None else
           matmul(np.ascontiguousarray(a.reshape(M * H, -1), dtype=np.float32), np.ascontiguousarray(V.T))
           ).reshape(M, H, hd)  # [M, H, hd]
    return out, (a, K, V, scale)


def attention_backward(dout, tape):  # [M, H, hd] -> [M, H, hd]  (the gradient of q only: K, V are the target's)
    """out = a V, a = softmax(s):  da = dout V^T,  ds = a (da - sum(a da)),  dq = ds K * scale."""
    a, K, V, scale = tape
    M, H, hd = dout.shape
    da = (dout.reshape(M * H, hd) @ V.T).reshape(M, H, -1)  # [M, H, T]
    ds = a * (da - np.sum(a * da, axis=-1, keepdims=True))  # [M, H, T]
    return (ds.reshape(M * H, -1) @ K).reshape(M, H, hd) * scale  # [M, H, hd]


# --- the loss: cross-entropy against the target's distribution, plus regression of the hidden state ---------

def log_softmax(z):  # [M, N] -> [M, N]
    z = z - np.max(z, axis=-1, keepdims=True)
    return z - np.log(np.sum(np.exp(z), axis=-1, keepdims=True))


def soft_cross_entropy(logits, p):  # [M, N], [M, N] -> (scalar, [M, N])
    """mean over rows of -sum_i p_i log q_i, q = softmax(logits); its gradient is (q - p) / M."""
    log_q = log_softmax(logits)  # [M, N]
    M = logits.shape[0]
    return -np.sum(p * log_q) / M, (np.exp(log_q) - p) / M


def mse(y, target, weight):  # [M, D], [M, D] -> (scalar, [M, D])
    """weight * mean over rows of sum_i (y_i - target_i)^2; its gradient is 2 weight (y - target) / M."""
    diff = y - target
    M = y.shape[0]
    return weight * np.sum(diff * diff) / M, 2.0 * weight * diff / M
