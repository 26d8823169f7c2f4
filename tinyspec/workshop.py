"""What every lesson does first, in one call each: quick mode, the real Gemma 3 270M and its tokenizer, the toy
draft model, and prefix caching (the prompt's prefill computed once and reused by later runs).

    >>> quick_mode({"TINYSPEC_QUICK": "1"}), quick_mode({"TINYSPEC_QUICK": "0"}), quick_mode({})
    (True, False, False)
"""

from __future__ import annotations

import os
import time

import numpy as np

from .config import tiny_config
from .model import Model
from .tokenizer import Tokenizer
from .weights import ensure_converted, random_weights


def quick_mode(environ=None) -> bool:
    """True when $TINYSPEC_QUICK is set (and not "0"): CI runs every lesson with fewer tokens and samples, and
    the same asserted claims."""
    return (os.environ if environ is None else environ).get("TINYSPEC_QUICK", "") not in ("", "0")


def load_gemma(backend: str = "numba", reuse_prefill: bool = False):
    """The real Gemma 3 270M (converting the packaged GGUF on first use, about a minute, once) and its tokenizer.

    Prints one line: where the weights came from, the load time and the backend. With reuse_prefill, the model
    is a PrefixCachedModel: a lesson that decodes the same prompt many times pays for its prefill once."""
    t0 = time.perf_counter()
    weights_dir = ensure_converted()  # $TINYSPEC_WEIGHTS, or weights/gemma-3-270m/ in a source checkout
    model = Model.load(weights_dir, backend=backend)
    if reuse_prefill:
        model = PrefixCachedModel(model.cfg, model.weights, backend=backend)
    tok = Tokenizer.from_file(weights_dir / "tokenizer.json")
    print(f"loaded Gemma 3 270M from {weights_dir} in {time.perf_counter() - t0:.1f} s (backend {model.backend}"
          f"{', prompt prefills reused' if reuse_prefill else ''})")
    return model, tok


def toy_draft_model(target_cfg, seed: int, backend: str = "numba", hidden_size: int = 64, num_layers: int = 2) -> Model:
    """A Gemma-architecture model shrunk to `num_layers` blocks of width `hidden_size`, with random weights and the
    target's vocabulary and special tokens (a drafter must share the target's tokenizer): very cheap, not aligned."""
    cfg = tiny_config(vocab_size=target_cfg.vocab_size, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                      num_layers=num_layers, head_dim=hidden_size // 2,
                      max_position_embeddings=target_cfg.max_position_embeddings,
                      bos_token_id=target_cfg.bos_token_id, eos_token_id=target_cfg.eos_token_id,
                      pad_token_id=target_cfg.pad_token_id, unk_token_id=target_cfg.unk_token_id)
    return Model(cfg, random_weights(cfg, seed=seed), backend=backend)


class PrefixCachedModel(Model):
    """A Model that remembers the prefill of every prompt it has seen: its keys and values in every layer and its
    hidden states. Prefilling the same prompt into an empty cache again copies them back instead of recomputing.

    Exact: the copied rows are the very bits the prefill wrote, and the decode steps that follow run as usual.
    Engines do the same across requests that share a prefix ("prefix caching"). The lessons use it because they
    decode one prompt many times (vanilla, then each drafter or k) and compare decode times, prefill excluded.
    Only whole-model prefills into an empty cache are remembered (not partial `layers` runs, not appends)."""

    def __init__(self, cfg, weights, backend: str = "numba"):
        super().__init__(cfg, weights, backend)
        self.prefills = {}  # tuple(prompt ids) -> (k rows per layer, v rows per layer, hidden [P, d])

    def hidden(self, tokens, cache, layers=None, tree=None):  # [M] -> [M, d]
        if cache.length != 0 or layers is not None or tree is not None:  # a decode or verify step, a partial run
            return super().hidden(tokens, cache, layers, tree)  # or a tree: as usual
        key = tuple(int(t) for t in np.asarray(tokens).ravel())
        if key in self.prefills:
            ks, vs, h = self.prefills[key]
            cache.reserve(len(key))
            for i in range(self.cfg.num_layers):
                cache.write(i, 0, ks[i], vs[i])
            cache.length = len(key)
            return h.copy()
        h = super().hidden(tokens, cache)  # [P, d]
        n = len(key)
        self.prefills[key] = ([k[:n].copy() for k in cache.k], [v[:n].copy() for v in cache.v], h.copy())
        return h
