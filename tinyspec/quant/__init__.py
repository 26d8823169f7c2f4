"""Gemma 3 270M's weights as the GGUF stores them: quantized blocks, read in place.

    blocks.py     each block format (F32, Q8_0, Q5_0, Q4_K, Q6_K) written out once in NumPy, layout documented
    gguf_file.py  the GGUF memory-mapped: every tensor's raw blocks (a view), its format and shape; config and
                  tokenizer from the metadata, without converting the model (`open_gguf()`)
    kernels.py    a Numba matmul on Q8_0 blocks (the LM head), bitwise equal to the float32 kernel
"""

from .blocks import FORMATS, BlockFormat, block_format, dequantize

__all__ = ["FORMATS", "BlockFormat", "block_format", "dequantize"]
