"""How many drafts to verify each step: a fixed k, or the break-even rule (adaptive k).

The speculative loop asks its policy two questions every step:

    to_ask(context)                       how many drafts to ask the drafter for (before drafting)
    cut(position, drafts, deterministic)  how many of the offered drafts to verify (after drafting)

`FixedK(k)` answers k and all of them. `BreakEven` answers with the cost model of `tinyspec.theory`: verify
the number of drafts n that maximises the expected speed S(n) = E(alpha, n) / (n c + v(n + 1)), 0 being a
plain decode step. Exactness never depends on the policy, with one rule (in `BreakEven.cut`): for a drafter
that samples, whether a draft is verified must not depend on the drafted values.
"""

from __future__ import annotations

from dataclasses import dataclass

from .theory import expected_speedup


@dataclass(frozen=True)
class VerifyCost:
    """v(m): the time of one target forward over m tokens, in single-token forwards (v(1) = 1), as a line:
    v(2) = 1 + first_extra, then + per_token for each further token. Decoding is memory-bound, so v grows
    slowly, but not from the first extra token: the kernels do more arithmetic per weight read for M > 1 rows.

    How the constants are measured: one forward over m new tokens after 300 cached ones is timed for
    m = 1..17 (`measure.forward_times(model, range(1, 18), context=300)`, or `python bench/verify_cost.py`,
    which times the backends side by side and takes the median of its rounds); v(m) = time(m) / time(1), and
    `VerifyCost.fit` draws the line through them. The defaults are the numba backend's, fitted on the
    project's 2-core AMD EPYC at 1 and 2 threads (bench/results.md, "Verification cost"); `for_backend`
    gives each backend its own. Pass a VerifyCost to speculative_generate (the CLI: `--verify-cost`).

        >>> v = VerifyCost(first_extra=0.2, per_token=0.1)
        >>> [round(v(m), 2) for m in (1, 2, 3, 9)]
        [1.0, 1.2, 1.3, 1.9]
        >>> VerifyCost.fit({1: 0.05, 2: 0.06, 3: 0.065, 9: 0.095})      # seconds; v = 1, 1.2, 1.3, 1.9
        VerifyCost(first_extra=0.2, per_token=0.1)
        >>> round(v.break_even_alpha(1), 6)                              # 1 + alpha = v(2)
        0.2
    """
    first_extra: float = 0.10  # v(2) - v(1)
    per_token: float = 0.11  # v(m + 1) - v(m) for m >= 2

    def __call__(self, m: int) -> float:
        return 1.0 if m <= 1 else 1.0 + self.first_extra + self.per_token * (m - 2)

    @classmethod
    def fit(cls, times: dict, digits: int = 3) -> "VerifyCost":
        """The line through measured forward times {m: seconds} (m = 1, 2 and at least one m >= 3): v(m) =
        times[m] / times[1]; first_extra = v(2) - 1, so the line passes through the measured v(2), where the
        rule decides whether to draft at all; per_token = the least-squares slope of v(m) - v(2) against
        m - 2 over the m >= 3. Both rounded to `digits` decimals."""
        if 1 not in times or 2 not in times or not any(m >= 3 for m in times):
            raise ValueError(f"VerifyCost.fit needs the times of m = 1, 2 and some m >= 3, got m = {sorted(times)}")
        v = {m: t / times[1] for m, t in times.items()}
        far = [m for m in times if m >= 3]
        slope = sum((m - 2) * (v[m] - v[2]) for m in far) / sum((m - 2) ** 2 for m in far)
        return cls(round(v[2] - 1.0, digits) + 0.0, round(slope, digits) + 0.0)

    @classmethod
    def for_backend(cls, backend: str) -> "VerifyCost":
        """The v(m) of a backend's kernels: its own fit in VERIFY_COSTS (the constants `python
        bench/verify_cost.py` prints for it), else the numba backend's (the defaults). "numba", "numpy" or
        "quant"; anything else is a ValueError."""
        if backend not in ("numba", "numpy", "quant"):
            raise ValueError(f"unknown backend {backend!r}: choose one of numba, numpy, quant")
        return VERIFY_COSTS.get(backend, VERIFY_COSTS["numba"])

    def break_even_alpha(self, k: int, c: float = 0.0) -> float | None:
        """The acceptance alpha above which verifying k drafts beats a plain decode step: the root of
        E(alpha, k) = k c + v(k + 1) (theory.expected_speedup = 1), found by bisection (E grows with alpha from 1
        to k + 1). None if k drafts never pay (k c + v(k + 1) >= k + 1); 0.0 if they always do."""
        cost = k * c + self(k + 1)
        if cost >= k + 1:
            return None
        lo, hi = 0.0, 1.0
        if expected_speedup(lo, k, c, self(k + 1)) >= 1.0:
            return 0.0
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if expected_speedup(mid, k, c, self(k + 1)) >= 1.0 else (mid, hi)
        return hi


# v(m) per backend, as VerifyCost.fit draws it from `python bench/verify_cost.py` on the project's machine. A
# backend without an entry here gets the numba backend's line.
VERIFY_COSTS = {  # bench/results.md says when and where each line was measured
    "numba": VerifyCost(),
    "quant": VerifyCost(0.259, 0.381),
}


@dataclass
class FixedK:
    """Ask for k drafts every step and verify every one offered."""
    k: int

    def to_ask(self, context) -> int:
        return self.k

    def cut(self, position: int, drafts: list, deterministic: bool) -> int:
        return len(drafts)


@dataclass
class BreakEven:
    """Adaptive k: verify only as many drafts as pay for themselves.

    The rule. Verifying n drafts costs v(n + 1) (the forward over [last, d1..dn]) plus n c (drafting, c the
    drafter's cost per token, 0 for prompt lookup) and emits E(alpha, n) tokens on average, so the step's
    speed relative to vanilla decoding is

        S(n) = E(alpha, n) / (n c + v(n + 1)),        n* = argmax_{0 <= n <= limit} S(n), ties to the smaller n

    (theory.expected_speedup) and n* = 0 is a plain decode step (S(0) = 1: exactly vanilla). Drafting never
    pays while 1 / (1 - alpha) <= v(2) (E < 1 / (1 - alpha) for every n and v(n + 1) >= v(2)): on text the
    drafter cannot predict, alpha falls and the loop decodes like vanilla.

    The estimate. alpha is an exponential moving average of acceptance, alpha <- alpha + rate (x - alpha),
    updated at the start of every step by scoring the previous step's FULL proposal against the tokens that
    were actually emitted: x = 1 for each draft that matches, up to and including the first miss. Drafts that
    were proposed but not verified are scored too, so a free drafter keeps teaching alpha even while the rule
    verifies nothing, and alpha recovers as soon as the text turns predictable again.

    Exactness. n* depends only on alpha (the past) and on the number of drafts on offer. For a deterministic
    drafter (q is None: prompt lookup, argmax) the proposal is a function of the context, so cutting it is
    just another deterministic drafter. For a sampling drafter, the cut must not depend on the drafted values
    (in rejection sampling, whether d_i is verified must not depend on d_i): there the limit is k itself and
    the cut is min(n*(k), proposal length). A costly drafter (c > 0) is asked for only n*(k) drafts, with one
    draft every `probe_every` skipped steps so that alpha can recover."""
    k_max: int = 8
    draft_cost: float = 0.0  # c
    verify_cost: VerifyCost = VerifyCost()  # v
    alpha: float = 0.3  # the prior: prompt lookup's acceptance over the whole benchmark is about this
    rate: float = 0.3  # the EMA's weight of each new observation
    probe_every: int = 8
    skipped: int = 0  # steps a costly drafter was not asked (for the probes)
    previous: tuple | None = None  # (position of d1, [drafts]) of the previous step's full proposal

    def speed(self, n: int) -> float:
        """S(n): expected tokens per unit of time, relative to vanilla decoding."""
        return expected_speedup(self.alpha, n, self.draft_cost, self.verify_cost(n + 1))

    def best(self, limit: int) -> int:
        """n* = argmax_{0 <= n <= limit} S(n), the smallest n on a tie."""
        best_n, best_s = 0, self.speed(0)
        for n in range(1, limit + 1):
            s = self.speed(n)
            if s > best_s:
                best_n, best_s = n, s
        return best_n

    def observe(self, context) -> None:
        """Score the previous proposal against the tokens that followed it (the EMA update above)."""
        if self.previous is None:
            return
        start, drafts = self.previous
        actual = context[start:]
        for d, t in zip(drafts, actual):
            x = 1.0 if d == t else 0.0
            self.alpha += self.rate * (x - self.alpha)
            if not x:
                break

    def to_ask(self, context) -> int:
        """Learn from the last step, then how many drafts to ask for: all k_max when drafting is free, else
        n*(k_max) (or a probe of one)."""
        self.observe(context)
        if self.draft_cost == 0.0:
            return self.k_max
        n = self.best(self.k_max)
        if n == 0:
            self.skipped += 1
            return 1 if self.skipped % self.probe_every == 0 else 0
        return n

    def cut(self, position: int, drafts: list, deterministic: bool) -> int:
        """How many of the offered drafts to verify (and remember the full proposal for the next update)."""
        self.previous = (position, list(drafts))
        if deterministic:
            return self.best(len(drafts))
        return min(self.best(self.k_max), len(drafts))


@dataclass
class TreeBreakEven:
    """Adaptive tree budget: the break-even rule for trees.

    A drafter builds its tree best guesses first (tree.best_first_tree; the ngram trie: its best continuation
    first), so node j of a tree of budget N is the drafter's (j + 1)-th best guess. Let a_j be the chance that
    node j lies on the accepted path (an exponential moving average per rank, updated after every step). Then a
    step with budget N emits E(N) = 1 + a_0 + ... + a_{N-1} tokens on average and costs N c + v(N + 1), and

        N* = argmax_{0 <= N <= budget_max} E(N) / (N c + v(N + 1)),     N* = 0: a plain decode step (speed 1)

    Each a_j starts at prior^(j + 1) (a chain whose drafts are kept with probability `prior`). The budget
    depends only on the past, never on what is drafted: exactness holds for every kind of tree. While the rule
    decodes plainly, one node is tried every `probe_every` steps, so that a_0 can recover.

    The estimate learns from every node the drafter proposed, verified or not (as BreakEven scores its whole
    proposal): at the start of the next step, node j counts as on the path if its tokens are the text that
    followed (x = 1) and as off it if they differ (x = 0); a node deeper than the text known so far is not
    scored. So a free drafter, asked for its whole tree and cut to N*, teaches a_j for every rank even while
    N* is small, and the budget can grow when deep guesses start to come true. (Scoring only the verified
    nodes would leave a_j at its prior for every rank the budget never reached: stuck at a budget of 1.)"""
    budget_max: int = 8
    draft_cost: float = 0.0  # c, per node
    verify_cost: VerifyCost = VerifyCost()  # v
    prior: float = 0.3
    rate: float = 0.3
    probe_every: int = 8
    on_path: list = None  # [budget_max] a_j
    skipped: int = 0
    previous: tuple | None = None  # (position of the root's children, the previous step's whole tree)

    def __post_init__(self):
        if self.on_path is None:
            self.on_path = [self.prior ** (j + 1) for j in range(self.budget_max)]

    def speed(self, n: int) -> float:
        """E(n) / (n c + v(n + 1)): expected tokens per unit of time, relative to vanilla decoding."""
        return (1.0 + sum(self.on_path[:n])) / (n * self.draft_cost + self.verify_cost(n + 1))

    def budget(self) -> int:
        """N*, the smallest on a tie (or a probe of one node)."""
        best_n, best_s = 0, self.speed(0)
        for n in range(1, self.budget_max + 1):
            s = self.speed(n)
            if s > best_s:
                best_n, best_s = n, s
        if best_n == 0:
            self.skipped += 1
            return 1 if self.skipped % self.probe_every == 0 else 0
        return best_n

    def propose(self, position: int, tree) -> None:
        """Remember the whole tree the drafter proposed at this step (its first-level tokens sit at `position`)."""
        self.previous = (position, tree)

    def observe(self, context) -> None:
        """Score the previous step's whole tree against the text that followed it (the update above)."""
        if self.previous is None:
            return
        start, tree = self.previous
        actual = context[start:]
        depths = tree.depths
        on = []  # on[i]: node i's tokens are the text that followed
        for i, (token, parent) in enumerate(zip(tree.tokens, tree.parents)):
            d = depths[i]
            on.append(d <= len(actual) and actual[d - 1] == token and (parent < 0 or on[parent]))
            if i < self.budget_max and d <= len(actual):
                self.on_path[i] += self.rate * ((1.0 if on[i] else 0.0) - self.on_path[i])
        self.previous = None
