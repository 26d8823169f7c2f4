"""The drafter interface: everything the speculative loop asks of a drafter, in one screen.

A drafter guesses the next few tokens cheaply. The loop calls, in order:

    begin(target, prompt, params)    once, after the target's prefill of the prompt; `target` is a
                                     TargetView: the target Model and its KV cache (read-only for most
                                     drafters; early exit writes its own first blocks' rows past the end)
    propose(context, k) -> Proposal  each step: up to k guesses for what follows `context`
    propose_tree(context, N, depth)  (tree speculation) up to N guesses as a tree.TokenTree, no deeper than depth
    rollback(n)                      after verification: only context[:n] is now true; forget the rest

A Proposal carries the drafted tokens and, when the drafter samples, q: the (warped) distribution each token
was drawn from, a row of length vocab_size per token. A drafter that picks tokens deterministically (argmax,
prompt lookup) leaves q as None: the verifier then treats each q as all mass on the drafted token, which is
exactly the distribution a deterministic drafter draws from.

A drafter may propose fewer than k tokens (even none): the loop then verifies what it got.

Randomness: a drafter that samples draws only from `target.random` (a randomness.RandomSource). That is what
lets the proofs enumerate every draw of a run, the drafter's included.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class TargetView:
    model: object  # the target tinyspec Model
    cache: object  # its KVCache: holds every token of the context but the last one
    hidden: object = None  # [d] the target's final hidden state at the second-to-last context position: the
    #                        state whose logits chose the last token (read by the MTP drafter)
    random: object = None  # the randomness.RandomSource every random draw of the drafter must come from


@dataclass
class Proposal:
    tokens: list  # [n <= k] drafted token ids
    q: np.ndarray | None = None  # [n, V] float64: the distribution each token was drawn from; None = one-hot


class Drafter:
    name = "drafter"
    vocab_size: int | None = None  # None: works with any vocabulary (e.g. prompt lookup)
    cost: float = 0.0  # c: the cost of drafting one token relative to one target forward (adaptive k uses it)
    stream: int = 1  # by default a sampling drafter draws from SeededSource([seed, stream]), the verifier from [seed]

    def check(self, model) -> None:
        """Raise ValueError, saying what to do, if this drafter cannot serve the target `model` (the CLI calls it
        before anything is printed; begin() calls it too)."""

    def begin(self, target, prompt, params) -> None:
        """Start a new generation. `target` is a TargetView, `prompt` the input ids, `params` SamplingParams."""

    def propose(self, context: list, k: int) -> Proposal:
        raise NotImplementedError

    def propose_tree(self, context: list, budget: int, max_depth: int):
        """Up to `budget` guesses as a tinyspec.tree.TokenTree, no deeper than max_depth. By default the chain of
        propose(): drafters that can offer alternatives (several continuations, the top-b tokens) override it."""
        from ..tree import TokenTree

        proposal = self.propose(context, min(budget, max_depth))
        return TokenTree.chain(proposal.tokens, proposal.q)

    def rollback(self, n: int) -> None:
        """Only the first n tokens of the last context remain; drop any state built on the rest."""
