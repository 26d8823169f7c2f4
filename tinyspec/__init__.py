"""tinyspec: speculative decoding from scratch in NumPy, on real Gemma 3 270M weights."""

__version__ = "0.1.0"
