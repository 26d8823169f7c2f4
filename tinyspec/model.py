"""Gemma 3's forward pass in NumPy: small pure functions, a shape comment on every array line.

Shapes: M = new tokens in this call, T = positions in the cache after it, d = hidden_size, H = query heads,
Hkv = key/value heads, hd = head_dim, f = intermediate_size, V = vocab_size.

# 1. Embeddings        x = E[tokens] * sqrt(d)
# 2. Attention         q, k, v projections; RMSNorm of each q and k head; RoPE; grouped-query attention with a
#                      causal mask and, on local layers, the sliding window
# 3. MLP               GeGLU: down(gelu_tanh(gate(h)) * up(h))
# 4. One block         x += norm(attention(norm(x)));  x += norm(mlp(norm(x)))   (four RMSNorms)
# 5. The forward pass  the blocks, a final RMSNorm, then the head: logits = h @ E.T (tied to the embedding)

The cache: a forward over M new tokens after start = cache.length cached ones writes their keys and values at
rows start .. start+M-1 of every layer it runs, and attention reads rows 0 .. start+M-1. `cache.length`
becomes start + M only after the last block.

The three heavy operations (matmul, attention, RMSNorm) come from a backend table, `ops`: tinyspec/ops.py
holds them in plain NumPy (backend="numpy", the reference); backend="numba" uses the fast kernels of
tinyspec/fast/, batch-invariant, so that a token's logits are bitwise the same whether it is computed alone or
inside a verification batch. Everything else here is element-wise NumPy (RoPE's rotation also goes through the
table, `ops.rotate`, only because one Numba call is faster than seven small NumPy ones; same bits).
"""

from __future__ import annotations

import functools

import numpy as np

from .cache import KVCache
from .config import Config
from .ops import Ops, get_ops, rotate as rotate_half
from .weights import Layer, Weights, weight_bytes


# 1. Embeddings ------------------------------------------------------------------------------------------

def embed(tokens, embed_tokens, hidden_size):  # [M] -> [M, d]
    """E[tokens] * sqrt(d). On the quant backend E is the GGUF's QuantTensor: indexing it dequantizes only
    these M rows (QuantTensor.__getitem__), to exactly the float32 values the converted weights hold."""
    return embed_tokens[tokens] * np.float32(np.sqrt(hidden_size))  # [M, d]  Gemma scales by sqrt(d)


# 2. Attention -------------------------------------------------------------------------------------------

def rope(x, positions, theta, rotate=rotate_half):  # [M, heads, hd] -> [M, heads, hd]
    """Rotary position embedding, the "rotate half" form: dimension i pairs with i + hd/2 (ops.rotate).

    The angle of pair i at position p is p * theta^(-2i/hd), computed in float64 and rounded once.
    `rotate` is a backend's (ops.rotate): the same arithmetic, element by element."""
    positions = np.asarray(positions)
    if positions.dtype.kind not in "iu":
        raise TypeError(f"rope: positions must be integers, got {positions.dtype}")
    cos, sin = _rope_tables(positions.astype(np.int64).tobytes(), float(theta), x.shape[-1])  # [M, 1, hd/2] each
    return rotate(x, cos, sin)  # [M, heads, hd]


@functools.lru_cache(maxsize=4)
def _rope_tables(positions: bytes, theta: float, hd: int):  # int64 positions [M] as bytes -> cos, sin [M, 1, hd/2]
    """The angles depend on the positions and theta alone: a forward's q and k in 18 layers share two sets of
    them (local and global layers), so they are computed once and the last 4 kept (read-only)."""
    inv_freq = theta ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)  # [hd/2]
    angles = np.frombuffer(positions, np.int64)[:, None].astype(np.float64) * inv_freq[None, :]  # [M, hd/2]
    cos = np.cos(angles).astype(np.float32)[:, None, :]  # [M, 1, hd/2]
    sin = np.sin(angles).astype(np.float32)[:, None, :]  # [M, 1, hd/2]
    cos.flags.writeable = sin.flags.writeable = False
    return cos, sin


def attention_block(x, layer: Layer, i: int, cache, start, cfg: Config, ops: Ops, tree=None):  # [M, d] -> [M, d]
    """`cache` is the sequence's KVCache, `start` the position of its first new token. A forward over B sequences
    passes a list of B caches and a list of B starts instead: the rows are their tokens, M/B each, in order.
    `tree` (a tree.TreeLayout): the rows are a tree of guesses, each at the position of its depth (`attend_tree`)."""
    caches, starts = (cache, start) if isinstance(cache, list) else ([cache], [start])
    M, n = x.shape[0], x.shape[0] // len(caches)  # new tokens: in all, per sequence
    positions = np.concatenate([np.arange(s, s + n) for s in starts]) if tree is None else \
        np.asarray(tree.positions())  # [M]  absolute positions of the new tokens
    q = ops.matmul(x, layer.q_proj).reshape(M, cfg.num_heads, cfg.head_dim)  # [M, H, hd]
    k = ops.matmul(x, layer.k_proj).reshape(M, cfg.num_kv_heads, cfg.head_dim)  # [M, Hkv, hd]
    v = ops.matmul(x, layer.v_proj).reshape(M, cfg.num_kv_heads, cfg.head_dim)  # [M, Hkv, hd]
    q = ops.rms_norm(q.reshape(-1, cfg.head_dim), layer.q_norm, cfg.rms_norm_eps).reshape(q.shape)  # [M, H, hd]
    k = ops.rms_norm(k.reshape(-1, cfg.head_dim), layer.k_norm, cfg.rms_norm_eps).reshape(k.shape)  # [M, Hkv, hd]
    q = rope(q, positions, cfg.rope_theta(i), ops.rotate)  # [M, H, hd]
    k = rope(k, positions, cfg.rope_theta(i), ops.rotate)  # [M, Hkv, hd]
    out = np.empty_like(q)  # [M, H, hd]
    for b, (cache, start) in enumerate(zip(caches, starts)):  # each sequence reads and writes its own cache
        new = slice(b * n, (b + 1) * n)  # its rows
        cache.write(i, start, k[new], v[new])  # keys and values of positions start .. start+n-1
        if tree is None:
            out[new] = ops.attention(q[new], cache.k[i], cache.v[i], start, cfg.window(i), cfg.query_scale)
        else:
            out[new] = attend_tree(q[new], cache.k[i], cache.v[i], start, tree, cfg.window(i), cfg.query_scale, ops)
    return ops.matmul(out.reshape(M, -1), layer.o_proj)  # [M, d]


def attend_tree(q, k_cache, v_cache, start, tree, window, scale, ops: Ops):  # [M, H, hd] -> [M, H, hd]
    """Tree attention: row r sees the context (cache rows < tree.prefix) and its own ancestors only. Each row's
    path is laid out right after the context, where a chain would hold it, and attended to as a chain: the same
    keys in the same order, so every row is bitwise what one-token-at-a-time decoding of its path gives. Rows
    that extend the previous row's path (a stretch of chain) share one call. The tree's rows go back after."""
    prefix, M = tree.prefix, len(q)
    tree_k, tree_v = k_cache[prefix: start + M].copy(), v_cache[prefix: start + M].copy()  # rows >= prefix
    paths = [list(a) + [start + r] for r, a in enumerate(tree.ancestors)]  # cache rows, root first
    out = np.empty_like(q)  # [M, H, hd]
    r = 0
    while r < M:
        end = r + 1  # rows r .. end-1: each one's path is the previous one's plus itself
        while end < M and paths[end][:-1] == paths[end - 1]:
            end += 1
        path = [row - prefix for row in paths[end - 1]]
        k_cache[prefix: prefix + len(path)] = tree_k[path]  # the path, where a chain would hold it
        v_cache[prefix: prefix + len(path)] = tree_v[path]
        first = prefix + len(paths[r]) - 1  # the position of row r
        out[r:end] = ops.attention(np.ascontiguousarray(q[r:end]), k_cache, v_cache, first, window, scale)
        r = end
    k_cache[prefix: start + M], v_cache[prefix: start + M] = tree_k, tree_v  # the tree's rows, in tree order
    return out


# 3. MLP -------------------------------------------------------------------------------------------------

def gelu_tanh(x):  # [...] -> [...]
    """GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    c = np.float32(np.sqrt(2.0 / np.pi))
    return np.float32(0.5) * x * (np.float32(1.0) + np.tanh(c * (x + np.float32(0.044715) * x * x * x)))


def mlp(x, layer: Layer, ops: Ops):  # [M, d] -> [M, d]
    gate = ops.matmul(x, layer.gate_proj)  # [M, f]
    up = ops.matmul(x, layer.up_proj)  # [M, f]
    return ops.matmul(gelu_tanh(gate) * up, layer.down_proj)  # [M, d]


# 4. One block -------------------------------------------------------------------------------------------

def block(x, layer: Layer, i: int, cache, start, cfg: Config, ops: Ops, tree=None):  # [M, d] -> [M, d]
    eps = cfg.rms_norm_eps
    h = ops.rms_norm(x, layer.input_layernorm, eps)  # [M, d]
    h = attention_block(h, layer, i, cache, start, cfg, ops, tree)  # [M, d]
    x = x + ops.rms_norm(h, layer.post_attention_layernorm, eps)  # [M, d]
    h = ops.rms_norm(x, layer.pre_feedforward_layernorm, eps)  # [M, d]
    h = mlp(h, layer, ops)  # [M, d]
    return x + ops.rms_norm(h, layer.post_feedforward_layernorm, eps)  # [M, d]


# 5. The whole forward pass and the head -----------------------------------------------------------------

def forward_hidden(tokens, w: Weights, cfg: Config, caches, ops: Ops, layers=None, residuals=None,
                   tree=None):  # [M] -> [M, d]
    """Run the blocks over M new tokens, appending them to the cache. Returns the final-normed hidden state.

    `caches` is a list: one KVCache (Model.hidden), or B of them to run B sequences in one forward, their M/B
    tokens each in order (every weight is then read once for all of them: tinyspec.mtp.data).
    `layers` (default all) runs only the first `layers` blocks: the early-exit drafter's partial forward.
    `residuals`, a list, receives the residual stream entering each block [M, d] (what the MTP drafter reads).
    `tree` (a tree.TreeLayout, one cache): the M tokens are a tree of guesses (tinyspec.tree, `attend_tree`)."""
    tokens = np.asarray(tokens, dtype=np.int64)  # [M]
    n = len(tokens) // len(caches)  # new tokens per sequence
    starts = [cache.length for cache in caches]
    for cache in caches:
        cache.reserve(cache.length + n)
    x = embed(tokens, w.embed_tokens, cfg.hidden_size)  # [M, d]
    for i in range(cfg.num_layers if layers is None else layers):
        if residuals is not None:
            residuals.append(x)
        x = block(x, w.layers[i], i, caches, starts, cfg, ops, tree)  # [M, d]
    for cache, start in zip(caches, starts):
        cache.length = start + n
    return ops.rms_norm(x, w.norm, cfg.rms_norm_eps)  # [M, d]


def lm_head(h, w: Weights, ops: Ops):  # [M, d] -> [M, V]
    return ops.matmul(h, w.embed_tokens)  # [M, V]  tied: the embedding matrix is the output layer


class Model:
    """Weights + config + backend. `forward` appends tokens to a cache and returns their logits.

        >>> from tinyspec.config import tiny_config
        >>> from tinyspec.weights import random_weights
        >>> cfg = tiny_config()
        >>> model = Model(cfg, random_weights(cfg), backend="numpy")
        >>> cache = model.new_cache()
        >>> model.forward([2, 7, 9], cache).shape, cache.length
        ((3, 32), 3)
    """

    def __init__(self, cfg: Config, weights: Weights, backend: str = "numba"):
        self.cfg = cfg
        self.weights = weights
        self.backend = backend
        self.ops = get_ops(backend)

    def new_cache(self, capacity: int = 256) -> KVCache:
        return KVCache(self.cfg, capacity)

    def forward(self, tokens, cache: KVCache, last_only: bool = False, layers: int | None = None, tree=None):
        """Logits [M, V] (float32) of M new tokens; with last_only, [1, V] of the last one (a prefill)."""
        h = self.hidden(tokens, cache, layers, tree)  # [M, d]
        return self.head(h[-1:] if last_only else h)  # [M or 1, V]

    def hidden(self, tokens, cache: KVCache, layers: int | None = None, tree=None):  # [M] -> [M, d]
        """Run the blocks over M new tokens (appending them to the cache): the final-normed hidden states.
        tree: a tree.TreeLayout when the tokens are a tree of guesses (each sees the context and its ancestors)."""
        tokens = np.asarray(tokens, dtype=np.int64)
        if tokens.ndim != 1 or len(tokens) == 0:
            raise ValueError("forward needs a non-empty 1-D sequence of token ids")
        if tokens.min() < 0 or tokens.max() >= self.cfg.vocab_size:
            raise ValueError(f"token ids must lie in [0, {self.cfg.vocab_size})")
        if cache.length + len(tokens) > self.cfg.max_position_embeddings:
            raise ValueError(f"{cache.length} cached + {len(tokens)} new positions exceed the context length "
                             f"{self.cfg.max_position_embeddings}")
        return forward_hidden(tokens, self.weights, self.cfg, [cache], self.ops, layers, tree=tree)  # [M, d]

    def head(self, h):  # [M, d] -> [M, V]
        return lm_head(np.ascontiguousarray(h), self.weights, self.ops)

    def weight_bytes(self, blocks: int | None = None) -> int:
        """Bytes a decode forward through the first `blocks` blocks (default all) reads (weights.weight_bytes)."""
        return weight_bytes(self.weights, blocks)["total"]

    @classmethod
    def load(cls, directory=None, backend: str = "numba", progress=None) -> "Model":
        """The real Gemma 3 270M (converted on first use). backend="quant" converts nothing: it maps the GGUF
        (`directory`: a .gguf file, or the weights directory it is kept beside; tinyspec.quant.gguf_file.gguf_path)
        and computes on its blocks, the layers' repacked at load (GGUFFile.quantized_weights)."""
        if backend == "quant":
            from .quant.gguf_file import gguf_path, open_gguf

            gguf = open_gguf(gguf_path(directory))
            cfg = gguf.config()
            return cls(cfg, gguf.quantized_weights(cfg), backend)
        from .weights import ensure_converted, load

        cfg, weights = load(ensure_converted(directory, progress))
        return cls(cfg, weights, backend)
