"""Tree speculation's spec: the same promises as the chain's.

1. greedy       speculative output with a tree == vanilla greedy, for any tree (random, deep, wide, a single
                node, one that holds the answer among distractors, the ngram trie)
2. coupled      == vanilla coupled sampling, token for token
3. sampling     deterministic trees walked by the target's own draws (SpecExec): == vanilla sampling with the
                same seed, token for token (not only in distribution)
4. rejection    trees whose children the drafter drew from q, without replacement (SpecInfer / Sequoia):
                the exact output distribution, enumerated through the real loop, equals the math to 1e-12
5. the tree itself: validation, the trie the ngram drafter builds, and the model drafters' best-first tree
                (EAGLE-2's rule, against a reference that spells it out)

Targets are toy.TableModels unless a test says otherwise (see tests/test_spec_exact.py).
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import (assert_same_distribution, autoregressive, examples, reference_warp, table_drafter, table_target,
                     warped)
from tinyspec.decoding import generate_ids
from tinyspec.drafters import Drafter, NgramDrafter, Proposal
from tinyspec.randomness import exact_distribution
from tinyspec.sampling import SamplingParams
from tinyspec.speculative import SpecStats, speculative_generate_ids
from tinyspec.tree import TokenTree
from tinyspec.toy import TableModel

SLOW = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- tree drafters -----------------------------------------------------------------------------------------------

def random_tree(rng, vocab, budget, max_depth, answer=()):
    """A tree of up to `budget` nodes, no deeper than max_depth, siblings distinct: first the path `answer` (as
    far as the budget and depth allow), then random nodes under random parents."""
    tokens, parents, depth = [], [], []
    node = -1
    for t in list(answer)[:min(budget, max_depth)]:
        tokens.append(int(t)), parents.append(node), depth.append(len(depth) + 1)
        node = len(tokens) - 1
    for _ in range(int(rng.integers(0, budget - len(tokens) + 1))):
        parent = int(rng.integers(-1, len(tokens)))
        if (0 if parent < 0 else depth[parent]) >= max_depth:
            continue
        taken = {tokens[i] for i in range(len(tokens)) if parents[i] == parent}
        free = [t for t in range(vocab) if t not in taken]
        if free:
            tokens.append(int(rng.choice(free))), parents.append(parent)
            depth.append(1 + (0 if parent < 0 else depth[parent]))
    return TokenTree(tokens, parents)


class RandomTreeDrafter(Drafter):
    """Random trees; with `answer`, trees whose first path is the answer's next tokens for a random depth."""
    name = "random-tree"

    def __init__(self, vocab, seed, prompt_len=0, answer=None):
        self.vocab_size, self.seed, self.prompt_len, self.answer = vocab, seed, prompt_len, answer

    def propose(self, context, k):
        return Proposal([])

    def propose_tree(self, context, budget, max_depth):
        rng = np.random.default_rng([self.seed, len(context)])
        answer = ()
        if self.answer is not None:
            done = len(context) - self.prompt_len
            answer = self.answer[done: done + int(rng.integers(1, max_depth + 1))]
        return random_tree(rng, self.vocab_size, budget, max_depth, answer)


class SampledTreeDrafter(Drafter):
    """Children drawn from a draft table's warped q without replacement, `width` per node, breadth first, from
    the run's source (so the proofs enumerate them). tree.q row r is the q row r's children were drawn from."""
    name = "sampled-tree"

    def __init__(self, model: TableModel, width: int):
        self.model, self.width, self.vocab_size = model, width, model.cfg.vocab_size

    def begin(self, target, prompt, params):
        self.params, self.random = params, target.random

    def propose(self, context, k):
        return Proposal([])

    def propose_tree(self, context, budget, max_depth):
        p = self.params
        tokens, parents, q_rows = [], [], []
        frontier = [(-1, list(context))]  # (node, its path's context), breadth first
        while frontier and len(tokens) < budget:
            node, ctx = frontier.pop(0)
            q = reference_warp(self.model.logits(ctx), p.temperature, p.top_k, p.top_p)  # [V]
            q_rows.append((node, q))
            depth = len(ctx) - len(context)
            if depth >= max_depth:
                continue
            left = q.copy()
            for _ in range(min(self.width, budget - len(tokens), int((q > 0).sum()))):
                x = self.random.choice(left)  # without replacement: x is removed for the next sibling
                left[x] = 0.0
                tokens.append(x), parents.append(node)
                frontier.append((len(tokens) - 1, ctx + [x]))
        rows = np.zeros((len(tokens) + 1, self.vocab_size))  # [N + 1, V]
        for node, q in q_rows:
            rows[node + 1] = q
        return TokenTree(tokens, parents, rows)


TREE_KINDS = ["random-tree", "answer-tree", "ngram-trie", "draft-model-tree", "chain"]


def tree_drafter(kind, V, seed, prompt, answer):
    if kind == "random-tree":
        return RandomTreeDrafter(V, seed)
    if kind == "answer-tree":
        return RandomTreeDrafter(V, seed, len(prompt), answer)
    if kind == "ngram-trie":
        return NgramDrafter(max_n=2)
    if kind == "draft-model-tree":  # best-first top-b trees from a noisy copy of the target
        return table_drafter("draft-model", V, seed)
    return ChainOnly(table_drafter("draft-model", V, seed))  # no propose_tree of its own: the chain, as a tree


class ChainOnly(Drafter):
    """Hides the inner drafter's propose_tree: the base class's chain-as-a-tree is used."""

    def __init__(self, inner):
        self.inner, self.vocab_size, self.name = inner, inner.vocab_size, "chain-only"

    def begin(self, target, prompt, params):
        self.inner.begin(target, prompt, params)

    def propose(self, context, k):
        return self.inner.propose(context, k)

    def rollback(self, n):
        self.inner.rollback(n)


case = dict(V=st.integers(2, 8), seed=st.integers(0, 10_000), n=st.integers(1, 16), budget=st.integers(1, 12),
            k=st.integers(1, 6), prompt=st.lists(st.integers(0, 1), min_size=1, max_size=6), eos=st.booleans(),
            kind=st.sampled_from(TREE_KINDS), adaptive=st.booleans())


# --- 1. greedy, 2. coupled, 3. sampling: token for token -----------------------------------------------------------

def path_scores_drafter(rng_seed, V):
    """A synthetic drafter: the scores after a path are log-probabilities drawn from the path's own seed, so the
    same path always gets the same scores. Returns (root_scores, expand, calls, scores_after): the first two for
    best_first_tree, the drafter calls' frontier sizes, and the scores after any path."""
    def scores_after(path):
        rng = np.random.default_rng([rng_seed, len(path), *path])
        return np.log(rng.dirichlet(np.full(V, 0.3)))  # [V] peaked, as a drafter's distribution is
    calls = []

    def expand(tree, nodes):
        calls.append(len(nodes))
        return np.stack([scores_after(tuple(tree.tokens[a] for a in tree.path(n))) for n in nodes])
    return scores_after(()), expand, calls, scores_after


def eagle2_reference(scores_after, budget, max_depth, width):
    """EAGLE-2's selection spelled out without best_first_tree: expand every depth to max_depth (no early stop),
    the `width` best candidates of each depth (by path score; on a tie the earlier found) as its frontier; then
    the `budget` best candidates of all depths, ties to the shallower, then the earlier found. -> [(path, score)]"""
    found = []  # (path, score, depth, order)
    frontier = [((), 0.0)]
    for d in range(1, max_depth + 1):
        here = []
        for path, base in frontier:
            row = scores_after(path)
            for t in np.argsort(-row, kind="stable")[:width]:
                here.append((path + (int(t),), base + float(row[t]), d, len(found) + len(here)))
        found += here
        frontier = [(p, sc) for p, sc, _, _ in sorted(here, key=lambda c: (-c[1], c[3]))[:width]]
    best = sorted(found, key=lambda c: (-c[1], c[2], c[3]))[:budget]
    return [(p, sc) for p, sc, _, _ in best]


@pytest.mark.spec
@settings(max_examples=examples(150), deadline=None)
@given(seed=st.integers(0, 10_000), V=st.integers(2, 9), budget=st.integers(1, 16), max_depth=st.integers(1, 6),
       width=st.integers(1, 4))
def test_best_first_tree_keeps_the_budget_best_paths_of_every_depth(seed, V, budget, max_depth, width):
    """The tree is EAGLE-2's: the budget best-scoring candidates over every depth (the reference expands all of
    them; the builder stops once deeper ones cannot make it), best first, each parent before its children."""
    from tinyspec.tree import best_first_tree

    root, expand, calls, scores_after = path_scores_drafter(seed, V)
    tree = best_first_tree(root, expand, budget, max_depth, width)
    want = eagle2_reference(scores_after, budget, max_depth, width)
    got = [tuple(tree.tokens[a] for a in tree.path(n)) for n in range(len(tree))]
    assert got == [p for p, _ in want]
    assert all(p < n for n, p in enumerate(tree.parents))  # parents first: every prefix is a tree
    assert len(calls) <= max_depth - 1 and all(c <= width for c in calls)
    if width == 1:  # the greedy chain
        path = ()
        for _ in range(min(budget, max_depth)):
            path += (int(np.argmax(scores_after(path))),)
        assert got == [path[:m] for m in range(1, len(path) + 1)]


@settings(max_examples=examples(200), deadline=None)
@given(row=st.lists(st.sampled_from([-np.inf, -3.0, -1.0, -0.5, 0.0]), min_size=1, max_size=30), n=st.integers(1, 8))
def test_best_columns_is_the_stable_argsort(row, n):
    from tinyspec.tree import best_columns

    row = np.array(row)
    assert list(best_columns(row, n)) == list(np.argsort(-row, kind="stable")[:n])


@pytest.mark.spec
def test_best_first_tree_goes_deep_when_sure_and_wide_when_not():
    from tinyspec.tree import best_first_tree

    sure = np.log(np.array([0.97, 0.01, 0.01, 0.01]))  # after every path
    unsure = np.log(np.full(4, 0.25))
    for scores, parents in ((sure, [-1, 0, 1, 2]), (unsure, [-1, -1, -1, -1])):
        tree = best_first_tree(scores, lambda t, nodes: np.stack([scores] * len(nodes)), 4, 4, 4)
        assert tree.parents == parents


@pytest.mark.spec
@settings(max_examples=examples(300), **SLOW)
@given(**case)
def test_greedy_tree_speculation_equals_greedy(V, seed, n, budget, k, prompt, eos, kind, adaptive):
    target = table_target(V, seed)
    vanilla = generate_ids(target, prompt, n, stop_at_eos=eos)
    stats = SpecStats()
    spec = speculative_generate_ids(target, tree_drafter(kind, V, seed, prompt, vanilla), prompt, n, k=k,
                                    tree=budget, stop_at_eos=eos, stats=stats, adaptive=adaptive)
    assert spec == vanilla
    assert stats.accepted <= stats.drafted and stats.new_tokens == len(vanilla)
    if kind == "answer-tree" and len(vanilla) >= 3 and not adaptive:  # a step that could draft held at least one answer token
        assert stats.accepted > 0


@pytest.mark.spec
@settings(max_examples=examples(200), **SLOW)
@given(**case, temperature=st.sampled_from([0.6, 1.0, 1.6]), top_k=st.sampled_from([0, 3]),
       top_p=st.sampled_from([1.0, 0.8]), coupled=st.booleans())
def test_sampled_tree_walk_equals_vanilla_sampling_token_for_token(V, seed, n, budget, k, prompt, eos, kind, adaptive,
                                                                    temperature, top_k, top_p, coupled):
    """Coupled sampling, and plain sampling with a deterministic tree (the target draws its own token at each
    node it reaches: one draw per emitted token, like vanilla): the same seed gives vanilla's very tokens."""
    target = table_target(V, seed)
    params = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, coupled=coupled)
    vanilla = generate_ids(target, prompt, n, params, stop_at_eos=eos)
    if kind == "chain":  # a sampling chain drafter reports q: rejection sampling, equal in distribution only
        kind = "draft-model-tree"
    spec = speculative_generate_ids(target, tree_drafter(kind, V, seed, prompt, vanilla), prompt, n, params,
                                    "coupled" if coupled else "rejection", k, tree=budget, stop_at_eos=eos,
                                    adaptive=adaptive)
    assert spec == vanilla


# --- 4. rejection over sampled trees: exact, by enumeration ------------------------------------------------------

@pytest.mark.spec
@settings(max_examples=examples(40), **SLOW)
@given(V=st.integers(2, 4), seed=st.integers(0, 10_000), n=st.integers(1, 4), budget=st.integers(1, 4),
       width=st.integers(1, 3), temperature=st.sampled_from([0.7, 1.0, 1.6]), top_k=st.sampled_from([0, 3]),
       top_p=st.sampled_from([1.0, 0.8]), eos=st.booleans(), adaptive=st.booleans())
def test_multi_draft_rejection_is_exact_through_the_real_loop(V, seed, n, budget, width, temperature, top_k, top_p,
                                                              eos, adaptive):
    target, prompt = table_target(V, seed), [0, 1]
    draft = TableModel(V, seed, noise=0.8, noise_seed=seed + 1)
    params = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p)
    spec = exact_distribution(lambda source: tuple(speculative_generate_ids(
        target, SampledTreeDrafter(draft, width), prompt, n, params, "rejection", k=3, tree=budget,
        stop_at_eos=eos, adaptive=adaptive, random=source)))
    assert_same_distribution(spec, autoregressive(warped(target, params), prompt, n, 1 if eos else None))


def test_multi_draft_rejection_with_a_wrong_residual_is_caught():
    """The enumeration bites: keeping p (not norm(max(0, p - q))) after a rejected child breaks exactness."""
    import tinyspec.tree as tree_module

    V, seed, n = 3, 4, 3
    target, prompt, params = table_target(V, seed), [0, 1], SamplingParams(temperature=1.0)
    draft = TableModel(V, seed, noise=0.8, noise_seed=seed + 1)
    run = lambda source: tuple(speculative_generate_ids(target, SampledTreeDrafter(draft, 2), prompt, n, params,
                                                        "rejection", k=2, tree=3, stop_at_eos=False, random=source))
    exact = autoregressive(warped(target, params), prompt, n)
    import tinyspec.speculative as spec_module
    correct = spec_module.residual_distribution
    spec_module.residual_distribution = lambda p, q: p  # BUG
    try:
        wrong = exact_distribution(run)
    finally:
        spec_module.residual_distribution = correct
    assert max(abs(wrong.get(s, 0.0) - exact[s]) for s in exact) > 1e-3
    assert_same_distribution(exact_distribution(run), exact)
    assert tree_module.verify_tree_rejection is not None


# --- adaptive budgets ----------------------------------------------------------------------------------------

def test_the_tree_break_even_rule():
    from tinyspec.adaptive import TreeBreakEven, VerifyCost

    rule = TreeBreakEven(budget_max=8, verify_cost=VerifyCost(0.1, 0.1))
    assert rule.speed(0) == 1.0
    # a tree of 8 nodes whose first two are a chain 5 -> 6 and the other six wrong siblings (40..45 under the
    # root) -- the text that followed is 5 6 7: the first two guesses right, the others never: a budget of 2
    tree = TokenTree([5, 6] + list(range(40, 46)), [-1, 0] + [-1] * 6)
    for step in range(30):
        rule.propose(10, tree)
        rule.observe([0] * 10 + [5, 6, 7])
    assert rule.budget() == 2 and rule.on_path[0] > 0.99 and rule.on_path[2] < 0.01
    # nodes are scored whether or not they were verified, and only as deep as the text known: a depth-3 node
    # after one known token is not scored
    deep = TreeBreakEven(budget_max=4)
    deep.propose(10, TokenTree([5, 6, 7], [-1, 0, 1]))
    before = list(deep.on_path)
    deep.observe([0] * 10 + [5])
    assert deep.on_path[0] > before[0] and deep.on_path[1:] == before[1:]
    for _ in range(30):  # nothing is ever right: plain decoding, with a one-node probe every 8 steps
        rule.propose(10, TokenTree([8, 9], [-1, -1]))
        rule.observe([0] * 10 + [5, 6])
    assert [rule.budget() for _ in range(8)] == [0] * 7 + [1]
    costly = TreeBreakEven(budget_max=8, draft_cost=0.5, verify_cost=VerifyCost(0.1, 0.1),
                           on_path=[0.3] + [0.0] * 7)  # the first guess right 30% of the time, the rest never
    assert abs(costly.speed(1) - 1.3 / (0.5 + 1.1)) < 1e-12 and costly.budget() == 0  # drafting does not pay
    assert TreeBreakEven(budget_max=8, verify_cost=VerifyCost(0.1, 0.1), on_path=[0.3] + [0.0] * 7).budget() == 1


@pytest.mark.spec
def test_adaptive_trees_grow_when_deep_guesses_come_true():
    """A free drafter whose tree holds the answer as its first path, as deep as asked, and wrong siblings after
    it: the rule, learning from every node it proposed, grows the budget past one node and the run needs far
    fewer forwards than tokens. (Learning only from verified nodes left it at one node for good.)"""
    from tinyspec.adaptive import VerifyCost

    class AnswerFirst(Drafter):
        name, vocab_size = "answer-first", 6

        def __init__(self, prompt_len, answer):
            self.prompt_len, self.answer = prompt_len, answer

        def propose(self, context, k):
            return Proposal([])

        def propose_tree(self, context, budget, max_depth):
            done = len(context) - self.prompt_len
            path = list(self.answer[done: done + min(max_depth, budget)])
            tokens, parents = path, list(range(-1, len(path) - 1))
            wrong = [t for t in range(6) if not path or t != path[0]][: budget - len(path)]
            return TokenTree(tokens + wrong, parents + [-1] * len(wrong))

    target = table_target(6, 3)
    prompt, n = [2, 3, 4], 60
    vanilla = generate_ids(target, prompt, n, stop_at_eos=False)
    stats = SpecStats()
    spec = speculative_generate_ids(target, AnswerFirst(len(prompt), vanilla), prompt, n, k=8, tree=12,
                                    adaptive=True, stop_at_eos=False, stats=stats, verify_cost=VerifyCost(0.1, 0.1))
    assert spec == vanilla
    assert stats.target_forwards < n / 3, stats.target_forwards


# --- 5. the tree ---------------------------------------------------------------------------------------------

def test_tree_validation():
    with pytest.raises(ValueError, match="siblings must be distinct"):
        TokenTree([5, 5], [-1, -1])
    with pytest.raises(ValueError, match="an earlier node"):
        TokenTree([5, 6], [1, -1])
    with pytest.raises(ValueError, match="one parent per token"):
        TokenTree([5, 6], [-1])
    chain = TokenTree.chain([4, 2, 4])
    assert chain.parents == [-1, 0, 1] and chain.depths == [1, 2, 3]
    layout = chain.layout(start=10)  # the root at cache row 10, node i at row 11 + i
    assert layout.ancestors == [[], [10], [10, 11], [10, 11, 12]] and layout.positions() == [10, 11, 12, 13]


def test_the_ngram_trie_merges_earlier_continuations():
    d = NgramDrafter(max_n=3)
    context = [1, 2, 3, 9, 1, 2, 3, 7, 5, 1, 2, 3]
    tree = d.propose_tree(context, budget=8, max_depth=3)
    assert tree.tokens[:3] == d.propose(context, 3).tokens == [7, 5, 1]  # the first path is the chain
    assert tree.tokens == [7, 5, 1, 9, 1, 2] and tree.parents == [-1, 0, 1, -1, 3, 4]
    assert d.propose_tree(context, budget=4, max_depth=3).tokens == [7, 5, 1, 9]  # the budget
    assert d.propose_tree([1, 2, 3], budget=4, max_depth=3).tokens == []


@settings(max_examples=examples(200), deadline=None)
@given(context=st.lists(st.integers(0, 3), min_size=1, max_size=40), budget=st.integers(1, 12),
       depth=st.integers(1, 6))
def test_the_ngram_trie_holds_exactly_the_continuations_it_has_room_for(context, budget, depth):
    d = NgramDrafter(max_n=3)
    tree = d.propose_tree(context, budget, depth)
    assert len(tree) <= budget and all(x <= depth for x in tree.depths)
    paths = {tuple(tree.tokens[i] for i in tree.path(node)) for node in range(len(tree))}
    ends, _ = d.matches(context)
    chain = tuple(d.propose(context, min(budget, depth)).tokens)
    assert all(chain[:m] in paths for m in range(1, len(chain) + 1))  # the chain is the trie's first path
    for path in paths:  # every path of the trie is the prefix of some earlier continuation
        assert any(tuple(context[j + 1: j + 1 + len(path)]) == path for j in ends)


# --- trees on tiny Gemmas: tree attention, bitwise ------------------------------------------------------------------

def chain_logits(model, prompt, path_tokens):  # the logits after each token of the path, one token at a time
    cache = model.new_cache()
    rows = [model.forward(list(prompt), cache)[-1]]
    for t in path_tokens:
        rows.append(model.forward([t], cache)[0])
    return rows


@settings(max_examples=examples(25), **SLOW)
@given(seed=st.integers(0, 50), prompt_len=st.integers(1, 9), budget=st.integers(1, 12), depth=st.integers(1, 6))
def test_every_tree_row_is_bitwise_the_chain_of_its_path(seed, prompt_len, budget, depth):
    """One forward over [root] + tree on a tiny Gemma (window 4: paths cross it) gives each row exactly the logits
    that one-token-at-a-time decoding of that row's path gives, on the batch-invariant kernels."""
    from helpers import tiny

    model = tiny(seed % 5, max_position_embeddings=64)
    rng = np.random.default_rng(seed)
    prompt = [int(t) for t in rng.integers(0, 32, prompt_len)]
    tree = random_tree(rng, 32, budget, depth)
    cache = model.new_cache()
    model.forward(prompt[:-1], cache) if prompt_len > 1 else None
    start = cache.length
    logits = model.forward([prompt[-1]] + tree.tokens, cache, tree=tree.layout(start))  # [N + 1, V]
    assert cache.length == start + len(tree) + 1
    for node in range(-1, len(tree)):
        path = [] if node < 0 else tree.path(node)
        expected = chain_logits(model, prompt, [tree.tokens[i] for i in path])[-1]
        assert np.array_equal(logits[node + 1], expected), (node, path)


@settings(max_examples=examples(40), **SLOW)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 20), budget=st.integers(1, 12), k=st.integers(1, 6),
       prompt=st.lists(st.integers(0, 31), min_size=1, max_size=8),
       kind=st.sampled_from(["random-tree", "answer-tree", "draft-model-tree", "early-exit-tree", "mtp-tree"]),
       adaptive=st.booleans())
def test_greedy_trees_on_tiny_gemmas_equal_greedy(seed, n, budget, k, prompt, kind, adaptive):
    """Real KV caches: the accepted path's rows moved into place, rollbacks across the window of 4."""
    from helpers import tiny
    from tinyspec.drafters import DraftModelDrafter

    target = tiny(seed % 7, max_position_embeddings=128)
    vanilla = generate_ids(target, prompt, n, stop_at_eos=False)
    from test_mtp import tiny_drafter
    from tinyspec.drafters import EarlyExitDrafter

    drafter = {"draft-model-tree": lambda: DraftModelDrafter(tiny(seed % 7 + 1, max_position_embeddings=128)),
               "early-exit-tree": lambda: EarlyExitDrafter(1, width=3),
               "mtp-tree": lambda: tiny_drafter(target, seed=seed % 5, n=12),
               "random-tree": lambda: RandomTreeDrafter(32, seed),
               "answer-tree": lambda: RandomTreeDrafter(32, seed, len(prompt), vanilla)}[kind]()
    spec = speculative_generate_ids(target, drafter, prompt, n, k=k, tree=budget, stop_at_eos=False,
                                    adaptive=adaptive)
    assert spec == vanilla
