"""What the `tinyspec` command and the lessons both show: the example prompt and a speculative run's trace.

    >>> EXAMPLE_PROMPT.splitlines()[0]
    '# Task: rename the variable `total` to `acc` in this function. Keep everything else the same.'
"""

from __future__ import annotations

import sys

# a code edit: most of the answer copies the prompt, so prompt lookup (the ngram drafter) drafts well
EXAMPLE_PROMPT = """# Task: rename the variable `total` to `acc` in this function. Keep everything else the same.

# Before:
def mean_and_max(values):
    \"\"\"Return the mean and the largest of a non-empty list of numbers.\"\"\"
    total = 0
    largest = values[0]
    for value in values:
        total += value
        if value > largest:
            largest = value
    return total / len(values), largest

# After:
def mean_and_max(values):
"""


def print_trace(trace, tok, out=None):
    """One line per speculative step: what was drafted, p and q of each draft, what was kept.

    Marks: + kept, x rejected, . never checked (after a rejection: such drafts have no p or q). A tree is drawn
    one node a line, its accepted path marked +."""
    out = out or sys.stdout
    show = lambda t: repr(tok.decode([t]))
    for n, step in enumerate(trace, 1):
        if step.parents is not None:  # a tree
            print(f"step {n:>3} @{step.position:>5}: kept {step.accepted} of a tree of {len(step.drafted)}; "
                  f"{step.final_kind} {show(step.final_token)}", file=out)
            print_tree(step.drafted, step.parents, step.path or [], show, out)
            continue
        drafts = []
        for i, d in enumerate(step.drafted):
            u = f" u={step.uniforms[i]:.3f}" if i < len(step.uniforms) and step.uniforms[i] is not None else ""
            mark = "+" if i < step.accepted else ("x" if i == step.accepted else ".")
            pq = f" p={step.p_draft[i]:.3f} q={step.q_draft[i]:.3f}" if i < len(step.p_draft) else ""  # unchecked
            drafts.append(f"{mark}{show(d)}{pq}{u}")
        print(f"step {n:>3} @{step.position:>5}: kept {step.accepted}/{len(step.drafted)}; {step.final_kind} "
              f"{show(step.final_token)}" + ("  | " + "  ".join(drafts) if drafts else "  | (no draft)"),
              file=out)


def print_tree(tokens, parents, path, show, out) -> None:
    """A tree of guesses, one node a line, indented by depth; the accepted path marked +, the rest ."""
    def draw(node, depth):
        for child in [i for i, p in enumerate(parents) if p == node]:
            print(f"{'':14}{'  ' * depth}{'+' if child in path else '.'} {show(tokens[child])}", file=out)
            draw(child, depth + 1)
    draw(-1, 0)
