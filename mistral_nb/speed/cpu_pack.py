"""bf16 linear layers packed once for the CPU's oneDNN matrix kernel (a faster bf16 decode on a CPU).

A bf16 ``nn.Linear`` on a CPU multiplies through ``aten::mm``, which hands oneDNN the weight in its
plain row-major layout on every call. oneDNN's own blocked layout streams faster: on this book's
2-core CPU, Mistral 7B in bf16 decodes 1.58 times as fast packed (``benchmarks/cpu_7b.py``). PyTorch
exposes the packing it uses for compiled CPU graphs as two operators, which this module calls:

* ``torch.ops.mkldnn._reorder_linear_weight(weight, batch_size)``: the weight, rearranged once into
  oneDNN's blocked layout (same shape and dtype, but the bytes are no longer row-major);
* ``torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")``: ``x @ weight.T`` from it.

The packed tensor is an opaque oneDNN tensor (``layout=torch._mkldnn``), not a weight matrix anymore:
only ``_linear_pointwise`` can read it, and ``to_dense()`` turns it back into the plain matrix,
bit for bit. So a ``PackedLinear`` keeps it as a non-persistent buffer named ``packed`` and gives the
plain matrix wherever one is asked for: its ``state_dict`` holds ``weight`` (bf16), a copy of the
model packs again, and ``save_checkpoint`` writes the plain weights. The products equal a plain
bf16 ``nn.Linear``'s to bf16 rounding (``tests/test_cpu_pack.py``).

    model = load_model(path, dtype=torch.bfloat16, pack=True)     # every linear layer packed as it loads
"""

from __future__ import annotations

from typing import Iterable, Optional

import torch
import torch.nn as nn

from .formats import LinearFormat, replace_linears

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


class PackedLinear(LinearFormat):
    """A bias-free bf16 linear layer whose weight lives packed in oneDNN's layout. (..., in) -> (..., out)."""

    def __init__(self, in_features: int, out_features: int, device=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("packed", torch.empty(out_features, in_features, dtype=torch.bfloat16, device=device),
                             persistent=False)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "PackedLinear":
        """The same layer, packed (on the meta device: only the structure, to be filled by ``set_weight``)."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"PackedLinear.from_linear expects an nn.Linear, got {type(linear).__name__}")
        if linear.bias is not None:
            raise ValueError("PackedLinear has no bias; Mistral's linear layers have none")
        layer = cls(linear.in_features, linear.out_features, device="meta")
        if not linear.weight.is_meta:
            layer.set_weight(linear.weight.detach())
        return layer

    def set_weight(self, weight: torch.Tensor, dtype: Optional[torch.dtype] = None) -> None:
        """Pack ``weight`` (out, in), a CPU tensor; it is converted to bf16 first (``dtype`` must be
        None or bfloat16: packing is for bf16 weights)."""
        self.check_shape(weight)
        if dtype not in (None, torch.bfloat16):
            raise ValueError(f"PackedLinear holds bfloat16 weights, not {dtype}")
        if weight.device.type != "cpu":
            raise ValueError(f"PackedLinear packs CPU weights; this one is on {weight.device}")
        w = weight.to(torch.bfloat16).contiguous()
        if weight.dtype != torch.bfloat16 and not bool(torch.isfinite(w).all()) and bool(torch.isfinite(weight).all()):
            raise ValueError(f"values of magnitude up to {float(weight.abs().max()):.4g} become inf in bfloat16")
        self._buffers["packed"] = torch.ops.mkldnn._reorder_linear_weight(w, 1)    # 1: tuned for decoding

    def float_weight(self, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """The plain (out, in) bf16 matrix, unpacked (``to_dense``), in ``dtype`` if given."""
        if self.packed.is_meta:
            return torch.empty(self.out_features, self.in_features, dtype=dtype or torch.bfloat16, device="meta")
        w = self.packed.to_dense()
        return w if dtype is None else w.to(dtype)

    # The packed buffer is opaque: state_dict, load_state_dict and deepcopy go through the plain matrix.
    def _save_to_state_dict(self, destination, prefix, keep_vars):
        destination[prefix + "weight"] = self.float_weight()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        key = prefix + "weight"
        if key in state_dict:
            self.set_weight(state_dict[key])
        elif strict:
            missing_keys.append(key)

    def __deepcopy__(self, memo):
        copy = PackedLinear(self.in_features, self.out_features, device="meta")
        if not self.packed.is_meta:
            copy.set_weight(self.float_weight())
        copy.training = self.training
        memo[id(self)] = copy
        return copy

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
    return replace_linears(model, PackedLinear.from_linear, skip)
