"""The quant backend against the float32 numba backend, side by side: tokens per second on one prompt.

    python bench/backends.py                   # the demo's prompt, 64 new tokens, 5 interleaved pairs
    python bench/backends.py --pairs 9 --prompt "def fib(n):"
    python bench/backends.py --matrices        # instead: each kind of matrix alone, M = 1 and 8 rows of x

One process loads both models (numba: the converted float32 weights; quant: the GGUF's blocks) and runs, for
each setting, vanilla greedy decoding or greedy speculative decoding on each backend in turn, `--pairs` times:

    vanilla                 one token per forward
    ngram, k = 4            the demo's setting (`tinyspec compare`)
    ngram:8, k = 16, rule   prompt lookup with the break-even rule, each backend with its own v(m)
                            (adaptive.VerifyCost.for_backend)

and prints per setting each backend's median tokens per second and the median over the pairs of the ratio of
their times (quant against numba: above 1, quant is faster). The backends alternate inside each pair, and
which goes first alternates from pair to pair, so a burst of load from other programs hits both alike. Every
run emits exactly n tokens (EOS does not stop it), and every run of both backends must emit the same tokens
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


def matrices(models, out=print) -> None:
    import numpy as np

    from tinyspec.fast.kernels import matmul_numba
    from tinyspec.quant.kernels import matmul_quant

    wq, wf = models["quant"].weights, models["numba"].weights
    names = [k for k, v in vars(wq.layers[0]).items() if hasattr(v, "format")]
    pairs = [("LM head", wq.embed_tokens, wf.embed_tokens, 1)] + \
        [(n, getattr(wq.layers[0], n), getattr(wf.layers[0], n), len(wq.layers)) for n in names]
    rng = np.random.default_rng(0)
    out("| rows of x | matrix | blocks | shape | quant ms | float32 ms | float32 / quant |")
    out("|---:|---|---|---|---:|---:|---:|")
    for M in (1, 8):
        total = {"q": 0.0, "f": 0.0}
        for name, q, f, count in pairs:
            x = rng.standard_normal((M, f.shape[1])).astype(np.float32)
            matmul_quant(x, q), matmul_numba(x, f)
            tq, tf = [], []
            for i in range(10):  # which goes first alternates
                for kernel, w, times in ((matmul_quant, q, tq), (matmul_numba, f, tf))[:: 1 if i % 2 else -1]:
                    t = time.perf_counter()
                    kernel(x, w)
                    times.append(time.perf_counter() - t)
            a, b = statistics.median(tq) * 1e3, statistics.median(tf) * 1e3
            total["q"] += a * count
            total["f"] += b * count
            out(f"| {M} | {name} | {q.format.name} | {tuple(f.shape)} | {a:.3f} | {b:.3f} | {b / a:.2f} |")
        out(f"| {M} | **all matmuls of a forward** (x{len(wq.layers)} layers) | | | {total['q']:.1f} | "
            f"{total['f']:.1f} | {total['f'] / total['q']:.2f} |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python bench/backends.py", description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=5, help="interleaved pairs per setting (default 5)")
    p.add_argument("--prompt", default=None, help="the prompt (default: the demo's, tinyspec.show.EXAMPLE_PROMPT)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--matrices", action="store_true", help="time each kind of matrix alone instead")
    args = p.parse_args(argv)
    from tinyspec.model import Model
    from tinyspec.show import EXAMPLE_PROMPT
    from tinyspec.tokenizer import Tokenizer
    from tinyspec.weights import ensure_converted

    from bench.machine import load_average, load_note

    directory = ensure_converted(None)
    tok = Tokenizer.from_file(directory / "tokenizer.json")
    models = {"numba": Model.load(directory, backend="numba"), "quant": Model.load(backend="quant")}
    ids, n = tok.encode(args.prompt or EXAMPLE_PROMPT), args.max_new_tokens
    load_before = load_average(2)
    if args.matrices:
        matrices(models)
        print(f"\n{load_note(load_before)}")
        return 0
    for backend, model in models.items():  # compile or load every kernel before the clock starts
        for setting in SETTINGS.values():
            run(model, backend, ids, 8, setting)
    print(f"{len(ids)}-token prompt, {n} new tokens, greedy, {args.pairs} interleaved pairs per setting\n")
    print("| setting | numba tokens/s | quant tokens/s | quant against numba (median of the pairs) | same tokens |")
    print("|---|---:|---:|---:|---|")
    for name, setting in SETTINGS.items():
        times, outputs = {b: [] for b in models}, []
        for i in range(args.pairs):
            for backend in list(models)[:: 1 if i % 2 == 0 else -1]:  # which goes first alternates
                t = time.perf_counter()
                outputs.append(run(models[backend], backend, ids, n, setting))
                times[backend].append(time.perf_counter() - t)
        a, q = times["numba"], times["quant"]
        ratio = statistics.median([x / y for x, y in zip(a, q)])
        same = "yes" if all(o == outputs[0] for o in outputs) else "NO"
        print(f"| {name} | {n / statistics.median(a):.1f} | {n / statistics.median(q):.1f} | **{ratio:.2f}x** | {same} |",
              flush=True)
    print(f"\n{load_note(load_before)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
