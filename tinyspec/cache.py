"""The KV cache: the keys and values of every position seen so far, per layer.

A forward pass over M new tokens writes their keys and values at positions length .. length+M-1 of every
layer, then `length` grows by M. Speculative decoding verifies k drafted tokens and keeps only the accepted
ones: `truncate(n)` rolls the cache back to n positions. Nothing is erased: rows past `length` are simply
never read again (the attention kernels read rows 0 .. length-1 only) and are overwritten by the next append.

Every layer keeps all positions, sliding-window layers included: a local layer's attention reads only the
last `sliding_window` of them. (A ring buffer would save memory, but rolling it back would need the rows
it overwrote. At 36 KB per position for Gemma 3 270M, 8192 positions cost 300 MB.)

    >>> from tinyspec.config import tiny_config
    >>> cache = KVCache(tiny_config(), capacity=4)
    >>> cache.length, cache.capacity
    (0, 4)
"""

from __future__ import annotations

import numpy as np

from .config import Config


class KVCache:
    def __init__(self, cfg: Config, capacity: int = 256):
        self.cfg = cfg
        self.length = 0  # positions 0 .. length-1 hold valid keys and values
        shape = (max(1, capacity), cfg.num_kv_heads, cfg.head_dim)
        self.k = [np.zeros(shape, np.float32) for _ in range(cfg.num_layers)]  # [layers] of [capacity, Hkv, hd]
        self.v = [np.zeros(shape, np.float32) for _ in range(cfg.num_layers)]  # [layers] of [capacity, Hkv, hd]

    @property
    def capacity(self) -> int:
        return self.k[0].shape[0]

    def reserve(self, n: int) -> None:
        """Make room for n positions in all, doubling the capacity as needed (old rows are copied)."""
        if n > self.cfg.max_position_embeddings:
            raise ValueError(f"{n} positions exceed the model's context length {self.cfg.max_position_embeddings}")
        if n <= self.capacity:
            return
        new_capacity = min(max(n, 2 * self.capacity), self.cfg.max_position_embeddings)
        for store in (self.k, self.v):
            for i, old in enumerate(store):
                grown = np.zeros((new_capacity,) + old.shape[1:], np.float32)
                grown[: self.length] = old[: self.length]
                store[i] = grown

    def write(self, layer: int, start: int, k: np.ndarray, v: np.ndarray) -> None:
        """Store keys/values of positions start .. start+M-1 of one layer. k, v: [M, Hkv, hd]."""
        self.k[layer][start: start + len(k)] = k
        self.v[layer][start: start + len(v)] = v

    def truncate(self, n: int) -> None:
        """Roll back to the first n positions (speculative decoding drops rejected drafts)."""
        if not 0 <= n <= self.length:
            raise ValueError(f"cannot truncate a cache of length {self.length} to {n}")
        self.length = n

    def keep(self, start: int, rows: list) -> None:
        """After a tree's verification: the rows `rows` (cache positions, increasing) hold the accepted path;
        move them to positions start, start + 1, ... in every layer and drop everything after them."""
        for j, row in enumerate(rows):
            if row != start + j:
                for store in (self.k, self.v):
                    for layer in store:
                        layer[start + j] = layer[row]
        self.truncate(start + len(rows))

    def nbytes_per_position(self) -> int:
        return 2 * self.cfg.num_layers * self.cfg.num_kv_heads * self.cfg.head_dim * 4
