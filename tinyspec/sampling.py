"""From logits to a token: temperature, top-k and top-p warping, seeded draws, Gumbel keys.

The warped distribution p is what every speculative verifier must reproduce exactly, so it is computed in
float64, once, in one place: `warp`. Its order follows Hugging Face's: temperature, then top-k, then top-p.

    >>> p = warp(np.array([2.0, 1.0, 0.0, -1.0], np.float32), temperature=1.0, top_k=2)
    >>> np.round(p, 4).tolist()
    [0.7311, 0.2689, 0.0, 0.0]
    >>> warp(np.array([2.0, 1.0, 0.0], np.float32), temperature=0.0).tolist()   # greedy: all mass on the argmax
    [1.0, 0.0, 0.0]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0  # 0 means greedy (argmax); > 0 divides the logits before the softmax
    top_k: int = 0  # keep only the k most likely tokens; 0 keeps all
    top_p: float = 1.0  # keep the smallest most-likely set whose probability reaches top_p (nucleus); 1 keeps all
    seed: int = 0  # seeds numpy.random.default_rng; printed wherever a run is reported
    coupled: bool = False  # sample by Gumbel-max with noise keyed by (seed, position) instead of sequential draws

    def __post_init__(self):
        check_sampling_args(self.temperature, self.top_k, self.top_p)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def check_sampling_args(temperature: float, top_k: int, top_p: float) -> None:
    """Raise ValueError with a one-line explanation for out-of-range settings."""
    if not np.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if int(top_k) != top_k or top_k < 0:
        raise ValueError(f"top-k must be a whole number >= 0 (0 = off), got {top_k}")
    if not (0.0 < top_p <= 1.0):
        raise ValueError(f"top-p must lie in (0, 1] (1 = off), got {top_p}")


def greedy_token(logits) -> int:  # [V] -> id
    """The argmax; ties go to the lowest id (np.argmax's rule)."""
    return int(np.argmax(logits))


def warp(logits, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0):  # [V] -> [V] float64
    """The distribution p that a sampled token follows. Sums to 1; zero outside the kept set."""
    logits = np.asarray(logits)
    V = logits.shape[-1]
    if temperature == 0.0:
        p = np.zeros(V)
        p[greedy_token(logits)] = 1.0
        return p
    # The steps below work in place: a new 2 MB array per step costs more than its arithmetic (bench/sampling.py)
    z = logits.astype(np.float64)  # [V] a copy
    z /= temperature
    if not 0 < top_k < V and top_p >= 1.0:
        return softmax(z)  # nothing to cut, so no sort (sorting 262144 logits costs far more than the softmax)
    return truncated_softmax(z, top_k, top_p)


def softmax(z):  # [V] float64 -> [V] float64, in z's own memory (z is overwritten)
    z -= z.max()
    np.exp(z, out=z)  # [V] softmax(z) up to its sum
    z /= z.sum()
    return z


def truncated_softmax(z, top_k: int, top_p: float):  # [V] float64 -> [V] float64
    """softmax(z) restricted to the top-k tokens, then to the top-p nucleus (0 / 1 turn either off).

    Tokens are taken in order of decreasing logit, ties by lower id. Only the tokens that can be kept are put
    in that order, never the whole vocabulary (sorting 262144 logits takes longer than a forward pass): the
    top_k best, or for a nucleus alone the best 64, then 8 times as many until they hold top_p of the mass
    (and all of them once that would be more than a sixteenth)."""
    V = z.shape[-1]
    weight = z - z.max()  # [V]
    np.exp(weight, out=weight)  # softmax(z) up to its sum
    cut = 0 < top_k < V
    n = top_k if cut else min(V, 64)
    while True:
        order = best_columns(z, n)  # [n] the n best tokens, best first
        kept = weight[order]  # [n]
        p_sorted = kept / (kept.sum() if cut else weight.sum())  # [n] after top-k
        mass = np.cumsum(p_sorted)  # [n] mass of the first j + 1 tokens
        if cut or top_p >= 1.0 or n == V or mass[-1] >= top_p:
            break  # every token past these has at least top_p before it (or the top-k cut drops it)
        n = 8 * n if 128 * n <= V else V  # of 262144 tokens: the best 64, 512, 4096, then all
    if top_p < 1.0:
        before = np.concatenate([[0.0], mass[:-1]])  # [n] mass of the tokens before token j
        p_sorted = np.where(before < top_p, p_sorted, 0.0)  # the first token is always kept
        p_sorted /= p_sorted.sum()
    p = np.zeros(V)
    p[order] = p_sorted
    return p


def best_columns(row, n: int):  # [V] -> the n largest columns, largest first, the lower column first on a tie
    """np.argsort(-row, kind="stable")[:n] in O(V): a row of the full vocabulary is 262144 scores, and top-k,
    top-p and a tree's widest level need only its best few."""
    if n >= len(row):
        return np.argsort(-row, kind="stable")
    kth = np.partition(row, len(row) - n)[len(row) - n]  # the n-th largest score
    above = np.flatnonzero(row > kth)
    pick = np.concatenate([above, np.flatnonzero(row == kth)[: n - len(above)]])  # each part in column order
    return pick[np.argsort(-row[pick], kind="stable")]


def sample(p, rng: np.random.Generator) -> int:  # [V] -> id
    """One draw from p by inverting its CDF with one uniform u ~ U[0, 1) from rng."""
    u = rng.random()
    cdf = np.cumsum(p)
    idx = int(np.searchsorted(cdf, u * cdf[-1], side="right"))
    idx = min(idx, len(p) - 1)
    while p[idx] == 0.0:  # u * total landed exactly on a boundary below a zero-mass token: step back
        idx -= 1
    return idx


def choose_token(logits, params: SamplingParams, random, position: int):  # [V] -> (id, p [V] or None)
    """The one token-choice rule of vanilla decoding, the bonus token and every drafter: the argmax when greedy;
    otherwise p = warp(logits) and `draw(p, ...)`. Returns p too (None when greedy): a drafter's q."""
    if params.greedy:
        return greedy_token(logits), None
    p = warp(logits, params.temperature, params.top_k, params.top_p)  # [V] float64
    return draw(p, params, random, position), p


def draw(p, params: SamplingParams, random, position: int) -> int:  # [V] -> id
    """A token from the warped distribution p at absolute `position`: the coupled Gumbel-max token under the noise
    of (seed, position), or one draw from `random` (a randomness.RandomSource)."""
    return gumbel_token(p, params.seed, position) if params.coupled else random.choice(p)


def gumbel_noise(seed: int, position: int, vocab_size: int):  # -> [V] float64
    """Gumbel(0, 1) noise keyed by (seed, absolute position): the same position always gets the same noise."""
    return gumbel(uniforms(seed, position, vocab_size))


def uniforms(seed: int, position: int, vocab_size: int):  # -> [V] float64
    """The uniforms under the noise of (seed, position), one per token."""
    return np.random.default_rng([seed, position]).random(vocab_size)


def gumbel(u):  # [n] uniforms -> [n] Gumbel(0, 1) noise, in u's own memory (u is overwritten)
    np.maximum(u, np.finfo(np.float64).tiny, out=u)
    np.log(u, out=u)
    np.negative(u, out=u)
    np.log(u, out=u)
    return np.negative(u, out=u)  # -log(-log(u))


def gumbel_token(p, seed: int, position: int) -> int:  # [V] -> id
    """Gumbel-max: argmax(log p + g) is an exact draw from p. Tokens with p = 0 can never win, so after top-k
    or top-p (a few dozen tokens of 262144 left) only the others' keys are computed: the same token."""
    u = uniforms(seed, position, len(p))  # [V]
    if np.count_nonzero(p) > len(p) // 2:
        with np.errstate(divide="ignore"):
            return int(np.argmax(gumbel(u) + np.log(p)))
    support = np.flatnonzero(p)  # [n]
    keys = gumbel(u[support]) + np.log(p[support])  # [n]
    return int(support[np.argmax(keys)])
