"""Training the MTP drafter from scratch in NumPy: `tinyspec train-mtp`.

# 1. Data        the target's features over offline text (data.py), saved as shards in a work directory
# 2. Vocabulary  the head's N tokens: those the target predicts most often on the training text
# 3. Fit         the input projection by least squares: [norm(E[x_t]), norm(h_{t-1})] -> the residual stream
#                entering the first copied block at t, so the copied blocks start from roughly the input
#                they were trained on inside the target
# 4. Train       Adam on draft steps 1 and 2 (step 2 is fed step 1's own predicted hidden state, as drafting
#                is), loss = cross-entropy to the target's distribution over the subset + regression of the
#                target's hidden state (EAGLE's two losses); held-out agreement with the target's argmax
# 5. Ship        the best checkpoint by held-out agreement, in float16

Everything is budgeted in wall-clock minutes, checkpointed, and resumable: run the same command again after an
interruption and it continues where it stopped (the work directory records which data shards exist, the
optimizer state and the time already spent).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import data, net
from .layers import linear_backward, linear_forward, log_softmax, mse, rms_norm_forward, soft_cross_entropy


@dataclass(frozen=True)
class TrainConfig:
    minutes: float = 55.0  # the whole budget: data, fit, training and saving
    data_share: float = 0.3  # fraction of the budget spent making features
    seq_len: int = 256  # tokens per training sequence (BOS first)
    num_draft_tokens: int = 8192  # N: the head's vocabulary subset
    gen_batch: int = 32  # continuations the target writes at once (one batched forward per step)
    gen_sampled: int = 16  # tokens the target samples (temperature 1) after a bare BOS: its own opening
    gen_new: int = 112  # greedy tokens per continuation (short: early continuations, not late loops)
    text_batch: int = 8  # corpus chunks per data job
    text_every: int = 4  # one corpus job after every this many generation jobs: self-written greedy text is
    #                      what drafting sees (held-out agreement on it and on bench prose differ widely:
    #                      bench/results.md), though it costs more per token than a prefill of corpus text
    heldout_seqs: int = 8  # held-out corpus chunks (their features include the target's full argmax)
    max_code_files: int = 200  # standard-library modules read, in alphabetical order
    lr: float = 4e-4  # Adam's peak learning rate (cosine decay to a tenth over the training time)
    betas: tuple = (0.9, 0.99)
    clip: float = 1.0  # the global gradient norm is clipped to this
    reg_weight: float = 1.0  # weight of the hidden-state regression (relative squared error)
    step2_weight: float = 0.5  # weight of draft step 2's losses
    batch_seqs: int = 2  # sequences per Adam step
    eval_minutes: float = 4.0  # held-out evaluation period
    checkpoint_minutes: float = 3.0  # checkpoint period
    seed: int = 0

    def to_dict(self):
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def quick_config(minutes: float = 3.0, **overrides) -> TrainConfig:
    """A few minutes' worth of everything (short sequences, small batches, a 2048-token head): for lessons and
    smoke tests. The drafter it makes is weak; the shipped one used TrainConfig(minutes=50)."""
    small = dict(minutes=minutes, seq_len=64, gen_batch=8, gen_sampled=8, gen_new=32, text_batch=4, heldout_seqs=4,
                 text_every=1, num_draft_tokens=2048, max_code_files=20, eval_minutes=0.5, checkpoint_minutes=0.5)
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
        fraction = min(max(fraction, 0.0), 1.0)
        bar = "#" * int(24 * fraction) + "-" * (24 - int(24 * fraction))
        line = f"[{phase:5s}] {bar} {100 * fraction:3.0f}%  {text}"
        self.stream.write(("\r" + line.ljust(110)) if self.tty else line + "\n")
        self.stream.flush()

    def done(self):
        if self.tty:
            self.stream.write("\n")


# --- 1. data -----------------------------------------------------------------------------------------------

def plan_jobs(tokenizer, tc: TrainConfig, excluded_lines=()):
    """The data jobs in a fixed order: held-out chunks, then self-written text, with a corpus job after every
    `text_every` generation jobs.
    Each job is (kind, payload): ("heldout"|"text", [(name, ids)]) or ("gen", (round, [(name, seed ids)])):
    a generation round's seeds are BOS alone (5 in 8: the target samples its own opening) or a 16 to 48 token
    prefix of a training chunk."""
    rng = np.random.default_rng(tc.seed)
    train = {"docs": [], "code": []}
    heldout = []
    for name, kind, is_held, ids in data.chunks(tokenizer, tc.seq_len, excluded_lines, tc.max_code_files):
        (heldout if is_held else train[kind]).append((name, ids))
    for kind in train:
        train[kind] = [train[kind][i] for i in rng.permutation(len(train[kind]))]
    heldout = [heldout[i] for i in rng.permutation(len(heldout))][: tc.heldout_seqs]
    text = [c for pair in zip(train["docs"], train["code"]) for c in pair]  # alternate prose and code
    jobs = [("heldout", heldout)]
    n_text_jobs = (len(text) + tc.text_batch - 1) // tc.text_batch
    k = 0  # the next training chunk to take a seed prefix from
    for r in range(max(n_text_jobs * tc.text_every, 1)):
        seeds = []
        for b in range(tc.gen_batch):
            if b % 8 < 5:
                seeds.append(("bos", np.array([tokenizer.bos_id])))
            else:
                name, ids = text[-1 - k % len(text)]  # from the end of the list: text jobs start at the front
                seeds.append((f"seed:{name}", ids[: int(rng.integers(16, 49))]))
                k += 1
        jobs.append(("gen", (r, seeds)))
        if (r + 1) % tc.text_every == 0:
            j = r // tc.text_every
            jobs.append(("text", text[j * tc.text_batch: (j + 1) * tc.text_batch]))
    return jobs


def run_job(model, job, tc: TrainConfig, layers):
    """Features, names and held-out flags of one job; generated sequence b is held out when b % 8 == 7."""
    kind, payload = job
    if kind in ("heldout", "text"):
        feats = [data.prefill_features(model, ids, layers, with_argmax=(kind == "heldout")) for _, ids in payload]
        return feats, [name for name, _ in payload], [kind == "heldout"] * len(payload)
    r, seeds = payload
    rng = np.random.default_rng([tc.seed, r])
    sample_first = [tc.gen_sampled if name == "bos" else 0 for name, _ in seeds]
    feats = data.generate_features(model, [s for _, s in seeds], tc.gen_sampled + tc.gen_new, layers,
                                   temperature=0.0, rng=rng, sample_first=sample_first, first_temperature=1.0)
    return feats, [f"gen{r}.{b}:{name}" for b, (name, _) in enumerate(seeds)], [b % 8 == 7 for b in range(len(seeds))]


# --- 2. vocabulary -------------------------------------------------------------------------------------------

def choose_vocab(feats, n: int, vocab_size: int, always=(1,)):  # -> [n] ids
    """The n tokens the target predicts most often (its argmax, where known; the text's own next tokens
    stand in for it on corpus text, whose features skip the full head). EOS is always kept."""
    counts = np.zeros(vocab_size, np.int64)
    for f in feats:
        known = f.argmax[f.argmax >= 0]
        np.add.at(counts, known, 1)
        if len(known) < len(f.argmax):
            np.add.at(counts, f.tokens[1:], 1)
    counts[list(always)] = counts.max() + 1
    return np.sort(np.argsort(-counts, kind="stable")[:n])


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


# --- 4. training ----------------------------------------------------------------------------------------------

def target_distribution(h, E_sub):  # [M, d], [N, d] -> [M, N]
    """The target's own distribution restricted to (and renormalized on) the subset: its logits there are
    exactly h E_sub^T, because its head is the same tied embedding."""
    return np.exp(log_softmax(h @ E_sub.T))


def sequence_loss(params, c: net.MTPConfig, f, E, E_sub, tc: TrainConfig, reg_norm: float, grads: dict | None):
    """The loss of one sequence (steps 1 and 2 at every position) and, if grads is a dict, its gradients added in.

    Step 1 at position t: input (x_t, h_{t-1}), cache positions < t readable, predicts h_t (the target's state
    that chooses token t+1). Step 2 at t+1: input (x_{t+1}, step 1's own prediction), still only positions < t
    readable (nothing new has entered the target's cache while drafting), predicts h_{t+1}."""
    S, dt = len(f.tokens), params["proj"].dtype  # float32 in training, float64 in the gradient check
    tokens = f.tokens.astype(np.int64)
    h = f.h.astype(dt)  # [S, d]
    kv = [(f.k[b].astype(dt), f.v[b].astype(dt)) for b in range(c.num_blocks)]
    e = (E[tokens] * np.float32(np.sqrt(c.hidden_size))).astype(dt)  # [S, d]
    p = target_distribution(h[1:], E_sub)  # [S-1, N]  p[t-1] is the target's distribution at t
    t1 = np.arange(1, S)  # step-1 rows
    h1, tape1 = net.step_forward(params, c, e[t1], h[t1 - 1], kv, t1, t1)  # [S-1, d]
    t2 = np.arange(1, S - 1)  # step-2 rows (t as above; the query sits at t+1)
    h2, tape2 = net.step_forward(params, c, e[t2 + 1], h1[:-1], kv, t2 + 1, t2)  # [S-2, d]
    total = 0.0
    for (hp, tape, rows, weight) in ((h1, tape1, t1, 1.0), (h2, tape2, t2 + 1, tc.step2_weight)):
        logits, head_tape = linear_forward(hp, E_sub)  # [M, N]
        ce, dlogits = soft_cross_entropy(logits, p[rows - 1])
        reg, dh_reg = mse(hp, h[rows], tc.reg_weight / reg_norm)
        total += weight * (ce + reg)
        if grads is not None:
            dh = weight * (linear_backward(dlogits, head_tape)[0] + dh_reg)
            g, _ = net.step_backward(dh.astype(dt), tape, c)  # h1 enters step 2 as a constant
            for k, v in g.items():
                grads[k] = grads[k] + v if k in grads else v
    return total


def first_drafts(params, c: net.MTPConfig, f, E, E_sub, vocab, t):  # [R] positions -> ([R] ids, [R, d])
    """Teacher forcing: the greedy first draft the drafter makes after position t of a sequence, from the
    features the target computed over it (input x_t and h_{t-1}, cache rows < t): exactly what it proposes in
    the speculative loop when the context ends at position t (tests and lesson 10 check this)."""
    t = np.asarray(t)
    kv = [(f.k[b].astype(np.float32), f.v[b].astype(np.float32)) for b in range(c.num_blocks)]
    e = E[f.tokens.astype(np.int64)[t]] * np.float32(np.sqrt(c.hidden_size))  # [R, d]
    h1, _ = net.step_forward(params, c, e, f.h[t - 1].astype(np.float32), kv, t, t)  # [R, d]
    return vocab[np.argmax(h1 @ E_sub.T, axis=-1)], h1


def evaluate(params, c: net.MTPConfig, feats, E, E_sub, vocab) -> dict:
    """Agreement with the target's greedy choice on held-out sequences: acc1 (first draft), acc2 (second
    draft, given the first was right and the text continued with it), and subset coverage."""
    hit1 = n1 = hit2 = n2 = covered = 0
    in_subset = np.zeros(c.vocab_size, bool)
    in_subset[vocab] = True
    scale = np.float32(np.sqrt(c.hidden_size))
    for f in feats:
        S = len(f.tokens)
        tokens, target = f.tokens.astype(np.int64), f.argmax.astype(np.int64)
        kv = [(f.k[b].astype(np.float32), f.v[b].astype(np.float32)) for b in range(c.num_blocks)]
        t = np.arange(1, S - 1)
        d1, h1 = first_drafts(params, c, f, E, E_sub, vocab, t)  # [S-2]
        ok1 = d1 == target[t]
        hit1, n1, covered = hit1 + ok1.sum(), n1 + len(t), covered + in_subset[target[t]].sum()
        follow = ok1 & (tokens[t + 1] == target[t])  # step 2 is judged where its input is the true next token
        if follow.any():
            r = t[follow]
            h2, _ = net.step_forward(params, c, E[target[r]] * scale, h1[follow], kv, r + 1, r)
            d2 = vocab[np.argmax(h2 @ E_sub.T, axis=-1)]
            hit2, n2 = hit2 + (d2 == target[r + 1]).sum(), n2 + len(r)
    return {"acc1": float(hit1 / max(n1, 1)), "acc2": float(hit2 / max(n2, 1)), "coverage": float(covered / max(n1, 1)),
            "rows": int(n1)}


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
    """Linear warm-up over 20 steps, then cosine decay to lr/10 as the training time runs out."""
    warm = min(1.0, (step + 1) / 20)
    return tc.lr * warm * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * min(fraction, 1.0))))


# --- the whole run, resumable -------------------------------------------------------------------------------

class Work:
    """The work directory: state.json (phases done, time spent), features/*.npz, checkpoint.npz."""

    def __init__(self, directory: Path, tc: TrainConfig, fresh: bool = False):
        self.dir = Path(directory)
        (self.dir / "features").mkdir(parents=True, exist_ok=True)
        self.state_path = self.dir / "state.json"
        if self.state_path.exists() and not fresh:
            self.state = json.loads(self.state_path.read_text())
            if self.state["train_config"] != tc.to_dict():
                raise ValueError(f"{self.dir} holds a run with other settings: resume it with the same options, "
                                 "or start over with --fresh")
        else:
            for f in self.dir.glob("features/*.npz"):
                f.unlink()
            (self.dir / "checkpoint.npz").unlink(missing_ok=True)
            self.state = {"train_config": tc.to_dict(), "jobs_done": 0, "data_done": False, "seconds": 0.0,
                          "log": []}
            self.save()

    def save(self):
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=1))
        tmp.replace(self.state_path)

    def shard(self, i: int) -> Path:
        return self.dir / "features" / f"job{i:04d}.npz"


def train(model, tokenizer, tc: TrainConfig = TrainConfig(), work_dir="weights/mtp-work",
          out="weights/mtp-gemma-3-270m.drafter.npz", fresh: bool = False, progress=None,
          excluded_lines=None) -> dict:
    """Make the data, fit, train and save a drafter within tc.minutes (counting earlier interrupted runs).
    Returns a report (held-out accuracies, data sizes, times). `progress(phase, fraction, text)` is optional."""
    progress = progress or (lambda *a, **k: None)
    work = Work(work_dir, tc, fresh)
    st = work.state
    budget = tc.minutes * 60
    t_start = time.time() - st["seconds"]  # time already spent in earlier runs counts
    elapsed = lambda: time.time() - t_start  # noqa: E731

    def tick():
        st["seconds"] = elapsed()
        work.save()

    c = net.MTPConfig.for_target(model.cfg, tc.num_draft_tokens)
    layers = c.source_layers
    excluded = data.bench_lines() if excluded_lines is None else excluded_lines
    # 1. data
    jobs = plan_jobs(tokenizer, tc, excluded)
    data_budget = tc.data_share * budget
    durations = {"heldout": 5.0 * tc.heldout_seqs, "text": 3.0 * tc.text_batch,
                 "gen": 0.04 * tc.gen_batch * (tc.gen_sampled + tc.gen_new)}  # priors (s)
    while not st["data_done"]:
        i = st["jobs_done"]
        if i >= len(jobs):
            break
        kind = jobs[i][0]
        guess = durations[kind]
        if i > 1 and elapsed() + guess > data_budget:  # jobs 0 and 1 (held-out, training) always run
            break
        progress("data", elapsed() / data_budget, f"job {i + 1}: {kind}, {elapsed() / 60:.1f} of "
                 f"{data_budget / 60:.1f} min", force=True)
        t0 = time.time()
        feats, names, held = run_job(model, jobs[i], tc, layers)
        data.save_features(work.shard(i), feats, [f"{'H' if h else 'T'}|{n}" for n, h in zip(names, held)])
        durations[kind] = time.time() - t0
        st["jobs_done"] = i + 1
        tick()
    st["data_done"] = True
    tick()
    train_feats, held_feats = [], []
    for i in range(st["jobs_done"]):
        feats, names = data.load_features(work.shard(i))
        for f, name in zip(feats, names):
            (held_feats if name.startswith("H|") else train_feats).append(f)
    n_tokens = sum(len(f.tokens) for f in train_feats)
    st["data"] = {"train_seqs": len(train_feats), "train_tokens": int(n_tokens), "heldout_seqs": len(held_feats),
                  "heldout_tokens": int(sum(len(f.tokens) for f in held_feats)), "jobs": st["jobs_done"],
                  "minutes": round(elapsed() / 60, 2)}
    progress("data", 1.0, f"{len(train_feats)} training sequences ({n_tokens} tokens), {len(held_feats)} held out",
             force=True)
    if not train_feats or not held_feats:
        raise ValueError("no training or no held-out sequences: give the run more minutes (or a longer corpus)")
    # 2. vocabulary, 3. fit (or the checkpoint)
    E = model.weights.embed_tokens
    ckpt = work.dir / "checkpoint.npz"
    rng = np.random.default_rng([tc.seed, 1])
    if ckpt.exists():
        c, params, vocab, meta = net.load(ckpt)
        with np.load(ckpt) as z:
            adam = Adam(params, tc.betas)
            adam.m = {k: z[f"adam_m.{k}"] for k in params}
            adam.v = {k: z[f"adam_v.{k}"] for k in params}
            best = {k: z[f"best.{k}"] for k in params}
        adam.t, step, train_seconds = meta["adam_t"], meta["step"], meta["train_seconds"]
        rng.bit_generator.state = meta["rng"]
        reg_norm, best_score = meta["reg_norm"], meta["best_score"]
    else:
        vocab = choose_vocab(train_feats, c.num_draft_tokens, c.vocab_size)
        params = net.init_from_target(c, model.weights, seed=tc.seed)
        rows = fit_projection(params, c, train_feats, E)
        reg_norm = float(np.mean([np.mean(np.sum(f.h.astype(np.float32) ** 2, axis=-1)) for f in train_feats]))
        adam, step, train_seconds, best, best_score = Adam(params, tc.betas), 0, 0.0, None, -1.0
        st["fit_rows"] = rows
    E_sub = np.ascontiguousarray(E[vocab])
    if "init_eval" not in st:
        st["init_eval"] = evaluate(params, c, held_feats, E, E_sub, vocab)
        tick()
    # 4. train until the budget (minus a reserve for the final evaluation and saving) runs out
    reserve = min(60.0, 0.05 * budget)  # for the final evaluation and saving
    train_budget = max(budget - elapsed() - reserve + train_seconds, 1.0)
    last_eval, last_ckpt = time.time(), time.time()
    order, pos = rng.permutation(len(train_feats)), 0
    losses = []
    t_phase = time.time() - train_seconds

    def checkpoint():
        meta = {"adam_t": adam.t, "step": step, "train_seconds": time.time() - t_phase, "rng": rng.bit_generator.state,
                "reg_norm": reg_norm, "best_score": best_score}
        extra = {f"adam_m.{k}": v for k, v in adam.m.items()}
        extra.update({f"adam_v.{k}": v for k, v in adam.v.items()})
        extra.update({f"best.{k}": v for k, v in (best or params).items()})
        net.save(ckpt, c, params, vocab, meta, dtype=np.float32, extra=extra)
        tick()

    def run_eval():
        nonlocal best, best_score
        ev = evaluate(params, c, held_feats, E, E_sub, vocab)
        score = ev["acc1"] + ev["acc2"]
        if score > best_score:
            best, best_score = {k: v.copy() for k, v in params.items()}, score
        st["log"].append({"step": step, "minutes": round(elapsed() / 60, 2),
                          "loss": round(float(np.mean(losses)), 4) if losses else None, **ev})
        return ev

    ev = st["log"][-1] if st["log"] else st["init_eval"]
    while time.time() - t_phase < train_budget:
        grads = {}
        for _ in range(tc.batch_seqs):
            if pos >= len(order):
                order, pos = rng.permutation(len(train_feats)), 0
            losses.append(sequence_loss(params, c, train_feats[order[pos]], E, E_sub, tc, reg_norm, grads))
            pos += 1
        grads = {k: v / tc.batch_seqs for k, v in grads.items()}
        norm = np.sqrt(sum(float(np.sum(g * g)) for g in grads.values()))
        if norm > tc.clip:
            grads = {k: v * (tc.clip / norm) for k, v in grads.items()}
        fraction = (time.time() - t_phase) / train_budget
        adam.step(params, grads, learning_rate(tc, fraction, step))
        step += 1
        losses = losses[-50:]
        progress("train", fraction, f"step {step}  loss {np.mean(losses):.3f}  held-out acc1 {ev['acc1']:.3f} "
                 f"acc2 {ev['acc2']:.3f}  {elapsed() / 60:.1f}/{tc.minutes:.0f} min")
        if time.time() - last_eval > tc.eval_minutes * 60:
            ev, last_eval = run_eval(), time.time()
        if time.time() - last_ckpt > tc.checkpoint_minutes * 60:
            checkpoint()
            last_ckpt = time.time()
    ev = run_eval()
    checkpoint()
    # 5. ship the best parameters
    final = evaluate(best, c, held_feats, E, E_sub, vocab)
    report = {"data": st["data"], "init_eval": st["init_eval"], "final_eval": final, "steps": step,
              "minutes": round(elapsed() / 60, 2), "train_config": tc.to_dict(), "mtp_config": c.to_dict()}
    net.save(out, c, best, vocab, meta={"report": report})
    st["report"] = report
    tick()
    progress("done", 1.0, f"held-out acc1 {final['acc1']:.3f} acc2 {final['acc2']:.3f}; saved {out}", force=True)
    return report


# --- the command ----------------------------------------------------------------------------------------------

def add_train_mtp_parser(sub):
    """Register `tinyspec train-mtp` on an argparse subparsers object."""
    p = sub.add_parser("train-mtp", help="train the MTP drafter (NumPy, CPU, resumable, time-budgeted)")
    p.add_argument("--weights", default=None, help="converted target weights (default: $TINYSPEC_WEIGHTS or "
                                                   "weights/gemma-3-270m)")
    p.add_argument("--out", default="weights/mtp-gemma-3-270m.drafter.npz", help="where to write the drafter")
    p.add_argument("--work-dir", default="weights/mtp-work", help="features, checkpoints, state (resumable)")
    p.add_argument("--minutes", type=float, default=TrainConfig.minutes, help="total time budget")
    p.add_argument("--seq-len", type=int, default=TrainConfig.seq_len)
    p.add_argument("--vocab", type=int, default=TrainConfig.num_draft_tokens, help="head vocabulary subset size")
    p.add_argument("--data-share", type=float, default=TrainConfig.data_share,
                   help="fraction of the budget spent making features")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fresh", action="store_true", help="discard the work directory and start over")
    p.set_defaults(func=cmd_train_mtp)
    return p


def cmd_train_mtp(args):
    from ..model import Model
    from ..tokenizer import Tokenizer
    from ..weights import ensure_converted

    directory = ensure_converted(args.weights)
    # The features come from the plain NumPy backend: training does not need batch-invariant kernels, and BLAS
    # is fastest for the long prefills here.
    model = Model.load(directory, backend="numpy")
    tokenizer = Tokenizer.from_file(directory / "tokenizer.json")
    tc = TrainConfig(minutes=args.minutes, seq_len=args.seq_len, num_draft_tokens=args.vocab,
                     data_share=args.data_share, seed=args.seed)
    print(f"training the MTP drafter: {args.minutes:g} min budget, seed {args.seed}, work dir {args.work_dir}",
          file=sys.stderr)
    bar = Progress()
    report = train(model, tokenizer, tc, args.work_dir, args.out, args.fresh, bar)
    bar.done()
    print(json.dumps({k: report[k] for k in ("data", "init_eval", "final_eval", "steps", "minutes")}, indent=1))
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
