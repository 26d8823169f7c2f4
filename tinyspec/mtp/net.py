"""The MTP drafter network: one draft step, forward and backward, and its weights file.

A draft step, in the notation of EAGLE (Li et al., "EAGLE: Speculative Sampling Requires Rethinking Feature
Uncertainty", 2024), whose feature-level drafting Gemma 4's assistant drafter follows:

# 1. Input   u = [norm_e(E[x] * sqrt(d)), norm_h(h)];  x0 = u proj^T        x: the newest token, h: the target's
#                                                                            final hidden state before it
# 2. Blocks  Gemma-style blocks (four RMSNorms, GeGLU). Block b's queries (RMSNorm per head, then RoPE at the
#            query's position) attend to the target's cached keys and values of layer source_layers[b]
#            (Gemma 3 270M: 16, its last sliding layer, then 17, its last global layer). The drafter has no KV
#            cache: a query sees only the positions the target's cache holds, inside the sliding window
#            for a sliding layer.
# 3. Output  h_next = norm(x): the drafter's guess of the target's final hidden state at x's position
# 4. Head    logits = h_next E[vocab]^T over a subset of the vocabulary (tied to the target's embedding)
#
# Drafting k tokens feeds (h_next, the token chosen from the logits) back in as (h, x).

Shapes: M = rows (query positions), T = cached positions, d = hidden size, H = query heads, hd = head dim,
f = intermediate size, N = vocabulary subset size.

Parameters live in a flat dict name -> array (the names of the target's checkpoint for block parts), which
makes Adam, saving and the gradient checks one loop each. The blocks start as copies of the target's layers
they read from (`init_from_target`), so training begins from a network that already computes what those
layers compute, given the right input.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .layers import (attention_backward, attention_forward, gelu_backward, gelu_forward, linear_backward,
                     linear_forward, rms_norm_backward, rms_norm_forward, rope_backward, rope_forward, visible)

BLOCK_PARTS = ("input_layernorm", "q_proj", "q_norm", "o_proj", "post_attention_layernorm",
               "pre_feedforward_layernorm", "gate_proj", "up_proj", "down_proj", "post_feedforward_layernorm")


@dataclass(frozen=True)
class MTPConfig:
    hidden_size: int = 640  # d: the target's width; the drafter's residual stream has the same width
    intermediate_size: int = 2048  # f: GeGLU width of each block
    num_heads: int = 4  # H: query heads per block; all share the one key/value head of the target layer read
    head_dim: int = 256  # hd: the target's head dim (the drafter's queries meet the target's keys)
    source_layers: tuple = (16, 17)  # block b attends to the target's cached keys/values of this layer
    windows: tuple = (512, 0)  # sliding window of each source layer (0: global), as the target uses it
    rope_thetas: tuple = (10_000.0, 1_000_000.0)  # RoPE base of each source layer: queries must match its keys
    query_scale: float = 256.0 ** -0.5  # the target's query scale
    rms_norm_eps: float = 1e-6
    vocab_size: int = 262144  # V: the target's vocabulary; q rows have this length, zero outside the subset
    num_draft_tokens: int = 4096  # N: the vocabulary subset the head scores

    @property
    def num_blocks(self) -> int:
        return len(self.source_layers)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "MTPConfig":
        d = dict(d)
        for key in ("source_layers", "windows", "rope_thetas"):
            d[key] = tuple(d[key])
        return cls(**d)

    @classmethod
    def for_target(cls, cfg, num_draft_tokens: int = 4096, intermediate_size: int | None = None) -> "MTPConfig":
        """Read the target's last sliding and last global layers (in that order) with the target's geometry."""
        sliding = [i for i in range(cfg.num_layers) if not cfg.is_global(i)]
        global_ = [i for i in range(cfg.num_layers) if cfg.is_global(i)]
        sources = tuple(sorted(layer for layer in (sliding[-1:] + global_[-1:])))
        return cls(hidden_size=cfg.hidden_size,
                   intermediate_size=intermediate_size or cfg.intermediate_size,
                   num_heads=cfg.num_heads, head_dim=cfg.head_dim, source_layers=sources,
                   windows=tuple(cfg.window(i) for i in sources),
                   rope_thetas=tuple(float(cfg.rope_theta(i)) for i in sources),
                   query_scale=float(cfg.query_scale), rms_norm_eps=float(cfg.rms_norm_eps),
                   vocab_size=cfg.vocab_size, num_draft_tokens=min(num_draft_tokens, cfg.vocab_size))


def param_shapes(c: MTPConfig) -> dict:
    d, H, hd, f = c.hidden_size, c.num_heads, c.head_dim, c.intermediate_size
    shapes = {"norm_e": (d,), "norm_h": (d,), "proj": (d, 2 * d)}
    for b in range(c.num_blocks):
        shapes.update({f"blocks.{b}.{k}": s for k, s in {
            "input_layernorm": (d,), "q_proj": (H * hd, d), "q_norm": (hd,), "o_proj": (d, H * hd),
            "post_attention_layernorm": (d,), "pre_feedforward_layernorm": (d,), "gate_proj": (f, d),
            "up_proj": (f, d), "down_proj": (d, f), "post_feedforward_layernorm": (d,)}.items()})
    shapes["norm"] = (d,)
    return shapes


def random_params(c: MTPConfig, seed: int = 0, dtype=np.float32) -> dict:
    """Seeded random parameters: matrices N(0, 1/fan_in), norm scales 1 + N(0, 0.1^2)."""
    rng = np.random.default_rng(seed)
    return {name: (1.0 + 0.1 * rng.standard_normal(s) if len(s) == 1 else rng.standard_normal(s) / np.sqrt(s[-1]))
            .astype(dtype) for name, s in param_shapes(c).items()}


def init_from_target(c: MTPConfig, weights, seed: int = 0) -> dict:
    """Block b starts as a copy of the target layer it reads (its queries already match those keys), the
    final norm as the target's; the input projection starts random (training fits it first)."""
    p = random_params(c, seed)
    p["norm_e"][:] = 1.0
    p["norm_h"][:] = 1.0
    p["proj"] *= 0.1
    for b, layer in enumerate(c.source_layers):
        src = weights.layers[layer]
        for part in BLOCK_PARTS:
            p[f"blocks.{b}.{part}"] = np.array(getattr(src, part), dtype=np.float32)
    p["norm"] = np.array(weights.norm, dtype=np.float32)
    return p


# --- one draft step -------------------------------------------------------------------------------------

def block_forward(p, b: int, c: MTPConfig, x, K, V, positions, lengths, matmul=None):  # [M, d] -> [M, d]
    """x + post_norm(attention(norm(x)));  then x + post_norm(mlp(norm(x))). K, V: [T, hd] of layer b's source."""
    w = lambda part: p[f"blocks.{b}.{part}"]  # noqa: E731
    eps, M, H, hd = c.rms_norm_eps, x.shape[0], c.num_heads, c.head_dim
    t = {}
    a, t["ln1"] = rms_norm_forward(x, w("input_layernorm"), eps)  # [M, d]
    q, t["q"] = linear_forward(a, w("q_proj"), matmul)  # [M, H*hd]
    q, t["qn"] = rms_norm_forward(q.reshape(M * H, hd), w("q_norm"), eps)  # [M*H, hd]
    q, t["rope"] = rope_forward(q.reshape(M, H, hd), positions, c.rope_thetas[b])  # [M, H, hd]
    mask = visible(positions, lengths, K.shape[0], c.windows[b])  # [M, T]
    o, t["attn"] = attention_forward(q, K, V, mask, c.query_scale, matmul)  # [M, H, hd]
    o, t["o"] = linear_forward(o.reshape(M, H * hd), w("o_proj"), matmul)  # [M, d]
    o, t["ln2"] = rms_norm_forward(o, w("post_attention_layernorm"), eps)  # [M, d]
    x = x + o  # [M, d]
    m, t["ln3"] = rms_norm_forward(x, w("pre_feedforward_layernorm"), eps)  # [M, d]
    g, t["gate"] = linear_forward(m, w("gate_proj"), matmul)  # [M, f]
    u, t["up"] = linear_forward(m, w("up_proj"), matmul)  # [M, f]
    ga, t["gelu"] = gelu_forward(g)  # [M, f]
    t["gu"] = (ga, u)
    y, t["down"] = linear_forward(ga * u, w("down_proj"), matmul)  # [M, d]
    y, t["ln4"] = rms_norm_forward(y, w("post_feedforward_layernorm"), eps)  # [M, d]
    return x + y, t  # [M, d]


def block_backward(dx, t, b: int, grads: dict):  # [M, d] -> [M, d]; adds to grads
    def add(part, g):
        key = f"blocks.{b}.{part}"
        grads[key] = grads[key] + g if key in grads else g

    dy, g = rms_norm_backward(dx, t["ln4"]); add("post_feedforward_layernorm", g)
    dz, g = linear_backward(dy, t["down"]); add("down_proj", g)
    ga, u = t["gu"]
    dg = gelu_backward(dz * u, t["gelu"])  # [M, f]
    dm, g = linear_backward(dg, t["gate"]); add("gate_proj", g)
    dm2, g = linear_backward(dz * ga, t["up"]); add("up_proj", g)
    dxm, g = rms_norm_backward(dm + dm2, t["ln3"]); add("pre_feedforward_layernorm", g)
    dx = dx + dxm  # the residual
    do, g = rms_norm_backward(dx, t["ln2"]); add("post_attention_layernorm", g)
    do, g = linear_backward(do, t["o"]); add("o_proj", g)
    M = do.shape[0]
    dq = attention_backward(do.reshape(M, -1, t["attn"][1].shape[1]), t["attn"])  # [M, H, hd]
    dq = rope_backward(dq, t["rope"])  # [M, H, hd]
    dq, g = rms_norm_backward(dq.reshape(-1, dq.shape[-1]), t["qn"]); add("q_norm", g)
    da, g = linear_backward(dq.reshape(M, -1), t["q"]); add("q_proj", g)
    dxa, g = rms_norm_backward(da, t["ln1"]); add("input_layernorm", g)
    return dx + dxa  # [M, d]


def step_forward(p, c: MTPConfig, e, h, kv, positions, lengths, matmul=None):  # [M, d], [M, d] -> [M, d]
    """One draft step for M rows of one sequence. e: the newest tokens' scaled embeddings, h: the hidden state
    before them; kv: per block (K [T, hd], V [T, hd]) of its source layer; positions: each row's position;
    lengths: how many cached positions each row may read; matmul: optional x W^T kernel (see layers.py).
    Returns the predicted final hidden state."""
    eps = c.rms_norm_eps
    tape = {}
    ue, tape["ne"] = rms_norm_forward(e, p["norm_e"], eps)  # [M, d]
    uh, tape["nh"] = rms_norm_forward(h, p["norm_h"], eps)  # [M, d]
    x, tape["proj"] = linear_forward(np.concatenate([ue, uh], axis=-1), p["proj"], matmul)  # [M, d]
    tape["blocks"] = []
    for b in range(c.num_blocks):
        x, tb = block_forward(p, b, c, x, kv[b][0], kv[b][1], positions, lengths, matmul)  # [M, d]
        tape["blocks"].append(tb)
    h_next, tape["norm"] = rms_norm_forward(x, p["norm"], eps)  # [M, d]
    return h_next, tape


def step_backward(dh_next, tape, c: MTPConfig):  # [M, d] -> (grads, dh [M, d])
    """Gradients of every parameter, and of the input hidden state h (for tests; training stops it)."""
    grads = {}
    dx, grads["norm"] = rms_norm_backward(dh_next, tape["norm"])
    for b in reversed(range(c.num_blocks)):
        dx = block_backward(dx, tape["blocks"][b], b, grads)
    du, grads["proj"] = linear_backward(dx, tape["proj"])  # [M, 2d]
    d = c.hidden_size
    _, grads["norm_e"] = rms_norm_backward(du[:, :d], tape["ne"])
    dh, grads["norm_h"] = rms_norm_backward(du[:, d:], tape["nh"])
    return grads, dh


def head_forward(h, E_sub, matmul=None):  # [M, d], [N, d] -> [M, N]
    return linear_forward(h, E_sub, matmul)[0]


# --- the weights file -----------------------------------------------------------------------------------

def save(path, c: MTPConfig, params: dict, vocab, meta: dict | None = None, dtype=np.float16,
         extra: dict | None = None) -> Path:
    """Write the config, the vocabulary subset (ids) and every parameter (float16 to ship), atomically.
    `.safetensors` (what ships): tensors plus the config and meta as JSON in the header's metadata, and the meta
    again as a readable JSON record beside it (`<name>.json`). `.npz` (training checkpoints): also any `extra`
    arrays (the optimizer's state)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {k: np.ascontiguousarray(v, dtype=dtype) for k, v in params.items()}
    arrays["vocab"] = np.asarray(vocab, dtype=np.int32)
    if path.suffix == ".safetensors":
        from safetensors.numpy import save_file

        if extra:
            raise ValueError("extra arrays (optimizer state) go in a .npz checkpoint, not a shipped .safetensors")
        tmp = path.with_name(path.name + ".tmp")
        save_file(arrays, str(tmp), metadata={"config_json": json.dumps(c.to_dict()),
                                              "meta_json": json.dumps(meta or {})})
        record = path.with_suffix(".json")
        tmp_record = record.with_name(record.name + ".tmp")
        tmp_record.write_text(json.dumps({"config": c.to_dict(), **(meta or {})}, indent=1) + "\n")
        tmp.replace(path)
        tmp_record.replace(record)
        return path
    arrays["config_json"] = np.frombuffer(json.dumps(c.to_dict()).encode(), dtype=np.uint8)
    arrays["meta_json"] = np.frombuffer(json.dumps(meta or {}).encode(), dtype=np.uint8)
    arrays.update(extra or {})
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)
    return path


def load(path):
    """(config, float32 params, vocab [N] int64, meta) from a file written by `save` (.safetensors or .npz)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"MTP drafter weights not found at {path}: run `tinyspec train-mtp` "
                                "(or pass the path of a trained drafter, e.g. --drafter mtp:PATH)")
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="numpy") as z:
                header = z.metadata() or {}
                c = MTPConfig.from_dict(json.loads(header["config_json"]))
                meta = json.loads(header.get("meta_json", "{}"))
                vocab = z.get_tensor("vocab").astype(np.int64)
                params = {k: z.get_tensor(k).astype(np.float32) for k in param_shapes(c)}
        else:
            with np.load(path) as z:
                c = MTPConfig.from_dict(json.loads(z["config_json"].tobytes().decode()))
                meta = json.loads(z["meta_json"].tobytes().decode()) if "meta_json" in z else {}
                vocab = z["vocab"].astype(np.int64)
                params = {k: z[k].astype(np.float32) for k in param_shapes(c)}
    except Exception as e:  # a truncated or damaged file: each reader raises its own kind of error
        raise ValueError(f"{path} is not a complete MTP drafter file ({type(e).__name__}: {e}): train one again "
                         "with `tinyspec train-mtp`") from None
    for name, shape in param_shapes(c).items():
        if params[name].shape != shape:
            raise ValueError(f"{path}: parameter {name} has shape {params[name].shape}, expected {shape}")
    return c, params, vocab, meta
