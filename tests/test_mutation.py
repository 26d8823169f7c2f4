"""The mutation harness as part of the suite (tests/mutation.py): the spec's fast tests must fail on every
planted bug. A surviving mutant fails here, and the run ends with the mutation score."""

import pytest

import mutation

RESULTS: list = []  # read by conftest.pytest_terminal_summary


def test_the_harness_runs_the_spec_on_an_unmutated_copy():
    mutation.check_harness()


@pytest.mark.parametrize("mutant", mutation.MUTANTS, ids=[m.name for m in mutation.MUTANTS])
def test_the_spec_kills_the_mutant(mutant):
    result = mutation.run_mutant(mutant)
    RESULTS.append(result)
    assert result.killed, f"mutant {mutant.name} survived: {mutant.bug}"


def test_the_mutants_are_many_and_distinct():
    assert len(mutation.MUTANTS) >= 12
    assert len({m.name for m in mutation.MUTANTS}) == len(mutation.MUTANTS)
    assert len({m.edits for m in mutation.MUTANTS}) == len(mutation.MUTANTS)
