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

The prefill and the first token are exactly vanilla decoding's (`decoding.prefill`, `decoding.choose`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from .decoding import Stats, check_prompt, choose, prefill
from .drafters.base import Drafter, TargetView
from .kernels import MAX_INVARIANT_ROWS
from .randomness import RandomSource, SeededSource
from .sampling import SamplingParams, gumbel_token, warp

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


# --- the trace of a step and the run's stats ------------------------------------------------------------------

@dataclass
class StepTrace:
    position: int  # absolute position of d1
    drafted: list  # [n_drafted] token ids
    p_draft: list  # [n_drafted] p_i(d_i), the target's probability of each draft (under warping)
    q_draft: list  # [n_drafted] q_i(d_i), the drafter's (1.0 for deterministic drafters)
    uniforms: list  # [n_checked] the uniform draw compared against min(1, p/q) (rejection only)
    accepted: int  # how many drafts were kept
    final_token: int  # the token the target added: a correction after a rejection, or a bonus
    final_kind: str  # "correction" (a draft was rejected) or "bonus" (all drafts accepted)
    emitted: list  # the tokens this step emitted (accepted drafts + final token, cut at EOS / limit)

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class SpecStats(Stats):
    proposed: int = 0  # draft tokens the drafter offered
    drafted: int = 0  # draft tokens checked by the target (adaptive k may verify fewer than were offered)
    accepted: int = 0  # draft tokens kept
    steps: int = 0  # speculative steps (each is one target forward)

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def tokens_per_forward(self) -> float:
        """Mean new tokens per target forward (the prefill excluded: it makes the first token only)."""
        return (self.new_tokens - 1) / (self.target_forwards - 1) if self.target_forwards > 1 else 0.0

    def to_dict(self) -> dict:
        return {**super().to_dict(), "proposed": self.proposed, "drafted": self.drafted, "accepted": self.accepted,
                "steps": self.steps,
                "acceptance_rate": round(self.acceptance_rate, 4),
                "tokens_per_forward": round(self.tokens_per_forward, 4)}


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
    """Accept d_i while d_i == argmax p_i; then the target's argmax."""
    verdict = Verdict(0, -1, "bonus")
    for i, d in enumerate(drafted):
        target = int(np.argmax(logits[i]))
        verdict.p_draft.append(1.0 if d == target else 0.0)
        verdict.q_draft.append(1.0)
        if d != target:
            verdict.accepted, verdict.token, verdict.kind = i, target, "correction"
            return verdict
    verdict.accepted, verdict.token = len(drafted), int(np.argmax(logits[len(drafted)]))
    return verdict


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
    verdict.token = random.choice(warp(logits[len(drafted)], params.temperature, params.top_k, params.top_p))
    return verdict


def verify_coupled(logits, drafted, params: SamplingParams, position: int) -> Verdict:
    """Accept d_i while d_i == argmax(log p_i + g), g the Gumbel noise of (seed, position of d_i); then that same
    Gumbel-max token: exactly the token vanilla coupled sampling picks at each position."""
    verdict = Verdict(0, -1, "bonus")
    for i, d in enumerate(drafted):
        p = warp(logits[i], params.temperature, params.top_k, params.top_p)  # [V] p_i
        verdict.p_draft.append(float(p[d]))
        verdict.q_draft.append(1.0)
        target = gumbel_token(p, params.seed, position + i)
        if d != target:
            verdict.accepted, verdict.token, verdict.kind = i, target, "correction"
            return verdict
    n = len(drafted)
    verdict.accepted = n
    verdict.token = gumbel_token(warp(logits[n], params.temperature, params.top_k, params.top_p), params.seed,
                                 position + n)
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


# --- adaptive k: the break-even rule decides how many drafts to verify ---------------------------------------

@dataclass(frozen=True)
class VerifyCost:
    """v(m): the time of one target forward over m tokens, in single-token forwards (v(1) = 1).

    Decode is memory-bound, so v grows slowly, but not from the first extra token: the kernels for M > 1 rows
    do more arithmetic per weight read. The default is fitted on the reference machine (AMD EPYC, 300-1000
    tokens of context, tinyspec/kernels.py's explicit-SIMD, prefetching matmul): one thread v(2) = 1.12-1.14,
    v(9) = 1.79-1.81, v(17) = 2.9-3.2; two threads v(2) = 0.96-1.07, v(9) = 1.4-1.9, v(17) = 2.2-3.3 (the
    second thread's share moves with the load on this shared machine). The kernels before it gave v(9) =
    2.0-2.4. Measure yours with `measure.forward_times` and pass a VerifyCost to speculative_generate."""
    first_extra: float = 0.10  # v(2) - v(1)
    per_token: float = 0.11  # v(m + 1) - v(m) for m >= 2

    def __call__(self, m: int) -> float:
        return 1.0 if m <= 1 else 1.0 + self.first_extra + self.per_token * (m - 2)


def expected_tokens(alpha: float, n: int) -> float:
    """E(alpha, n) = 1 + alpha + ... + alpha^n = (1 - alpha^(n+1)) / (1 - alpha): the expected tokens one step
    emits when it verifies n drafts, each accepted with probability alpha while the previous ones were
    (Leviathan et al. 2023, eq. 1), the target's own token included."""
    return n + 1.0 if alpha >= 1.0 else (1.0 - alpha ** (n + 1)) / (1.0 - alpha)


@dataclass
class BreakEven:
    """Adaptive k: verify only as many drafts as pay for themselves.

    The rule. Verifying n drafts costs v(n + 1) (the forward over [last, d1..dn]) plus n c (drafting, c the
    drafter's cost per token, 0 for prompt lookup) and emits E(alpha, n) tokens on average, so the step's
    speed relative to vanilla decoding is

        S(n) = E(alpha, n) / (n c + v(n + 1)),        n* = argmax_{0 <= n <= limit} S(n), ties to the smaller n

    and n* = 0 is a plain decode step (S(0) = 1: exactly vanilla). Drafting never pays while
    1 / (1 - alpha) <= v(2) (E < 1 / (1 - alpha) for every n and v(n + 1) >= v(2)): on text the drafter cannot
    predict, alpha falls and the loop decodes like vanilla.

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
        return expected_tokens(self.alpha, n) / (n * self.draft_cost + self.verify_cost(n + 1))

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

    def to_ask(self) -> int:
        """How many drafts to ask the drafter for: all k_max when drafting is free, else n*(k_max) (or a probe)."""
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


# --- the loop -----------------------------------------------------------------------------------------------

def check_settings(verifier: str, params: SamplingParams, k: int) -> None:
    if verifier not in VERIFIERS:
        raise ValueError(f"unknown verifier {verifier!r}: choose one of {', '.join(VERIFIERS)}")
    if k < 1:
        raise ValueError(f"k (drafts per step) must be >= 1, got {k}")
    if k > MAX_K:
        raise ValueError(f"k (drafts per step) must be <= {MAX_K}, got {k}: a verification forward over more than "
                         f"{MAX_K + 1} tokens leaves the batch-invariant kernels, and the output could change")
    if verifier == "greedy" and not params.greedy:
        raise ValueError("the greedy verifier needs temperature 0: use --verify rejection or coupled to sample")
    if verifier == "coupled" and not params.greedy and not params.coupled:
        raise ValueError("the coupled verifier reproduces coupled sampling: set SamplingParams(coupled=True)")


def speculative_generate(model, drafter: Drafter, prompt_ids, max_new_tokens: int = 32,
                         params: SamplingParams = SamplingParams(), verifier: str = "greedy", k: int = 4,
                         adaptive: bool = False, verify_cost: VerifyCost = VerifyCost(), stop_at_eos: bool = True,
                         stats: SpecStats | None = None, trace: list | None = None,
                         random: RandomSource | None = None) -> Iterator[int]:
    """Yield new tokens as they are accepted. Fills `stats` (SpecStats) and appends StepTraces to `trace`.

    With adaptive, k is the most drafts per step and the break-even rule (BreakEven) verifies 0..k of them
    each step, from the acceptance so far, the drafter's cost (its `cost` attribute) and `verify_cost` v(m).

    `random` is the source of every random choice of the run, the verifier's and the drafter's (the proofs pass
    an EnumeratingSource). By default the verifier draws from SeededSource(seed), as vanilla decoding does,
    and the drafter from its own independent stream SeededSource([seed, drafter.stream])."""
    check_settings(verifier, params, k)
    prompt = check_prompt(model, prompt_ids, max_new_tokens)
    if drafter.vocab_size is not None and drafter.vocab_size != model.cfg.vocab_size:
        raise ValueError(f"the drafter {drafter.name} has a vocabulary of {drafter.vocab_size} tokens, the target "
                         f"{model.cfg.vocab_size}: a drafter must share the target's tokenizer")
    stats = stats if stats is not None else SpecStats()
    stats.prompt_tokens = len(prompt)
    if max_new_tokens == 0:
        return
    t0 = time.perf_counter()
    if random is None:
        random, drafter_random = SeededSource(params.seed), SeededSource([params.seed, getattr(drafter, "stream", 1)])
    else:
        drafter_random = random
    cache = model.new_cache(capacity=len(prompt) + max_new_tokens + k + 1)
    logits, hidden = prefill(model, prompt, cache)  # [V], [d]  vanilla's prefill ...
    stats.target_forwards += 1
    stats.prefill_seconds = time.perf_counter() - t0
    first = choose(logits, params, random, position=cache.length)  # ... and vanilla's first token
    context = [int(t) for t in prompt] + [first]
    stats.new_tokens = 1
    stats.seconds = time.perf_counter() - t0
    yield first
    if (stop_at_eos and first == model.cfg.eos_token_id) or max_new_tokens == 1:
        return
    view = TargetView(model, cache, hidden, drafter_random)
    drafter.begin(view, prompt, params)
    policy = BreakEven(k_max=k, draft_cost=float(getattr(drafter, "cost", 0.0) or 0.0), verify_cost=verify_cost)
    while True:
        remaining = max_new_tokens - stats.new_tokens
        position = len(context)  # absolute position of d1; the cache holds len(context) - 1 positions
        # Step 1: draft (never more than could be emitted: a step emits up to k + 1 tokens) ...
        if adaptive:
            policy.observe(context)
        k_now = min(policy.to_ask() if adaptive else k, remaining - 1)
        proposal = drafter.propose(context, k_now) if k_now > 0 else None
        drafted = [int(t) for t in proposal.tokens[:k_now]] if proposal else []
        stats.proposed += len(drafted)
        if adaptive:  # ... and keep only the drafts that pay for their verification (the break-even rule)
            drafted = drafted[: policy.cut(position, drafted, proposal is None or proposal.q is None)]
        q_rows = proposal.q[: len(drafted)] if proposal is not None and proposal.q is not None else None
        # Step 2: one target forward over [last, d1..dn]
        h = model.hidden([context[-1]] + drafted, cache)  # [n+1, d]
        logits = model.head(h)  # [n+1, V]
        stats.target_forwards += 1
        stats.steps += 1
        # Step 3: verify
        verdict = verify(logits, drafted, q_rows, params, verifier, random, position)
        n_ok, final = verdict.accepted, verdict.token
        # Step 4: roll back the rejected drafts (the cache keeps `last` and the n_ok accepted drafts)
        cache.truncate(position + n_ok)
        view.hidden = h[n_ok]  # [d] the state whose logits chose `final`
        new = drafted[:n_ok] + [final]
        context += new
        drafter.rollback(len(context) - 1)
        stats.drafted += len(drafted)
        stats.accepted += n_ok
        # Step 5: emit, stopping exactly at EOS / max_new_tokens
        emitted, done = [], False
        for token in new:
            emitted.append(token)
            stats.new_tokens += 1
            if (stop_at_eos and token == model.cfg.eos_token_id) or stats.new_tokens == max_new_tokens:
                done = True
                break
        if trace is not None:
            trace.append(StepTrace(position, drafted, verdict.p_draft, verdict.q_draft, verdict.uniforms, n_ok, final,
                                   verdict.kind, emitted))
        stats.seconds = time.perf_counter() - t0
        yield from emitted
        if done:
            return


def speculative_generate_ids(model, drafter, prompt_ids, max_new_tokens=32, params=SamplingParams(),
                             verifier="greedy", k=4, **kw) -> list[int]:
    return list(speculative_generate(model, drafter, prompt_ids, max_new_tokens, params, verifier, k, **kw))
