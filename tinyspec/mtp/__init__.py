"""The MTP drafter's machinery. The drafter itself (the Drafter the speculative loop calls): drafters/mtp.py.

    layers.py   each layer's forward and hand-written backward (checked against finite differences in tests)
    net.py      the network: one draft step forward and backward, initialization, the weights file
    data.py     the target's features over offline text, and the target's own generated text
    train.py    the training run (`tinyspec train-mtp`): budgeted, checkpointed, resumable
    report.py   acceptance and speedup on the bench prompts (`python -m tinyspec.mtp.report`)

For a lesson, a few minutes of the whole recipe: `train.train(model, tokenizer, train.quick_config(tokens=20_000), ...)`.
"""
