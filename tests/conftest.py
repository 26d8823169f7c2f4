"""Shared pytest fixtures and the Hypothesis profiles. The real Gemma 3 270M is converted once (into weights/,
or $TINYSPEC_WEIGHTS) on first use and loaded once per test session.

Hypothesis profiles, chosen by HYPOTHESIS_PROFILE (default: `ci` when CI is set, else `dev`):
    ci         derandomized: the same examples on every run, so CI cannot fail at random on correct code
    dev        random examples (new ones each run; a failure is saved in .hypothesis/ and replayed first)
    thorough   random examples, 10x as many (tests/helpers.examples), for long local runs
    mutation   the ci profile without shrinking (tests/mutation.py: a mutant must be caught, not explained)
A failing test prints the command that reproduces it.
"""

import json
import os
from pathlib import Path

import pytest
from hypothesis import Phase, settings

FIXTURES = Path(__file__).parent / "fixtures"

settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("dev", print_blob=True)
settings.register_profile("thorough", print_blob=True)
# tests/mutation.py: CI's examples, but no shrinking: a mutant only needs to be caught, not explained
settings.register_profile("mutation", derandomize=True, phases=[Phase.explicit, Phase.reuse, Phase.generate])
PROFILE = os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
settings.load_profile(PROFILE)


def pytest_report_header(config):
    return f"hypothesis profile: {PROFILE} (set HYPOTHESIS_PROFILE to ci, dev or thorough)"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and call.when == "call":
        command = f"HYPOTHESIS_PROFILE={PROFILE} pytest '{item.nodeid}'"
        report.sections.append(("reproduce", command + ("  (random examples: the failure is also saved in "
                                                        ".hypothesis/ and replayed first)" if PROFILE != "ci" else "")))


@pytest.fixture(scope="session")
def gemma_dir():
    from tinyspec.weights import ensure_converted

    return ensure_converted()


@pytest.fixture(scope="session")
def gemma_tokenizer(gemma_dir):
    """The real Gemma 3 270M tokenizer, rebuilt from the GGUF's vocabulary by `tinyspec convert`."""
    from tinyspec.tokenizer import Tokenizer

    return Tokenizer.from_file(gemma_dir / "tokenizer.json")


@pytest.fixture(scope="session")
def gemma_weights(gemma_dir):
    from tinyspec.weights import load

    return load(gemma_dir)


@pytest.fixture(scope="session")
def gemma(gemma_weights):
    """The real model on the default (numba) backend."""
    from tinyspec.model import Model

    return Model(*gemma_weights, backend="numba")


@pytest.fixture(scope="session")
def gemma_numpy(gemma_weights):
    """The real model on the readable NumPy reference backend (same weights, no copy)."""
    from tinyspec.model import Model

    return Model(*gemma_weights, backend="numpy")


@pytest.fixture(scope="session")
def reference():
    """Outputs of Hugging Face transformers on the same GGUF (made by tools/make_reference.py)."""
    return json.loads((FIXTURES / "gemma3_reference.json").read_text())


def pytest_terminal_summary(terminalreporter):
    import sys

    harness = sys.modules.get("test_mutation")
    if harness is not None and harness.RESULTS:
        killed = sum(r.killed for r in harness.RESULTS)
        terminalreporter.write_line(f"mutation score: {killed}/{len(harness.RESULTS)} mutants killed "
                                    "(tests/mutation.py lists them)")
