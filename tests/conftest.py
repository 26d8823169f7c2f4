"""Shared pytest fixtures. The real Gemma 3 270M is converted once (into weights/, or $TINYSPEC_WEIGHTS) on
first use and loaded once per test session."""

import json
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


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
