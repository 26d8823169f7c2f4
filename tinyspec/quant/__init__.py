"""Gemma 3 270M's weights as the GGUF stores them: quantized blocks, read in place.

    blocks.py     each block format (F32, Q8_0, Q5_0, Q4_K, Q6_K) written out once in NumPy, layout documented;
                  and `repack`, the layers' 5- and 6-bit blocks laid out again with a byte per value
    gguf_file.py  the GGUF memory-mapped: every tensor's raw blocks (a QuantTensor, a view), its format and
                  shape; config, tokenizer and the model's Weights from it, without converting (`open_gguf()`)
    simd.py       8 bytes of a block in a register, and the bit operations that unpack them into 8 float32
    kernels.py    Numba matmuls on Q8_0, Q5_0, Q4_K and Q6_K blocks (and the repacked ones), bitwise equal to the float32 kernel on the
                  dequantized matrix (`matmul_quant`), and the backend table QUANT

`Model.load(backend="quant")` (or `tinyspec ... --backend quant`) runs the model on blocks: the LM head on the
mapped file, the layers repacked at load; nothing is converted, a forward reads under a third of the float32
bytes (`tinyspec.weights.weight_bytes`), and the logits are bitwise the numba backend's
wherever both run the same kernels (tests/test_quant.py, section 5, says where).
"""

from .blocks import FORMATS, BlockFormat, block_format, dequantize

__all__ = ["FORMATS", "BlockFormat", "block_format", "dequantize"]
