"""Where a run's randomness comes from: one small interface, and two sources behind it.

Every random choice that decoding makes is one of two kinds:

    accept(a)   a coin that comes up True with probability a: rejection sampling keeps a draft if u < a
    choice(p)   a token drawn from the distribution p: a sampled token, a correction, a bonus, a drafter's guess

(Coupled sampling makes no random choice at all: its Gumbel noise is a fixed function of (seed, position).)

SeededSource is what every run uses: a numpy Generator, one uniform u per call, so `choice` is vanilla
decoding's one-uniform-per-token draw (`sampling.sample`) and `accept(a)` is `u < a`.

EnumeratingSource is what the proofs use. It replays a forced path of outcomes and records, at every choice,
how many outcomes there were and the probability of the one taken. `exact_distribution(run)` calls run(source)
once for every path, in depth-first order, and adds up the probability of each result: the exact distribution
of whatever the run returns, computed by the run's own code. Two runs with the same exact distribution are
equal in distribution, to rounding (~1e-16 per path):

    >>> coin = lambda source: "heads" if source.accept(0.25) else "tails"
    >>> exact_distribution(coin)
    {'heads': 0.25, 'tails': 0.75}
    >>> two_draws = lambda source: source.choice([0.5, 0.5]) + source.choice([0.0, 0.2, 0.8])
    >>> sorted(exact_distribution(two_draws).items())
    [(1, 0.1), (2, 0.5), (3, 0.4)]

Outcomes of probability 0 are never taken: a path through one could not happen.
"""

from __future__ import annotations

import numpy as np

from .sampling import sample


class RandomSource:
    """The interface: the two kinds of random choice. `last_uniform` is the u behind the last `accept`, for
    traces (None when the source draws no uniforms)."""
    last_uniform: float | None = None

    def accept(self, probability: float) -> bool:  # True with the given probability
        raise NotImplementedError

    def choice(self, p) -> int:  # [V] -> a token drawn from p (p need not be normalised: p / p.sum())
        raise NotImplementedError


class SeededSource(RandomSource):
    """numpy.random.default_rng(seed): one uniform per call, never re-seeded. `seed` may be an int or a list
    of ints (numpy's SeedSequence), e.g. [seed, 1] for a stream independent of [seed]."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)

    def accept(self, probability: float) -> bool:
        self.last_uniform = float(self.rng.random())
        return self.last_uniform < probability

    def choice(self, p) -> int:
        return sample(p, self.rng)


class EnumeratingSource(RandomSource):
    """Takes the outcomes `path` prescribes (per choice: the index of the outcome among that choice's outcomes
    of non-zero probability, and how many there were), then the first outcome of every later choice. Records
    `taken`, the same pairs for every choice of the run, and `probability`, the product of the probabilities
    of the outcomes taken."""

    def __init__(self, path=()):
        self.path = list(path)
        self.taken: list[tuple[int, int]] = []
        self.probability = 1.0

    def _take(self, outcomes):  # [(outcome, probability > 0)] -> outcome
        i = len(self.taken)
        j, n = self.path[i] if i < len(self.path) else (0, len(outcomes))
        if n != len(outcomes):
            raise RuntimeError(f"choice {i} had {len(outcomes)} outcomes when replayed, {n} before: the run made a "
                               "random choice that did not come from this source")
        self.taken.append((j, n))
        outcome, probability = outcomes[j]
        self.probability *= probability
        return outcome

    def accept(self, probability: float) -> bool:
        a = min(max(float(probability), 0.0), 1.0)
        return self._take([(o, pr) for o, pr in ((True, a), (False, 1.0 - a)) if pr > 0.0])

    def choice(self, p) -> int:
        p = np.asarray(p, dtype=np.float64)  # [V]
        total = p.sum()
        return self._take([(int(x), float(p[x] / total)) for x in np.flatnonzero(p > 0.0)])

    def next_path(self) -> list | None:
        """The path of the next run in depth-first order: the last choice with an untried outcome takes its next
        one. None when every path has been run."""
        for i in range(len(self.taken) - 1, -1, -1):
            j, n = self.taken[i]
            if j + 1 < n:
                return self.taken[:i] + [(j + 1, n)]
        return None


def exact_distribution(run, max_paths: int = 1_000_000) -> dict:
    """{result: probability} of run(source) over every path of its random choices (results must be hashable)."""
    out: dict = {}
    path: list | None = []
    for _ in range(max_paths):
        source = EnumeratingSource(path)
        result = run(source)
        out[result] = out.get(result, 0.0) + source.probability
        path = source.next_path()
        if path is None:
            return out
    raise RuntimeError(f"more than {max_paths} paths: enumerate a smaller case")
