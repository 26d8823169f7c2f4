"""The report: Markdown tables of a benchmark's Results (bench/results.md) and the chart of its speedups
(bench/results.png, with matplotlib)."""

from __future__ import annotations

from .measure import Results, compare, parse_drafter
from .prompts import CATEGORIES


def markdown_summary(results: Results, mode: str) -> str:
    rows = results.rows(mode)
    if not rows:
        return ""
    ident = mode == "greedy"
    head = ("| category | drafter | prompts | vanilla tok/s | speculative tok/s | speedup | acceptance "
            "| tokens/forward | drafts/step | c | v | cost-model speedup |" + (" identical |" if ident else ""))
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        name = f"**{r['category']}**" if r["category"] == "all" else r["category"]
        predicted = "-" if r["predicted_speedup"] is None else f"{r['predicted_speedup']:.2f}x"  # None: a tree
        line = (f"| {name} | {r['drafter']} | {r['prompts']} | {r['vanilla_tokens_per_second']:.1f} "
                f"| {r['speculative_tokens_per_second']:.1f} | **{r['speedup']:.2f}x** | {r['acceptance_rate']:.0%} "
                f"| {r['tokens_per_forward']:.2f} | {r['k']:.1f} | {r['c']:.3f} | {r['v']:.2f} | {predicted} |")
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
            _, k_used, rule, _ = parse_drafter(name, k, results.settings.get("adaptive", False))
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


def weights_kind(results: Results) -> str:
    """How the run's weights are stored: the memory floor is a floor for decoders that read that many bytes."""
    return "as the GGUF's Q4_K_M blocks" if results.settings.get("backend") == "quant" else "in float32"


def markdown_floor(results: Results) -> str:
    """The memory floor (weight bytes read per token / streaming bandwidth) and the bound it puts on any
    float32 implementation's speedup over each peer: a peer's ms per token / the floor's ms per token."""
    f = results.machine.get("memory_floor")
    if not f:
        return ""
    kind = weights_kind(results)
    lines = [f"One decode step reads every weight once: {f['bytes'] / 1e9:.3f} GB {kind} (the LM head alone "
             f"{f['head_bytes'] / 1e9:.3f} GB). Streaming them at the bandwidth measured here "
             f"({f['gbps']:.1f} GB/s with {results.machine.get('numba_threads', '?')} thread(s): the faster of two read-only streams, "
             + ", ".join(f"{k} {v} GB/s" for k, v in f.get("gbps_by_reader", {}).items())
             + f"; see memory_floor in bench/machine.py) takes **{f['ms']:.1f} ms per token** "
             f"({1e3 / f['ms']:.1f} tokens/s): no decoder of weights stored this way on this machine, at batch "
             "1 and this thread count, can decode faster without speculation."]
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
    lines += ["", "| engine | decode ms / token | floor ms / token | ms / floor | the most a decoder reading "
                  f"{kind} can beat it by |", "|---|---|---|---|---|"]
    for name, rate in rows:
        rate = rate if rate is not None else (tok / sec if sec > 0 else 0.0)
        if rate <= 0:
            continue
        ms = 1e3 / rate
        lines.append(f"| {name} | {ms:.1f} | {f['ms']:.1f} | {ms / f['ms']:.2f} | {ms / f['ms']:.2f}x |")
    return "\n".join(lines)


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
           f"Gemma 3 270M ({'the GGUF blocks, Q4_K_M' if s.get('backend') == 'quant' else 'float32'}), "
           f"backend `{s.get('backend')}`, batch 1, "
           + (f"at most k = {s.get('k')} drafts a step, of which the break-even rule verifies those that pay "
              "(drafters marked @kN: a fixed k = N, every draft verified)" if s.get('adaptive') else
              f"k = {s.get('k')}")
           + ("; drafters marked /treeN verify a tree of up to N guesses a step, at most k deep, in one forward"
              + (" (the tree break-even rule sets each step's budget, up to N, unless marked @kN)"
                 if s.get("adaptive") else "")
              if any(parse_drafter(d, 1, False)[3] for d in s.get("drafters", [])) else "") +
           f"; {m.get('numba_threads')} thread(s) per process; vanilla and speculative runs interleaved, the median "
           f"of {repeats}; "
           f"{len(results.prompts)} prompts, timed by {clock}. Tokens/s are decode speeds (prefill excluded; it "
           "is the same for both). Drafts/step: drafts verified per step (a tree: its nodes; the acceptance is "
           "then the share of them on the accepted path). c = cost of one drafted token (a tree: of one node of "
           "its budget) and v = cost of one verification step, both in single-token target forwards, measured; "
           "the cost-model speedup is (1 - a^(k+1)) / ((1 - a)(k c + v)) with the measured acceptance a "
           "(chains only: it has no term for a tree's branches).", ""]
    g = markdown_summary(results, "greedy")
    if g:
        out += ["## Greedy (temperature 0): speculative output must equal vanilla output", "", g, ""]
    sm = markdown_summary(results, "sampled")
    if sm:
        cuts = "".join(f", {name} {s[key]}" for name, key, off in (("top-k", "top_k", 0), ("top-p", "top_p", 1.0))
                       if s.get(key, off) != off)
        out += [f"## Sampled (temperature {s.get('temperature')}{cuts}, seed {s.get('seed')}, rejection verifier)", "",
                "Rejection sampling follows the target's distribution exactly, but draws other tokens than "
                "vanilla sampling does, so the two outputs are not compared.", "", sm, ""]
    peers = markdown_peers(results)
    if peers:
        out += ["## Peers on the same machine, same prompts, greedy", "", peers, ""]
    floor = markdown_floor(results)
    if floor:
        out += [f"## The memory floor: how fast can any decoder of the weights {weights_kind(results)} be here?", "",
                floor, ""]
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
        pred = [rows[c]["predicted_speedup"] for c in cats if c in rows]  # None (a tree): no dot
        dots = [(x, y) for x, y in zip(xs, pred) if y is not None]
        bars = ax.bar(xs, ys, width, label=f"{drafter}, {mode} ({n} prompts)")
        ax.bar_label(bars, labels=[f"{y:.1f}" for y in ys], fontsize=7, padding=1)
        ax.plot([x for x, _ in dots], [y for _, y in dots], "k.", markersize=6)
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
