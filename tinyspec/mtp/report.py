"""How good is the MTP drafter? `python -m tinyspec.mtp.report` measures it on bench prompts it never saw.

For every prompt of the chosen categories (bench/prompts.jsonl), batch 1, greedy: vanilla decoding and
speculative decoding with the MTP drafter, interleaved (V S V S ...) so both see the same machine load, the
median of `repeats` timings each; the speculative tokens must equal the vanilla ones. Per category:

    first      share of speculative steps whose first draft the target accepted
    accept     accepted drafts / drafted tokens
    tok/fwd    new tokens per target forward (the prefill excluded)
    speedup    vanilla decode time / speculative decode time, summed over the category's prompts
    c          drafting time per drafted token / vanilla time per decoded token (DESIGN.md's cost ratio)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np

from ..decoding import Stats, generate
from ..measure import TimedDrafter
from ..sampling import SamplingParams
from ..speculative import SpecStats, speculative_generate


def run_pair(model, drafter, ids, n: int, k: int, params=SamplingParams(), verifier="greedy"):
    """One vanilla and one speculative run of the same prompt: (vanilla tokens, decode seconds), (tokens, stats)."""
    vs = Stats()
    vanilla = list(generate(model, ids, n, params, stats=vs))
    timed, ss, trace = TimedDrafter(drafter), SpecStats(), []
    spec = list(speculative_generate(model, timed, ids, n, params, verifier, k, stats=ss, trace=trace))
    first = sum(1 for s in trace if s.drafted and s.accepted >= 1) / max(1, sum(1 for s in trace if s.drafted))
    return {"vanilla": vanilla, "vanilla_seconds": vs.seconds - vs.prefill_seconds, "spec": spec,
            "spec_seconds": ss.seconds - ss.prefill_seconds, "draft_seconds": timed.propose_seconds,
            "drafted": ss.drafted, "accepted": ss.accepted, "steps": ss.steps, "forwards": ss.target_forwards,
            "first": first, "new_tokens": ss.new_tokens}


def teacher_forced_vs_loop(model, drafter, ids, n: int) -> dict:
    """The training metric next to the real thing, on one prompt (greedy).

    Teacher forcing: the target runs once over prompt + its own greedy continuation; at every continuation
    position the drafter's first draft is computed from those features (`train.first_drafts`), as training
    and `evaluate` do. In the loop: speculative decoding with k = 1, whose every step drafts one token.
    Returns both agreement rates, the share of loop drafts equal to the teacher-forced draft at the same
    position (1.0 unless training and drafting disagree about inputs: positions, hidden state, cache rows,
    embedding scale), and how often the target's choice lies in the head's vocabulary subset at all."""
    from . import data
    from .train import first_drafts

    vanilla = list(generate(model, ids, n))
    seq = np.array(list(ids) + vanilla)
    c, P = drafter.cfg, len(ids)
    f = data.prefill_features(model, seq, c.source_layers)  # argmax[t]: the target's choice after position t
    t = np.arange(P - 1, len(seq) - 1)  # positions whose next token is a generated one
    E = model.weights.embed_tokens
    tf = first_drafts(drafter.params, c, f, E, np.ascontiguousarray(E[drafter.vocab]), drafter.vocab, t)[0]  # [R] ids
    trace = []
    spec = list(speculative_generate(model, drafter, ids, n, k=1, trace=trace))
    steps = [s for s in trace if s.drafted]
    same = [s.drafted[0] == tf[s.position - 1 - (P - 1)] for s in steps]  # d1 follows position s.position - 1
    in_subset = np.isin(f.argmax[t], drafter.vocab)
    return {"identical": spec == vanilla, "teacher_forced": float(np.mean(tf == f.argmax[t])),
            "loop_first": float(np.mean([s.accepted >= 1 for s in steps])) if steps else 0.0,
            "loop_equals_teacher_forced": float(np.mean(same)) if same else 1.0,
            "coverage": float(np.mean(in_subset)), "positions": len(t), "loop_steps": len(steps)}


def describe_training(record: dict) -> list[str]:
    """The record a drafter's weights carry (`meta["report"]`, written by train.train) as lines to print: the
    command, its budget and time, the data, the head's coverage curve, the final held-out agreement and the
    curve of evaluations. A key the record lacks is skipped (drafters trained by older versions of
    train.py recorded fewer and other keys; those are named at the end).

    >>> describe_training({"tokens": 1200, "minutes": 0.5, "curve": [{"tokens": 0, "self_acc1": 0.25}]})
    ['budget: 1,200 training tokens, 0.5 min', 'held-out curve:', '  tokens        0  self_acc1 0.250']
    """
    lines, shown = [], {"command", "threads", "tokens", "steps", "jobs", "minutes", "data", "coverage_curve",
                        "init_eval", "final_eval", "curve"}
    if "command" in record:
        threads = f"  ({record['threads']} thread{'s' * (record['threads'] != 1)})" if "threads" in record else ""
        lines.append(f"command: {record['command']}{threads}")
    budget = [f"{record['tokens']:,} training tokens" if "tokens" in record else None,
              f"{record['steps']:,} Adam steps" if "steps" in record else None,
              f"{record['jobs']:,} data jobs" if "jobs" in record else None,
              f"{record['minutes']} min" if "minutes" in record else None]
    if any(budget):
        lines.append("budget: " + ", ".join(b for b in budget if b))
    if isinstance(record.get("data"), dict):
        lines.append("data: " + ", ".join(f"{k} {v}" for k, v in record["data"].items()))
    if record.get("coverage_curve"):
        lines.append("head coverage of the target's held-out choices: " +
                     ", ".join(f"{int(n):,} tokens {share:.3f}" for n, share in record["coverage_curve"].items()))
    for key, when in (("init_eval", "after the fit"), ("final_eval", "saved")):
        if isinstance(record.get(key), dict):  # {set: {metric: value}}, or (older) one flat set
            sets = {k: v for k, v in record[key].items() if isinstance(v, dict)} or {"held-out": record[key]}
            for name, ev in sets.items():
                lines.append(f"{when}, {name}: " + "  ".join(
                    f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in ev.items()))
    if record.get("curve"):
        lines.append("held-out curve:")
        for point in record["curve"]:
            lines.append(f"  tokens {point.get('tokens', 0):8,}" + "".join(
                f"  {k} {v:.3f}" for k, v in point.items() if k != "tokens" and isinstance(v, float)))
    others = [k for k in record if k not in shown]
    if others:
        lines.append("also recorded: " + ", ".join(others))
    return lines


def measure(model, drafter, prompts, k: int = 3, repeats: int = 3, max_new_tokens: int | None = None,
            tokenizer=None, log=print) -> dict:
    """Per category: first-draft acceptance, acceptance, tokens per forward, speedup, c, and identical output."""
    rows = {}
    for p in prompts:
        ids = tokenizer.encode(p["prompt"])  # BOS first
        n = min(p["max_new_tokens"], max_new_tokens or p["max_new_tokens"])
        runs = [run_pair(model, drafter, ids, n, k) for _ in range(repeats)]
        med = lambda key: statistics.median(r[key] for r in runs)  # noqa: E731
        r0 = runs[0]
        row = {"id": p["id"], "category": p["category"], "identical": all(r["spec"] == r["vanilla"] for r in runs),
               "new_tokens": len(r0["vanilla"]), "vanilla_seconds": med("vanilla_seconds"),
               "spec_seconds": med("spec_seconds"), "draft_seconds": med("draft_seconds"),
               "drafted": r0["drafted"], "accepted": r0["accepted"], "steps": r0["steps"], "first": r0["first"],
               "forwards": r0["forwards"]}
        rows.setdefault(p["category"], []).append(row)
        log(f"{p['id']:26s} identical={row['identical']} first={row['first']:.2f} "
            f"accept={row['accepted'] / max(row['drafted'], 1):.2f} "
            f"speedup={row['vanilla_seconds'] / row['spec_seconds']:.2f}x")
    out = {}
    for cat, rs in list(rows.items()) + [("all", [r for rs in rows.values() for r in rs])]:
        steps = sum(r["steps"] for r in rs)
        t1 = sum(r["vanilla_seconds"] for r in rs) / sum(r["new_tokens"] - 1 for r in rs)  # per decoded token
        drafted = sum(r["drafted"] for r in rs)
        out[cat] = {"prompts": len(rs), "identical": all(r["identical"] for r in rs),
                    "first_draft_acceptance": sum(r["first"] * r["steps"] for r in rs) / max(steps, 1),
                    "acceptance": sum(r["accepted"] for r in rs) / max(drafted, 1),
                    "tokens_per_forward": sum(r["new_tokens"] - 1 for r in rs) / max(sum(r["forwards"] - 1 for r in rs), 1),
                    "speedup": sum(r["vanilla_seconds"] for r in rs) / sum(r["spec_seconds"] for r in rs),
                    "c": (sum(r["draft_seconds"] for r in rs) / max(drafted, 1)) / t1,
                    "vanilla_tokens_per_second": 1 / t1}
    return {"k": k, "repeats": repeats, "categories": out, "prompts": rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tinyspec.mtp.report", description=__doc__.splitlines()[0])
    ap.add_argument("--drafter", default=None, help="MTP weights (default weights/mtp-gemma-3-270m.drafter.safetensors)")
    ap.add_argument("--weights", default=None, help="converted target weights (default $TINYSPEC_WEIGHTS)")
    ap.add_argument("--categories", default="prose,code", help="comma-separated bench categories")
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=None)
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)

    from ..drafters.mtp import MTPDrafter
    from ..model import Model
    from ..tokenizer import Tokenizer
    from ..weights import ensure_converted

    directory = ensure_converted(args.weights)
    model = Model.load(directory, backend="numba")
    tokenizer = Tokenizer.from_file(directory / "tokenizer.json")
    drafter = MTPDrafter.load(args.drafter)
    bench = Path(__file__).resolve().parents[2] / "bench" / "prompts.jsonl"
    cats = args.categories.split(",")
    prompts = [p for p in map(json.loads, bench.read_text().splitlines()) if p["category"] in cats]
    result = measure(model, drafter, prompts, args.k, args.repeats, args.max_new_tokens, tokenizer,
                     log=lambda s: print(s, file=sys.stderr))
    print(f"MTP drafter, k={args.k}, greedy, median of {args.repeats} (interleaved with vanilla)")
    print("| category | prompts | identical | first-draft acceptance | acceptance | tokens/forward | speedup | c |")
    print("|---|---|---|---|---|---|---|---|")
    for cat, r in result["categories"].items():
        print(f"| {cat} | {r['prompts']} | {r['identical']} | {r['first_draft_acceptance']:.2f} | "
              f"{r['acceptance']:.2f} | {r['tokens_per_forward']:.2f} | {r['speedup']:.2f}x | {r['c']:.3f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
