"""The benchmark by task: where speculative decoding pays, on this machine, with identical output.

    python -m bench                  # the full run (its duration: bench/results.md): writes bench/results.md,
                                     # bench/results.json and (with matplotlib) bench/results.png
    python -m bench --quick          # a smoke test: 2 prompts, 16 tokens, 1 repeat; prints the tables only
    tinyspec bench ...               # the same, from anywhere (in a source checkout's installation)
    NUMBA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python -m bench --clock cpu
                                     # on a machine shared with other work: CPU time of one thread
    python -m bench --drafters ngram,early-exit:6 --peer-python /path/to/venv/bin/python
                                     # a second drafter (on one prompt per category) and the peers
    python -m bench --drafters ngram:8,ngram:8/tree24
                                     # chain against tree: the same drafter, then a tree of up to 24 guesses
    python -m bench --tree 16        # every drafter a tree of up to 16 guesses (bench/trees.py: counts only)

A drafter is a tinyspec drafter name (`ngram:8`, `early-exit:6`, `mtp`), then optionally `@kN` (a fixed k = N,
without the break-even rule), then optionally `/treeN`: a tree of up to N guesses a step, at most k deep,
verified in one forward (with the rule, the tree break-even rule sets each step's budget, up to N). `--tree N`
gives every drafter without its own `/treeN` a tree of N (`/tree0`: a chain); the tables name each drafter
with its budget written out.

(`python -m` from the repository root: bench/ is a package, not installed with tinyspec.)

For every prompt of bench/prompts.jsonl (six categories: code, code-edit, structured, extraction,
arithmetic, prose) and every drafter, batch 1:

# 1. greedy   vanilla and speculative runs interleaved (V S V S ...), so both see the same machine load; the
#             median run of `repeats` each (the lower middle one: of two, the faster). The speculative tokens
#             must equal the vanilla tokens exactly.
# 2. sampled  the same at temperature 0.7 with the rejection verifier (same distribution, other tokens).
# 3. costs    t1 = the vanilla time per decoded token; per speculative step, D = drafting time and W = the rest
#             (the target's verify forward over k+1 tokens and the verification itself). With c = D / (k t1)
#             and v = W / t1 the cost model (tinyspec.theory) predicts
#                 speedup = (1 - a^(k+1)) / ((1 - a) (k c + v))      a = the measured acceptance rate
#             which assumes every step drafts k tokens, each accepted independently with probability a. For a
#             tree, k is its nodes per step and a the share of them on the accepted path; the formula has no
#             term for branches, so trees get no prediction.
# 4. peers    Hugging Face transformers (float32 CPU torch; greedy and its prompt-lookup decoding) and llama.cpp
#             (llama-cpp-python on the same GGUF) in a subprocess of another Python (`--peer-python`), when
#             installed; skipped with a note otherwise. See bench/peers.py.

Speeds are decode speeds: tokens after the first, over the time after the prefill (which speculation does not
change; the end-to-end numbers, prefill included, are in results.json). A category's speedup is its total
vanilla decode time over its total speculative decode time (the median run of each prompt).

The modules, in the order a run uses them:

    prompts.py   the prompts file: load and check it, select prompts by category / id
    measure.py   one timed run, interleaved repeats and their medians, the table's numbers (speedup, c, v,
                 the cost model's prediction), the Results of a whole run
    machine.py   what the machine is: CPU, cores, load, versions, commit; the memory floor of decoding
    peers.py     the other engines, run by another Python in a subprocess
    report.py    the Markdown tables and the chart
    run.py       the command: its arguments, then the steps above in order

This file imports nothing: `python -m bench.peers` runs it in a Python that may not have tinyspec.
"""
