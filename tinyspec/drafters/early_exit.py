"""Early exit (self-speculation): the target's own first L blocks, then its final norm and tied head.

No extra weights and no cache of its own: its first L blocks are the target's, so the keys and values it
needs for the context are already in the target's cache. Drafting writes rows for the drafted positions
into those first L layers; the target's verification pass then overwrites the same positions in every layer,
so nothing it leaves behind is ever read. Cheap blocks, but the full 262144-row head on every draft: the
lesson of this drafter is that a drafter must be cheap *and* aligned.
"""

from __future__ import annotations

import numpy as np

from ..sampling import choose_token
from .base import Drafter, Proposal


class EarlyExitDrafter(Drafter):
    stream = 2  # its draws come from the run's seed's stream [seed, 2], independent of the verifier's

    def __init__(self, layers: int, width: int = 4):
        if layers < 1:
            raise ValueError(f"early-exit needs at least 1 block, got {layers}")
        self.layers = layers
        self.width = width  # a tree's branching (propose_tree)
        self.name = f"early-exit:{layers}"

    def check(self, model):
        blocks = model.cfg.num_layers
        if self.layers >= blocks:
            raise ValueError(f"early-exit:{self.layers} needs fewer blocks than the target's {blocks}: use "
                             f"early-exit:1 to early-exit:{blocks - 1}")

    def begin(self, target, prompt, params):
        self.check(target.model)
        self.target, self.params = target, params
        self.vocab_size = target.model.cfg.vocab_size
        self.random = target.random  # the run's source for the drafter's draws
        # c by bytes read (decoding is memory-bound): L of the blocks plus the whole tied head
        self.cost = target.model.weight_bytes(self.layers) / target.model.weight_bytes()

    def propose(self, context, k):
        model, cache, p = self.target.model, self.target.cache, self.params
        start = cache.length  # == len(context) - 1: the last context token is not in the cache yet
        token = context[-1]
        tokens, qs = [], []
        for i in range(k):
            logits = model.forward([token], cache, layers=self.layers)[0]  # [V]  first L blocks only
            token, q = choose_token(logits, p, self.random, position=start + 1 + i)  # d_{i+1}'s position
            tokens.append(token)
            qs.append(q)
        cache.length = start  # hand the cache back as it was: the verifier rewrites these rows
        return Proposal(tokens=tokens, q=None if p.greedy else np.stack(qs))

    def propose_tree(self, context, budget, max_depth):
        """tree.best_first_tree from the first L blocks, one partial forward per depth over the whole frontier,
        writing past the end of the target's cache like propose (the verification rewrites those rows)."""
        from ..tree import TreeLayout, best_first_tree, log_scores

        model, cache = self.target.model, self.target.cache
        start = cache.length  # == len(context) - 1
        root = model.forward([context[-1]], cache, layers=self.layers)  # [1, V]
        prefix, row_of = cache.length, {}  # the context, the last token included; row_of[node]: its cache row

        def expand(tree, nodes):  # the scores after each frontier node
            layout = TreeLayout(prefix, [[row_of[a] for a in tree.path(n)[:-1]] for n in nodes])
            row_of.update({n: cache.length + j for j, n in enumerate(nodes)})
            return log_scores(model.forward([tree.tokens[n] for n in nodes], cache, layers=self.layers,
                                            tree=layout), self.params)  # [F, V]

        tree = best_first_tree(log_scores(root, self.params)[0], expand, budget, max_depth, self.width)
        cache.length = start  # hand the cache back as it was
        return tree
