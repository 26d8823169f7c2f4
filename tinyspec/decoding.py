"""Vanilla generation, one token per forward pass: the reference every speculative run must equal.

# Step 1  prefill: one forward over the whole prompt fills the KV cache and gives the next-token logits
# Step 2  choose a token: greedy argmax, a seeded draw from the warped distribution p, or (coupled) the
#         Gumbel-max of log p with noise keyed by (seed, position)
# Step 3  stop at EOS or max_new_tokens; otherwise run one forward over the new token and go to step 2

Randomness: one source per run (`randomness.SeededSource(seed)`, a numpy Generator created once, never
re-seeded in the loop); each sampled token consumes exactly one uniform. The coupled sampler needs no generator state at all: its noise
at position t depends only on (seed, t), which is what lets speculative decoding reproduce it exactly.
"""

from __future__ import annotations

import time
from typing import Iterator

import numpy as np

from .cache import KVCache
from .record import Stats
from .randomness import RandomSource, SeededSource
from .sampling import SamplingParams, choose_token


def check_prompt(model, prompt_ids, max_new_tokens: int) -> np.ndarray:
    prompt = np.asarray(prompt_ids, dtype=np.int64)
    if prompt.ndim != 1 or len(prompt) == 0:
        raise ValueError("the prompt is empty: give at least one token")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    limit = model.cfg.max_position_embeddings
    if len(prompt) + max_new_tokens > limit:
        raise ValueError(f"the prompt ({len(prompt)} tokens) plus max_new_tokens ({max_new_tokens}) exceeds the "
                         f"context length of {limit} tokens: shorten the prompt or ask for fewer tokens")
    return prompt


def prefill(model, prompt, cache: KVCache):  # [P] -> ([V], [d])
    """Step 1, shared by vanilla and speculative decoding: the logits after the last prompt token, and that
    token's final hidden state (which some drafters read)."""
    h = model.hidden(prompt, cache)[-1:]  # [1, d]
    return model.head(h)[0], h[0]  # [V], [d]


def choose(logits, params: SamplingParams, random: RandomSource, position: int) -> int:  # [V] -> id
    """Step 2: the token at absolute `position` given the target's logits for it (`sampling.choose_token`)."""
    return choose_token(logits, params, random, position)[0]


def generate(model, prompt_ids, max_new_tokens: int = 32, params: SamplingParams = SamplingParams(),
             stop_at_eos: bool = True, stats: Stats | None = None,
             random: RandomSource | None = None, clock=time.perf_counter) -> Iterator[int]:
    """Yield new token ids one at a time (a streaming API). Pass a Stats to have it filled in. `random`: the
    source of the sampled draws (default SeededSource(params.seed); the proofs pass an EnumeratingSource).
    `clock` times the run (time.process_time gives CPU seconds)."""
    prompt = check_prompt(model, prompt_ids, max_new_tokens)
    stats = stats if stats is not None else Stats()
    stats.prompt_tokens = len(prompt)
    if max_new_tokens == 0:
        return
    t0 = clock()
    random = random if random is not None else SeededSource(params.seed)
    cache = model.new_cache(capacity=len(prompt) + max_new_tokens)
    logits, _ = prefill(model, prompt, cache)  # [V]  Step 1
    stats.target_forwards += 1
    stats.prefill_seconds = clock() - t0
    while True:
        token = choose(logits, params, random, position=cache.length)  # Step 2
        stats.new_tokens += 1
        stats.seconds = clock() - t0
        yield token
        if (stop_at_eos and token == model.cfg.eos_token_id) or stats.new_tokens == max_new_tokens:  # Step 3
            return
        logits = model.forward([token], cache)[0]  # [V]
        stats.target_forwards += 1


def generate_ids(model, prompt_ids, max_new_tokens: int = 32, params: SamplingParams = SamplingParams(),
                 stop_at_eos: bool = True, random: RandomSource | None = None) -> list[int]:
    """The whole continuation as a list (see `generate`)."""
    return list(generate(model, prompt_ids, max_new_tokens, params, stop_at_eos, random=random))
