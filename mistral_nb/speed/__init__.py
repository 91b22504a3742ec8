"""Inference speed-ups, each a module: the weight formats a linear layer can hold (``formats``: float,
``int8``, bf16 ``cpu_pack``ed for oneDNN), FlashAttention's tiled softmax in plain torch (``flash``),
the roofline a pass meets on a machine (``roofline``), and the paged KV cache of serving engines
(``paged``)."""

from .cpu_pack import PackedLinear, check_pack, pack_available, pack_model
from .formats import LinearFormat, formats_in, linear_weight, replace_linears
from .int8 import DEFAULT_SKIP, INT8_KERNEL_MAX_ROWS, Int8Linear, dequantize_int8, quantize_int8, quantize_model

__all__ = ["LinearFormat", "replace_linears", "linear_weight", "formats_in", "Int8Linear", "quantize_int8",
           "dequantize_int8", "quantize_model", "DEFAULT_SKIP", "INT8_KERNEL_MAX_ROWS", "PackedLinear",
           "pack_model", "pack_available", "check_pack"]
