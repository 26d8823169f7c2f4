"""Chains against trees, per drafter and category: tokens per target forward, depth-1 acceptance, identical output.

    python -m bench.trees                                   # every drafter, every category (greedy)
    python -m bench.trees --drafters ngram:8 --categories code-edit,prose --budget 8

For each prompt of bench/prompts.jsonl the target decodes greedily (vanilla), then speculatively with each
drafter twice: a chain of k drafts, and a tree of `budget` nodes (depth at most k). It prints, per drafter and
category, the mean tokens per target forward of each, the fraction of steps whose first guess (chain) or
first level (tree) held the target's token, and whether every output equals vanilla's. These are counts, not
times: they do not depend on the machine's load. (Speed: `python -m bench --tree N`.)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tinyspec.decoding import generate_ids
from tinyspec.drafters import make_drafter
from tinyspec.model import Model
from tinyspec.speculative import SpecStats, speculative_generate_ids
from tinyspec.tokenizer import Tokenizer
from tinyspec.weights import ensure_converted

PROMPTS = Path(__file__).resolve().parent / "prompts.jsonl"
SHAPES = {"ngram:8": (8, 8), "early-exit:6": (4, 4), "mtp": (4, 4)}  # drafter: (k = the chain's length and the
#                                                                    tree's depth, the tree's node budget)


def run(model, drafter_name, ids, n, k, budget):
    trace, stats = [], SpecStats()
    out = speculative_generate_ids(model, make_drafter(drafter_name), ids, n, k=k, tree=budget, trace=trace,
                                   stats=stats, stop_at_eos=False)
    steps = [s for s in trace if s.drafted]
    first = sum(s.accepted > 0 for s in steps) / len(steps) if steps else 0.0
    return out, stats.tokens_per_forward, first


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--drafters", default=",".join(SHAPES), help="comma-separated drafter names")
    p.add_argument("--categories", default=None, help="comma-separated categories (default: all)")
    p.add_argument("--budget", type=int, default=None, help="the trees' node budget (default: per drafter)")
    p.add_argument("--k", type=int, default=None, help="the chains' length and the trees' depth (default: per drafter)")
    p.add_argument("--json", default=None, help="also write the per-prompt rows to this file")
    args = p.parse_args(argv)
    directory = ensure_converted()
    model, tok = Model.load(directory), Tokenizer.from_file(directory / "tokenizer.json")
    prompts = [json.loads(line) for line in PROMPTS.read_text().splitlines() if line.strip()]
    if args.categories:
        prompts = [r for r in prompts if r["category"] in args.categories.split(",")]
    rows = []
    for r in prompts:
        ids = tok.encode(r["prompt"])
        vanilla = generate_ids(model, ids, r["max_new_tokens"], stop_at_eos=False)
        for name in args.drafters.split(","):
            k, budget = SHAPES.get(name, (4, 4))
            k, budget = args.k or k, args.budget or budget
            chain = run(model, name, ids, r["max_new_tokens"], k, 0)
            tree = run(model, name, ids, r["max_new_tokens"], k, budget)
            rows.append(dict(id=r["id"], category=r["category"], drafter=name, k=k, budget=budget,
                             chain_tpf=chain[1], tree_tpf=tree[1], chain_first=chain[2], tree_first=tree[2],
                             identical=chain[0] == vanilla and tree[0] == vanilla))
            print(f"{r['id']:28} {name:13} chain {chain[1]:5.2f}  tree {tree[1]:5.2f} tokens/forward  "
                  f"first level {chain[2]:.2f} -> {tree[2]:.2f}  identical {rows[-1]['identical']}", flush=True)
    print("\n| drafter | category | k | budget | chain tokens/forward | tree tokens/forward | first guess: chain | "
          "first level: tree | identical |\n|---|---|---|---|---|---|---|---|---|")
    for name in args.drafters.split(","):
        for cat in sorted({r["category"] for r in rows}):
            sel = [r for r in rows if r["drafter"] == name and r["category"] == cat]
            if sel:
                mean = lambda key: sum(r[key] for r in sel) / len(sel)
                print(f"| {name} | {cat} | {sel[0]['k']} | {sel[0]['budget']} | {mean('chain_tpf'):.2f} | "
                      f"{mean('tree_tpf'):.2f} | {mean('chain_first'):.2f} | {mean('tree_first'):.2f} | "
                      f"{sum(r['identical'] for r in sel)}/{len(sel)} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0 if all(r["identical"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
