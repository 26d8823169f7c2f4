"""The auto drafter (tinyspec/drafters/auto.py): the ngram trie and a model drafter's tree, one tree per step.

1. the merged tree: a hand-checked case; for any context, its token paths are exactly the union of the trie's
   and those of the model drafter's tree of the budget the trie left; the trie comes first; the model drafter is
   asked for exactly what is left (not at all when the trie fills the budget or the text repeats); the cost
   counts its nodes only; a chain is prompt lookup's where the text repeats, else the model drafter's
2. greedy == vanilla: table targets (the model drafter a noisy draft table), tiny Gemmas with tiny random MTP
   drafters, prompts that repeat (the trie at work) and prompts that do not
3. coupled sampling, and plain sampling walked by the target (--verify rejection): vanilla's very tokens
4. rejection: the exact output distribution through the real loop, enumerated, equals the math, also when
   the model drafter draws its tree from q (auto drops q: the target walks the tree) and for chains
5. state: at every step, the MTP drafter inside auto drafts exactly what a fresh MTP drafter drafts from the
   target's cache and hidden state after the loop's rollbacks
6. make_drafter("auto[:PATH]") and the command line
"""

import doctest

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import assert_same_distribution, autoregressive, examples, table_drafter, table_target, tiny, warped
from test_mtp import tiny_drafter
from test_tree import RandomTreeDrafter, SampledTreeDrafter
from tinyspec.decoding import generate_ids
from tinyspec.drafters import AutoDrafter, Drafter, NgramDrafter, Proposal, make_drafter
from tinyspec.drafters import auto as auto_module
from tinyspec.randomness import exact_distribution
from tinyspec.sampling import SamplingParams
from tinyspec.speculative import SpecStats, speculative_generate_ids
from tinyspec.toy import TableModel
from tinyspec.tree import TokenTree

SLOW = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Spy(Drafter):
    """Wraps a model drafter: records each propose_tree call (context length, budget, the tree returned)."""

    def __init__(self, inner, cost=0.0):
        self.inner, self.name, self.cost, self.calls = inner, "spy", cost, []

    @property
    def vocab_size(self):
        return self.inner.vocab_size

    def check(self, model):
        self.inner.check(model)

    def begin(self, target, prompt, params):
        self.inner.begin(target, prompt, params)

    def propose(self, context, k):
        return self.inner.propose(context, k)

    def propose_tree(self, context, budget, max_depth):
        tree = self.inner.propose_tree(context, budget, max_depth)
        self.calls.append((len(context), budget, tree))
        return tree

    def rollback(self, n):
        self.inner.rollback(n)


def paths(tree):  # {token path of every node}
    return {tuple(tree.tokens[i] for i in tree.path(node)) for node in range(len(tree))}


# --- 1. the merged tree -----------------------------------------------------------------------------------------

def test_the_docstring_example():
    assert doctest.testmod(auto_module).failed == 0


def test_a_merge_by_hand():
    """In [1, 7, 5, 2, 9, 1] only the newest token matched (a one-token match: no repeat): the trie is 7 -> 5. The
    model's tree is 7 -> {5, 4}, 8: its 7 and 7 -> 5 are the trie's nodes, 8 and 7 -> 4 are new. In
    [1, 2, 7, 5, 2, 9, 1, 2] the two tokens [1, 2] matched: the text repeats, the trie alone is the tree."""
    class Fixed(Drafter):
        def propose_tree(self, context, budget, max_depth):
            return TokenTree([7, 8, 5, 4][:budget], [-1, -1, 0, 0][:budget])

    model = Spy(Fixed())
    auto = AutoDrafter(model)
    tree = auto.propose_tree([1, 7, 5, 2, 9, 1], budget=6, max_depth=2)
    assert tree.tokens == [7, 5, 8, 4] and tree.parents == [-1, 0, -1, 0] and tree.q is None
    assert [c[1] for c in model.calls] == [4]  # 6 - 2 trie nodes
    assert auto.propose_tree([1, 7, 5, 2, 9, 1], budget=2, max_depth=2).tokens == [7, 5]  # the trie fills it ...
    assert len(model.calls) == 1  # ... and the model drafter is not called
    tree = auto.propose_tree([1, 2, 7, 5, 2, 9, 1, 2], budget=6, max_depth=2)  # a repeat: the trie alone (the
    assert tree.tokens == [7, 5, 9, 1] and tree.parents == [-1, 0, -1, 2]     # one-token match's 9 -> 1 too) ...
    assert len(model.calls) == 1  # ... the model drafter not called
    tree = auto.propose_tree([1, 2, 3], budget=3, max_depth=2)  # no match: the model's tree
    assert tree.tokens == [7, 8, 5] and tree.parents == [-1, -1, 0] and model.calls[-1][1] == 3


@settings(max_examples=examples(300), deadline=None)
@given(context=st.lists(st.integers(0, 4), min_size=1, max_size=30), budget=st.integers(1, 12),
       depth=st.integers(1, 5), seed=st.integers(0, 1000), min_n=st.integers(1, 3), repeat=st.integers(1, 4))
def test_the_merged_tree_is_the_union_of_the_two(context, budget, depth, seed, min_n, repeat):
    ngram = NgramDrafter(max_n=3, min_n=min_n)
    model = Spy(RandomTreeDrafter(5, seed))
    auto = AutoDrafter(model, NgramDrafter(max_n=3, min_n=min_n), repeat=repeat)
    tree = auto.propose_tree(context, budget, depth)
    trie = ngram.propose_tree(context, budget, depth)
    assert tree.tokens[:len(trie)] == trie.tokens and tree.parents[:len(trie)] == trie.parents  # the trie first
    # the longest match, counted here from the context itself (the drafter's own `match` is not trusted)
    longest = max((n for n in range(1, min(3, len(context) - 1) + 1) for j in range(n - 1, len(context) - 1)
                   if context[j - n + 1: j + 1] == context[len(context) - n:]), default=0)
    if len(trie) == budget or (longest >= max(repeat, min_n)):
        assert model.calls == []
        expected = paths(trie)
    else:
        (_, asked, grown), = model.calls
        assert asked == budget - len(trie)
        expected = paths(trie) | paths(grown)
    assert paths(tree) == expected and len(tree) == len(expected)  # each path once: siblings are distinct
    assert len(tree) <= budget and max(tree.depths, default=0) <= depth and tree.q is None
    for node in range(-1, len(tree)):  # siblings distinct (TokenTree checks it too)
        kids = [tree.tokens[c] for c in tree.children(node)]
        assert len(kids) == len(set(kids))


def test_a_chain_is_prompt_lookups_where_the_text_repeats_else_the_models():
    """propose(): [1, 2] matched (2 tokens): prompt lookup's chain, the model drafter not asked; only the newest
    token matched, or nothing did: the model drafter's chain."""
    class Chain(Drafter):
        asked = []

        def propose(self, context, k):
            self.asked.append(len(context))
            return Proposal([6, 6, 6][:k])

    model = Chain()
    auto = AutoDrafter(model)
    assert auto.propose([1, 2, 7, 5, 1, 2], 3).tokens == [7, 5, 1] and model.asked == []
    assert auto.propose([4, 9, 3, 4], 3).tokens == [6, 6, 6] and model.asked == [4]  # a one-token match
    assert auto.propose([3, 4], 2).tokens == [6, 6] and model.asked == [4, 2]  # no match
    assert AutoDrafter(model, repeat=1).propose([4, 9, 3, 4], 3).tokens == [9, 3, 4]  # repeat = 1: ngram's


def test_the_cost_counts_the_model_drafters_nodes_only():
    class Fixed(Drafter):
        def propose_tree(self, context, budget, max_depth):
            return TokenTree([6, 7, 8][:budget], [-1, -1, -1][:budget])

    auto = AutoDrafter(Spy(Fixed(), cost=0.5))
    auto.begin(None, [0], SamplingParams())
    assert auto.cost == 0.5  # nothing drafted yet: the model drafter's c
    auto.propose_tree([1, 2, 3, 4, 1, 2], budget=3, max_depth=3)  # the trie: 3 4 1 -- free
    assert auto.cost == 0.0
    auto.propose_tree([1, 2, 3], budget=3, max_depth=3)  # no repeat: the model's 3 nodes
    assert auto.cost == 0.5 * 3 / 6
    auto.propose_tree([5, 9, 5, 9], budget=3, max_depth=3)  # [5, 9] repeats: the trie's 5 -> 9 alone, free
    assert auto.cost == 0.5 * 3 / 8
    auto.propose_tree([5, 9, 6, 9], budget=3, max_depth=3)  # only 9 matched: the trie's 6 -> 9, then the model's 6
    assert auto.cost == 0.5 * 4 / 10  # (merged into the trie's 6: one node asked, none added)
    auto.begin(None, [0], SamplingParams())
    assert auto.cost == 0.5


# --- 2. greedy == vanilla ----------------------------------------------------------------------------------------

case = dict(V=st.integers(2, 8), seed=st.integers(0, 10_000), n=st.integers(1, 16), budget=st.integers(1, 12),
            k=st.integers(1, 6), prompt=st.lists(st.integers(0, 2), min_size=1, max_size=10), eos=st.booleans(),
            adaptive=st.booleans())


@pytest.mark.spec
@settings(max_examples=examples(200), **SLOW)
@given(**case)
def test_greedy_auto_equals_greedy_on_tables(V, seed, n, budget, k, prompt, eos, adaptive):
    target = table_target(V, seed)
    prompt = [t % V for t in prompt]
    vanilla = generate_ids(target, prompt, n, stop_at_eos=eos)
    for tree in (budget, 0):  # a tree; a chain
        auto = AutoDrafter(table_drafter("draft-model", V, seed))
        stats = SpecStats()
        assert speculative_generate_ids(target, auto, prompt, n, k=k, tree=tree, stop_at_eos=eos, stats=stats,
                                        adaptive=adaptive) == vanilla
        assert stats.accepted <= stats.drafted and stats.new_tokens == len(vanilla)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("repeats", [True, False])
def test_greedy_auto_with_a_tiny_mtp_drafter_equals_greedy_on_tiny_gemmas(seed, repeats):
    """Bitwise vanilla on a real (tiny) Gemma with a tiny random MTP drafter; with a repeating prompt the trie and
    the MTP drafter both draft, without one the MTP drafter drafts the first tree alone."""
    target = tiny(seed, max_position_embeddings=128)
    prompt = [2, 5, 6, 7, 8, 9, 5, 6, 7, 8, 9, 5, 6] if repeats else [2, 5, 6, 7, 8, 9, 10, 11, 12]
    vanilla = generate_ids(target, prompt, 24, stop_at_eos=False)
    model = Spy(tiny_drafter(target, seed=seed, n=12))
    budget = 6
    for k in (2, 4):
        model.calls.clear()
        stats = SpecStats()
        ngram = None if repeats else NgramDrafter(max_n=8, min_n=2)  # (no one-token matches: nothing repeats)
        out = speculative_generate_ids(target, AutoDrafter(model, ngram), prompt, 24, k=k, tree=budget,
                                       stop_at_eos=False, stats=stats)
        assert out == vanilla
        assert model.calls and all(1 <= asked <= budget for _, asked, _ in model.calls)
        if repeats:  # some steps' trees hold trie nodes, and the MTP drafter has the rest
            assert any(asked < budget for _, asked, _ in model.calls)
        else:  # nothing repeats yet: the MTP drafter takes the whole first tree
            assert model.calls[0][:2] == (len(prompt) + 1, budget)
    chain = speculative_generate_ids(target, AutoDrafter(tiny_drafter(target, seed=seed, n=12)), prompt, 24, k=3,
                                     stop_at_eos=False)
    assert chain == vanilla


# --- 3. sampling: token for token ------------------------------------------------------------------------------------

@pytest.mark.spec
@settings(max_examples=examples(150), **SLOW)
@given(**case, temperature=st.sampled_from([0.6, 1.0, 1.6]), top_k=st.sampled_from([0, 3]),
       top_p=st.sampled_from([1.0, 0.8]), coupled=st.booleans())
def test_sampled_auto_trees_equal_vanilla_sampling_token_for_token(V, seed, n, budget, k, prompt, eos, adaptive,
                                                                    temperature, top_k, top_p, coupled):
    """Coupled sampling, and plain sampling (--verify rejection walks auto's trees: the target draws its own token
    at each node it reaches). Coupled chains too (plain sampled chains carry q: equal in distribution, see 4)."""
    target = table_target(V, seed)
    prompt = [t % V for t in prompt]
    params = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, coupled=coupled)
    vanilla = generate_ids(target, prompt, n, params, stop_at_eos=eos)
    verifier = "coupled" if coupled else "rejection"
    for tree in (budget, 0) if coupled else (budget,):
        auto = AutoDrafter(table_drafter("draft-model", V, seed))
        assert speculative_generate_ids(target, auto, prompt, n, params, verifier, k, tree=tree, stop_at_eos=eos,
                                        adaptive=adaptive) == vanilla


@pytest.mark.parametrize("coupled", [True, False])
def test_sampled_auto_with_a_tiny_mtp_drafter_equals_vanilla_on_a_tiny_gemma(coupled):
    target = tiny(1, max_position_embeddings=128)
    prompt = [2, 5, 6, 7, 8, 9, 5, 6, 7, 8, 9, 5, 6]
    for seed in range(3):
        params = SamplingParams(temperature=0.8, top_k=8, seed=seed, coupled=coupled)
        vanilla = generate_ids(target, prompt, 20, params, stop_at_eos=False)
        auto = AutoDrafter(tiny_drafter(target, seed=seed, n=12))
        assert speculative_generate_ids(target, auto, prompt, 20, params, "coupled" if coupled else "rejection", 3,
                                        tree=6, stop_at_eos=False) == vanilla


# --- 4. rejection: exact by enumeration --------------------------------------------------------------------------

@pytest.mark.spec
@settings(max_examples=examples(30), **SLOW)
@given(V=st.integers(2, 4), seed=st.integers(0, 10_000), n=st.integers(1, 4), budget=st.integers(1, 4),
       width=st.integers(1, 3), temperature=st.sampled_from([0.7, 1.0, 1.6]), top_k=st.sampled_from([0, 3]),
       top_p=st.sampled_from([1.0, 0.8]), eos=st.booleans(), adaptive=st.booleans(),
       prompt=st.sampled_from([[0, 1], [0, 1, 0], [1, 0, 1, 0]]))
def test_rejection_with_auto_is_exact_through_the_real_loop(V, seed, n, budget, width, temperature, top_k, top_p,
                                                            eos, adaptive, prompt):
    """The model drafter draws its tree's children from q (SampledTreeDrafter), a chain drafter samples its drafts;
    auto merges the trie in (min_n = 1, so it drafts on these short prompts). Every draw, the drafters' included,
    is enumerated: the exact output distribution equals the product of the target's conditionals."""
    target = table_target(V, seed)
    draft = TableModel(V, seed, noise=0.8, noise_seed=seed + 1)
    params = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p)
    exact = autoregressive(warped(target, params), prompt, n, 1 if eos else None)
    for tree in (budget, 0):  # a tree of `budget` nodes, 3 deep; a chain of `budget` drafts
        def run(source):
            model = SampledTreeDrafter(draft, width) if tree else table_drafter("draft-model", V, seed)
            auto = AutoDrafter(model, NgramDrafter(max_n=2, min_n=1))
            return tuple(speculative_generate_ids(target, auto, prompt, n, params, "rejection", k=3 if tree else budget,
                                                  tree=tree, stop_at_eos=eos, adaptive=adaptive, random=source))
        assert_same_distribution(exact_distribution(run), exact)


def test_keeping_the_model_drafters_q_beside_the_trie_is_caught():
    """Why auto's tree carries no q: handing multi-draft rejection the model drafter's q rows while the trie's
    children were not drawn from them breaks exactness, and the enumeration sees it."""
    V, seed, n, prompt = 3, 4, 3, [0, 1, 0]
    target, params = table_target(V, seed), SamplingParams(temperature=1.0)
    draft = TableModel(V, seed, noise=0.8, noise_seed=seed + 1)

    class KeepsQ(AutoDrafter):  # BUG: the model's q for its rows, its root's q for the trie's
        def propose_tree(self, context, budget, max_depth):
            grown = self.model.propose_tree(context, budget - 1, max_depth)
            trie = self.ngram.propose_tree(context, 1, max_depth)
            if not len(trie) or trie.tokens[0] in grown.tokens:
                return grown
            tokens, parents = trie.tokens + grown.tokens, [-1] + [p + 1 if p >= 0 else -1 for p in grown.parents]
            q = np.concatenate([grown.q[:1], np.zeros((1, V)), grown.q[1:]])  # [N + 1, V]
            return TokenTree(tokens, parents, q)

    def run(cls):
        return lambda source: tuple(speculative_generate_ids(
            target, cls(SampledTreeDrafter(draft, 1), NgramDrafter(max_n=2, min_n=1)), prompt, n, params,
            "rejection", k=2, tree=2, stop_at_eos=False, random=source))

    exact = autoregressive(warped(target, params), prompt, n)
    wrong = exact_distribution(run(KeepsQ))
    assert max(abs(wrong.get(s, 0.0) - exact[s]) for s in exact) > 1e-3
    assert_same_distribution(exact_distribution(run(AutoDrafter)), exact)


# --- 5. the MTP drafter's state follows the loop --------------------------------------------------------------------

class FreshCheck(Spy):
    """At every call, a fresh MTP drafter begun on the loop's target view (its cache and hidden state as they are
    now, after the loop's rollbacks) must draft the very tree the MTP drafter inside auto drafts."""

    def begin(self, target, prompt, params):
        self.view, self.params = target, params
        super().begin(target, prompt, params)

    def propose_tree(self, context, budget, max_depth):
        from tinyspec.drafters.mtp import MTPDrafter

        tree = super().propose_tree(context, budget, max_depth)
        fresh = MTPDrafter(self.inner.cfg, self.inner.params, self.inner.vocab)
        fresh.begin(self.view, context[:-1], self.params)
        want = fresh.propose_tree(context, budget, max_depth)
        assert (tree.tokens, tree.parents) == (want.tokens, want.parents), len(context)
        return tree


@pytest.mark.parametrize("seed", range(3))
def test_the_mtp_drafter_inside_auto_drafts_what_a_fresh_one_would(seed):
    target = tiny(seed, max_position_embeddings=128)
    prompt = [2, 5, 6, 7, 8, 5, 6, 7, 8, 9, 10, 5, 6]
    vanilla = generate_ids(target, prompt, 30, stop_at_eos=False)
    check = FreshCheck(tiny_drafter(target, seed=seed, n=16))
    stats = SpecStats()
    out = speculative_generate_ids(target, AutoDrafter(check), prompt, 30, k=3, tree=5, stop_at_eos=False,
                                   stats=stats, adaptive=seed == 2)
    assert out == vanilla and len(check.calls) > 2
    assert stats.accepted < stats.drafted  # some nodes were rejected: the loop rolled back


# --- 6. by name ------------------------------------------------------------------------------------------------------

def test_make_drafter_builds_auto_from_an_mtp_file(tmp_path):
    from tinyspec.drafters.mtp import MTPDrafter
    from tinyspec.mtp import net

    target = tiny(0)
    c = net.MTPConfig.for_target(target.cfg, num_draft_tokens=8)
    path = net.save(tmp_path / "d.npz", c, net.random_params(c, seed=0), vocab=np.arange(8))
    auto = make_drafter(f"auto:{path}")
    assert isinstance(auto, AutoDrafter) and isinstance(auto.model, MTPDrafter) and auto.name == "auto"
    assert auto.vocab_size == 32 and auto.stream == auto.model.stream
    auto.check(target)
    with pytest.raises(ValueError, match="no MTP drafter at .*nowhere.npz: train one"):
        make_drafter(f"auto:{tmp_path / 'nowhere.npz'}")


@pytest.mark.real
def test_the_command_line_runs_auto(monkeypatch, gemma, gemma_tokenizer, capsys):
    import json

    from tinyspec import cli
    from tinyspec.drafters.mtp import DEFAULT_WEIGHTS

    if not DEFAULT_WEIGHTS.exists():
        pytest.skip(f"no shipped MTP drafter at {DEFAULT_WEIGHTS}: run `tinyspec train-mtp`")
    monkeypatch.setattr(cli, "load", lambda args: (gemma, gemma_tokenizer))
    prompt = "a b c d e f g a b c d e f g a b c"
    assert cli.main(["generate", prompt, "--drafter", "auto", "--tree", "16", "--max-new-tokens", "8", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["drafter"] == "auto" and out["tree"] == 16 and len(out["ids"]) == 8
    assert cli.main(["compare", prompt, "--drafter", "auto", "--tree", "16", "--max-new-tokens", "8",
                     "--repeats", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["identical"] is True
