"""Verification cost per backend: v(m) = forward(m) / forward(1) for m = 1..17, side by side, and what it implies.

    python bench/verify_cost.py                        # numba and quant, 5 rounds, 300 cached tokens
    python bench/verify_cost.py --repeats 9 --backends numba,quant,numpy

One process loads every backend's model (numba: the converted float32 weights; quant: the GGUF's blocks, as
`tinyspec --backend quant` does) and then

1. prefills the same `--context` random tokens into each model's cache, and runs every m on every backend
   once, untimed (Numba compiles, or loads from its cache, every kernel the rounds use);
2. times `--repeats` rounds; in each round, for m = 1..17 and for each backend in turn, one forward over m new
   tokens, the cache rolled back after it. The backends take turns at every m, so a burst of load from other
   programs hits them alike;
3. per backend and m, the median of the rounds; v(m) = median(m) / median(1);
4. fits each backend's line v(m) = 1 + first_extra + per_token (m - 2) with adaptive.VerifyCost.fit, the rule
   its docstring gives;
5. prints what the break-even rule does with each line: for k drafts, the acceptance alpha above which
   verifying them beats a plain decode step (E(alpha, k) = k c + v(k + 1), theory.expected_speedup = 1), and
   the number of drafts it verifies at alpha = 0.5 and 0.8 (adaptive.BreakEven.best, up to 16).

Then the VERIFY_COSTS entries (tinyspec/adaptive.py) the run supports, and the `--verify-cost` to try one with.
The timings share the machine: the load average before and after, and the threads, are printed with them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

BACKENDS = ("numba", "quant", "numpy")
MS = range(1, 18)  # rows of one verification forward: k + 1 for k = 0..16
KS = (1, 2, 4, 8, 16)  # drafts, for the break-even acceptance
ALPHAS = (0.5, 0.8)  # acceptances, for the drafts the rule verifies


def interleaved_times(models: dict, Ms, context: int, repeats: int, seed: int = 0) -> dict:
    """{backend: {m: [seconds of each round]}}: steps 1 and 2 of the docstring. `models` is {backend: Model}."""
    rng = np.random.default_rng(seed)
    any_model = next(iter(models.values()))
    tokens = rng.integers(4, any_model.cfg.vocab_size, size=context + max(Ms))  # [context + max m]
    caches = {}
    for name, model in models.items():
        caches[name] = model.new_cache(capacity=context + max(Ms))
        if context:
            model.forward(tokens[:context], caches[name])

    def one(name, m):  # -> seconds of one forward over m new tokens, the cache rolled back after it
        t0 = time.perf_counter()
        models[name].forward(tokens[context: context + m], caches[name])
        took = time.perf_counter() - t0
        caches[name].truncate(context)
        return took

    for m in Ms:  # warm-up, untimed
        for name in models:
            one(name, m)
    times = {name: {m: [] for m in Ms} for name in models}
    for _ in range(repeats):
        for m in Ms:
            for name in models:
                times[name][m].append(one(name, m))
    return times


def medians(times: dict) -> dict:
    """{backend: {m: [seconds]}} -> {backend: {m: median seconds}} (step 3)."""
    return {name: {m: statistics.median(ts) for m, ts in by_m.items()} for name, by_m in times.items()}


def fits(median_times: dict) -> dict:
    """{backend: VerifyCost} fitted to each backend's median times (step 4)."""
    from tinyspec.adaptive import VerifyCost

    return {name: VerifyCost.fit(by_m) for name, by_m in median_times.items()}


def best_drafts(cost, alpha: float, c: float, k_max: int = 16) -> int:
    """The number of drafts the break-even rule verifies at acceptance alpha (0: a plain decode step)."""
    from tinyspec.adaptive import BreakEven

    return BreakEven(k_max=k_max, draft_cost=c, verify_cost=cost, alpha=alpha).best(k_max)


def report(times: dict, c: float = 0.0) -> str:
    """The tables of one run (steps 3 to 5) from {backend: {m: [seconds of each round]}}, in Markdown."""
    med = medians(times)
    lines = fits(med)
    names = list(times)
    out = ["| m | " + " | ".join(f"{n} ms (min-max) | {n} v(m) | {n} line" for n in names) + " |",
           "|---:|" + "---:|---:|---:|" * len(names)]
    for m in sorted(med[names[0]]):
        cells = []
        for n in names:
            ts = times[n][m]
            cells += [f"{med[n][m] * 1e3:.1f} ({min(ts) * 1e3:.1f}-{max(ts) * 1e3:.1f})",
                      f"{med[n][m] / med[n][1]:.2f}", f"{lines[n](m):.2f}"]
        out.append(f"| {m} | " + " | ".join(cells) + " |")

    out += ["", "v(m) = median(m) / median(1); the line: v(m) = 1 + first_extra + per_token (m - 2) for m >= 2 "
            "(adaptive.VerifyCost.fit: through the measured v(2), least-squares slope over the larger m).", "",
            "| backend | first_extra | per_token | largest \\|v(m) - line\\| |", "|---|---:|---:|---:|"]
    for n in names:
        worst = max(abs(med[n][m] / med[n][1] - lines[n](m)) for m in med[n])
        out.append(f"| {n} | {lines[n].first_extra:.3f} | {lines[n].per_token:.3f} | {worst:.3f} |")

    def alpha_cell(a):
        return "never" if a is None else f"{a:.2f}"

    out += ["", f"The break-even rule with each backend's line, drafts costing c = {c:g} target forwards each: "
            "the acceptance alpha above which k drafts beat a plain decode step (E(alpha, k) = k c + v(k + 1)), "
            f"and the drafts it verifies (0 to 16) at alpha = {' and '.join(str(a) for a in ALPHAS)}.", "",
            "| backend | " + " | ".join(f"k = {k}" for k in KS) + " | "
            + " | ".join(f"drafts at alpha {a}" for a in ALPHAS) + " |",
            "|---|" + "---:|" * (len(KS) + len(ALPHAS))]
    for n in names:
        out.append(f"| {n} | " + " | ".join(alpha_cell(lines[n].break_even_alpha(k, c)) for k in KS) + " | "
                   + " | ".join(str(best_drafts(lines[n], a, c)) for a in ALPHAS) + " |")

    out += ["", "tinyspec/adaptive.py's VERIFY_COSTS entries for this run:"]
    out += [f'    "{n}": VerifyCost({lines[n].first_extra}, {lines[n].per_token}),' for n in names]
    out += ["", "a line tried before it is entered there:"]
    out += [f"    tinyspec compare --adaptive --backend {n} --verify-cost={lines[n].first_extra},{lines[n].per_token}"
            for n in names]
    return "\n".join(out)


def load_model(backend: str, weights=None):
    """The model as `tinyspec --backend BACKEND` loads it (the float32 ones converted first, if needed)."""
    from tinyspec.model import Model

    return Model.load(weights, backend=backend)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="numba,quant",
                        help=f"comma-separated, from {', '.join(BACKENDS)} (default numba,quant)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds; the median is reported (default 5)")
    parser.add_argument("--context", type=int, default=300, help="cached tokens before each forward (default 300)")
    parser.add_argument("--draft-cost", type=float, default=0.0,
                        help="c, one draft's cost in target forwards, for the break-even table (default 0: prompt "
                             "lookup)")
    parser.add_argument("--weights", default=None, help="as tinyspec's --weights (default: the usual place)")
    args = parser.parse_args(argv)
    names = args.backends.split(",")
    bad = [n for n in names if n not in BACKENDS] or (["(twice)"] if len(set(names)) < len(names) else [])
    if bad or args.repeats < 1 or args.context < 0 or args.draft_cost < 0:
        print(f"verify_cost: error: --backends takes {', '.join(BACKENDS)}, each once (got {args.backends}); "
              "--repeats >= 1, --context >= 0, --draft-cost >= 0", file=sys.stderr)
        return 2
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root: run as a script too
    from bench.machine import load_average, load_note

    load_before = load_average(2)
    models = {n: load_model(n, args.weights) for n in names}
    times = interleaved_times(models, MS, args.context, args.repeats)
    print(f"One forward over m new tokens after {args.context} cached ones, median of {args.repeats} rounds, "
          f"backends taking turns at every m.\n")
    print(report(times, args.draft_cost))
    print(f"\n{load_note(load_before)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
