"""The `tinyspec` command: bad settings get one line and exit status 2 (no traceback); --json outputs carry
what they promise. Commands that need the model get the session's real model (no reload per test)."""

import json
import subprocess
import sys

import pytest

from tinyspec import cli


@pytest.mark.parametrize("argv, message", [
    (["generate", "hi", "--temperature", "-1"], "temperature must be >= 0"),
    (["generate", "hi", "--top-p", "0"], "top-p must lie in (0, 1]"),
    (["generate", "hi", "--top-p", "1.5"], "top-p must lie in (0, 1]"),
    (["generate", "hi", "--top-k", "-3"], "top-k must be a whole number"),
    (["generate", ""], "the prompt is empty"),
    (["generate", "hi", "--max-new-tokens", "-2"], "--max-new-tokens must be >= 0"),
    (["generate", "hi", "--drafter", "ngram", "--k", "0"], "k (drafts per step) must be >= 1"),
    (["generate", "hi", "--drafter", "ngram", "--k", "64"], "k (drafts per step) must be <= 63"),
    (["generate", "hi", "--drafter", "ngram", "--tree", "64"], "node budget must lie in 0 .. 63"),
    (["compare", "hi", "--drafter", "ngram", "--k", "100"], "k (drafts per step) must be <= 63"),
    (["generate", "hi", "--drafter", "magic"], "unknown drafter 'magic'"),
    (["generate", "hi", "--drafter", "early-exit"], "early-exit needs a block count"),
    (["generate", "hi", "--drafter", "ngram", "--temperature", "0.5", "--verify", "greedy"],
     "greedy verifier needs temperature 0"),
    (["compare", "hi", "--repeats", "0"], "--repeats must be >= 1"),
    (["predict", "hi", "--top", "0"], "--top must be >= 1"),
    (["generate", "hi", "--temperature", "warm"], "invalid float value"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_arguments_one_line_error(argv, message, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("tinyspec: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_empty_stdin_prompt(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", __import__("io").StringIO(""))
    assert cli.main(["generate", "-"]) == 2
    assert "the prompt is empty" in capsys.readouterr().err


def test_console_script_entry_point():
    res = subprocess.run([sys.executable, "-m", "tinyspec.cli", "generate", "x", "--top-p", "2"],
                         capture_output=True, text=True)
    assert res.returncode == 2 and res.stderr.strip().startswith("tinyspec: error: top-p")


# --- with the real model ---------------------------------------------------------------------------------

@pytest.fixture
def real_cli(monkeypatch, gemma, gemma_tokenizer):
    monkeypatch.setattr(cli, "load", lambda args: (gemma, gemma_tokenizer))


@pytest.mark.real
@pytest.mark.parametrize("argv, message", [
    (["generate", "hi", "--drafter", "early-exit:99"], "needs fewer blocks than the target's 18"),
    (["generate", "hi", "--max-new-tokens", "40000"], "exceeds the context length of 32768 tokens"),
    (["compare", "hi", "--drafter", "early-exit:18"], "needs fewer blocks than the target's 18"),
    (["compare", "hi", "--max-new-tokens", "40000"], "exceeds the context length of 32768 tokens"),
])
def test_bad_arguments_the_model_reveals_fail_before_any_output(real_cli, argv, message, capsys):
    """Checked once the model is loaded and the prompt tokenized, before the prompt is echoed."""
    assert cli.main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("tinyspec: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.real
def test_generate_json(real_cli, capsys):
    assert cli.main(["generate", "The capital of France is", "--max-new-tokens", "8", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["ids"]) == 8 and isinstance(out["text"], str)
    assert out["stats"]["new_tokens"] == 8 and out["stats"]["seconds"] > 0
    assert out["stats"]["tokens_per_second"] == pytest.approx(8 / out["stats"]["seconds"], rel=0.02)


@pytest.mark.real
def test_generate_streams_text_and_speculative_marks_drafts(real_cli, capsys):
    prompt = "a b c d e f g a b c d e f g a b c d e f g a b c"
    assert cli.main(["generate", prompt, "--max-new-tokens", "12"]) == 0
    plain = capsys.readouterr().out
    assert cli.main(["generate", prompt, "--max-new-tokens", "12", "--drafter", "ngram", "--trace"]) == 0
    spec = capsys.readouterr().out
    assert plain.startswith(prompt)
    assert "[" in spec and "step   1" in spec  # not a terminal: accepted drafts in brackets; the trace
    assert spec.splitlines()[0].replace("[", "").replace("]", "") == plain.splitlines()[0]


@pytest.mark.real
def test_predict_json_is_a_sorted_distribution(real_cli, capsys):
    assert cli.main(["predict", "The capital of France is", "--top", "5", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["top"]
    assert len(rows) == 5
    assert [r["logit"] for r in rows] == sorted((r["logit"] for r in rows), reverse=True)
    assert 0 < sum(r["probability"] for r in rows) <= 1


@pytest.mark.real
def test_tokenize_reads_stdin(monkeypatch, capsys, gemma_dir):
    monkeypatch.setattr(sys, "stdin", __import__("io").StringIO("Hello world"))
    assert cli.main(["tokenize", "-", "--json", "--weights", str(gemma_dir)]) == 0
    assert json.loads(capsys.readouterr().out)["ids"] == [2, 9259, 1902]


@pytest.mark.real
def test_compare_reports_identical_greedy_output(real_cli, capsys):
    assert cli.main(["compare", "--max-new-tokens", "16", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["identical"] is True and out["vanilla"]["ids"] == out["speculative"]["ids"]
    assert out["speculative"]["stats"]["target_forwards"] <= out["vanilla"]["stats"]["target_forwards"]
    assert out["repeats"] == 3 and len(out["speedups"]) == 3  # the default: three interleaved repeats
    assert len(out["vanilla"]["all_seconds"]) == len(out["speculative"]["all_seconds"]) == 3
    assert sorted(out["vanilla"]["all_seconds"])[1] == out["vanilla"]["seconds"]  # the median
    assert isinstance(out["warnings"], list)


@pytest.mark.real
def test_compare_prints_the_spread_of_its_repeats(real_cli, capsys):
    assert cli.main(["compare", "--max-new-tokens", "8", "--repeats", "2"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert any(x.startswith("prompt ") and x.endswith(", median of 2") for x in lines)
    assert "  identical output: yes (8 of 8 tokens)" in lines and any(x.startswith("  speedup: ") for x in lines)
    assert any(x.startswith("  spread: ") and "over 2 interleaved repeats" in x for x in lines)
    assert "warming up" in err  # on stderr: stdout is the comparison alone


def test_reliability_warnings():
    assert cli.reliability_warnings([2.5, 2.6, 2.55], 2.0, threads=2, cores=2) == []  # quiet: our own 2 threads
    spread = cli.reliability_warnings([2.5, 14.79, 2.55], 2.0, threads=2, cores=2)
    assert len(spread) == 1 and "the repeats disagree" in spread[0] and "14.79x" in spread[0]
    busy = cli.reliability_warnings([2.5, 2.6], 4.0, threads=2, cores=2)  # two other busy threads
    assert len(busy) == 1 and "the machine is busy" in busy[0]
    assert cli.reliability_warnings([2.5, 2.6], 2.7, threads=2, cores=2) == []  # less than a core of others
    assert cli.reliability_warnings([2.5, 2.6], 2.5, threads=1, cores=2) == []  # one free core, one other
    assert cli.reliability_warnings([2.5, 2.6], None, threads=2, cores=2) == []  # no load average here


def test_trace_prints_drafts_after_a_rejection():
    """Drafts after the rejected one were never checked: they have no p or q (regression: IndexError)."""
    import io

    from tinyspec.show import print_trace
    from tinyspec.speculative import StepTrace

    class Tok:
        def decode(self, ids):
            return str(ids[0])

    out = io.StringIO()
    print_trace([StepTrace(5, [1, 2, 3], [1.0, 0.0], [1.0, 1.0], [], 1, 9, "correction", [1, 9])], Tok(), out)
    assert "+'1' p=1.000" in out.getvalue() and "x'2' p=0.000" in out.getvalue() and ".'3'" in out.getvalue()
