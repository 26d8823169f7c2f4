"""A draft model: any smaller tinyspec Model with its own KV cache (toy Gemma-architecture models in tests and
lessons). It must share the target's vocabulary: its token ids mean the same text.

Each step it catches its cache up with the context, then runs k single-token forwards, choosing each token
the way the run samples: argmax when greedy; a draw from its warped distribution q when sampling (q is
returned for the rejection verifier); with coupled sampling, the Gumbel-max of q under the same noise the
target uses at that position, so that whenever q is close to p the two pick the same token.
"""

from __future__ import annotations

import numpy as np

from ..sampling import choose_token
from .base import Drafter, Proposal


class DraftModelDrafter(Drafter):
    name = "draft-model"
    stream = 1  # its draws come from the run's seed's stream [seed, 1], independent of the verifier's

    def __init__(self, model, width: int = 4):
        self.model = model
        self.vocab_size = model.cfg.vocab_size
        self.width = width  # a tree's branching: the best `width` tokens after each node (propose_tree)

    def begin(self, target, prompt, params):
        self.cost = self.model.weight_bytes() / target.model.weight_bytes()  # c by bytes read (memory-bound)
        self.params = params
        self.random = target.random  # the run's source for the drafter's draws
        self.cache = self.model.new_cache(capacity=len(prompt) + 64)

    def propose(self, context, k):
        unseen = list(context[self.cache.length:])  # [>= 1] tokens the draft cache has not seen yet
        logits = self.model.forward(unseen, self.cache, last_only=True)[0]  # [V]
        tokens, qs = [], []
        for i in range(k):
            token, q = choose_token(logits, self.params, self.random, position=len(context) + i)
            tokens.append(token)
            qs.append(q)
            if i + 1 < k:
                logits = self.model.forward([token], self.cache)[0]  # [V]
        q = None if self.params.greedy else np.stack(qs)  # [k, V]
        return Proposal(tokens=tokens, q=q)

    def propose_tree(self, context, budget, max_depth):
        """The best-first tree of tree.best_first_tree, one draft-model forward per depth over the whole frontier
        (each node sees the context and its own ancestors). Deterministic: the target walks it (tree.py)."""
        from ..tree import TreeLayout, best_first_tree, log_scores

        unseen = list(context[self.cache.length:])  # [>= 1] tokens the draft cache has not seen yet
        root = self.model.forward(unseen, self.cache, last_only=True)  # [1, V]
        prefix, row_of = self.cache.length, {}  # row_of[node]: the draft cache row holding the node

        def expand(tree, nodes):  # the scores after each frontier node: one forward for them all
            layout = TreeLayout(prefix, [[row_of[a] for a in tree.path(n)[:-1]] for n in nodes])
            row_of.update({n: self.cache.length + j for j, n in enumerate(nodes)})
            return log_scores(self.model.forward([tree.tokens[n] for n in nodes], self.cache, tree=layout),
                              self.params)  # [F, V]

        tree = best_first_tree(log_scores(root, self.params)[0], expand, budget, max_depth, self.width)
        self.cache.truncate(prefix)  # the tree's rows are forgotten: the target decides what is kept
        return tree

    def rollback(self, n):
        self.cache.truncate(min(n, self.cache.length))
