"""Speculative decoding on paper: the exact distribution of one rejection step, and the cost model.

Notation of Leviathan, Kalman & Matias, "Fast Inference from Transformers via Speculative Decoding" (2023):
p is the target's (warped) distribution, q the drafter's, alpha the chance that a draft is accepted, gamma
(here k) the number of drafts per step, c the cost of one draft relative to one target forward. We add v,
the cost of the verification forward over k + 1 tokens relative to a one-token forward (1 in the paper's
idealised model, a little more on a real machine: lesson 3 measures it).

    >>> round(expected_tokens_per_step(0.8, 4), 4)          # 1 + a + a^2 + a^3 + a^4
    3.3616
    >>> round(expected_speedup(0.8, 4, c=0.0, v=1.0), 4)    # free drafts, free verification: the same number
    3.3616
    >>> p, q = np.array([0.5, 0.3, 0.2]), np.array([0.2, 0.2, 0.6])
    >>> one_step_distribution(p, q).round(12).tolist()     # the rejection rule reproduces p exactly
    [0.5, 0.3, 0.2]
"""

from __future__ import annotations

import numpy as np

# --- one step of speculative sampling, computed exactly -------------------------------------------------------


def acceptance_rate(p, q) -> float:
    """beta = sum_x min(p(x), q(x)) = 1 - TV(p, q): the chance that one draft d ~ q is accepted (paper, 3.3)."""
    return float(np.minimum(p, q).sum())


def one_step_distribution(p, q, draft=None):  # [V], [V] -> [V]
    """P(the step emits x) when d ~ `draft` is checked by the rejection rule as if d ~ q.

    P(x) = draft(x) a(x) + (sum_d draft(d) (1 - a(d))) r(x),  a = min(1, p/q), r = norm(max(0, p - q)).
    With draft = q (the default, a drafter that samples what it reports) this is p, for every p and q:
    the theorem. With another `draft` (say, one-hot at argmax q: a drafter that reports q but takes its
    argmax) it is not. Uses the package's own `acceptance_probability` and `residual_distribution`.
    """
    from .speculative import acceptance_probability, residual_distribution  # (speculative imports this module, via adaptive)

    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    draft = q if draft is None else np.asarray(draft, dtype=np.float64)
    a = np.array([acceptance_probability(p, q, d) if q[d] > 0 else 0.0 for d in range(len(p))])
    accepted = draft * a  # [V]  drafted and kept
    rejected = float((draft * (1.0 - a)).sum())  # the chance of a rejection
    return accepted + rejected * residual_distribution(p, q)  # [V]


# --- the cost model ------------------------------------------------------------------------------------------


def expected_tokens_per_step(alpha: float, k: int) -> float:
    """(1 - alpha^(k+1)) / (1 - alpha): accepted drafts plus the target's own token (paper, eq. 1)."""
    if alpha >= 1.0:
        return float(k + 1)
    return (1.0 - alpha ** (k + 1)) / (1.0 - alpha)


def expected_speedup(alpha: float, k: int, c: float, v: float = 1.0) -> float:
    """(1 - alpha^(k+1)) / ((1 - alpha)(k c + v)): tokens per step over the cost of a step, in target forwards.

    The paper's Theorem 3.8 is the case v = 1 (verifying k + 1 tokens costs one forward)."""
    return expected_tokens_per_step(alpha, k) / (k * c + v)


def best_k(alpha: float, c: float, v_of_k=lambda k: 1.0, k_max: int = 16) -> int:
    """The k in 1..k_max with the largest expected speedup; v_of_k(k) is the verification cost of k drafts."""
    return max(range(1, k_max + 1), key=lambda k: expected_speedup(alpha, k, c, v_of_k(k)))


# --- reading a run's trace -------------------------------------------------------------------------------------


def estimate_alpha(trace) -> float:
    """alpha from a list of StepTrace, as the paper models it: every checked draft is kept with probability alpha.

    Each step checks its drafts in order until the first rejection, so its checked drafts are the kept ones
    plus one when a draft was rejected; alpha = kept / checked (the maximum-likelihood estimate)."""
    kept = sum(s.accepted for s in trace)
    checked = kept + sum(1 for s in trace if s.accepted < len(s.drafted))
    return kept / checked if checked else 0.0


def acceptance_by_position(trace, k: int) -> list[float]:
    """For i = 1..k: of the steps that drafted at least i tokens, the fraction that kept draft i.

    Falls with i, because keeping draft i needs drafts 1..i-1 kept too: about alpha^i."""
    rates = []
    for i in range(1, k + 1):
        proposed = [s for s in trace if len(s.drafted) >= i]
        rates.append(sum(s.accepted >= i for s in proposed) / len(proposed) if proposed else 0.0)
    return rates


def tokens_per_step(trace, k: int | None = None) -> float:
    """Mean tokens a step emitted (accepted drafts + the target's own), over the steps that drafted exactly k
    tokens (all steps if k is None): the measured counterpart of expected_tokens_per_step(alpha, k).
    Counts accepted + 1 even where max_new_tokens cut a step short."""
    steps = [s for s in trace if k is None or len(s.drafted) == k]
    return sum(s.accepted + 1 for s in steps) / len(steps) if steps else 0.0
