"""Int4 weight-only quantization, group-wise: 4 bits per weight and a scale (and offset) per group.

Int8 (``int8.py``) keeps one scale per output row. Four bits leave only 16 levels, so one scale for a
row of 4,096 weights would round most of them to zero: the row is cut into groups of ``group_size``
consecutive weights (32 or 128 here), each with its own scale. Two ways to place the 16 levels:

* **symmetric** (as llama.cpp's Q4_0): ``m`` is the group's weight of largest magnitude, with its sign,
  ``d = m / -8``, ``q = clamp(round(w / d) + 8, 0, 15)``; ``w ~= (q - 8) d``. Zero stays exactly zero
  and the largest weight is exact (it lands on level 0, ``-8 d = m``).
* **with a zero point** (asymmetric): the 16 levels span the group's [min, max]:
  ``d = (max - min) / 15``, ``z = min + 8 d``, ``q = clamp(round((w - z) / d) + 8, 0, 15)``;
  ``w ~= (q - 8) d + z``. It spends no level on values the group does not hold.

Both are the kernel's formula ``W = (q - 8) * scale + zero`` (``int4pack.py``), the symmetric one
with zero = 0. The multiplication uses PyTorch's int4 CPU kernel ``torch._weight_int4pack_mm_for_cpu``
for a few rows (decoding reads half a byte per weight). For many rows (prefill), or where the kernel
is missing (another device, a row count N that is not a multiple of 16), the layer writes the
dequantized matrix into a reused buffer and lets a float matrix product amortise it; the zero
offsets are added as ``x_group_sums @ zero``, a product 32 (or 128) times smaller.

Mistral 7B with the blocks' linear weights in int4, group 32 (0.5 byte per weight, plus a bf16
scale and offset per 32), and the embedding and output head in bf16: 4.89 GB (14.48 in bf16).
"""

from __future__ import annotations

from typing import Iterable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from . import int4pack
from .cpu_pack import pack_available
from .formats import LinearFormat, replace_linears
from .int8 import DEFAULT_SKIP, CastScratch

__all__ = ["Int4Linear", "quantize_int4", "dequantize_int4", "quantize_model_int4", "INT4_MODES",
           "INT4_KERNEL_MAX_ROWS", "dequantize_dtype", "int4_kernel_used", "group_params", "round_to_grid"]

# load_model(..., quantize=...) names: (group size, symmetric)
INT4_MODES = {"int4": (32, True), "int4_zp": (32, False), "int4_g128": (128, True), "int4_g128_zp": (128, False)}
# Up to how many rows the kernel is used (per activation dtype); beyond, dequantize-and-multiply.
# benchmarks/int4_linear.py measured the crossover (results/int4_linear.json, an AVX-512-BF16 EPYC,
# 2 threads): with bf16 activations the kernel wins on every 7B shape at every row count it timed,
# up to 128; with float32 activations it is slower than dequantizing already at 1 row on the large
# shapes (14336 x 4096: 45 ms against 41), so float32 and float16 activations always take the
# dequantize path.
INT4_KERNEL_MAX_ROWS = {torch.bfloat16: 128, torch.float32: 0}


def dequantize_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the many-row product is computed in on the CPU for activations of ``dtype``.

    bf16 stays bf16 where oneDNN has bf16 kernels (AVX-512 BF16 or AMX). Elsewhere (AVX2) PyTorch
    multiplies bf16 matrices with a generic loop that is very slow when the weight is (in, out)
    contiguous, the layout the packed nibbles unpack into: measured on an AVX2 EPYC (2 threads,
    4096 x 14336), 6.7 s for 16 rows against 114 ms in float32. There the product is computed in
    float32 and rounded to bf16 once, at the end.
    """
    return torch.float32 if dtype == torch.bfloat16 and not pack_available() else dtype


def _check_args(weight: torch.Tensor, group_size: int) -> None:
    if weight.dim() != 2:
        raise ValueError(f"quantize_int4 expects a 2-D weight (out, in), got shape {tuple(weight.shape)}")
    if not weight.dtype.is_floating_point:
        raise ValueError(f"quantize_int4 expects a floating-point weight, got {weight.dtype}")
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 2 or group_size % 2:
        raise ValueError(f"group_size must be an even int >= 2, got {group_size!r}")
    if weight.shape[1] % group_size:
        raise ValueError(f"in_features {weight.shape[1]} is not a multiple of group_size {group_size}")


@torch.no_grad()
def quantize_int4(weight: torch.Tensor, group_size: int = 32, symmetric: bool = True,
                  dtype: Optional[torch.dtype] = None, chunk_rows: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Group-wise int4. weight (N, K) -> (q uint8 (N, K) in 0..15, scales_and_zeros (K/group, N, 2)).

    ``scales_and_zeros[g, n] = (scale, zero)`` in ``dtype`` (default: the weight's), the kernel's own
    layout; ``q`` is rounded against the stored (rounded) scale and zero, so the dequantized weight is
    what the layer multiplies by. Works ``chunk_rows`` rows at a time (small float32 temporaries).
    """
    _check_args(weight, group_size)
    dtype = dtype or weight.dtype
    n, k = weight.shape
    q = torch.empty(n, k, dtype=torch.uint8, device=weight.device)
    sz = torch.zeros(k // group_size, n, 2, dtype=dtype, device=weight.device)
    for r0 in range(0, n, chunk_rows):
        w = weight[r0:r0 + chunk_rows].float().view(-1, k // group_size, group_size)     # (rows, groups, g)
        if not bool(torch.isfinite(w).all()):
            row = r0 + int((~torch.isfinite(w)).flatten(1).any(1).nonzero()[0])
            raise ValueError(f"quantize_int4: row {row} of the weight holds NaN or Inf (the weight is corrupt)")
        scale, zero = group_params(w, symmetric, dtype)
        q[r0:r0 + chunk_rows] = round_to_grid(w, scale, zero).view(-1, k)
        sz[:, r0:r0 + chunk_rows, 0] = scale.T
        sz[:, r0:r0 + chunk_rows, 1] = zero.T
    return q, sz


def group_params(w: torch.Tensor, symmetric: bool, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero (rows, groups) in ``dtype`` of float32 weights grouped as (rows, groups, group_size)."""
    if symmetric:
        idx = w.abs().argmax(dim=2, keepdim=True)
        scale = (torch.gather(w, 2, idx) / -8).squeeze(2)            # the signed largest value lands on -8
        zero = torch.zeros_like(scale)
    else:
        lo, hi = w.amin(dim=2), w.amax(dim=2)
        scale = (hi - lo) / 15
        zero = lo + 8 * scale
    scale = torch.where(scale != 0, scale, torch.ones_like(scale)).to(dtype)     # a constant group: any scale
    return scale, zero.to(dtype)


def round_to_grid(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """The nearest of the 16 levels ``(q - 8) * scale + zero``: (rows, groups, g) floats -> uint8 q in 0..15."""
    s, z = scale.float()[..., None], zero.float()[..., None]
    return (torch.round((w - z) / s) + 8).clamp_(0, 15).to(torch.uint8)


def dequantize_int4(q: torch.Tensor, scales_and_zeros: torch.Tensor, group_size: int,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(N, K) integers in 0..15 and (K/group, N, 2) scales and zeros -> the (N, K) weight in ``dtype``."""
    n, k = q.shape
    s = scales_and_zeros[..., 0].float().T[:, :, None]          # (N, groups, 1)
    z = scales_and_zeros[..., 1].float().T[:, :, None]
    w = (q.float().view(n, k // group_size, group_size) - 8) * s + z
    return w.view(n, k).to(dtype)


def int4_kernel_used(layer: "Int4Linear", x: torch.Tensor, rows: int) -> bool:
    """Whether ``layer`` multiplies ``rows`` rows of ``x`` with PyTorch's int4 kernel."""
    return (layer.layout is not None and x.device.type == "cpu" and not x.requires_grad
            and rows <= INT4_KERNEL_MAX_ROWS.get(x.dtype, 0))


class Int4Linear(LinearFormat):
    """A bias-free linear layer with group-wise int4 weights. (..., in) -> (..., out).

    Buffers: ``qweight`` (out, in/2) uint8 and ``scales_and_zeros`` (in/group, out, 2). On a CPU with
    the kernel, ``qweight`` holds the kernel's packed bytes (``layout`` says which layout); elsewhere the
    portable nibbles of ``int4pack.pack_nibbles``, which are also what ``state_dict`` holds in every case.
    ``scratch``: where the dequantized matrix of a many-row product goes (one per model).
    """

    def __init__(self, in_features: int, out_features: int, group_size: int = 32, symmetric: bool = True,
                 device=None, dtype: torch.dtype = torch.float32, scratch: Optional[CastScratch] = None):
        super().__init__()
        if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 2 or group_size % 2:
            raise ValueError(f"group_size must be an even int >= 2, got {group_size!r}")
        if in_features % group_size:
            raise ValueError(f"in_features {in_features} is not a multiple of group_size {group_size}")
        self.in_features, self.out_features = in_features, out_features
        self.group_size, self.symmetric = group_size, bool(symmetric)
        self.layout: Optional[int4pack.KernelLayout] = None
        self.register_buffer("qweight", torch.empty(out_features, in_features // 2, dtype=torch.uint8, device=device))
        self.register_buffer("scales_and_zeros", torch.empty(in_features // group_size, out_features, 2,
                                                             dtype=dtype, device=device))
        self.scratch = scratch if scratch is not None else CastScratch()

    @classmethod
    def from_linear(cls, linear: nn.Linear, group_size: int = 32, symmetric: bool = True) -> "Int4Linear":
        """Quantize an ``nn.Linear`` (no bias); one on the meta device gives an empty layer on meta."""
        if linear.bias is not None:
            raise ValueError("Int4Linear has no bias; Mistral's linear layers have none")
        layer = cls(linear.in_features, linear.out_features, group_size, symmetric, device="meta",
                    dtype=linear.weight.dtype)
        if not linear.weight.is_meta:
            layer.set_weight(linear.weight.detach())
        return layer

    @torch.no_grad()
    def set_weight(self, weight: torch.Tensor, dtype: Optional[torch.dtype] = None) -> None:
        """Quantize ``weight`` (out, in) on its device; scales and zeros in ``dtype`` (default: as before)."""
        self.check_shape(weight)
        q, sz = quantize_int4(weight, self.group_size, self.symmetric, dtype or self.scales_and_zeros.dtype)
        self.set_quantized(q, sz)

    def set_quantized(self, q: torch.Tensor, scales_and_zeros: torch.Tensor) -> None:
        """Hold integers ``q`` (out, in) in 0..15 and their (in/group, out, 2) scales and zeros (e.g. from
        GPTQ), packed for the kernel where it can run."""
        n, k = self.out_features, self.in_features
        if tuple(q.shape) != (n, k) or tuple(scales_and_zeros.shape) != (k // self.group_size, n, 2):
            raise ValueError(f"int4 values of shape {tuple(q.shape)} with scales {tuple(scales_and_zeros.shape)} do "
                             f"not fit an Int4Linear ({n}, {k}) with group_size {self.group_size}")
        if int4pack.kernel_fits(n, k, self.group_size, q.device):
            self._buffers["qweight"], self.layout = int4pack.pack_for_kernel(q), int4pack.kernel_layout()
        else:
            self._buffers["qweight"], self.layout = int4pack.pack_nibbles(q), None
        self._buffers["scales_and_zeros"] = scales_and_zeros.contiguous()

    def int_weight(self) -> torch.Tensor:
        """The (out, in) uint8 integers in 0..15, from whichever layout ``qweight`` is in."""
        if self.layout is None:
            return int4pack.unpack_nibbles(self.qweight)
        return int4pack.unpack(self.qweight, self.out_features, self.in_features, self.layout)

    def float_weight(self, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        dtype = dtype or self.scales_and_zeros.dtype
        if self.qweight.is_meta:
            return torch.empty(self.out_features, self.in_features, dtype=dtype, device="meta")
        return dequantize_int4(self.int_weight(), self.scales_and_zeros, self.group_size, dtype)

    # state_dict holds the portable nibbles; loading one packs again for this machine.
    def _save_to_state_dict(self, destination, prefix, keep_vars):
        portable = self.qweight.is_meta or self.layout is None
        destination[prefix + "qweight"] = self.qweight if portable else int4pack.pack_nibbles(self.int_weight())
        destination[prefix + "scales_and_zeros"] = self.scales_and_zeros

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        keys = [prefix + "qweight", prefix + "scales_and_zeros"]
        if all(k in state_dict for k in keys):
            self.set_quantized(int4pack.unpack_nibbles(state_dict[keys[0]]), state_dict[keys[1]])
        elif strict:
            missing_keys.extend(k for k in keys if k not in state_dict)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) -> (..., out)
        rows = x.numel() // self.in_features
        x2 = x.reshape(rows, self.in_features)
        if int4_kernel_used(self, x, rows):
            sz = self.scales_and_zeros if self.scales_and_zeros.dtype == x.dtype else self.scales_and_zeros.to(x.dtype)
            y = torch.ops.aten._weight_int4pack_mm_for_cpu(x2.contiguous(), self.qweight, self.group_size, sz)
        else:
            y = self._dequantized_matmul(x2)
        return y.view(*x.shape[:-1], self.out_features)

    def _dequantized_matmul(self, x: torch.Tensor) -> torch.Tensor:
        """(rows, in) @ the dequantized weight, plus the zero offsets' term (on the small output)."""
        n, k, g = self.out_features, self.in_features, self.group_size
        sz = self.scales_and_zeros
        if self.layout is not None and x.device.type == "cpu" and not x.requires_grad:
            compute = dequantize_dtype(x.dtype)
            wt = self.scratch.empty((k, n), compute)                                      # (in, out)
            int4pack.dequantize_packed_t(self.qweight, sz[..., 0], n, k, g, self.layout, wt)
            y = (x.to(compute) @ wt).to(x.dtype)                                          # (rows, in) @ (in, out)
        else:
            w = (self.int_weight().to(x.dtype).view(n, k // g, g) - 8) * sz[..., 0].T.to(x.dtype)[:, :, None]
            y = F.linear(x, w.view(n, k))
        if not self.symmetric:
            y = y + x.view(-1, k // g, g).sum(dim=2) @ sz[..., 1].to(x.dtype)             # (rows, groups) @ (groups, out)
        return y

    def extra_repr(self) -> str:
        kind = "symmetric" if self.symmetric else "zero point"
        where = "int4pack" if self.layout is not None else "nibbles"
        return (f"in_features={self.in_features}, out_features={self.out_features}, int4 group {self.group_size} "
                f"{kind}, {where}, scales={self.scales_and_zeros.dtype}")


def quantize_model_int4(model: nn.Module, group_size: int = 32, symmetric: bool = True,
                        skip: Iterable[str] = DEFAULT_SKIP) -> nn.Module:
    """Replace every ``nn.Linear`` of ``model`` (except those named in ``skip``: the output head by
    default) by an ``Int4Linear``, in place: on meta the structure only (``load_model`` fills it), else
    quantizing where the weights are. All the new layers share one scratch. Returns ``model``."""
    scratch = CastScratch()

    def make(linear):
        layer = Int4Linear.from_linear(linear, group_size, symmetric)
        layer.scratch = scratch
        return layer

    return replace_linears(model, make, skip)
