"""tinyspec.quant: each block format decodes bit for bit what gguf-py's dequantizer decodes (random blocks with
every kind of finite scale, and every tensor of the real GGUF), and the memory-mapped GGUF reader finds the
same tensors, bytes and metadata as gguf.GGUFReader and the same config, tokenizer and float32 values as
`tinyspec convert`. The quantized matmuls (tinyspec.quant.kernels) give bitwise the float32 kernel's result on
the dequantized matrix, for 1 .. 64 rows of x, each row the same as computed alone. The model on
backend="quant" computes on blocks (the LM head's mapped, the layers' repacked at load: section 4 of
tinyspec.quant.blocks, checked against gguf's values here) and gives bitwise the numba backend's logits wherever both run
the same kernels (section 5 says where that is), converting nothing."""

import numpy as np
import pytest

import gguf
from tinyspec.quant import FORMATS, block_format, dequantize
from tinyspec.quant.gguf_file import GGUFFile

QTYPES = {name: gguf.GGMLQuantizationType[name] for name in FORMATS}

# where each format keeps its float16 scales (byte offsets in a block), written down here from ggml's structs
F16_FIELDS = {"Q8_0": [0], "Q5_0": [0], "Q4_K": [0, 2], "Q6_K": [208]}
# float16 bit patterns worth a scale each: +0, -0, smallest subnormal, largest subnormal, smallest normal,
# 1, largest finite, its negative
SPECIAL_F16 = np.array([0x0000, 0x8000, 0x0001, 0x03FF, 0x0400, 0x3C00, 0x7BFF, 0xFBFF], np.uint16)


def random_blocks(name: str, n_blocks: int, seed: int) -> np.ndarray:  # -> uint8 [n_blocks, type_size]
    """Random bytes in every field, except that each float16 scale is finite (as in any real file); the first
    blocks' scales run through SPECIAL_F16. F32 "blocks" are random finite float32."""
    rng = np.random.default_rng(seed)
    fmt = FORMATS[name]
    raw = rng.integers(0, 256, (n_blocks, fmt.type_size), dtype=np.uint8)
    if name == "F32":
        bits = raw.view(np.uint32)
        bits[(bits >> 23 & 0xFF) == 0xFF] &= ~np.uint32(1 << 30)  # exponent all ones (inf/nan) -> finite
        return raw
    for offset in F16_FIELDS[name]:
        bits = rng.integers(0, 1 << 16, n_blocks, dtype=np.uint16)
        bits[(bits >> 10 & 0x1F) == 0x1F] &= ~np.uint16(1 << 14)  # exponent all ones (inf/nan) -> finite
        k = min(n_blocks, len(SPECIAL_F16))
        bits[:k] = np.roll(SPECIAL_F16, offset)[:k]
        raw[:, offset:offset + 2] = bits.astype("<u2").view(np.uint8).reshape(n_blocks, 2)
    return raw


def assert_bitwise(ours: np.ndarray, theirs: np.ndarray, what: str) -> None:
    """Same shape, both float32, and the same 32 bits in every value (so -0.0 differs from 0.0)."""
    assert ours.dtype == np.float32 and theirs.dtype == np.float32, f"{what}: dtypes {ours.dtype}, {theirs.dtype}"
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape}, gguf's {theirs.shape}"
    differ = ours.view(np.uint32) != theirs.view(np.uint32)
    if differ.any():
        i = tuple(np.argwhere(differ)[0])
        pytest.fail(f"{what}: {differ.sum()} values differ; first at {i}: ours {ours[i]!r}, gguf's {theirs[i]!r}")


# --------------------------------------------------------------------------------------------------------
# 1. The formats, on random blocks
# --------------------------------------------------------------------------------------------------------

def test_format_table_matches_ggml():
    for name, fmt in FORMATS.items():
        assert fmt.ggml_type == int(QTYPES[name])
        assert (fmt.block_size, fmt.type_size) == gguf.GGML_QUANT_SIZES[QTYPES[name]]
        assert block_format(name) is block_format(fmt.ggml_type) is block_format(QTYPES[name]) is fmt


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", list(FORMATS))
def test_random_blocks_bitwise_equal_gguf(name, seed):
    fmt = FORMATS[name]
    rows, blocks_per_row = 64, 8
    raw = random_blocks(name, rows * blocks_per_row, seed).reshape(rows, blocks_per_row * fmt.type_size)
    theirs = gguf.quants.dequantize(raw, QTYPES[name])
    ours = dequantize(raw, name, (rows, blocks_per_row * fmt.block_size))
    assert_bitwise(ours, theirs, f"{name}, random blocks, seed {seed}")
    assert np.isfinite(ours).all()
    # the per-format function on the flat bytes gives the same values
    assert_bitwise(fmt.dequantize(raw.reshape(-1), ours.size), ours.reshape(-1), f"{name} flat")


def test_q5_0_high_bits_and_nibble_order():
    """By hand: d = 1, value i has low nibble i % 16 and high bit set for i odd -> q = i % 16 + 16 * (i % 2)."""
    qh = sum(1 << i for i in range(1, 32, 2)).to_bytes(4, "little")
    qs = bytes(j | j << 4 for j in range(16))  # byte j: value j and value j + 16 both get low bits j
    block = np.frombuffer(np.float16(1).tobytes() + qh + qs, np.uint8)
    expected = np.array([i % 16 + 16 * (i % 2) - 16 for i in range(32)], np.float32)
    np.testing.assert_array_equal(dequantize(block, "Q5_0", (32,)), expected)


def test_q4_k_and_q6_k_sub_block_placement():
    """By hand: one q per sub-block, so each value shows which sub-block (and so which scale) it fell in."""
    # Q4_K: d = 1, dmin = 0, sc[j] = 1, q = j in every value of sub-block j -> value = j
    scales = bytes([1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1])  # sc[0..3] = 1 (low 6 bits), sc[4..7] = 1 (nibbles)
    qs = b"".join(bytes([(2 * c) | (2 * c + 1) << 4]) * 32 for c in range(4))
    block = np.frombuffer(np.float16(1).tobytes() + np.float16(0).tobytes() + scales + qs, np.uint8)
    np.testing.assert_array_equal(dequantize(block, "Q4_K", (256,)), np.repeat(np.arange(8, dtype=np.float32), 32))
    # Q6_K: d = 1, scales[s] = s, q - 32 = 1 everywhere (low bits 1, high bits 2: 1 + 32) -> value n = n // 16
    ql, qh = bytes([0x11]) * 128, bytes([0b10101010]) * 64
    block = np.frombuffer(ql + qh + bytes(range(16)) + np.float16(1).tobytes(), np.uint8)
    np.testing.assert_array_equal(dequantize(block, "Q6_K", (256,)), np.repeat(np.arange(16, dtype=np.float32), 16))


def test_dequantize_errors():
    raw = random_blocks("Q8_0", 2, seed=0)
    with pytest.raises(ValueError, match="64 values need 2 blocks of 34 bytes = 68 bytes, got 67"):
        dequantize(raw.reshape(-1)[:67], "Q8_0", (64,))
    with pytest.raises(ValueError, match="whole blocks of 32 values; shape \\(4, 16\\)"):
        dequantize(raw, "Q8_0", (4, 16))
    with pytest.raises(TypeError, match="uint8"):
        dequantize(raw.view(np.int8), "Q8_0", (64,))
    with pytest.raises(NotImplementedError, match="'Q4_0' is not one tinyspec reads"):
        dequantize(raw, gguf.GGMLQuantizationType.Q4_0, (64,))


# --------------------------------------------------------------------------------------------------------
# 2. The GGUF reader, on a small file written by gguf.GGUFWriter
# --------------------------------------------------------------------------------------------------------

@pytest.fixture
def small_gguf(tmp_path):
    """A GGUF with one tensor per format (3 rows of 2 blocks each, random blocks) and a few metadata types."""
    path = tmp_path / "small.gguf"
    writer = gguf.GGUFWriter(path, arch="test")
    tensors = {}
    for k, name in enumerate(FORMATS):
        fmt = FORMATS[name]
        raw = random_blocks(name, 3 * 2, seed=10 + k).reshape(3, 2 * fmt.type_size)
        tensors[f"t.{name}"] = raw
        if name == "F32":
            writer.add_tensor(f"t.{name}", raw.view(np.float32))
        else:
            writer.add_tensor(f"t.{name}", raw, raw_dtype=QTYPES[name])
    writer.add_uint32("test.count", 7)
    writer.add_float32("test.eps", 1e-6)
    writer.add_bool("test.flag", True)
    writer.add_array("test.words", ["a", "▁b", "<0x0A>"])
    writer.add_array("test.scores", [0.5, -1.25])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path, tensors


def test_reader_on_a_small_file(small_gguf):
    path, tensors = small_gguf
    f = GGUFFile(path)
    assert sorted(f.tensors) == sorted(tensors)
    for name, raw in tensors.items():
        t = f.tensors[name]
        assert t.format.name == name[2:]
        assert t.shape == (3, 2 * t.format.block_size)  # numpy orientation: rows of whole blocks
        assert t.raw.shape == raw.shape and not t.raw.flags.writeable
        np.testing.assert_array_equal(t.raw, raw)
        assert_bitwise(t.dequantize(), gguf.quants.dequantize(raw, QTYPES[t.format.name]), name)
    meta = f.metadata
    assert meta["general.architecture"] == "test" and meta["test.count"] == 7 and meta["test.flag"] is True
    assert meta["test.eps"] == float(np.float32(1e-6))
    assert meta["test.words"] == ["a", "▁b", "<0x0A>"]
    np.testing.assert_array_equal(meta["test.scores"], np.array([0.5, -1.25], np.float32))


def test_reader_errors(small_gguf, tmp_path):
    path, _ = small_gguf
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match="past the end of the file .* truncated"):
        GGUFFile(truncated)
    other = tmp_path / "other.bin"
    other.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(ValueError, match="not a GGUF file"):
        GGUFFile(other)
    with pytest.raises(FileNotFoundError, match="GGUF file not found"):
        GGUFFile(tmp_path / "nowhere.gguf")


# --------------------------------------------------------------------------------------------------------
# 3. The real Gemma 3 270M GGUF
# --------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_gguf():
    from tinyspec.quant.gguf_file import open_gguf

    return open_gguf()


@pytest.mark.real
def test_packaged_gguf_is_assembled_once_and_replaced_when_cut_short(tmp_path):
    from tinyspec.quant.gguf_file import GGUF_NAME, packaged_gguf

    path = packaged_gguf(tmp_path)
    assert path == tmp_path / GGUF_NAME and sorted(p.name for p in tmp_path.iterdir()) == [GGUF_NAME]
    mtime = path.stat().st_mtime_ns
    assert packaged_gguf(tmp_path).stat().st_mtime_ns == mtime  # found, not assembled again
    size = path.stat().st_size
    path.write_bytes(path.read_bytes()[: size // 2])  # what an interrupted copy could leave
    assert packaged_gguf(tmp_path).stat().st_size == size
    assert sorted(p.name for p in tmp_path.iterdir()) == [GGUF_NAME]


@pytest.mark.real
def test_real_tensor_types(real_gguf):
    """The types DESIGN.md lists, tensor by tensor (18 blocks)."""
    types = {name: t.format.name for name, t in real_gguf.tensors.items()}
    assert types["token_embd.weight"] == "Q8_0" and types["output_norm.weight"] == "F32"
    kinds = {}
    for name, qtype in types.items():
        if name.startswith("blk."):
            kinds.setdefault(name.split(".")[2], []).append(qtype)
    for kind in ["attn_q", "attn_k", "ffn_gate", "ffn_up"]:
        assert kinds[kind] == ["Q5_0"] * 18, kind
    assert kinds["attn_output"] == ["Q4_K"] * 18
    assert sorted(kinds["attn_v"]) == ["Q5_0"] * 9 + ["Q8_0"] * 9
    assert sorted(kinds["ffn_down"]) == ["Q4_K"] * 9 + ["Q6_K"] * 9
    for kind in ["attn_norm", "attn_q_norm", "attn_k_norm", "post_attention_norm", "ffn_norm", "post_ffw_norm"]:
        assert kinds[kind] == ["F32"] * 18, kind
    assert len(types) == 2 + 18 * 13


@pytest.mark.real
def test_real_every_tensor_bitwise_equal_gguf(real_gguf):
    """All 236 tensors (token_embd in slices of rows, to keep memory small)."""
    for name, t in real_gguf.tensors.items():
        rows = t.raw.reshape(-1, t.raw.shape[-1])  # [rows, bytes per row]
        for start in range(0, rows.shape[0], 32768):
            raw = rows[start:start + 32768]
            ours = dequantize(raw, t.format.name, (raw.shape[0], t.shape[-1]))
            assert_bitwise(ours, gguf.quants.dequantize(raw, QTYPES[t.format.name]), f"{name} rows {start}..")


@pytest.mark.real
def test_real_reader_agrees_with_gguf_reader(real_gguf):
    """Same tensors (name, type, byte shape, bytes) and the same metadata as gguf.GGUFReader (slow to open)."""
    reader = gguf.GGUFReader(real_gguf.path)
    assert [t.name for t in reader.tensors] == list(real_gguf.tensors)
    for r in reader.tensors:
        t = real_gguf.tensors[r.name]
        theirs = r.data.view(np.uint8)  # [rows, bytes per row] (GGUFReader gives F32 tensors as float32)
        assert (t.format.ggml_type, t.raw.shape) == (int(r.tensor_type), theirs.shape), r.name
        assert t.shape == tuple(int(n) for n in reversed(r.shape)), r.name
        assert np.array_equal(t.raw, theirs), r.name
    keys = [k for k in reader.fields if not k.startswith("GGUF.")]  # GGUFReader adds the header as GGUF.*
    assert keys == list(real_gguf.metadata)
    for key in keys:
        theirs, ours = reader.fields[key].contents(), real_gguf.metadata[key]
        if isinstance(ours, np.ndarray):
            assert ours.tolist() == list(theirs), key
        else:
            assert ours == theirs, key


@pytest.mark.real
def test_real_config_tokenizer_and_values_match_the_conversion(real_gguf, gemma_dir):
    """What `tinyspec convert` wrote (config.json, tokenizer.json, model.safetensors) comes out of the mapped
    file too: the same Config, the same tokenizer JSON, bitwise the same float32 weights."""
    from safetensors import safe_open

    from tinyspec.config import Config
    from tinyspec.weights import expected_shapes, to_flat

    cfg = real_gguf.config()
    assert cfg == Config.load(gemma_dir / "config.json")
    assert real_gguf.tokenizer().backend.to_str() == (gemma_dir / "tokenizer.json").read_text()

    flat = to_flat(real_gguf.quantized_weights(cfg))
    assert {name: t.shape for name, t in flat.items()} == expected_shapes(cfg)
    with safe_open(gemma_dir / "model.safetensors", framework="numpy") as converted:
        for name, t in flat.items():
            if name != "model.embed_tokens.weight":  # the F32 norms come as float32 arrays already
                assert_bitwise(t if isinstance(t, np.ndarray) else t.dequantize(), converted.get_tensor(name), name)
        embed, rows = flat["model.embed_tokens.weight"], [0, 1, 2, 3, 9259, 262143]  # specials, "Hello", last
        for r in rows:
            assert_bitwise(dequantize(embed.raw[r], "Q8_0", (cfg.hidden_size,)),
                           converted.get_slice("model.embed_tokens.weight")[r], f"embed_tokens row {r}")


# --------------------------------------------------------------------------------------------------------
# 4. The quantized matmuls: bitwise the float32 kernel on the dequantized matrix, batch-invariant
# --------------------------------------------------------------------------------------------------------

QUANTIZED = ["Q8_0", "Q5_0", "Q4_K", "Q6_K"]
ROWS = [*range(1, 9), 13, 24, 64]  # every row count of a short verification, and up to the largest (64)


def quant_matmul(name: str):
    from tinyspec.quant import kernels

    return getattr(kernels, f"matmul_{name.lower()}")


def random_matrix(name: str, N: int, K: int, seed: int) -> np.ndarray:  # -> uint8 [N, bytes per row]
    fmt = FORMATS[name]
    return random_blocks(name, N * K // fmt.block_size, seed).reshape(N, K // fmt.block_size * fmt.type_size)


def assert_matmul_matches_float32(name: str, raw: np.ndarray, rows, seed: int, what: str) -> None:
    """For each M in rows: x [M, K] (standard normal, seeded) @ W.T through the kernel for `name` is bitwise
    fast.kernels.matmul_numba(x, W), with W the dequantized matrix (bitwise gguf's: section 1)."""
    from tinyspec.fast.kernels import matmul_numba

    fmt = FORMATS[name]
    N, K = raw.shape[0], raw.shape[1] // fmt.type_size * fmt.block_size
    W = dequantize(raw, name, (N, K))
    rng = np.random.default_rng(seed)
    for M in rows:
        x = rng.standard_normal((M, K)).astype(np.float32)
        assert_bitwise(quant_matmul(name)(x, raw), matmul_numba(x, W), f"{what}, M = {M}, seed {seed}")


def assert_q8_0_matmul_matches_float32(raw: np.ndarray, rows: range, seed: int, what: str) -> None:
    assert_matmul_matches_float32("Q8_0", raw, rows, seed, what)


@pytest.mark.parametrize("N, K", [(1, 32), (3, 64), (4, 96), (37, 640), (1031, 640)])  # the last runs parallel
def test_q8_0_matmul_random_blocks(N, K):
    """Every kind of finite scale (random_blocks): even 65504 * 127 * 640 terms stay far from float32's limit."""
    raw = random_blocks("Q8_0", N * K // 32, seed=N).reshape(N, K // 32 * 34)
    assert_q8_0_matmul_matches_float32(raw, range(1, 9), seed=N, what=f"random Q8_0 [{N}, {K}]")


@pytest.mark.parametrize("N, K", [(1, 256), (5, 512), (37, 1024), (1031, 256)])  # the last runs parallel
@pytest.mark.parametrize("name", QUANTIZED)
def test_matmul_random_blocks(name, N, K):
    """Every kind of finite scale (random_blocks), M = 1 .. 64 rows of x (seed N)."""
    assert_matmul_matches_float32(name, random_matrix(name, N, K, seed=N), ROWS, seed=N,
                                  what=f"random {name} [{N}, {K}]")


@pytest.mark.parametrize("name", QUANTIZED)
def test_matmul_rows_are_batch_invariant(name):
    """Row m of an M-row product is bitwise the row computed alone (seed 7), on one thread and on all
    (N = 1030 runs the parallel path from M = 1 on; 1030 = 4 x 257 + 2 leaves rows for the 1-row tail)."""
    raw = random_matrix(name, 1030, 256, seed=7)
    x = np.random.default_rng(7).standard_normal((64, 256)).astype(np.float32)
    matmul = quant_matmul(name)
    alone = np.concatenate([matmul(x[m:m + 1], raw) for m in range(64)])  # [64, N]
    for M in ROWS:
        assert_bitwise(matmul(x[:M], raw), alone[:M], f"{name}: {M} rows together vs each alone")
    assert_bitwise(matmul(x[:5, :], raw[:9]), alone[:5, :9], f"{name}: 9 rows of W (one thread)")


REPACKED = {"Q5_0": "Q8_0", "Q4_K": "S8M_32", "Q6_K": "S8_16"}  # tinyspec.quant.blocks, section 4


@pytest.mark.parametrize("name", list(REPACKED))
def test_repack_keeps_every_value(name):
    """The repacked layout holds bitwise gguf's values of the file's blocks (every kind of finite scale), in
    the layout its docstring draws, and a Q8_0 matrix is left as it is."""
    from tinyspec.quant.blocks import repack

    raw = random_matrix(name, 37, 512, seed=3)
    fmt, out = repack(raw, name, (37, 512))
    assert fmt.name == REPACKED[name] and out.dtype == np.uint8 and out.shape == (37, 512 // fmt.block_size * fmt.type_size)
    assert_bitwise(dequantize(out, fmt.name, (37, 512)), gguf.quants.dequantize(raw, QTYPES[name]), f"{name} repacked")
    q8 = random_matrix("Q8_0", 3, 64, seed=3)
    assert repack(q8, "Q8_0", (3, 64))[1] is q8


@pytest.mark.parametrize("N, K", [(5, 512), (1031, 256)])  # the last runs parallel
@pytest.mark.parametrize("name", list(REPACKED))
def test_matmul_on_repacked_blocks(name, N, K):
    """x @ W.T on the repacked blocks is bitwise matmul_numba(x, W), W gguf's dequantization of the file's
    blocks, for M = 1 .. 64 (both ways of feeding the tiles); and each row is the row computed alone."""
    from tinyspec.fast.kernels import matmul_numba
    from tinyspec.quant.blocks import repack
    from tinyspec.quant.kernels import _matmul

    raw = random_matrix(name, N, K, seed=N)
    fmt, out = repack(raw, name, (N, K))
    W = gguf.quants.dequantize(raw, QTYPES[name])
    x = np.random.default_rng(N).standard_normal((64, K)).astype(np.float32)
    alone = np.concatenate([_matmul(x[m:m + 1], out, fmt.name) for m in range(64)])
    for M in ROWS:
        assert_bitwise(_matmul(x[:M], out, fmt.name), matmul_numba(x[:M], W), f"{name} as {fmt.name}, M = {M}")
        assert_bitwise(_matmul(x[:M], out, fmt.name), alone[:M], f"{name} as {fmt.name}: {M} rows vs each alone")


def test_q8_0_matmul_checks_its_inputs():
    from tinyspec.quant.kernels import matmul_q8_0

    raw = random_blocks("Q8_0", 4, seed=0).reshape(2, 68)
    with pytest.raises(TypeError, match="float32"):
        matmul_q8_0(np.ones((1, 64)), raw)
    with pytest.raises(TypeError, match="uint8"):
        matmul_q8_0(np.ones((1, 64), np.float32), raw.view(np.int8))
    with pytest.raises(ValueError, match="K = 32 values is 1 blocks of 34 bytes"):
        matmul_q8_0(np.ones((1, 32), np.float32), raw)


@pytest.mark.parametrize("name", QUANTIZED)
def test_matmul_refuses_shapes_it_cannot_handle(name):
    """K must be whole blocks (256 values for Q4_K and Q6_K: K = 128 is refused), and raw must be K's bytes."""
    size = FORMATS[name].block_size
    raw = random_matrix(name, 2, 2 * size, seed=0)
    matmul = quant_matmul(name)
    with pytest.raises(ValueError, match=f"K must be a multiple of {size}"):
        matmul(np.ones((1, size + 8), np.float32), raw)  # not whole blocks
    with pytest.raises(ValueError, match=f"a {name} row of K = {size} values is 1 blocks"):
        matmul(np.ones((1, size), np.float32), raw)  # whole blocks, but not raw's row
    with pytest.raises(TypeError, match="C-contiguous uint8"):
        matmul(np.ones((1, 2 * size), np.float32), raw[:, ::-1])
    with pytest.raises(TypeError, match="float32 \\[M, K\\]"):
        matmul(np.ones(2 * size, np.float32), raw)


def test_matmul_quant_dispatches_every_format_of_a_file(small_gguf):
    """Through the GGUF reader: each format's tensor (F32 too) gives matmul_numba on its dequantized values."""
    from tinyspec.fast.kernels import matmul_numba
    from tinyspec.quant.kernels import matmul_quant

    f = GGUFFile(small_gguf[0])
    rng = np.random.default_rng(3)
    for name, t in f.tensors.items():
        for M in [1, 3, 64]:
            x = rng.standard_normal((M, t.shape[1])).astype(np.float32)
            assert_bitwise(matmul_quant(x, t), matmul_numba(x, t.dequantize()), f"{name}, M = {M}")


def test_matmul_quant_refuses_what_is_not_a_matrix_it_knows():
    from tinyspec.quant.blocks import BlockFormat
    from tinyspec.quant.gguf_file import QuantTensor
    from tinyspec.quant.kernels import matmul_quant

    norm = QuantTensor("blk.0.attn_norm.weight", FORMATS["F32"], (640,), random_blocks("F32", 640, 0).reshape(-1))
    with pytest.raises(ValueError, match="attn_norm.weight has shape \\(640,\\).*needs a matrix"):
        matmul_quant(np.ones((1, 640), np.float32), norm)
    q4_0 = BlockFormat("Q4_0", 2, 32, 18, None)
    t = QuantTensor("t", q4_0, (2, 32), np.zeros((2, 18), np.uint8))
    with pytest.raises(NotImplementedError, match="no kernel for Q4_0"):
        matmul_quant(np.ones((1, 32), np.float32), t)


@pytest.mark.real
def test_real_q8_0_matmul_lm_head_and_v_proj(real_gguf):
    """The LM head (token_embd, 262144 x 640) and every Q8_0 v_proj, for M = 1 .. 8 rows of x."""
    assert_q8_0_matmul_matches_float32(real_gguf.tensors["token_embd.weight"].raw, range(1, 9), seed=0,
                                       what="token_embd")
    for name, t in real_gguf.tensors.items():
        if t.format.name == "Q8_0" and name != "token_embd.weight":
            assert_q8_0_matmul_matches_float32(t.raw, range(1, 9), seed=1, what=name)


@pytest.mark.real
@pytest.mark.parametrize("kind, qtype", [("attn_q", "Q5_0"), ("attn_v", "Q5_0"), ("attn_output", "Q4_K"),
                                         ("ffn_down", "Q4_K"), ("ffn_down", "Q6_K")])
def test_real_matmul_quant(real_gguf, kind, qtype):
    """The first layer's tensor of that kind and type (q_proj [1024, 640], v_proj [256, 640], o_proj
    [640, 1024], down_proj [640, 2048]; the Q8_0 ones are above), through matmul_quant, for M = 1 .. 64 (seed 0):
    bitwise matmul_numba on the dequantized tensor, and every row equal to that row alone."""
    from tinyspec.fast.kernels import matmul_numba
    from tinyspec.quant.kernels import matmul_quant

    t = next(real_gguf.tensors[f"blk.{i}.{kind}.weight"] for i in range(18)
             if real_gguf.tensors[f"blk.{i}.{kind}.weight"].format.name == qtype)
    W = t.dequantize()
    x = np.random.default_rng(0).standard_normal((64, t.shape[1])).astype(np.float32)
    alone = np.concatenate([matmul_quant(x[m:m + 1], t) for m in range(64)])
    for M in ROWS:
        out = matmul_quant(x[:M], t)
        assert_bitwise(out, matmul_numba(x[:M], W), f"{t.name} ({qtype}), M = {M}")
        assert_bitwise(out, alone[:M], f"{t.name} ({qtype}), {M} rows together vs each alone")


# --------------------------------------------------------------------------------------------------------
# 5. The model on backend="quant": the GGUF's blocks, bitwise the float32 numba backend
# --------------------------------------------------------------------------------------------------------

PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time, in a small village by the sea,"]


@pytest.fixture(scope="session")
def gemma_quant():
    """The real model on the quant backend: the packaged GGUF, memory-mapped, the layers repacked."""
    from tinyspec.model import Model

    return Model.load(backend="quant")


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype == np.float32 and a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


@pytest.mark.real
def test_real_quant_model_keeps_the_blocks(gemma_quant, gemma, real_gguf):
    """The token embedding (and LM head) is a QuantTensor on the mapped file; every layer matrix is its
    file's blocks repacked (section 4 of tinyspec.quant.blocks), bitwise the converted matrix; without
    repacking every matrix stays on the file (a forward reads 247 MB, not 1.07 GB); the norms are float32
    arrays equal to the converted ones; an embedding row is bitwise the converted row."""
    from tinyspec.quant.gguf_file import QuantTensor
    from tinyspec.weights import weight_bytes

    w, f = gemma_quant.weights, gemma.weights
    assert gemma_quant.cfg == gemma.cfg
    on_file = real_gguf.quantized_weights(gemma.cfg, repack=False)
    for i, (layer, layer_f, layer_file) in enumerate(zip(w.layers, f.layers, on_file.layers)):
        for name in ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]:
            t, t_file = getattr(layer, name), getattr(layer_file, name)
            assert isinstance(t_file, QuantTensor) and not t_file.raw.flags.owndata and t_file.shape == t.shape
            assert isinstance(t, QuantTensor) and t.format.name == REPACKED.get(t_file.format.name, t_file.format.name)
            if i in (0, len(w.layers) - 1):
                assert same_bits(t.dequantize(), getattr(layer_f, name)), f"layer {i} {name}"
        for name in ["input_layernorm", "q_norm", "k_norm", "post_attention_layernorm", "pre_feedforward_layernorm",
                     "post_feedforward_layernorm"]:
            assert same_bits(getattr(layer, name), getattr(layer_f, name)), name
    assert isinstance(w.embed_tokens, QuantTensor) and same_bits(w.norm, f.norm)
    tokens = np.array([0, 2, 9259, 262143, 9259])
    assert same_bits(w.embed_tokens[tokens], f.embed_tokens[tokens])
    assert same_bits(w.embed_tokens[9259], f.embed_tokens[9259])
    assert gemma_quant.weight_bytes() < gemma.weight_bytes() / 3
    assert weight_bytes(on_file)["total"] < gemma.weight_bytes() / 4


@pytest.mark.real
@pytest.mark.parametrize("prompt", PROMPTS)
def test_real_quant_logits_bitwise_equal_numba(gemma_quant, gemma, gemma_tokenizer, prompt):
    """Where the two backends run the same kernels, the logits are the same bits: a prefill of at most 64
    tokens (MAX_INVARIANT_ROWS: both use the batch-invariant kernels), then decode steps of one token and
    verification forwards of 5 and of 64 rows on top of it. The quant kernels compute bitwise the float32
    kernel's sums on bitwise the converted weights (sections 1 and 4), and every other operation is shared."""
    from tinyspec.fast.kernels import MAX_INVARIANT_ROWS

    ids = gemma_tokenizer.encode(prompt)
    rng = np.random.default_rng(0)
    steps = [ids, [9259], [1902], list(rng.integers(3, 262144, 5)), list(rng.integers(3, 262144, MAX_INVARIANT_ROWS))]
    cq, cf = gemma_quant.new_cache(), gemma.new_cache()
    for n, tokens in enumerate(steps):
        assert len(tokens) <= MAX_INVARIANT_ROWS
        q, f = gemma_quant.forward(tokens, cq), gemma.forward(tokens, cf)
        assert same_bits(q, f), f"{prompt!r}: forward {n} ({len(tokens)} tokens) differs, max {np.abs(q - f).max()}"


@pytest.mark.real
def test_real_quant_long_prefill_is_bitwise_the_numba_prefill_in_chunks(gemma_quant, gemma):
    """A prefill of more than 64 tokens is where the backends part: the numba table hands it to BLAS
    (fast.kernels.MAX_INVARIANT_ROWS), which sums in its own order, while the quant table runs its
    batch-invariant kernels at every row count. So the quant prefill of 100 tokens in one forward is bitwise the
    numba prefill in chunks of at most 64 rows (each row's sums never depend on the others), and so is the
    decode step after it; against numba's one-forward (BLAS) prefill they are only close, and so is every
    decode step that reads the cache that prefill wrote."""
    ids = [2] + np.random.default_rng(0).integers(3, 262144, 99).tolist()  # 100 tokens, seed 0
    cq, cf, cc = gemma_quant.new_cache(), gemma.new_cache(), gemma.new_cache()
    q, f = gemma_quant.forward(ids, cq), gemma.forward(ids, cf)  # [100, V] each
    chunks = np.concatenate([gemma.forward(ids[:50], cc), gemma.forward(ids[50:], cc)])  # [100, V]
    assert same_bits(q, chunks)
    np.testing.assert_allclose(q, f, rtol=0, atol=1e-2)  # BLAS: the same model, other last bits
    token = [int(np.argmax(q[-1]))]
    q, f, chunks = gemma_quant.forward(token, cq), gemma.forward(token, cf), gemma.forward(token, cc)
    assert same_bits(q, chunks)
    np.testing.assert_allclose(q, f, rtol=0, atol=1e-2)


@pytest.mark.real
def test_real_quant_greedy_text_is_the_numba_text(gemma_quant, gemma, gemma_tokenizer):
    """24 greedy tokens after each short prompt: the same ids, so the same text."""
    from tinyspec.decoding import generate_ids

    for prompt in PROMPTS:
        ids = gemma_tokenizer.encode(prompt)
        assert generate_ids(gemma_quant, ids, 24) == generate_ids(gemma, ids, 24), prompt


@pytest.mark.real
def test_real_quant_speculative_equals_vanilla(gemma_quant, gemma_tokenizer):
    """Greedy speculative decoding (n-gram drafter, k = 4) on the quant backend emits what greedy vanilla
    decoding on the quant backend emits, and verifies several tokens per forward somewhere."""
    from tinyspec.decoding import generate_ids
    from tinyspec.drafters.ngram import NgramDrafter
    from tinyspec.speculative import SpecStats, speculative_generate_ids

    ids = gemma_tokenizer.encode("List the days of the week: Monday, Tuesday, Wednesday, Thursday,")
    stats = SpecStats()
    spec = speculative_generate_ids(gemma_quant, NgramDrafter(), ids, 32, k=4, stats=stats)
    assert spec == generate_ids(gemma_quant, ids, 32)
    assert stats.target_forwards < len(spec)


@pytest.mark.real
def test_real_quant_mtp_drafter_reads_the_head_rows_as_blocks(gemma_quant, gemma, gemma_tokenizer):
    """On the quant backend the MTP drafter's head rows stay Q8_0 blocks (a quarter of the bytes), and it
    drafts exactly what it drafts on the float32 backend: the same trees, token for token, and speculative
    decoding with it still emits vanilla's text."""
    from tinyspec.decoding import generate_ids
    from tinyspec.drafters import load_mtp
    from tinyspec.quant.gguf_file import QuantTensor
    from tinyspec.speculative import speculative_generate_ids

    ids = gemma_tokenizer.encode("The lighthouse keeper climbed the stairs every evening, and")
    trees = {}
    for name, model in (("quant", gemma_quant), ("numba", gemma)):
        drafter = load_mtp("")
        trace = []
        out = speculative_generate_ids(model, drafter, ids, 16, k=3, tree=6, trace=trace)
        assert out == generate_ids(model, ids, 16), name
        trees[name] = [(s.drafted, s.parents) for s in trace if s.drafted]
        assert isinstance(drafter.E_sub, QuantTensor) == (name == "quant")
        if name == "quant":
            assert drafter.E_sub.format.name == "Q8_0" and drafter.E_sub.nbytes * 3 < drafter.E_sub.shape[0] * 640 * 4
    assert trees["quant"] and trees["quant"] == trees["numba"]


@pytest.mark.real
def test_real_quant_backend_converts_nothing(tmp_path, gemma_quant, gemma_tokenizer):
    """With TINYSPEC_WEIGHTS naming a directory that does not exist (the GGUF beside it, where packaged_gguf
    keeps it), `tinyspec tokenize` and `tinyspec predict --backend quant` run in a fresh Python without
    converting: neither gguf-py nor safetensors is imported, the weights directory is never made, the ids are
    the converted tokenizer's and the top token is the one gemma_quant predicts."""
    import json
    import os
    import subprocess
    import sys

    from tinyspec.quant.gguf_file import GGUF_NAME, packaged_gguf

    (tmp_path / GGUF_NAME).symlink_to(packaged_gguf())
    weights = tmp_path / "gemma-3-270m"
    env = {**os.environ, "TINYSPEC_WEIGHTS": str(weights)}
    script = ("import json, sys\nfrom tinyspec import cli\nassert cli.main(sys.argv[1:]) == 0\n"
              "print(json.dumps(sorted(m for m in ('gguf', 'safetensors') if m in sys.modules)))")

    def run(*args):  # -> (the command's JSON, the conversion modules it imported)
        done = subprocess.run([sys.executable, "-c", script, *args], env=env, capture_output=True, text=True,
                              timeout=900)
        assert done.returncode == 0, done.stderr
        out, imported = done.stdout.splitlines()
        return json.loads(out), json.loads(imported)

    prompt = "The capital of France is"
    ids = gemma_tokenizer.encode(prompt)
    tokenized, imported = run("tokenize", prompt, "--json")
    assert tokenized["ids"] == ids and imported == []
    predicted, imported = run("predict", prompt, "--backend", "quant", "--json", "--top", "1")
    logits = gemma_quant.forward(ids, gemma_quant.new_cache(), last_only=True)[0]
    assert predicted["top"][0]["id"] == int(np.argmax(logits)) and imported == []
    assert not weights.exists()
