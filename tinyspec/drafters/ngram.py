"""Prompt lookup (n-gram) drafting: if the last n tokens appeared earlier, guess that what followed them then
follows them now. Free to run, and very good whenever the output copies its input (code edits, extraction).

    >>> d = NgramDrafter(max_n=3, min_n=1)
    >>> d.propose([5, 6, 7, 8, 9, 5, 6], k=3).tokens   # [5, 6] was followed by 7, 8, 9
    [7, 8, 9]
    >>> d.propose([1, 2, 3], k=3).tokens              # no earlier match: no draft
    []
"""

from __future__ import annotations

from .base import Drafter, Proposal


class NgramDrafter(Drafter):
    name = "ngram"

    def __init__(self, max_n: int = 3, min_n: int = 1, max_match_len: int | None = None):
        if not 1 <= min_n <= max_n:
            raise ValueError(f"ngram drafter needs 1 <= min_n <= max_n, got min_n={min_n}, max_n={max_n}")
        self.max_n = max_n  # try the longest suffix first: a longer match is a more specific guess
        self.min_n = min_n
        self.max_match_len = max_match_len  # search only the last max_match_len tokens (None: all)

    def propose(self, context, k):
        context = list(context)
        lo = 0 if self.max_match_len is None else max(0, len(context) - self.max_match_len)
        for n in range(min(self.max_n, len(context) - 1), self.min_n - 1, -1):
            suffix = context[-n:]
            # the most recent earlier occurrence of the suffix (not the suffix itself)
            for start in range(len(context) - n - 1, lo - 1, -1):
                if context[start:start + n] == suffix:
                    follow = context[start + n: start + n + k]
                    if follow:
                        return Proposal(tokens=follow)
        return Proposal(tokens=[])
