"""Prompt lookup (n-gram) drafting: if the last n tokens appeared earlier, guess that what followed them then
follows them now. Free to run, and very good whenever the output copies its input (code edits, extraction).

The match is the longest one: of every earlier occurrence of the newest token, the one whose preceding tokens
agree with the context's furthest back (up to max_n tokens), the most recent on a tie. A long match pins down
the place being copied, so its continuation is a safe long draft.

    >>> d = NgramDrafter(max_n=3, min_n=1)
    >>> d.propose([5, 6, 7, 8, 9, 5, 6], k=3).tokens   # [5, 6] was followed by 7, 8, 9
    [7, 8, 9]
    >>> d.match                                        # the suffix [5, 6] matched: 2 tokens
    2
    >>> d.propose([1, 2, 3], k=3).tokens              # no earlier match: no draft
    []
"""

from __future__ import annotations

import numpy as np

from .base import Drafter, Proposal


class NgramDrafter(Drafter):
    name = "ngram"

    def __init__(self, max_n: int = 3, min_n: int = 1, max_match_len: int | None = None):
        if not 1 <= min_n <= max_n:
            raise ValueError(f"ngram drafter needs 1 <= min_n <= max_n, got min_n={min_n}, max_n={max_n}")
        self.max_n = max_n  # the longest suffix compared: a longer match is a more specific guess
        self.min_n = min_n  # the shortest match that yields a draft
        self.max_match_len = max_match_len  # search only the last max_match_len tokens (None: all)
        self.match = 0  # the length of the last proposal's match (0: no match)

    def matches(self, context):  # -> ([J] ends, [J] lengths), longest match first, most recent first on a tie
        """Every earlier position j holding the newest token whose preceding tokens match the context's end for at
        least min_n tokens (up to max_n compared), and the length of each match: ctx[j+1:] is a continuation."""
        ctx = np.asarray(context, dtype=np.int64)  # [T]
        last = len(ctx) - 1
        lo = 0 if self.max_match_len is None else max(0, len(ctx) - self.max_match_len)
        # ends: earlier positions j holding the newest token, so ctx[j+1:] is a candidate continuation
        ends = lo + np.flatnonzero(ctx[lo:last] == ctx[last]) if last > 0 else np.zeros(0, np.int64)  # [J]
        length = np.ones(len(ends), dtype=np.int64)  # [J] how many tokens ending at j match the context's end
        alive = np.ones(len(ends), dtype=bool)  # [J] still matching at the distance being compared
        for back in range(1, self.max_n):
            alive &= ends - back >= lo
            alive[alive] = ctx[ends[alive] - back] == ctx[last - back]
            if not alive.any():
                break
            length += alive
        order = np.lexsort((-ends, -length))  # longest first, then most recent
        keep = length[order] >= self.min_n
        return ends[order][keep], length[order][keep]

    def propose(self, context, k):
        ends, lengths = self.matches(context)
        self.match = int(lengths[0]) if len(ends) else 0
        if not self.match:
            return Proposal(tokens=[])
        j = int(ends[0])  # the most recent of the longest matches
        return Proposal(tokens=[int(t) for t in context[j + 1: j + 1 + k]])

    def propose_tree(self, context, budget, max_depth):
        """The distinct continuations of the earlier matches (the most recent of the longest suffix first, then
        shorter ones), each up to max_depth tokens, merged as a trie of at most `budget` nodes. Its first path
        is propose()'s chain."""
        from ..tree import TokenTree

        ends, lengths = self.matches(context)
        self.match = int(lengths[0]) if len(ends) else 0
        tokens, parents, child = [], [], {}  # child[(parent, token)] -> node
        for j in ends:
            node = -1
            for t in context[j + 1: j + 1 + max_depth]:
                key = (node, int(t))
                if key not in child:
                    if len(tokens) == budget:
                        break
                    child[key] = len(tokens)
                    tokens.append(int(t))
                    parents.append(node)
                node = child[key]
            if len(tokens) == budget:
                break
        return TokenTree(tokens, parents)
