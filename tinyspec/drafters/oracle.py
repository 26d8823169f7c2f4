"""An oracle of chosen quality: the drafter the cost model assumes, for testing the formula against a stopwatch.

It knows the answer (the output of a vanilla run with the same settings) and proposes it, but each drafted
token is right only with probability alpha, independently (a seeded coin per token); otherwise it proposes a
wrong token. Under the greedy or coupled verifier, the one the target would pick is exactly the answer's
token, so every draft is accepted with probability alpha, independently of everything else, and drafting
costs nothing (c = 0): Leviathan et al.'s model, made real.

    >>> d = OracleDrafter(prompt_len=2, answer=[7, 8, 9, 10], alpha=1.0, vocab_size=32)
    >>> d.propose([2, 5, 7], k=2).tokens      # one answer token emitted so far: propose the next two
    [8, 9]
"""

from __future__ import annotations

import numpy as np

from .base import Drafter, Proposal


class OracleDrafter(Drafter):
    def __init__(self, prompt_len: int, answer, alpha: float = 1.0, seed: int = 0, vocab_size: int | None = None):
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
        self.prompt_len = prompt_len
        self.answer = [int(t) for t in answer]
        self.alpha = alpha
        self.seed = seed
        self.vocab_size = vocab_size
        self.name = f"oracle(alpha={alpha})"
        self.rng = np.random.default_rng(seed)

    def begin(self, target, prompt, params):
        self.rng = np.random.default_rng(self.seed)  # the same coins on every run
        if self.vocab_size is None:
            self.vocab_size = target.model.cfg.vocab_size

    def propose(self, context, k):
        done = len(context) - self.prompt_len  # answer tokens emitted so far
        tokens = []
        for right in self.answer[done: done + k]:
            keep = self.rng.random() < self.alpha
            tokens.append(right if keep else (right + 1) % (self.vocab_size or (right + 2)))
        return Proposal(tokens=tokens)
