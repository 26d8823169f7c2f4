"""Training the MTP drafter from scratch in NumPy, streamed: `tinyspec train-mtp --tokens N`.

# 1. Plan        a fixed, seeded order of data jobs over offline text (data.py): corpus chunks (Python's docs and
#                standard-library source) and text the target writes itself, bench prompts excluded, one
#                document in ten held out
# 2. Vocabulary  the head's N tokens: those the target chooses most often (its greedy choice, full head, on a
#                sample of the training text); the coverage of every head size is reported
# 3. Fit         the input projection by least squares: [norm(E[x_t]), norm(h_{t-1})] -> the residual stream
#                entering the first copied block at t, so the copied blocks start from the input they know
# 4. Stream      job after job: the target computes the features of a batch of sequences (a batched prefill of
#                corpus text, or its own text written in one batched forward per token), Adam trains on them
#                and they are discarded: no feature store, so the token budget is limited by time only
# 5. Ship        the best checkpoint by held-out agreement, float16 safetensors, with a JSON record beside it
#
# Train as it drafts (EAGLE-3's "training-time test"): at every position t the drafter is unrolled over
# `depth` draft steps; step j reads the token x_{t+j} and the hidden state its own step j-1 predicted (the
# target's h_{t-1} at step 1), sees only the cache rows before t (nothing enters the target's cache while it
# drafts), and is scored against the target's distribution at t+j over the head's vocabulary (soft
# cross-entropy) plus a regression of the target's hidden state (EAGLE's second loss).

The budget is a number of training tokens (positions trained on), not minutes: the same command gives the same
drafter for a given seed and thread count. It checkpoints between jobs and resumes where it stopped: run the
same command again after an interruption.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import data, net
from .layers import linear_forward, log_softmax, mse, rms_norm_forward, soft_cross_entropy


@dataclass(frozen=True)
class TrainConfig:
    tokens: int = 1_000_000  # the budget: training positions streamed through the drafter
    seq_len: int = 256  # tokens per training sequence (BOS first)
    num_draft_tokens: int = 16384  # N: the head's vocabulary subset
    depth: int = 3  # draft steps unrolled per position (the tree's depth in drafting)
    step_weights: tuple = (1.0, 0.7, 0.5)  # loss weight of each draft step
    self_share: float = 0.25  # share of the training tokens the target writes itself
    text_batch: int = 4  # corpus sequences per job (one batched prefill)
    gen_batch: int = 32  # sequences the target writes per job (one batched forward per token)
    gen_sampled: int = 16  # tokens of a self-written sequence sampled at temperature 1 (its own opening) ...
    #                        ... the rest are its greedy choice among the head's tokens
    vocab_sample_seqs: int = 48  # training sequences whose full-head greedy choices pick the vocabulary
    fit_seqs: int = 64  # training sequences the projection is fitted on (least squares over their positions)
    heldout_text: int = 12  # held-out corpus sequences
    heldout_self: int = 8  # held-out sequences the target writes (full-head greedy: drafting's own text)
    max_code_files: int = 1000  # standard-library modules read (data.documents' order)
    lr: float = 3e-4  # Adam's peak learning rate (cosine decay to a tenth over the budget)
    betas: tuple = (0.9, 0.99)
    clip: float = 1.0  # the global gradient norm is clipped to this
    reg_weight: float = 1.0  # weight of the hidden-state regression (relative squared error)
    batch_seqs: int = 2  # sequences per Adam step
    eval_every: int = 50_000  # training tokens between held-out evaluations (and checkpoints)
    seed: int = 0

    def to_dict(self):
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def quick_config(tokens: int = 20_000, **overrides) -> TrainConfig:
    """Small everything (short sequences, a 2048-token head): for lessons and smoke tests. The drafter it makes
    is weak; the shipped one used TrainConfig() (the record beside the weights says exactly)."""
    small = dict(tokens=tokens, seq_len=64, gen_batch=8, gen_sampled=8, text_batch=4, heldout_text=4,
                 heldout_self=4, num_draft_tokens=2048, max_code_files=20, vocab_sample_seqs=8, fit_seqs=8,
                 eval_every=max(tokens // 4, 1))
    small.update(overrides)
    return TrainConfig(**small)


# --- a progress line ---------------------------------------------------------------------------------------

class Progress:
    """One line on stderr, redrawn in place on a terminal (a new line every 30 s otherwise)."""

    def __init__(self, stream=sys.stderr):
        self.stream, self.tty, self.last = stream, stream.isatty(), 0.0

    def __call__(self, phase: str, fraction: float, text: str, force: bool = False):
        now = time.time()
        if not self.tty and not force and now - self.last < 30:
            return
        self.last = now
        bar = "#" * int(20 * min(max(fraction, 0.0), 1.0))
        line = f"[{phase:5}] [{bar:20}] {100 * fraction:5.1f}%  {text}"
        self.stream.write(("\r" + line[:150].ljust(150)) if self.tty else line + "\n")
        self.stream.flush()

    def done(self):
        if self.tty:
            self.stream.write("\n")


def eta(seconds: float) -> str:
    m = int(seconds // 60)
    return f"{m // 60}h{m % 60:02d}m" if m >= 60 else f"{m}m{int(seconds % 60):02d}s"


# --- 1. the plan ---------------------------------------------------------------------------------------------

def plan(tokenizer, tc: TrainConfig, excluded_lines=()):
    """(held-out corpus sequences, training corpus sequences in their seeded order), each (name, ids [seq_len]).
    Training alternates prose (docs) and code while both last, then code."""
    rng = np.random.default_rng(tc.seed)
    train = {"docs": [], "code": []}
    heldout = []
    for name, kind, is_held, ids in data.chunks(tokenizer, tc.seq_len, excluded_lines, tc.max_code_files):
        (heldout if is_held else train[kind]).append((name, ids))
    for kind in train:
        train[kind] = [train[kind][i] for i in rng.permutation(len(train[kind]))]
    heldout = [heldout[i] for i in rng.permutation(len(heldout))][: tc.heldout_text]
    docs, code = train["docs"], train["code"]
    n = min(len(docs), len(code))
    text = [c for pair in zip(docs[:n], code[:n]) for c in pair] + docs[n:] + code[n:]
    return heldout, text


def job_kind(i: int, tc: TrainConfig) -> str:
    """Job i is "self" (the target writes) or "text" (corpus): self jobs come as evenly as self_share asks."""
    per_self, per_text = tc.gen_batch * tc.seq_len, tc.text_batch * tc.seq_len  # tokens per job
    if tc.self_share <= 0:
        return "text"
    if tc.self_share >= 1:
        return "self"
    # after i jobs, self jobs so far = floor(i * r): r = self jobs per job giving the asked token share
    r = tc.self_share * per_text / (tc.self_share * per_text + (1 - tc.self_share) * per_self)
    return "self" if int((i + 1) * r) > int(i * r) else "text"


def seeds_for(job: int, tc: TrainConfig, text, bos: int):
    """A self job's seeds: BOS alone (5 in 8: the target samples its own opening) or a 16-48 token prefix of a
    training sequence taken from the end of the list (corpus jobs start at its front)."""
    rng = np.random.default_rng([tc.seed, 7, job])
    seeds = []
    for b in range(tc.gen_batch):
        if b % 8 < 5 or not text:
            seeds.append(np.array([bos]))
        else:
            ids = text[-1 - int(rng.integers(len(text)))][1]
            seeds.append(ids[: int(rng.integers(16, 49))])
    return seeds


# --- 2. vocabulary -------------------------------------------------------------------------------------------

def choose_vocab(counts, n: int, always=(1,)):  # [V] counts -> [n] ids
    """The n tokens chosen most often (ties: the lower id). EOS is always kept."""
    counts = np.array(counts, dtype=np.int64)
    counts[list(always)] = counts.max() + 1
    return np.sort(np.argsort(-counts, kind="stable")[:n])


def coverage_curve(counts, labels, sizes=(2048, 4096, 8192, 16384, 32768, 65536)) -> dict:
    """For each head size n: the share of `labels` (the target's greedy choices on held-out text) inside the
    n tokens `counts` ranks first."""
    order = np.argsort(-np.asarray(counts), kind="stable")
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    labels = np.asarray(labels)
    return {str(n): round(float(np.mean(rank[labels] < n)), 4) for n in sizes}  # str keys: the same after JSON


# --- 3. fit the input projection -----------------------------------------------------------------------------

def fit_projection(params, c: net.MTPConfig, feats, E, max_rows: int = 40_000, ridge: float = 1e-2):
    """proj = argmin ||U proj^T - R||^2 + ridge ||proj||^2, U = [norm(E[x_t] sqrt d), norm(h_{t-1})], R = r_t."""
    d = c.hidden_size
    scale = np.float32(np.sqrt(d))
    A = np.zeros((2 * d, 2 * d))
    Bm = np.zeros((2 * d, d))
    rows = 0
    for f in feats:
        e = E[f.tokens[1:]] * scale  # [S-1, d]
        ue = rms_norm_forward(e, params["norm_e"], c.rms_norm_eps)[0]
        uh = rms_norm_forward(f.h[:-1].astype(np.float32), params["norm_h"], c.rms_norm_eps)[0]
        U = np.concatenate([ue, uh], axis=-1).astype(np.float64)  # [S-1, 2d]
        A += U.T @ U
        Bm += U.T @ f.r[1:].astype(np.float64)
        rows += len(U)
        if rows >= max_rows:
            break
    A += ridge * rows * np.eye(2 * d) / (2 * d)
    params["proj"] = np.linalg.solve(A, Bm).T.astype(np.float32)  # [d, 2d]
    return rows


# --- 4. the loss, unrolled as drafting runs ------------------------------------------------------------------

def target_distribution(h, E_sub):  # [M, d], [N, d] -> [M, N]
    """The target's own distribution restricted to (and renormalized on) the subset: its logits there are
    exactly h E_sub^T, because its head is the same tied embedding."""
    return np.exp(log_softmax(h @ E_sub.T))


def sequence_loss(params, c: net.MTPConfig, f, E, E_sub, tc: TrainConfig, reg_norm: float, grads: dict | None,
                  p=None):
    """The loss of one sequence (draft steps 1..depth at every position) and, if grads is a dict, its gradients
    added in. p: the target's distribution over the subset at positions 1..S-1 (computed if None).

    Step j (0-based) for the draft that starts after position t: the query sits at t + j and reads the token
    x_{t+j}; its hidden-state input is the target's h_{t-1} at j = 0, else step j-1's own prediction for the
    same t (a constant for the gradient, as in EAGLE-3's training-time test); it reads the cache rows < t only,
    and is scored against the target's state and distribution at t + j."""
    S, dt = len(f.tokens), params["proj"].dtype  # float32 in training, float64 in the gradient check
    tokens = f.tokens.astype(np.int64)
    h = f.h.astype(dt)  # [S, d]
    kv = [(f.k[b].astype(dt), f.v[b].astype(dt)) for b in range(c.num_blocks)]
    e = (E[tokens] * np.float32(np.sqrt(c.hidden_size))).astype(dt)  # [S, d]
    p = target_distribution(h[1:], E_sub) if p is None else p  # [S-1, N]  p[t-1] is the target's distribution at t
    total, h_in = 0.0, h[:-1]  # step 0's hidden input for t = 1..S-1
    for j, weight in enumerate(tc.step_weights[: tc.depth]):
        t = np.arange(1, S - j)  # positions whose draft has a step j inside the sequence
        if len(t) == 0 or weight == 0:
            break
        hp, tape = net.step_forward(params, c, e[t + j], h_in[: len(t)], kv, t + j, t)  # [R, d]
        logits, _ = linear_forward(hp, E_sub)  # [R, N]
        ce, dlogits = soft_cross_entropy(logits, p[t + j - 1])
        reg, dh_reg = mse(hp, h[t + j], tc.reg_weight / reg_norm)
        total += weight * (ce + reg)
        if grads is not None:
            dh = weight * (dlogits @ E_sub + dh_reg)  # the head is the target's frozen embedding: no dW
            g, _ = net.step_backward(dh.astype(dt), tape, c)
            for k, v in g.items():
                grads[k] = grads[k] + v if k in grads else v
        h_in = hp  # the next step reads this step's prediction (no gradient flows back through it)
    return total


def first_drafts(params, c: net.MTPConfig, f, E, E_sub, vocab, t):  # [R] positions -> ([R] ids, [R, d], [R, N])
    """Teacher forcing: the greedy first draft the drafter makes after position t of a sequence, from the
    features the target computed over it (input x_t and h_{t-1}, cache rows < t): exactly what it proposes in
    the speculative loop when the context ends at position t (tests and lesson 10 check this)."""
    t = np.asarray(t)
    kv = [(f.k[b].astype(np.float32), f.v[b].astype(np.float32)) for b in range(c.num_blocks)]
    e = E[f.tokens.astype(np.int64)[t]] * np.float32(np.sqrt(c.hidden_size))  # [R, d]
    h1, _ = net.step_forward(params, c, e, f.h[t - 1].astype(np.float32), kv, t, t)  # [R, d]
    logits = h1 @ E_sub.T
    return vocab[np.argmax(logits, axis=-1)], h1, logits


def evaluate(params, c: net.MTPConfig, feats, E, E_sub, vocab, depth: int = 3) -> dict:
    """Agreement with the target's greedy choice on held-out sequences: acc1 (first draft), top4 (the target's
    choice among the first step's 4 best: a 4-wide tree's first level), acc2, acc3 (draft j, given drafts
    1..j-1 were right: a chain's per-step acceptance) and the subset's coverage of the target's choices."""
    hits, counts = np.zeros(depth), np.zeros(depth)
    top4 = covered = 0
    in_subset = np.zeros(c.vocab_size, bool)
    in_subset[vocab] = True
    scale = np.float32(np.sqrt(c.hidden_size))
    for f in feats:
        S = len(f.tokens)
        tokens, target = f.tokens.astype(np.int64), f.argmax.astype(np.int64)
        kv = [(f.k[b].astype(np.float32), f.v[b].astype(np.float32)) for b in range(c.num_blocks)]
        t = np.arange(1, S - 1)
        d, h, logits = first_drafts(params, c, f, E, E_sub, vocab, t)  # [S-2]
        best4 = vocab[np.argpartition(-logits, 3, axis=-1)[:, :4]]  # [S-2, 4]
        top4 += int(np.sum(np.any(best4 == target[t][:, None], axis=-1)))
        covered += int(in_subset[target[t]].sum())
        ok = d == target[t]
        hits[0], counts[0] = hits[0] + ok.sum(), counts[0] + len(t)
        for j in range(1, depth):
            # step j is judged where drafts 1..j were right and the text continued with them
            follow = ok & (t + j < S - 1)
            follow[follow] &= tokens[t[follow] + j] == target[t[follow] + j - 1]
            if not follow.any():
                break
            r = t[follow]
            h, _ = net.step_forward(params, c, E[target[r + j - 1]] * scale, h[follow],
                                    kv, r + j, r)
            d = vocab[np.argmax(h @ E_sub.T, axis=-1)]
            ok_j = d == target[r + j]
            hits[j], counts[j] = hits[j] + ok_j.sum(), counts[j] + len(r)
            t, ok = r, ok_j  # the next step continues from these rows
    n = max(counts[0], 1)
    out = {"acc1": float(hits[0] / n), "top4": float(top4 / n), "coverage": float(covered / n), "rows": int(counts[0])}
    for j in range(1, depth):
        out[f"acc{j + 1}"] = float(hits[j] / max(counts[j], 1))
    return out


class Adam:
    """Adam (Kingma & Ba 2015): m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  w -= lr mhat / (sqrt(vhat) + eps)."""

    def __init__(self, params, betas=(0.9, 0.99), eps=1e-8):
        self.b1, self.b2, self.eps, self.t = betas[0], betas[1], eps, 0
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}

    def step(self, params, grads, lr):
        self.t += 1
        c1, c2 = 1 - self.b1 ** self.t, 1 - self.b2 ** self.t
        for k, g in grads.items():
            self.m[k] = self.b1 * self.m[k] + (1 - self.b1) * g
            self.v[k] = self.b2 * self.v[k] + (1 - self.b2) * g * g
            params[k] -= (lr * (self.m[k] / c1) / (np.sqrt(self.v[k] / c2) + self.eps)).astype(np.float32)


def learning_rate(tc: TrainConfig, fraction: float, step: int) -> float:
    """Linear warm-up over 20 steps, then cosine decay to lr/10 as the token budget runs out."""
    warm = min(1.0, (step + 1) / 20)
    return tc.lr * warm * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * min(fraction, 1.0))))


# --- the target's features, made on the fly ------------------------------------------------------------------

def text_features(model, seqs, layers, with_argmax: bool = False):
    """Features of equal-length corpus sequences [(name, ids)], from one batched prefill (data.prefill_batch)."""
    return data.prefill_batch(model, np.stack([ids for _, ids in seqs]), layers, with_argmax)


def own_text_features(model, seeds, length: int, layers, E_sub, vocab, rng, sampled: int):
    """The target writes `length`-token sequences from `seeds` (each shorter than length), all in one batch per
    step: its first `sampled` new tokens are drawn at temperature 1 (its own opening), the rest are its greedy
    choice, both among the head's tokens (logits h E_sub^T: the full 262144-row head would cost more than all
    the blocks, and the drafter can only ever propose these tokens). Seeds of different lengths are prefilled
    one by one, then every sequence grows by one token per batched forward. Only a bare-BOS seed gets a sampled
    opening; a corpus prefix is continued greedily."""
    B = len(seeds)
    caches = [model.new_cache(length) for _ in seeds]
    toks = [list(map(int, s)) for s in seeds]
    hs = []
    for c, s in zip(caches, seeds):
        h, _ = data.batched_hidden(model, [c], np.asarray(s)[None, :], capture_layer=layers[0])
        hs.append([h[0]])
    last = np.stack([h[0][-1] for h in hs])  # [B, d]
    while min(len(t) for t in toks) < length:
        logits = last @ E_sub.T  # [B, N]
        nxt = np.argmax(logits, axis=-1)
        for b in range(B):
            if len(seeds[b]) == 1 and len(toks[b]) - 1 < sampled:  # a bare BOS: the opening is sampled
                nxt[b] = np.argmax(logits[b] + rng.gumbel(size=logits.shape[1]))
        active = [b for b in range(B) if len(toks[b]) < length]
        new = vocab[nxt]
        h, _ = data.batched_hidden(model, [caches[b] for b in active], new[active][:, None], capture_layer=layers[0])
        for i, b in enumerate(active):
            toks[b].append(int(new[b]))
            hs[b].append(h[i])
            last[b] = h[i, 0]
    return [data.features_of(caches[b], np.asarray(toks[b]), np.concatenate(hs[b]), None, layers,
                             np.full(length, -1)) for b in range(B)]


def heldout_self_features(model, tc: TrainConfig, layers, bos: int):
    """Held-out text the target writes exactly as drafting meets it: a sampled opening, then its full-head
    greedy continuation, with its full-head greedy choice after every position."""
    rng = np.random.default_rng([tc.seed, 11])
    feats = data.generate_features(model, [np.array([bos])] * tc.heldout_self, tc.seq_len - 1, layers,
                                   temperature=0.0, rng=rng, sample_first=tc.gen_sampled, first_temperature=1.0)
    return feats


# --- the work directory: resumable, deterministic -----------------------------------------------------------

class Work:
    """state.json (the settings, jobs and tokens done, the evaluation log), setup.npz (vocabulary, held-out
    features), checkpoint.npz (parameters, Adam's state, the best parameters so far)."""

    def __init__(self, directory: Path, tc: TrainConfig, fresh: bool = False):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state_path = self.dir / "state.json"
        if self.state_path.exists() and not fresh:
            self.state = json.loads(self.state_path.read_text())
            if self.state["train_config"] != tc.to_dict():
                raise ValueError(f"{self.dir} holds a run with other settings: resume it with the same options, "
                                 "or start over with --fresh")
        else:
            for name in ("setup.npz", "checkpoint.npz"):
                (self.dir / name).unlink(missing_ok=True)
            self.state = {"train_config": tc.to_dict(), "jobs_done": 0, "tokens_done": 0, "steps": 0,
                          "seconds": 0.0, "log": []}
            self.save()

    def save(self):
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=1))
        tmp.replace(self.state_path)


def save_arrays(path: Path, arrays: dict) -> None:
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


def train(model, tokenizer, tc: TrainConfig = TrainConfig(), work_dir="weights/mtp-work",
          out="weights/mtp-gemma-3-270m.drafter.safetensors", fresh: bool = False, progress=None,
          excluded_lines=None, command: str | None = None) -> dict:
    """Plan, choose the vocabulary, fit, stream-train and save a drafter on tc.tokens training tokens (counting
    earlier interrupted runs). Returns the report that is saved beside the weights. `progress(phase, fraction,
    text, force=False)` is optional."""
    progress = progress or (lambda *a, **k: None)
    if tc.text_batch % tc.batch_seqs or tc.gen_batch % tc.batch_seqs:
        raise ValueError("batch_seqs must divide text_batch and gen_batch (a checkpoint falls between Adam steps)")
    work = Work(work_dir, tc, fresh)
    st = work.state
    t_start = time.time() - st["seconds"]
    elapsed = lambda: time.time() - t_start  # noqa: E731

    c = net.MTPConfig.for_target(model.cfg, tc.num_draft_tokens)
    layers = c.source_layers
    excluded = data.bench_lines() if excluded_lines is None else excluded_lines
    heldout_text, text = plan(tokenizer, tc, excluded)
    if not text or not heldout_text:
        raise ValueError("no training or no held-out text: the corpus is too short for this sequence length")
    E = model.weights.embed_tokens
    bos = tokenizer.bos_id
    setup = work.dir / "setup.npz"
    n_sample = min(tc.vocab_sample_seqs, len(text))
    if not setup.exists():
        # 2. vocabulary: the target's full-head greedy choices on a sample of the training text, plus held out
        progress("vocab", 0.0, f"the target's choices on {n_sample} training sequences", force=True)
        counts = np.zeros(c.vocab_size, np.int64)
        for s in range(0, n_sample, tc.text_batch):
            for f in text_features(model, text[s: s + tc.text_batch], layers, with_argmax=True):
                np.add.at(counts, f.argmax[:-1], 1)
        held = text_features(model, heldout_text, layers, with_argmax=True)
        progress("vocab", 0.5, f"{tc.heldout_self} held-out sequences the target writes", force=True)
        held += heldout_self_features(model, tc, layers, bos)
        labels = np.concatenate([f.argmax[1:-1] for f in held])
        st["coverage_curve"] = coverage_curve(counts, labels)
        vocab = choose_vocab(counts, c.num_draft_tokens)
        arrays = {"vocab": vocab, "counts": counts, "kinds": np.array([len(heldout_text), tc.heldout_self])}
        for i, f in enumerate(held):
            arrays.update({f"{i}.{k}": getattr(f, k) for k in ("tokens", "h", "k", "v", "argmax")})
        save_arrays(setup, arrays)
        st["seconds"] = elapsed()
        work.save()
    with np.load(setup) as z:
        vocab, kinds = z["vocab"].astype(np.int64), z["kinds"]
        held = [data.Features(*(z[f"{i}.{k}"] if k != "r" else None for k in ("tokens", "h", "r", "k", "v",
                                                                                "argmax")))
                for i in range(int(kinds.sum()))]
    held_sets = {"text": held[: kinds[0]], "self": held[kinds[0]:]}
    E_sub = np.ascontiguousarray(E[vocab])

    def evaluate_all(params):
        ev = {name: evaluate(params, c, fs, E, E_sub, vocab, tc.depth) for name, fs in held_sets.items()}
        ev["score"] = ev["self"]["acc1"] + ev["text"]["acc1"]
        return ev

    # 3. fit (or the checkpoint)
    ckpt = work.dir / "checkpoint.npz"
    if ckpt.exists():
        c, params, _, meta = net.load(ckpt)
        with np.load(ckpt) as z:
            adam = Adam(params, tc.betas)
            adam.m = {k: z[f"adam_m.{k}"] for k in params}
            adam.v = {k: z[f"adam_v.{k}"] for k in params}
            best = {k: z[f"best.{k}"] for k in params}
        adam.t, reg_norm, best_score = meta["adam_t"], meta["reg_norm"], meta["best_score"]
    else:
        progress("fit", 0.0, "least-squares input projection", force=True)
        params = net.init_from_target(c, model.weights, seed=tc.seed)
        fit_feats = [f for s in range(0, min(tc.fit_seqs, len(text)), tc.text_batch)
                     for f in text_features(model, text[s: s + tc.text_batch], layers)]
        st["fit_rows"] = fit_projection(params, c, fit_feats, E)
        reg_norm = float(np.mean([np.mean(np.sum(f.h.astype(np.float32) ** 2, axis=-1)) for f in fit_feats]))
        adam, best = Adam(params, tc.betas), {k: v.copy() for k, v in params.items()}
        st["init_eval"] = evaluate_all(params)
        best_score = st["init_eval"]["score"]
        st["log"].append({"tokens": 0, "minutes": round(elapsed() / 60, 2), "loss": None, **st["init_eval"]})

    def checkpoint():
        meta = {"adam_t": adam.t, "reg_norm": reg_norm, "best_score": best_score}
        extra = {f"adam_m.{k}": v for k, v in adam.m.items()}
        extra.update({f"adam_v.{k}": v for k, v in adam.v.items()})
        extra.update({f"best.{k}": v for k, v in best.items()})
        net.save(ckpt, c, params, vocab, meta, dtype=np.float32, extra=extra)
        st["seconds"] = elapsed()
        work.save()

    if not ckpt.exists():
        checkpoint()
    # 4. stream: job after job until the token budget is spent
    losses, pending = [], []
    t_run, tokens_run = time.time(), 0  # this process's own rate, for the ETA
    next_eval = (st["tokens_done"] // tc.eval_every + 1) * tc.eval_every
    text_pos = st.get("text_pos", 0)
    while st["tokens_done"] < tc.tokens:
        i = st["jobs_done"]
        if job_kind(i, tc) == "text":
            seqs = [text[(text_pos + b) % len(text)] for b in range(tc.text_batch)]
            text_pos += tc.text_batch
            feats = text_features(model, seqs, layers)
        else:
            rng = np.random.default_rng([tc.seed, 5, i])
            feats = own_text_features(model, seeds_for(i, tc, text, bos), tc.seq_len, layers, E_sub, vocab, rng,
                                      tc.gen_sampled)
        order = np.random.default_rng([tc.seed, 3, i]).permutation(len(feats))
        for j in order:
            pending.append(feats[j])
            if len(pending) < tc.batch_seqs:
                continue
            grads = {}
            for f in pending:
                losses.append(sequence_loss(params, c, f, E, E_sub, tc, reg_norm, grads))
            n_tok = sum(len(f.tokens) - 1 for f in pending)
            pending = []
            grads = {k: v / tc.batch_seqs for k, v in grads.items()}
            norm = np.sqrt(sum(float(np.sum(g * g)) for g in grads.values()))
            if norm > tc.clip:
                grads = {k: v * (tc.clip / norm) for k, v in grads.items()}
            adam.step(params, grads, learning_rate(tc, st["tokens_done"] / tc.tokens, st["steps"]))
            st["steps"] += 1
            st["tokens_done"] += n_tok
            tokens_run += n_tok
        del feats
        st["jobs_done"] = i + 1
        st["text_pos"] = text_pos
        losses = losses[-50:]
        rate = tokens_run / max(time.time() - t_run, 1e-9)
        left = max(tc.tokens - st["tokens_done"], 0) / max(rate, 1e-9)
        last = st["log"][-1]
        progress("train", st["tokens_done"] / tc.tokens,
                 f"{st['tokens_done']:,} tokens  loss {np.mean(losses):.3f}  held-out acc1 self "
                 f"{last['self']['acc1']:.3f} text {last['text']['acc1']:.3f}  {rate:.0f} tok/s  ETA {eta(left)}")
        if st["tokens_done"] >= next_eval or st["tokens_done"] >= tc.tokens:
            ev = evaluate_all(params)
            if ev["score"] > best_score:
                best, best_score = {k: v.copy() for k, v in params.items()}, ev["score"]
            st["log"].append({"tokens": st["tokens_done"], "minutes": round(elapsed() / 60, 2),
                              "loss": round(float(np.mean(losses)), 4), **ev})
            progress("eval", st["tokens_done"] / tc.tokens, f"{st['tokens_done']:,} tokens: self acc1 "
                     f"{ev['self']['acc1']:.3f} top4 {ev['self']['top4']:.3f}; text acc1 {ev['text']['acc1']:.3f}",
                     force=True)
            next_eval = (st["tokens_done"] // tc.eval_every + 1) * tc.eval_every
            checkpoint()
    # 5. ship the best parameters
    final = evaluate_all(best)
    import numba

    report = {"command": command, "threads": numba.get_num_threads(), "tokens": st["tokens_done"], "steps": st["steps"], "jobs": st["jobs_done"],
              "minutes": round(elapsed() / 60, 2), "data": data_mix(tc, st["jobs_done"]),
              "coverage_curve": st["coverage_curve"], "init_eval": st["init_eval"], "final_eval": final,
              "curve": [{"tokens": e["tokens"], "self_acc1": e["self"]["acc1"], "self_top4": e["self"]["top4"],
                         "text_acc1": e["text"]["acc1"]} for e in st["log"]],
              "train_config": tc.to_dict(), "mtp_config": c.to_dict()}
    net.save(out, c, best, vocab, meta={"report": report})
    st["report"] = report
    st["seconds"] = elapsed()
    work.save()
    progress("done", 1.0, f"held-out acc1 self {final['self']['acc1']:.3f} text {final['text']['acc1']:.3f}; "
             f"saved {out}", force=True)
    return report


def data_mix(tc: TrainConfig, jobs: int) -> dict:
    """How many training sequences each source gave over `jobs` jobs."""
    kinds = [job_kind(i, tc) for i in range(jobs)]
    return {"text_sequences": kinds.count("text") * tc.text_batch, "self_sequences": kinds.count("self") * tc.gen_batch,
            "seq_len": tc.seq_len, "sources": "Python's pydoc topics and standard-library source (bench prompt "
            "documents excluded); the target's own text: a sampled opening after BOS or a corpus prefix, then its "
            "greedy choice among the head's tokens"}


# --- the command ----------------------------------------------------------------------------------------------

def add_train_mtp_parser(sub):
    """Register `tinyspec train-mtp` on an argparse subparsers object."""
    p = sub.add_parser("train-mtp", help="train the MTP drafter (NumPy, CPU, streamed, resumable, budgeted in tokens)")
    p.add_argument("--weights", default=None, help="converted target weights (default: $TINYSPEC_WEIGHTS or "
                                                   "weights/gemma-3-270m)")
    p.add_argument("--out", default="weights/mtp-gemma-3-270m.drafter.safetensors",
                   help="where to write the drafter (a JSON record of the run is written beside it)")
    p.add_argument("--work-dir", default="weights/mtp-work", help="checkpoints and state (resumable)")
    p.add_argument("--tokens", type=int, default=TrainConfig.tokens, help="training tokens (the budget)")
    p.add_argument("--seq-len", type=int, default=TrainConfig.seq_len)
    p.add_argument("--vocab", type=int, default=TrainConfig.num_draft_tokens, help="head vocabulary subset size")
    p.add_argument("--depth", type=int, default=TrainConfig.depth, help="draft steps unrolled in training (1-3)")
    p.add_argument("--self-share", type=float, default=TrainConfig.self_share,
                   help="share of the training tokens the target writes itself")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fresh", action="store_true", help="discard the work directory and start over")
    p.set_defaults(func=cmd_train_mtp)
    return p


def cmd_train_mtp(args):
    from ..model import Model
    from ..tokenizer import Tokenizer
    from ..weights import ensure_converted

    if args.tokens < 1 or not 1 <= args.depth <= len(TrainConfig.step_weights) or not 0 <= args.self_share <= 1:
        raise ValueError("--tokens must be >= 1, --depth between 1 and 3, --self-share between 0 and 1")
    directory = ensure_converted(args.weights)
    model = Model.load(directory, backend="numba")  # the fastest prefill here; its kernels are deterministic
    tokenizer = Tokenizer.from_file(directory / "tokenizer.json")
    tc = TrainConfig(tokens=args.tokens, seq_len=args.seq_len, num_draft_tokens=args.vocab, depth=args.depth,
                     self_share=args.self_share, seed=args.seed)
    print(f"training the MTP drafter on {args.tokens:,} tokens, seed {args.seed}, work dir {args.work_dir}",
          file=sys.stderr)
    bar = Progress()
    command = (f"tinyspec train-mtp --tokens {args.tokens} --seq-len {args.seq_len} --vocab {args.vocab} "
               f"--depth {args.depth} --self-share {args.self_share:g} --seed {args.seed}")
    report = train(model, tokenizer, tc, args.work_dir, args.out, args.fresh, bar, command=command)
    bar.done()
    print(json.dumps({k: report[k] for k in ("tokens", "minutes", "coverage_curve", "final_eval")}, indent=1))
    return 0


def main(argv=None) -> int:
    """`python -m tinyspec.mtp.train [options]`: the same as `tinyspec train-mtp [options]`."""
    import argparse

    parser = argparse.ArgumentParser(prog="tinyspec")
    add_train_mtp_parser(parser.add_subparsers())
    args = parser.parse_args(["train-mtp", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
