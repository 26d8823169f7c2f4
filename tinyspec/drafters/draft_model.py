"""A draft model: any smaller tinyspec Model with its own KV cache (toy Gemma-architecture models in tests and
lessons). It must share the target's vocabulary: its token ids mean the same text.

Each step it catches its cache up with the context, then runs k single-token forwards, choosing each token
the way the run samples: argmax when greedy; a draw from its warped distribution q when sampling (q is
returned for the rejection verifier); with coupled sampling, the Gumbel-max of q under the same noise the
target uses at that position, so that whenever q is close to p the two pick the same token.
"""

from __future__ import annotations

import numpy as np

from ..sampling import gumbel_token, sample, warp
from .base import Drafter, Proposal


class DraftModelDrafter(Drafter):
    name = "draft-model"

    def __init__(self, model):
        self.model = model
        self.vocab_size = model.cfg.vocab_size

    def begin(self, target, prompt, params):
        nbytes = lambda m: sum(a.nbytes for l in m.weights.layers for a in vars(l).values()) + m.weights.embed_tokens.nbytes
        self.cost = nbytes(self.model) / nbytes(target.model)  # c by bytes read (decoding is memory-bound)
        self.params = params
        self.rng = np.random.default_rng([params.seed, 1])  # its own stream: never shared with the verifier
        self.cache = self.model.new_cache(capacity=len(prompt) + 64)

    def _choose(self, logits, position):  # [V] -> (token, q [V] or None)
        p = self.params
        if p.greedy:
            return int(np.argmax(logits)), None
        q = warp(logits, p.temperature, p.top_k, p.top_p)  # [V] float64
        if p.coupled:
            return gumbel_token(q, p.seed, position), q
        return sample(q, self.rng), q

    def propose(self, context, k):
        unseen = list(context[self.cache.length:])  # [>= 1] tokens the draft cache has not seen yet
        logits = self.model.forward(unseen, self.cache, last_only=True)[0]  # [V]
        tokens, qs = [], []
        for i in range(k):
            token, q = self._choose(logits, position=len(context) + i)
            tokens.append(token)
            qs.append(q)
            if i + 1 < k:
                logits = self.model.forward([token], self.cache)[0]  # [V]
        q = None if self.params.greedy else np.stack(qs)  # [k, V]
        return Proposal(tokens=tokens, q=q)

    def rollback(self, n):
        self.cache.truncate(min(n, self.cache.length))
