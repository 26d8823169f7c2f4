"""The benchmark's own checks: the prompts file is well-formed and covers every category (some prompts longer
than the 512-token sliding window), and the runner's measuring, arithmetic and tables work, on a tiny random
model (no timing is asserted: only that the numbers are consistent)."""

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from tinyspec.config import tiny_config
from tinyspec.model import Model
from tinyspec.sampling import SamplingParams
from tinyspec.weights import random_weights

REPO = Path(__file__).resolve().parent.parent


def load_runner():
    spec = importlib.util.spec_from_file_location("bench_run", REPO / "bench" / "run.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_run"] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


run = load_runner()


# --- the prompts -------------------------------------------------------------------------------------------

def test_prompts_are_well_formed_and_cover_every_category():
    prompts = run.load_prompts()
    counts = {c: sum(p["category"] == c for p in prompts) for c in run.CATEGORIES}
    assert all(n >= 5 for n in counts.values()), counts
    assert len({p["id"] for p in prompts}) == len(prompts)


@pytest.mark.real
def test_some_prompts_are_longer_than_the_sliding_window(gemma_tokenizer):
    prompts = run.load_prompts()
    lengths = {p["id"]: len(gemma_tokenizer.encode(p["prompt"])) for p in prompts}
    long = [i for i, n in lengths.items() if n > 512]
    assert len(long) >= 3, lengths
    assert {p["category"] for p in prompts if p["id"] in long} >= {"code", "code-edit", "extraction"}
    assert all(lengths[p["id"]] + p["max_new_tokens"] <= 2048 for p in prompts)  # well inside the context


@pytest.mark.parametrize("line, message", [
    ("not json", "not JSON"),
    ('{"id": "a", "category": "code", "prompt": "x"}', "expected exactly the keys"),
    ('{"id": "a", "category": "poetry", "prompt": "x", "max_new_tokens": 8}', "unknown category"),
    ('{"id": "a", "category": "code", "prompt": " ", "max_new_tokens": 8}', "non-empty string"),
    ('{"id": "a", "category": "code", "prompt": "x", "max_new_tokens": 0}', "max_new_tokens"),
])
def test_malformed_prompt_lines_are_named(tmp_path, line, message):
    path = tmp_path / "p.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(ValueError, match=message) as e:
        run.load_prompts(path)
    assert "line 1" in str(e.value)


def test_duplicate_ids_are_rejected(tmp_path):
    line = '{"id": "a", "category": "code", "prompt": "x", "max_new_tokens": 8}\n'
    (tmp_path / "p.jsonl").write_text(line + line)
    with pytest.raises(ValueError, match="line 2: duplicate id"):
        run.load_prompts(tmp_path / "p.jsonl")


def test_select_prompts():
    prompts = [{"id": f"{c}{i}", "category": c} for c in ("code", "prose") for i in range(3)]
    assert [p["id"] for p in run.select_prompts(prompts, per_category=1)] == ["code0", "prose0"]
    assert [p["id"] for p in run.select_prompts(prompts, categories=["prose"])] == ["prose0", "prose1", "prose2"]
    assert [p["id"] for p in run.select_prompts(prompts, ids=["code2", "prose1"])] == ["code2", "prose1"]


# --- the arithmetic ---------------------------------------------------------------------------------------------

def test_cost_model():
    assert run.cost_model_speedup(0.8, 4, c=0.0, v=1.0) == pytest.approx(1 + 0.8 + 0.8**2 + 0.8**3 + 0.8**4)
    assert run.cost_model_speedup(1.0, 4, c=0.0, v=1.25) == pytest.approx(5 / 1.25)  # every draft kept
    assert run.cost_model_speedup(0.0, 4, c=0.1, v=1.0) == pytest.approx(1 / 1.4)  # drafting only costs


def test_compare_sums_runs_into_the_table_numbers():
    # vanilla: 11 tokens, the last 10 decoded in 1 s; speculative: the same 10 in 0.5 s over 4 steps, drafting
    # 8 tokens (4 per step requested) of which 6 were kept, 0.1 s of it spent drafting
    vanilla = run.Run(ids=list(range(11)), seconds=1.2, prefill_seconds=0.2, target_forwards=11)
    spec = run.Run(ids=list(range(11)), seconds=0.7, prefill_seconds=0.2, target_forwards=5, drafted=8,
                   accepted=6, steps=4, draft_seconds=0.1, k_requested=16)
    r = run.compare([vanilla], [spec], k_default=4)
    assert r["speedup"] == pytest.approx(2.0)
    assert r["end_to_end_speedup"] == pytest.approx(1.2 / 0.7)
    assert r["acceptance_rate"] == pytest.approx(0.75)
    assert r["tokens_per_forward"] == pytest.approx(2.5)
    assert r["c"] == pytest.approx((0.1 / 4) / (4 * 0.1))  # per requested draft token, in vanilla decode steps
    assert r["v"] == pytest.approx((0.4 / 4) / 0.1)  # per step, the drafting excluded
    assert r["k"] == pytest.approx(8 / 4)  # drafts verified per step
    # E(0.75, 2) tokens per step, each step costing 4 c (drafting) + v
    assert r["predicted_speedup"] == pytest.approx((1 + 0.75 + 0.75**2) / (4 * r["c"] + r["v"]))


def test_median_run_takes_the_middle_decode_time():
    runs = [run.Run([1, 2], s, 0.0, 2) for s in (3.0, 1.0, 2.0, 9.0)]
    assert run.median_run(runs).seconds == 2.0


# --- the runner on a tiny random model ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_results():
    cfg = tiny_config()
    model = Model(cfg, random_weights(cfg, seed=3, scale=1.0), backend="numba")
    prompt = [2, 5, 6, 7, 8, 9, 5, 6, 7, 8, 9, 5, 6]
    modes = {"greedy": (SamplingParams(), "greedy", {"ngram": 2, "early-exit:1": 1}),
             "sampled": (SamplingParams(temperature=0.7, seed=1), "rejection", {"ngram": 1})}
    measured = run.measure_prompt(model, prompt, 12, modes, k=3)
    for mode, by in measured.items():
        for name, e in by.items():
            e["identical"] = e["run"].ids == by["vanilla"]["run"].ids
    results = run.Results({"k": 3, "backend": "numba", "repeats": 2, "temperature": 0.7, "seed": 1},
                          {"cpu": "test", "load_before": "0.0", "load_after": "0.0"})
    for i, category in enumerate(("code-edit", "prose")):
        results.prompts.append({"id": f"p{i}", "category": category, "prompt_tokens": len(prompt),
                                "max_new_tokens": 12, "modes": measured})
    return results


def test_greedy_speculative_output_is_identical_on_the_tiny_model(tiny_results):
    for p in tiny_results.prompts:
        greedy = p["modes"]["greedy"]
        assert set(greedy) == {"vanilla", "ngram", "early-exit:1"}
        assert all(e["identical"] and e["repeatable"] for e in greedy.values())
        assert len(greedy["vanilla"]["run"].ids) == 12
        assert greedy["ngram"]["run"].steps == greedy["ngram"]["run"].target_forwards - 1
        assert [len(greedy[n]["all_decode_seconds"]) for n in ("vanilla", "ngram", "early-exit:1")] == [2, 2, 1]
        assert len(p["modes"]["sampled"]["vanilla"]["all_decode_seconds"]) == 1


def test_summary_rows_and_markdown(tiny_results):
    rows = tiny_results.rows("greedy")
    assert [(r["category"], r["drafter"]) for r in rows] == [
        ("code-edit", "ngram"), ("prose", "ngram"), ("all", "ngram"),
        ("code-edit", "early-exit:1"), ("prose", "early-exit:1"), ("all", "early-exit:1")]
    for r in rows:
        assert r["identical"] == r["prompts"]
        assert 0.0 <= r["acceptance_rate"] <= 1.0
        assert 1.0 <= r["tokens_per_forward"] <= 3 + 1
        assert r["speedup"] > 0 and r["predicted_speedup"] > 0
    ngram = tiny_results.rows("sampled")
    assert {r["drafter"] for r in ngram} == {"ngram"} and all(r["identical"] is None for r in ngram)
    text = run.markdown(tiny_results)
    assert "## Greedy" in text and "## Sampled (temperature 0.7" in text and "| **all** | ngram | 2 |" in text
    assert text.count("| p0 | code-edit |") == 3  # greedy ngram, greedy early-exit, sampled ngram


def test_json_round_trip_and_chart(tiny_results, tmp_path):
    data = json.loads(json.dumps(tiny_results.to_json()))
    assert [r["category"] for r in data["summary"]["greedy"]][:3] == ["code-edit", "prose", "all"]
    run_json = data["prompts"][0]["modes"]["greedy"]["ngram"]
    assert run_json["identical"] is True and len(run_json["ids"]) == 12
    pytest.importorskip("matplotlib")
    assert run.plot(data, tmp_path / "chart.png")
    assert (tmp_path / "chart.png").stat().st_size > 1000


def test_peers_table_from_a_peer_report(tiny_results):
    row = {"decode_tokens": 10, "decode_seconds": 2.0}
    tiny_results.peers = {"notes": ["llama.cpp peer skipped: llama_cpp is not importable"], "engines": {
        "transformers (float32)": {"speculative": "prompt lookup k=3", "prompts": [
            {"id": "p0", "category": "code-edit", "vanilla": row, "matches_tinyspec": True,
             "speculative": {"decode_tokens": 10, "decode_seconds": 1.0}, "identical": True}]}}}
    try:
        table = run.markdown_peers(tiny_results)
    finally:
        tiny_results.peers = {}
    assert "- llama.cpp peer skipped" in table
    assert "| transformers (float32) | 1 | 5.0 | prompt lookup k=3 | 10.0 | 2.00x | 1/1 | 1/1 |" in table
    assert "| tinyspec (numba) | 1 |" in table


def test_cli_wiring():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    run.add_bench_parser(sub)
    args = parser.parse_args(["bench", "--quick", "--drafters", "ngram:2", "--backend", "numpy"])
    assert args.quick and args.drafters == "ngram:2" and args.backend == "numpy" and args.func is run.cmd_bench
    args = run.build_parser().parse_args(["--k", "8", "--sampled-repeats", "0"])
    assert args.k == 8 and args.sampled_repeats == 0 and args.repeats == 2


def test_running_the_script_takes_bench_off_sys_path(monkeypatch):
    """`python bench/run.py` puts bench/ first on sys.path, where bench/kernels.py would shadow the PyPI package
    `kernels` (which transformers imports): the script must remove it before anything else is imported."""
    bench = REPO / "bench"
    monkeypatch.setattr(sys, "path", [str(bench)] + [p for p in sys.path if Path(p or ".").resolve() != bench])
    assert Path(importlib.util.find_spec("kernels").origin).parent == bench  # the shadowing, before the fix
    sys.modules.pop("kernels", None)
    load_runner()
    assert all(Path(p or ".").resolve() != bench for p in sys.path)
    found = importlib.util.find_spec("kernels")
    assert found is None or Path(found.origin).parent != bench
    assert str(REPO) in sys.path
