"""Measuring: one timed run, a prompt's interleaved repeats and their median, and the numbers of the tables
(speedup, acceptance, the costs c and v, the cost model's prediction), summed over prompts in `Results`.

Every run is timed by `clock`: time.perf_counter (wall time, the default) or time.process_time (the process's
CPU time: `python -m bench --clock cpu`). tinyspec's generators and TimedDrafter take the clock as an
argument, so the drafting time and the run's time are read from the same clock.

tinyspec is imported inside the functions that need it, here and in every module of bench/ that
`python -m bench --replot` imports: the chart can be redrawn by any Python with matplotlib.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .prompts import CATEGORIES

# --- one timed run -------------------------------------------------------------------------------------------


@dataclass
class Run:
    """One generation: what it produced and what it cost."""
    ids: list  # the new tokens
    seconds: float  # by the run's clock (wall or CPU time), prefill included
    prefill_seconds: float
    target_forwards: int  # the prefill included
    drafted: int = 0  # drafts verified (a tree: its nodes)
    accepted: int = 0  # drafts kept (a tree: the nodes of the accepted path)
    steps: int = 0  # speculative steps (one target forward each)
    draft_seconds: float = 0.0  # D summed over the steps
    k_requested: int = 0  # summed over the steps (a tree: its node budget)

    @property
    def decode_tokens(self) -> int:  # the first token comes from the prefill's logits
        return max(len(self.ids) - 1, 0)

    @property
    def decode_seconds(self) -> float:
        return self.seconds - self.prefill_seconds


def split_tree(spec: str) -> tuple[str, int | None]:
    """A drafter spec's "/treeN" suffix, split off: (the rest, N), or (spec, None) without one.

        >>> split_tree("ngram:8@k16/tree24"), split_tree("mtp")
        (('ngram:8@k16', 24), ('mtp', None))
    """
    rest, sep, budget = spec.rpartition("/tree")
    if not sep or "/" in budget:  # no suffix ("/tree" inside a path, e.g. mtp:trees/x.npz, is no suffix)
        return spec, None
    if not budget.isdigit():
        raise ValueError(f"drafter {spec!r}: write a tree as /treeN with N a whole number, after any @kN, "
                         "e.g. ngram:8@k16/tree24")
    return rest, int(budget)


def parse_drafter(name: str, k: int, adaptive: bool, tree: int = 0) -> tuple[str, int, bool, int]:
    """A bench drafter spec: a tinyspec drafter name, then optionally "@kN" for a fixed k = N (no break-even
    rule), then optionally "/treeN" for a tree of up to N guesses a step, at most k deep (/tree0: a chain).
    k, adaptive and tree (--tree) apply to a spec that does not set them. Returns (tinyspec drafter name, k,
    adaptive, tree budget); with adaptive, the tree break-even rule sets each step's budget, up to N.

        >>> parse_drafter("ngram:3@k8", 16, True), parse_drafter("ngram", 16, True)
        (('ngram:3', 8, False, 0), ('ngram', 16, True, 0))
        >>> parse_drafter("ngram:8@k16/tree24", 8, True), parse_drafter("mtp", 4, True, tree=8)
        (('ngram:8', 16, False, 24), ('mtp', 4, True, 8))
    """
    rest, budget = split_tree(name)
    tree = tree if budget is None else budget
    base, sep, fixed = rest.partition("@k")
    if not sep:
        return rest, k, adaptive, tree
    if not fixed.isdigit() or int(fixed) < 1:
        raise ValueError(f"drafter {name!r}: write a fixed k as @kN with N >= 1, e.g. ngram@k8")
    return base, int(fixed), False, tree


def drafter_label(spec: str, tree: int = 0) -> str:
    """A spec as the tables name it: with its tree budget written out (--tree's for a spec without /treeN), and
    without /tree0 (a chain), so that every row says what it ran.

        >>> drafter_label("ngram:8", 16), drafter_label("ngram:8/tree0", 16), drafter_label("mtp@k4/tree8")
        ('ngram:8/tree16', 'ngram:8', 'mtp@k4/tree8')
    """
    rest, budget = split_tree(spec)
    budget = tree if budget is None else budget
    return f"{rest}/tree{budget}" if budget else rest


def run_once(model, ids, max_new_tokens, params, drafter_name=None, verifier="greedy", k=4, adaptive=False,
             clock=time.perf_counter) -> Run:
    """Vanilla decoding (drafter_name None) or speculative decoding of `ids`, timed by `clock`. drafter_name is a
    bench drafter spec (parse_drafter): its /treeN, if any, verifies a tree a step instead of a chain."""
    from tinyspec.decoding import Stats, generate
    from tinyspec.drafters import make_drafter
    from tinyspec.measure import TimedDrafter  # propose_seconds: the drafting time D
    from tinyspec.speculative import SpecStats, speculative_generate

    if drafter_name is None:
        stats = Stats()
        out = list(generate(model, ids, max_new_tokens, params, stats=stats, clock=clock))
        return Run(out, stats.seconds, stats.prefill_seconds, stats.target_forwards)
    drafter_name, k, adaptive, tree = parse_drafter(drafter_name, k, adaptive)
    drafter = TimedDrafter(make_drafter(drafter_name), clock=clock)
    stats = SpecStats()
    from tinyspec.adaptive import VerifyCost

    out = list(speculative_generate(model, drafter, ids, max_new_tokens, params, verifier, k, adaptive=adaptive,
                                    stats=stats, clock=clock, tree=tree,
                                    verify_cost=VerifyCost.for_backend(model.backend)))  # the backend's own v(m)
    return Run(out, stats.seconds, stats.prefill_seconds, stats.target_forwards, stats.drafted, stats.accepted,
               stats.steps, drafter.propose_seconds, drafter.k_requested)


# --- one prompt: interleaved repeats, medians ------------------------------------------------------------------

def median_run(runs: list[Run]) -> Run:
    """The run with the median decode time (the lower middle one for an even count)."""
    ordered = sorted(runs, key=lambda r: r.decode_seconds)
    return ordered[(len(ordered) - 1) // 2]


def measure_prompt(model, ids, max_new_tokens, modes, k=4, adaptive=False, clock=time.perf_counter) -> dict:
    """Time vanilla and speculative decoding of one prompt, interleaved.

    modes: {"greedy": (params, verifier, {drafter: repeats, ...}), "sampled": ...}. In each mode vanilla runs
    as often as its most repeated drafter. Round r runs, mode by mode, vanilla and every drafter with more than
    r repeats, so the two sides of a comparison always see the same machine load. Returns, per mode,
    {"vanilla": {...}, drafter: {...}}: the median run ("run"), whether every repeat gave the same tokens
    ("repeatable"), and every repeat's decode time."""
    plan = {mode: (params, verifier, {None: max(drafters.values(), default=1), **drafters})
            for mode, (params, verifier, drafters) in modes.items()}
    runs = {mode: {name: [] for name in names} for mode, (_, _, names) in plan.items()}
    for r in range(max(max(names.values()) for _, _, names in plan.values())):
        for mode, (params, verifier, names) in plan.items():
            for name, repeats in names.items():
                if r < repeats:
                    runs[mode][name].append(run_once(model, ids, max_new_tokens, params, name, verifier, k, adaptive,
                                                     clock))
    result = {}
    for mode, by_name in runs.items():
        result[mode] = {}
        for name, rs in by_name.items():
            result[mode]["vanilla" if name is None else name] = {
                "run": median_run(rs), "repeatable": all(r.ids == rs[0].ids for r in rs),
                "all_decode_seconds": [round(r.decode_seconds, 4) for r in rs]}
    return result


# --- the numbers: speedups, the cost model, category sums ------------------------------------------------------

def compare(vanilla: list[Run], spec: list[Run], k_default: float, tree: int = 0) -> dict:
    """Sum the median runs of several prompts (one prompt: lists of one) into the table's numbers. tree: the
    runs' tree budget (0: chains). For trees, k is the nodes verified per step, the acceptance the share of
    them on the accepted path, and there is no cost-model prediction (None): the chain's formula has no term
    for a tree's branches."""
    from tinyspec.theory import expected_tokens_per_step

    v_tok = sum(r.decode_tokens for r in vanilla)
    v_sec = sum(r.decode_seconds for r in vanilla)
    s_tok = sum(r.decode_tokens for r in spec)
    s_sec = sum(r.decode_seconds for r in spec)
    drafted = sum(r.drafted for r in spec)
    accepted = sum(r.accepted for r in spec)
    steps = sum(r.steps for r in spec)
    draft_sec = sum(r.draft_seconds for r in spec)
    forwards = sum(r.target_forwards - 1 for r in spec)  # decode forwards (the prefill made token 1)
    out = {
        "vanilla_tokens_per_second": v_tok / v_sec if v_sec > 0 else 0.0,
        "speculative_tokens_per_second": s_tok / s_sec if s_sec > 0 else 0.0,
        "acceptance_rate": accepted / drafted if drafted else 0.0,
        "tokens_per_forward": s_tok / forwards if forwards else 0.0,
        "drafted": drafted, "accepted": accepted, "steps": steps,
        "vanilla_seconds": sum(r.seconds for r in vanilla), "speculative_seconds": sum(r.seconds for r in spec),
    }
    out["speedup"] = (out["speculative_tokens_per_second"] / out["vanilla_tokens_per_second"]
                      if out["vanilla_tokens_per_second"] else 0.0)
    out["end_to_end_speedup"] = ((sum(len(r.ids) for r in spec) / out["speculative_seconds"])
                                 / (sum(len(r.ids) for r in vanilla) / out["vanilla_seconds"])
                                 if out["vanilla_seconds"] > 0 and out["speculative_seconds"] > 0 else 0.0)
    t1 = v_sec / v_tok if v_tok else 0.0  # seconds per vanilla decode step
    if steps and t1 > 0:
        asked = sum(r.k_requested for r in spec) / steps if any(r.k_requested for r in spec) else k_default
        draft = (draft_sec / steps) / t1  # drafting, per step, in single-token forwards
        v = ((s_sec - draft_sec) / steps) / t1  # one verification step's cost, in single-token forwards
        k_mean = drafted / steps  # drafts verified per step (the break-even rule verifies 0..k of those asked)
        # one step emits E(a, k) = (1 - a^(k+1)) / (1 - a) tokens on average and costs draft + v
        predicted = None if tree else expected_tokens_per_step(out["acceptance_rate"], k_mean) / (draft + v)
        out.update(k=k_mean, c=draft / asked, v=v, predicted_speedup=predicted)
    else:
        out.update(k=k_default, c=0.0, v=0.0, predicted_speedup=None if tree else 0.0)
    return out


@dataclass
class Results:
    """Everything one benchmark run measured, ready for the tables."""
    settings: dict
    machine: dict
    prompts: list = field(default_factory=list)  # one dict per prompt: id, category, tokens, per-mode runs
    peers: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)

    def drafters(self, mode):
        names = []
        for p in self.prompts:
            for name in p["modes"].get(mode, {}):
                if name != "vanilla" and name not in names:
                    names.append(name)
        return names

    def rows(self, mode) -> list[dict]:
        """One row per (category, drafter), categories in CATEGORIES order, then an 'all' row per drafter; a row's
        "tree" is its drafter's tree budget (0: a chain), "k" the drafts (a tree: nodes) verified per step."""
        rows = []
        k, adaptive = self.settings.get("k", 4), self.settings.get("adaptive", False)
        for drafter in self.drafters(mode):
            tree = parse_drafter(drafter, k, adaptive)[3]
            groups = [(c, [p for p in self.prompts if p["category"] == c]) for c in CATEGORIES]
            groups.append(("all", list(self.prompts)))
            for category, ps in groups:
                ps = [p for p in ps if drafter in p["modes"].get(mode, {})]
                if not ps:
                    continue
                row = compare([p["modes"][mode]["vanilla"]["run"] for p in ps],
                              [p["modes"][mode][drafter]["run"] for p in ps], k, tree)
                row.update(category=category, drafter=drafter, tree=tree, prompts=len(ps),
                           identical=sum(p["modes"][mode][drafter]["identical"] for p in ps)
                           if mode == "greedy" else None)
                rows.append(row)
        return rows

    def to_json(self) -> dict:
        def run_dict(r: Run):
            return {"ids": r.ids, "seconds": round(r.seconds, 4), "prefill_seconds": round(r.prefill_seconds, 4),
                    "decode_tokens": r.decode_tokens, "decode_seconds": round(r.decode_seconds, 4),
                    "target_forwards": r.target_forwards, "drafted": r.drafted, "accepted": r.accepted,
                    "steps": r.steps, "draft_seconds": round(r.draft_seconds, 4), "k_requested": r.k_requested}

        prompts = []
        for p in self.prompts:
            modes = {m: {n: {**{kk: vv for kk, vv in e.items() if kk != "run"}, **run_dict(e["run"])}
                         for n, e in by.items()} for m, by in p["modes"].items()}
            prompts.append({**{kk: vv for kk, vv in p.items() if kk != "modes"}, "modes": modes})
        rnd = lambda row: {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}
        return {"settings": self.settings, "machine": self.machine, "notes": self.notes,
                "summary": {m: [rnd(r) for r in self.rows(m)] for m in ("greedy", "sampled")},
                "prompts": prompts, "peers": self.peers}
