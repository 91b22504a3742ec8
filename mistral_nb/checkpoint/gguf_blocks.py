"""The tensor encodings of a GGUF file that this package writes: F32, F16, BF16, and ggml's Q8_0 and Q4_0 blocks.

ggml quantizes a row of weights in blocks of 32 consecutive values, each block stored as one float16
scale ``d`` followed by the 32 integers (``ggml-quants.c``: ``quantize_row_q8_0_ref``,
``quantize_row_q4_0_ref``; the same rules as the ``gguf`` Python package's ``quants.py``):

* **Q8_0**, 34 bytes per block: ``d = max|x| / 127``, ``q = round(x / d)`` (halves away from zero),
  32 int8. ``x ~= q * d``.
* **Q4_0**, 18 bytes per block: ``m`` = the value of largest magnitude *with its sign*, ``d = m / -8``,
  ``q = min(15, trunc(x / d + 8.5))`` in 0..15, and byte j (0..15) holds value j in its low nibble and
  value j + 16 in its high nibble. ``x ~= (q - 8) * d``; the largest value lands exactly on -8 d = m.

Everything is computed in float32 exactly as the reference does (reciprocal ``1 / d`` first, then a
product), so the bytes are identical to the reference's (``tests/test_gguf.py`` checks it).
"""

from __future__ import annotations

import torch

__all__ = ["BLOCK", "GGML_TYPES", "quantize_q8_0", "quantize_q4_0", "dequantize_q8_0", "dequantize_q4_0",
           "encode", "encoded_nbytes"]

BLOCK = 32
GGML_TYPES = {"F32": 0, "F16": 1, "Q4_0": 2, "Q8_0": 8, "BF16": 30}      # enum ggml_type
_BLOCK_BYTES = {"Q8_0": 34, "Q4_0": 18}
_ELEMENT_BYTES = {"F32": 4, "F16": 2, "BF16": 2}
_CHUNK_ROWS = 1024


def _blocks(x: torch.Tensor) -> torch.Tensor:
    if x.dim() != 2 or x.shape[1] % BLOCK:
        raise ValueError(f"ggml blocks need a 2-D tensor whose rows are a multiple of {BLOCK} long, got shape "
                         f"{tuple(x.shape)}")
    return x.float().reshape(x.shape[0], x.shape[1] // BLOCK, BLOCK)


def _reciprocal(d: torch.Tensor) -> torch.Tensor:
    return torch.where(d == 0, torch.zeros_like(d), 1.0 / torch.where(d == 0, torch.ones_like(d), d))


def _round_half_away(v: torch.Tensor) -> torch.Tensor:
    """ggml's roundf, written as the reference writes it: floor(a) + floor(2 (a - floor(a))), signed."""
    a = v.abs()
    fl = torch.floor(a)
    return torch.sign(v) * (fl + torch.floor(2 * (a - fl)))


def _f16_bytes(d: torch.Tensor) -> torch.Tensor:
    return d.to(torch.float16).contiguous().view(torch.uint8)          # (rows, blocks, 2), little-endian


def quantize_q8_0(x: torch.Tensor) -> torch.Tensor:
    """(rows, K) floats -> (rows, K / 32 * 34) uint8 Q8_0 blocks."""
    b = _blocks(x)
    d = b.abs().amax(dim=2, keepdim=True) / 127
    q = _round_half_away(b * _reciprocal(d)).to(torch.int8).view(torch.uint8)
    return torch.cat([_f16_bytes(d), q], dim=2).reshape(x.shape[0], -1)


def quantize_q4_0(x: torch.Tensor) -> torch.Tensor:
    """(rows, K) floats -> (rows, K / 32 * 18) uint8 Q4_0 blocks."""
    b = _blocks(x)
    m = torch.gather(b, 2, b.abs().argmax(dim=2, keepdim=True))      # signed value of largest magnitude
    d = m / -8
    q = torch.trunc(b * _reciprocal(d) + 8.5).clamp_(0, 15).to(torch.uint8)
    q = q.view(b.shape[0], b.shape[1], 2, BLOCK // 2)
    packed = q[:, :, 0] | (q[:, :, 1] << 4)                           # byte j: values j and j + 16
    return torch.cat([_f16_bytes(d), packed], dim=2).reshape(x.shape[0], -1)


def dequantize_q8_0(data: torch.Tensor, cols: int) -> torch.Tensor:
    """(rows, cols / 32 * 34) uint8 -> (rows, cols) float32."""
    b = data.reshape(data.shape[0], cols // BLOCK, 34)
    d = b[:, :, :2].contiguous().view(torch.float16).float()
    return (b[:, :, 2:].contiguous().view(torch.int8).float() * d).reshape(-1, cols)


def dequantize_q4_0(data: torch.Tensor, cols: int) -> torch.Tensor:
    """(rows, cols / 32 * 18) uint8 -> (rows, cols) float32."""
    b = data.reshape(data.shape[0], cols // BLOCK, 18)
    d = b[:, :, :2].contiguous().view(torch.float16).float()
    qs = b[:, :, 2:]
    q = torch.cat([qs & 15, qs >> 4], dim=2).float() - 8
    return (q * d).reshape(-1, cols)


def encoded_nbytes(shape: tuple, kind: str) -> int:
    """Bytes of a tensor of ``shape`` encoded as ``kind`` ('F32', 'F16', 'BF16', 'Q8_0', 'Q4_0')."""
    n = 1
    for s in shape:
        n *= s
    if kind in _BLOCK_BYTES:
        return n // BLOCK * _BLOCK_BYTES[kind]
    return n * _ELEMENT_BYTES[kind]


def encode(x: torch.Tensor, kind: str, name: str = "tensor") -> torch.Tensor:
    """``x`` as the flat uint8 bytes of a GGUF tensor of type ``kind`` (rows quantized by chunks)."""
    if kind in ("F32", "F16", "BF16"):
        dtype = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}[kind]
        y = x.detach().to(dtype).contiguous()
        if not bool(torch.isfinite(y).all()) and bool(torch.isfinite(x).all()):
            raise ValueError(f"{name}: values of magnitude up to {float(x.abs().max()):.4g} become inf in {kind}")
        return y.reshape(-1).view(torch.uint8)
    quantize = {"Q8_0": quantize_q8_0, "Q4_0": quantize_q4_0}.get(kind)
    if quantize is None:
        raise ValueError(f"unknown GGUF tensor type {kind!r}: choose one of {', '.join(GGML_TYPES)}")
    x2 = x.detach().reshape(x.shape[0], -1) if x.dim() == 2 else x.detach()
    if x2.dim() != 2 or x2.shape[1] % BLOCK:
        raise ValueError(f"{name}: {kind} needs rows whose length is a multiple of {BLOCK}, got shape {tuple(x.shape)}")
    chunks = [quantize(x2[r:r + _CHUNK_ROWS]) for r in range(0, x2.shape[0], _CHUNK_ROWS)]
    return torch.cat(chunks).reshape(-1)
