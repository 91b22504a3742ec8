"""LoRA (Hu et al. 2021): low-rank adapters beside frozen linear layers.

A linear layer computes ``y = x W^T`` with ``W`` of shape (out, in). LoRA freezes ``W`` and learns a
correction of rank ``r``, kept as two small matrices::

    y = x W^T + (alpha / r) * x A^T B^T          A: (r, in), B: (out, r)

so the layer behaves as if its weight were ``W + (alpha / r) B A``. ``A`` starts as ``nn.Linear``'s own
initialisation (Kaiming-uniform with a = sqrt(5)) and ``B`` at zero, so training starts from exactly
the base model. Dropout, when asked for, applies to the adapter's input only. This is peft's
``LoraLayer`` (``peft/tuners/lora/layer.py``: ``update_layer``, ``reset_lora_parameters`` and
``Linear.forward``), down to the order of the operations and of the random draws, so the same seed
gives the same adapters and the same logits (``tests/test_lora.py``).

Each adapter adds ``r * (in + out)`` parameters, against ``in * out`` for the full matrix: for
Mistral 7B's wq (4096 x 4096) at r = 8, 65,536 instead of 16.8 M. The frozen base can hold its weight
in any format of ``speed/formats.py`` (a float ``nn.Linear``, an ``Int8Linear``...): a 7B with int8
weights and adapters in float32 is how it fits a 16 GB GPU. Its gradient with respect to the input is
computed from the stored format in the backward pass (``FrozenLinear``), so no float copy of a
quantized weight is kept between the forward and the backward.

Adapters are saved and loaded in peft's files (``checkpoint/adapters.py``): ``save_adapter``,
``load_adapter``.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass
from typing import Iterator, Optional

import torch
from torch import nn

__all__ = ["TARGETS", "LoRAConfig", "LoRALinear", "apply_lora", "lora_layers", "merge_lora", "unmerge_lora",
           "unload_lora", "adapters_disabled", "save_adapter", "load_adapter", "merged_weight"]

# The linear layers of a block that can carry an adapter, and the module that holds each.
TARGETS = {"wq": "attention", "wk": "attention", "wv": "attention", "wo": "attention",
           "w1": "feed_forward", "w2": "feed_forward", "w3": "feed_forward"}
# The order in which peft meets them in transformers' MistralDecoderLayer (q k v o, then gate up down):
# the adapters' random draws follow it, so one seed gives both libraries the same A matrices.
DRAW_ORDER = ("wq", "wk", "wv", "wo", "w1", "w3", "w2")


@dataclass(frozen=True)
class LoRAConfig:
    """What ``apply_lora`` was asked for (kept on the model as ``model.lora_config``)."""
    r: int = 8
    alpha: float = 16
    targets: tuple = ("wq", "wv")
    dropout: float = 0.0

    @property
    def scaling(self) -> float:
        return self.alpha / self.r

    def to_dict(self) -> dict:
        d = asdict(self)
        d["targets"] = list(self.targets)
        return d


def check_config(r, alpha, targets, dropout) -> LoRAConfig:
    """A ``LoRAConfig``, or ValueError/TypeError naming the bad argument."""
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise ValueError(f"apply_lora: r (the rank) must be an int >= 1, got {r!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"apply_lora: alpha must be a number > 0, got {alpha!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ValueError(f"apply_lora: dropout must be a probability in [0, 1), got {dropout!r}")
    if isinstance(targets, str):
        raise TypeError(f"apply_lora: targets must be a tuple of layer names, e.g. ({targets!r},), not a string")
    targets = tuple(targets)
    unknown = [t for t in targets if t not in TARGETS]
    if unknown or not targets or len(set(targets)) != len(targets):
        what = f"unknown target {unknown[0]!r}" if unknown else "no target" if not targets else "a target twice"
        raise ValueError(f"apply_lora: {what} in {targets!r}; the linear layers of a block are "
                         f"{', '.join(TARGETS)} (Hugging Face: q_proj k_proj v_proj o_proj gate_proj down_proj up_proj)")
    return LoRAConfig(r, alpha, tuple(t for t in TARGETS if t in targets), float(dropout))


class FrozenLinear(torch.autograd.Function):
    """``base(x)`` for a frozen layer in a weight format of its own (int8, packed): the backward pass
    returns ``grad_x = grad_y W`` with ``W`` rebuilt from the stored format, so autograd keeps only
    the layer, not a float copy of its weight, between the forward and the backward."""

    @staticmethod
    def forward(ctx, x, base):
        ctx.base = base
        with torch.no_grad():
            return base(x)

    @staticmethod
    def backward(ctx, grad_y):
        w = ctx.base.float_weight(grad_y.dtype)                     # (out, in)
        return grad_y @ w, None                                     # (..., out) @ (out, in) -> (..., in)


class LoRALinear(nn.Module):
    """A frozen linear layer ``base`` (out, in) with a trainable adapter ``lora_B(lora_A(x)) * scaling``.

    ``lora_A``: ``nn.Linear(in, r)``, ``lora_B``: ``nn.Linear(r, out)``, float32 on the base's device.
    ``merged``: the adapter is folded into the base weight (float bases only); ``disabled``: the layer
    computes the base alone.
    """

    def __init__(self, base: nn.Module, r: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        self.base = base
        self.in_features, self.out_features = base.in_features, base.out_features
        self.r, self.alpha, self.scaling = r, alpha, alpha / r
        device = next(iter(base.buffers() if _is_format(base) else base.parameters())).device
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.lora_A = nn.Linear(self.in_features, r, bias=False)          # drawn on the CPU, as peft does
        self.lora_B = nn.Linear(r, self.out_features, bias=False)
        self.reset_parameters()
        self.to(device)
        self.merged = self.disabled = False

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """peft's initialisation: A as ``nn.Linear``'s default, B zero (the adapter starts at 0)."""
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    def base_forward(self, x: torch.Tensor) -> torch.Tensor:
        if _is_format(self.base) and torch.is_grad_enabled() and x.requires_grad:
            return FrozenLinear.apply(x, self.base)
        return self.base(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:    # (..., in) -> (..., out)
        result = self.base_forward(x)
        if self.merged or self.disabled:
            return result
        a = x.to(self.lora_A.weight.dtype)                   # as peft: the adapter runs in its own dtype
        return (result + self.lora_B(self.lora_A(self.dropout(a))) * self.scaling).to(result.dtype)

    def delta_weight(self) -> torch.Tensor:
        """The (out, in) update ``scaling * B A`` the adapter adds to the base weight."""
        return (self.lora_B.weight @ self.lora_A.weight) * self.scaling

    @torch.no_grad()
    def merge(self, sign: int = 1) -> None:
        if _is_format(self.base):
            raise ValueError(f"cannot merge an adapter into a {type(self.base).__name__}: re-quantizing would "
                             "round the update away; keep it unmerged, or load float weights and merge there")
        w = self.base.weight
        w += (sign * self.delta_weight()).to(w.dtype)
        self.merged = sign > 0

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha}, merged={self.merged}"


def _is_format(module: nn.Module) -> bool:
    from .speed.formats import LinearFormat    # a wing: imported when needed, not by the model's modules

    return isinstance(module, LinearFormat)


def _check_base(name: str, base: nn.Module) -> None:
    if isinstance(base, LoRALinear):
        raise ValueError(f"{name} already carries a LoRA adapter: apply_lora was called twice "
                         "(merge or unload the first adapter with merge_lora / unload_lora)")
    if type(base) is nn.Linear:
        if base.bias is not None:
            raise ValueError(f"{name} has a bias; Mistral's linear layers have none")
        if base.weight.is_meta:
            raise ValueError(f"{name} is on the meta device: load the weights before adding adapters")
        return
    if not _is_format(base):
        raise TypeError(f"{name} is a {type(base).__name__}, not an nn.Linear or a weight format of "
                        "mistral_nb.speed.formats; LoRA cannot wrap it")


def lora_layers(model: nn.Module) -> Iterator[tuple[str, LoRALinear]]:
    """(name, layer) of every ``LoRALinear`` of ``model``, in module order."""
    for name, mod in model.named_modules():
        if isinstance(mod, LoRALinear):
            yield name, mod


def apply_lora(model: nn.Module, r: int = 8, alpha: float = 16, targets=("wq", "wv"),
               dropout: float = 0.0) -> nn.Module:
    """Freeze every parameter of ``model`` (a ``Transformer``) and put a rank-``r`` adapter beside
    each ``targets`` layer of every block, in place; returns ``model``.

    targets: names among wq wk wv wo (attention) and w1 w2 w3 (feed-forward). The scaling is
    ``alpha / r``; ``dropout`` is applied to the adapters' input while training. Adapters are drawn
    from the global RNG in module order, as peft draws them (seed with ``torch.manual_seed``).
    """
    config = check_config(r, alpha, targets, dropout)
    if not hasattr(model, "layers") or not hasattr(model, "args"):
        raise TypeError(f"apply_lora expects a mistral_nb Transformer, got {type(model).__name__}")
    if getattr(model, "lora_config", None) is not None or any(True for _ in lora_layers(model)):
        raise ValueError("apply_lora was already applied to this model: it carries adapters "
                         f"({model.lora_config}); merge or unload them first (unload_lora)")
    for i, layer in enumerate(model.layers):
        for t in config.targets:
            _check_base(f"layers.{i}.{TARGETS[t]}.{t}", getattr(getattr(layer, TARGETS[t]), t))
    for p in model.parameters():
        p.requires_grad_(False)
    for layer in model.layers:
        for t in (t for t in DRAW_ORDER if t in config.targets):
            parent = getattr(layer, TARGETS[t])
            # peft builds nn.Linear(in, r) and nn.Linear(r, out) (each draws its default init), then
            # draws A again: LoRALinear does the same, in the same order of layers.
            setattr(parent, t, LoRALinear(getattr(parent, t), config.r, config.alpha, config.dropout))
    model.lora_config = config
    return model


def _layers_or_error(model: nn.Module, what: str) -> list[LoRALinear]:
    layers = [m for _, m in lora_layers(model)]
    if not layers:
        raise ValueError(f"{what}: the model has no LoRA adapters (call apply_lora or load_adapter first)")
    return layers


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight (W += scaling * B A): same logits, no extra matmul."""
    for layer in _layers_or_error(model, "merge_lora"):
        if layer.merged:
            raise ValueError("merge_lora: the adapters are already merged")
        layer.merge(+1)
    return model


def unmerge_lora(model: nn.Module) -> nn.Module:
    """Undo ``merge_lora`` (W -= scaling * B A; equal to the original weight up to float rounding)."""
    for layer in _layers_or_error(model, "unmerge_lora"):
        if not layer.merged:
            raise ValueError("unmerge_lora: the adapters are not merged")
        layer.merge(-1)
    return model


def unload_lora(model: nn.Module, merge: bool = True) -> nn.Module:
    """Replace every ``LoRALinear`` by its base layer, the adapter merged in first (``merge=True``,
    float bases) or dropped; the base parameters stay frozen. Returns ``model``, ready for a new
    ``apply_lora`` (peft's ``merge_and_unload`` / ``unload``)."""
    for name, layer in list(lora_layers(model)):
        if merge and not layer.merged:
            layer.merge(+1)
        parent_name, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(parent_name), leaf, layer.base)
    model.lora_config = None
    return model


@contextlib.contextmanager
def adapters_disabled(model: nn.Module):
    """Within the block, every adapter is switched off and the model computes its base (the reference
    model of DPO, without a second copy of the weights)."""
    layers = _layers_or_error(model, "adapters_disabled")
    if any(layer.merged for layer in layers):
        raise ValueError("adapters_disabled: the adapters are merged into the weights; unmerge_lora first")
    for layer in layers:
        layer.disabled = True
    try:
        yield model
    finally:
        for layer in layers:
            layer.disabled = False


def save_adapter(model: nn.Module, path, base_model_name_or_path: Optional[str] = None):
    """Write the adapters in peft's layout: ``adapter_config.json`` + ``adapter_model.safetensors``
    with transformers' module names (see ``checkpoint/adapters.py``). Returns the directory."""
    from .checkpoint.adapters import write_adapter

    return write_adapter(model, path, base_model_name_or_path)


def load_adapter(model: nn.Module, path) -> nn.Module:
    """Read an adapter directory in peft's layout (written by ``save_adapter`` or by peft) into
    ``model``: adapters are added as the file's config says (or must match those already there)."""
    from .checkpoint.adapters import read_adapter

    return read_adapter(model, path)


def merged_weight(layer: LoRALinear) -> torch.Tensor:
    """The float32 (out, in) matrix the layer multiplies by, ``W + scaling B A`` (for tests and the book)."""
    from .speed.formats import linear_weight

    return linear_weight(layer.base, torch.float32) + layer.delta_weight().float()
