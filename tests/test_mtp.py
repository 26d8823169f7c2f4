"""The MTP drafter: every hand-written backward against finite differences, the drafter's contract with the
target's cache, and speculative decoding with the shipped drafter on the real weights."""

import numpy as np
import pytest

from tinyspec.mtp import layers, net

SEED = 0  # every random array below comes from default_rng(SEED + i)


def numeric_grad(f, x, eps=1e-6, entries=None):  # f: () -> scalar; central differences of f in x's entries
    """The gradient of f with respect to x, entry by entry (or only at `entries`, flat indices; NaN elsewhere)."""
    g = np.full(x.shape, np.nan)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size) if entries is None else entries:
        old = flat[i]
        flat[i] = old + eps
        up = f()
        flat[i] = old - eps
        down = f()
        flat[i] = old
        gflat[i] = (up - down) / (2 * eps)
    return g


def some_entries(x, n=12, seed=0):  # up to n flat indices of x, always the first and the last
    idx = np.random.default_rng(seed).choice(x.size, size=min(n, x.size), replace=False)
    return sorted(set(idx.tolist()) | {0, x.size - 1})


def assert_close(analytic, numeric, tol=1e-6):
    checked = ~np.isnan(numeric)
    scale = max(1.0, np.abs(numeric[checked]).max())
    assert np.abs(analytic[checked] - numeric[checked]).max() <= tol * scale, (analytic, numeric)


def rand(rng, *shape):
    return rng.standard_normal(shape)


# --- one layer at a time ------------------------------------------------------------------------------------

def test_linear_backward():
    rng = np.random.default_rng(SEED)
    x, W, w = rand(rng, 3, 5), rand(rng, 4, 5), rand(rng, 3, 4)
    loss = lambda: np.sum(w * layers.linear_forward(x, W)[0])  # noqa: E731
    dx, dW = layers.linear_backward(w, layers.linear_forward(x, W)[1])
    assert_close(dx, numeric_grad(loss, x))
    assert_close(dW, numeric_grad(loss, W))


def test_rms_norm_backward():
    rng = np.random.default_rng(SEED + 1)
    x, s, w = rand(rng, 3, 6), 1 + 0.3 * rand(rng, 6), rand(rng, 3, 6)
    loss = lambda: np.sum(w * layers.rms_norm_forward(x, s, 1e-6)[0])  # noqa: E731
    dx, ds = layers.rms_norm_backward(w, layers.rms_norm_forward(x, s, 1e-6)[1])
    assert_close(dx, numeric_grad(loss, x))
    assert_close(ds, numeric_grad(loss, s))


def test_gelu_backward():
    rng = np.random.default_rng(SEED + 2)
    x, w = 2 * rand(rng, 4, 5), rand(rng, 4, 5)
    loss = lambda: np.sum(w * layers.gelu_forward(x)[0])  # noqa: E731
    assert_close(layers.gelu_backward(w, x), numeric_grad(loss, x))


def test_rope_backward_is_the_inverse_rotation():
    rng = np.random.default_rng(SEED + 3)
    x, w, pos = rand(rng, 3, 2, 8), rand(rng, 3, 2, 8), np.array([0, 5, 17])
    loss = lambda: np.sum(w * layers.rope_forward(x, pos, 100.0)[0])  # noqa: E731
    assert_close(layers.rope_backward(w, layers.rope_forward(x, pos, 100.0)[1]), numeric_grad(loss, x))


@pytest.mark.parametrize("window", [0, 3])
def test_attention_backward(window):
    rng = np.random.default_rng(SEED + 4)
    M, H, T, hd = 4, 2, 6, 5
    q, K, V, w = rand(rng, M, H, hd), rand(rng, T, hd), rand(rng, T, hd), rand(rng, M, H, hd)
    mask = layers.visible(positions=[2, 3, 6, 7], lengths=[2, 3, 6, 5], T=T, window=window)
    loss = lambda: np.sum(w * layers.attention_forward(q, K, V, mask, 0.4)[0])  # noqa: E731
    dq = layers.attention_backward(w, layers.attention_forward(q, K, V, mask, 0.4)[1])
    assert_close(dq, numeric_grad(loss, q))


def test_visible_reads_only_the_cache_and_the_window():
    mask = layers.visible(positions=[4, 5], lengths=[4, 4], T=6, window=3)
    assert mask.astype(int).tolist() == [[0, 0, 1, 1, 0, 0], [0, 0, 0, 1, 0, 0]]


def test_attention_with_nothing_visible_gives_zeros():
    q, K, V = np.ones((1, 2, 3)), np.ones((4, 3)), np.ones((4, 3))
    out, _ = layers.attention_forward(q, K, V, np.zeros((1, 4), bool), 1.0)
    assert np.all(out == 0)


def test_losses_backward():
    rng = np.random.default_rng(SEED + 5)
    z, p = rand(rng, 3, 7), rng.dirichlet(np.ones(7), size=3)
    assert_close(layers.soft_cross_entropy(z, p)[1], numeric_grad(lambda: layers.soft_cross_entropy(z, p)[0], z))
    y, t = rand(rng, 3, 4), rand(rng, 3, 4)
    assert_close(layers.mse(y, t, 0.3)[1], numeric_grad(lambda: layers.mse(y, t, 0.3)[0], y))


# --- the whole draft step -----------------------------------------------------------------------------------

TINY = net.MTPConfig(hidden_size=8, intermediate_size=12, num_heads=2, head_dim=4, source_layers=(1, 2),
                     windows=(3, 0), rope_thetas=(10.0, 1000.0), query_scale=0.5, vocab_size=32,
                     num_draft_tokens=10)


def tiny_step_inputs(seed, M=3, T=5):
    rng = np.random.default_rng(seed)
    d, hd = TINY.hidden_size, TINY.head_dim
    kv = [(rand(rng, T, hd), rand(rng, T, hd)) for _ in range(TINY.num_blocks)]
    return rand(rng, M, d), rand(rng, M, d), kv, np.array([2, 4, 6]), np.array([2, 4, 5]), rand(rng, 10, d)


def test_step_backward_against_finite_differences():
    params = net.random_params(TINY, seed=SEED + 6, dtype=np.float64)
    e, h, kv, pos, lengths, E_sub = tiny_step_inputs(SEED + 7)
    rng = np.random.default_rng(SEED + 8)
    p_target, h_target = rng.dirichlet(np.ones(10), size=3), rand(rng, 3, TINY.hidden_size)

    def loss_and_grads():
        h_next, tape = net.step_forward(params, TINY, e, h, kv, pos, lengths)  # [M, d]
        logits, head_tape = layers.linear_forward(h_next, E_sub)  # [M, N]
        ce, dlogits = layers.soft_cross_entropy(logits, p_target)
        reg, dh_reg = layers.mse(h_next, h_target, 0.5)
        dh_next = layers.linear_backward(dlogits, head_tape)[0] + dh_reg
        return ce + reg, *net.step_backward(dh_next, tape, TINY)

    _, grads, dh = loss_and_grads()
    assert set(grads) == set(params)
    for name, value in params.items():  # a dozen entries of every parameter (the layer tests above check all)
        assert grads[name].shape == value.shape, name
        numeric = numeric_grad(lambda: loss_and_grads()[0], value, entries=some_entries(value))
        assert_close(grads[name], numeric, tol=1e-5)
    assert_close(dh, numeric_grad(lambda: loss_and_grads()[0], h), tol=1e-5)


def test_sequence_loss_gradient_of_step_one():
    """The training loss of a whole sequence, as train.py assembles it (step 2 off: its input, step 1's output,
    is a constant to the optimizer, so only step 1 has an exact finite-difference gradient)."""
    from tinyspec.mtp import data, train

    rng = np.random.default_rng(SEED + 9)
    S, d, hd = 6, TINY.hidden_size, TINY.head_dim
    params = net.random_params(TINY, seed=SEED + 10, dtype=np.float64)
    E = rand(rng, TINY.vocab_size, d)
    E_sub = E[:10]
    f = data.Features(rng.integers(0, 32, S), rand(rng, S, d), None, rand(rng, 2, S, hd), rand(rng, 2, S, hd), None)
    tc = train.TrainConfig(step2_weight=0.0)
    grads = {}
    train.sequence_loss(params, TINY, f, E, E_sub, tc, 3.0, grads)
    for name in ("proj", "blocks.0.q_proj", "blocks.1.down_proj", "norm"):
        numeric = numeric_grad(lambda: train.sequence_loss(params, TINY, f, E, E_sub, tc, 3.0, None), params[name],
                               entries=some_entries(params[name]))
        assert_close(grads[name], numeric, tol=1e-5)


def test_adam_minimizes_a_quadratic():
    from tinyspec.mtp.train import Adam

    params = {"w": np.array([3.0, -2.0], np.float32)}
    adam = Adam(params)
    for _ in range(300):
        adam.step(params, {"w": 2 * params["w"]}, lr=0.05)
    assert np.abs(params["w"]).max() < 0.05


def test_save_and_load_round_trip(tmp_path):
    params = net.random_params(TINY, seed=SEED + 11)
    path = net.save(tmp_path / "d.npz", TINY, params, vocab=np.arange(10), meta={"note": "x"})
    c, loaded, vocab, meta = net.load(path)
    assert c == TINY and meta == {"note": "x"} and vocab.tolist() == list(range(10))
    for k in params:
        assert loaded[k].dtype == np.float32
        np.testing.assert_allclose(loaded[k], params[k].astype(np.float16).astype(np.float32))


# --- the drafter against a tiny target --------------------------------------------------------------------------

def tiny_target(seed=0, backend="numba"):
    from tinyspec.config import tiny_config
    from tinyspec.model import Model
    from tinyspec.weights import random_weights

    cfg = tiny_config()
    return Model(cfg, random_weights(cfg, seed=seed, scale=1.0), backend)


def tiny_drafter(target, seed=0, n=12):
    from tinyspec.drafters.mtp import MTPDrafter

    c = net.MTPConfig.for_target(target.cfg, num_draft_tokens=n)
    vocab = np.sort(np.random.default_rng(seed).choice(target.cfg.vocab_size, n, replace=False))
    return MTPDrafter(c, net.random_params(c, seed=seed), vocab)


def test_config_reads_the_last_sliding_and_last_global_layers():
    from tinyspec.config import GEMMA3_270M, tiny_config

    c = net.MTPConfig.for_target(GEMMA3_270M)
    assert (c.source_layers, c.windows, c.rope_thetas) == ((16, 17), (512, 0), (10_000.0, 1_000_000.0))
    assert net.MTPConfig.for_target(tiny_config()).source_layers == (1, 2)


def test_drafter_reads_the_target_cache_and_allocates_none(monkeypatch):
    from tinyspec.cache import KVCache
    from tinyspec.decoding import prefill
    from tinyspec.drafters.base import TargetView
    from tinyspec.sampling import SamplingParams

    target = tiny_target()
    drafter = tiny_drafter(target)
    prompt = np.array([2, 5, 9, 4, 7, 11, 3])
    cache = target.new_cache(32)
    _, hidden = prefill(target, prompt, cache)
    drafter.begin(TargetView(target, cache, hidden), prompt, SamplingParams())
    before = ([k.copy() for k in cache.k], [v.copy() for v in cache.v], cache.length)

    def forbidden(*args, **kwargs):
        raise AssertionError("the MTP drafter must not allocate a KV cache")

    monkeypatch.setattr(KVCache, "__init__", forbidden)
    monkeypatch.setattr(type(target), "new_cache", forbidden)
    proposal = drafter.propose(list(prompt) + [6], k=5)
    assert len(proposal.tokens) == 5 and proposal.q is None
    assert set(proposal.tokens) <= set(drafter.vocab.tolist())
    assert cache.length == before[2]
    for i in range(target.cfg.num_layers):
        assert np.array_equal(cache.k[i], before[0][i]) and np.array_equal(cache.v[i], before[1][i])


def test_drafter_step_matches_the_training_forward():
    """What propose computes for one draft is net.step_forward on that row: the drafter runs the trained net."""
    from tinyspec.decoding import prefill
    from tinyspec.drafters.base import TargetView
    from tinyspec.sampling import SamplingParams

    target = tiny_target(seed=1)
    drafter = tiny_drafter(target, seed=1)
    prompt = np.array([2, 8, 9, 10, 12])
    cache = target.new_cache(16)
    _, hidden = prefill(target, prompt, cache)
    drafter.begin(TargetView(target, cache, hidden), prompt, SamplingParams())
    d1 = drafter.propose(list(prompt) + [7], k=1).tokens[0]
    L = cache.length
    kv = [(cache.k[layer][:L, 0], cache.v[layer][:L, 0]) for layer in drafter.cfg.source_layers]
    e = target.weights.embed_tokens[[7]] * np.float32(np.sqrt(target.cfg.hidden_size))
    h, _ = net.step_forward(drafter.params, drafter.cfg, e, hidden[None], kv, [L], [L])
    assert d1 == drafter.vocab[np.argmax(h @ target.weights.embed_tokens[drafter.vocab].T)]


class ShortSighted:
    """A misaligned drafter for the test below: it drafts as if the cache held one position fewer."""

    def __init__(self, inner):
        self.inner, self.name, self.vocab_size = inner, "short-sighted", inner.vocab_size
        self.cfg, self.params, self.vocab = inner.cfg, inner.params, inner.vocab

    def begin(self, target, prompt, params):
        self.inner.begin(target, prompt, params)

    def propose(self, context, k):
        cache = self.inner.target.cache
        cache.length -= 1
        try:
            return self.inner.propose(context, k)
        finally:
            cache.length += 1

    def rollback(self, n):
        self.inner.rollback(n)


@pytest.mark.parametrize("seed", range(3))
def test_teacher_forced_drafts_are_the_loop_drafts(seed):
    """The training metric is the loop's: at every position the loop drafts at, its first draft equals the one
    training computes from the target's features (same hidden state, positions, cache rows, embedding scale).
    A drafter that reads one cache row too few is caught."""
    from tinyspec.mtp.report import teacher_forced_vs_loop

    target = tiny_target(seed)
    drafter = tiny_drafter(target, seed, n=target.cfg.vocab_size)
    prompt = [2] + list(np.random.default_rng(seed).integers(4, 32, 6))
    r = teacher_forced_vs_loop(target, drafter, prompt, 24)
    assert r["identical"] and r["loop_steps"] > 5
    assert r["loop_equals_teacher_forced"] == 1.0 and r["coverage"] == 1.0
    assert 0 <= r["teacher_forced"] <= 1 and 0 <= r["loop_first"] <= 1
    bad = teacher_forced_vs_loop(target, ShortSighted(drafter), prompt, 24)
    assert bad["identical"] and bad["loop_equals_teacher_forced"] < 1.0


@pytest.mark.parametrize("seed", range(2))
def test_greedy_speculative_with_mtp_equals_greedy(seed):
    from tinyspec.decoding import generate_ids
    from tinyspec.speculative import speculative_generate_ids

    target = tiny_target(seed)
    prompt = [2] + list(np.random.default_rng(seed).integers(4, 32, 5))
    want = generate_ids(target, prompt, 16)
    assert speculative_generate_ids(target, tiny_drafter(target, seed), prompt, 16, k=3) == want


def test_sampled_q_is_warped_and_zero_outside_the_subset():
    from tinyspec.sampling import SamplingParams
    from tinyspec.speculative import speculative_generate_ids

    target = tiny_target(2)
    drafter = tiny_drafter(target, 2)
    seen = []
    original = drafter.propose

    def spy(context, k):
        proposal = original(context, k)
        seen.append(proposal)
        return proposal

    drafter.propose = spy
    params = SamplingParams(temperature=0.8, top_k=5, seed=3)
    out = speculative_generate_ids(target, drafter, [2, 5, 6], 12, params, verifier="rejection", k=3)
    assert len(out) == 12
    outside = np.setdiff1d(np.arange(target.cfg.vocab_size), drafter.vocab)
    for proposal in seen:
        np.testing.assert_allclose(proposal.q.sum(axis=1), 1.0)
        assert np.all(proposal.q[:, outside] == 0) and np.all((proposal.q > 0).sum(axis=1) <= 5)
        assert all(proposal.q[i, t] > 0 for i, t in enumerate(proposal.tokens))


# --- the data pipeline -------------------------------------------------------------------------------------------

def test_batched_target_equals_model_hidden():
    from tinyspec.decoding import generate_ids
    from tinyspec.mtp import data

    target = tiny_target(3)
    tokens = np.array([2, 7, 8, 9, 10, 11, 12, 13])
    cache = target.new_cache(16)
    want = target.hidden(tokens, cache)
    f = data.prefill_features(target, tokens, (1, 2))
    assert np.array_equal(f.h, want)
    assert np.array_equal(f.k[1], cache.k[2][:8, 0]) and np.array_equal(f.v[0], cache.v[1][:8, 0])
    assert np.array_equal(f.argmax, np.argmax(target.head(want), axis=-1))
    seeds = [np.array([2, 5, 6]), np.array([2, 9, 10, 11, 4])]
    feats = data.generate_features(target, seeds, 6, (1, 2))  # two seeds of different lengths, one batch
    for seed, f in zip(seeds, feats):
        continuation = generate_ids(target, seed, 6)
        assert f.tokens[len(seed):].tolist() == continuation[:5] and f.argmax[-1] == continuation[5]
    # BOS alone, the first 3 tokens sampled: the labels are still the target's greedy choices at every position
    feats = data.generate_features(target, [np.array([2])] * 2, 8, (1, 2), rng=np.random.default_rng(SEED),
                                   sample_first=3, first_temperature=1.0)
    for f in feats:
        assert np.array_equal(f.argmax, np.argmax(target.forward(f.tokens, target.new_cache(16)), axis=-1))
        assert f.tokens[4:].tolist() == f.argmax[3:-1].tolist()  # greedy after the sampled opening


# --- the shipped drafter on the real Gemma 3 270M ---------------------------------------------------------------

@pytest.fixture(scope="module")
def shipped():
    from tinyspec.drafters.mtp import DEFAULT_WEIGHTS

    if not DEFAULT_WEIGHTS.exists():
        pytest.skip(f"no shipped MTP drafter at {DEFAULT_WEIGHTS}: run `tinyspec train-mtp`")
    return DEFAULT_WEIGHTS


def test_shipped_drafter_is_small_float16_and_fits_gemma(shipped):
    from tinyspec.config import GEMMA3_270M

    assert shipped.stat().st_size < 30 * 2**20
    with np.load(shipped) as z:
        assert z["proj"].dtype == np.float16
    c, params, vocab, meta = net.load(shipped)
    assert c == net.MTPConfig.for_target(GEMMA3_270M, c.num_draft_tokens)
    assert len(vocab) == c.num_draft_tokens == len(set(vocab.tolist())) and 1 in vocab  # EOS can be drafted
    assert "report" in meta  # how it was trained: data, time, held-out accuracy


PROMPTS = ["def add(a, b):\n    return", "The three primary colours are", "Monday, Tuesday, Wednesday,"]


def test_greedy_speculative_with_the_shipped_drafter_equals_vanilla(gemma, gemma_tokenizer, shipped):
    from tinyspec.decoding import generate_ids
    from tinyspec.drafters.mtp import MTPDrafter
    from tinyspec.speculative import SpecStats, speculative_generate_ids

    drafter, stats = MTPDrafter.load(shipped), SpecStats()
    for text in PROMPTS:
        ids = gemma_tokenizer.encode(text)
        want = generate_ids(gemma, ids, 12)
        assert speculative_generate_ids(gemma, drafter, ids, 12, k=3, stats=stats) == want, text
    assert stats.accepted > 0  # and its drafts are often right


def test_shipped_drafter_drafts_what_it_was_trained_to(gemma, gemma_tokenizer, shipped):
    from tinyspec.drafters.mtp import MTPDrafter
    from tinyspec.mtp.report import teacher_forced_vs_loop

    r = teacher_forced_vs_loop(gemma, MTPDrafter.load(shipped), gemma_tokenizer.encode(PROMPTS[1]), 10)
    assert r["identical"] and r["loop_equals_teacher_forced"] == 1.0


def test_rejection_sampling_with_the_shipped_drafter_runs(gemma, gemma_tokenizer, shipped):
    """Rejection exactness is proven for any drafter in test_speculative.py; here: it runs, q is valid."""
    from tinyspec.drafters.mtp import MTPDrafter
    from tinyspec.sampling import SamplingParams
    from tinyspec.speculative import SpecStats, speculative_generate_ids

    stats, trace = SpecStats(), []
    params = SamplingParams(temperature=0.7, top_p=0.95, seed=1)
    out = speculative_generate_ids(gemma, MTPDrafter.load(shipped), gemma_tokenizer.encode(PROMPTS[2]), 12,
                                   params, verifier="rejection", k=3, stats=stats, trace=trace)
    assert len(out) == 12 and all(0 <= t < gemma.cfg.vocab_size for t in out)
    assert all(0 < q <= 1 for step in trace for q in step.q_draft)


# --- the whole training run, on a tiny target ----------------------------------------------------------------

class CharTokenizer:
    """A stand-in for the real tokenizer, for a 32-token target: each character -> 4 + ord(ch) % 28."""
    bos_id = 2

    def encode(self, text, add_bos=True):
        return ([2] if add_bos else []) + [4 + ord(ch) % 28 for ch in text]


def test_train_makes_a_drafter_and_resumes(tmp_path):
    from tinyspec.decoding import generate_ids
    from tinyspec.drafters.mtp import MTPDrafter
    from tinyspec.model import Model
    from tinyspec.mtp import train
    from tinyspec.speculative import speculative_generate_ids

    target = tiny_target(4, backend="numpy")
    tc = train.quick_config(minutes=0.1, seq_len=16, gen_batch=8, gen_sampled=2, gen_new=6, text_batch=2,
                            heldout_seqs=2, num_draft_tokens=16, max_code_files=2, eval_minutes=0.02,
                            checkpoint_minutes=0.02)
    work, out = tmp_path / "work", tmp_path / "drafter.npz"
    report = train.train(target, CharTokenizer(), tc, work, out, excluded_lines=[])
    assert report["data"]["train_seqs"] > 0 and report["steps"] > 0 and 0 <= report["final_eval"]["acc1"] <= 1
    jobs = report["data"]["jobs"]
    again = train.train(target, CharTokenizer(), tc, work, out, excluded_lines=[])  # resumes: no new data
    assert again["data"]["jobs"] == jobs and again["steps"] >= report["steps"]
    with pytest.raises(ValueError, match="other settings"):
        train.train(target, CharTokenizer(), train.quick_config(minutes=0.2), work, out, excluded_lines=[])
    drafter = MTPDrafter.load(out)
    assert len(drafter.vocab) == 16
    target = Model(target.cfg, target.weights, "numba")  # the batch-invariant kernels for the greedy check
    assert speculative_generate_ids(target, drafter, [2, 5, 6], 10, k=3) == generate_ids(target, [2, 5, 6], 10)
