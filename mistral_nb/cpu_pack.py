"""bf16 linear layers packed once for the CPU's oneDNN matrix kernel (a faster bf16 decode on a CPU).

A bf16 ``nn.Linear`` on a CPU multiplies through ``aten::mm``, which hands oneDNN the weight in its
plain row-major layout on every call. oneDNN's own blocked layout streams faster: on this book's
2-core CPU, Mistral 7B in bf16 decodes 1.58 times as fast packed (``benchmarks/cpu_7b.py``). PyTorch
exposes the packing it uses for compiled CPU graphs as two operators, which this module calls:

* ``torch.ops.mkldnn._reorder_linear_weight(weight, batch_size)``: the weight, rearranged once into
  oneDNN's blocked layout (same shape and dtype, but the bytes are no longer row-major);
* ``torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")``: ``x @ weight.T`` from it.

The packed tensor is an opaque oneDNN tensor (``layout=torch._mkldnn``), not a weight matrix anymore:
only ``_linear_pointwise`` can read it. So a
``PackedLinear`` keeps it as a non-persistent buffer named ``packed``, and a packed model cannot be
saved (load the checkpoint again without ``pack`` to save or convert it). The products equal a plain
bf16 ``nn.Linear``'s to bf16 rounding (``tests/test_cpu_pack.py``).

    model = load_model(path, dtype=torch.bfloat16, pack=True)     # every linear layer packed as it loads
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn as nn

__all__ = ["PackedLinear", "pack_available", "pack_model", "check_pack"]


def pack_available() -> bool:
    """Whether this PyTorch build and CPU can pack bf16 linear weights (oneDNN with bf16 support)."""
    mkldnn = torch.ops.mkldnn
    try:
        return (torch.backends.mkldnn.is_available() and hasattr(mkldnn, "_reorder_linear_weight")
                and hasattr(mkldnn, "_linear_pointwise") and bool(mkldnn._is_mkldnn_bf16_supported()))
    except (AttributeError, RuntimeError):
        return False


def check_pack(device: torch.device, dtype: torch.dtype, quantize) -> None:
    """Refuse a ``pack=True`` load that cannot be packed, naming the reason (ValueError)."""
    if device.type != "cpu":
        raise ValueError(f"pack=True packs weights for the CPU's matrix kernel; the device is {device}")
    if dtype != torch.bfloat16:
        raise ValueError(f"pack=True needs dtype=torch.bfloat16, got {dtype}")
    if quantize is not None:
        raise ValueError(f"pack=True and quantize={quantize!r} cannot be combined (int8 layers have their own kernel)")
    if not pack_available():
        raise ValueError("pack=True: this PyTorch build or CPU has no oneDNN bf16 linear kernel "
                         "(torch.backends.mkldnn / torch.ops.mkldnn._is_mkldnn_bf16_supported())")


class PackedLinear(nn.Module):
    """A bias-free bf16 linear layer whose weight lives packed in oneDNN's layout. (..., in) -> (..., out)."""

    def __init__(self, in_features: int, out_features: int, device=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("packed", torch.empty(out_features, in_features, dtype=torch.bfloat16, device=device),
                             persistent=False)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "PackedLinear":
        """The same layer, packed (on the meta device: only the structure, to be filled by ``set_weight``)."""
        if linear.bias is not None:
            raise ValueError("PackedLinear has no bias; Mistral's linear layers have none")
        layer = cls(linear.in_features, linear.out_features, device="meta")
        if not linear.weight.is_meta:
            layer.set_weight(linear.weight.detach())
        return layer

    def set_weight(self, weight: torch.Tensor) -> None:
        """Pack ``weight`` (out, in), a CPU tensor; it is converted to bf16 first."""
        if tuple(weight.shape) != (self.out_features, self.in_features):
            raise ValueError(f"weight of shape {tuple(weight.shape)} does not fit a PackedLinear "
                             f"({self.out_features}, {self.in_features})")
        if weight.device.type != "cpu":
            raise ValueError(f"PackedLinear packs CPU weights; this one is on {weight.device}")
        w = weight.to(torch.bfloat16).contiguous()
        if weight.dtype != torch.bfloat16 and not bool(torch.isfinite(w).all()) and bool(torch.isfinite(weight).all()):
            raise ValueError(f"values of magnitude up to {float(weight.abs().max()):.4g} become inf in bfloat16")
        self._buffers["packed"] = torch.ops.mkldnn._reorder_linear_weight(w, 1)    # 1: tuned for decoding

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) -> (..., out)
        if x.dtype != torch.bfloat16:
            raise TypeError(f"PackedLinear multiplies bf16 activations, got {x.dtype}")
        rows = x.numel() // self.in_features
        y = torch.ops.mkldnn._linear_pointwise(x.reshape(rows, self.in_features), self.packed, None, "none", [], "")
        return y.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bf16 packed for oneDNN"


def pack_model(model: nn.Module, skip: Iterable[str] = ()) -> nn.Module:
    """Replace every ``nn.Linear`` of ``model`` (except those named in ``skip``) by a ``PackedLinear``, in
    place: on the meta device the structure only (``load_model`` then fills it tensor by tensor),
    otherwise packing the weights. Returns ``model``."""
    from .quant import replace_linears

    return replace_linears(model, PackedLinear.from_linear, skip)
