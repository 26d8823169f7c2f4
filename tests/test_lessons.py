"""Every lesson runs, top to bottom, as a script in quick mode (TINYSPEC_QUICK=1): a lesson asserts its own
claims ("identical to greedy", "the histogram matches p"), so a lesson that stops being true fails here.

Each lesson runs in a fresh Python process, the way a learner runs it (`python lessons/NN_name.py`), with the
weights the test session converted (TINYSPEC_WEIGHTS) and PNGs going to a temporary directory. Also here:
the small helpers the lessons use (tinyspec.theory, tinyspec.measure, tinyspec.plots, tinyspec.workshop,
OracleDrafter)."""

import doctest
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tinyspec.drafters.oracle
import tinyspec.plots
import tinyspec.theory
import tinyspec.workshop
from tinyspec import measure, plots, theory
from tinyspec.config import tiny_config
from tinyspec.decoding import generate_ids
from tinyspec.drafters.oracle import OracleDrafter
from tinyspec.model import Model
from tinyspec.speculative import SpecStats, StepTrace, speculative_generate_ids
from tinyspec.weights import random_weights

REPO = Path(__file__).resolve().parent.parent
LESSONS = sorted((REPO / "lessons").glob("[0-9][0-9]_*.py"))
NEEDS_NO_WEIGHTS = {"09_executable_spec.py"}


def test_the_track_is_complete():
    numbers = [int(p.name[:2]) for p in LESSONS]
    assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) >= 9, [p.name for p in LESSONS]
    readme = (REPO / "lessons" / "README.md").read_text()
    for p in LESSONS:
        assert p.name in readme, f"lessons/README.md does not mention {p.name}"


@pytest.mark.real
@pytest.mark.parametrize("lesson", LESSONS, ids=[p.stem for p in LESSONS])
def test_lesson_runs_in_quick_mode(lesson, request, tmp_path):
    env = {**os.environ, "TINYSPEC_QUICK": "1", "TINYSPEC_OUT": str(tmp_path),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    if lesson.name not in NEEDS_NO_WEIGHTS:
        env["TINYSPEC_WEIGHTS"] = str(request.getfixturevalue("gemma_dir"))  # converted once per session
    result = subprocess.run([sys.executable, str(lesson)], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, f"{lesson.name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert lesson.read_text().count("# %%") >= 3, "a lesson is a percent-cell script"


def test_every_lesson_states_goal_time_and_exercises():
    for p in LESSONS:
        text = p.read_text()
        assert "**Goal.**" in text and "**Running time.**" in text, p.name
        assert "## Try this" in text, p.name
        assert "TINYSPEC_QUICK" in text, p.name


# --- the helpers the lessons use ----------------------------------------------------------------------------

@pytest.mark.parametrize("module", [tinyspec.theory, tinyspec.plots, tinyspec.drafters.oracle, tinyspec.workshop])
def test_docstring_examples(module):
    assert doctest.testmod(module).failed == 0


def test_prefix_cached_model_is_exact():
    from tinyspec.workshop import PrefixCachedModel, toy_draft_model

    cfg = tiny_config()
    w = random_weights(cfg, seed=4)
    plain, cached = Model(cfg, w, backend="numpy"), PrefixCachedModel(cfg, w, backend="numpy")
    prompt = [2, 5, 7, 9, 11]
    want = generate_ids(plain, prompt, 12, stop_at_eos=False)
    for _ in range(2):  # the first run fills the prefix cache, the second reuses it
        assert generate_ids(cached, prompt, 12, stop_at_eos=False) == want
        out = speculative_generate_ids(cached, OracleDrafter(len(prompt), want, 0.5, seed=1), prompt, 12, k=3,
                                       stop_at_eos=False)
        assert out == want
    assert list(cached.prefills) == [tuple(prompt)]
    c1, c2 = plain.new_cache(), cached.new_cache()
    np.testing.assert_array_equal(plain.hidden(prompt, c1), cached.hidden(prompt, c2))
    assert c2.length == len(prompt)
    for i in range(cfg.num_layers):
        np.testing.assert_array_equal(c1.k[i][:len(prompt)], c2.k[i][:len(prompt)])
    toy = toy_draft_model(cfg, seed=1, backend="numpy")
    assert toy.cfg.vocab_size == cfg.vocab_size and toy.cfg.num_layers == 2


def test_cost_model_formulas():
    assert theory.expected_tokens_per_step(0.0, 5) == 1.0
    assert theory.expected_tokens_per_step(1.0, 5) == 6.0
    a, k = 0.7, 3
    assert abs(theory.expected_tokens_per_step(a, k) - sum(a ** i for i in range(k + 1))) < 1e-12
    assert abs(theory.expected_speedup(a, k, c=0.1, v=1.2) - theory.expected_tokens_per_step(a, k) / 1.5) < 1e-12
    assert theory.best_k(0.8, 0.0) == 16  # free drafts: more is always better
    assert theory.best_k(0.5, 0.5) == 1


def test_one_step_distribution_and_the_argmax_bug():
    p, q = np.array([0.5, 0.3, 0.2]), np.array([0.1, 0.6, 0.3])
    np.testing.assert_allclose(theory.one_step_distribution(p, q), p, atol=1e-15)
    argmax_draft = theory.one_step_distribution(p, q, draft=np.eye(3)[1])
    assert abs(argmax_draft.sum() - 1) < 1e-12 and not np.allclose(argmax_draft, p)
    assert abs(theory.acceptance_rate(p, q) - 0.6) < 1e-12


def step(drafted, accepted):
    return StepTrace(0, list(range(drafted)), [], [], [], accepted, 0, "", [])


def test_trace_statistics():
    trace = [step(4, 4), step(4, 1), step(2, 0), step(0, 0)]
    # kept 5; checked 5 + 2 rejections
    assert theory.estimate_alpha(trace) == 5 / 7
    assert theory.acceptance_by_position(trace, 4) == [2 / 3, 1 / 3, 1 / 2, 1 / 2]
    assert theory.tokens_per_step(trace, 4) == (5 + 2) / 2 and theory.tokens_per_step(trace) == (5 + 2 + 1 + 1) / 4


def test_oracle_drafter_has_the_chosen_acceptance():
    cfg = tiny_config()
    model = Model(cfg, random_weights(cfg, seed=1), backend="numpy")
    prompt = [2, 5, 7]
    vanilla = generate_ids(model, prompt, 40, stop_at_eos=False)
    for alpha in [0.0, 1.0]:
        stats, trace = SpecStats(), []
        out = speculative_generate_ids(model, OracleDrafter(len(prompt), vanilla, alpha, seed=3), prompt, 40, k=4,
                                       stop_at_eos=False, stats=stats, trace=trace)
        assert out == vanilla
        assert theory.estimate_alpha(trace) == alpha


def test_timed_drafter_and_measurements():
    cfg = tiny_config()
    model = Model(cfg, random_weights(cfg, seed=2), backend="numpy")
    drafter = measure.TimedDrafter(OracleDrafter(2, [5, 6, 7, 8, 9, 10], 1.0))
    out = speculative_generate_ids(model, drafter, [2, 4], 6, k=2, stop_at_eos=False)
    assert drafter.drafted > 0 and drafter.seconds > 0 and len(out) == 6
    assert measure.forward_seconds(model, 3, context=4, repeats=1) > 0
    assert measure.forward_seconds(model, 3, context=0, repeats=1) > 0
    wb = measure.weight_bytes(model.weights)
    assert wb["total"] == sum(v.nbytes for v in [model.weights.embed_tokens, model.weights.norm]) + wb["blocks"]
    # flops: 2 per matrix weight per token (blocks and head), plus 4 hd per head per attended position
    matrix_weights = model.weights.embed_tokens.size + sum(
        getattr(layer, f).size for layer in model.weights.layers for f in layer.__dataclass_fields__
        if getattr(layer, f).ndim == 2)
    attention = 4 * cfg.num_layers * cfg.num_heads * cfg.head_dim * (1 + 2)  # tokens 0, 1 see 1, 2 positions
    assert measure.forward_flops(cfg, 2, context=0) == 2 * 2 * matrix_weights + attention
    assert measure.roofline_seconds(10.0, 4.0, 5.0, 1.0) == 4.0


def test_plots_text_and_png(tmp_path, monkeypatch):
    text = plots.chart("t", ["a", "b"], {"x": [1.0, 2.0], "y": [0.5, 0.0]}, png="t.png")
    assert text.splitlines()[0] == "t" and "█" in text and "2.000" in text
    line = plots.chart("speedup", [1, 2, 3], {"m": [1.0, 2.0, 1.5], "f": [1.1, 1.9, 1.4]}, kind="line")
    assert "* m" in line and "o f" in line
    monkeypatch.setenv("TINYSPEC_OUT", str(tmp_path))
    saved = plots.save_png(plots.out_dir() / "x.png", "t", ["a"], {"x": [1.0]})
    if plots.have_matplotlib():
        assert saved is not None and saved.exists()
    else:
        assert saved is None and not (tmp_path / "x.png").exists()
