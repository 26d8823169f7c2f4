"""What sampling costs per token: greedy against temperature, top-k and top-p, vanilla and speculative.

    python bench/sampling.py                    # quant backend, the demo's story prompt, 48 tokens, 3 rounds
    python bench/sampling.py --backend numba --rounds 5

Choosing a sampled token is NumPy work on the whole vocabulary: 262144 logits turned into the warped
distribution p (tinyspec.sampling.warp), then one draw from it, or in coupled mode one Gumbel key per kept token.
Speculative decoding does that for every row it verifies. This prints, for each setting, the median tokens per
second over the rounds, and that speed against greedy vanilla decoding in the same rounds (the settings take
turns inside each round, so a burst of load from other programs hits all alike):

    vanilla      one token per forward (coupled: the Gumbel-max token of (seed, position))
    rejection    ngram drafter, k = 4, the rejection verifier: exact in distribution, other tokens than vanilla
    coupled      ngram drafter, k = 4, the coupled verifier: the same tokens as coupled vanilla, checked here

Every run emits exactly n tokens (EOS does not stop it), and its time includes the prompt's prefill, the same
in every setting. Vanilla sampling runs the forwards greedy vanilla runs, so its cost over greedy is the
sampling's own.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PROMPT = "Once upon a time, in a village at the edge of a great forest,"
CUTS = {"greedy": {}, "temperature 0.8": dict(temperature=0.8), "top-k 64": dict(temperature=0.8, top_k=64),
        "top-p 0.95": dict(temperature=0.8, top_p=0.95)}


def settings():  # -> {(cut, how): (SamplingParams, verifier or None)}
    from tinyspec.sampling import SamplingParams

    out = {}
    for cut, kw in CUTS.items():
        if not kw:
            out[cut, "vanilla"] = (SamplingParams(), None)
            out[cut, "speculative"] = (SamplingParams(), "greedy")
            continue
        out[cut, "vanilla"] = (SamplingParams(seed=1, **kw), None)
        out[cut, "rejection"] = (SamplingParams(seed=1, **kw), "rejection")
        out[cut, "coupled vanilla"] = (SamplingParams(seed=1, coupled=True, **kw), None)
        out[cut, "coupled"] = (SamplingParams(seed=1, coupled=True, **kw), "coupled")
    return out


def run(model, ids, n: int, params, verifier):
    from tinyspec.decoding import generate_ids
    from tinyspec.drafters import make_drafter
    from tinyspec.speculative import speculative_generate_ids

    if verifier is None:
        return generate_ids(model, ids, n, params, stop_at_eos=False)
    return speculative_generate_ids(model, make_drafter("ngram"), ids, n, params, verifier=verifier, k=4,
                                    stop_at_eos=False)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backend", choices=["numba", "quant"], default="quant")
    p.add_argument("--prompt", default=PROMPT)
    p.add_argument("--new-tokens", type=int, default=48)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    if args.new_tokens < 1 or args.rounds < 1:
        p.error("--new-tokens and --rounds must be >= 1")

    from tinyspec.cli import load_tokenizer
    from tinyspec.model import Model
    from tinyspec.weights import ensure_converted

    from bench.machine import load_average, load_note

    model = Model.load(ensure_converted(None), backend="numba") if args.backend == "numba" else \
        Model.load(backend="quant")
    ids = load_tokenizer(None).encode(args.prompt)
    cases = settings()
    for params, verifier in cases.values():  # warm up: compile every path once
        run(model, ids, 4, params, verifier)
    load_before = load_average(2)
    seconds = {case: [] for case in cases}
    tokens = {}
    for _ in range(args.rounds):
        for case, (params, verifier) in cases.items():
            t = time.perf_counter()
            tokens[case] = run(model, ids, args.new_tokens, params, verifier)
            seconds[case].append(time.perf_counter() - t)
    greedy = seconds["greedy", "vanilla"]
    print(f"backend {args.backend}, {len(ids)} prompt tokens, {args.new_tokens} new tokens, {args.rounds} rounds")
    print("| sampling | decoding | tokens/s | against greedy vanilla | same tokens as |")
    print("|---|---|---:|---:|---|")
    for (cut, how), times in seconds.items():
        ratio = statistics.median(g / t for g, t in zip(greedy, times))
        same = ""
        if how in ("speculative", "coupled"):
            twin = (cut, "vanilla" if how == "speculative" else "coupled vanilla")
            same = f"{twin[1]}: {'yes' if tokens[cut, how] == tokens[twin] else 'NO'}"
        print(f"| {cut} | {how} | {args.new_tokens / statistics.median(times):.1f} | {ratio:.2f}x | {same} |")
    print(load_note(load_before))


if __name__ == "__main__":
    main()
