"""Choose a drafter's tree shape by replaying greedy runs: counts in milliseconds, no model.

    python -m bench.replay                   # the sweep: ngram:8 and ngram:3, every (depth k, budget N), fixed
                                             # and adaptive, on the 30 prompts of bench/results.json
    python -m bench.replay --real            # first check the replay against the real model (2 short prompts)

Greedy speculative decoding emits the target's greedy continuation, whatever the drafter. So the number of
target forwards a greedy run makes, and the nodes each forward verifies, depend only on the prompt, that
continuation, the drafter and the budget rule: not on the model's arithmetic. A replay target is a stand-in
that knows the continuation (bench/results.json holds every prompt's vanilla greedy tokens) and nothing else:

# 1. the target   a row whose context is the prompt plus the first n tokens of the continuation gets logits
#                 one-hot on token n + 1 of the continuation; every other row (a guess that left the sequence)
#                 one-hot on a token the sequence never holds. The greedy walk reads a row only while every
#                 token before it was accepted, so it never reads the second kind: if it did, the run's output
#                 would differ from the continuation, and `replay` raises. A row that would need a token past
#                 the continuation raises too (the loop's depth cap, max_new_tokens, never asks for one)
# 2. one run      the real loop (speculative_generate: the real NgramDrafter, propose_tree, verify_tree, the
#                 break-even rules) on the replay target, counting forwards and the nodes of each step
# 3. prediction   each step's forward over n nodes costs v(n + 1) single-token forwards (adaptive.VerifyCost,
#                 default constants), vanilla's one v(1) = 1 per token, so
#                     predicted speedup = decode tokens / sum over steps of v(nodes + 1)
#                 The prefill is the same for both and is left out; drafting is taken as free (prompt lookup)
# 4. the sweep    every shape, per category and over all prompts; the recommended shape is the best overall
#                 prediction among those never predicted below 1.0x on any prompt

A prediction, not a timing: real speed is `python -m bench --drafters ...` (the shapes' specs are printed).
Token ids are renumbered densely per prompt before replaying (prompt lookup only compares ids for equality),
so a row is a few hundred logits, not 262144.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .prompts import CATEGORIES, load_prompts

RESULTS = Path(__file__).resolve().parent / "results.json"
DEPTHS = (4, 8, 12, 16, 24, 32, 48, 63)
BUDGETS = ("chain", "k", "2k", 16, 24, 32, 48, 63)  # "k", "2k": relative to the depth; a tree needs k <= N <= 63


# --- 1. The replay target ------------------------------------------------------------------------------------

class ReplayModel:
    """A target that knows one greedy sequence: `sequence` = the prompt followed by its greedy continuation.

    Everything the speculative loop asks of a model (`cfg`, `new_cache`, `hidden`, `head`, `forward`), with a
    real cache of tokens (tinyspec.toy.TokenCache: rollback and `keep` as a KV cache's). A row's logits depend
    on its context only: the cache rows 0 .. prefix-1, its tree ancestors and itself (tree.TreeLayout), or
    every row before it (a chain).

        >>> m = ReplayModel([2, 7, 7, 9, 4], vocab_size=12, eos_token_id=1, unseen=11)
        >>> cache = m.new_cache()
        >>> m.forward([2, 7], cache).argmax(-1).tolist()         # after [2] comes 7; after [2, 7] comes 7
        [7, 7]
        >>> m.forward([5, 9], cache).argmax(-1).tolist()         # [2, 7, 5] left the sequence: "unseen"
        [11, 11]
    """

    backend = "replay"

    def __init__(self, sequence, vocab_size: int, eos_token_id: int, unseen: int):
        from tinyspec.config import tiny_config
        from tinyspec.fast.kernels import MAX_INVARIANT_ROWS

        self.truth = np.asarray(sequence, dtype=np.int64)  # [T] prompt + continuation
        if not 0 <= unseen < vocab_size or (self.truth == unseen).any():
            raise ValueError(f"unseen={unseen} must be a token id below {vocab_size} that the sequence never holds")
        self.unseen = unseen  # every off-sequence row's argmax
        self.cfg = tiny_config(vocab_size=vocab_size, hidden_size=vocab_size, eos_token_id=eos_token_id,
                               bos_token_id=0, pad_token_id=0, unk_token_id=0,
                               max_position_embeddings=len(self.truth) + MAX_INVARIANT_ROWS)

    def new_cache(self, capacity: int = 16):
        from tinyspec.toy import TokenCache

        return TokenCache(capacity)

    def hidden(self, tokens, cache, layers: int | None = None, tree=None):  # [M] -> [M, V]
        """Write the M tokens into the cache; each row's "hidden state" is its logits row (the head is identity)."""
        tokens = np.asarray(tokens, dtype=np.int64)  # [M]
        start, M = cache.length, len(tokens)
        cache.reserve(start + M)
        cache.tokens[start: start + M] = tokens
        cache.length = start + M
        prefix = start if tree is None else tree.prefix
        ancestors = [range(start, start + r) for r in range(M)] if tree is None else tree.ancestors  # [M] rows
        known = np.array_equal(cache.tokens[:prefix], self.truth[:prefix])  # the context every row sees
        rows = np.zeros((M, self.cfg.vocab_size), dtype=np.float32)  # [M, V]
        for r in range(M):
            path = cache.tokens[list(ancestors[r]) + [start + r]]  # the row's tokens after the prefix
            n = prefix + len(path)  # tokens the row has seen: its next token is truth[n]
            if known and np.array_equal(path, self.truth[prefix:n]):
                if n >= len(self.truth):
                    raise ValueError(f"the replay knows {len(self.truth)} tokens and the loop asked for the one after "
                                     f"them: replay with max_new_tokens <= the continuation's length")
                rows[r, self.truth[n]] = 1.0
            else:
                rows[r, self.unseen] = 1.0
        return rows

    def head(self, h):  # [M, V] -> [M, V]
        return h

    def forward(self, tokens, cache, last_only: bool = False, layers: int | None = None, tree=None):  # [M] -> [M, V]
        h = self.hidden(tokens, cache, layers, tree)
        return h[-1:] if last_only else h


# --- 2. One replayed run, counted ----------------------------------------------------------------------------

@dataclass
class Count:
    """What one greedy speculative run did, step by step."""
    tokens: int  # decode tokens: new tokens but the first (the prefill's logits chose it)
    forwards: int  # target forwards, the prefill included
    steps: int  # speculative steps (one forward each)
    drafted: int  # nodes (chain: drafts) verified, summed over the steps
    accepted: int  # nodes kept, summed over the steps
    nodes: list = field(default_factory=list)  # [steps] nodes verified by each step's forward

    def cost(self, v) -> float:
        """The decode forwards' time in single-token forwards: sum over steps of v(nodes + 1)."""
        return sum(v(n + 1) for n in self.nodes)


def count(stats, trace) -> Count:
    """A Count from a run's SpecStats and StepTraces (a real run's or a replay's)."""
    return Count(stats.new_tokens - 1, stats.target_forwards, stats.steps, stats.drafted, stats.accepted,
                 [len(s.drafted) for s in trace])


def dense(prompt, continuation, eos_token_id: int):
    """Renumber the ids 0, 1, 2, ... in order of first appearance (the EOS id too, present or not), plus one
    unseen id. Returns (prompt, continuation, vocab_size, eos, unseen) in the new ids.

        >>> dense([2, 900, 31], [900, 5], eos_token_id=1)
        ([1, 2, 3], [2, 4], 6, 0, 5)
    """
    ids = {}
    for t in [eos_token_id, *prompt, *continuation]:
        ids.setdefault(int(t), len(ids))
    return ([ids[int(t)] for t in prompt], [ids[int(t)] for t in continuation], len(ids) + 1, ids[eos_token_id],
            len(ids))


def replay(drafter_name: str, prompt, continuation, max_new_tokens: int, k: int, tree: int = 0,
           adaptive: bool = False, verify_cost=None, eos_token_id: int = 1, stop_at_eos: bool = True) -> Count:
    """Replay one greedy run of `drafter_name` (a tinyspec drafter name) on the continuation vanilla greedy
    decoding gave (its new tokens, as many as it emitted), with a chain of k (tree 0) or a tree of `tree` nodes
    at most k deep, fixed or adaptive (the break-even rules with `verify_cost`, default adaptive.VerifyCost()).
    ValueError if the run does not emit exactly the continuation."""
    from tinyspec.adaptive import VerifyCost
    from tinyspec.drafters import make_drafter
    from tinyspec.speculative import SpecStats, speculative_generate_ids

    p, c, vocab, eos, unseen = dense(prompt, continuation, eos_token_id)
    model = ReplayModel(p + c, vocab, eos, unseen)
    stats, trace = SpecStats(), []
    out = speculative_generate_ids(model, make_drafter(drafter_name), p, max_new_tokens, k=k, tree=tree,
                                   adaptive=adaptive, verify_cost=verify_cost or VerifyCost(), stats=stats,
                                   trace=trace, stop_at_eos=stop_at_eos)
    if out != c:
        raise ValueError(f"the replay of {drafter_name} (k={k}, tree={tree}, adaptive={adaptive}) emitted "
                         f"{len(out)} tokens that are not the continuation: the loop read a row off the sequence")
    return count(stats, trace)


# --- 3. The prompts and their continuations -------------------------------------------------------------------

def load_runs(results=RESULTS, tokenizer=None) -> list[dict]:
    """Each prompt of bench/prompts.jsonl with its ids and the vanilla greedy continuation recorded in results
    (a bench results.json): {"id", "category", "prompt", "continuation", "max_new_tokens", "recorded"} where
    "recorded" holds the bench's greedy speculative runs of that prompt, by drafter spec."""
    from tinyspec.tokenizer import Tokenizer
    from tinyspec.weights import default_weights_dir

    path = Path(results)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `python -m bench` first (it writes the greedy tokens)")
    recorded = {p["id"]: p for p in json.loads(path.read_text())["prompts"]}
    tok = tokenizer or Tokenizer.from_file(default_weights_dir() / "tokenizer.json")
    runs = []
    for p in load_prompts():
        if p["id"] not in recorded:
            raise ValueError(f"{path} has no run of prompt {p['id']!r}: rerun `python -m bench` on every prompt")
        r, ids = recorded[p["id"]], tok.encode(p["prompt"])
        greedy = r["modes"]["greedy"]
        if len(ids) != r["prompt_tokens"] or r["max_new_tokens"] != p["max_new_tokens"]:
            raise ValueError(f"prompt {p['id']!r} differs from the one {path} measured: rerun `python -m bench`")
        runs.append(dict(id=p["id"], category=p["category"], prompt=ids, max_new_tokens=p["max_new_tokens"],
                         continuation=greedy["vanilla"]["ids"],
                         recorded={n: e for n, e in greedy.items() if n != "vanilla"}))
    return runs


# --- 4. Checks: the bench's recorded runs, the real model -------------------------------------------------------

def check_recorded(runs, settings, verify_cost) -> tuple[dict, list]:
    """Replay every greedy speculative run recorded in results.json (chains and trees, by their bench spec; the
    break-even rules with `verify_cost`, the v the recorded runs' rules used) and compare forwards, steps,
    drafted and accepted. Returns ({"fixed": [agreeing, total], "adaptive": [...]}, the disagreements)."""
    from .measure import parse_drafter

    tally, differ = {"fixed": [0, 0], "adaptive": [0, 0]}, []
    for run in runs:
        for bench_spec, e in run["recorded"].items():
            name, k, adaptive, tree = parse_drafter(bench_spec, settings.get("k", 4), settings.get("adaptive", False),
                                                    settings.get("tree", 0))
            c = replay(name, run["prompt"], run["continuation"], run["max_new_tokens"], k, tree, adaptive, verify_cost)
            mine = (c.forwards, c.steps, c.drafted, c.accepted)
            theirs = (e["target_forwards"], e["steps"], e["drafted"], e["accepted"])
            t = tally["adaptive" if adaptive else "fixed"]
            t[0] += mine == theirs
            t[1] += 1
            if mine != theirs:
                differ.append(f"{run['id']} {bench_spec}: replay {mine}, recorded {theirs} "
                              "(forwards, steps, drafted, accepted)")
    return tally, differ


REAL_CHECK = (("count-to-100", 32), ("numbered-steps", 32))  # short prompts, at most 32 new tokens
REAL_SHAPES = (("ngram:8", 8, 0, False), ("ngram:8", 8, 16, False), ("ngram:8", 16, 24, True))  # name, k, N, adaptive


def check_real(runs, out=print) -> bool:
    """The replay's counts against the real model's (Gemma 3 270M, numba) on REAL_CHECK, for a chain, a fixed
    tree and an adaptive tree. True if every count and every step's node count agree."""
    from tinyspec.drafters import make_drafter
    from tinyspec.model import Model
    from tinyspec.speculative import SpecStats, speculative_generate_ids

    model, by_id, ok = Model.load(backend="numba"), {r["id"]: r for r in runs}, True
    for prompt_id, n in REAL_CHECK:
        run = by_id[prompt_id]
        for name, k, tree, adaptive in REAL_SHAPES:
            stats, trace = SpecStats(), []
            ids = speculative_generate_ids(model, make_drafter(name), run["prompt"], n, k=k, tree=tree,
                                           adaptive=adaptive, stats=stats, trace=trace)
            real = count(stats, trace)
            mine = replay(name, run["prompt"], run["continuation"][:n], n, k, tree, adaptive)
            agree = real == mine and ids == run["continuation"][:n]
            ok &= agree
            out(f"real check {prompt_id} ({n} tokens) {label(name, k, tree, adaptive)}: forwards {real.forwards} / "
                f"{mine.forwards} replayed, steps {real.steps} / {mine.steps}, accepted {real.accepted} / "
                f"{mine.accepted}, nodes per step equal {real.nodes == mine.nodes}, output = results.json's "
                f"{ids == run['continuation'][:n]}: {'agree' if agree else 'DIFFER'}")
    return ok


# --- 5. The sweep ------------------------------------------------------------------------------------------------

def shapes(depths=DEPTHS, budgets=BUDGETS, most: int = 63) -> list[tuple[int, int]]:
    """(k, N) pairs, N = 0 for a chain of k; trees keep k <= N <= most, each pair once.

        >>> shapes((4, 32), ("chain", "2k", 16, 48))
        [(4, 0), (4, 8), (4, 16), (4, 48), (32, 0), (32, 48)]
    """
    out = []
    for k in depths:
        for b in budgets:
            n = {"chain": 0, "k": k, "2k": 2 * k}.get(b, b)
            if (n == 0 or k <= n <= most) and (k, n) not in out:
                out.append((k, n))
    return out


def label(name: str, k: int, tree: int, adaptive: bool) -> str:
    """A shape as `python -m bench` takes it: fixed shapes as one spec, adaptive ones with their --k.

        >>> label("ngram:8", 16, 24, False), label("ngram:8", 16, 24, True), label("ngram:3", 8, 0, True)
        ('ngram:8@k16/tree24', '--k 16 ngram:8/tree24', '--k 8 ngram:3')
    """
    budget = f"/tree{tree}" if tree else ""
    return f"--k {k} {name}{budget}" if adaptive else f"{name}@k{k}{budget}"


def sweep(runs, drafters, depths=DEPTHS, budgets=BUDGETS, progress=None) -> list[dict]:
    """One row per (drafter, k, N, rule, prompt): the replayed counts."""
    rows = []
    for name in drafters:
        for k, tree in shapes(depths, budgets):
            for adaptive in (False, True):
                for run in runs:
                    c = replay(name, run["prompt"], run["continuation"], run["max_new_tokens"], k, tree, adaptive)
                    rows.append(dict(drafter=name, k=k, tree=tree, adaptive=adaptive, id=run["id"],
                                     category=run["category"], count=c))
                if progress:
                    progress(f"{label(name, k, tree, adaptive)} done")
    return rows


def summarise(rows, v) -> list[dict]:
    """Per shape and per category (and "all"): tokens per forward, nodes per step, the predicted speedup
    (sum of tokens / sum of v(nodes + 1)), the worst prompt's prediction and id, the largest step."""
    groups = {}
    for r in rows:
        key = (r["drafter"], r["k"], r["tree"], r["adaptive"])
        for cat in (r["category"], "all"):
            groups.setdefault(key + (cat,), []).append(r)
    out = []
    for (name, k, tree, adaptive, cat), rs in groups.items():
        counts = [r["count"] for r in rs]
        tokens, cost = sum(c.tokens for c in counts), sum(c.cost(v) for c in counts)
        steps = sum(c.steps for c in counts)
        worst = min(rs, key=lambda r: r["count"].tokens / r["count"].cost(v))
        out.append(dict(drafter=name, k=k, tree=tree, adaptive=adaptive, category=cat, prompts=len(counts),
                        tokens_per_forward=tokens / steps, nodes_per_step=sum(c.drafted for c in counts) / steps,
                        speedup=tokens / cost, worst=worst["count"].tokens / worst["count"].cost(v),
                        worst_id=worst["id"], most_nodes=max(max(c.nodes, default=0) for c in counts)))
    return out


# --- 6. The tables -----------------------------------------------------------------------------------------------

def shape_text(s) -> str:
    rule = ", adaptive" if s["adaptive"] else ", fixed"
    return f"k={s['k']}, " + (f"N={s['tree']}" if s["tree"] else "chain") + rule


def spec(s) -> str:
    return f"`{label(s['drafter'], s['k'], s['tree'], s['adaptive'])}`"


def table(title, rows) -> list[str]:
    lines = [f"| {title} | drafter | shape | bench spec | tokens/forward | nodes/step | predicted speedup | "
             "worst prompt |", "|---|---|---|---|---|---|---|---|"]
    for s in rows:
        lines.append(f"| {s['category']} | {s['drafter']} | {shape_text(s)} | {spec(s)} | "
                     f"{s['tokens_per_forward']:.2f} | {s['nodes_per_step']:.1f} | {s['speedup']:.2f}x | "
                     f"{s['worst']:.2f}x {s['worst_id']} |")
    return lines


def rank(rows) -> list[dict]:  # best prediction first; on a tie the higher floor, then the smaller shape
    return sorted(rows, key=lambda s: (-round(s["speedup"], 6), -s["worst"], s["tree"], s["k"]))


def report(summary, drafters, v, floor: float = 1.0, best: int = 3) -> list[str]:
    """The markdown: the best shapes per category and overall, the best trees, reference chains, the
    recommendation (the best overall prediction of drafters[0] among shapes no prompt predicts below `floor`)."""
    first = drafters[0]
    mine = [s for s in summary if s["drafter"] == first]
    overall = [s for s in summary if s["category"] == "all"]
    lines = [f"Predicted from replayed counts: speedup = decode tokens / sum over steps of v(nodes + 1), "
             f"v(m) = {v(2):.2f} + {v.per_token:.2f} (m - 2) (adaptive.VerifyCost's defaults, fitted on forwards "
             "of m <= 17 tokens: beyond that the line is extrapolated). The prefill is the same for both and left "
             "out; drafting is counted as free. Worst prompt: the lowest per-prompt prediction.", ""]
    lines += [f"### Best {best} shapes per category ({first})", ""]
    lines += table("category", [s for c in (*CATEGORIES, "all")
                                for s in rank([s for s in mine if s["category"] == c])[:best]]) + [""]
    lines += [f"### Trees: the best fixed and the best adaptive tree per category ({first})", ""]
    lines += table("category", [rank([s for s in mine if s["category"] == c and s["tree"] and s["adaptive"] == a])[0]
                                for c in (*CATEGORIES, "all") for a in (False, True)]) + [""]
    lines += [f"### Best {2 * best + 2} shapes over all prompts, every drafter", ""]
    lines += table("prompts", rank(overall)[: 2 * best + 2]) + [""]
    bench_chains = ((0, 16, True), (0, 8, False))  # (N, k, adaptive) of `python -m bench`'s ngram:8 and @k8
    refs = [s for s in overall if s["drafter"] == first and (s["tree"], s["k"], s["adaptive"]) in bench_chains]
    refs += [rank([s for s in overall if s["drafter"] == d])[0] for d in drafters[1:]]
    lines += [f"### For reference: {first}'s chains --k 16 adaptive (the bench's default) and @k8, the other "
              "drafters' best", ""]
    lines += table("prompts", refs) + [""]
    adaptive_trees = [s for s in mine if s["category"] == "all" and s["tree"] and s["adaptive"]]
    if adaptive_trees:
        lines.append(f"The largest tree any adaptive {first} run verified in one step: "
                     f"{max(s['most_nodes'] for s in adaptive_trees)} node(s), whatever its budget N and depth k.")
    candidates = [s for s in mine if s["category"] == "all"]
    safe = rank([s for s in candidates if s["worst"] >= floor])
    if safe:
        s = safe[0]
        lines.append(f"**Recommended for {first}: {shape_text(s)}** ({spec(s)}): predicted {s['speedup']:.2f}x over "
                     f"all {s['prompts']} prompts, {s['tokens_per_forward']:.2f} tokens/forward, "
                     f"{s['nodes_per_step']:.1f} nodes/step, no prompt below {s['worst']:.2f}x ({s['worst_id']}).")
    else:
        top, high = rank(candidates)[0], max(s["worst"] for s in candidates)
        floor_best = rank([s for s in candidates if s["worst"] == high])[0]
        lines.append(f"**No {first} shape is predicted at or above {floor:.2f}x on every prompt.** The highest floor, "
                     f"{high:.3f}x ({floor_best['worst_id']}), is {shape_text(floor_best)} ({spec(floor_best)}, "
                     f"{floor_best['speedup']:.2f}x overall); the best overall, {shape_text(top)} ({spec(top)}), "
                     f"predicts {top['speedup']:.2f}x with a floor of {top['worst']:.3f}x ({top['worst_id']}). "
                     f"`--floor F` recommends under a lower floor.")
    trees = rank([s for s in candidates if s["tree"]])
    if trees:
        safe_trees = [s for s in trees if s["worst"] >= floor]
        s = (safe_trees or trees)[0]
        lines.append(f"The best tree{'' if safe_trees else ' (none keeps the floor)'}: {shape_text(s)} ({spec(s)}), "
                     f"{s['speedup']:.2f}x overall, {s['tokens_per_forward']:.2f} tokens/forward, "
                     f"{s['nodes_per_step']:.1f} nodes/step, floor {s['worst']:.3f}x ({s['worst_id']}).")
    lines += ["", "A prediction from v(m), not a timing. Real speed: `python -m bench --drafters "
              "ngram:8,ngram:8@kK/treeN` (an adaptive shape: `python -m bench --k K --drafters ngram:8/treeN`)."]
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--drafters", default="ngram:8,ngram:3", help="comma-separated drafter names, the first "
                   "recommended (default ngram:8,ngram:3)")
    p.add_argument("--results", default=str(RESULTS), help="the bench results.json holding the greedy tokens")
    p.add_argument("--real", action="store_true", help="first check the replay against the real model "
                   "(Gemma 3 270M, 2 short prompts, a chain and two trees)")
    p.add_argument("--recorded-cost", default="0.40,0.12", metavar="FIRST,PER",
                   help="the VerifyCost(first_extra, per_token) the break-even rule of the runs in --results used "
                   "(default 0.40,0.12: the default at commit 95e56ff, which measured bench/results.json)")
    p.add_argument("--floor", type=float, default=1.0, help="recommend only shapes that no prompt predicts below "
                   "this speedup (default 1.0)")
    p.add_argument("--json", default=None, help="also write every replayed run's counts to this file")
    args = p.parse_args(argv)
    from tinyspec.adaptive import VerifyCost

    drafters, v = args.drafters.split(","), VerifyCost()
    runs = load_runs(args.results)
    settings = json.loads(Path(args.results).read_text())["settings"]
    recorded_v = VerifyCost(*(float(x) for x in args.recorded_cost.split(",")))
    tally, differ = check_recorded(runs, settings, recorded_v)
    print(f"replay = {args.results}'s greedy speculative runs, in forwards, steps, drafted and accepted: "
          f"{tally['fixed'][0]}/{tally['fixed'][1]} fixed-k runs, {tally['adaptive'][0]}/{tally['adaptive'][1]} "
          f"adaptive ones (their rule's v: VerifyCost({recorded_v.first_extra}, {recorded_v.per_token}))")
    for line in differ:
        print("  differs:", line)
    if args.real and not check_real(runs):
        print("the replay disagrees with the real model: its sweep would not be a measurement")
        return 1
    rows = sweep(runs, drafters)
    print("\n".join(["", *report(summarise(rows, v), drafters, v, args.floor)]))
    if args.json:
        Path(args.json).write_text(json.dumps([{**r, "count": vars(r["count"])} for r in rows]))
    return 0 if not differ else 1


if __name__ == "__main__":
    raise SystemExit(main())
