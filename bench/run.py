"""The benchmark's command: its arguments, then its steps in order (bench/__init__.py says what it measures).

    python -m bench --quick          # from the repository root (or `tinyspec bench --quick` from anywhere)
    python -m bench --help           # every option
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

if __name__ == "__main__" and not __package__:  # `python bench/run.py`: a module of a package, not a script
    sys.exit("bench/run.py is a module of the package bench/: run `python -m bench` from the repository root, "
             "or `tinyspec bench`")

from .machine import load_average, machine_info, memory_floor  # noqa: E402
from .measure import Results, compare, drafter_label, measure_prompt, parse_drafter, run_once  # noqa: E402
from .peers import find_peer_python, gguf_path, missing_peers, run_peers  # noqa: E402
from .prompts import CATEGORIES, PROMPTS, load_prompts, select_prompts  # noqa: E402
from .report import markdown, markdown_peers, markdown_summary, plot  # noqa: E402

BENCH = Path(__file__).resolve().parent
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}  # --clock


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
                        "break-even rule; NAME/treeN (or NAME@kM/treeN): a tree of up to N guesses a step, at most "
                        "k deep, /tree0 a chain (default ngram:8,ngram@k8: prompt lookup matching up to 8 tokens "
                        "with the rule, and the plain prompt lookup of up to 3 tokens, 8 drafts a step)")
    p.add_argument("--others-per-category", type=int, default=1,
                   help="prompts per category for the drafters after the first (default 1)")
    p.add_argument("--k", type=int, default=16, help="the most tokens drafted per step (default 16; a tree's "
                                                     "greatest depth)")
    p.add_argument("--tree", type=int, default=0, metavar="N",
                   help="verify a tree of up to N guesses a step, at most k deep, for every drafter without its "
                        "own /treeN (default 0: chains); with the break-even rule, the tree rule sets each step's "
                        "budget, up to N")
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
    p.add_argument("--top-k", type=int, default=0, help="top-k of the sampled run (default 0: off)")
    p.add_argument("--top-p", type=float, default=1.0, help="top-p of the sampled run (default 1: off)")
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


def build_parser(prog="python -m bench", parser_class=argparse.ArgumentParser):
    """The benchmark's arguments; `tinyspec bench` passes its own prog and parser class (one-line errors)."""
    p = parser_class(prog=prog, description="The benchmark by task: where speculative decoding pays, on this "
                                            "machine, with identical output (bench/__init__.py).")
    add_bench_arguments(p)
    # tinyspec.cli's add_model_args, written out: `--replot` must run in a Python without tinyspec
    p.add_argument("--weights", default=None, help="converted weights directory (default: $TINYSPEC_WEIGHTS "
                                                   "or weights/gemma-3-270m)")
    p.add_argument("--backend", choices=["numba", "numpy", "quant"], default="numba",
                   help="numba: fast batch-invariant kernels (default); numpy: the readable reference; quant: the "
                        "numba kernels on the GGUF's quantized blocks (the layers' repacked at load), nothing converted (--weights "
                        "may then name a .gguf file)")
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
    for name, value, low in (("--k", args.k, 1), ("--tree", args.tree, 0), ("--repeats", args.repeats, 1),
                             ("--others-repeats", args.others_repeats, 1),
                             ("--sampled-repeats", args.sampled_repeats, 0)):
        if value < low:
            raise ValueError(f"{name} must be >= {low}, got {value}")
    from tinyspec.drafters import make_drafter
    from tinyspec.sampling import SamplingParams, check_sampling_args
    from tinyspec.speculative import check_settings

    check_sampling_args(args.temperature, args.top_k, args.top_p)  # before loading anything

    labels = []  # the drafters as the tables name them: each with its tree budget written out
    for d in args.drafters.split(","):
        label = drafter_label(d, args.tree)
        name, k, _, tree = parse_drafter(label, args.k, args.adaptive)
        try:
            check_settings("greedy", SamplingParams(), k, tree)  # reject a bad k or budget before loading anything
        except ValueError as e:
            raise ValueError(f"drafter {label}: {e}") from None
        make_drafter(name)  # and a bad name
        if label in labels:
            raise ValueError(f"--drafters lists {label} twice" + (f" (with --tree {args.tree})" if args.tree else ""))
        labels.append(label)
    args.drafters = ",".join(labels)


def measure_all(model, tok, prompts, args, results) -> None:
    """Sections 1-3 of bench/__init__.py's docstring, prompt by prompt, into results.prompts (progress on stderr)."""
    from tinyspec.sampling import SamplingParams

    drafters = args.drafters.split(",")
    others = {p["id"] for p in select_prompts(prompts, per_category=args.others_per_category)}
    greedy = SamplingParams()
    sampled = SamplingParams(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed)
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
        measured = measure_prompt(model, ids, max_new, modes, args.k, args.adaptive, CLOCKS[args.clock])
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
               f"`python -m bench --replot {out / 'results.json'}` with a Python that has it)"))
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
    from tinyspec.cli import load

    prompts = select_prompts(load_prompts(args.prompts), args.categories and args.categories.split(","),
                             args.ids and args.ids.split(","), 1 if args.quick else None)
    if not prompts:
        raise ValueError("no prompt matches --categories / --ids")
    command = " ".join([Path(sys.argv[0]).name] + sys.argv[1:])  # `tinyspec bench ...`
    if Path(sys.argv[0]).parent == BENCH:  # `python -m bench ...` (or `-m bench.run`)
        command = " ".join(["python -m bench"] + sys.argv[1:])
    settings = {"command": command, "backend": args.backend, "k": args.k, "adaptive": args.adaptive,
                "tree": args.tree, "repeats": args.repeats, "others_repeats": args.others_repeats,
                "sampled_repeats": args.sampled_repeats, "temperature": args.temperature, "top_k": args.top_k,
                "top_p": args.top_p, "seed": args.seed,
                "drafters": args.drafters.split(","), "others_per_category": args.others_per_category,
                "quick": args.quick, "clock": args.clock, "max_new_tokens_cap": args.max_new_tokens}
    results = Results(settings, machine_info())
    if args.clock == "cpu" and (results.machine.get("numba_threads") != 1
                                or os.environ.get("OPENBLAS_NUM_THREADS") != "1"):
        results.notes.append("--clock cpu without NUMBA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1: CPU time then adds "
                             "up the threads, and threads that wait spin, so it overstates the cost")
    model, tok = load(args)  # as `tinyspec --backend ... --weights ...` loads them
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
