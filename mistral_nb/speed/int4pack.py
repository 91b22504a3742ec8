"""PyTorch's int4 CPU kernel, ``torch._weight_int4pack_mm_for_cpu``, and the byte layout it reads.

The kernel multiplies activations (M, K) in bfloat16, float16 or float32 by a weight of N rows and
K columns held as 4-bit integers ``q`` in 0..15, with a scale and an offset per group of
``group_size`` consecutive columns of a row::

    W[n, k] = (q[n, k] - 8) * scale[k // group_size, n] + zero[k // group_size, n]

It reads the integers in a blocked layout of its own, which ``torch._convert_weight_to_int4pack_for_cpu``
makes from an int32 (N, K) matrix, and which depends on the vector width PyTorch compiled the kernel
for (``int4mm_kernel.cpp`` in PyTorch): blocks of ``block_n`` rows (64 with AVX-512, 32 with AVX2 or
no vector unit), each stored as K runs of ``block_n / 2`` bytes. In a full block, byte j of run k holds
rows j and j + block_n/2 of column k (low and high nibble: ``split``), or, without a vector unit, rows
2j and 2j + 1 (``pairs``); a last, partial block always uses pairs. Because of that dependence packed
bytes are never saved: a layer keeps the portable (N, K/2) nibbles of ``pack_nibbles`` in its
``state_dict`` and packs them again where it runs.

``kernel_layout()`` identifies the layout by packing a small probe matrix and checking which of the
known layouts reproduces it; ``unpack`` and ``dequantize_packed_t`` then read packed bytes without the
kernel (for saving, and for the many-row products of a prefill).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Optional

import torch

__all__ = ["KernelLayout", "kernel_layout", "kernel_fits", "pack_nibbles", "unpack_nibbles", "pack_for_kernel",
           "unpack", "dequantize_packed_t", "KERNEL_GROUP_SIZES"]

KERNEL_GROUP_SIZES = (32, 64, 128, 256)
_PACK_CHUNK_ROWS = 1024          # a multiple of every block_n: packing by chunks keeps the int32 copy small


@dataclass(frozen=True)
class KernelLayout:
    """How ``_convert_weight_to_int4pack_for_cpu`` arranges nibbles: blocks of ``block_n`` rows; in a full
    block, byte j holds rows j and j + block_n/2 (``split``) or rows 2j and 2j + 1."""
    block_n: int
    split: bool


_CANDIDATES = (KernelLayout(64, True), KernelLayout(32, True), KernelLayout(32, False), KernelLayout(16, False),
               KernelLayout(64, False))


def pack_nibbles(q: torch.Tensor) -> torch.Tensor:
    """(N, K) integers in 0..15 -> (N, K/2) uint8, column 2i in the low nibble, 2i + 1 in the high one."""
    q = q.to(torch.uint8)
    return q[:, 0::2] | (q[:, 1::2] << 4)


def unpack_nibbles(b: torch.Tensor) -> torch.Tensor:
    """Inverse of ``pack_nibbles``: (N, K/2) uint8 -> (N, K) uint8 in 0..15."""
    return torch.stack([b & 15, b >> 4], dim=-1).reshape(b.shape[0], 2 * b.shape[1])


def _raw_pack(q: torch.Tensor) -> torch.Tensor:
    return torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.to(torch.int32).contiguous(), 1)


def unpack(packed: torch.Tensor, n: int, k: int, layout: KernelLayout) -> torch.Tensor:
    """Packed bytes -> the (N, K) uint8 integers they hold (any device; no kernel needed)."""
    flat = packed.reshape(-1)
    B, full = layout.block_n, n // layout.block_n
    parts = []
    if full:
        b = flat[:full * k * B // 2].view(full, k, B // 2)
        if layout.split:
            q = torch.cat([b & 15, b >> 4], dim=2)                         # (blocks, K, B): rows j, then j + B/2
        else:
            q = torch.stack([b & 15, b >> 4], dim=3).reshape(full, k, B)   # rows 2j, 2j + 1
        parts.append(q.transpose(1, 2).reshape(full * B, k))
    rest = n - full * B
    if rest:
        b = flat[full * k * B // 2:].view(k, rest // 2)
        parts.append(torch.stack([b & 15, b >> 4], dim=2).reshape(k, rest).T)
    return torch.cat(parts) if len(parts) > 1 else parts[0].contiguous()


@functools.lru_cache(maxsize=None)
def kernel_layout() -> Optional[KernelLayout]:
    """The layout of this PyTorch build's int4 CPU kernel, or None when it has no such kernel (or packs
    in a layout none of the known ones reproduces, in which case the kernel is not used)."""
    ops = torch.ops.aten
    if not (hasattr(ops, "_convert_weight_to_int4pack_for_cpu") and hasattr(ops, "_weight_int4pack_mm_for_cpu")):
        return None
    gen = torch.Generator().manual_seed(0)
    q = torch.randint(0, 16, (208, 64), generator=gen, dtype=torch.int32)    # 3 x 64 + 16 rows: full and partial blocks
    try:
        packed = _raw_pack(q)
    except (RuntimeError, NotImplementedError):
        return None
    for layout in _CANDIDATES:
        if packed.numel() == q.numel() // 2 and torch.equal(unpack(packed, 208, 64, layout), q.to(torch.uint8)):
            return layout
    return None


def kernel_fits(n: int, k: int, group_size: int, device: torch.device) -> bool:
    """Whether a (n, k) weight with this group size can use the kernel on ``device`` (CPU, n % 16 == 0,
    a group size of 32, 64, 128 or 256 dividing k, and a known packed layout)."""
    return (torch.device(device).type == "cpu" and n % 16 == 0 and group_size in KERNEL_GROUP_SIZES
            and k % group_size == 0 and kernel_layout() is not None)


def pack_for_kernel(q: torch.Tensor) -> torch.Tensor:
    """(N, K) integers in 0..15 (CPU) -> the kernel's packed (N, K/2) uint8, a chunk of rows at a time."""
    chunks = [_raw_pack(q[r:r + _PACK_CHUNK_ROWS]) for r in range(0, q.shape[0], _PACK_CHUNK_ROWS)]
    return torch.cat(chunks) if len(chunks) > 1 else chunks[0]


def _write_block_t(out: torch.Tensor, b: torch.Tensor, split: bool) -> None:
    """Write the integers of packed blocks ``b`` (blocks, K, B/2) into ``out`` (K, blocks, B) minus 8."""
    lo = (b & 15).view(torch.int8).sub_(8)
    hi = (b >> 4).view(torch.int8).sub_(8)
    half = b.shape[2]
    if split:
        view = out.view(out.shape[0], out.shape[1], 2, half)
        view[:, :, 0].copy_(lo.transpose(0, 1))
        view[:, :, 1].copy_(hi.transpose(0, 1))
    else:
        view = out.view(out.shape[0], out.shape[1], half, 2)
        view[..., 0].copy_(lo.transpose(0, 1))
        view[..., 1].copy_(hi.transpose(0, 1))


def dequantize_packed_t(packed: torch.Tensor, scales: torch.Tensor, n: int, k: int, group_size: int,
                        layout: KernelLayout, out: torch.Tensor) -> torch.Tensor:
    """The transposed weight ``(q - 8) * scale`` (K, N), written into ``out`` (K, N) in ``out``'s dtype.

    ``scales``: (K / group_size, N). The zero offsets are not included (they add ``x_group_sums @ zero``
    to a product, which the caller does on the small output). In the (K, N) orientation every packed
    run of bytes lands in a contiguous run of the output, so the unpacking streams.
    """
    flat = packed.reshape(-1)
    B, full = layout.block_n, n // layout.block_n
    if full:
        b = flat[:full * k * B // 2].view(full, k, B // 2)
        _write_block_t(out[:, :full * B].view(k, full, B), b, layout.split)
    rest = n - full * B
    if rest:
        b = flat[full * k * B // 2:].view(1, k, rest // 2)
        tail = torch.empty(k, 1, rest, dtype=out.dtype, device=out.device)
        _write_block_t(tail, b, False)
        out[:, full * B:].copy_(tail.view(k, rest))
    out.view(k // group_size, group_size, n).mul_(scales.to(out.dtype)[:, None, :])
    return out
