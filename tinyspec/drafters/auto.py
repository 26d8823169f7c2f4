"""Auto: prompt lookup where the text repeats, the MTP drafter elsewhere, in ONE tree under one node budget.

Prompt lookup is free and nearly always right while the output copies its input; the MTP drafter costs a few
small forwards and guesses ordinary text. `auto` asks for one tree each step (propose_tree):

    step 1   the ngram trie (ngram.py, max_n = 8): the continuations of the context's earlier matches, the most
             recent of the longest first, up to the whole budget N. Its n nodes cost nothing to draft
    step 2   if the longest match is at least `repeat` tokens (2), the text repeats here: the trie is the tree,
             and the model drafter is not called (its c is not paid where prompt lookup does the work)
    step 3   else, if n < N: the model drafter's tree (the MTP drafter's best-first tree) of N - n nodes, rooted
             at the same root (after the context's last token), merged into the trie: the model's nodes join in
             their order; a node whose token path the trie already holds IS that node (siblings stay distinct),
             so where the two agree the tree holds fewer than N nodes. The trie's nodes come first: the adaptive
             budget (adaptive.TreeBreakEven) reads node j as the (j + 1)-th best guess

    >>> from tinyspec.tree import TokenTree
    >>> class Fixed(Drafter):                        # a stand-in model drafter: root -> {7, 8}, 7 -> 6
    ...     def propose_tree(self, context, budget, max_depth):
    ...         return TokenTree([7, 8, 6][:budget], [-1, -1, 0][:budget])
    >>> auto = AutoDrafter(Fixed())
    >>> auto.propose_tree([1, 2, 7, 5, 1, 2], budget=5, max_depth=3).tokens  # [1, 2] was followed by 7, 5, 1
    [7, 5, 1]
    >>> tree = auto.propose_tree([4, 9, 3, 4], budget=5, max_depth=2)  # only 4 matched: the trie's 9 -> 3, then
    >>> tree.tokens, tree.parents                                       # the model's 7 -> 6 and 8
    ([9, 3, 7, 8, 6], [-1, 0, -1, -1, 2])
    >>> auto.propose_tree([3, 4], budget=4, max_depth=3).tokens              # nothing matched: the model's tree
    [7, 8, 6]

Why a one-token match does not end the step: in ordinary text the newest token has nearly always occurred
before, so that match is weak evidence of a repeat; its continuations still come first (free, and on this
bench's prose they are accepted more often than the model drafter's guesses), with the model's nodes after them.

A chain (propose): the ngram chain when the longest match is at least `repeat` tokens, else the model drafter's
chain (with its q).

Exactness. The merged tree carries no q, even when the model drafter drew its nodes: every verifier walks it
with the target's own choice at each node (tree.verify_tree: greedy, coupled, and the sampling walk under
rejection), which is exact for any tree built from the context and the drafter's own randomness. Multi-draft
rejection is never used for it: that needs each node's children drawn from one q, and the trie's were not.

State. begin and rollback go to both drafters, every step, exactly as to each alone; a step that does not call
the model drafter leaves it as the loop leaves a drafter whose budget is 0.
"""

from __future__ import annotations

from .base import Drafter, Proposal
from .ngram import NgramDrafter


class AutoDrafter(Drafter):
    name = "auto"

    def __init__(self, model: Drafter, ngram: NgramDrafter | None = None, repeat: int = 2):
        self.model = model  # the drafter of ordinary text: the MTP drafter (any Drafter works)
        self.ngram = ngram if ngram is not None else NgramDrafter(max_n=8)  # the drafter of repeats
        self.repeat = repeat  # a match this long (tokens) says the text repeats: prompt lookup alone
        self.offered = 0  # nodes (chain: tokens) offered this run
        self.from_model = 0  # of them, how many the model drafter drafted (merged nodes included)

    @property
    def vocab_size(self):
        return self.model.vocab_size

    @property
    def stream(self):  # the randomness is the model drafter's: it draws from its own stream, as alone
        return getattr(self.model, "stream", 1)

    @property
    def cost(self) -> float:
        """c per node: the model drafter's c times the share of this run's nodes it drafted (the trie's cost
        nothing); before any step, the model drafter's c (nothing is known yet about repeats)."""
        c = float(self.model.cost or 0.0)
        return c if self.offered == 0 else c * self.from_model / self.offered

    def check(self, model):
        self.model.check(model)

    def begin(self, target, prompt, params):
        self.offered = self.from_model = 0
        self.ngram.begin(target, prompt, params)
        self.model.begin(target, prompt, params)

    def propose(self, context, k):
        proposal = self.ngram.propose(context, k)
        if self.ngram.match < self.repeat:
            proposal = self.model.propose(context, k)
            self.from_model += len(proposal.tokens)
        self.offered += len(proposal.tokens)
        return Proposal(list(proposal.tokens), proposal.q)

    def propose_tree(self, context, budget, max_depth):
        from ..tree import TokenTree

        # Step 1: the trie of the earlier continuations, up to the whole budget
        trie = self.ngram.propose_tree(context, budget, max_depth)
        tokens, parents = list(trie.tokens), list(trie.parents)
        # Steps 2 and 3: where the text does not repeat, the rest of the budget to the model drafter
        if self.ngram.match < self.repeat and len(tokens) < budget:
            grown = self.model.propose_tree(context, budget - len(tokens), max_depth)
            self.from_model += len(grown)
            # merge, node by node (a parent always comes before its children)
            node = {(p, t): i for i, (p, t) in enumerate(zip(parents, tokens))}  # (parent, token) -> node
            where = []  # where[i]: the merged node of the model's node i
            for t, p in zip(grown.tokens, grown.parents):
                key = (-1 if p < 0 else where[p], t)
                if key not in node:
                    node[key] = len(tokens)
                    tokens.append(t), parents.append(key[0])
                where.append(node[key])
        self.offered += len(tokens)
        return TokenTree(tokens, parents)  # no q: every verifier walks it (see the module docstring)

    def rollback(self, n):
        self.ngram.rollback(n)
        self.model.rollback(n)
