"""A language model made of a lookup table: any next-token distribution, no network, a lookup a call.

The proofs of speculative sampling enumerate every random outcome of a run (randomness.exact_distribution):
tens of thousands of runs of the real loop for one tiny case. A lookup costs far less than a tiny Gemma's
forward, and this model has everything the decoding loops ask of a model (`cfg`, `new_cache`,
`hidden`, `head`, `forward`, `weight_bytes`), so the loops, verifiers and drafters run unchanged on it.

Its logits after a context are a fixed pseudo-random function of the whole context, like a real model's:

    logits(context) = scale * N(0, 1) seeded by (seed, context)          (float32, one row of length V)

Its cache is a real cache: a forward writes the new tokens at positions length .. length+M-1 and a row's
logits read positions 0 .. length-1 of the cache plus the new tokens up to it. Stale rows past `length` are
never read. So a loop that rolls back to the wrong length, or forgets to, sees other logits, exactly as it
would with a KV cache.

Drafters built on it:
  - a draft model: `TableModel(V, seed, noise=..., noise_seed=...)` has the target's logits (same seed) plus
    `noise` times independent ones: a drafter that is right often but not always;
  - early exit: `forward(..., layers=L)` adds noise scaled by (num_layers - L) / num_layers, as if the first
    L blocks knew a fraction of the answer; it writes into the cache past the end like the real one.

    >>> m = TableModel(vocab_size=4, seed=0)
    >>> cache = m.new_cache()
    >>> a = m.forward([2, 3], cache)
    >>> cache.truncate(1); b = m.forward([3], cache)   # the same context [2, 3]: the same logits
    >>> bool((a[1] == b[0]).all())
    True
"""

from __future__ import annotations

import numpy as np

from .config import tiny_config


class TokenCache:
    """The tokens themselves, by position: the toy model's KV cache (same length / reserve / truncate)."""

    def __init__(self, capacity: int = 16):
        self.length = 0
        self.tokens = np.zeros(max(1, capacity), dtype=np.int64)  # [capacity]

    @property
    def capacity(self) -> int:
        return len(self.tokens)

    def reserve(self, n: int) -> None:
        if n > self.capacity:
            grown = np.zeros(max(n, 2 * self.capacity), dtype=np.int64)
            grown[: self.length] = self.tokens[: self.length]
            self.tokens = grown

    def truncate(self, n: int) -> None:
        if not 0 <= n <= self.length:
            raise ValueError(f"cannot truncate a cache of length {self.length} to {n}")
        self.length = n

    def keep(self, start: int, rows: list) -> None:  # KVCache.keep: move the accepted path's rows into place
        self.tokens[start: start + len(rows)] = self.tokens[list(rows)]
        self.truncate(start + len(rows))


class TableModel:
    def __init__(self, vocab_size: int, seed: int, eos_token_id: int = 1, scale: float = 1.5, noise: float = 0.0,
                 noise_seed: int = 1, num_layers: int = 4, block_bytes: int = 1000, head_bytes: int = 1000,
                 max_position_embeddings: int = 256):
        self.cfg = tiny_config(vocab_size=vocab_size, hidden_size=vocab_size, num_layers=num_layers,
                               eos_token_id=eos_token_id, bos_token_id=0, pad_token_id=0, unk_token_id=0,
                               max_position_embeddings=max_position_embeddings)
        self.seed, self.scale, self.noise, self.noise_seed = seed, scale, noise, noise_seed
        self.block_bytes, self.head_bytes = block_bytes, head_bytes
        self.backend = "table"
        self._rows: dict = {}

    def _normal(self, seed, blocks, context):  # -> [V] float64, a fixed function of its arguments
        rng = np.random.default_rng([seed, blocks, len(context), *context])
        return rng.standard_normal(self.cfg.vocab_size)

    def logits(self, context, blocks: int | None = None):  # [T] -> [V] float32
        """The logits after `context` from the first `blocks` blocks (default all). Computed once per context."""
        L = self.cfg.num_layers
        blocks = L if blocks is None else blocks
        key = (blocks,) + tuple(int(t) for t in context)
        row = self._rows.get(key)
        if row is None:
            z = self._normal(self.seed, 0, key[1:])
            blind = self.noise + (L - blocks) / L  # how much of the answer is noise
            if blind:
                z = z + blind * self._normal(self.noise_seed, blocks, key[1:])
            row = self._rows[key] = (self.scale * z).astype(np.float32)
        return row

    def new_cache(self, capacity: int = 16) -> TokenCache:
        return TokenCache(capacity)

    def hidden(self, tokens, cache: TokenCache, layers: int | None = None, tree=None):  # [M] -> [M, V]
        """Write the M tokens into the cache; the "hidden state" of each is its logits row (the head is identity).
        tree: a tree.TreeLayout, for tree speculation: each row then sees the context and its own ancestors."""
        tokens = np.asarray(tokens, dtype=np.int64)
        if tokens.ndim != 1 or len(tokens) == 0:
            raise ValueError("forward needs a non-empty 1-D sequence of token ids")
        if tokens.min() < 0 or tokens.max() >= self.cfg.vocab_size:
            raise ValueError(f"token ids must lie in [0, {self.cfg.vocab_size})")
        start = cache.length
        if start + len(tokens) > self.cfg.max_position_embeddings:
            raise ValueError(f"{start} cached + {len(tokens)} new positions exceed the context length "
                             f"{self.cfg.max_position_embeddings}")
        cache.reserve(start + len(tokens))
        cache.tokens[start: start + len(tokens)] = tokens
        cache.length = start + len(tokens)
        rows = []
        for r in range(len(tokens)):
            if tree is None:  # a chain: everything before the row
                context = cache.tokens[: start + r + 1]
            else:  # the context, the row's ancestors, the row
                seen = list(tree.ancestors[r]) + [start + r]
                context = np.concatenate([cache.tokens[: tree.prefix], cache.tokens[seen]])
            rows.append(self.logits(context, layers))
        return np.stack(rows)  # [M, V]

    def head(self, h):  # [M, V] -> [M, V]
        return np.array(h, dtype=np.float32)

    def forward(self, tokens, cache: TokenCache, last_only: bool = False, layers: int | None = None, tree=None):
        h = self.hidden(tokens, cache, layers, tree)  # [M, V]
        return self.head(h[-1:] if last_only else h)

    def weight_bytes(self, blocks: int | None = None) -> int:
        return self.block_bytes * (self.cfg.num_layers if blocks is None else blocks) + self.head_bytes
