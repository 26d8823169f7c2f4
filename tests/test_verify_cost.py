"""The verification cost v(m) per backend: adaptive.VerifyCost's fit, its break-even acceptance and its table of
backends; the CLI hands the break-even rule the backend's own v(m) (or --verify-cost); bench/verify_cost.py
measures every backend at every m and reports the fits. Expected values come from the cost model's formulas
worked by hand, or from a brute-force search, never from the code under test."""

import doctest
from argparse import Namespace

import pytest

import tinyspec.adaptive
from tinyspec import cli, theory
from tinyspec.adaptive import VERIFY_COSTS, BreakEven, VerifyCost
from tinyspec.config import tiny_config
from tinyspec.decoding import generate_ids
from tinyspec.drafters import make_drafter
from tinyspec.model import Model
from tinyspec.sampling import SamplingParams
from tinyspec.weights import random_weights

cli.import_bench()  # bench/ is not installed: this imports the checkout's bench/ as the package `bench`
from bench import verify_cost  # noqa: E402


def test_the_adaptive_module_examples():
    assert doctest.testmod(tinyspec.adaptive).failed == 0


# --- VerifyCost ----------------------------------------------------------------------------------------------

def test_fit_goes_through_v2_with_the_least_squares_slope():
    # t(1) = 2 s; v = 1, 1.2, 1.3, 1.5 at m = 1..4. Slope by hand: sum (m-2)(v - 1.2) / sum (m-2)^2
    # = (1 * 0.1 + 2 * 0.3) / (1 + 4) = 0.14
    cost = VerifyCost.fit({1: 2.0, 2: 2.4, 3: 2.6, 4: 3.0})
    assert cost == VerifyCost(0.2, 0.14)
    line = VerifyCost(0.07, 0.13)  # times on an exact line come back as that line, whatever t(1)
    assert VerifyCost.fit({m: 0.3 * line(m) for m in range(1, 18)}) == line


def test_fit_needs_m_1_2_and_a_larger_one():
    for times in ({1: 1.0, 2: 1.1}, {1: 1.0, 3: 1.2, 4: 1.3}, {2: 1.0, 3: 1.1}):
        with pytest.raises(ValueError, match="needs the times of m = 1, 2 and some m >= 3"):
            VerifyCost.fit(times)


@pytest.mark.parametrize("cost, c", [(VerifyCost(0.1, 0.11), 0.0), (VerifyCost(0.3, 0.4), 0.0),
                                     (VerifyCost(0.1, 0.11), 0.05), (VerifyCost(-0.05, 0.2), 0.0)])
def test_break_even_alpha(cost, c):
    # one draft: 1 + alpha = c + v(2)
    assert cost.break_even_alpha(1, c) == pytest.approx(max(0.0, c + cost(2) - 1), abs=1e-12)
    for k in (2, 4, 8, 16):
        a = cost.break_even_alpha(k, c)
        if k * c + cost(k + 1) >= k + 1:  # E(alpha, k) < k + 1 for every alpha < 1
            assert a is None
            continue
        assert theory.expected_speedup(a, k, c, cost(k + 1)) == pytest.approx(1.0, abs=1e-9)
        # the rule agrees: offered exactly k drafts, it verifies some just above a and none just below
        assert BreakEven(k_max=k, draft_cost=c, verify_cost=cost, alpha=min(a + 1e-6, 0.999999)).speed(k) > 1.0
        assert a == 0.0 or BreakEven(k_max=k, draft_cost=c, verify_cost=cost, alpha=a - 1e-6).speed(k) < 1.0


def test_break_even_alpha_never_and_always():
    assert VerifyCost(1.0, 1.0).break_even_alpha(1) is None  # v(2) = 2: one draft emits at most 2
    assert VerifyCost(1.0, 1.0).break_even_alpha(4) is None  # v(5) = 5
    assert VerifyCost(0.0, 0.0).break_even_alpha(4) == 0.0  # free verification, free drafts


def test_for_backend(monkeypatch):
    assert VerifyCost.for_backend("numba") == VERIFY_COSTS["numba"]
    for name in ("numpy", "quant"):  # a backend without its own line gets numba's, until one is entered
        if name not in VERIFY_COSTS:
            assert VerifyCost.for_backend(name) == VERIFY_COSTS["numba"]
    fake = VerifyCost(0.5, 0.25)
    monkeypatch.setitem(VERIFY_COSTS, "quant", fake)
    assert VerifyCost.for_backend("quant") is fake
    with pytest.raises(ValueError, match="unknown backend 'cuda': choose one of numba, numpy, quant"):
        VerifyCost.for_backend("cuda")


# --- the CLI: the backend's own v(m), or --verify-cost --------------------------------------------------------

@pytest.fixture(scope="module")
def tiny():
    cfg = tiny_config()
    return Model(cfg, random_weights(cfg, seed=3, scale=1.0), backend="numpy")


PROMPT = [2, 5, 6, 7, 8, 9, 5, 6, 7, 8, 9, 5, 6]  # prompt lookup finds drafts at once


def run_cli_generation(model, verify_cost=None):  # -> (tokens, SpecStats) of cli.run_generation, adaptive
    args = Namespace(max_new_tokens=16, verify="greedy", k=4, adaptive=True, tree=0, verify_cost=verify_cost)
    tokens, stats, _ = cli.run_generation(model, PROMPT, args, SamplingParams(), make_drafter("ngram"))
    return [t for t, _ in tokens], stats


def test_the_cli_gives_the_rule_the_backends_own_verify_cost(tiny, monkeypatch):
    asked = []

    def fake_for_backend(cost):
        return classmethod(lambda cls, backend: asked.append(backend) or cost)

    vanilla = generate_ids(tiny, PROMPT, 16)
    monkeypatch.setattr(VerifyCost, "for_backend", fake_for_backend(VerifyCost(100.0, 0.0)))  # nothing pays
    out, stats = run_cli_generation(tiny)
    assert asked == ["numpy"] and out == vanilla
    assert stats.proposed > 0 and stats.drafted == 0
    monkeypatch.setattr(VerifyCost, "for_backend", fake_for_backend(VerifyCost(0.0, 0.0)))  # every draft pays
    out, stats = run_cli_generation(tiny)
    assert asked == ["numpy", "numpy"] and out == vanilla
    assert stats.drafted == stats.proposed > 0
    out, stats = run_cli_generation(tiny, verify_cost=VerifyCost(100.0, 0.0))  # --verify-cost wins
    assert asked == ["numpy", "numpy"] and out == vanilla and stats.drafted == 0


@pytest.mark.parametrize("argv, message", [
    (["generate", "x", "--verify-cost", "0.1"], "argument --verify-cost: '0.1' is not two numbers"),
    (["generate", "x", "--verify-cost", "a,b"], "argument --verify-cost: 'a,b' is not two numbers"),
    (["compare", "--verify-cost", "0.1,-0.1", "--adaptive"], "PER_TOKEN >= 0"),
    (["compare", "--verify-cost=-1,0.1", "--adaptive"], "FIRST_EXTRA must be > -1"),
    (["generate", "x", "--drafter", "ngram", "--verify-cost", "0.1,0.2"], "--verify-cost is the break-even rule"),
    (["compare", "--verify-cost", "0.1,0.2"], "add --adaptive, or leave it out"),
])
def test_bad_verify_costs_are_one_line(argv, message, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("tinyspec: error: ") and message in err


def test_verify_cost_parses():
    args = cli.build_parser().parse_args(["compare", "--adaptive", "--verify-cost", "0.2,0.05"])
    assert args.verify_cost == VerifyCost(0.2, 0.05)
    assert cli.build_parser().parse_args(["compare"]).verify_cost is None
    args = cli.build_parser().parse_args(["compare", "--adaptive", "--verify-cost=-0.04,0.1"])  # v(2) < 1
    assert args.verify_cost == VerifyCost(-0.04, 0.1)


# --- bench/verify_cost.py --------------------------------------------------------------------------------------

def test_interleaved_times_every_backend_every_m(tiny):
    other = Model(tiny.cfg, tiny.weights, backend="numpy")
    times = verify_cost.interleaved_times({"a": tiny, "b": other}, [1, 2, 5], context=7, repeats=3)
    assert set(times) == {"a", "b"}
    for by_m in times.values():
        assert set(by_m) == {1, 2, 5} and all(len(ts) == 3 and min(ts) > 0 for ts in by_m.values())


def test_the_report_of_two_exact_lines():
    """Times on exact lines: the fits are those lines, the break-even acceptances solve E(alpha, k) = v(k + 1)
    (by hand for k = 1: alpha = v(2) - 1), and the drafts verified are the brute-force argmax of the speed."""
    lines = {"numba": VerifyCost(0.1, 0.1), "quant": VerifyCost(0.3, 0.2)}
    times = {n: {m: [0.05 * line(m) * f for f in (1.0, 0.9, 1.3)] for m in verify_cost.MS} for n, line in lines.items()}
    text = verify_cost.report(times)
    assert "| numba | 0.100 | 0.100 | 0.000 |" in text and "| quant | 0.300 | 0.200 | 0.000 |" in text
    assert '"quant": VerifyCost(0.3, 0.2),' in text and "--backend quant --verify-cost=0.3,0.2" in text

    def brute_best(line, alpha):  # 0 = a plain decode step, speed 1; ties to the smaller n
        speeds = [1.0] + [theory.expected_tokens_per_step(alpha, n) / line(n + 1) for n in range(1, 17)]
        return speeds.index(max(speeds))

    for n, line in lines.items():
        alphas = [line.break_even_alpha(k) for k in verify_cost.KS]
        assert alphas[0] == pytest.approx(line(2) - 1)
        row = (f"| {n} | " + " | ".join("never" if a is None else f"{a:.2f}" for a in alphas) + " | "
               + " | ".join(str(brute_best(line, a)) for a in verify_cost.ALPHAS) + " |")
        assert row in text
    # the first table: median ms (min-max), v(m), the line, per backend; m = 2: t = 0.05 * 1.1 s, v = 1.10
    assert "| 2 | 55.0 (49.5-71.5) | 1.10 | 1.10 | 65.0 (58.5-84.5) | 1.30 | 1.30 |" in text


def test_bad_arguments_are_one_line(capsys):
    for argv in (["--backends", "numba,cuda"], ["--backends", "quant,quant"], ["--repeats", "0"]):
        assert verify_cost.main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("verify_cost: error: --backends takes numba, quant, numpy")
