"""The machine a benchmark ran on (CPU, cores, memory, versions, load, commit) and the memory floor of decoding
on it: no float32 decoder can read the weights faster than the machine streams memory."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def machine_info() -> dict:
    info = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "platform": platform.platform(),
            "python": platform.python_version(), "numpy": np.__version__, "cores": os.cpu_count()}
    try:
        import numba

        info["numba"] = numba.__version__
        info["numba_threads"] = numba.config.NUMBA_NUM_THREADS
    except ImportError:
        info["numba"] = "not installed"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        mem = Path("/proc/meminfo").read_text().split()
        info["memory_gb"] = round(int(mem[mem.index("MemTotal:") + 1]) / 2 ** 20)
    except (OSError, ValueError):
        info.setdefault("cpu", platform.processor() or platform.machine())
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        info["commit"] = commit + ("+changes" if dirty else "") if commit else "?"
    except (OSError, subprocess.SubprocessError):
        info["commit"] = "?"
    info["load_before"] = load_average()
    return info


def load_average(digits: int = 1) -> str:
    try:
        return " ".join(f"{x:.{digits}f}" for x in os.getloadavg())
    except OSError:
        return "?"


def load_note(before: str) -> str:
    """The last line of a timing script: the load averages before (`load_average(2)` taken at its start) and
    now, and the threads the kernels were allowed."""
    return (f"load average (1, 5, 15 min): {before} before, {load_average(2)} after; threads: NUMBA_NUM_THREADS="
            f"{os.environ.get('NUMBA_NUM_THREADS', 'all')}")


def memory_floor(model) -> dict:
    """Bytes of weights one decode forward reads, the streaming bandwidth, and their ratio in ms per token.

    The bandwidth is the faster of two read-only streams: a sum over 512 MB (tinyspec.measure.memory_bandwidth)
    and tinyspec's own single-row LM head, which reads the 262144 x 640 float32 embedding once per call (on one
    core the matvec kernel streams faster than the plain sum does)."""
    from tinyspec.measure import best_seconds, memory_bandwidth, weight_bytes

    nbytes = weight_bytes(model.weights)
    h = np.ones((1, model.cfg.hidden_size), dtype=np.float32)  # [1, d]
    rates = {"sum": memory_bandwidth(), "lm_head": nbytes["head"] / best_seconds(lambda: model.head(h), repeats=5)}
    reader = max(rates, key=rates.get)
    return {"bytes": nbytes["total"], "head_bytes": nbytes["head"], "gbps": rates[reader] / 1e9, "reader": reader,
            "gbps_by_reader": {k: round(v / 1e9, 2) for k, v in rates.items()},
            "ms": nbytes["total"] / rates[reader] * 1e3}
