"""The MTP drafter: every hand-written backward against finite differences (the whole training loss too, every
term, the fed-back state held constant), the head's vocabulary and the held-out metrics against direct counts,
the weights file, the drafter's contract with the target's cache, a whole training run on a tiny target (its
drafter is exact, an interrupted run resumes bitwise), and speculative decoding with the shipped drafter."""

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


def reference_sequence_loss(params, c, f, E, E_sub, tc, reg_norm, fed_back=None):
    """The training loss of one sequence written out row by row from its definition: draft step j (0-based) of
    the draft that starts after position t sits at position t + j, reads the token x_{t+j} (embedding scaled by
    sqrt(d)) and a hidden state (the target's h_{t-1} at j = 0, else step j-1's prediction for the same t), reads
    the cache rows < t, and is scored against the target's state h_{t+j} and its distribution softmax(E_sub
    h_{t+j}): step_weight_j * (mean over t of the cross-entropy + reg_weight / reg_norm * mean of |h' - h|^2).

    fed_back: {(j, t): hidden state} used as step j+1's input instead of this call's own step j output: the
    constants training treats them as. Returns (loss, this call's outputs {(j, t): predicted hidden state})."""
    S, d = len(f.tokens), c.hidden_size
    kv = [(f.k[b], f.v[b]) for b in range(c.num_blocks)]
    total, outputs = 0.0, {}
    for j, weight in enumerate(tc.step_weights[: tc.depth]):
        starts = range(1, S - j)  # the drafts with a step j inside the sequence
        ce = reg = 0.0
        for t in starts:
            h_in = f.h[t - 1] if j == 0 else (outputs if fed_back is None else fed_back)[(j - 1, t)]
            e = E[f.tokens[t + j]] * np.sqrt(d)
            out = net.step_forward(params, c, e[None], h_in[None], kv, [t + j], [t])[0][0]  # [d]
            z, zt = E_sub @ out, E_sub @ f.h[t + j]  # [N] the drafter's and the target's logits
            log_q = z - z.max() - np.log(np.sum(np.exp(z - z.max())))
            p = np.exp(zt - zt.max()) / np.sum(np.exp(zt - zt.max()))
            ce += -np.sum(p * log_q)
            reg += np.sum((out - f.h[t + j]) ** 2)
            outputs[(j, t)] = out
        total += weight * (ce + tc.reg_weight / reg_norm * reg) / len(starts)
    return total, outputs


def tiny_sequence(seed, S=6):
    """A random sequence's features for TINY (float64), and the embedding it is read with."""
    from tinyspec.mtp import data

    rng = np.random.default_rng(seed)
    d, hd = TINY.hidden_size, TINY.head_dim
    E = rand(rng, TINY.vocab_size, d)
    f = data.Features(rng.integers(0, TINY.vocab_size, S), rand(rng, S, d), None, rand(rng, 2, S, hd),
                      rand(rng, 2, S, hd), None)
    return f, E


def test_sequence_loss_is_the_reference_loss_and_its_gradient_is_exact():
    """Every loss term at TrainConfig's defaults (3 draft steps with their weights, the cross-entropy and the
    hidden-state regression): sequence_loss's value is the row-by-row reference's, and its gradients are the
    finite differences of the reference in which steps 1 and 2 read step 0's and step 1's predictions as
    constants (computed once at the current parameters: EAGLE-3's training-time test, no gradient through
    the fed-back state). The gradient that flows through the fed-back state is measurably different, so
    this test tells the two apart."""
    from tinyspec.mtp import train

    tc = train.TrainConfig()
    assert tc.depth == 3 and len(tc.step_weights) == 3 and min(tc.step_weights) > 0 and tc.reg_weight > 0
    params = net.random_params(TINY, seed=SEED + 10, dtype=np.float64)
    f, E = tiny_sequence(SEED + 9)
    vocab = np.array([1, 3, 4, 7, 9, 12, 18, 21, 25, 30])
    E_sub, reg_norm = E[vocab], 3.0
    grads = {}
    loss = train.sequence_loss(params, TINY, f, E, E_sub, tc, reg_norm, grads)
    want, fed_back = reference_sequence_loss(params, TINY, f, E, E_sub, tc, reg_norm)
    assert abs(loss - want) <= 1e-9 * abs(want), (loss, want)
    assert set(grads) == set(params)
    frozen = lambda: reference_sequence_loss(params, TINY, f, E, E_sub, tc, reg_norm, fed_back)[0]  # noqa: E731
    for name, value in params.items():  # a dozen entries of every parameter
        assert grads[name].shape == value.shape, name
        assert_close(grads[name], numeric_grad(frozen, value, entries=some_entries(value)), tol=1e-5)
    through = numeric_grad(lambda: reference_sequence_loss(params, TINY, f, E, E_sub, tc, reg_norm)[0],
                           params["proj"], entries=some_entries(params["proj"]))
    checked = ~np.isnan(through)
    assert np.abs(grads["proj"][checked] - through[checked]).max() > 1e-2 * np.abs(through[checked]).max()


def test_adam_minimizes_a_quadratic():
    from tinyspec.mtp.train import Adam

    params = {"w": np.array([3.0, -2.0], np.float32)}
    adam = Adam(params)
    for _ in range(300):
        adam.step(params, {"w": 2 * params["w"]}, lr=0.05)
    assert np.abs(params["w"]).max() < 0.05


def test_learning_rate_warms_up_then_decays_to_a_tenth():
    from tinyspec.mtp import train

    tc = train.TrainConfig(lr=1e-3)
    assert train.learning_rate(tc, 0.0, 0) == pytest.approx(1e-3 / 20)  # step 1 of 20 warm-up steps
    assert train.learning_rate(tc, 0.0, 19) == pytest.approx(1e-3)
    assert train.learning_rate(tc, 0.5, 100) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))  # cos(pi/2) = 0
    assert train.learning_rate(tc, 1.0, 100) == pytest.approx(1e-4)
    assert train.learning_rate(tc, 1.3, 100) == pytest.approx(1e-4)  # the last job may overshoot the budget


@pytest.mark.parametrize("share", [0.0, 0.4, 0.7, 1.0])
def test_self_jobs_give_the_asked_share_of_tokens(share):
    from tinyspec.mtp import train

    tc = train.TrainConfig(self_share=share)
    kinds = [train.job_kind(i, tc) for i in range(400)]
    tokens = {k: kinds.count(k) * n * tc.seq_len for k, n in (("self", tc.gen_batch), ("text", tc.text_batch))}
    assert tokens["self"] / (tokens["self"] + tokens["text"]) == pytest.approx(share, abs=0.01)
    mix = train.data_mix(tc, 400)
    assert (mix["self_sequences"], mix["text_sequences"]) == (kinds.count("self") * tc.gen_batch,
                                                              kinds.count("text") * tc.text_batch)


# --- the head's vocabulary --------------------------------------------------------------------------------------

def ranked(counts):  # token ids from most to least counted, ties: the lower id first (a plain sort)
    return sorted(range(len(counts)), key=lambda i: (-counts[i], i))


def test_choose_vocab_and_coverage_by_hand():
    from tinyspec.mtp.train import choose_vocab, coverage_curve

    counts = [0, 5, 3, 3, 1, 0]  # token 1 (EOS) most counted; 2 and 3 tie
    assert choose_vocab(counts, 2).tolist() == [1, 2]
    assert choose_vocab([9, 0, 5, 7], 2).tolist() == [0, 1]  # EOS kept though never counted
    labels = [1, 1, 2, 3, 4]
    assert coverage_curve(counts, labels, sizes=(1, 2, 3, 4, 6)) == {'1': 0.4, '2': 0.6, '3': 0.8, '4': 1.0, '6': 1.0}


@pytest.mark.parametrize("seed", range(4))
def test_choose_vocab_keeps_eos_and_the_most_counted(seed):
    from tinyspec.mtp.train import choose_vocab

    rng = np.random.default_rng(SEED + 20 + seed)
    V = 50
    counts = np.bincount(rng.zipf(1.5, 400) % V, minlength=V)  # heavy-tailed, with ties
    for n in (1, 2, 7, 20, V):
        chosen = choose_vocab(counts, n)
        assert chosen.tolist() == sorted(set(chosen.tolist())) and len(chosen) == n and 1 in chosen
        others = [a for a in chosen if a != 1]
        want = [i for i in ranked(counts) if i != 1][: len(others)]  # EOS takes one place if it is not ranked in
        assert sorted(others) == sorted(want), (n, chosen)


@pytest.mark.parametrize("seed", range(4))
def test_coverage_curve_is_the_share_of_labels_among_the_most_counted(seed):
    from tinyspec.mtp.train import coverage_curve

    rng = np.random.default_rng(SEED + 30 + seed)
    V = 40
    counts = np.bincount(rng.zipf(1.4, 300) % V, minlength=V)
    labels = rng.zipf(1.4, 120) % V  # the held-out choices: like the counts, not the same draws
    sizes = (1, 3, 10, 25, V, 2 * V)
    curve = coverage_curve(counts, labels, sizes)
    assert list(curve) == [str(n) for n in sizes]  # JSON's keys: the same in a fresh and a resumed report
    for n in sizes:
        top = set(ranked(counts)[:n])
        assert curve[str(n)] == pytest.approx(np.mean([label in top for label in labels]), abs=5e-5)  # 4 decimals
    assert list(curve.values()) == sorted(curve.values()) and curve[str(V)] == 1.0


# --- the held-out metrics -----------------------------------------------------------------------------------------

def bigram_drafter(c, W):
    """Parameters that make the drafter a bigram table: both blocks add nothing (their post-norm scales are 0),
    the hidden-state input is ignored (norm_h = 0) and proj passes norm(e) through, so the output is a positive
    multiple of the token's embedding and the draft after x is the head row W[i] with the largest W[i] . E[x]."""
    d = c.hidden_size
    p = net.random_params(c, seed=SEED + 40)
    p["norm_e"][:], p["norm_h"][:], p["norm"][:] = 1.0, 0.0, 1.0
    p["proj"] = np.concatenate([np.eye(d), np.zeros((d, d))], axis=1).astype(np.float32)
    for b in range(c.num_blocks):
        p[f"blocks.{b}.post_attention_layernorm"][:] = 0.0
        p[f"blocks.{b}.post_feedforward_layernorm"][:] = 0.0
    return p


def chain_reference(tokens, labels, draft, depth):
    """The chain metrics from their definition, one draft at a time: the draft started after position t
    (1 <= t <= S-2) is judged at step 1 against labels[t]; step j+1 only where drafts 1..j were right and the
    text went on with them (tokens[t+j] == labels[t+j-1], inside the sequence), after the token labels[t+j-1]."""
    S, hits, counts = len(tokens), [0] * depth, [0] * depth
    for t in range(1, S - 1):
        counts[0] += 1
        if draft(tokens[t]) != labels[t]:
            continue
        hits[0] += 1
        for j in range(1, depth):
            if not (t + j < S - 1 and tokens[t + j] == labels[t + j - 1]):
                break
            counts[j] += 1
            if draft(labels[t + j - 1]) != labels[t + j]:
                break
            hits[j] += 1
    return hits, counts


def test_evaluate_a_bigram_drafter_by_hand():
    from tinyspec.mtp import data, train

    rng = np.random.default_rng(SEED + 41)
    c, S = TINY, 12
    E = rand(rng, c.vocab_size, c.hidden_size).astype(np.float32)
    vocab = np.array([1, 3, 4, 7, 9, 12, 18, 21, 25, 30])
    W = rand(rng, len(vocab), c.hidden_size).astype(np.float32)  # the head's rows (any matrix will do)
    scores = E @ W.T  # [V, N]  the head's logits after each token, up to a positive factor
    order = np.argsort(-scores, axis=1)
    gap = np.take_along_axis(scores, order[:, :5], axis=1)
    assert np.min(-np.diff(gap, axis=1)) > 1e-3  # no near-ties among the 5 best: the ranking is unambiguous
    draft = lambda x: int(vocab[order[x, 0]])  # noqa: E731
    best4 = lambda x: set(vocab[order[x, :4]].tolist())  # noqa: E731
    params = bigram_drafter(c, W)

    def features(tokens, labels):
        k, v = rand(rng, 2, S, c.head_dim), rand(rng, 2, S, c.head_dim)
        return data.Features(np.array(tokens), rand(rng, S, c.hidden_size), None, k, v, np.array(labels))

    # 1. the text is the drafter's own chain and the labels are its drafts: every metric is 1
    chain = [2]
    while len(chain) < S:
        chain.append(draft(chain[-1]))
    right = features(chain, [draft(x) for x in chain])
    ev = train.evaluate(params, c, [right], E, W, vocab)
    assert ev == {"acc1": 1.0, "top4": 1.0, "coverage": 1.0, "rows": S - 2, "acc2": 1.0, "acc3": 1.0}

    # 2. the labels are always the drafter's second choice: no first draft is right, all are in its top 4
    second = features(chain, [int(vocab[order[x, 1]]) for x in chain])
    ev = train.evaluate(params, c, [second], E, W, vocab)
    assert (ev["acc1"], ev["top4"], ev["coverage"]) == (0.0, 1.0, 1.0)

    # 3. random text, labels mixing the drafts, other tokens of the subset and tokens outside it; two sequences
    outside = np.setdiff1d(np.arange(c.vocab_size), vocab)
    seqs = []
    for _ in range(2):
        tokens, labels = [2], []
        for u, w in rng.random((S, 2)):
            labels.append(draft(tokens[-1]) if u < 0.6 else int(rng.choice(vocab if u < 0.8 else outside)))
            tokens.append(labels[-1] if w < 0.6 else int(rng.choice(vocab)))  # the text often goes on with it
        seqs.append(features(tokens[:S], labels))
    ev = train.evaluate(params, c, seqs, E, W, vocab)
    hits, counts = np.zeros(3), np.zeros(3)
    for f in seqs:
        h, n = chain_reference(f.tokens.tolist(), f.argmax.tolist(), draft, 3)
        hits, counts = hits + h, counts + n
    positions = [(f, t) for f in seqs for t in range(1, S - 1)]
    assert ev["rows"] == len(positions) == counts[0] and counts[2] > 0 and 0 < hits[1] < counts[1]  # all cases met
    assert ev["acc1"] == pytest.approx(hits[0] / counts[0])
    assert ev["acc2"] == pytest.approx(hits[1] / counts[1])
    assert ev["acc3"] == pytest.approx(hits[2] / max(counts[2], 1))
    assert ev["top4"] == pytest.approx(np.mean([f.argmax[t] in best4(f.tokens[t]) for f, t in positions]))
    assert ev["coverage"] == pytest.approx(np.mean([f.argmax[t] in vocab for f, t in positions]))


@pytest.mark.parametrize("seed", range(3))
def test_evaluate_metrics_are_ordered(seed):
    """For any drafter: acc1 <= top4 (the first draft is among the best 4) <= coverage (those 4 are in the subset)."""
    from tinyspec.mtp import data, train

    rng = np.random.default_rng(SEED + 50 + seed)
    c, S = TINY, 10
    params = net.random_params(c, seed=SEED + 51 + seed)
    E = rand(rng, c.vocab_size, c.hidden_size).astype(np.float32)
    vocab = np.sort(rng.choice(c.vocab_size, c.num_draft_tokens, replace=False))
    feats = [data.Features(rng.integers(0, c.vocab_size, S), rand(rng, S, c.hidden_size), None,
                           rand(rng, 2, S, c.head_dim), rand(rng, 2, S, c.head_dim), rng.integers(0, c.vocab_size, S))
             for _ in range(3)]
    ev = train.evaluate(params, c, feats, E, E[vocab], vocab)
    assert 0 <= ev["acc1"] <= ev["top4"] <= ev["coverage"] <= 1 and ev["rows"] == 3 * (S - 2)
    assert all(0 <= ev[k] <= 1 for k in ("acc2", "acc3"))


# --- the weights file ---------------------------------------------------------------------------------------------

def test_npz_round_trip_keeps_float32_checkpoints(tmp_path):
    params = net.random_params(TINY, seed=SEED + 11)
    extra = {"adam_m.proj": np.ones((3, 2), np.float32)}
    path = net.save(tmp_path / "d.npz", TINY, params, vocab=np.arange(10), meta={"note": "x"}, dtype=np.float32,
                    extra=extra)
    c, loaded, vocab, meta = net.load(path)
    assert c == TINY and meta == {"note": "x"} and vocab.tolist() == list(range(10))
    for k in params:
        assert loaded[k].dtype == np.float32 and np.array_equal(loaded[k], params[k])
    with np.load(path) as z:
        assert np.array_equal(z["adam_m.proj"], extra["adam_m.proj"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npz"]  # no temporary file left


def test_safetensors_round_trip_with_its_record(tmp_path):
    import json

    from safetensors import safe_open

    params = net.random_params(TINY, seed=SEED + 12)
    vocab = np.array([1, 3, 4, 7, 9, 12, 18, 21, 25, 30])
    meta = {"report": {"command": "tinyspec train-mtp --tokens 5", "tokens": 5, "curve": [{"tokens": 0}]}}
    path = net.save(tmp_path / "d.safetensors", TINY, params, vocab, meta=meta)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.json", "d.safetensors"]  # no temporary file left
    with safe_open(str(path), framework="numpy") as z:
        assert set(z.keys()) == set(params) | {"vocab"}
        assert all(z.get_tensor(k).dtype == np.float16 for k in params)
        assert np.issubdtype(z.get_tensor("vocab").dtype, np.integer)
    c, loaded, got_vocab, got_meta = net.load(path)
    assert c == TINY and got_meta == meta
    assert got_vocab.dtype == np.int64 and got_vocab.tolist() == vocab.tolist()
    for k in params:
        assert loaded[k].dtype == np.float32
        assert np.array_equal(loaded[k], params[k].astype(np.float16).astype(np.float32)), k
    record = json.loads((tmp_path / "d.json").read_text())  # the readable record beside the weights
    assert net.MTPConfig.from_dict(record.pop("config")) == TINY and record == meta
    with pytest.raises(ValueError, match="npz"):  # optimizer state belongs in a checkpoint
        net.save(tmp_path / "e.safetensors", TINY, params, vocab, extra={"adam_m.proj": params["proj"]})


@pytest.mark.parametrize("suffix, damage", [(suffix, damage) for suffix in (".safetensors", ".npz")
                                            for damage in ("truncated", "cut short", "garbage", "empty")])
def test_a_damaged_weights_file_is_named_in_a_value_error(tmp_path, suffix, damage):
    import re

    good = net.save(tmp_path / f"good{suffix}", TINY, net.random_params(TINY), np.arange(10)).read_bytes()
    bad = tmp_path / f"bad{suffix}"
    bad.write_bytes({"truncated": good[: len(good) // 2], "cut short": good[:-7], "garbage": b"not weights" * 20,
                     "empty": b""}[damage])
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        net.load(bad)


def test_a_missing_weights_file_says_how_to_make_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-mtp"):
        net.load(tmp_path / "nothing.safetensors")


def test_describe_training_prints_new_and_old_records():
    import doctest

    from tinyspec.mtp import report

    assert doctest.testmod(report).failed == 0
    ev = {"acc1": 0.5, "top4": 0.75, "coverage": 0.9, "rows": 8, "acc2": 0.25, "acc3": 0.125}
    new = {"command": "tinyspec train-mtp --tokens 10", "threads": 1, "tokens": 12, "steps": 3, "jobs": 2,
           "minutes": 0.1, "data": {"text_sequences": 4}, "coverage_curve": {"2048": 0.625},
           "init_eval": {"text": ev, "self": ev, "score": 1.0}, "final_eval": {"text": ev, "self": ev, "score": 1.0},
           "curve": [{"tokens": 0, "self_acc1": 0.5, "self_top4": 0.75, "text_acc1": 0.5}],
           "train_config": {}, "mtp_config": {}}
    text = "\n".join(report.describe_training(new))
    for piece in ("tinyspec train-mtp --tokens 10", "1 thread", "12 training tokens", "text_sequences 4",
                  "2,048 tokens 0.625", "saved, text: acc1 0.500", "saved, self:", "acc3 0.125",
                  "self_top4 0.750", "also recorded: train_config, mtp_config"):
        assert piece in text, piece
    old = {"data": {"train_tokens": 100}, "init_eval": {"acc1": 0.25, "acc2": 0.125}, "final_eval": ev,
           "steps": 5, "minutes": 1.5, "train_config": {"minutes": 2.0}}  # a drafter of the minutes-budget trainer
    text = "\n".join(report.describe_training(old))
    for piece in ("5 Adam steps, 1.5 min", "train_tokens 100", "after the fit, held-out: acc1 0.250",
                  "saved, held-out: acc1 0.500"):
        assert piece in text, piece
    assert report.describe_training({}) == []


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
    if shipped.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(shipped), framework="numpy") as z:
            assert z.get_tensor("proj").dtype == np.float16
    else:  # the first shipped drafter, from before safetensors
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


@pytest.mark.parametrize("name", ["mtp", "auto"])
def test_trees_of_the_shipped_drafter_and_auto_equal_vanilla(gemma, gemma_tokenizer, shipped, name):
    """Trees on the real weights: greedy bitwise, and the coupled walk token for token (the same seed, vanilla's
    very text), with the MTP drafter alone and merged with prompt lookup (auto), budget 8, adaptive."""
    from tinyspec.decoding import generate_ids
    from tinyspec.drafters import make_drafter
    from tinyspec.sampling import SamplingParams
    from tinyspec.speculative import SpecStats, speculative_generate_ids

    stats = SpecStats()
    coupled = SamplingParams(temperature=0.8, seed=3, coupled=True)
    for text in PROMPTS[1:] + ["a b c d e f a b c d e f a b"]:
        ids = gemma_tokenizer.encode(text)
        drafter = make_drafter(f"{name}:{shipped}")
        assert speculative_generate_ids(gemma, drafter, ids, 12, k=4, tree=8, adaptive=True, stats=stats) == \
            generate_ids(gemma, ids, 12), text
        assert speculative_generate_ids(gemma, drafter, ids, 8, coupled, verifier="coupled", k=4, tree=8) == \
            generate_ids(gemma, ids, 8, coupled), text
    assert stats.accepted > 0


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


TINY_RUN = dict(seq_len=16, gen_batch=8, text_batch=4, heldout_text=2, heldout_self=2, num_draft_tokens=16,
                max_code_files=3, vocab_sample_seqs=4, eval_every=1000)  # quick_config's overrides, a 32-token target
TINY_TOKENS = 2500


class Interrupted(Exception):
    pass


def tiny_train(work, out, tokens=TINY_TOKENS, stop_at_eval=None, **overrides):
    """train.train on the tiny target (the NumPy backend) with CharTokenizer; stop_at_eval=n raises from the
    progress callback at the n-th "eval" phase (before that evaluation's checkpoint is written), as a Ctrl-C
    there would. Returns (report, the phases the progress callback saw, as (phase, text))."""
    from tinyspec.mtp import train

    seen, evals = [], []

    def progress(phase, fraction, text, force=False):
        seen.append((phase, text))
        if phase == "eval":
            evals.append(text)
            if len(evals) == stop_at_eval:
                raise Interrupted(text)

    tc = train.quick_config(tokens=tokens, **{**TINY_RUN, **overrides})
    report = train.train(tiny_target(4, backend="numpy"), CharTokenizer(), tc, work, out, progress=progress,
                         excluded_lines=[], command=f"tiny run of {tokens} tokens")
    return report, seen


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One uninterrupted training run: (work dir, drafter path, report, phases seen)."""
    directory = tmp_path_factory.mktemp("tiny-run")
    work, out = directory / "work", directory / "drafter.safetensors"
    report, seen = tiny_train(work, out)
    return work, out, report, seen


def test_train_makes_a_drafter_whose_greedy_output_is_vanilla(tiny_run):
    from tinyspec.decoding import generate_ids
    from tinyspec.drafters.mtp import MTPDrafter
    from tinyspec.model import Model
    from tinyspec.speculative import SpecStats, speculative_generate_ids

    _, out, _, _ = tiny_run
    drafter = MTPDrafter.load(out)
    assert len(drafter.vocab) == TINY_RUN["num_draft_tokens"] and 1 in drafter.vocab
    target = tiny_target(4)  # the batch-invariant kernels for the greedy check
    stats = SpecStats()
    for prompt in ([2, 5, 6], [2, 9, 9, 9, 14, 20]):
        want = generate_ids(target, prompt, 12)
        assert speculative_generate_ids(target, drafter, prompt, 12, k=3, stats=stats) == want, prompt
    assert stats.drafted > 0


def test_train_report_and_record(tiny_run):
    import json

    work, out, report, seen = tiny_run
    assert report["command"] == f"tiny run of {TINY_TOKENS} tokens" and report["threads"] >= 1
    largest_job = max(TINY_RUN["gen_batch"], TINY_RUN["text_batch"]) * (TINY_RUN["seq_len"] - 1)
    assert TINY_TOKENS <= report["tokens"] < TINY_TOKENS + largest_job  # the budget, and at most one job more
    assert report["steps"] > 0 and report["data"]["text_sequences"] > 0 and report["data"]["self_sequences"] > 0
    curve = [point["tokens"] for point in report["curve"]]
    assert curve[0] == 0 and curve == sorted(set(curve)) and curve[-1] == report["tokens"]
    assert len(curve) == 2 + report["tokens"] // TINY_RUN["eval_every"]  # the start, every 1000 tokens, the end
    sizes = [int(n) for n in report["coverage_curve"]]
    shares = list(report["coverage_curve"].values())
    assert sizes == sorted(sizes) and shares == sorted(shares) and all(0 <= s <= 1 for s in shares)
    for name in ("text", "self"):
        ev = report["final_eval"][name]
        assert 0 <= ev["acc1"] <= ev["top4"] <= ev["coverage"] <= 1 and ev["rows"] > 0
    assert report["final_eval"]["text"]["rows"] == TINY_RUN["heldout_text"] * (TINY_RUN["seq_len"] - 2)
    assert [phase for phase, _ in seen if phase in ("vocab", "fit")][:1] == ["vocab"] and seen[-1][0] == "done"
    record = json.loads(out.with_suffix(".json").read_text())  # the record beside the weights
    as_json = json.loads(json.dumps(report))
    assert record["report"] == as_json and net.load(out)[3]["report"] == as_json


@pytest.mark.parametrize("stop_at_eval", [1, 2])
def test_an_interrupted_run_resumes_to_the_same_drafter(tiny_run, tmp_path, stop_at_eval):
    """Interrupted at the first evaluation (before its checkpoint: the resumed run starts over from the fit's
    checkpoint) or at the second (it resumes from the first evaluation's checkpoint: parameters, Adam's state,
    the best parameters, the data position), the same command finishes with bitwise the same drafter."""
    _, out, report, _ = tiny_run
    work, mine = tmp_path / "work", tmp_path / "drafter.safetensors"
    with pytest.raises(Interrupted):
        tiny_train(work, mine, stop_at_eval=stop_at_eval)
    assert not mine.exists()
    resumed, seen = tiny_train(work, mine)
    assert not any(phase in ("vocab", "fit") for phase, _ in seen)  # the setup and the fit are not redone
    if stop_at_eval == 2:
        first_eval = report["curve"][1]["tokens"]
        first_trained = int(next(text for phase, text in seen if phase == "train").split()[0].replace(",", ""))
        assert first_trained > first_eval  # it went on from the first evaluation's checkpoint
    c, params, vocab, _ = net.load(out)
    c2, params2, vocab2, _ = net.load(mine)
    assert c == c2 and np.array_equal(vocab, vocab2) and set(params) == set(params2)
    for k in params:
        assert np.array_equal(params[k], params2[k]), k
    for key in ("tokens", "steps", "jobs", "curve", "final_eval", "init_eval", "data"):
        assert json_equal(resumed[key], report[key]), key


def json_equal(a, b):
    import json

    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def test_resuming_with_other_settings_is_refused(tiny_run):
    work, out, _, _ = tiny_run
    state = (work / "state.json").read_bytes()
    with pytest.raises(ValueError, match="other settings"):
        tiny_train(work, out.with_name("other.safetensors"), tokens=TINY_TOKENS + 1)
    with pytest.raises(ValueError, match="other settings"):
        tiny_train(work, out.with_name("other.safetensors"), num_draft_tokens=12)
    assert (work / "state.json").read_bytes() == state and not out.with_name("other.safetensors").exists()
