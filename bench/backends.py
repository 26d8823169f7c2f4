"""The quant backend against the float32 numba backend, side by side: tokens per second on one prompt.

    python bench/backends.py                   # the demo's prompt, 64 new tokens, 5 interleaved rounds
    python bench/backends.py --pairs 9 --prompt "def fib(n):"
    python bench/backends.py --matrices        # instead: each kind of matrix alone, M = 1 and 8 rows of x
    python bench/backends.py --file-blocks     # also the quant backend on the file's own blocks (quant-file)

One process loads the models (numba: the converted float32 weights; quant: the GGUF's blocks, the layers'
repacked at load; with --file-blocks also quant-file: every matrix in the file's own blocks) and runs, for each
setting, vanilla greedy decoding or greedy speculative decoding on each in turn, `--pairs` rounds:

    vanilla                 one token per forward
    ngram, k = 4            the demo's setting (`tinyspec compare`)
    ngram:8, k = 16, rule   prompt lookup with the break-even rule, each backend with its own v(m)
                            (adaptive.VerifyCost.for_backend)

and prints per setting each backend's median tokens per second and the median over the rounds of the ratio of
their times (quant against numba: above 1, quant is faster). The backends take turns inside each round, and
which goes first rotates from round to round, so a burst of load from other programs hits all alike. Every
run emits exactly n tokens (EOS does not stop it), and every run of every backend must emit the same tokens
(their logits are bitwise equal: tests/test_quant.py). The load average before and after is printed: the timings
share the machine. Per-forward costs for m = 1..17 tokens: `python bench/verify_cost.py`.

--matrices times each kind of matrix alone (the LM head, and layer 0's seven), quant's kernel against the
float32 one on the same values, median of 10 alternating calls, and the sum over the model's matmuls (a
layer's seven times 18, plus the head). A matrix timed alone stays in the CPU's caches between calls: the
block layers' float32 figures are then faster than in a forward, where every weight comes from memory.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SETTINGS = {  # name -> (drafter, speculative_generate keyword arguments); None: vanilla
    "vanilla": None,
    "ngram, k = 4": ("ngram", dict(k=4)),
    "ngram:8, k = 16, rule": ("ngram:8", dict(k=16, adaptive=True)),
}


def run(model, backend: str, ids, n: int, setting):
    from tinyspec.adaptive import VerifyCost
    from tinyspec.decoding import generate_ids
    from tinyspec.drafters import make_drafter
    from tinyspec.speculative import speculative_generate_ids

    if setting is None:
        return generate_ids(model, ids, n, stop_at_eos=False)
    drafter, kwargs = setting
    if kwargs.get("adaptive"):
        kwargs = dict(kwargs, verify_cost=VerifyCost.for_backend(backend))
    return speculative_generate_ids(model, make_drafter(drafter), ids, n, stop_at_eos=False, **kwargs)


def rotated(names: list, i: int) -> list:  # round i's order: which goes first rotates from round to round
    return names[i % len(names):] + names[:i % len(names)]


def matrices(models, out=print) -> None:
    import numpy as np

    from tinyspec.fast.kernels import matmul_numba
    from tinyspec.quant.kernels import matmul_quant

    labels = list(models)  # numba first, then the quant models
    weights = {b: models[b].weights for b in labels}
    n_layers = len(weights["numba"].layers)
    names = [k for k, v in vars(weights["quant"].layers[0]).items() if hasattr(v, "format")]
    rows = [("LM head", {b: w.embed_tokens for b, w in weights.items()}, 1)] + \
        [(n, {b: getattr(w.layers[0], n) for b, w in weights.items()}, n_layers) for n in names]
    rng = np.random.default_rng(0)
    quants = labels[1:]
    kernels = {b: matmul_numba if b == "numba" else matmul_quant for b in labels}
    out("| rows of x | matrix | shape | " + " | ".join(f"{b} blocks | {b} ms" for b in quants)
        + " | float32 ms | " + " | ".join(f"float32 / {b}" for b in quants) + " |")
    out("|---:|---|---|" + "---|---:|" * len(quants) + "---:|" + "---:|" * len(quants))
    for M in (1, 8):
        total = dict.fromkeys(labels, 0.0)
        for name, ws, count in rows:
            f = ws["numba"]
            x = rng.standard_normal((M, f.shape[1])).astype(np.float32)
            for b in labels:
                kernels[b](x, ws[b])
            times = {b: [] for b in labels}
            for i in range(10):
                for b in rotated(labels, i):
                    t = time.perf_counter()
                    kernels[b](x, ws[b])
                    times[b].append(time.perf_counter() - t)
            ms = {b: statistics.median(times[b]) * 1e3 for b in labels}
            for b in labels:
                total[b] += ms[b] * count
            out(f"| {M} | {name} | {tuple(f.shape)} | " + " | ".join(f"{ws[b].format.name} | {ms[b]:.3f}" for b in quants)
                + f" | {ms['numba']:.3f} | " + " | ".join(f"{ms['numba'] / ms[b]:.2f}" for b in quants) + " |")
        out(f"| {M} | **all matmuls of a forward** (x{n_layers} layers) | | " + " | ".join(f" | {total[b]:.1f}" for b in quants)
            + f" | {total['numba']:.1f} | " + " | ".join(f"{total['numba'] / total[b]:.2f}" for b in quants) + " |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python bench/backends.py", description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=5, help="interleaved rounds per setting (default 5)")
    p.add_argument("--prompt", default=None, help="the prompt (default: the demo's, tinyspec.show.EXAMPLE_PROMPT)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--matrices", action="store_true", help="time each kind of matrix alone instead")
    p.add_argument("--file-blocks", action="store_true",
                   help="also run the quant backend on the file's own blocks (quant-file), not repacked at load")
    args = p.parse_args(argv)
    from tinyspec.model import Model
    from tinyspec.show import EXAMPLE_PROMPT
    from tinyspec.tokenizer import Tokenizer
    from tinyspec.weights import ensure_converted

    from bench.machine import load_average, load_note

    directory = ensure_converted(None)
    tok = Tokenizer.from_file(directory / "tokenizer.json")
    models = {"numba": Model.load(directory, backend="numba"), "quant": Model.load(backend="quant")}
    if args.file_blocks:  # the quant backend on the file's own blocks, not repacked
        from tinyspec.quant.gguf_file import open_gguf

        gguf = open_gguf()
        models["quant-file"] = Model(gguf.config(), gguf.quantized_weights(repack=False), "quant")
    ids, n = tok.encode(args.prompt or EXAMPLE_PROMPT), args.max_new_tokens
    load_before = load_average(2)
    if args.matrices:
        matrices(models)
        print(f"\n{load_note(load_before)}")
        return 0
    for backend, model in models.items():  # compile or load every kernel before the clock starts
        for setting in SETTINGS.values():
            run(model, model.backend, ids, 8, setting)
    print(f"{len(ids)}-token prompt, {n} new tokens, greedy, {args.pairs} interleaved rounds per setting\n")
    others = list(models)[1:]
    print("| setting | " + " | ".join(f"{b} tokens/s" for b in models) + " | "
          + " | ".join(f"{b} against numba (median of the rounds)" for b in others) + " | same tokens |")
    print("|---|" + "---:|" * (len(models) + len(others)) + "---|")
    for name, setting in SETTINGS.items():
        times, outputs = {b: [] for b in models}, []
        for i in range(args.pairs):
            for backend in rotated(list(models), i):
                t = time.perf_counter()
                outputs.append(run(models[backend], models[backend].backend, ids, n, setting))
                times[backend].append(time.perf_counter() - t)
        ratios = [statistics.median([x / y for x, y in zip(times["numba"], times[b])]) for b in others]
        same = "yes" if all(o == outputs[0] for o in outputs) else "NO"
        print(f"| {name} | " + " | ".join(f"{n / statistics.median(times[b]):.1f}" for b in models) + " | "
              + " | ".join(f"**{r:.2f}x**" for r in ratios) + f" | {same} |", flush=True)
    print(f"\n{load_note(load_before)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
