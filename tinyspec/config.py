"""The model's hyper-parameters: one frozen dataclass, every field explained.

`GEMMA3_270M` holds the values of Gemma 3 270M. Most come from the GGUF metadata; the ones the GGUF does
not carry (marked "not in the GGUF") were checked against Hugging Face transformers' Gemma 3 code, the
independent implementation the tests' fixtures come from (tools/make_reference.py).

`tiny_config()` is the same architecture shrunk to a few layers and a small vocabulary: fast enough for
Hypothesis to build hundreds of random models in a test run.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Config:
    vocab_size: int = 262144  # number of tokens; the LM head is tied to the embedding [vocab_size, hidden_size]
    hidden_size: int = 640  # width of the residual stream (d_model)
    intermediate_size: int = 2048  # width of the GeGLU MLP (gate and up projections)
    num_layers: int = 18  # transformer blocks
    num_heads: int = 4  # query heads per block
    num_kv_heads: int = 1  # key/value heads per block; each serves num_heads // num_kv_heads query heads (GQA)
    head_dim: int = 256  # width of one attention head (q, k and v alike)
    sliding_window: int = 512  # local layers attend to at most this many positions, the current one included
    sliding_window_pattern: int = 6  # every 6th block (index 5, 11, 17) is global, the others local. Not in the GGUF
    rms_norm_eps: float = 1e-6  # epsilon inside every RMSNorm
    rope_theta_global: float = 1_000_000.0  # RoPE base of the global layers
    rope_theta_local: float = 10_000.0  # RoPE base of the local (sliding) layers. Not in the GGUF
    query_pre_attn_scalar: float = 256.0  # queries are scaled by query_pre_attn_scalar ** -0.5. Not in the GGUF
    max_position_embeddings: int = 32768  # the context length: prompt + generated tokens
    bos_token_id: int = 2  # prepended to every prompt
    eos_token_id: int = 1  # generation stops after emitting it
    pad_token_id: int = 0  # never produced by tinyspec; recorded for completeness
    unk_token_id: int = 3  # the tokenizer's unknown token
    # Not fields, because they never vary in Gemma 3: embeddings are multiplied by sqrt(hidden_size); the MLP
    # uses GELU with the tanh approximation; no logit soft-capping. RMSNorm scales are stored as the full multiplier: y = x / rms(x) * scale. Gemma's checkpoints store w with
    # scale = 1 + w; the GGUF (and so tinyspec's converted weights) store 1 + w already added.

    # --- derived -----------------------------------------------------------------------------------------
    @property
    def queries_per_kv(self) -> int:
        return self.num_heads // self.num_kv_heads

    def is_global(self, layer: int) -> bool:
        """Blocks 5, 11, 17 of Gemma 3 270M attend globally; the rest use the sliding window."""
        return (layer + 1) % self.sliding_window_pattern == 0

    def window(self, layer: int) -> int:
        """The attention window of a block: 0 means unlimited (global)."""
        return 0 if self.is_global(layer) else self.sliding_window

    def rope_theta(self, layer: int) -> float:
        return self.rope_theta_global if self.is_global(layer) else self.rope_theta_local

    @property
    def query_scale(self) -> float:
        return self.query_pre_attn_scalar ** -0.5

    # --- files -------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        missing = sorted(names - set(d))
        if unknown or missing:
            raise ValueError(f"config: unknown fields {unknown}, missing fields {missing}; "
                             "re-create the weights with `tinyspec convert --force`")
        return cls(**d)

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> "Config":
        return cls.from_dict(json.loads(Path(path).read_text()))


GEMMA3_270M = Config()


def tiny_config(**overrides) -> Config:
    """Gemma 3's architecture in miniature: 3 blocks (the last one global), vocabulary 32, window 4."""
    small = dict(vocab_size=32, hidden_size=16, intermediate_size=24, num_layers=3, num_heads=2, num_kv_heads=1,
                 head_dim=8, sliding_window=4, sliding_window_pattern=3, query_pre_attn_scalar=8.0,
                 max_position_embeddings=64, bos_token_id=2, eos_token_id=1, pad_token_id=0, unk_token_id=3)
    small.update(overrides)
    return Config(**small)
