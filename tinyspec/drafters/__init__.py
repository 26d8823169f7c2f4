"""Drafters: cheap guessers of the next few tokens. See base.py for the interface.

    ngram[:N]        prompt lookup, matching up to N tokens (default 3)
    early-exit:L     the target's first L blocks + its final norm and head
    draft-model      any smaller tinyspec Model with the target's vocabulary (pass it as `draft_model`)
    mtp[:PATH]       the Gemma-4-style MTP drafter trained here (default: the shipped weights/ file)
    auto[:PATH]      prompt lookup where the text repeats, the MTP drafter at PATH elsewhere, in one tree
"""

from __future__ import annotations

from .auto import AutoDrafter
from .base import Drafter, Proposal, TargetView
from .draft_model import DraftModelDrafter
from .early_exit import EarlyExitDrafter
from .ngram import NgramDrafter

NAMES = ("ngram", "ngram:N", "early-exit:L", "draft-model", "mtp", "auto")


def load_mtp(arg: str):
    """The MTP drafter at path `arg` (empty: the shipped weights/ file); ValueError saying what to do if absent."""
    from pathlib import Path

    from .mtp import DEFAULT_WEIGHTS, MTPDrafter
    path = Path(arg) if arg else DEFAULT_WEIGHTS
    if not path.exists():
        raise ValueError(f"no MTP drafter at {path}: train one with `tinyspec train-mtp` "
                         "(a source checkout ships one in weights/)")
    return MTPDrafter.load(path)


def make_drafter(name: str, draft_model=None) -> Drafter:
    """A drafter from its command-line name; ValueError with the valid names otherwise."""
    kind, _, arg = name.partition(":")
    try:
        if kind == "ngram":
            return NgramDrafter(max_n=int(arg) if arg else 3)
        if kind == "early-exit":
            if not arg:
                raise ValueError("early-exit needs a block count, e.g. early-exit:4")
            return EarlyExitDrafter(int(arg))
        if kind == "mtp":
            return load_mtp(arg)
        if kind == "auto":
            return AutoDrafter(load_mtp(arg))
        if kind == "draft-model" and not arg:
            if draft_model is None:
                raise ValueError("draft-model needs a draft Model (from Python: make_drafter(name, draft_model=...))")
            return DraftModelDrafter(draft_model)
    except ValueError as e:
        if "invalid literal" in str(e):
            raise ValueError(f"drafter {name!r}: {arg!r} is not a whole number") from None
        raise
    raise ValueError(f"unknown drafter {name!r}: choose one of {', '.join(NAMES)}")


__all__ = ["Drafter", "Proposal", "TargetView", "NgramDrafter", "EarlyExitDrafter", "DraftModelDrafter",
           "AutoDrafter", "make_drafter", "load_mtp", "NAMES"]
