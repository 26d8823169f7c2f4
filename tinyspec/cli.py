"""The `tinyspec` command: convert, tokenize, predict, generate (and, built on them, compare and bench).

Every command reads PROMPT from its argument, or from standard input when PROMPT is `-`. Bad settings get
one line on stderr and exit status 2; never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np


class CliError(Exception):
    """A problem with the user's input: printed as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of argparse's usage block
        raise CliError(f"{message} (see `{self.prog} --help`)")


# --- shared helpers -------------------------------------------------------------------------------------

def read_prompt(text: str, allow_empty: bool = False) -> str:
    if text == "-":
        text = sys.stdin.read()
    if not text and not allow_empty:
        raise CliError("the prompt is empty: give some text (or `-` to read it from standard input)")
    return text


def load(args):
    """The model and tokenizer, converting the weights on first use (progress goes to stderr); the quant
    backend converts nothing: it reads the GGUF's blocks, and the tokenizer too if no conversion exists."""
    from .model import Model
    from .tokenizer import Tokenizer
    from .weights import ensure_converted

    if args.backend == "quant":
        return Model.load(args.weights, backend="quant"), load_tokenizer(args.weights)
    directory = ensure_converted(args.weights)
    return Model.load(directory, backend=args.backend), Tokenizer.from_file(directory / "tokenizer.json")


def load_tokenizer(weights):
    """The converted tokenizer.json if the weights directory holds a conversion, else the tokenizer built
    from the GGUF's vocabulary (the same one: `tinyspec convert` builds tokenizer.json that way)."""
    from pathlib import Path

    from .tokenizer import Tokenizer
    from .weights import default_weights_dir, is_complete

    directory = Path(weights) if weights is not None else default_weights_dir()
    if directory.suffix != ".gguf" and is_complete(directory):
        return Tokenizer.from_file(directory / "tokenizer.json")
    from .quant.gguf_file import gguf_path, open_gguf

    return open_gguf(gguf_path(weights)).tokenizer()


def sampling_params(args):
    from .sampling import SamplingParams

    try:
        return SamplingParams(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                              coupled=getattr(args, "coupled", False))
    except ValueError as e:
        raise CliError(str(e)) from None


def add_model_args(p):
    p.add_argument("--weights", default=None, help="the weights: with --backend quant the .gguf file or the "
                                                   "directory beside it, else the converted float32 directory "
                                                   "(default: $TINYSPEC_WEIGHTS or weights/gemma-3-270m)")
    p.add_argument("--backend", choices=["numba", "numpy", "quant"], default="quant",
                   help="quant (default): the numba kernels on the GGUF's quantized blocks (the layers' repacked at "
                        "load, a byte a value), nothing converted (--weights may then name a .gguf file), the fastest "
                        "decode measured here; numba: the same kernels on the float32 weights (converted once), "
                        "cheaper verification of many tokens; numpy: the readable reference")


def add_sampling_args(p):
    p.add_argument("--max-new-tokens", type=int, default=64, help="stop after this many new tokens (default 64)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default); > 0 samples")
    p.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (0 = off)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass in (0, 1] (1 = off)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the sampler (default 0)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of streaming text")


# --- commands -------------------------------------------------------------------------------------------

def cmd_convert(args):
    from .weights import convert, default_weights_dir, load as load_weights

    directory = convert(args.weights or default_weights_dir(), force=args.force)
    load_weights(directory)  # verify what was written
    print(f"weights ready in {directory}")


def cmd_tokenize(args):
    text = read_prompt(args.text, allow_empty=True)
    tok = load_tokenizer(args.weights)  # the GGUF's own when nothing is converted: no conversion to tokenize
    ids = tok.encode(text, add_bos=not args.no_bos)
    if args.json:
        print(json.dumps({"ids": ids, "tokens": [tok.token_text(i) for i in ids]}, ensure_ascii=False))
        return
    print(f"{len(ids)} tokens")
    for i in ids:
        print(f"{i:>8}  {tok.token_text(i)}")


def cmd_predict(args):
    from .sampling import best_columns, softmax

    if args.top < 1:
        raise CliError(f"--top must be >= 1, got {args.top}")
    text = read_prompt(args.prompt)
    model, tok = load(args)
    ids = tok.encode(text)
    logits = model.forward(ids, model.new_cache(len(ids)), last_only=True)[0].astype(np.float64)  # [V]
    probs = softmax(logits.copy())  # [V]
    top = best_columns(logits, args.top)  # the most likely first, the lower id first on a tie
    rows = [{"id": int(i), "token": tok.token_text(int(i)), "logit": float(logits[i]), "probability": float(probs[i])}
            for i in top]
    if args.json:
        print(json.dumps({"prompt_tokens": len(ids), "top": rows}, ensure_ascii=False))
        return
    print(f"next token after {len(ids)} prompt tokens:")
    print(f"{'rank':>4}  {'id':>7}  {'token':<20} {'logit':>9}  {'prob':>7}")
    for r, row in enumerate(rows, 1):
        print(f"{r:>4}  {row['id']:>7}  {row['token']:<20} {row['logit']:>9.3f}  {row['probability']:>7.2%}")


class Marker:
    """Marks text that came from accepted drafts: green on a terminal, [brackets] otherwise."""

    def __init__(self, out):
        self.colour = out.isatty() and not os.environ.get("NO_COLOR")
        self.open, self.close = ("\033[32m", "\033[0m") if self.colour else ("[", "]")
        self.inside = False

    def __call__(self, text: str, from_draft: bool) -> str:
        if not text:
            return ""
        prefix = ""
        if from_draft and not self.inside:
            prefix, self.inside = self.open, True
        elif not from_draft and self.inside:
            prefix, self.inside = self.close, False
        return prefix + text

    def end(self) -> str:
        was, self.inside = self.inside, False
        return self.close if was else ""


def run_generation(model, ids, args, params, drafter, max_new_tokens=None):
    """(tokens, stats, trace): `tokens` yields (token, from_draft) pairs; vanilla decoding when drafter is None.
    stats and trace fill in as the tokens are consumed. max_new_tokens: args.max_new_tokens unless given.
    The break-even rule (--adaptive) weighs drafts against --verify-cost, else the model's backend's own v(m)."""
    from .adaptive import VerifyCost
    from .decoding import Stats, generate
    from .speculative import SpecStats, speculative_generate

    n = args.max_new_tokens if max_new_tokens is None else max_new_tokens
    if drafter is None:
        stats, trace = Stats(), None
        tokens = generate(model, ids, n, params, stats=stats)
    else:
        stats, trace = SpecStats(), []
        cost = getattr(args, "verify_cost", None) or VerifyCost.for_backend(model.backend)
        tokens = speculative_generate(model, drafter, ids, n, params, args.verify, args.k, adaptive=args.adaptive,
                                      verify_cost=cost, stats=stats, trace=trace, tree=getattr(args, "tree", 0) or 0)

    def marked():
        steps_seen, index_in_step = 0, 0
        for token in tokens:
            from_draft = False
            if trace:  # the step that emitted this token is the last one traced
                if len(trace) != steps_seen:
                    steps_seen, index_in_step = len(trace), 0
                from_draft = index_in_step < trace[-1].accepted
                index_in_step += 1
            yield token, from_draft
    return marked(), stats, trace


def make_cli_drafter(args, model=None):
    """The drafter --drafter names (None without one). Called once before loading the model, to reject a bad
    name early, and again with the model, to check that the drafter fits it (before anything is printed)."""
    from .drafters import make_drafter

    if not args.drafter:
        return None
    try:
        drafter = make_drafter(args.drafter)
        if model is not None:
            drafter.check(model)
    except ValueError as e:
        raise CliError(f"--drafter {args.drafter}: {e}") from None
    return drafter


def parse_verify_cost(text: str):
    """--verify-cost FIRST_EXTRA,PER_TOKEN -> adaptive.VerifyCost (argparse's `type`: a bad value is one line)."""
    from .adaptive import VerifyCost

    try:
        first_extra, per_token = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not two numbers FIRST_EXTRA,PER_TOKEN (e.g. 0.10,0.11: v(2) = "
                                         "1.10, then +0.11 a token; `python bench/verify_cost.py` measures them)"
                                         ) from None
    if not (first_extra > -1.0 and per_token >= 0.0 and np.isfinite(first_extra + per_token)):
        raise argparse.ArgumentTypeError(f"{text!r}: FIRST_EXTRA must be > -1 (v(2) > 0) and PER_TOKEN >= 0")
    return VerifyCost(first_extra, per_token)


def check_verify_cost(args):
    """--verify-cost feeds the break-even rule only: without --adaptive it would change nothing."""
    if getattr(args, "verify_cost", None) is not None and not args.adaptive:
        raise CliError("--verify-cost is the break-even rule's v(m): add --adaptive, or leave it out")


def check_length(model, ids, max_new_tokens):
    """The prompt plus max_new_tokens must fit the model's context: checked before the prompt is echoed (the
    generators check it too, but only when asked for their first token)."""
    from .decoding import check_prompt

    try:
        check_prompt(model, ids, max_new_tokens)
    except ValueError as e:
        raise CliError(str(e)) from None


def cmd_generate(args):
    from .speculative import SpecStats, check_settings

    if args.max_new_tokens < 0:
        raise CliError(f"--max-new-tokens must be >= 0, got {args.max_new_tokens}")
    params = sampling_params(args)
    if args.drafter:
        try:
            check_settings(args.verify, params, args.k, args.tree)
        except ValueError as e:
            raise CliError(str(e)) from None
        make_cli_drafter(args, None)  # reject bad names before loading the model
    check_verify_cost(args)
    text = read_prompt(args.prompt)
    model, tok = load(args)
    drafter = make_cli_drafter(args, model)
    ids = tok.encode(text)
    check_length(model, ids, args.max_new_tokens)
    stream, mark = tok.stream(), Marker(sys.stdout)
    out = []
    tokens, stats, trace = run_generation(model, ids, args, params, drafter)
    if not args.json:
        sys.stdout.write(text)
        sys.stdout.flush()
    try:
        for token, from_draft in tokens:
            out.append(token)
            if not args.json:
                sys.stdout.write(mark(stream.push(token), from_draft))
                sys.stdout.flush()
    except ValueError as e:
        raise CliError(str(e)) from None
    if args.json:
        result = {"prompt_ids": ids, "ids": out, "text": tok.decode(out), "seed": params.seed,
                  "stats": stats.to_dict()}
        if drafter is not None:
            result.update(drafter=drafter.name, k=args.k, verify=args.verify, tree=args.tree)
            if args.trace:
                result["trace"] = [t.to_dict() for t in trace]
        print(json.dumps(result, ensure_ascii=False))
        return
    sys.stdout.write(stream.flush() + mark.end() + "\n")
    if args.trace and trace is not None:
        from .show import print_trace

        print_trace(trace, tok)
    extra = ""
    if isinstance(stats, SpecStats):
        extra = (f", {stats.acceptance_rate:.0%} of {stats.drafted} drafts accepted, "
                 f"{stats.tokens_per_forward:.2f} tokens per target forward")
    print(f"[{stats.new_tokens} tokens, {stats.seconds:.2f} s, {stats.tokens_per_second:.1f} tokens/s{extra}]",
          file=sys.stderr)


SPREAD_LIMIT = 1.25  # the repeats' speedups further apart than this factor (max / min): the figure is unreliable


def load_average() -> float | None:
    """The 1-minute load average: how many threads wanted a core, on average (None where unavailable)."""
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


def compute_threads() -> int:
    """How many threads this process computes with: Numba's (NumPy's BLAS takes as many cores by default)."""
    import numba

    return min(numba.get_num_threads(), os.cpu_count() or 1)


def reliability_warnings(speedups, load_after, threads, cores) -> list[str]:
    """Why a measured speedup may not be this machine's own: the repeats disagree (by more than SPREAD_LIMIT),
    or other programs competed for the cores during the runs. Their load is the 1-minute load average just
    after the runs minus this run's own `threads`; it competes once it needs more than one core beyond those
    the threads leave free. (The load average lags by about a minute: the spread catches what it misses.)"""
    warnings = []
    if len(speedups) > 1 and max(speedups) > SPREAD_LIMIT * min(speedups):
        warnings.append(f"the repeats disagree: their speedups run from {min(speedups):.2f}x to "
                        f"{max(speedups):.2f}x, more than {SPREAD_LIMIT}x apart, so the median is unreliable: "
                        "run it again on a quieter machine, or with more --repeats")
    if load_after is not None and load_after - threads > cores - threads + 1:
        warnings.append(f"the machine is busy: load average {load_after:.1f} after the runs, on {cores} cores, "
                        f"{threads} of it this run's own threads: other programs took CPU time from the runs, so "
                        "the speedup is unreliable")
    return warnings


def cmd_compare(args):
    import statistics

    from .speculative import check_settings

    if args.max_new_tokens < 1:
        raise CliError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if args.repeats < 1:
        raise CliError(f"--repeats must be >= 1, got {args.repeats}")
    params = sampling_params(args)
    try:
        check_settings(args.verify, params, args.k, args.tree)
    except ValueError as e:
        raise CliError(str(e)) from None
    make_cli_drafter(args)
    check_verify_cost(args)
    load_before = load_average()  # other programs' load: nothing of this run has started yet
    if args.prompt is not None:
        text = read_prompt(args.prompt)
    else:
        from .show import EXAMPLE_PROMPT

        text = EXAMPLE_PROMPT
    model, tok = load(args)
    make_cli_drafter(args, model)
    ids = tok.encode(text)
    check_length(model, ids, args.max_new_tokens)

    # Warm-up: both runs on this prompt, a few tokens each, so that every kernel the timed runs use (the
    # one-row decode, the prefill, the verification over several rows) is compiled or loaded from Numba's
    # cache before the clock starts. Without it the first vanilla run pays for compiling.
    print("warming up: both runs once, a few tokens each (the first time, Numba compiles the kernels) ...",
          file=sys.stderr, flush=True)
    for drafter in (None, make_cli_drafter(args, model)):
        list(run_generation(model, ids, args, params, drafter, max_new_tokens=min(args.max_new_tokens, 8))[0])

    runs = {"vanilla": [], "speculative": []}  # per repeat: ([(token, from_draft)], stats)
    for _ in range(args.repeats):  # interleaved (V S V S ...), so both see the same machine load
        for name in runs:
            drafter = make_cli_drafter(args, model) if name == "speculative" else None
            tokens, stats, _ = run_generation(model, ids, args, params, drafter)
            runs[name].append((list(tokens), stats))
    load_after = load_average()

    seconds = {name: [stats.seconds for _, stats in rs] for name, rs in runs.items()}
    median = {name: statistics.median(times) for name, times in seconds.items()}
    speedup = median["vanilla"] / median["speculative"]
    speedups = [v / s for v, s in zip(seconds["vanilla"], seconds["speculative"])]  # one per interleaved pair
    threads, cores = compute_threads(), os.cpu_count() or 1
    warnings = reliability_warnings(speedups, load_after, threads, cores)
    (v_pairs, v_stats), (s_pairs, s_stats) = runs["vanilla"][-1], runs["speculative"][-1]
    v_ids, s_ids = [t for t, _ in v_pairs], [t for t, _ in s_pairs]
    # identical: every repeat, of either side, emitted exactly the first vanilla run's tokens
    every_run = [[t for t, _ in pairs] for rs in runs.values() for pairs, _ in rs]  # vanilla's first
    reference = every_run[0]
    differing = next((run for run in every_run if run != reference), None)
    identical = differing is None
    if args.json:
        print(json.dumps({"prompt_tokens": len(ids), "identical": identical, "speedup": round(speedup, 3),
                          "vanilla": {"ids": v_ids, "seconds": round(median["vanilla"], 4),
                                      "all_seconds": [round(x, 4) for x in seconds["vanilla"]],
                                      "stats": v_stats.to_dict()},
                          "speculative": {"ids": s_ids, "seconds": round(median["speculative"], 4),
                                          "all_seconds": [round(x, 4) for x in seconds["speculative"]],
                                          "stats": s_stats.to_dict()},
                          "repeats": args.repeats, "speedups": [round(x, 3) for x in speedups],
                          "load_average": {"before": load_before, "after": load_after, "cores": cores,
                                           "threads": threads},
                          "warnings": warnings,
                          "drafter": args.drafter, "k": args.k, "verify": args.verify, "tree": args.tree,
                          "seed": params.seed},
                         ensure_ascii=False))
    else:
        mark, stream = Marker(sys.stdout), tok.stream()
        body = "".join(mark(stream.push(t), d) for t, d in s_pairs) + stream.flush() + mark.end()
        print(text + body)
        print("-" * 72)
        mode = "greedy" if params.greedy else f"temperature {params.temperature}, seed {params.seed}"
        print(f"prompt {len(ids)} tokens, {len(v_ids)} new tokens, {mode}, drafter {args.drafter}, k={args.k}, "
              f"verify {args.verify}, backend {args.backend}, median of {args.repeats}")
        print(f"  vanilla      {len(v_ids) / median['vanilla']:7.1f} tokens/s  {median['vanilla']:6.2f} s  "
              f"{v_stats.target_forwards} target forwards")
        print(f"  speculative  {len(s_ids) / median['speculative']:7.1f} tokens/s  {median['speculative']:6.2f} s  "
              f"{s_stats.target_forwards} target forwards, {s_stats.acceptance_rate:.0%} of {s_stats.drafted} "
              f"drafts accepted, {s_stats.tokens_per_forward:.2f} tokens per forward")
        if identical:
            print(f"  identical output: yes ({len(v_ids)} of {len(v_ids)} tokens)")
        else:
            same = next((i for i, (a, b) in enumerate(zip(reference, differing)) if a != b),
                        min(len(reference), len(differing)))
            why = (" (expected: rejection sampling equals vanilla in distribution, not token for token; "
                   "--verify coupled --coupled gives identical samples)" if args.verify == "rejection" else "")
            print(f"  identical output: NO, first difference at token {same}{why}")
        print(f"  speedup: {speedup:.2f}x")
        if args.repeats > 1:
            print(f"  spread: {min(speedups):.2f}x to {max(speedups):.2f}x over {args.repeats} interleaved repeats "
                  f"(vanilla {min(seconds['vanilla']):.2f} to {max(seconds['vanilla']):.2f} s, speculative "
                  f"{min(seconds['speculative']):.2f} to {max(seconds['speculative']):.2f} s)")
        else:
            print("  spread: one repeat, none to show (--repeats 3 shows how far the repeats agree)")
        if load_before is not None and load_after is not None:
            print(f"  load average: {load_before:.1f} before, {load_after:.1f} after, on {cores} cores "
                  f"(this run computes on {threads} threads)")
        for warning in warnings:
            print(f"  warning: {warning}")
    if not identical and args.verify != "rejection":
        return 1
    return 0


def add_speculative_args(p, drafter_default=None):
    p.add_argument("--drafter", default=drafter_default,
                   help="ngram[:N] (prompt lookup), early-exit:L (first L blocks of the target), mtp (trained here), "
                        "auto (prompt lookup where the text repeats, the MTP drafter elsewhere; best with --tree)"
                        + ("" if drafter_default else "; without it, vanilla decoding"))
    p.add_argument("--k", type=int, default=4, help="tokens drafted per step (default 4)")
    p.add_argument("--verify", choices=["greedy", "rejection", "coupled"], default=None,
                   help="greedy (default at temperature 0), rejection (default when sampling), coupled")
    p.add_argument("--adaptive", action="store_true",
                   help="the break-even rule: each step verify the number of drafts n (0 to k; 0 = a plain decode "
                        "step) that maximises E(alpha, n) / (n c + v(n + 1)), alpha the acceptance so far "
                        "(with --tree: the tree's node budget, the same way)")
    p.add_argument("--verify-cost", type=parse_verify_cost, default=None, metavar="FIRST_EXTRA,PER_TOKEN",
                   help="with --adaptive: the rule's v(m) = 1 + FIRST_EXTRA + PER_TOKEN (m - 2) for m >= 2 "
                        "(default: the backend's own, adaptive.VerifyCost.for_backend; `python bench/verify_cost.py` "
                        "measures it; a negative FIRST_EXTRA as --verify-cost=-0.04,0.11)")
    p.add_argument("--tree", type=int, default=0, metavar="N",
                   help="verify a tree of up to N guesses per step, at most k deep, in one forward (default 0: a "
                        "chain of k drafts)")


def resolve_verify(args):
    if getattr(args, "verify", "x") is None:
        args.verify = "coupled" if args.coupled else ("greedy" if args.temperature == 0 else "rejection")


def build_parser():
    parser = Parser(prog="tinyspec", description="Speculative decoding from scratch, on Gemma 3 270M, on the CPU.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = sub.add_parser("convert", help="dequantize the packaged GGUF into the weights directory (once)")
    p.add_argument("--weights", default=None, help="target directory (default: $TINYSPEC_WEIGHTS or weights/gemma-3-270m)")
    p.add_argument("--force", action="store_true", help="convert again even if complete weights exist")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("tokenize", help="show the token ids of a text")
    p.add_argument("text", help="text to tokenize, or - for standard input")
    p.add_argument("--no-bos", action="store_true", help="do not prepend <bos>")
    p.add_argument("--weights", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_tokenize)

    p = sub.add_parser("predict", help="the next-token table: id, token, logit, probability")
    p.add_argument("prompt", help="prompt text, or - for standard input")
    p.add_argument("--top", type=int, default=10, help="how many rows (default 10)")
    p.add_argument("--json", action="store_true")
    add_model_args(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("generate", help="stream a continuation of the prompt")
    p.add_argument("prompt", help="prompt text, or - for standard input")
    add_sampling_args(p)
    p.add_argument("--coupled", action="store_true", help="sample by Gumbel-max keyed by (seed, position)")
    add_speculative_args(p)
    p.add_argument("--trace", action="store_true", help="print every speculative step")
    add_model_args(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("compare", help="vanilla vs speculative on the same settings: identical? how much faster?")
    p.add_argument("prompt", nargs="?", default=None,
                   help="prompt text, or - for standard input (default: a built-in code-editing example)")
    add_sampling_args(p)
    p.add_argument("--coupled", action="store_true", help="sample by Gumbel-max keyed by (seed, position)")
    add_speculative_args(p, drafter_default="ngram")
    p.add_argument("--repeats", type=int, default=3,
                   help="time each side this many times, interleaved (default 3): the median, and the spread")
    add_model_args(p)
    p.set_defaults(func=cmd_compare)

    # listed here for `tinyspec --help` only: main() hands `tinyspec bench ...` to the benchmark's own parser
    sub.add_parser("bench", add_help=False,
                   help="the benchmark by task: speedup, acceptance, identical output, peers (a source checkout)")

    from .mtp.train import add_train_mtp_parser
    add_train_mtp_parser(sub)
    return parser


def import_bench():
    """bench/run.py, the benchmark's command, of the source checkout this package runs from; None without one.

    The benchmark is not part of the installed package (pip installs tinyspec/ only): the checkout's bench/ is
    imported from its path as the package `bench`, so that its modules import one another as usual."""
    import importlib
    import importlib.util

    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")
    if not os.path.exists(os.path.join(root, "run.py")):
        return None
    if "bench" not in sys.modules:
        spec = importlib.util.spec_from_file_location("bench", os.path.join(root, "__init__.py"),
                                                      submodule_search_locations=[root])
        package = importlib.util.module_from_spec(spec)
        sys.modules["bench"] = package
        spec.loader.exec_module(package)
    return importlib.import_module("bench.run")


def cmd_bench(argv) -> int:
    """`tinyspec bench ARGS`: the benchmark parses ARGS itself (bench/run.py); it is imported only here."""
    bench = import_bench()
    if bench is None:
        raise CliError("`tinyspec bench` runs from a source checkout (it reads bench/prompts.jsonl): clone the "
                       "repository and `pip install -e .` there")
    args = bench.build_parser(prog="tinyspec bench", parser_class=Parser).parse_args(argv)
    return bench.cmd_bench(args)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if argv[:1] == ["bench"]:  # the benchmark has its own parser, imported for this command only
            return cmd_bench(argv[1:]) or 0
        args = build_parser().parse_args(argv)
        resolve_verify(args)
        return args.func(args) or 0
    except CliError as e:
        print(f"tinyspec: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `tinyspec generate ... | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ValueError, OSError, RuntimeError) as e:  # WeightsError is a RuntimeError
        print(f"tinyspec: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
