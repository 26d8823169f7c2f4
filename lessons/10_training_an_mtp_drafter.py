# %% [markdown]
# # Lesson 10: Training an MTP drafter
#
# **Goal.** See how the Gemma-4-style MTP drafter of `tinyspec/drafters/mtp.py` is built and trained from
# scratch in NumPy, and learn the one check that matters most before training anything longer: the
# drafter's *training* metric (agreement with the target under teacher forcing) must be the number the
# speculative loop actually gets. Then train a drafter yourself on a tiny token budget, compare it with the
# shipped one on held-out text, and read the record of how the shipped one was made.
#
# The drafter (Gemma 4's "assistant", EAGLE's feature-level drafting):
#
#     u  = [norm(E[x_t] sqrt(d)), norm(h_{t-1})]      the newest token and the target's hidden state before it
#     x  = u proj^T                                   one projection to the target's width
#     x  = block_16(x), block_17(x)                   copies of the target's last two layers whose attention
#                                                     reads the target's cached K/V of layers 16 and 17
#     h_t ~ norm(x);  logits = h_t E[subset]^T        the tied head, over a few thousand frequent tokens
#
# **Running time.** About a minute after the one-time conversion, half of it a training run sized to take
# about 30 seconds (a smaller one with `TINYSPEC_QUICK=1`). Exercise 6 trains longer.

# %%
import shutil
import tempfile
from pathlib import Path

import numpy as np

from tinyspec.drafters.mtp import DEFAULT_WEIGHTS, MTPDrafter
from tinyspec.mtp import data, net, train
from tinyspec.mtp.report import describe_training, teacher_forced_vs_loop
from tinyspec.workshop import load_gemma, quick_mode

QUICK = quick_mode()
N_NEW = 12 if QUICK else 40
SEED = 10
TOKENS = 450 if QUICK else 1000  # your training budget, in training tokens; exercise 6 raises it
print(f"quick mode: {QUICK}; greedy; {N_NEW} new tokens; training seed {SEED}, {TOKENS} training tokens")

model, tok = load_gemma()
shipped = MTPDrafter.load()  # DEFAULT_WEIGHTS, the drafter tinyspec ships
c = shipped.cfg
n_params = sum(v.size for v in shipped.params.values())
print(f"shipped drafter {DEFAULT_WEIGHTS.name}: {c.num_blocks} blocks reading target layers {c.source_layers}, "
      f"head over {c.num_draft_tokens} of {c.vocab_size} tokens, {n_params / 1e6:.1f} M parameters, "
      f"{DEFAULT_WEIGHTS.stat().st_size / 1e6:.1f} MB in float16")

# %% [markdown]
# ## 1. Is the training metric the real metric?
#
# Training never runs the speculative loop: it runs the target once over a sequence, keeps its features
# (final hidden states h, the K/V of layers 16 and 17, its argmax) and asks the drafter, at every position t,
# to guess the target's next choice from (x_t, h_{t-1}) and the cache rows before t. That is *teacher
# forcing*. If anything differs between this and drafting (the hidden state before or after the final
# norm, a position off by one, a cache row the drafter may not read yet, the sqrt(d) embedding scale), the
# drafter is trained for a task it never meets, and the held-out accuracy lies.
#
# So compare, on one prompt: the teacher-forced first drafts, and the drafts the loop really makes (k = 1:
# every step drafts one token). They must be *the same tokens* at the same positions.

# %%
PROMPT = "The old lighthouse keeper climbed the stairs every evening to light the lamp, and"
r = teacher_forced_vs_loop(model, shipped, tok.encode(PROMPT), N_NEW)
print(f"prompt: {PROMPT!r}")
print(f"teacher-forced agreement with the target: {r['teacher_forced']:.2f} over {r['positions']} positions")
print(f"first-draft acceptance in the loop:       {r['loop_first']:.2f} over {r['loop_steps']} steps")
print(f"loop drafts equal to teacher-forced ones: {r['loop_equals_teacher_forced']:.2f}")
print(f"target's choice inside the head's subset: {r['coverage']:.2f} (no drafter of this head can beat it)")
assert r["identical"], "speculative output must equal vanilla"
assert r["loop_equals_teacher_forced"] == 1.0, "training and drafting disagree about the drafter's inputs"

# %% [markdown]
# They agree token for token (tinyspec checks this on every bench prompt: `python -m tinyspec.mtp.report`).
# So the two rates differ only because the loop drafts at a subset of the positions. A weak drafter is then
# weak for honest reasons: too little training, or data unlike the text it drafts for. For a yardstick, an
# *early exit* after 16 of the 18 target blocks is measured beside it in bench/results.md: prose from a 270M
# base model is full of near-ties, and a tiny error flips the argmax, so prose is hard for any small drafter.

# %% [markdown]
# ## 2. Train one: a stream of features, budgeted in tokens
#
# `train.train` (the engine of `tinyspec train-mtp --tokens N`) runs five steps. Nothing is stored between
# them but a checkpoint: the budget is a number of *training tokens*, so the same command and seed give the
# same drafter, however long it takes.
#
# 1. **Plan**: a fixed, seeded order of corpus sequences (Python's docs and standard-library source). One
#    document in ten is held out; a document containing a line of a bench prompt is dropped.
# 2. **Vocabulary**: the head scores N tokens only. The target's own greedy choices (its full head) on a
#    sample of the training text are counted, and the N most chosen win (EOS always). The *coverage curve*
#    says, for each head size, how many of the target's choices on held-out text the head can even propose:
#    the ceiling of every accuracy below.
# 3. **Fit**: the copied layers expect the target's residual stream at layer 16 as their input; the projection
#    is initialised by least squares to produce it from (x_t, h_{t-1}).
# 4. **Stream**: job after job, the target makes features (one batched prefill of a few corpus sequences, or
#    text it writes itself, one batched forward per token), Adam trains on them, and they are discarded.
#    Training is a *training-time test* (EAGLE-3): at every position the drafter is unrolled over `depth`
#    draft steps, step j reading the hidden state its own step j-1 predicted (a constant for the gradient), so
#    it learns from the inputs it will have when drafting. Each step's loss: cross-entropy to the target's
#    distribution over the head's tokens, plus a regression of the target's hidden state, weighted by
#    `step_weights`. Every backward is hand-written and checked against finite differences (tests/test_mtp.py).
# 5. **Evaluate, checkpoint, ship**: every `eval_every` tokens, agreement with the target on two held-out
#    sets ("text": corpus, "self": text the target writes itself) and a checkpoint to resume from; at the end
#    the best parameters go out in float16 safetensors, with a JSON record of the run beside them.

# %%
# half the tokens from text the target writes, so that a budget this small sees both kinds of job
small = dict(heldout_text=2, heldout_self=2, self_share=0.5, seed=SEED)
if QUICK:
    tc = train.quick_config(tokens=TOKENS, seq_len=32, vocab_sample_seqs=4, max_code_files=3, num_draft_tokens=1024,
                            **small)
else:
    tc = train.quick_config(tokens=TOKENS, **small)
print(f"budget {tc.tokens} tokens of {tc.seq_len}-token sequences, head {tc.num_draft_tokens} tokens, "
      f"depth {tc.depth} with step weights {tc.step_weights}, {tc.self_share:.0%} of the tokens written by the target")
work = Path(tempfile.mkdtemp(prefix="tinyspec-mtp-"))
yours_path = work / "drafter.safetensors"
report = train.train(model, tok, tc, work / "work", yours_path, command="lesson 10",
                     progress=lambda phase, frac, text, force=False: force and print(f"[{phase}] {text}"))
print(f"\ntrained on {report['tokens']} tokens ({report['data']['text_sequences']} corpus sequences, "
      f"{report['data']['self_sequences']} the target wrote) in {report['steps']} Adam steps, {report['minutes']} min")
print("head size -> share of the target's held-out choices it contains (the coverage curve):")
for n, share in report["coverage_curve"].items():
    print(f"  {int(n):6d} tokens  {share:.3f}{'   <- this head' if int(n) == tc.num_draft_tokens else ''}")
print("held-out agreement (acc1) along the run:")
for point in report["curve"]:
    print(f"  after {point['tokens']:5d} tokens: text {point['text_acc1']:.3f}  self {point['self_acc1']:.3f}")

# %% [markdown]
# ## 3. What each ingredient is worth, on the same held-out text
#
# The trainer's held-out corpus sequences (`train.plan` gives them, with the same settings), turned into
# features here with the target's greedy choice after every position (`train.text_features`,
# `with_argmax=True`), and scored four ways: the copied layers behind a *random* projection (what training
# would start from without step 3), behind the least-squares projection (step 3: the run's first evaluation
# on these same sequences), your drafter, and the shipped one, trained with a far larger budget (section 4
# prints it). acc1 is the first draft's agreement; top4 asks whether the target's choice is among the first
# step's 4 best (a 4-wide tree's first level); acc2 and acc3 are the second and third drafts' agreement where
# the drafts before them were right (a chain's acceptance per step).

# %%
held_seqs, _ = train.plan(tok, tc, data.bench_lines())  # the trainer's held-out corpus sequences
print("held-out sequences:", ", ".join(name for name, _ in held_seqs))
yours = MTPDrafter.load(yours_path)
held = train.text_features(model, held_seqs, yours.cfg.source_layers, with_argmax=True)
E = model.weights.embed_tokens


def score(params, cfg, vocab):
    return train.evaluate(params, cfg, held, E, np.ascontiguousarray(E[vocab]), vocab, depth=3)


random_init = net.init_from_target(yours.cfg, model.weights, seed=SEED)
scores = {
    "copied layers, random projection": score(random_init, yours.cfg, yours.vocab),
    "copied layers, fitted projection": report["init_eval"]["text"],
    f"trained on {report['tokens']} tokens (yours)": score(yours.params, yours.cfg, yours.vocab),
    "shipped": score(shipped.params, shipped.cfg, shipped.vocab),
}
rows = scores["shipped"]["rows"]
assert scores["copied layers, fitted projection"]["rows"] == rows, "the fit was scored on other sequences"
print(f"held-out agreement with the target's greedy choice, {rows} positions of {len(held)} sequences")
for name, s in scores.items():
    print(f"  {name:38s} acc1 {s['acc1']:.3f}  top4 {s['top4']:.3f}  acc2 {s['acc2']:.3f}  acc3 {s['acc3']:.3f}"
          f"   label in subset {s['coverage']:.3f}")
assert scores["copied layers, fitted projection"]["acc1"] > scores["copied layers, random projection"]["acc1"], \
    "the least-squares projection is what makes the copied layers useful from step 0"
assert scores["shipped"]["acc1"] > scores["copied layers, fitted projection"]["acc1"], \
    "a long training run beats the starting point"

# %% [markdown]
# Expect yours to sit close to the fitted projection: a budget this small is a few Adam steps, which is the
# honest lesson about it. Acceptance keeps rising with data (Scylla found it log-linear in training tokens),
# and the record below says how many tokens the shipped drafter saw.

# %% [markdown]
# ## 4. How the shipped drafter was made
#
# The run's record travels with the weights: inside the file (`MTPDrafter.load().meta["report"]`) and, for a
# `.safetensors` drafter, as readable JSON beside it. It holds the command, the threads, the token budget and
# the minutes it took, the data mix, the coverage curve, the final held-out agreement on both sets and the
# curve of every evaluation. (A drafter made by an older trainer, budgeted in minutes, recorded fewer keys:
# whatever it holds is printed.) Its speed on bench prompts it never saw: bench/results.md.

# %%
record = shipped.meta.get("report", {})
print("\n".join(describe_training(record)) or "this drafter carries no training record")
beside = DEFAULT_WEIGHTS.with_suffix(".json")
print(f"record beside the weights: {beside if beside.exists() else 'none (an .npz drafter keeps it inside)'}")

# %% [markdown]
# ## Try this
#
# 1. Train without the projection fit: set `train.fit_projection = lambda params, *args, **kwargs: 0` and run
#    section 2 again. Where does your drafter start in the curve, and how many tokens of Adam does it take to
#    reach the fitted start?
# 2. Shrink the head to 512 tokens (`num_draft_tokens=512`): the drafter gets cheaper. Read the coverage curve
#    first and predict the best acc1 such a head could ever reach; then check "label in subset".
# 3. Train with `depth=1` (no training-time test): the drafter only ever learns from the target's own hidden
#    state. Compare acc2 and acc3 with a `depth=3` run of the same budget: which draft steps does it hurt?
# 4. Break the alignment on purpose: in `MTPDrafter.propose`, feed the hidden state *after* the verified
#    token (off by one). Section 1's assertion fails; by how much does the first-draft acceptance drop?
# 5. Resume: start `tinyspec train-mtp --tokens 20000 --work-dir /tmp/w --out /tmp/w/d.safetensors`, stop it
#    with Ctrl-C after its first evaluation, and run the same command again. What does it redo, what does it
#    skip, and is the drafter the same as one trained without stopping? Then change `--tokens`: what happens?
# 6. Set `TOKENS = 4000` and run section 2 again: how much held-out agreement do four times the tokens buy,
#    on "text" and on "self"?

# %%
shutil.rmtree(work, ignore_errors=True)  # your drafter and its checkpoints (a temporary directory)
