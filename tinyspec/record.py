"""A run's bookkeeping, kept out of the algorithm's way: its stats, the trace of each speculative step, the clock.

`Stats` is vanilla decoding's, `SpecStats` adds what speculation counts; `Recorder` fills them (and the list of
`StepTrace`s) as `speculative.speculative_generate` runs, reading the clock the run was given.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Stats:
    new_tokens: int = 0
    prompt_tokens: int = 0
    target_forwards: int = 0  # forward passes of the target model, the prefill included
    prefill_seconds: float = 0.0
    seconds: float = 0.0  # wall time of the generation, the prefill included
    extra: dict = field(default_factory=dict)

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        return {"new_tokens": self.new_tokens, "prompt_tokens": self.prompt_tokens,
                "target_forwards": self.target_forwards, "prefill_seconds": round(self.prefill_seconds, 4),
                "seconds": round(self.seconds, 4), "tokens_per_second": round(self.tokens_per_second, 2),
                **self.extra}


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
    parents: list | None = None  # a tree: the parent of each drafted node (-1: the root); None for a chain
    path: list | None = None  # a tree: the accepted nodes (indices into drafted)

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


class Recorder:
    """The run's bookkeeping, kept out of the algorithm's way: SpecStats, the StepTraces and the clock."""

    def __init__(self, stats: SpecStats, trace: list | None, clock):
        self.stats, self.trace, self.clock = stats, trace, clock
        self.t0 = clock()

    def prefilled(self) -> None:  # the prefill's forward
        self.stats.target_forwards += 1
        self.stats.prefill_seconds = self.clock() - self.t0

    def first_token(self) -> None:  # the token the prefill's logits chose
        self.stats.new_tokens = 1
        self.stats.seconds = self.clock() - self.t0

    def step(self, position, proposed, drafted, verdict, emitted, parents=None) -> None:
        s = self.stats
        s.target_forwards += 1
        s.steps += 1
        s.proposed += proposed
        s.drafted += len(drafted)
        s.accepted += verdict.accepted
        s.new_tokens += len(emitted)
        if self.trace is not None:
            self.trace.append(StepTrace(position, drafted, verdict.p_draft, verdict.q_draft, verdict.uniforms,
                                        verdict.accepted, verdict.token, verdict.kind, emitted,
                                        parents, getattr(verdict, "path", None)))
        s.seconds = self.clock() - self.t0
