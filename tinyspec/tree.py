"""Tree speculation: many guesses, one forward.

A chain of drafts d1..dk is one guess of the continuation. A tree is several: node i holds a token and hangs
under a parent (the root is the context's last token), siblings are distinct, and each root-to-node path is a
guess. The target verifies the whole tree in ONE forward: row 0 is the root, row i + 1 is node i, each row
attends to the cache and to its own ancestors only, at the position of its depth. Each row's logits are then
exactly what one-token-at-a-time decoding of that node's path would give.

Verification walks down from the root (row r is the distribution p_r of the token after row r's node):

    greedy      t = argmax p_r; descend to the child holding t, else emit t and stop
    sampling    t = the target's own choice at r (a draw from p_r, or the coupled Gumbel token); descend to the
    (SpecExec)  child holding t, else emit t and stop. Every emitted token is the target's own draw, one per
                token as in vanilla decoding: the same seed gives vanilla's very text
    rejection   children drawn from the drafter's q at r, without replacement (SpecInfer, Sequoia): try them
    (multi-     in the order drawn; keep child x with probability min(1, p(x) / q(x)); on a rejection
    draft)      p <- norm(max(0, p - q)), q <- q without x, renormalised; if every child is rejected, draw
                the token from the final p. Exact in distribution, like the chain's rule

A node with no children ends the walk with a bonus token from its own row. The chain is the tree in which
every node has one child.

    >>> t = TokenTree(tokens=[5, 7, 6, 9], parents=[-1, -1, 0, 0])   # root -> 5 -> {6, 9}, root -> 7
    >>> t.depths, t.children(-1), t.children(0), t.path(3)
    ([1, 1, 2, 2], [0, 1], [2, 3], [0, 3])
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .randomness import RandomSource
from .sampling import SamplingParams, best_columns, choose_token, warp


@dataclass
class TokenTree:
    tokens: list  # [N] the token of each node
    parents: list  # [N] each node's parent: a node index before it, or -1 for the root
    q: np.ndarray | None = None  # [N + 1, V] when the children were drawn from q: row 0 the root's q, row i + 1 node i's

    def __post_init__(self):
        self.tokens = [int(t) for t in self.tokens]
        self.parents = [int(p) for p in self.parents]
        if len(self.tokens) != len(self.parents):
            raise ValueError(f"a tree needs one parent per token: {len(self.tokens)} tokens, {len(self.parents)} parents")
        seen = set()
        for i, (t, parent) in enumerate(zip(self.tokens, self.parents)):
            if not -1 <= parent < i:
                raise ValueError(f"node {i}'s parent {parent} must be -1 (the root) or an earlier node")
            if (parent, t) in seen:
                raise ValueError(f"node {i} repeats token {t} under parent {parent}: siblings must be distinct")
            seen.add((parent, t))

    @classmethod
    def chain(cls, tokens, q=None) -> "TokenTree":
        """d1 -> d2 -> ... -> dk. q: [k, V], the distribution each draft was drawn from (row i: d_{i+1}'s)."""
        tokens = list(tokens)
        rows = None if q is None else np.concatenate([q, np.zeros((1, q.shape[1]))])  # [k + 1, V]
        return cls(tokens, list(range(-1, len(tokens) - 1)), rows)

    def __len__(self) -> int:
        return len(self.tokens)

    def prefix(self, n: int) -> "TokenTree":
        """The first n nodes: a tree too (every parent comes before its children). Only for a tree without q."""
        if self.q is not None:
            raise ValueError("a tree drawn from q cannot be cut: its children's draw order is part of its verification")
        return TokenTree(self.tokens[:n], self.parents[:n])

    @property
    def depths(self) -> list:  # [N] the root's children have depth 1
        depths = []
        for parent in self.parents:
            depths.append(1 if parent < 0 else depths[parent] + 1)
        return depths

    def children(self, node: int) -> list:
        """The nodes under `node` (-1: the root), in their order in the tree."""
        return [i for i, parent in enumerate(self.parents) if parent == node]

    def path(self, node: int) -> list:
        """The nodes from the root's child down to `node`."""
        nodes = []
        while node >= 0:
            nodes.append(node)
            node = self.parents[node]
        return nodes[::-1]

    def layout(self, start: int) -> "TreeLayout":
        """Where the verification forward puts the tree in a cache that holds `start` rows of context: the root
        at row start (directly under the context), node i at row start + 1 + i."""
        return TreeLayout(start, [[]] + [[start] + [start + 1 + a for a in self.path(i)[:-1]] for i in range(len(self))])


@dataclass
class TreeLayout:
    """Tree rows in a cache, for a forward that writes M of them after the cache's current rows. Rows 0 ..
    prefix-1 are the context, which every tree row sees. New row r sees the context, the cache rows
    ancestors[r] (its tree ancestors, root first: rows >= prefix, written by this forward or an earlier one)
    and itself, and sits at position prefix + len(ancestors[r])."""
    prefix: int
    ancestors: list  # [M] lists of cache rows

    def positions(self):  # [M]
        return [self.prefix + len(a) for a in self.ancestors]


# --- building a tree from a drafter's distributions -----------------------------------------------------------

def best_first_tree(root_scores, expand, budget: int, max_depth: int, width: int, ids=None) -> TokenTree:
    """EAGLE-2's rule: the `budget` guesses with the highest path scores (the sum of log-probabilities under the
    drafter from the root), over every depth, so a confident drafter gets a deep tree and an unsure one a wide
    one. `expand(tree, nodes)` returns the scores [len(nodes), V] of the token after each of `nodes`: one
    drafter call for the whole frontier. root_scores [V]: the scores after the root. ids: the token id of each
    score column, when the drafter scores a subset of the vocabulary (default: column = id).

    1. Expansion, depth by depth: each frontier node offers its `width` best next tokens (candidates); the
       `width` best candidates of the depth become the next frontier. Expansion stops at max_depth, or as soon
       as `budget` candidates score at least as high as the best frontier node: a path score never grows along
       a path, so nothing deeper could join the tree.
    2. Reranking: the tree is the `budget` best candidates, best first (a tie goes to the shallower, then the
       earlier). A parent scores at least as high as its child and is shallower, so it always comes first:
       the tree's first n nodes are a tree too, the drafter's n best guesses.
    With width 1 the tree is the drafter's greedy chain."""
    tokens, parents, score, depth = [], [], [], []  # every candidate, a tree in the order they were found
    frontier, scores = [-1], np.asarray(root_scores, dtype=np.float64)[None, :]  # [F, V]
    for d in range(1, max_depth + 1):
        found = []
        for node, row in zip(frontier, scores):
            base = 0.0 if node < 0 else score[node]
            for t in best_columns(row, width):  # the best tokens, lower id first on a tie
                if np.isfinite(row[t]):
                    found.append(len(tokens))
                    tokens.append(int(t if ids is None else ids[t])), parents.append(node)
                    score.append(base + float(row[t])), depth.append(d)
        frontier = sorted(sorted(found, key=lambda i: -score[i])[:width])  # stable sort: earlier first on a tie
        if not frontier or d == max_depth:
            break
        best_open = max(score[i] for i in frontier)  # no path below the frontier can score higher
        if sum(s >= best_open for s in score) >= budget:
            break
        scores = expand(TokenTree(tokens, parents), frontier)
    best = sorted(range(len(tokens)), key=lambda i: (-score[i], depth[i], i))[:budget]
    new = {old: j for j, old in enumerate(best)}
    return TokenTree([tokens[i] for i in best], [-1 if parents[i] < 0 else new[parents[i]] for i in best])


def log_scores(logits, params: SamplingParams):  # [F, V] -> [F, V] float64
    """A drafter's scores for tree building: log q, q its warped distribution (temperature 1 when greedy)."""
    t = params.temperature if not params.greedy else 1.0
    with np.errstate(divide="ignore"):
        return np.log(np.stack([warp(row, t, params.top_k, params.top_p) for row in logits]))


# --- verification: walk down the tree ---------------------------------------------------------------------------

@dataclass
class TreeVerdict:
    path: list  # the accepted nodes, root's child first
    token: int  # the target's own token after them: a correction, or a bonus under a leaf
    kind: str  # "correction" (the walk left the tree) or "bonus" (it reached a leaf)
    uniforms: list = field(default_factory=list)  # rejection: the u of each child checked
    p_draft: list = field(default_factory=list)  # (the chain's per-draft figures: not kept for trees)
    q_draft: list = field(default_factory=list)

    @property
    def accepted(self) -> int:
        return len(self.path)


def verify_tree_greedy(logits, tree: TokenTree) -> TreeVerdict:  # [N+1, V]
    """The greedy walk: the sampling walk at temperature 0 (the target's choice is its argmax)."""
    return verify_tree_sampling(logits, tree, SamplingParams(), None, 0)


def verify_tree_sampling(logits, tree: TokenTree, params: SamplingParams, random: RandomSource,
                         position: int) -> TreeVerdict:
    """SpecExec's walk: at each row the target makes its own choice (sampling.choose_token: a draw from p, the
    coupled Gumbel token, or the argmax; `position`: the absolute position of the root's children), one per
    emitted token, and the walk descends to the child holding it."""
    depths = [0] + tree.depths
    verdict, node = TreeVerdict([], -1, "bonus"), -1  # node -1: the root, row 0
    while True:
        token = choose_token(logits[node + 1], params, random, position + depths[node + 1])[0]
        kids = tree.children(node)
        child = next((c for c in kids if tree.tokens[c] == token), None)
        if child is None:
            verdict.token, verdict.kind = token, ("correction" if kids else "bonus")
            return verdict
        verdict.path.append(child)
        node = child


def verify_tree_rejection(logits, tree: TokenTree, params: SamplingParams, random: RandomSource) -> TreeVerdict:
    """Multi-draft rejection sampling (SpecInfer; Sequoia without replacement). tree.q row r is the drafter's
    distribution at row r, from which row r's children were drawn without replacement, in their order."""
    from .speculative import acceptance_probability, residual_distribution

    verdict, node = TreeVerdict([], -1, "bonus"), -1
    while True:
        row = node + 1
        p = warp(logits[row], params.temperature, params.top_k, params.top_p)  # [V] p at this row
        kids = tree.children(node)
        q = tree.q[row].astype(np.float64) if kids else None  # [V]
        for child in kids:
            x = tree.tokens[child]
            keep = random.accept(acceptance_probability(p, q, x))
            verdict.uniforms.append(random.last_uniform)
            if keep:
                verdict.path.append(child)
                node = child
                break
            p = residual_distribution(p, q)  # p <- norm(max(0, p - q))
            q = q.copy()
            q[x] = 0.0  # the next child was drawn from q without x
            q = q / q.sum() if q.sum() > 0 else q
        else:  # every child rejected (or a leaf): the walk ends with a draw from what is left of p
            verdict.token = random.choice(p)
            verdict.kind = "correction" if kids else "bonus"
            return verdict


def verify_tree(logits, tree: TokenTree, params: SamplingParams, verifier: str, random: RandomSource,
                position: int) -> TreeVerdict:
    """Step 3 for a tree, by name: greedy; rejection with a sampled tree (tree.q set), else the sampling walk
    (deterministic trees, and coupled sampling, whose walk is token for token vanilla's)."""
    if verifier == "greedy":
        return verify_tree_greedy(logits, tree)
    if verifier == "rejection" and tree.q is not None:
        return verify_tree_rejection(logits, tree, params, random)
    return verify_tree_sampling(logits, tree, params, random, position)
