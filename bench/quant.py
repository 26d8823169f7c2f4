"""The quant backend against the float32 one: load time, peak memory, one decode step. One table from one run.

    python bench/quant.py              # a Markdown table; about a minute on 2 cores once Numba's cache is warm
    python bench/quant.py --steps 20   # the median of more decode steps

Each backend is measured in a fresh Python (so the peak RSS is its own), one after the other:

    load     Model.load(backend=...): numba reads the converted float32 safetensors (converted first if
             needed, which is not timed: run `tinyspec convert` before); quant maps the GGUF, reads its header and
             repacks the layers' blocks (tinyspec.quant.blocks.repack)
    RSS      peak resident memory (resource.getrusage ru_maxrss) after the load, and after the decode steps
             (the quant model's mapped blocks become resident as the forwards read them)
    decode   the median time of one forward of one token (the LM head included) after a 6-token prefill,
             after a first forward that loads the compiled kernels from Numba's cache

The load average before and after is printed with the table: the timings share the machine. The cost of a
verification forward over m tokens on each backend, v(m), and what it does to the break-even rule:
`python bench/verify_cost.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BACKENDS = ["numba", "quant"]


def child(backend: str, steps: int) -> dict:
    """Measured in this process: load, peak RSS, decode steps."""
    import resource

    from tinyspec.model import Model

    def rss_mb() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux

    if backend == "numba":
        from tinyspec.weights import ensure_converted

        ensure_converted()  # a conversion is not part of the load
    t0 = time.perf_counter()
    model = Model.load(backend=backend)
    load_s, load_rss = time.perf_counter() - t0, rss_mb()
    cache = model.new_cache()
    token = int(model.forward([2, 9259, 236764, 1217, 659, 611], cache)[-1].argmax())  # fills Numba's cache too
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        logits = model.forward([token], cache)
        times.append(time.perf_counter() - t0)
        token = int(logits[0].argmax())
    return {"backend": backend, "load_s": load_s, "load_rss_mb": load_rss, "rss_mb": rss_mb(),
            "decode_ms": 1000 * statistics.median(times), "weight_mb": model.weight_bytes() / 1e6}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="decode steps per backend (default 10)")
    parser.add_argument("--child", choices=BACKENDS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.steps)))
        return
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    rows = []
    for backend in BACKENDS:
        done = subprocess.run([sys.executable, __file__, "--child", backend, "--steps", str(args.steps)],
                              capture_output=True, text=True, cwd=REPO, check=True)
        rows.append(json.loads(done.stdout.splitlines()[-1]))
    print(f"| backend | weights read per forward | load | peak RSS after load | peak RSS after {args.steps} "
          f"decode steps | decode step (median of {args.steps}) |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['backend']} | {r['weight_mb']:.0f} MB | {r['load_s']:.2f} s | {r['load_rss_mb']:.0f} MB | "
              f"{r['rss_mb']:.0f} MB | {r['decode_ms']:.1f} ms |")
    print(f"\nload average (1, 5, 15 min): {load_before} before, "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} after; threads: NUMBA_NUM_THREADS="
          f"{os.environ.get('NUMBA_NUM_THREADS', 'all')}")


if __name__ == "__main__":
    main()
