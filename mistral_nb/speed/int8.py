"""Int8 weight-only quantization of the linear layers, one scale per output channel.

A linear layer computes ``y = x W^T`` with ``W`` of shape (out, in). Row ``o`` of ``W`` produces output
channel ``o``. Weight-only int8 stores each row as 8-bit integers ``q`` and one scale ``s``::

    s[o] = max_i |W[o, i]| / 127                 (symmetric: 0 stays exactly 0, no zero point)
    q[o, i] = round(W[o, i] / s[o])  in [-127, 127]
    W[o, i] ~= q[o, i] * s[o]                    (error at most s[o] / 2 per weight)

and, because the scale belongs to an output channel, it can be applied *after* the matmul::

    y[:, o] = sum_i x[:, i] q[o, i] s[o] = (x q^T)[:, o] * s[o]

Activations stay in floating point (float16/bfloat16/float32); only the weights shrink, from 2 bytes
to 1 per parameter (plus one scale per row). Decoding one token at a time is memory-bound: its time
is the time to read the weights, so half the bytes can mean twice the tokens per second — if the
matmul reads the int8 bytes directly. ``Int8Linear.forward`` therefore has two paths:

* a few rows (decoding) on the CPU: ``torch._weight_int8pack_mm``, PyTorch's weight-only int8 kernel,
  which reads the int8 matrix and applies the scales inside (no float copy of the weights);
* many rows (prefill), or a device without that kernel: cast the int8 matrix to the activations'
  dtype, multiply, scale the outputs. The cast goes into one reused buffer (a fresh 117 MB tensor per
  call would cost more in page faults than the cast itself), and its cost is shared by all the rows
  (on a GPU, ``torch.compile`` fuses the cast into the matmul).

How many rows still favour the int8 kernel depends on the dtype: ``INT8_KERNEL_MAX_ROWS``, measured
by ``benchmarks/int8_linear.py``.

Mistral 7B: the 32 blocks' seven linear layers hold 6.98 B of its 7.24 B parameters. Quantizing those
and keeping the embedding and the output head in float16 gives about 7.5 GB instead of 14.5 GB.
"""

from __future__ import annotations

from typing import Iterable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .formats import LinearFormat, replace_linears

__all__ = ["Int8Linear", "quantize_int8", "dequantize_int8", "quantize_model", "DEFAULT_SKIP",
           "INT8_KERNEL_MAX_ROWS", "int8_kernel_used", "int8_kernel_matmul", "cast_matmul", "CastScratch"]

QMAX = 127
# Up to how many rows (tokens) Int8Linear uses torch._weight_int8pack_mm on the CPU, per activation
# dtype; beyond that, cast-and-matmul is faster (measured: benchmarks/int8_linear.py, results/int8_linear.json;
# a test keeps the two equal). With float32 activations the kernel never won; float16 was not measured
# (a CPU runs bfloat16), so it takes the cast path too.
INT8_KERNEL_MAX_ROWS = {torch.bfloat16: 8, torch.float32: 0}
DEFAULT_SKIP = ("output",)   # the output head stays in floating point: it turns the last state into logits


@torch.no_grad()
def quantize_int8(weight: torch.Tensor, chunk_rows: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8. weight (out, in) -> (q int8 (out, in), scale float32 (out,)).

    Works on the weight's device, ``chunk_rows`` rows at a time, so the float32 temporaries stay small
    (a 14336 x 4096 float16 matrix never needs a full float32 copy).
    """
    if weight.dim() != 2:
        raise ValueError(f"quantize_int8 expects a 2-D weight (out, in), got shape {tuple(weight.shape)}")
    if not weight.dtype.is_floating_point:
        raise ValueError(f"quantize_int8 expects a floating-point weight, got {weight.dtype}")
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise ValueError(f"quantize_int8: chunk_rows must be an int >= 1, got {chunk_rows!r}")
    out_features = weight.shape[0]
    q = torch.empty(weight.shape, dtype=torch.int8, device=weight.device)
    scale = torch.ones(out_features, dtype=torch.float32, device=weight.device)
    if weight.shape[1] == 0:                   # rows of no weights: nothing to scale
        return q, scale
    for r0 in range(0, out_features, chunk_rows):
        w = weight[r0:r0 + chunk_rows].float()                                   # (rows, in)
        s = w.abs().amax(dim=1) / QMAX                                           # (rows,)
        if not bool(torch.isfinite(s).all()):            # amax propagates NaN/Inf: one check per chunk
            row = r0 + int((~torch.isfinite(s)).nonzero()[0])
            raise ValueError(f"quantize_int8: row {row} of the weight holds NaN or Inf, which int8 cannot "
                             "represent (the weight is corrupt)")
        s = torch.where(s > 0, s, torch.ones_like(s))                            # an all-zero row: any scale works
        q[r0:r0 + chunk_rows] = torch.round(w / s[:, None]).clamp_(-QMAX, QMAX).to(torch.int8)
        scale[r0:r0 + chunk_rows] = s
    return q, scale


def dequantize_int8(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(out, in) int8 and (out,) scales -> (out, in) weights in ``dtype``."""
    return (q.float() * scale.float()[:, None]).to(dtype)


class Int8Linear(LinearFormat):
    """A bias-free linear layer with int8 weights (out, in) and one scale per output channel (out,).

    ``forward`` multiplies by the int8 matrix cast to the input's dtype, then scales each output column:
    ``F.linear(x, q) * scale``. Both tensors are buffers (not trainable parameters). ``scratch``: where
    the cast goes on the CPU; ``quantize_model`` gives all the layers of one model the same one.
    """

    def __init__(self, in_features: int, out_features: int, device=None, dtype: torch.dtype = torch.float32,
                 scratch: Optional["CastScratch"] = None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight", torch.empty(out_features, in_features, dtype=torch.int8, device=device))
        self.register_buffer("scale", torch.empty(out_features, dtype=dtype, device=device))
        self.scratch = scratch if scratch is not None else CastScratch()

    @classmethod
    def from_weight(cls, weight: torch.Tensor, dtype: Optional[torch.dtype] = None) -> "Int8Linear":
        """Quantize a (out, in) weight; ``dtype`` of the scales (default: the weight's dtype)."""
        if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
            raise ValueError(f"Int8Linear.from_weight expects a 2-D weight (out, in), got "
                             f"{tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__}")
        dtype = dtype or weight.dtype
        layer = cls(weight.shape[1], weight.shape[0], device="meta", dtype=dtype)
        layer.set_weight(weight, dtype)
        return layer

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "Int8Linear":
        """Quantize an ``nn.Linear`` (no bias). A linear on the meta device gives an empty int8 layer on meta."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"Int8Linear.from_linear expects an nn.Linear, got {type(linear).__name__}")
        if linear.bias is not None:
            raise ValueError("Int8Linear has no bias; Mistral's linear layers have none")
        if linear.weight.is_meta:
            return cls(linear.in_features, linear.out_features, device="meta", dtype=linear.weight.dtype)
        return cls.from_weight(linear.weight.detach())

    @torch.no_grad()
    def set_weight(self, weight: torch.Tensor, dtype: Optional[torch.dtype] = None) -> None:
        """Quantize ``weight`` (out, in) into this layer, on the weight's device; scales in ``dtype``."""
        self.check_shape(weight)
        q, scale = quantize_int8(weight)
        self._buffers["weight"] = q
        self._buffers["scale"] = scale.to(dtype or self.scale.dtype)

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The (out, in) weight this layer actually multiplies by."""
        return dequantize_int8(self.weight, self.scale, dtype)

    def float_weight(self, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        return self.dequantize(dtype or self.scale.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) -> (..., out)
        rows = x.numel() // self.in_features
        if int8_kernel_used(x, rows):
            y = int8_kernel_matmul(x.reshape(rows, self.in_features), self.weight, self.scale)   # reads int8
            return y.view(*x.shape[:-1], self.out_features)
        return cast_matmul(x, self.weight, self.scale, self.scratch)           # cast, multiply, scale

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8, scale={self.scale.dtype}"


def int8_kernel_used(x: torch.Tensor, rows: int) -> bool:
    """Whether ``Int8Linear`` multiplies ``rows`` rows of ``x`` with the int8 kernel (CPU, few rows)."""
    return x.device.type == "cpu" and not x.requires_grad and rows <= INT8_KERNEL_MAX_ROWS.get(x.dtype, 0)


def int8_kernel_matmul(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """(rows, in) activations times the int8 (out, in) matrix, scaled per output channel -> (rows, out).

    PyTorch's weight-only int8 kernel: it reads one byte per weight and applies the scales inside.
    """
    return torch._weight_int8pack_mm(x, q, scale.to(x.dtype))


class CastScratch:
    """Reusable CPU buffers, one per dtype, for the cast of int8 matrices before a matmul.

    Casting into a fresh tensor costs about seven times more than casting into memory already mapped
    (a 14336 x 4096 int8 matrix to bf16 here: 39 ms against 5.6 ms), because every page of a new 117 MB
    tensor is first zero-filled by the operating system. One scratch serves all the int8 layers of a
    model (they run one after another), as large as the largest matrix cast so far (117 MB for
    Mistral 7B in bf16). It belongs to the model, not to the process, and its buffers are made
    outside inference mode, so a model used under ``torch.inference_mode`` (as ``generate`` does)
    works unchanged afterwards.
    """

    def __init__(self):
        self.buffers: dict = {}

    def empty(self, shape, dtype: torch.dtype) -> torch.Tensor:
        """A tensor of ``shape`` and ``dtype`` in this scratch (uninitialised). Valid until the next call."""
        numel = 1
        for size in shape:
            numel *= size
        buf = self.buffers.get(dtype)
        if buf is None or buf.numel() < numel:
            with torch.inference_mode(False):
                buf = self.buffers[dtype] = torch.empty(numel, dtype=dtype)
        return buf[:numel].view(*shape)

    def cast(self, q: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """``q`` cast to ``dtype``, written into this scratch. Valid until the next ``cast``."""
        return self.empty(q.shape, dtype).copy_(q)

    def __deepcopy__(self, memo):
        return CastScratch()                      # a copy of a model gets its own (empty) scratch


def cast_matmul(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor,
                scratch: Optional[CastScratch] = None) -> torch.Tensor:
    """(..., in) activations times the int8 matrix cast to their dtype, then the scales -> (..., out).

    On the CPU, without gradients, the cast goes into ``scratch``; otherwise it is a plain cast, which
    autograd can keep for the backward pass and a GPU's caching allocator serves without new pages
    (``torch.compile`` fuses it into the matmul).
    """
    if not x.is_floating_point():
        raise TypeError(f"an int8 layer multiplies floating-point activations, got {x.dtype}")
    use_scratch = scratch is not None and x.device.type == "cpu" and not x.requires_grad
    w = scratch.cast(q, x.dtype) if use_scratch else q.to(x.dtype)
    return F.linear(x, w) * scale.to(x.dtype)


def quantize_model(model, skip: Iterable[str] = DEFAULT_SKIP):
    """Replace every ``nn.Linear`` of ``model`` (except those named in ``skip``) by an ``Int8Linear``, in place.

    On a meta-device model this only changes the structure (the loader then fills it tensor by tensor);
    on a real model it quantizes the weights where they are. All the new layers share one
    ``CastScratch``. Returns ``model``.
    """
    scratch = CastScratch()

    def make(linear):
        layer = Int8Linear.from_linear(linear)
        layer.scratch = scratch
        return layer

    return replace_linears(model, make, skip)
