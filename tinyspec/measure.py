"""The stopwatch behind the cost model: bytes a forward reads, time per forward, this machine's roofline.

Decoding one token runs every weight matrix once: for Gemma 3 270M that is about 1.07 GB of float32 read
from memory to do about 0.54 GFLOP of arithmetic, 0.5 FLOP per byte. A CPU does far more arithmetic per
byte it can read than that, so a one-token forward waits on memory, and M tokens in one forward cost little
more than one until M reaches the machine's "ridge point" (peak FLOP/s over bandwidth): the roofline model
(Williams, Waterman & Patterson, 2009),

    time(M) >= max(bytes / bandwidth, flops(M) / peak_flops)

Every number here is measured live (the best of a few repeats) on whatever machine runs it.
"""

from __future__ import annotations

import time

import numpy as np
from numba import njit, prange

from .drafters.base import Drafter
from .weights import weight_bytes  # noqa: F401  (the one byte counter; lessons call it from here)


def best_seconds(fn, repeats: int = 3, warmup: int = 1) -> float:
    """The shortest wall time of fn() over `repeats` calls, after `warmup` untimed calls.

    The minimum, not the mean: other programs on the machine only ever add time, so the fastest repeat is
    the best estimate of what the work itself costs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


# --- what one forward reads and computes -------------------------------------------------------------------------


def forward_flops(cfg, M: int, context: int = 0) -> float:
    """Multiply-adds x 2 of one forward over M new tokens after `context` cached ones: the matrices
    (2 per weight per token) plus attention scores and values (2 x 2 x hd per head per attended position)."""
    d, hd, f = cfg.hidden_size, cfg.head_dim, cfg.intermediate_size
    per_block = d * (cfg.num_heads + 2 * cfg.num_kv_heads) * hd + cfg.num_heads * hd * d + 3 * d * f
    matrices = 2.0 * M * (cfg.num_layers * per_block + cfg.vocab_size * d)
    attended = sum(context + i + 1 for i in range(M))  # causal: token i sees context + i + 1 positions
    attention = 2.0 * 2.0 * cfg.num_layers * cfg.num_heads * hd * attended
    return matrices + attention


def forward_seconds(model, M: int, context: int = 32, repeats: int = 3, seed: int = 0) -> float:
    """Best time of one forward over M new tokens (logits for all M) after `context` cached tokens.

    The cache is rolled back after each call, so every repeat does exactly the same work."""
    return forward_times(model, [M], context, repeats, seed)[M]


def forward_times(model, Ms, context: int = 32, repeats: int = 3, seed: int = 0) -> dict:
    """{M: best time of one forward over M new tokens after `context` cached ones}, for every M in Ms.

    One prefill of the context serves every M (the cache is rolled back after each call). The sizes are timed
    in turns, round after round, so that a burst of load from other programs hits them all alike."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(4, model.cfg.vocab_size, size=context + max(Ms))  # [context + max M]
    cache = model.new_cache(capacity=context + max(Ms))
    if context:
        model.forward(tokens[:context], cache)

    def one(m):
        model.forward(tokens[context: context + m], cache)
        cache.truncate(context)

    for m in Ms:  # warm-up: compile and touch every size once, untimed
        one(m)
    best = {m: float("inf") for m in Ms}
    for _ in range(repeats):
        for m in Ms:
            best[m] = min(best[m], best_seconds(lambda: one(m), repeats=1, warmup=0))
    return best


# --- this machine ----------------------------------------------------------------------------------------------


@njit(parallel=True, fastmath=True, cache=True)
def _stream_sum(a):  # [n] -> sum, every core reading its share of a once
    total = 0.0
    for i in prange(a.shape[0]):
        total += a[i]
    return total


def memory_bandwidth(nbytes: int = 512 << 20, repeats: int = 3) -> float:
    """Bytes per second this machine streams from memory, all cores reading one large float32 array once
    (a sum, so that nothing is written): the bandwidth term of the roofline."""
    a = np.ones(nbytes // 4, dtype=np.float32)  # [n]
    return nbytes / best_seconds(lambda: _stream_sum(a), repeats=repeats)


def peak_flops(n: int = 1024, repeats: int = 3) -> float:
    """FLOP per second of a large float32 matrix product (the BLAS behind NumPy, all its threads)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(np.float32)  # [n, n]
    b = rng.standard_normal((n, n)).astype(np.float32)  # [n, n]
    return 2.0 * n ** 3 / best_seconds(lambda: a @ b, repeats=repeats)


def roofline_seconds(nbytes: float, flops: float, bandwidth: float, flops_per_second: float) -> float:
    """The roofline's lower bound on a run's time: it must read nbytes and compute flops."""
    return max(nbytes / bandwidth, flops / flops_per_second)


# --- how much a drafter costs ------------------------------------------------------------------------------------


class TimedDrafter(Drafter):
    """Wraps a drafter and adds up the time it spends in begin/propose/propose_tree/rollback and the tokens it drafts
    (a tree's nodes).

    `seconds_per_draft` over the target's one-token forward time is the cost model's c; `propose_seconds` is
    the drafting time D of a run (what the bench and tinyspec.mtp.report charge to the drafter). `clock`
    should be the clock the run's loop uses (time.process_time for CPU seconds)."""

    def __init__(self, inner: Drafter, clock=time.perf_counter):
        self.inner, self.clock = inner, clock
        self.name = inner.name
        self.seconds = 0.0  # begin + propose + rollback
        self.propose_seconds = 0.0  # propose alone
        self.drafted = 0  # tokens proposed
        self.k_requested = 0  # sum over steps of the k the loop asked for (adaptive k varies it)
        self.calls = 0  # propose calls

    @property
    def vocab_size(self):
        return self.inner.vocab_size

    @property
    def cost(self):  # c, read by the break-even rule (after begin(): some drafters set it there)
        return getattr(self.inner, "cost", 0.0)

    @property
    def stream(self):  # which stream of the run's seed the inner drafter draws from
        return getattr(self.inner, "stream", 1)

    def _timed(self, fn, *args):  # -> (fn's result, the seconds it took, also added to self.seconds)
        t0 = self.clock()
        result = fn(*args)
        took = self.clock() - t0
        self.seconds += took
        return result, took

    def begin(self, target, prompt, params):
        self._timed(self.inner.begin, target, prompt, params)

    def propose(self, context, k):
        proposal, took = self._timed(self.inner.propose, context, k)
        self.propose_seconds += took
        self.drafted += len(proposal.tokens)
        self.k_requested += k
        self.calls += 1
        return proposal

    def propose_tree(self, context, budget, max_depth):  # the inner drafter's own tree (nodes count as drafts)
        tree, took = self._timed(self.inner.propose_tree, context, budget, max_depth)
        self.propose_seconds += took
        self.drafted += len(tree)
        self.k_requested += budget
        self.calls += 1
        return tree

    def rollback(self, n):
        self._timed(self.inner.rollback, n)

    @property
    def seconds_per_draft(self) -> float:
        return self.seconds / self.drafted if self.drafted else 0.0
