"""The benchmark's own checks: the prompts file is well-formed and covers every category (some prompts longer
than the 512-token sliding window), and the runner's measuring, arithmetic and tables work, on a tiny random
model (no timing is asserted: only that the numbers are consistent)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tinyspec import cli, theory
from tinyspec.config import tiny_config
from tinyspec.model import Model
from tinyspec.sampling import SamplingParams
from tinyspec.weights import random_weights

REPO = Path(__file__).resolve().parent.parent

cli.import_bench()  # bench/ is not installed: this imports the checkout's bench/ as the package `bench`
from bench import measure, peers, report, run  # noqa: E402
from bench.prompts import CATEGORIES, load_prompts, select_prompts  # noqa: E402


# --- the prompts -------------------------------------------------------------------------------------------

def test_prompts_are_well_formed_and_cover_every_category():
    prompts = load_prompts()
    counts = {c: sum(p["category"] == c for p in prompts) for c in CATEGORIES}
    assert all(n >= 5 for n in counts.values()), counts
    assert len({p["id"] for p in prompts}) == len(prompts)


@pytest.mark.real
def test_some_prompts_are_longer_than_the_sliding_window(gemma_tokenizer):
    prompts = load_prompts()
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
        load_prompts(path)
    assert "line 1" in str(e.value)


def test_duplicate_ids_are_rejected(tmp_path):
    line = '{"id": "a", "category": "code", "prompt": "x", "max_new_tokens": 8}\n'
    (tmp_path / "p.jsonl").write_text(line + line)
    with pytest.raises(ValueError, match="line 2: duplicate id"):
        load_prompts(tmp_path / "p.jsonl")


def test_select_prompts():
    prompts = [{"id": f"{c}{i}", "category": c} for c in ("code", "prose") for i in range(3)]
    assert [p["id"] for p in select_prompts(prompts, per_category=1)] == ["code0", "prose0"]
    assert [p["id"] for p in select_prompts(prompts, categories=["prose"])] == ["prose0", "prose1", "prose2"]
    assert [p["id"] for p in select_prompts(prompts, ids=["code2", "prose1"])] == ["code2", "prose1"]


# --- the arithmetic ---------------------------------------------------------------------------------------------

def test_cost_model():
    """The bench's cost-model column is tinyspec.theory's speedup formula."""
    assert theory.expected_speedup(0.8, 4, c=0.0, v=1.0) == pytest.approx(1 + 0.8 + 0.8**2 + 0.8**3 + 0.8**4)
    assert theory.expected_speedup(1.0, 4, c=0.0, v=1.25) == pytest.approx(5 / 1.25)  # every draft kept
    assert theory.expected_speedup(0.0, 4, c=0.1, v=1.0) == pytest.approx(1 / 1.4)  # drafting only costs


def test_compare_sums_runs_into_the_table_numbers():
    # vanilla: 11 tokens, the last 10 decoded in 1 s; speculative: the same 10 in 0.5 s over 4 steps, drafting
    # 8 tokens (4 per step requested) of which 6 were kept, 0.1 s of it spent drafting
    vanilla = measure.Run(ids=list(range(11)), seconds=1.2, prefill_seconds=0.2, target_forwards=11)
    spec = measure.Run(ids=list(range(11)), seconds=0.7, prefill_seconds=0.2, target_forwards=5, drafted=8,
                   accepted=6, steps=4, draft_seconds=0.1, k_requested=16)
    r = measure.compare([vanilla], [spec], k_default=4)
    assert r["speedup"] == pytest.approx(2.0)
    assert r["end_to_end_speedup"] == pytest.approx(1.2 / 0.7)
    assert r["acceptance_rate"] == pytest.approx(0.75)
    assert r["tokens_per_forward"] == pytest.approx(2.5)
    assert r["c"] == pytest.approx((0.1 / 4) / (4 * 0.1))  # per requested draft token, in vanilla decode steps
    assert r["v"] == pytest.approx((0.4 / 4) / 0.1)  # per step, the drafting excluded
    assert r["k"] == pytest.approx(8 / 4)  # drafts verified per step
    # E(0.75, 2) tokens per step, each step costing 4 c (drafting) + v
    assert r["predicted_speedup"] == pytest.approx((1 + 0.75 + 0.75**2) / (4 * r["c"] + r["v"]))


# --- drafter specs: @kN and /treeN ---------------------------------------------------------------------------

@pytest.mark.parametrize("spec, tree, expected", [
    ("ngram:8", 0, ("ngram:8", 16, True, 0)),  # the rule, k up to --k, a chain
    ("ngram:8@k4", 0, ("ngram:8", 4, False, 0)),  # a fixed k, no rule
    ("ngram:8/tree24", 0, ("ngram:8", 16, True, 24)),  # a tree of 24, the tree rule, at most --k deep
    ("ngram:8@k16/tree24", 0, ("ngram:8", 16, False, 24)),  # a fixed budget of 24, at most 16 deep
    ("mtp/tree8", 0, ("mtp", 16, True, 8)),
    ("ngram:8", 12, ("ngram:8", 16, True, 12)),  # --tree 12 for a spec without its own
    ("ngram:8/tree6", 12, ("ngram:8", 16, True, 6)),  # its own wins
    ("ngram:8/tree0", 12, ("ngram:8", 16, True, 0)),  # /tree0: a chain, whatever --tree says
    ("mtp:runs/trees/x.npz", 0, ("mtp:runs/trees/x.npz", 16, True, 0)),  # "/tree" inside a path is no suffix
])
def test_drafter_specs_parse(spec, tree, expected):
    assert measure.parse_drafter(spec, 16, True, tree) == expected


@pytest.mark.parametrize("spec, tree, label", [
    ("ngram:8", 0, "ngram:8"), ("ngram:8", 16, "ngram:8/tree16"), ("ngram:8/tree0", 16, "ngram:8"),
    ("ngram:8@k16/tree24", 8, "ngram:8@k16/tree24"), ("mtp/tree8", 0, "mtp/tree8")])
def test_drafter_labels_carry_the_tree_budget(spec, tree, label):
    assert measure.drafter_label(spec, tree) == label
    assert measure.parse_drafter(label, 16, True) == measure.parse_drafter(spec, 16, True, tree)  # same meaning


@pytest.mark.parametrize("spec, message", [
    ("ngram/tree", "write a tree as /treeN"),
    ("ngram/treex", "write a tree as /treeN"),
    ("ngram/tree-3", "write a tree as /treeN"),
    ("ngram/tree8@k4", "write a tree as /treeN with N a whole number, after any @kN"),  # the order is @k, /tree
    ("ngram@k0/tree8", "write a fixed k as @kN with N >= 1"),
])
def test_bad_drafter_specs_are_named_in_one_line(spec, message):
    with pytest.raises(ValueError, match=message) as e:
        measure.parse_drafter(spec, 16, True)
    assert "\n" not in str(e.value) and repr(spec) in str(e.value)


def test_the_bench_module_examples():
    import doctest

    assert doctest.testmod(measure).failed == 0


def bench_args(*argv):
    return run.build_parser().parse_args(list(argv))


def test_check_args_writes_every_drafter_with_its_budget():
    args = bench_args("--drafters", "ngram:8,ngram:8/tree24,ngram@k8/tree0", "--tree", "16")
    run.check_args(args)
    assert args.drafters == "ngram:8/tree16,ngram:8/tree24,ngram@k8"
    args = bench_args("--drafters", "ngram:8,ngram:8/tree24")  # default --tree 0: chains
    run.check_args(args)
    assert args.drafters == "ngram:8,ngram:8/tree24"


@pytest.mark.parametrize("argv, message", [
    (["--drafters", "ngram:8/tree64"], "drafter ngram:8/tree64: a tree's node budget must lie in 0 .. 63"),
    (["--tree", "64"], "drafter ngram:8/tree64: a tree's node budget must lie in 0 .. 63"),
    (["--tree", "-1"], "--tree must be >= 0, got -1"),
    (["--drafters", "ngram:8/tree16,ngram:8", "--tree", "16"], "--drafters lists ngram:8/tree16 twice"),
    (["--drafters", "ngram:8/tree0,ngram:8"], "--drafters lists ngram:8 twice"),
    (["--drafters", "ngram:8/treetop"], "write a tree as /treeN"),
    (["--drafters", "bogus/tree8"], "unknown drafter 'bogus'"),
    (["--top-p", "1.5"], "top-p must lie in"),
    (["--top-k", "-3"], "top-k must be a whole number"),
])
def test_check_args_rejects_bad_trees_before_loading_the_model(argv, message):
    with pytest.raises(ValueError, match=message) as e:
        run.check_args(bench_args(*argv))
    assert "\n" not in str(e.value)


def test_a_bad_tree_spec_is_one_error_line(capsys):
    assert run.main(["--quick", "--drafters", "ngram:8/tree2x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("bench: error: drafter 'ngram:8/tree2x': write a tree as /treeN")


def test_tinyspec_bench_takes_the_tree_options(monkeypatch):
    seen = []
    monkeypatch.setattr(run, "cmd_bench", lambda args: seen.append(args) or 0)
    assert cli.main(["bench", "--quick", "--drafters", "ngram:8,ngram:8/tree24", "--tree", "8"]) == 0
    assert seen[0].tree == 8 and seen[0].drafters == "ngram:8,ngram:8/tree24"
    assert cli.main(["bench", "--quick"]) == 0 and seen[1].tree == 0  # chains by default


def test_timed_trees_are_the_inner_drafters_trees():
    """The timed drafter (tinyspec.measure) hands the loop the inner drafter's tree, not its chain. Prompt lookup (matching
    1 token) after [5, 6, 5, 7, 5, 8, 5]: the newest token 5 was followed by 8, 7 and 6 (most recent first), so a
    tree of budget 4, depth 1, holds those three as children of the root; a chain holds 8 alone."""
    from tinyspec.drafters import make_drafter
    from tinyspec.measure import TimedDrafter

    ticks = iter(range(10 ** 6))
    drafter = TimedDrafter(make_drafter("ngram:1"), clock=lambda: float(next(ticks)))
    tree = drafter.propose_tree([5, 6, 5, 7, 5, 8, 5], 4, 1)
    assert (tree.tokens, tree.parents) == ([8, 7, 6], [-1, -1, -1])
    assert (drafter.drafted, drafter.k_requested, drafter.calls, drafter.propose_seconds) == (3, 4, 1, 1.0)


def test_median_run_takes_the_middle_decode_time():
    runs = [measure.Run([1, 2], s, 0.0, 2) for s in (3.0, 1.0, 2.0, 9.0)]
    assert measure.median_run(runs).seconds == 2.0


# --- the runner on a tiny random model ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_model():
    cfg = tiny_config()
    return Model(cfg, random_weights(cfg, seed=3, scale=1.0), backend="numba")


@pytest.fixture(scope="module")
def tiny_results(tiny_model):
    model = tiny_model
    prompt = [2, 5, 6, 7, 8, 9, 5, 6, 7, 8, 9, 5, 6]
    modes = {"greedy": (SamplingParams(), "greedy", {"ngram": 2, "early-exit:1": 1}),
             "sampled": (SamplingParams(temperature=0.7, seed=1), "rejection", {"ngram": 1})}
    measured = measure.measure_prompt(model, prompt, 12, modes, k=3)
    for mode, by in measured.items():
        for name, e in by.items():
            e["identical"] = e["run"].ids == by["vanilla"]["run"].ids
    results = measure.Results({"k": 3, "backend": "numba", "repeats": 2, "temperature": 0.7, "seed": 1},
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
    text = report.markdown(tiny_results)
    assert "## Greedy" in text and "## Sampled (temperature 0.7" in text and "| **all** | ngram | 2 |" in text
    assert text.count("| p0 | code-edit |") == 3  # greedy ngram, greedy early-exit, sampled ngram


def test_json_round_trip_and_chart(tiny_results, tmp_path):
    data = json.loads(json.dumps(tiny_results.to_json()))
    assert [r["category"] for r in data["summary"]["greedy"]][:3] == ["code-edit", "prose", "all"]
    run_json = data["prompts"][0]["modes"]["greedy"]["ngram"]
    assert run_json["identical"] is True and len(run_json["ids"]) == 12
    pytest.importorskip("matplotlib")
    assert report.plot(data, tmp_path / "chart.png")
    assert (tmp_path / "chart.png").stat().st_size > 1000


def test_peers_table_from_a_peer_report(tiny_results):
    row = {"decode_tokens": 10, "decode_seconds": 2.0}
    tiny_results.peers = {"notes": ["llama.cpp peer skipped: llama_cpp is not importable"], "engines": {
        "transformers (float32)": {"speculative": "prompt lookup k=3", "prompts": [
            {"id": "p0", "category": "code-edit", "vanilla": row, "matches_tinyspec": True,
             "speculative": {"decode_tokens": 10, "decode_seconds": 1.0}, "identical": True}]}}}
    try:
        table = report.markdown_peers(tiny_results)
    finally:
        tiny_results.peers = {}
    assert "- llama.cpp peer skipped" in table
    assert "| transformers (float32) | 1 | 5.0 | prompt lookup k=3 | 10.0 | 2.00x | 1/1 | 1/1 |" in table
    assert "| tinyspec (numba) | 1 |" in table


def test_cli_wiring(monkeypatch):
    parser = run.build_parser(prog="tinyspec bench", parser_class=cli.Parser)
    args = parser.parse_args(["--quick", "--drafters", "ngram:2", "--backend", "numpy"])
    assert args.quick and args.drafters == "ngram:2" and args.backend == "numpy"
    args = run.build_parser().parse_args(["--k", "8", "--sampled-repeats", "0"])
    assert args.k == 8 and args.sampled_repeats == 0 and args.repeats == 2
    seen = []  # `tinyspec bench ARGS` runs bench's cmd_bench on ARGS parsed by bench's parser
    monkeypatch.setattr(run, "cmd_bench", lambda args: seen.append(args) or 0)
    assert cli.main(["bench", "--quick", "--drafters", "ngram:2", "--backend", "numpy"]) == 0
    assert seen[0].quick and seen[0].drafters == "ngram:2" and seen[0].backend == "numpy"


def test_the_cli_imports_the_bench_for_tinyspec_bench_only():
    code = ("import sys; from tinyspec import cli; cli.build_parser().parse_args(['tokenize', 'x']); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'bench'))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO / "tests")
    assert res.returncode == 0 and res.stdout.strip() == "[]", res.stderr


def test_tinyspec_bench_help_and_its_error_without_a_checkout(monkeypatch, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["bench", "--help"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("usage: tinyspec bench")
    monkeypatch.setattr(cli, "import_bench", lambda: None)  # an installed tinyspec: no bench/ beside it
    assert cli.main(["bench", "--quick"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "`tinyspec bench` runs from a source checkout" in err


def test_the_bench_leaves_sys_path_alone_and_runs_the_peers_as_a_module():
    """`python bench/peers.py` would put bench/ first on sys.path, where bench/kernels.py would shadow the PyPI
    package `kernels` (which transformers imports): the peers run as `python -m bench.peers` from the repository
    root instead, and no module of bench/ edits sys.path."""
    probe = ("import sys; before = list(sys.path); import bench.run, bench.peers; assert sys.path == before; "
             "import importlib.util as u; s = u.find_spec('kernels'); print(s.origin if s else None)")
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO)  # as -m does
    assert res.returncode == 0, res.stderr
    found = res.stdout.strip()
    assert found == "None" or Path(found).parent != REPO / "bench"
    command = peers.peers_command(sys.executable, "in.json", "out.json")
    assert command[1:3] == ["-m", "bench.peers"] and peers.REPO == REPO  # run_peers runs it with cwd=REPO


def test_python_bench_run_py_says_how_to_run_it():
    res = subprocess.run([sys.executable, str(REPO / "bench" / "run.py")], capture_output=True, text=True)
    assert res.returncode == 1 and "python -m bench" in res.stderr and "Traceback" not in res.stderr


def test_a_tree_run_on_the_tiny_model_equals_vanilla(tiny_model):
    """A /treeN run verifies trees (nodes a step up to N, never more) and decodes vanilla's tokens, with the tree
    rule (adaptive) and with a fixed budget (@kN)."""
    prompt = [2, 5, 6, 7, 8, 9, 5, 6, 7, 8, 9, 5, 6]
    vanilla = measure.run_once(tiny_model, prompt, 12, SamplingParams())
    for spec in ("ngram/tree6", "ngram@k3/tree6"):
        r = measure.run_once(tiny_model, prompt, 12, SamplingParams(), spec, "greedy", 3, adaptive=True)
        assert r.ids == vanilla.ids, spec
        assert r.steps == r.target_forwards - 1 and 0 <= r.accepted <= r.drafted <= 6 * r.steps
        assert r.k_requested <= 6 * r.steps


def test_tree_rows_carry_their_budget_and_no_chain_prediction():
    """A tree's row: its budget, its nodes per step as "k", and no cost-model prediction (the chain formula
    would read the share of nodes kept as a chain's acceptance); the tables print "-" for it."""
    vanilla = measure.Run(ids=list(range(11)), seconds=1.1, prefill_seconds=0.1, target_forwards=11)
    tree = measure.Run(ids=list(range(11)), seconds=0.6, prefill_seconds=0.1, target_forwards=5, drafted=24,
                       accepted=6, steps=4, draft_seconds=0.0, k_requested=32)
    entry = lambda run: {"run": run, "identical": True, "repeatable": True, "all_decode_seconds": [1.0]}
    results = measure.Results({"k": 4, "adaptive": True, "backend": "numba", "drafters": ["ngram/tree8"]}, {})
    results.prompts.append({"id": "p0", "category": "prose", "prompt_tokens": 3, "max_new_tokens": 11,
                            "modes": {"greedy": {"vanilla": entry(vanilla), "ngram/tree8": entry(tree)}}})
    row = results.rows("greedy")[-1]
    assert (row["category"], row["drafter"], row["tree"]) == ("all", "ngram/tree8", 8)
    assert row["k"] == pytest.approx(24 / 4) and row["acceptance_rate"] == pytest.approx(6 / 24)
    assert row["speedup"] == pytest.approx(2.0) and row["predicted_speedup"] is None
    table = report.markdown_summary(results, "greedy")
    assert "| **all** | ngram/tree8 | 1 |" in table and "| 6.0 |" in table and "| - | 1/1 |" in table
    assert "drafters marked /treeN verify a tree" in report.markdown(results)
    assert json.loads(json.dumps(results.to_json()))["summary"]["greedy"][-1]["tree"] == 8


@pytest.mark.real
def test_a_quick_real_run_with_a_tree_drafter(capsys):
    """`python -m bench --quick` on one prompt, 8 tokens, a chain and a tree of the same drafter: the tree's
    greedy output equals vanilla's (the exit status says so) and its label names it in the tables."""
    argv = ["--quick", "--ids", "count-to-100", "--max-new-tokens", "8", "--sampled-repeats", "0",
            "--drafters", "ngram:8,ngram:8/tree8", "--others-per-category", "1"]
    assert run.main(argv) == 0
    out = capsys.readouterr().out
    assert "| **all** | ngram:8/tree8 | 1 |" in out and "| **all** | ngram:8 | 1 |" in out
    assert out.count(" 1/1 |") == 2 * 2  # identical, per drafter: its category's row and its "all" row


def test_the_clock_argument_times_every_run(tiny_model):
    """--clock cpu passes time.process_time down to tinyspec's loops and TimedDrafter: here a fake clock that
    ticks one second a reading, so every time the bench reports is a whole number of its ticks."""
    ticks = iter(range(10 ** 6))
    clock = lambda: float(next(ticks))
    prompt = [2, 5, 6, 7, 8, 9, 5, 6, 7, 8, 9, 5, 6]
    for name in (None, "ngram"):
        r = measure.run_once(tiny_model, prompt, 8, SamplingParams(), name, "greedy", 3, clock=clock)
        assert r.seconds >= 1 and r.seconds == int(r.seconds) and r.prefill_seconds == int(r.prefill_seconds)
        assert r.draft_seconds == int(r.draft_seconds) and (name is None or r.draft_seconds >= 1)


# --- bench/replay.py: greedy runs replayed from their tokens -----------------------------------------------------

def test_a_replayed_run_counts_what_the_real_run_did():
    """The replay target knows only a greedy continuation; the real loop on it must make the forwards, steps,
    drafts and accepted nodes, step by step, that the real loop made on the tiny Gemma that decoded it: chains
    and trees (which branch here), fixed and adaptive. And it refuses to invent a token past the continuation."""
    from bench import replay
    from tinyspec.decoding import generate_ids
    from tinyspec.drafters import make_drafter
    from tinyspec.speculative import SpecStats, speculative_generate_ids

    cfg = tiny_config()
    model = Model(cfg, random_weights(cfg, seed=0, scale=1.0), backend="numba")  # seed 0: its trees branch
    prompt, n = [2, 5, 6, 7, 8, 9, 5, 6, 7, 8, 9, 5, 6], 40
    continuation = generate_ids(model, prompt, n, stop_at_eos=False)
    branched = 0
    for k, tree, adaptive in ((4, 0, False), (4, 0, True), (4, 8, False), (8, 16, True)):
        stats, trace = SpecStats(), []
        out = speculative_generate_ids(model, make_drafter("ngram:8"), prompt, n, k=k, tree=tree, adaptive=adaptive,
                                       stats=stats, trace=trace, stop_at_eos=False)
        assert out == continuation
        c = replay.replay("ngram:8", prompt, continuation, n, k, tree, adaptive, stop_at_eos=False)
        assert (c.tokens, c.forwards, c.steps, c.drafted, c.accepted) == (
            n - 1, stats.target_forwards, stats.steps, stats.drafted, stats.accepted), (k, tree, adaptive)
        assert c.nodes == [len(s.drafted) for s in trace] and c.accepted > 0
        branched += sum(len(set(s.parents)) < len(s.parents) for s in trace if s.parents)  # a parent of two
    assert branched > 0
    with pytest.raises(ValueError, match="knows 52 tokens"):  # 13 + 39: one token short of what the loop emits
        replay.replay("ngram:8", prompt, continuation[:-1], n, 4, stop_at_eos=False)


def test_the_replay_module_examples():
    import doctest

    from bench import replay

    assert doctest.testmod(replay).failed == 0


# --- --backend quant: the model and tokenizer loaded as the CLI loads them -------------------------------------

def test_the_bench_takes_the_quant_backend(monkeypatch):
    assert bench_args("--backend", "quant").backend == "quant"
    parser = run.build_parser(prog="tinyspec bench", parser_class=cli.Parser)
    with pytest.raises(cli.CliError, match="argument --backend: invalid choice: 'cuda'"):
        parser.parse_args(["--backend", "cuda"])


class CharTokenizer:
    """A stand-in for the real tokenizer, for the tiny model: <bos>, then one id in 4..31 per character (24 at most)."""

    def encode(self, text):
        return [2] + [4 + ord(ch) % 28 for ch in text[:24]]

    def decode(self, ids):
        return " ".join(map(str, ids))


def test_the_bench_loads_its_model_as_the_cli_does_and_records_the_backend(tiny_model, monkeypatch, tmp_path):
    """cmd_bench hands its arguments to tinyspec.cli.load (here a fake that records them and returns the tiny
    model); results.json's settings and results.md name the backend asked for."""
    asked = []
    monkeypatch.setattr(cli, "load", lambda args: asked.append((args.backend, args.weights)) or
                        (tiny_model, CharTokenizer()))
    argv = ["--quick", "--backend", "quant", "--weights", "some.gguf", "--ids", "count-to-100",
            "--max-new-tokens", "6", "--sampled-repeats", "0", "--drafters", "ngram:8", "--out", str(tmp_path)]
    assert run.main(argv) == 0
    assert asked == [("quant", "some.gguf")]
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["settings"]["backend"] == "quant"
    assert "backend `quant`" in (tmp_path / "results.md").read_text()


@pytest.mark.real
def test_a_quick_real_run_on_the_quant_backend(tmp_path):
    """`python -m bench --quick --backend quant` on one prompt, 8 tokens: prompt lookup's greedy output equals
    vanilla's on the GGUF's blocks (the exit status says so), and results.json records the backend."""
    argv = ["--quick", "--backend", "quant", "--ids", "count-to-100", "--max-new-tokens", "8",
            "--sampled-repeats", "0", "--drafters", "ngram:8", "--out", str(tmp_path)]
    assert run.main(argv) == 0
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["settings"]["backend"] == "quant"
    assert [p["id"] for p in data["prompts"]] == ["count-to-100"]


def test_the_sampled_title_names_top_k_and_top_p(tiny_results):
    import copy

    results = copy.deepcopy(tiny_results)
    results.settings.update(top_k=64, top_p=0.95)
    assert "## Sampled (temperature 0.7, top-k 64, top-p 0.95, seed 1, rejection verifier)" in report.markdown(results)
    assert "## Sampled (temperature 0.7, seed 1, rejection verifier)" in report.markdown(tiny_results)
