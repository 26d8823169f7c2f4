"""The baseline numbers of the real model: conversion, loading, memory, prefill and decode speed.

    python bench/baseline.py            # prints a Markdown table (takes about two minutes)
    python bench/baseline.py --quick    # skips the conversion (reuses the converted weights)

Each phase runs in a fresh Python process so that its peak memory (ru_maxrss) is its own. Both backends
are measured in the same run: "numpy" (the readable reference) and "numba" (the batch-invariant kernels).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CHILD = r'''
import json, resource, sys, time
import numpy as np
phase, arg, backend = sys.argv[1], sys.argv[2], sys.argv[3]
out = {}
if phase == "convert":
    from tinyspec.weights import convert
    t = time.perf_counter(); convert(arg, progress=lambda m: None); out["seconds"] = time.perf_counter() - t
elif phase == "load":
    from tinyspec.weights import load
    t = time.perf_counter(); load(arg); out["seconds"] = time.perf_counter() - t
else:
    from tinyspec.model import Model
    from tinyspec.tokenizer import Tokenizer
    from tinyspec.decoding import prefill
    model = Model.load(arg, backend=backend)
    tok = Tokenizer.from_file(arg + "/tokenizer.json")
    text = open(sys.argv[4]).read()
    ids = tok.encode(text)[:256]
    model.forward(ids[:8], model.new_cache(), last_only=True)  # warm-up (loads compiled kernels)
    cache = model.new_cache(len(ids) + 40)
    t = time.perf_counter(); logits, _ = prefill(model, np.array(ids), cache); out["prefill_seconds"] = time.perf_counter() - t
    out["prompt_tokens"] = len(ids)
    token, n = int(np.argmax(logits)), 32
    t = time.perf_counter()
    for _ in range(n):
        token = int(np.argmax(model.forward([token], cache)[0]))
    out["decode_seconds"] = time.perf_counter() - t
    out["decode_tokens"] = n
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
'''

PROSE = ("The history of computing is a story of ideas that took decades to become practical. " * 40)


def run(phase, arg, backend="numba", text_file=""):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    res = subprocess.run([sys.executable, "-c", CHILD, phase, str(arg), backend, text_file],
                         capture_output=True, text=True, check=True, env=env)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="skip the conversion timing")
    args = ap.parse_args()

    from tinyspec.weights import ensure_converted

    weights = ensure_converted()
    rows = []
    if not args.quick:
        with tempfile.TemporaryDirectory() as tmp:
            r = run("convert", Path(tmp) / "w")
        rows.append(("conversion (GGUF -> float32 safetensors, once)", f"{r['seconds']:.1f} s",
                     f"{r['peak_rss_mb']:.0f} MB"))
    r = run("load", weights)
    rows.append(("load after conversion (checksums verified)", f"{r['seconds']:.2f} s", f"{r['peak_rss_mb']:.0f} MB"))
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write(PROSE)
    for backend in ("numpy", "numba"):
        r = run("generate", weights, backend, f.name)
        rows.append((f"prefill, {backend} backend ({r['prompt_tokens']} tokens)",
                     f"{r['prompt_tokens'] / r['prefill_seconds']:.0f} tokens/s", f"{r['peak_rss_mb']:.0f} MB"))
        rows.append((f"decode, {backend} backend (greedy, {r['decode_tokens']} tokens)",
                     f"{r['decode_tokens'] / r['decode_seconds']:.2f} tokens/s", "(same process)"))
    Path(f.name).unlink()
    import numpy as np

    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, Python {platform.python_version()}, "
          f"numpy {np.__version__}")
    print()
    print("| what | measured | peak RSS |")
    print("|---|---|---|")
    for what, value, mem in rows:
        print(f"| {what} | {value} | {mem} |")


if __name__ == "__main__":
    main()
