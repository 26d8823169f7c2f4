"""What the spec's tests share: tiny models, adversarial drafters, and the Hypothesis example counts.

Example counts scale with the Hypothesis profile (tests/conftest.py): `examples(n)` is n in the default and CI
profiles and 10 n in the `thorough` one (HYPOTHESIS_PROFILE=thorough pytest).
"""

from __future__ import annotations

import math
import os

import numpy as np

from tinyspec.config import tiny_config
from tinyspec.drafters import DraftModelDrafter, Drafter, EarlyExitDrafter, NgramDrafter, Proposal
from tinyspec.model import Model
from tinyspec.toy import TableModel
from tinyspec.weights import random_weights

SCALE = 10 if os.environ.get("HYPOTHESIS_PROFILE") == "thorough" else 1


def examples(n: int) -> int:
    return n * SCALE


def tiny(seed, backend="numba", **kw):
    """A tiny random Gemma (tinyspec.config.tiny_config)."""
    cfg = tiny_config(**kw)
    return Model(cfg, random_weights(cfg, seed=seed, scale=1.0), backend)


# --- adversarial drafters ---------------------------------------------------------------------------------------

class RandomDrafter(Drafter):
    """Random tokens from the run's source. Under sampling its q is uniform over `support` (zero elsewhere)."""
    name = "random"

    def __init__(self, vocab, support=None):
        self.vocab_size = vocab
        self.support = np.arange(vocab) if support is None else np.asarray(support)

    def begin(self, target, prompt, params):
        self.sampling, self.random = not params.greedy, target.random
        self.q = np.zeros(self.vocab_size)
        self.q[self.support] = 1.0 / len(self.support)

    def propose(self, context, k):
        tokens = [self.random.choice(self.q) for _ in range(k)]
        return Proposal(tokens, np.tile(self.q, (k, 1)) if self.sampling else None)


class OracleDrafter(Drafter):
    """Knows the answer: proposes the vanilla output's next tokens (deterministic, so q is one-hot)."""
    name = "oracle"

    def __init__(self, prompt_len, answer):
        self.prompt_len, self.answer = prompt_len, list(answer)

    def propose(self, context, k):
        done = len(context) - self.prompt_len
        return Proposal(list(self.answer[done: done + k]))


class WrongDrafter(OracleDrafter):
    """Knows the answer and proposes a wrong token at every position (the answer's token + 1 mod V)."""
    name = "wrong"

    def __init__(self, prompt_len, answer, vocab):
        super().__init__(prompt_len, [(t + 1) % vocab for t in answer])


class ShortDrafter(Drafter):
    """Proposes fewer than k tokens: alternately none and one, wrapping an inner drafter."""
    name = "short"

    def __init__(self, inner):
        self.inner, self.calls = inner, 0
        self.vocab_size = inner.vocab_size

    def begin(self, target, prompt, params):
        self.inner.begin(target, prompt, params)

    def propose(self, context, k):
        self.calls += 1
        p = self.inner.propose(context, k)
        n = self.calls % 2
        return Proposal(p.tokens[:n], None if p.q is None else p.q[:n])

    def rollback(self, n):
        self.inner.rollback(n)


# --- the table models' drafters ------------------------------------------------------------------------------------
# The target is TableModel(V, seed, num_layers=8, head_bytes=0): early exit through 1 of its 8 blocks costs
# c = 1/8, a one-block draft table c = 2 / 80, so the break-even rule drafts with both.

TABLE_DRAFTERS = ["draft-model", "early-exit", "random", "sparse", "short", "ngram"]


def table_target(V, seed, eos_token_id=1):
    return TableModel(V, seed, eos_token_id=eos_token_id, num_layers=8, block_bytes=1000, head_bytes=0)


_draft_tables: dict = {}


def table_drafter(kind, V, seed):
    """A fresh drafter of `kind` for a table target of vocabulary V made with `seed`."""
    if kind == "draft-model":  # the target's logits plus noise: right often, not always
        if (V, seed) not in _draft_tables:  # one table per target, kept: it remembers the rows it computed
            _draft_tables[V, seed] = TableModel(V, seed, noise=0.8, noise_seed=seed + 1, num_layers=1,
                                                block_bytes=100, head_bytes=100)
        return DraftModelDrafter(_draft_tables[V, seed])
    if kind == "early-exit":
        return EarlyExitDrafter(1)
    if kind == "random":
        return RandomDrafter(V)
    if kind == "sparse":  # q puts zero mass on every token but the first two
        return RandomDrafter(V, support=[0, 1])
    if kind == "short":
        return ShortDrafter(table_drafter("draft-model", V, seed))
    if kind == "ngram":
        return NgramDrafter(max_n=2)
    raise ValueError(kind)


# --- the exact distribution, from the math -----------------------------------------------------------------------

def autoregressive(p_of, prompt, length, eos=None):
    """{sequence: probability} of `length` new tokens (fewer when one is `eos`) drawn one at a time from
    p_of(context): the product of the conditionals, over every sequence. p_of maps a context to p."""
    out = {}

    def extend(context, prob):
        new = context[len(prompt):]
        if len(new) == length or (new and eos is not None and new[-1] == eos):
            out[tuple(new)] = out.get(tuple(new), 0.0) + prob
            return
        p = p_of(context)
        for x in np.flatnonzero(p > 0):
            extend(context + [int(x)], prob * float(p[x]))

    extend(list(prompt), 1.0)
    return out


def reference_warp(logits, temperature, top_k=0, top_p=1.0):  # [V] -> [V] float64
    """The warped distribution from its definitions, one token at a time, written independently of
    tinyspec.sampling.warp: divide the logits by the temperature; order the tokens by decreasing logit (ties:
    lower id first); keep the first top_k (0: all); softmax over the kept ones; then keep a token only while
    the kept tokens before it hold less than top_p of the mass; renormalise. Greedy: all mass on the first."""
    V = len(logits)
    z = [float(x) for x in logits]
    order = sorted(range(V), key=lambda i: (-z[i], i))
    if temperature == 0.0:
        p = np.zeros(V)
        p[order[0]] = 1.0
        return p
    kept = order[:top_k] if 0 < top_k < V else order
    top = z[kept[0]] / temperature
    weight = {i: math.exp(z[i] / temperature - top) for i in kept}
    total = sum(weight.values())
    nucleus, before = [], 0.0
    for i in kept:
        if top_p < 1.0 and before >= top_p:
            break
        nucleus.append(i)
        before += weight[i] / total
    p = np.zeros(V)
    mass = sum(weight[i] for i in nucleus)
    for i in nucleus:
        p[i] = weight[i] / mass
    return p


def warped(model, params):
    """p_of for a TableModel: its logits after the context, warped by the definitions (no loop, no cache, and
    not tinyspec's own warp)."""
    return lambda context: reference_warp(model.logits(context), params.temperature, params.top_k, params.top_p)


def assert_same_distribution(got: dict, exact: dict, tol=1e-12):
    for seq in set(got) | set(exact):
        assert abs(got.get(seq, 0.0) - exact.get(seq, 0.0)) <= tol, (seq, got.get(seq, 0.0), exact.get(seq, 0.0))
    assert abs(sum(got.values()) - 1.0) <= tol
