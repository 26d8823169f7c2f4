"""Proof that the proof bites: bugs planted in a copy of the package, each of which the spec must catch.

Each mutant is a bug a real implementation of speculative decoding could have (several have shipped in public
ones). Some tempting mutants are not bugs, and are not here: treating a sampled draft as deterministic (q
one-hot at the draft) is still exact, only slower (P(emit x) = q(x) p(x) + sum_{d != x} q(d) p(x) = p(x));
drafting one more token than can be emitted changes nothing; a sampling drafter drawing from a generator of
its own is still exact (its draws are independent of the verifier's). The harness copies tinyspec/ into a temporary directory, applies one mutant's edits there (each edit's
text must occur exactly once, so a mutant cannot silently stop applying when the code changes), and runs the
spec's fast tests (the `spec` marker: the loop, the verifiers and sampling, on table models, no Numba
compilation) against the copy, stopping at the first failure. A mutant is killed when a test fails; it
survives when every test passes. The run must import the copy, not the checkout: checked before any mutant.

    python tests/mutation.py             # check the harness on an unmutated copy, then every mutant: the score
    python tests/mutation.py NAME ...    # only these mutants (no check of the unmutated copy: faster)

`tests/test_mutation.py` runs the same in the test suite: a surviving mutant fails it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SPEC_TESTS = [REPO / "tests" / "test_spec_exact.py", REPO / "tests" / "test_tree.py", REPO / "tests" / "test_sampling.py"]


@dataclass(frozen=True)
class Mutant:
    name: str
    bug: str  # what the planted bug is, in a reader's words
    edits: tuple  # ((file under tinyspec/, exact old text, new text), ...)


SPEC = "speculative.py"
MUTANTS = [
    Mutant("tree-budget-learns-verified-only", "the adaptive tree budget asks a free drafter for N* nodes only, so "
           "it learns nothing about deeper ranks and stays at one node",
           ((SPEC, "ask = tree if budget and not drafter.cost else n_nodes", "ask = n_nodes"),)),
    Mutant("accept-without-draw", "rejection keeps every draft without drawing u",
           ((SPEC, "keep = random.accept(acceptance_probability(p, q, d))", "keep = True"),)),
    Mutant("one-uniform-per-step", "one uniform per step, reused for every draft the step checks",
           (("randomness.py", "        self.last_uniform = float(self.rng.random())\n",
             "        if self.last_uniform is None:\n            self.last_uniform = float(self.rng.random())\n"),
            ("randomness.py", "    def choice(self, p) -> int:\n        return sample(p, self.rng)",
             "    def choice(self, p) -> int:\n        self.last_uniform = None\n        return sample(p, self.rng)"))),
    Mutant("correction-from-p", "after a rejection the correction is drawn from p, not norm(max(0, p - q))",
           ((SPEC, "verdict.token = random.choice(residual_distribution(p, q))", "verdict.token = random.choice(p)"),)),
    Mutant("correction-by-argmax", "after a rejection the correction is the residual's argmax, not a draw",
           ((SPEC, "verdict.token = random.choice(residual_distribution(p, q))",
             "verdict.token = int(np.argmax(residual_distribution(p, q)))"),)),
    Mutant("acceptance-forgets-q", "a draft is kept with probability p(d) instead of min(1, p(d) / q(d))",
           ((SPEC, "return 1.0 if p[token] >= q[token] else float(p[token] / q[token])",
             "return 1.0 if p[token] >= q[token] else float(p[token])"),)),
    Mutant("residual-q-minus-p", "the residual is norm(max(0, q - p))",
           ((SPEC, "r = np.maximum(p - q, 0.0)", "r = np.maximum(q - p, 0.0)"),)),
    Mutant("q-of-first-draft", "every draft is checked against q_1, the first draft's distribution",
           ((SPEC, "q = q_rows[i] if q_rows is not None else one_hot(d, V)  # [V] q_i",
             "q = q_rows[0] if q_rows is not None else one_hot(d, V)"),)),
    Mutant("temperature-ignored-in-verify", "the verifier warps the target's logits at temperature 1",
           ((SPEC, "p = warp(logits[i], params.temperature, params.top_k, params.top_p)  # [V] p_i\n        q = ",
             "p = warp(logits[i], 1.0, params.top_k, params.top_p)\n        q = "),)),
    Mutant("bonus-from-last-draft-row", "the bonus token is drawn from p_n (the last draft's row), not p_{n+1}",
           ((SPEC, "verdict.token = choose_token(logits[len(drafted)], params, random, -1)[0]",
             "verdict.token = choose_token(logits[max(len(drafted) - 1, 0)], params, random, -1)[0]"),)),
    Mutant("target-row-off-by-one", "greedy and coupled compare d_i with the target's choice on the next row",
           ((SPEC, "target, p = choose_token(logits[i], params, None, position + i)",
             "target, p = choose_token(logits[i + 1], params, None, position + i)"),)),
    Mutant("coupled-key-off-by-one", "coupled verification keys the Gumbel noise one position too far",
           ((SPEC, "target, p = choose_token(logits[i], params, None, position + i)",
             "target, p = choose_token(logits[i], params, None, position + i + 1)"),)),
    Mutant("first-token-position", "the first token after the prefill is chosen with the wrong position key",
           ((SPEC, "first = choose(logits, params, random, position=cache.length)",
             "first = choose(logits, params, random, position=cache.length + 1)"),)),
    Mutant("eos-only-at-step-end", "EOS is noticed only when it is the step's last token",
           ((SPEC, "if (stop_at_eos and token == model.cfg.eos_token_id) or len(emitted) == room:",
             "if (stop_at_eos and token == model.cfg.eos_token_id and len(emitted) == len(new)) or "
             "len(emitted) == room:"),)),
    Mutant("one-token-too-many", "the token limit lets one more token through",
           ((SPEC, "or len(emitted) == room:", "or len(emitted) == room + 1:"),)),
    Mutant("rollback-keeps-one-more", "the rollback keeps the first rejected draft's cache row",
           ((SPEC, "cache.keep(position, kept)",
             "cache.keep(position, kept + [position + len(kept)] if position + len(kept) < cache.length else kept)"),)),
    Mutant("rollback-drops-one-more", "the rollback drops the last accepted position's cache row",
           ((SPEC, "cache.keep(position, kept)", "cache.keep(position, kept); cache.truncate(cache.length - 1)"),)),
    Mutant("draft-argmax-report-q", "the draft model drafts its argmax but reports q (speculative-sampling #3)",
           (("drafters/draft_model.py",
             "token, q = choose_token(logits, self.params, self.random, position=len(context) + i)",
             "token, q = choose_token(logits, self.params, self.random, position=len(context) + i)\n"
             "            token = token if q is None else int(np.argmax(q))"),)),
    Mutant("q-rows-shifted", "the draft model reports each draft's q one row late",
           (("drafters/draft_model.py", "q = None if self.params.greedy else np.stack(qs)  # [k, V]",
             "q = None if self.params.greedy else np.stack(qs[-1:] + qs[:-1])"),)),
    Mutant("cut-depends-on-draft", "adaptive k verifies a sampled proposal only when its first draft is not token 1",
           (("adaptive.py", "return min(self.best(self.k_max), len(drafts))",
             "return min(self.best(self.k_max), len(drafts)) if drafts[:1] != [1] else 0"),)),
    Mutant("tree-walk-key-off-by-one", "a tree's sampling walk keys each node's draw one position too far",
           (("tree.py", "token = choose_token(logits[node + 1], params, random, position + depths[node + 1])[0]",
             "token = choose_token(logits[node + 1], params, random, position + depths[node + 1] + 1)[0]"),)),
    Mutant("tree-sibling-stays-in-q", "after a rejected child, the next sibling is checked against q with it left in",
           (("tree.py", "q[x] = 0.0  # the next child was drawn from q without x", "pass"),)),
    Mutant("tree-residual-kept-p", "after a rejected child, the tree keeps p instead of norm(max(0, p - q))",
           (("tree.py", "            p = residual_distribution(p, q)  # p <- norm(max(0, p - q))\n", ""),)),
    Mutant("tree-keeps-wrong-rows", "after a tree's verification the cache keeps the accepted nodes' rows in tree "
           "order, not moved into place",
           ((SPEC, "kept = [position + i for i in verdict.path]", "kept = [position + i for i in sorted(verdict.path)][::-1]"),)),
    Mutant("tree-fills-depth-by-depth", "the model drafters' tree takes whole depths first (a wide, shallow tree)"
           " instead of the budget best paths of every depth",
           (("tree.py", "best = sorted(range(len(tokens)), key=lambda i: (-score[i], depth[i], i))[:budget]",
             "best = sorted(range(len(tokens)), key=lambda i: (depth[i], -score[i], i))[:budget]"),)),
    Mutant("top-k-keeps-one-more", "top-k keeps k + 1 tokens",
           (("sampling.py", "n = top_k if cut else min(V, 64)", "n = top_k + 1 if cut else min(V, 64)"),)),
    Mutant("top-p-before-top-k", "top-p measures the nucleus before top-k has cut the distribution",
           (("sampling.py", "(kept.sum() if cut else weight.sum())", "weight.sum()"),)),
    Mutant("gumbel-support-unmapped", "the coupled token after top-k or top-p is its rank among the kept tokens, "
           "not its id", (("sampling.py", "return int(support[np.argmax(keys)])", "return int(np.argmax(keys))"),)),
    Mutant("nucleus-not-grown", "top-p looks for its nucleus among the 64 most likely tokens only",
           (("sampling.py", "if cut or top_p >= 1.0 or n == V or mass[-1] >= top_p:", "if True:"),)),
]


def apply(mutant: Mutant, package: Path) -> None:
    for name, old, new in mutant.edits:
        path = package / name
        text = path.read_text()
        if text.count(old) != 1:
            raise ValueError(f"mutant {mutant.name}: the text to replace occurs {text.count(old)} times in {name} "
                             f"(must be once); update tests/mutation.py to the code")
        path.write_text(text.replace(old, new))


def copy_package(into: Path) -> Path:
    shutil.copytree(REPO / "tinyspec", into / "tinyspec", ignore=shutil.ignore_patterns("__pycache__"))
    return into / "tinyspec"


def environment() -> dict:
    env = dict(os.environ, HYPOTHESIS_PROFILE="mutation", PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONPATH", None)
    return env


def imports_the_copy(workdir: Path) -> bool:
    """Python started in workdir imports tinyspec from workdir (sys.path[0]), not the checkout or site-packages."""
    out = subprocess.run([sys.executable, "-c", "import tinyspec; print(tinyspec.__file__)"], cwd=workdir,
                         env=environment(), capture_output=True, text=True)
    return out.returncode == 0 and Path(out.stdout.strip()).resolve().is_relative_to(workdir.resolve())


def run_spec(workdir: Path, timeout: float = 300, mutated=()) -> subprocess.CompletedProcess:
    """The spec's fast tests against the package in workdir, stopping at the first failure. The test file named
    after a mutated module (tree.py: test_tree.py) runs first: it is the likeliest to fail soonest."""
    stems = {Path(name).stem for name in mutated}
    files = sorted(SPEC_TESTS, key=lambda f: f.stem.removeprefix("test_") not in stems)
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-m", "spec", "-p", "no:cacheprovider",
               "--rootdir", str(REPO), "-c", str(REPO / "pyproject.toml"), *map(str, files)]
    return subprocess.run(command, cwd=workdir, env=environment(), capture_output=True, text=True, timeout=timeout)


@dataclass
class Result:
    mutant: Mutant
    killed: bool
    seconds: float
    detail: str  # the first failing test, or why the run was not a clean kill


def run_mutant(mutant: Mutant) -> Result:
    with tempfile.TemporaryDirectory(prefix="tinyspec-mutant-") as tmp:
        workdir = Path(tmp)
        apply(mutant, copy_package(workdir))
        t0 = time.perf_counter()
        try:
            out = run_spec(workdir, mutated=[name for name, _, _ in mutant.edits])
        except subprocess.TimeoutExpired:  # the bug made the spec hang (a loop that never ends): CI would fail
            return Result(mutant, True, time.perf_counter() - t0, "the spec did not finish in 300 s")
        seconds = time.perf_counter() - t0
    failed = [line for line in out.stdout.splitlines() if line.startswith("FAILED ")]
    if out.returncode == 1 and failed:
        return Result(mutant, True, seconds, failed[0].removeprefix("FAILED ").split(" - ")[0])
    if out.returncode == 0:
        return Result(mutant, False, seconds, "every spec test passed")
    # an error that is not a test failure (the copy does not import, no test collected): no honest kill
    raise RuntimeError(f"mutant {mutant.name}: pytest exited {out.returncode} without a failing test:\n"
                       f"{out.stdout[-2000:]}\n{out.stderr[-2000:]}")


def check_harness() -> None:
    """The unmutated copy is the one imported, and it passes the spec (else every mutant would look killed)."""
    with tempfile.TemporaryDirectory(prefix="tinyspec-mutant-") as tmp:
        workdir = Path(tmp)
        copy_package(workdir)
        if not imports_the_copy(workdir):
            raise RuntimeError("a Python started in the copy's directory does not import the copy")
        out = run_spec(workdir)
        if out.returncode != 0:
            raise RuntimeError(f"the spec fails on the unmutated copy:\n{out.stdout[-3000:]}")


def main(names) -> int:
    chosen = [m for m in MUTANTS if not names or m.name in names]
    unknown = set(names) - {m.name for m in MUTANTS}
    if unknown:
        print(f"unknown mutants: {', '.join(sorted(unknown))}; the names are: {', '.join(m.name for m in MUTANTS)}")
        return 2
    if not names:
        check_harness()
    results = []
    for m in chosen:
        r = run_mutant(m)
        results.append(r)
        print(f"{'killed ' if r.killed else 'SURVIVED'} {m.name:32} {r.seconds:5.1f} s  {r.detail}", flush=True)
    killed = sum(r.killed for r in results)
    print(f"mutation score: {killed}/{len(results)} killed")
    return 0 if killed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
