# %% [markdown]
# # Lesson 11: Trees: many guesses, one forward
#
# **Goal.** See why, when verification is nearly free, several guesses beat one: a drafter whose second or
# third choice is often the target's earns nothing with a chain of drafts, and something with a *tree* of
# them. Measure what a wider forward costs on this CPU, run one tree forward by hand and check every row
# bitwise against one-token-at-a-time decoding, walk trees greedily and by sampling (both token for token
# vanilla's output), point to the proof for sampled trees, and compare chains with trees in tokens per forward.
#
# **Running time.** About 17 s after the one-time conversion (11 s with `TINYSPEC_QUICK=1`) on the project's
# idle 2-core machine at the default threads; several times that on busy cores. lessons/README.md lists every
# measurement.
#
# The code is `tinyspec/tree.py` (the tree, the best-first rule that builds one, the three walks),
# `tinyspec.model.attend_tree` (the tree's attention) and `speculative_generate(..., tree=N)` (the loop).

# %%
import sys
from pathlib import Path

import numpy as np

import tinyspec
import tinyspec.speculative
from tinyspec import measure
from tinyspec.decoding import generate_ids
from tinyspec.drafters import TargetView, make_drafter
from tinyspec.drafters.mtp import DEFAULT_WEIGHTS as MTP_WEIGHTS
from tinyspec.randomness import exact_distribution
from tinyspec.sampling import SamplingParams
from tinyspec.show import EXAMPLE_PROMPT, print_trace
from tinyspec.speculative import SpecStats, speculative_generate_ids
from tinyspec.toy import TableModel
from tinyspec.tree import TokenTree, verify_tree_greedy
from tinyspec.workshop import load_gemma, quick_mode

QUICK = quick_mode()
N_NEW = 10 if QUICK else 24  # new tokens per run
SEED = 11  # the sampled runs' seed
print(f"quick mode: {QUICK}; {N_NEW} new tokens per run; greedy except section 4's sampled run (seed {SEED})")

model, tok = load_gemma()
code_ids = tok.encode(EXAMPLE_PROMPT)
PROSE = ("Once upon a time, in a small village at the edge of a great forest, there lived an old clockmaker and "
         "his curious granddaughter. Every morning,")
prose_ids = tok.encode(PROSE)
HAVE_MTP = MTP_WEIGHTS.exists()
if not HAVE_MTP:
    print(f"note: no trained MTP drafter at {MTP_WEIGHTS}: the MTP parts are skipped (`tinyspec train-mtp` makes one)")

# %% [markdown]
# ## 1. Why a tree: the drafter is often almost right
#
# A chain of k drafts is ONE guess of the next k tokens: if the drafter's first choice for the next token is
# wrong, the step keeps nothing, even when its second choice was the target's. A tree offers several
# choices per position, and the target's one forward checks them all.
#
# How often is the MTP drafter (lesson 10) almost right? Teacher forcing measures it without speculating: the
# target decodes the prose prompt greedily once; then, at every generated position, the drafter sees exactly
# what the loop would show it there (the cache up to that point and the target's hidden state) and builds
# its first level of guesses (`propose_tree` with depth 1: its 4 best next tokens, best first). We count where
# the target's own next token stands among them.

# %%
prose_vanilla = generate_ids(model, prose_ids, N_NEW, stop_at_eos=False)
print(PROSE + tok.decode(prose_vanilla))
if HAVE_MTP:
    mtp = make_drafter("mtp")
    seq = list(prose_ids) + prose_vanilla
    cache = model.new_cache(len(seq))
    h = model.hidden(seq, cache)  # [T, d]  one pass over prompt + continuation: every position's state
    view = TargetView(model, cache, None, None)
    mtp.begin(view, prose_ids, SamplingParams())
    ranks = []  # where the target's next token stood among the drafter's 4 first-level guesses (4: not there)
    for t in reversed(range(len(prose_ids), len(seq) - 1)):  # context seq[:t + 1], the target's next seq[t + 1]
        cache.truncate(t)  # the loop's cache holds every context token but the last (rows stay: t only falls) ...
        view.hidden = h[t - 1]  # ... and the state whose logits chose the last one
        guesses = mtp.propose_tree(seq[: t + 1], budget=4, max_depth=1).tokens  # [4] best first
        ranks.append(guesses.index(seq[t + 1]) if seq[t + 1] in guesses else 4)
    ranks = np.array(ranks)
    within = [float((ranks < r).mean()) for r in (1, 2, 3, 4)]
    print(f"MTP drafter, teacher-forced over {len(ranks)} positions of prose: the target's next token is")
    for r, share in zip((1, 2, 3, 4), within):
        print(f"  among its top {r}: {share:.0%}")
    assert within == sorted(within)  # more guesses never hold it less often (a count, not a claim about speed)
    print("a chain gets the first line; a tree with 4 first-level guesses gets the last, for the same forward")

# %% [markdown]
# ## 2. What a wider forward costs on this CPU
#
# A tree of N nodes is verified by one forward over N + 1 rows (the root, the context's last token, and the
# N guesses). Lesson 3 showed why that is cheap: a forward reads every weight once whatever its width. On a
# GPU it is nearly flat up to tens of rows, and published trees hold 60 to 80 nodes. On this 2-core CPU the
# arithmetic shows sooner: v(M) = time(forward over M rows) / time(forward over 1 row), measured here (the
# best of a few repeats, sizes timed in turns). A tree of N nodes costs about v(N + 1) one-token forwards.

# %%
Ms = [1, 2, 4, 5, 8, 9, 16]
times = measure.forward_times(model, Ms, context=64, repeats=1 if QUICK else 2, seed=SEED)
v = {m: times[m] / times[1] for m in Ms}
print(f"{'M rows':>7} {'ms':>7} {'v(M)':>6}")
for m in Ms:
    print(f"{m:>7} {times[m] * 1e3:7.0f} {v[m]:6.2f}")
print(f"a tree of 4 nodes costs about v(5) = {v[5]:.2f} forwards, of 8 about v(9) = {v[9]:.2f}: a step pays only "
      "if it emits more tokens than that (plain decoding: 1 token per forward)")

# %% [markdown]
# ## 3. The tree forward, by hand
#
# A `TokenTree` is a list of tokens and the parent of each (-1: the root). Its rows in the verification
# forward: row 0 is the root, row i + 1 is node i. Each row attends to the context and to its own ancestors
# only, at the position of its depth (`tree.layout(start)` says which cache rows each row may see). So every
# row's logits should be exactly those of decoding that row's path one token at a time: we check it bitwise.

# %%
prompt = tok.encode("The capital of France is")
word = lambda w: tok.encode(w)[1]  # one token (encode puts <bos> first)
tree = TokenTree(tokens=[word(" Paris"), word("."), word(","), word(" known"), word(" the"), word(" city"),
                         word(" capital"), word(" a")],
                 parents=[-1, 0, 0, 2, -1, 4, 4, -1])  # is -> {Paris -> {., , -> known}, the -> {city, capital}, a}
cache = model.new_cache(64)
model.forward(prompt[:-1], cache)  # the cache holds the context but its last token (the root), as in the loop
start = cache.length
logits = model.forward([prompt[-1]] + tree.tokens, cache, tree=tree.layout(start))  # [N + 1, V] ONE forward
print(f"one forward over {len(tree) + 1} rows -> logits {logits.shape}")

for node in range(-1, len(tree)):  # the same rows, one token at a time along each path
    path = [] if node < 0 else tree.path(node)
    cache.truncate(start)
    row = model.forward([prompt[-1]], cache)[0]  # [V]
    for i in path:
        row = model.forward([tree.tokens[i]], cache)[0]  # [V]
    assert np.array_equal(logits[node + 1], row), f"row {node + 1} differs from its path's chain"
print("every row is bitwise what decoding its path one token at a time gives")

walk = verify_tree_greedy(logits, tree)  # the greedy walk: descend while the target's argmax is a child
show = lambda t: repr(tok.token_text(t))
print(f"\n{show(prompt[-1])} (root)  target's next: {show(int(np.argmax(logits[0])))}")
depths = tree.depths
for i in range(len(tree)):  # the nodes are listed depth first, so their order draws the tree
    mark = "+" if i in walk.path else "."
    print(f"{'':2}{'  ' * (depths[i] - 1)}{mark} {show(tree.tokens[i]):10} target's next: "
          f"{show(int(np.argmax(logits[i + 1])))}")
print(f"greedy walk: kept {walk.accepted} node(s) ({' '.join(show(tree.tokens[i]) for i in walk.path)}), "
      f"then the target's {walk.kind} {show(walk.token)}")

# %% [markdown]
# ## 4. The walks: greedy, then sampled
#
# `speculative_generate_ids(..., tree=8, k=8)` asks the drafter for a tree of up to 8 nodes, at most 8 deep,
# verifies it in one forward, and walks it. Prompt lookup (`ngram:8`) builds a *trie*: every earlier place
# where the newest tokens occurred offers its continuation, the most specific match first (its first path is
# the chain's), the others merged in as branches. The trace draws each step's tree, the accepted path
# marked `+`. Greedy: descend while the target's argmax is a child, so the output is greedy's.

# %%
code_vanilla = generate_ids(model, code_ids, N_NEW, stop_at_eos=False)
runs = {}  # (drafter, prompt, "chain k" or "tree N") -> (output, SpecStats, trace): reused by section 6


def run(name, prompt_ids, k, tree, params=SamplingParams(), verifier="greedy", **options):
    stats, trace = SpecStats(), []
    out = speculative_generate_ids(model, make_drafter(name), prompt_ids, N_NEW, params, verifier, k, tree=tree,
                                   stats=stats, trace=trace, stop_at_eos=False, **options)
    return out, stats, trace


out, stats, trace = runs["ngram:8", "code", "tree 8"] = run("ngram:8", code_ids, k=8, tree=8)
branched = [s for s in trace if s.path and s.path != list(range(len(s.path)))]  # kept a node off the first path
print_trace(trace[:3], tok)
if branched:
    print("... a step whose accepted path left the first path (a chain would have kept less):")
    print_trace(branched[:1], tok)
print(f"{len(trace)} steps, {stats.tokens_per_forward:.2f} tokens per forward; {len(branched)} step(s) kept a "
      "node a chain would not have offered")
assert out == code_vanilla, "greedy tree speculation must reproduce greedy decoding token for token"
print("identical to vanilla greedy: yes")

# %% [markdown]
# **Sampling.** With a tree whose nodes are chosen deterministically (the trie, or a drafter's top-b tokens),
# the target draws its *own* token at each node it reaches, from its p there, and descends if that token is
# a child (SpecExec's rule); otherwise the drawn token is the step's last. Every emitted token is thus one
# draw of the target, from the same p, in the same order, with one uniform each, exactly as vanilla sampling
# draws them. Same seed, same text, token for token: not only the same distribution. (`verifier="rejection"`
# runs this walk for a tree that carries no q; a tree whose children were drawn from q gets section 5's rule.)

# %%
params = SamplingParams(temperature=0.8, seed=SEED)
sampled_vanilla = generate_ids(model, code_ids, N_NEW, params, stop_at_eos=False)
sampled, sstats, _ = run("ngram:8", code_ids, k=8, tree=8, params=params, verifier="rejection")
print(f"temperature 0.8, seed {SEED}: {sstats.tokens_per_forward:.2f} tokens per forward")
print(EXAMPLE_PROMPT.splitlines()[-1] + "\n" + tok.decode(sampled))
assert sampled == sampled_vanilla, "the sampled walk must reproduce vanilla sampling with the same seed"
print("identical to vanilla sampling with the same seed: yes")

# %% [markdown]
# ## 5. The proof
#
# `tests/test_tree.py` states the promises and lets Hypothesis try to break them: greedy trees of every shape
# (random, deep, wide, one node, the answer among distractors, the trie, the draft model's and the MTP
# drafter's best-first trees) equal greedy; the sampled walk equals vanilla sampling token for token; and
# trees whose children a drafter *drew* from its q (without replacement) are verified by multi-draft
# rejection sampling (SpecInfer; Sequoia): try the children in the order drawn, keep child x with
# probability min(1, p(x) / q(x)), and after a rejection set p <- norm(max(0, p - q)) and remove x from q.
# The output then follows p exactly, which `randomness.exact_distribution` checks by running the real loop
# down every path of its random choices on a tiny table model (lesson 9). One such case, live, then the same
# with the residual left out (p kept after a rejection):

# %%
sys.path.insert(0, str(Path(tinyspec.__file__).resolve().parent.parent / "tests"))  # the spec (see lesson 9)
import helpers  # noqa: E402  table targets, and the exact distribution from the math
import test_tree  # noqa: E402  SampledTreeDrafter: children drawn from q, without replacement, `width` per node

V, N_TINY, BUDGET, WIDTH = 3, 3, 3, 2
target = helpers.table_target(V, 4)  # a lookup-table language model over 3 tokens
draft = TableModel(V, 4, noise=0.8, noise_seed=5)  # the target's table plus noise: a drafter's q
tiny_params = SamplingParams(temperature=1.0)


def tiny_run(source):  # one run of the real loop, every random choice (drafter's and verifier's) from `source`
    return tuple(speculative_generate_ids(target, test_tree.SampledTreeDrafter(draft, WIDTH), [0, 1], N_TINY,
                                          tiny_params, "rejection", k=2, tree=BUDGET, stop_at_eos=False,
                                          random=source))


exact = helpers.autoregressive(helpers.warped(target, tiny_params), [0, 1], N_TINY)  # p, from the definitions
spec = exact_distribution(tiny_run)
gap = max(abs(spec.get(s, 0.0) - exact[s]) for s in exact)
print(f"{V}^{N_TINY} = {len(exact)} sequences; sampled trees of {BUDGET} nodes, {WIDTH} children per node: "
      f"largest difference from the math {gap:.1e}")
helpers.assert_same_distribution(spec, exact)  # to 1e-12
correct = tinyspec.speculative.residual_distribution
tinyspec.speculative.residual_distribution = lambda p, q: p  # BUG: keep p after a rejected child
try:
    wrong = exact_distribution(tiny_run)
finally:
    tinyspec.speculative.residual_distribution = correct
wrong_gap = max(abs(wrong.get(s, 0.0) - exact[s]) for s in exact)
print(f"without the residual: largest difference {wrong_gap:.3f}: caught")
assert wrong_gap > 1e-3

# %% [markdown]
# ## 6. Chains against trees, in tokens per forward
#
# The same drafter, as a chain of k and as a tree of up to N nodes at most k deep, on the same prompt: the
# output is vanilla's either way; what changes is how many tokens each target forward emits. A best-first
# tree of budget N holds the chain of N's first path only when the drafter ranks it first all the way down,
# so a tree need not beat a chain on every prompt: the lesson prints what this run gives and asserts only
# the identical outputs. "first level" is the share of steps whose first guess (chain) or any first-level
# guess (tree) held the target's token. The last column divides tokens per forward by v(N + 1) from section 2:
# the speedup if drafting were free (prompt lookup nearly is; the MTP drafter is not).

# %%
shapes = [("ngram:8", "code", code_ids, code_vanilla, 8, budget) for budget in ([8] if QUICK else [0, 8])]  # quick:
#         section 4's tree only (each run on this prompt pays a 120-token prefill); the chain is lesson 4's
if HAVE_MTP:  # the MTP drafter on prose, where prompt lookup has little to copy
    shapes += [("mtp", "prose", prose_ids, prose_vanilla, 4, budget) for budget in ([0, 4] if QUICK else [0, 4, 8])]
print(f"{'drafter':8} {'prompt':6} {'shape':16} {'tokens/forward':>14} {'first level':>11} {'/ v(rows)':>9}  identical")
for name, where, ids_, vanilla_, k, budget in shapes:
    key = (name, where, f"tree {budget}" if budget else f"chain {k}")
    out, stats, trace = runs[key] if key in runs else run(name, ids_, k=k, tree=budget)
    steps = [s for s in trace if s.drafted]
    first = sum(s.accepted > 0 for s in steps) / len(steps) if steps else 0.0
    rows = (budget if budget else k) + 1
    cost = v.get(rows, float("nan"))
    shape = f"tree {budget}, depth {k}" if budget else f"chain of {k}"
    print(f"{name:8} {where:6} {shape:16} {stats.tokens_per_forward:14.2f} {first:11.2f} "
          f"{stats.tokens_per_forward / cost:9.2f}  {out == vanilla_}")
    assert out == vanilla_, f"{name} {shape} on {where}: output differs from vanilla greedy"

# %% [markdown]
# What to take away: on this CPU a tree of 4 to 8 nodes costs little more than a chain of the same length
# (section 2), so a drafter that is often almost right (section 1) can turn its second and third choices
# into accepted tokens. Whether it does on a given prompt is a count the run prints, not a promise;
# `python -m bench.trees` runs the comparison over every prompt of the benchmark, and `--adaptive` picks each
# step's budget by the break-even rule (`adaptive.TreeBreakEven`, lesson 7's formula for trees).
#
# ## Try this
#
# 1. Widen the MTP drafter's first level: in section 1 set `mtp.width = 8`, ask for `budget=8` and count ranks up
#    to 8. How far does "among its top r" climb from r = 4 to r = 8? What would verifying a first level of 8
#    cost (section 2)?
# 2. Break the tree's attention on purpose: in section 3, take `layout = tree.layout(start)`, set
#    `layout.ancestors[4] = layout.ancestors[4][:1]` (row 4, node 3 `' known'`, now sees only the root, and
#    sits two positions too early), and pass `tree=layout` to the forward. Which rows fail the bitwise check,
#    and why only those?
# 3. Let the break-even rule choose each step's budget, from 0 (a plain decode step) to 8, with this machine's
#    v: after section 6, `run("mtp", prose_ids, k=4, tree=8, adaptive=True, verify_cost=VerifyCost(v[2] - 1,
#    (v[9] - v[2]) / 7))` (`VerifyCost` from `tinyspec.adaptive`). Which budgets does it choose
#    (`len(s.drafted)` for each step s of the trace), and does its tokens per forward / v beat the fixed trees'?
