"""Vanilla decoding on tiny random models: greedy equals the argmax of a from-scratch forward at every step,
sampling is reproducible from its seed, generation stops exactly at EOS and max_new_tokens."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyspec.config import tiny_config
from tinyspec.decoding import Stats, generate, generate_ids
from tinyspec.model import Model
from tinyspec.sampling import SamplingParams
from tinyspec.weights import random_weights


def tiny(seed=0, backend="numpy", **kw):
    cfg = tiny_config(**kw)
    return Model(cfg, random_weights(cfg, seed=seed), backend=backend)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 1000), prompt=st.lists(st.integers(0, 31), min_size=1, max_size=8),
       n=st.integers(0, 12))
def test_greedy_equals_argmax_of_full_recompute(seed, prompt, n):
    model = tiny(seed)
    out = generate_ids(model, prompt, n, stop_at_eos=False)
    assert len(out) == n
    seq = list(prompt)
    for token in out:  # recompute the whole sequence without any cache reuse
        logits = model.forward(seq, model.new_cache())[-1]
        assert token == int(np.argmax(logits))
        seq.append(token)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 1000), prompt=st.lists(st.integers(0, 31), min_size=1, max_size=6),
       stop_index=st.integers(0, 9), sampled=st.booleans())
def test_stops_exactly_at_eos(seed, prompt, stop_index, sampled):
    params = SamplingParams(temperature=1.0, seed=seed) if sampled else SamplingParams()
    free = generate_ids(tiny(seed), prompt, 10, params, stop_at_eos=False)
    eos = free[stop_index]  # make the token at stop_index the EOS token
    model = tiny(seed, eos_token_id=eos)
    out = generate_ids(model, prompt, 10, params)
    assert out == free[: free.index(eos) + 1]


def test_sampling_is_reproducible_and_seed_dependent():
    model = tiny(1)
    p = lambda s, c=False: SamplingParams(temperature=1.0, top_k=20, top_p=0.95, seed=s, coupled=c)
    a = generate_ids(model, [2, 5], 16, p(3), stop_at_eos=False)
    assert a == generate_ids(model, [2, 5], 16, p(3), stop_at_eos=False)
    assert a != generate_ids(model, [2, 5], 16, p(4), stop_at_eos=False)
    c = generate_ids(model, [2, 5], 16, p(3, True), stop_at_eos=False)
    assert c == generate_ids(model, [2, 5], 16, p(3, True), stop_at_eos=False)


def test_streaming_yields_one_token_at_a_time_and_counts():
    model = tiny(2)
    stats = Stats()
    it = generate(model, [2, 3, 4], 5, stats=stats, stop_at_eos=False)
    first = next(it)
    assert stats.new_tokens == 1 and stats.target_forwards == 1  # the prefill only
    rest = list(it)
    assert [first] + rest == generate_ids(model, [2, 3, 4], 5, stop_at_eos=False)
    assert stats.new_tokens == 5 and stats.target_forwards == 5 and stats.prompt_tokens == 3


def test_errors():
    model = tiny()
    with pytest.raises(ValueError, match="prompt is empty"):
        generate_ids(model, [], 4)
    with pytest.raises(ValueError, match="exceeds the context length of 64 tokens"):
        generate_ids(model, [1] * 60, 5)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate_ids(model, [1], -1)
