"""What the MTP drafter learns from: the target's own features over text that needs no network.

Text (all offline, in a fixed order):
    docs      Python's bundled documentation, `pydoc_data.topics` (English prose about Python)
    code      Python standard-library source files (code, comments, docstrings)
    self      text the target writes itself: it samples an opening from nothing but BOS (temperature 1: any
              topic, language or format it knows), then continues greedily; or continues a corpus prefix
              greedily. So the drafter sees the target's own greedy style, repetitions included, as it will
              when drafting for it

Documents are cut into sequences of `seq_len` tokens (BOS first). Every 10th document goes to the held-out
split. Any document containing a line of a bench prompt (bench/prompts.jsonl) is dropped: the benchmark
measures the drafter on text it never saw.

Features of one sequence (`Features`), from one target forward:
    tokens  [S]            the ids
    h       [S, d]         the target's final-normed hidden state at each position (its logits choose the next id)
    r       [S, d]         the residual stream entering the first source layer (fits the input projection)
    k, v    [n, S, hd]     the target's cached keys/values of each source layer (what the drafter attends to)
    argmax  [S]            the target's greedy choice after each position (full vocabulary)

`batched_hidden` runs the target over B sequences of equal length at once, each with its own KVCache: the
model's own forward (`forward_hidden` takes a list of caches), batched so that generating B continuations
reads the weights once per step instead of B times.
"""

from __future__ import annotations

import hashlib
import json
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..model import forward_hidden


@dataclass
class Features:
    tokens: np.ndarray  # [S] int32
    h: np.ndarray  # [S, d] float16 on disk / float32 in training
    r: np.ndarray  # [S, d]
    k: np.ndarray  # [n, S, hd]
    v: np.ndarray  # [n, S, hd]
    argmax: np.ndarray  # [S] int32


# --- text ----------------------------------------------------------------------------------------------------

def bench_lines(repo: Path | None = None) -> list[str]:
    """Lines (>= 20 characters) of every prompt in bench/prompts.jsonl: text the drafter must never train on."""
    path = (repo or Path(__file__).resolve().parents[2]) / "bench" / "prompts.jsonl"
    if not path.exists():
        return []
    lines = []
    for row in path.read_text().splitlines():
        if row.strip():
            for value in json.loads(row).values():
                if isinstance(value, str):
                    lines += [ln.strip() for ln in value.splitlines() if len(ln.strip()) >= 20]
    return lines


def documents(max_code_files: int = 200):
    """(name, kind, text) of every offline document, in a fixed order: docs topics, then stdlib modules (the
    top-level ones first, then those of packages; no test suites, no private modules), at most max_code_files."""
    from pydoc_data.topics import topics

    for key in sorted(topics):
        yield f"docs:{key}", "docs", topics[key]
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    skip = {"test", "tests", "idle_test", "site-packages", "dist-packages", "lib2to3", "__pycache__"}
    files = sorted((f for f in stdlib.rglob("*.py") if not f.name.startswith(("test", "_"))
                    and not skip & set(f.relative_to(stdlib).parts)),
                   key=lambda f: (len(f.relative_to(stdlib).parts), str(f.relative_to(stdlib))))
    for f in files[:max_code_files]:
        yield f"code:{f.relative_to(stdlib).as_posix()}", "code", f.read_text(errors="replace")


def is_heldout(name: str) -> bool:
    """Every 10th document, by a stable hash of its name."""
    return int(hashlib.sha1(name.encode()).hexdigest(), 16) % 10 == 0


def chunks(tokenizer, seq_len: int, excluded_lines=(), max_code_files: int = 200):
    """(name, kind, heldout, ids [seq_len]) for every full chunk of every document, BOS first. A document that
    contains any excluded line (a line of a bench prompt) is skipped whole."""
    for name, kind, text in documents(max_code_files):
        if any(line in text for line in excluded_lines):
            continue
        ids = tokenizer.encode(text, add_bos=False)
        body = seq_len - 1
        for start in range(0, len(ids) - body + 1, body):
            yield f"{name}#{start}", kind, is_heldout(name), np.array([2] + list(ids[start: start + body]))


# --- the target, batched over sequences ----------------------------------------------------------------------

def batched_hidden(model, caches, tokens, capture_layer: int):  # [B, M] -> ([B, M, d], [B, M, d])
    """Model.hidden for B sequences at once, each with its own cache (each grows by M, from its own length): one
    forward over their B*M rows (model.forward_hidden). Also returns the residual stream entering block
    `capture_layer`."""
    tokens = np.asarray(tokens, dtype=np.int64)
    B, M = tokens.shape
    residuals = []  # [layers] of [B*M, d]: the residual stream entering each block
    h = forward_hidden(tokens.reshape(-1), model.weights, model.cfg, caches, model.ops, residuals=residuals)
    return h.reshape(B, M, -1), residuals[capture_layer].reshape(B, M, -1)


def head_choose(model, h, temperature=0.0, rng=None, rows: int = 64):  # [R, d] -> ([R], [R])
    """The target's greedy choice (argmax of its logits) for each row, and the token it picks at `temperature`
    (a number, or one per row): the argmax again at 0, else a Gumbel-max draw from softmax(logits / T)."""
    temperature = np.broadcast_to(np.asarray(temperature, dtype=np.float32), (len(h),))  # [R]
    argmax, chosen = np.empty(len(h), dtype=np.int64), np.empty(len(h), dtype=np.int64)
    for s in range(0, len(h), rows):
        logits = model.head(h[s: s + rows])  # [rows, V]
        argmax[s: s + rows] = np.argmax(logits, axis=-1)
        chosen[s: s + rows] = argmax[s: s + rows]
        for j in np.flatnonzero(temperature[s: s + rows] > 0):
            noise = rng.gumbel(size=logits.shape[1]).astype(np.float32)
            chosen[s + j] = np.argmax(logits[j] / temperature[s + j] + noise)
    return argmax, chosen


def head_argmax(model, h):  # [R, d] -> [R]
    return head_choose(model, h)[0]


def features_of(cache, tokens, h, r, layers, argmax) -> Features:
    S = len(tokens)
    k = np.stack([cache.k[layer][:S, 0] for layer in layers])  # [n, S, hd]
    v = np.stack([cache.v[layer][:S, 0] for layer in layers])  # [n, S, hd]
    return Features(np.asarray(tokens, np.int32), h, r, k, v, np.asarray(argmax, np.int32))


def prefill_features(model, tokens, layers, with_argmax: bool = True) -> Features:
    """Features of one sequence of text, from one forward of the target (prefill_batch of one row)."""
    return prefill_batch(model, np.asarray(tokens)[None, :], layers, with_argmax)[0]


def prefill_batch(model, tokens, layers, with_argmax: bool = True) -> list[Features]:  # [B, S] -> B Features
    """Features of B equal-length sequences, from one batched forward (batched_hidden). Without argmax (-1s), the
    262144-row head is skipped: it costs more than all the blocks."""
    tokens = np.asarray(tokens)
    caches = [model.new_cache(tokens.shape[1]) for _ in tokens]
    h, r = batched_hidden(model, caches, tokens, capture_layer=layers[0])  # [B, S, d]
    return [features_of(cache, tokens[b], h[b], r[b], layers,
                        head_argmax(model, h[b]) if with_argmax else np.full(tokens.shape[1], -1))
            for b, cache in enumerate(caches)]


def generate_features(model, seeds, n_new: int, layers, temperature: float = 0.0, rng=None,
                      sample_first=0, first_temperature: float = 1.0) -> list[Features]:
    """The target continues each seed (any lengths; all in one batch per step) by n_new tokens: the first
    `sample_first` (a number, or one per seed) drawn at `first_temperature` (the target's own varied openings),
    the rest at `temperature` (0: greedy, the text speculative decoding will see). The last token appears only
    as the final label."""
    B = len(seeds)
    caches = [model.new_cache(len(s) + n_new) for s in seeds]
    hs, rs, toks, argmaxes = [], [], [], []
    for c, seed in zip(caches, seeds):  # prefill each seed on its own (they may differ in length)
        h, r = batched_hidden(model, [c], np.asarray(seed)[None, :], capture_layer=layers[0])
        hs.append([h[0]])
        rs.append([r[0]])
        toks.append([np.asarray(seed)])
        argmaxes.append([head_argmax(model, h[0, :-1])])  # the seed's own positions (none for BOS alone)
    last = np.stack([h[-1][-1] for h in hs])  # [B, d]
    for i in range(n_new):
        argmax, nxt = head_choose(model, last, np.where(i < np.asarray(sample_first), first_temperature,
                                                        temperature), rng)
        for b in range(B):
            argmaxes[b].append(argmax[b: b + 1])
        if i == n_new - 1:
            break
        h, r = batched_hidden(model, caches, nxt[:, None], capture_layer=layers[0])  # [B, 1, d]
        for b in range(B):
            hs[b].append(h[b])
            rs[b].append(r[b])
            toks[b].append(nxt[b: b + 1])
        last = h[:, 0]
    return [features_of(caches[b], np.concatenate(toks[b]), np.concatenate(hs[b]), np.concatenate(rs[b]), layers,
                        np.concatenate(argmaxes[b])) for b in range(B)]
