"""The kernels on this machine: is verifying 8 tokens nearly as cheap as decoding 1? All ratios from one run.

    python bench/kernels.py             # prints Markdown tables (about two minutes on 2 cores)
    python bench/kernels.py --quick     # fewer repeats, no compile-time measurement
    NUMBA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python bench/kernels.py --cpu-time
                                        # one thread each, timed by CPU time: the kernels' own cost, little
                                        # disturbed by other processes on a shared machine

# 1. machine   CPU, threads, the OpenBLAS variables in force, load average (timings share the machine)
# 2. memory    bandwidth of a large np.copyto (read + write bytes per second): the floor a memory-bound
#              kernel can approach
# 3. matmul    x [M, K] @ W [N, K].T for M in 1, 2, 4, 8, 16, 64 on the LM head [262144, 640] (671 MB)
#              and a block's [2048, 640]: median time, weight bytes streamed per second, time / time(M=1);
#              numba and numpy timed alternately in the same run, so both see the same load
# 4. model     the real Gemma 3 270M: forward(M=8) / forward(M=1) per backend; greedy decode tokens/s with
#              numba vs numpy; the memory floor (model bytes read per token / the copy bandwidth above)
# 5. compile   first call of every kernel with an empty Numba cache, then with the cache filled (each in a
#              fresh process with its own cache directory)

Each section is a function returning a `Table`.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent

from tinyspec.fast import kernels

LM_HEAD = (262144, 640)  # Gemma 3 270M's tied embedding / output layer [V, d]
BLOCK = (2048, 640)  # a block's gate_proj / up_proj [f, d]
ROWS = (1, 2, 4, 8, 16, 64)


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        lines = [f"### {self.title}", "", "| " + " | ".join(self.header) + " |",
                 "|" + "|".join("---" for _ in self.header) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        lines += [""] + self.notes if self.notes else []
        return "\n".join(lines) + "\n"


CLOCK = time.perf_counter  # wall time; --cpu-time switches to time.process_time


def median_seconds(f, repeats: int) -> float:
    """Median time of f() over `repeats` calls, after one untimed call."""
    return statistics.median(in_turns({"f": f}, repeats)["f"])


def in_turns(fs: dict, rounds: int, per_turn: int = 1, pause: float = 0.0) -> dict:
    """{name: [seconds of each timed call]}: `rounds` rounds in which each f takes a turn, so that a burst of
    load from elsewhere, or a slow minute of memory bandwidth, hits every f alike. A turn waits `pause` seconds
    (the previous library's spinning threads go idle and stop competing for the cores), calls f once untimed
    (waking f's own threads, as the back-to-back calls of a forward pass find them), then times `per_turn`
    calls back to back."""
    times = {name: [] for name in fs}
    for f in fs.values():
        f()  # compile, touch the memory
    for _ in range(rounds):
        for name, f in fs.items():
            if pause:
                time.sleep(pause)
                f()
            for _ in range(per_turn):
                t = CLOCK()
                f()
                times[name].append(CLOCK() - t)
    return times


def copy_bandwidth(nbytes: int = 1 << 30, repeats: int = 5) -> float:
    """GB/s of np.copyto over nbytes (counting the bytes read and the bytes written)."""
    src = np.ones(nbytes // 4, np.float32)
    dst = np.empty_like(src)
    return 2 * nbytes / median_seconds(lambda: np.copyto(dst, src), repeats) / 1e9


def memory_floor_ms(bytes_per_token: float, gbps: float) -> float:
    """The fastest a memory-bound forward can be: every byte read once at the copy bandwidth (read-only
    streaming may be a little faster than copying, so this is a floor to compare with, not a hard limit)."""
    return bytes_per_token / (gbps * 1e9) * 1e3


# 1. machine --------------------------------------------------------------------------------------------

def machine_table() -> Table:
    import numba

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    blas = {k: os.environ[k] for k in sorted(os.environ) if k.startswith(("OPENBLAS", "OMP_", "MKL", "NUMBA"))}
    t = Table("Machine", ["what", "value"])
    t.rows += [["CPU", model], ["cores seen", str(os.cpu_count())],
               ["numba threads / layer", f"{numba.get_num_threads()} / {numba.threading_layer()}"],
               ["numpy / numba", f"{np.__version__} / {numba.__version__}"],
               ["BLAS variables", ", ".join(f"{k}={v}" for k, v in blas.items()) or "none set"],
               ["load average (1 min) at start", f"{os.getloadavg()[0]:.2f}"]]
    return t


# 2. memory ---------------------------------------------------------------------------------------------

def memory_table(gbps: float) -> Table:
    t = Table("Memory bandwidth", ["measure", "GB/s"])
    t.rows.append(["np.copyto of 1 GiB (read + write)", f"{gbps:.1f}"])
    return t


# 3. matmul ---------------------------------------------------------------------------------------------

def matmul_table(shape, rows=ROWS, repeats: int = 7, per_turn: int = 1, seed: int = 0) -> Table:
    """numba (batch-invariant) and numpy (BLAS) side by side: for each M the two take turns, `repeats` turns of
    `per_turn` timed calls each."""
    N, K = shape
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((N, K), dtype=np.float32)
    gbytes = W.nbytes / 1e9
    t = Table(f"matmul x [M, {K}] @ W [{N}, {K}].T ({W.nbytes / 1e6:.0f} MB of weights)",
              ["M", "numba ms", "numba GB/s", "numba / M=1", "numpy ms", "numpy GB/s", "numpy / M=1",
               "numpy / numba"])
    base = {}
    for M in rows:
        x = rng.standard_normal((M, K), dtype=np.float32)
        times = in_turns({"numba": lambda: kernels.matmul_numba(x, W), "numpy": lambda: kernels.matmul_numpy(x, W)},
                         repeats, per_turn, pause=0.3)  # OpenBLAS threads spin for about 0.1 s after a call
        ms = {name: statistics.median(ts) * 1e3 for name, ts in times.items()}
        best = {name: min(ts) * 1e3 for name, ts in times.items()}
        for name in ms:
            base.setdefault(name, ms[name])
        t.rows.append([str(M)] + [cell for name in ("numba", "numpy") for cell in (
            f"{ms[name]:.2f} ({best[name]:.2f})", f"{gbytes / ms[name] * 1e3:.1f}", f"{ms[name] / base[name]:.2f}")]
            + [f"{ms['numpy'] / ms['numba']:.2f}"])
    clock = "CPU" if CLOCK is time.process_time else "wall"
    t.notes.append(f"{clock} time, median (min) of {repeats * per_turn} calls: numba and numpy took {repeats} "
                   f"turns each, {per_turn} timed call(s) a turn; GB/s = weight bytes / median time (each weight "
                   "is read once per call)")
    return t


# 4. compile --------------------------------------------------------------------------------------------

def compile_table() -> Table:
    """kernels.warmup() in a fresh process with an empty cache directory, then again with it filled."""
    code = "import time; t = time.perf_counter(); from tinyspec.fast import kernels; s = kernels.warmup(); " \
           "print(s, time.perf_counter() - t)"
    t = Table("Compile time: every kernel's first call", ["cache", "warmup() s", "import + warmup() s"])
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache, PYTHONPATH=str(REPO))
        for label in ("empty (compiles)", "filled (loads)"):
            out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                 check=True).stdout.split()
            t.rows.append([label, f"{float(out[0]):.2f}", f"{float(out[1]):.2f}"])
    return t


# 4. the whole model -------------------------------------------------------------------------------------

def model_tables(gbps: float, repeats: int, decode_tokens: int = 24) -> list:
    """Real Gemma 3 270M: forward(M=8) / forward(M=1) per backend, decode tokens/s numba vs numpy, and the
    memory floor (bytes read per token / the copy bandwidth measured in this run)."""
    from tinyspec.model import Model
    from tinyspec.weights import ensure_converted, load, weight_bytes

    cfg, weights = load(ensure_converted())
    nbytes = weight_bytes(weights)["total"]
    prompt = [2] + [818, 5279, 529, 7001, 563] * 20  # 101 tokens of context
    fwd = Table("Forward pass, real Gemma 3 270M (context 101 tokens)",
                ["backend", "M=1 ms", "M=8 ms", "forward(M=8) / forward(M=1)"])
    dec = Table(f"Greedy decode, {decode_tokens} tokens after a 101-token prompt",
                ["backend", "ms / token", "tokens/s", "memory floor ms / token", "ms / floor"])
    fwd.notes.append(f"median (min) of {repeats}, M = 1 and M = 8 called in turns; the ratio is of the medians "
                     "(of the minima)")
    floor = memory_floor_ms(nbytes, gbps)
    results = {}
    for backend in ("numba", "numpy"):
        model = Model(cfg, weights, backend=backend)
        cache = model.new_cache(len(prompt) + decode_tokens + 16)
        model.forward(prompt, cache, last_only=True)  # the prefill: BLAS on both backends
        time.sleep(0.3)  # threads spin for about 0.1 s after a call (OpenBLAS's after the prefill, Numba's after
        #                  the previous backend's decode): let them go idle before anything is timed

        def step(M):
            model.forward([5] * M, cache)
            cache.truncate(len(prompt))
        times = in_turns({1: lambda: step(1), 8: lambda: step(8)}, repeats)  # M = 1 and M = 8 in turns
        t1, t8 = statistics.median(times[1]), statistics.median(times[8])
        b1, b8 = min(times[1]), min(times[8])
        fwd.rows.append([backend, f"{t1 * 1e3:.1f} ({b1 * 1e3:.1f})", f"{t8 * 1e3:.1f} ({b8 * 1e3:.1f})",
                         f"{t8 / t1:.2f} ({b8 / b1:.2f})"])
        token = 5
        t = CLOCK()
        for _ in range(decode_tokens):
            token = int(np.argmax(model.forward([token], cache)[0]))
        per = (CLOCK() - t) / decode_tokens
        results[backend] = per
        dec.rows.append([backend, f"{per * 1e3:.1f}", f"{1 / per:.1f}", f"{floor:.1f}", f"{per * 1e3 / floor:.2f}"])
    dec.notes.append(f"model bytes read per token: {nbytes / 1e9:.3f} GB; numba / numpy decode speed: "
                     f"{results['numpy'] / results['numba']:.2f}x")
    return [fwd, dec]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="5 repeats, no compile-time measurement")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--cpu-time", action="store_true", help="time by CPU time (meaningful with one thread)")
    ap.add_argument("--no-model", action="store_true", help="skip the real-model rows (forward ratio, decode)")
    args = ap.parse_args(argv)
    global CLOCK
    CLOCK = time.process_time if args.cpu_time else time.perf_counter
    repeats = 5 if args.quick else args.repeats
    kernels.warmup()
    gbps = copy_bandwidth(repeats=repeats)
    tables = [machine_table(), memory_table(gbps)]
    for shape, per_turn in ((LM_HEAD, 1), (BLOCK, 10)):  # a block's matmul takes well under a millisecond
        print(f"timing matmul {shape} ...", file=sys.stderr, flush=True)
        tables.append(matmul_table(shape, repeats=repeats, per_turn=per_turn))
    if not args.no_model:
        print("timing the real model ...", file=sys.stderr, flush=True)
        tables += model_tables(gbps, repeats)
    if not args.quick:
        print("timing compilation ...", file=sys.stderr, flush=True)
        tables.append(compile_table())
    tables.append(Table("Load", ["when", "load average (1 min)"], [["at the end", f"{os.getloadavg()[0]:.2f}"]]))
    print("\n".join(tab.markdown() for tab in tables))


if __name__ == "__main__":
    main()
