"""Speculative decoding, one step at a time.

Notation of Leviathan, Kalman & Matias, "Fast Inference from Transformers via Speculative Decoding" (2023):
the target model's (warped) distribution is p, the drafter's is q, the number of drafts is gamma (here k).
Chen et al., "Accelerating Large Language Model Decoding with Speculative Sampling" (2023), give the same
rule. One step:

# Step 1  the drafter proposes up to k tokens d1..dk (with q when it samples)
# Step 2  the target runs ONE forward over [last, d1..dk]: p_1..p_{k+1}, where p_i is the distribution of the
#         token after d_{i-1} (p_1 follows `last`, the newest token, which no cache holds yet)
# Step 3  verification accepts d1..dn and emits one more token from p_{n+1}: the target's own choice where d_{n+1}
#         was rejected, or a bonus token when all k were accepted. Three verifiers:
#           greedy     accept d_i while d_i == argmax p_i
#           rejection  accept d_i with probability min(1, p_i(d_i) / q_i(d_i)); on rejection draw from
#                      norm(max(0, p_i - q_i)); the output then follows p exactly (Leviathan et al., Thm 1)
#           coupled    accept d_i while d_i == argmax(log p_i + g), g Gumbel noise keyed by (seed, position):
#                      the very token vanilla coupled sampling picks there, so the text is identical
# Step 4  roll the target's cache (and the drafter) back to the accepted length
# Step 5  emit the tokens, stopping exactly where vanilla decoding would: at EOS or max_new_tokens

The prefill and the first token are exactly vanilla decoding's (`decoding.prefill`, `decoding.choose`). With
`tree=N` the drafter offers a tree of up to N guesses instead of a chain (tinyspec/tree.py): Step 2 lets each
node attend to its own ancestors, Step 3 walks down the tree, Step 4 moves the accepted path's rows into place.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from .adaptive import BreakEven, FixedK, TreeBreakEven, VerifyCost
from .decoding import check_prompt, choose, prefill
from .drafters.base import Drafter, Proposal, TargetView
from .fast.kernels import MAX_INVARIANT_ROWS
from .randomness import RandomSource, SeededSource
from .record import Recorder, SpecStats, StepTrace  # noqa: F401  (StepTrace: the trace's type)
from .sampling import SamplingParams, choose_token, warp
from .tree import TokenTree, verify_tree

VERIFIERS = ("greedy", "rejection", "coupled")
MAX_K = MAX_INVARIANT_ROWS - 1  # a verification forward over [last, d1..dk] must stay on the batch-invariant kernels


# --- the rejection rule, as two small functions (the tests prove they reproduce p) ---------------------------

def acceptance_probability(p, q, token: int) -> float:
    """min(1, p(d) / q(d)): the chance of keeping a draft d that was drawn from q."""
    if q[token] <= 0.0:
        raise ValueError(f"the drafter proposed token {token} but its q gives it probability 0")
    return 1.0 if p[token] >= q[token] else float(p[token] / q[token])


def residual_distribution(p, q):  # [V], [V] -> [V]
    """norm(max(0, p - q)): where to draw from after a rejection. (If p == q nothing is ever rejected.)"""
    r = np.maximum(p - q, 0.0)
    total = r.sum()
    if total <= 0.0:  # p == q up to rounding: a rejection has probability 0; fall back to p itself
        return np.asarray(p, dtype=np.float64)
    return r / total


def one_hot(token: int, size: int):  # -> [V]
    q = np.zeros(size)
    q[token] = 1.0
    return q


# --- Step 3: the verifiers ----------------------------------------------------------------------------------

@dataclass
class Verdict:
    """What a verifier decides about drafts d_1..d_n, given the target's rows p_1..p_{n+1}."""
    accepted: int  # drafts kept: d_1..d_accepted
    token: int  # the target's own token after them: a correction (d_{accepted+1} rejected) or the bonus
    kind: str  # "correction" or "bonus" (every draft accepted)
    p_draft: list = field(default_factory=list)  # p_i(d_i) of each draft checked (under warping)
    q_draft: list = field(default_factory=list)  # q_i(d_i) of each draft checked (1.0 for deterministic drafters)
    uniforms: list = field(default_factory=list)  # rejection only: the u compared against min(1, p/q)


def verify_greedy(logits, drafted) -> Verdict:  # [n+1, V], [n]
    """Accept d_i while d_i == argmax p_i; then the target's argmax (verify_coupled at temperature 0)."""
    return verify_coupled(logits, drafted, SamplingParams(), 0)


def verify_rejection(logits, drafted, q_rows, params: SamplingParams, random: RandomSource) -> Verdict:
    """Leviathan et al.'s rule: accept d_i if u < min(1, p_i(d_i) / q_i(d_i)), one fresh u per draft; at the first
    rejection draw the correction from norm(max(0, p_i - q_i)); if all are accepted, draw the bonus from p_{n+1}.
    q_rows [n, V] (None: a deterministic drafter, whose q_i is all mass on d_i)."""
    V = logits.shape[-1]
    verdict = Verdict(0, -1, "bonus")
    for i, d in enumerate(drafted):
        p = warp(logits[i], params.temperature, params.top_k, params.top_p)  # [V] p_i
        q = q_rows[i] if q_rows is not None else one_hot(d, V)  # [V] q_i
        verdict.p_draft.append(float(p[d]))
        verdict.q_draft.append(float(q[d]))
        keep = random.accept(acceptance_probability(p, q, d))
        verdict.uniforms.append(random.last_uniform)
        if not keep:
            verdict.accepted, verdict.kind = i, "correction"
            verdict.token = random.choice(residual_distribution(p, q))
            return verdict
    verdict.accepted = len(drafted)
    verdict.token = choose_token(logits[len(drafted)], params, random, -1)[0]  # the bonus: a draw from p_{n+1}
    return verdict


def verify_coupled(logits, drafted, params: SamplingParams, position: int) -> Verdict:
    """Accept d_i while d_i is the token the target itself chooses at its position (sampling.choose_token: the
    Gumbel-max of log p_i under the noise of (seed, position of d_i); the argmax when greedy); then that choice at
    the next position: exactly the tokens vanilla decoding picks, so the text is identical."""
    verdict = Verdict(0, -1, "bonus")
    for i, d in enumerate(drafted):
        target, p = choose_token(logits[i], params, None, position + i)  # p: [V] p_i (None when greedy)
        verdict.p_draft.append(float(p[d]) if p is not None else float(d == target))
        verdict.q_draft.append(1.0)
        if d != target:
            verdict.accepted, verdict.token, verdict.kind = i, target, "correction"
            return verdict
    verdict.accepted = len(drafted)
    verdict.token = choose_token(logits[len(drafted)], params, None, position + len(drafted))[0]
    return verdict


def verify(logits, drafted, q_rows, params: SamplingParams, verifier: str, random: RandomSource,
           position: int) -> Verdict:
    """Step 3 by name. logits [n+1, V]: the target's rows for the n drafts and the token after them; position:
    the absolute position of d_1."""
    if verifier == "greedy":
        return verify_greedy(logits, drafted)
    if verifier == "coupled":
        return verify_coupled(logits, drafted, params, position)
    return verify_rejection(logits, drafted, q_rows, params, random)


# --- the loop -----------------------------------------------------------------------------------------------

def check_settings(verifier: str, params: SamplingParams, k: int, tree: int = 0) -> None:
    if verifier not in VERIFIERS:
        raise ValueError(f"unknown verifier {verifier!r}: choose one of {', '.join(VERIFIERS)}")
    if k < 1:
        raise ValueError(f"k (drafts per step) must be >= 1, got {k}")
    if k > MAX_K:
        raise ValueError(f"k (drafts per step) must be <= {MAX_K}, got {k}: a verification forward over more than "
                         f"{MAX_K + 1} tokens leaves the batch-invariant kernels, and the output could change")
    if not 0 <= tree <= MAX_K:
        raise ValueError(f"a tree's node budget must lie in 0 .. {MAX_K} (0: a chain), got {tree}: a verification "
                         f"forward over more than {MAX_K + 1} tokens leaves the batch-invariant kernels")
    if verifier == "greedy" and not params.greedy:
        raise ValueError("the greedy verifier needs temperature 0: use --verify rejection or coupled to sample")
    if verifier == "coupled" and not params.greedy and not params.coupled:
        raise ValueError("the coupled verifier reproduces coupled sampling: set SamplingParams(coupled=True)")
    if verifier == "rejection" and params.coupled:
        raise ValueError("coupled sampling is verified by the coupled verifier: use --verify coupled")


def speculative_generate(model, drafter: Drafter, prompt_ids, max_new_tokens: int = 32,
                         params: SamplingParams = SamplingParams(), verifier: str = "greedy", k: int = 4,
                         adaptive: bool = False, verify_cost: VerifyCost = VerifyCost(), stop_at_eos: bool = True,
                         stats: SpecStats | None = None, trace: list | None = None,
                         random: RandomSource | None = None, clock=time.perf_counter, tree: int = 0) -> Iterator[int]:
    """Yield new tokens as they are accepted. Fills `stats` (SpecStats) and appends StepTraces to `trace`.

    tree > 0 verifies a tree of up to `tree` guesses per step (tinyspec.tree; k then bounds its depth) instead of
    a chain of k drafts; with adaptive, the tree break-even rule (adaptive.TreeBreakEven) sets each step's budget.

    With adaptive, k is the most drafts per step and the break-even rule (adaptive.BreakEven) verifies 0..k of
    them each step, from the acceptance so far, the drafter's cost c (`drafter.cost`) and `verify_cost` v(m).

    `random` is the source of every random choice of the run, the verifier's and the drafter's (the proofs pass
    an EnumeratingSource). By default the verifier draws from SeededSource(seed), as vanilla decoding does,
    and the drafter from its own independent stream SeededSource([seed, drafter.stream]). `clock` times the
    run (time.process_time gives CPU seconds)."""
    check_settings(verifier, params, k, tree)
    prompt = check_prompt(model, prompt_ids, max_new_tokens)
    if drafter.vocab_size is not None and drafter.vocab_size != model.cfg.vocab_size:
        raise ValueError(f"the drafter {drafter.name} has a vocabulary of {drafter.vocab_size} tokens, the target "
                         f"{model.cfg.vocab_size}: a drafter must share the target's tokenizer")
    stats = stats if stats is not None else SpecStats()
    stats.prompt_tokens = len(prompt)
    if max_new_tokens == 0:
        return
    if random is None:
        random, drafter_random = SeededSource(params.seed), SeededSource([params.seed, getattr(drafter, "stream", 1)])
    else:
        drafter_random = random
    record = Recorder(stats, trace, clock)
    cache = model.new_cache(capacity=len(prompt) + max_new_tokens + max(k, tree) + 1)
    logits, hidden = prefill(model, prompt, cache)  # [V], [d]  vanilla's prefill ...
    record.prefilled()
    first = choose(logits, params, random, position=cache.length)  # ... and vanilla's first token
    context = [int(t) for t in prompt] + [first]
    record.first_token()
    yield first
    if (stop_at_eos and first == model.cfg.eos_token_id) or max_new_tokens == 1:
        return
    view = TargetView(model, cache, hidden, drafter_random)
    drafter.begin(view, prompt, params)
    policy = BreakEven(k, float(drafter.cost or 0.0), verify_cost) if adaptive else FixedK(k)
    budget = TreeBreakEven(tree, float(drafter.cost or 0.0), verify_cost) if adaptive and tree else None
    while True:
        position = len(context)  # absolute position of d1; the cache holds len(context) - 1 positions
        # Step 1: draft (never more than could be emitted: a step emits up to k + 1 tokens), and keep the drafts
        #         the policy verifies; or a tree of guesses
        most = max_new_tokens - stats.new_tokens - 1  # the most drafts that could still be emitted
        if adaptive:  # c as the drafter knows it now (a mixed drafter's share of costly drafts changes)
            policy.draft_cost = float(drafter.cost or 0.0)
            if budget:
                budget.draft_cost = policy.draft_cost
        if tree:
            depth, n_nodes = min(k, most), tree
            if budget:  # adaptive: the rule's budget, after learning from the last step's whole tree
                budget.observe(context)
                n_nodes = budget.budget()
            # the adaptive rule asks a free drafter for its whole tree, to learn from, and cuts it to n_nodes: its
            # first n_nodes nodes are its best guesses and a tree themselves (parents come first). A tree drawn
            # from q is never cut (its children's draw order is part of its verification); a costly drafter is
            # asked for n_nodes only.
            ask = tree if budget and not drafter.cost else n_nodes
            full = drafter.propose_tree(context, ask, depth) if depth and ask else TokenTree([], [])
            if budget:
                budget.propose(position, full)
            guesses = full if len(full) <= n_nodes or full.q is not None else full.prefix(n_nodes)
            offered = drafted = guesses.tokens
            layout, parents = guesses.layout(start=position - 1), guesses.parents  # its rows, after the context
        else:
            ask = min(policy.to_ask(context), most)
            proposal = drafter.propose(context, ask) if ask > 0 else Proposal([])
            offered = [int(t) for t in proposal.tokens[:ask]]
            drafted = offered[: policy.cut(position, offered, proposal.q is None)]
            q_rows = proposal.q[: len(drafted)] if proposal.q is not None else None  # [n, V] or None (one-hot)
            layout = parents = None  # a chain: every row under the one before it
        # Step 2: one target forward over [last, d1..dn]: the rows of p_1 .. p_{n+1}
        h = model.hidden([context[-1]] + drafted, cache, tree=layout)  # [n+1, d]
        logits = model.head(h)  # [n+1, V]
        # Step 3: verify: keep d_1..d_n_ok (a tree: the nodes of one path), then the target's own token
        if tree:
            verdict = verify_tree(logits, guesses, params, verifier, random, position)
            kept = [position + i for i in verdict.path]  # the cache rows of the accepted nodes
            last_row = verdict.path[-1] + 1 if verdict.path else 0
        else:
            verdict = verify(logits, drafted, q_rows, params, verifier, random, position)
            kept, last_row = list(range(position, position + verdict.accepted)), verdict.accepted
        # Step 4: roll back everything else (the cache keeps `last` and the accepted drafts, in place)
        cache.keep(position, kept)
        view.hidden = h[last_row]  # [d] the state whose logits chose the token after the accepted drafts
        new = [drafted[r - position] for r in kept] + [verdict.token]
        context += new
        drafter.rollback(len(context) - 1)
        # Step 5: emit, stopping exactly where vanilla decoding would: at EOS or max_new_tokens
        room, emitted, done = max_new_tokens - stats.new_tokens, [], False  # room: tokens still allowed
        for token in new:
            emitted.append(token)
            if (stop_at_eos and token == model.cfg.eos_token_id) or len(emitted) == room:
                done = True
                break
        record.step(position, len(offered), drafted, verdict, emitted, parents)
        yield from emitted
        if done:
            return


def speculative_generate_ids(model, drafter, prompt_ids, max_new_tokens=32, params=SamplingParams(),
                             verifier="greedy", k=4, **kw) -> list[int]:
    return list(speculative_generate(model, drafter, prompt_ids, max_new_tokens, params, verifier, k, **kw))
