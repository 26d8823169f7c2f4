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


def cmd_generate(args):
    from .decoding import Stats, generate

    if args.max_new_tokens < 0:
        raise CliError(f"--max-new-tokens must be >= 0, got {args.max_new_tokens}")
    params = sampling_params(args)
    text = read_prompt(args.prompt)
    model, tok = load(args)
    ids = tok.encode(text)
    stats = Stats()
    stream = tok.stream()
    out = []
    if not args.json:
        sys.stdout.write(text)
        sys.stdout.flush()
    try:
        for token in generate(model, ids, args.max_new_tokens, params, stats=stats):
            out.append(token)
            if not args.json:
                sys.stdout.write(stream.push(token))
                sys.stdout.flush()
    except ValueError as e:
        raise CliError(str(e)) from None
    if args.json:
        print(json.dumps({"prompt_ids": ids, "ids": out, "text": tok.decode(out), "seed": params.seed,
                          "stats": stats.to_dict()}, ensure_ascii=False))
    else:
        sys.stdout.write(stream.flush() + "\n")
        print(f"[{stats.new_tokens} tokens, {stats.seconds:.2f} s, {stats.tokens_per_second:.1f} tokens/s]",
              file=sys.stderr)


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
    add_model_args(p)
    p.set_defaults(func=cmd_generate)
    return parser


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
        args.func(args)
        return 0
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
