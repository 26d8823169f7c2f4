"""How often a drafter's best b guesses hold the target's next token, on the bench's own greedy text.

    python -m bench.drafter_coverage                          # the shipped MTP drafter
    python -m bench.drafter_coverage --drafters weights/mtp-gemma-3-270m.drafter.safetensors,weights/mtp-work/checkpoint.npz
    python -m bench.drafter_coverage --early-exit 6,9,12,15   # early exit after these numbers of blocks

Teacher forcing over what speculative decoding will meet: for each bench prompt, the prompt followed by the
target's greedy continuation (the vanilla token ids that `python -m bench` stored in bench/results.json). One
target prefill gives the features; at every position of the continuation the drafter's first step (what it
proposes at depth 1 when the context ends there; tests/test_mtp.py checks teacher forcing equals the loop) is
scored against the next token, which IS the target's greedy choice. Per category: top-1 (a chain's first draft
is accepted), top-2/4/8 (a tree's first level of that width holds the target's token), and how often that
token is in the head's vocabulary at all. Counts, not times: the machine's load does not change them.

Early exit (`--early-exit L,...`) is scored the same way: the residual stream after the target's first L blocks
of the same prefill, through the final norm and the tied head (its vocabulary is the whole one). The prefill
runs the blocks over all positions at once (BLAS), where the drafter runs them one token at a time (the numba
kernels), so a near-tie may fall the other way here: a handful of positions at most.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
WIDTHS = (1, 2, 4, 8)


def coverage(model, drafter_path, sequences) -> dict:
    """sequences: [(category, ids, start)] where ids[start:] is the greedy continuation. -> {category: {...}}."""
    from tinyspec.mtp import data, net, train

    c, params, vocab, _ = net.load(drafter_path)
    E = model.weights.embed_tokens
    E_sub = np.ascontiguousarray(E[vocab])
    in_head = np.zeros(c.vocab_size, bool)
    in_head[vocab] = True
    hits, totals = {}, {}
    for category, ids, start in sequences:
        f = data.prefill_features(model, np.asarray(ids), c.source_layers, with_argmax=False)
        t = np.arange(max(start - 1, 1), len(ids) - 1)  # the context ends at t; the target's choice is ids[t + 1]
        _, _, logits = train.first_drafts(params, c, f, E, E_sub, vocab, t)
        order = vocab[np.argsort(-logits, axis=-1, kind="stable")[:, : max(WIDTHS)]]  # [R, 8]
        target = np.asarray(ids)[t + 1]
        for cat in (category, "all"):
            h = hits.setdefault(cat, np.zeros(len(WIDTHS) + 1))
            for i, b in enumerate(WIDTHS):
                h[i] += np.sum(np.any(order[:, :b] == target[:, None], axis=-1))
            h[-1] += np.sum(in_head[target])
            totals[cat] = totals.get(cat, 0) + len(t)
    return {cat: {**{f"top{b}": float(h[i] / totals[cat]) for i, b in enumerate(WIDTHS)},
                  "in_head": float(h[-1] / totals[cat]), "positions": int(totals[cat])} for cat, h in hits.items()}


def early_exit_coverage(model, layers, sequences) -> dict:
    """{layers: {category: {...}}} like coverage(), for early exit after each number of blocks in `layers`."""
    from tinyspec.model import forward_hidden

    w, cfg, ops = model.weights, model.cfg, model.ops
    hits, totals = {}, {}
    for category, ids, start in sequences:
        residuals = []  # residuals[L]: the stream entering block L, i.e. after the first L blocks
        forward_hidden(np.asarray(ids), w, cfg, [model.new_cache(len(ids))], ops, residuals=residuals)
        t = np.arange(max(start - 1, 1), len(ids) - 1)  # the context ends at t; the target's choice is ids[t + 1]
        target = np.asarray(ids)[t + 1]
        for L in layers:
            h = ops.rms_norm(np.ascontiguousarray(residuals[L][t]), w.norm, cfg.rms_norm_eps)  # [R, d]
            logits = h @ w.embed_tokens.T  # [R, V]  (BLAS: a teacher-forced count, not the kernels' bits)
            best = np.argpartition(-logits, max(WIDTHS), axis=-1)[:, : max(WIDTHS)]  # [R, 8] unordered
            order = np.take_along_axis(best, np.argsort(-np.take_along_axis(logits, best, -1), axis=-1), -1)
            for cat in (category, "all"):
                h_ = hits.setdefault((L, cat), np.zeros(len(WIDTHS)))
                for i, b in enumerate(WIDTHS):
                    h_[i] += np.sum(np.any(order[:, :b] == target[:, None], axis=-1))
                totals[L, cat] = totals.get((L, cat), 0) + len(t)
    return {L: {cat: {**{f"top{b}": float(h[i] / totals[L, cat]) for i, b in enumerate(WIDTHS)}, "in_head": 1.0,
                      "positions": int(totals[L, cat])} for (L_, cat), h in hits.items() if L_ == L} for L in layers}


def main(argv=None) -> int:
    from tinyspec.drafters.mtp import DEFAULT_WEIGHTS

    p = argparse.ArgumentParser(prog="python -m bench.drafter_coverage", description=__doc__.splitlines()[0])
    p.add_argument("--drafters", default=str(DEFAULT_WEIGHTS), help="comma-separated MTP drafter files")
    p.add_argument("--results", default=str(BENCH / "results.json"), help="the bench run holding the greedy ids")
    p.add_argument("--weights", default=None, help="converted target weights (default: weights/gemma-3-270m)")
    p.add_argument("--early-exit", default=None, metavar="L,...",
                   help="score early exit after these numbers of blocks instead of MTP drafters")
    args = p.parse_args(argv)
    from tinyspec.model import Model
    from tinyspec.tokenizer import Tokenizer
    from tinyspec.weights import ensure_converted

    from .prompts import load_prompts

    directory = ensure_converted(args.weights)
    model = Model.load(directory, backend="numba")
    tok = Tokenizer.from_file(directory / "tokenizer.json")
    results = json.loads(Path(args.results).read_text())
    prompts = {p["id"]: p for p in load_prompts()}
    sequences = []
    for r in results["prompts"]:
        prompt = tok.encode(prompts[r["id"]]["prompt"])
        greedy = r["modes"]["greedy"]["vanilla"]["ids"]
        sequences.append((r["category"], list(prompt) + list(greedy), len(prompt)))
    print(f"teacher-forced depth-1 coverage of the target's greedy token on {len(sequences)} bench prompts "
          f"({args.results})\n")
    print("| drafter | category | positions | top-1 | top-2 | top-4 | top-8 | in the head's vocabulary |")
    print("|---|---|---|---|---|---|---|---|")
    if args.early_exit:
        layers = [int(L) for L in args.early_exit.split(",")]
        if not all(1 <= L < model.cfg.num_layers for L in layers):
            p.error(f"--early-exit: numbers of blocks from 1 to {model.cfg.num_layers - 1}, got {args.early_exit}")
        covs = {f"early-exit:{L}": cov for L, cov in early_exit_coverage(model, layers, sequences).items()}
    else:
        covs = {Path(path).name: coverage(model, path, sequences) for path in args.drafters.split(",")}
    for name, cov in covs.items():
        for cat, v in cov.items():
            print(f"| {name} | {cat} | {v['positions']} | {v['top1']:.3f} | {v['top2']:.3f} | "
                  f"{v['top4']:.3f} | {v['top8']:.3f} | {v['in_head']:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
