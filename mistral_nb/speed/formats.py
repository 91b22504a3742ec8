"""The formats a linear layer's weight can be held in, and the one way to switch a model between them.

Every matrix product of the model (wq wk wv wo, w1 w2 w3, the output head) is an ``nn.Linear``
holding a float (out, in) matrix. A faster or smaller layer holds the same matrix in another form
and is a ``LinearFormat``: ``Int8Linear`` (one byte per weight and a scale per row, ``int8.py``),
``PackedLinear`` (bf16 in oneDNN's blocked layout, ``cpu_pack.py``). Each can be filled from a
checkpoint tensor (``set_weight``) and gives back the float matrix it multiplies by (``float_weight``),
so the loader, the writer and the tensor-parallel split need not know which format a layer uses.

``replace_linears`` swaps layers in place. It converts *exactly* ``nn.Linear`` layers: a subclass of
``nn.Linear`` may compute something else in its forward (a collective, a bias rule), which a
converted layer would silently drop, so one is refused with an error naming it.
"""

from __future__ import annotations

from typing import Callable, Iterable, Optional

import torch
from torch import nn


class LinearFormat(nn.Module):
    """Base of the bias-free layers that hold a linear weight (out, in) in a format of their own."""

    in_features: int
    out_features: int

    def set_weight(self, weight: torch.Tensor, dtype: Optional[torch.dtype] = None) -> None:
        """Store the float ``weight`` (out, in) in this format; ``dtype``: of the float parts kept."""
        raise NotImplementedError

    def float_weight(self, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """The (out, in) float matrix this layer multiplies by (for saving, converting, checking)."""
        raise NotImplementedError

    def check_shape(self, weight: torch.Tensor) -> None:
        """ValueError unless ``weight`` is (out_features, in_features)."""
        if tuple(weight.shape) != (self.out_features, self.in_features):
            name = type(self).__name__
            raise ValueError(f"weight of shape {tuple(weight.shape)} does not fit {'an' if name[0] in 'AEIOU' else 'a'} "
                             f"{name} ({self.out_features}, {self.in_features})")


def check_skip(skip) -> tuple:
    """``skip`` as a tuple of module names; a bare string (``skip="output"``) would be read letter by
    letter, so it is refused, as is anything but an iterable of strings."""
    if isinstance(skip, str):
        raise TypeError(f"skip must be a tuple of module names, e.g. ({skip!r},), not the string {skip!r}")
    try:
        names = tuple(skip)
    except TypeError:
        raise TypeError(f"skip must be a tuple of module names, got {type(skip).__name__}") from None
    bad = [s for s in names if not isinstance(s, str)]
    if bad:
        raise TypeError(f"skip must hold module names (str), got {bad[0]!r}")
    return names


def _skipped(name: str, skip: tuple) -> bool:
    return any(name == s or name.startswith(s + ".") for s in skip)


def replace_linears(model: nn.Module, make: Callable[[nn.Linear], nn.Module], skip: Iterable[str] = ()) -> nn.Module:
    """Replace every ``nn.Linear`` of ``model`` (except those named in ``skip``, or inside them) by
    ``make(linear)``, in place; a ValueError from ``make`` is re-raised naming the weight. Returns ``model``.

    Only layers whose type is exactly ``nn.Linear`` are converted; a subclass of it raises TypeError
    naming the layer (its forward may do more than ``x @ W.T``)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a model (an nn.Module) whose linear layers to convert, got {type(model).__name__}")
    if not callable(make):
        raise TypeError(f"make must be a function nn.Linear -> layer, got {type(make).__name__}")
    skip = check_skip(skip)
    targets = []
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.Linear) or _skipped(name, skip):
            continue
        if type(mod) is not nn.Linear:
            raise TypeError(f"{name} is a {type(mod).__name__}, a subclass of nn.Linear whose forward may do "
                            "more than x @ W.T; it cannot be converted to another weight format")
        targets.append((name, mod))
    for name, linear in targets:
        parent_name, _, leaf = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        try:
            new = make(linear)
        except ValueError as e:
            raise ValueError(f"{name}.weight: {e}") from None
        if not isinstance(new, nn.Module):
            raise TypeError(f"{name}: make returned {type(new).__name__!r}, not a layer (an nn.Module)")
        setattr(parent, leaf, new)
    return model


def linear_weight(module: nn.Module, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """The float (out, in) matrix of an ``nn.Linear`` or a ``LinearFormat`` (in ``dtype`` if given)."""
    if isinstance(module, LinearFormat):
        return module.float_weight(dtype)
    w = module.weight.detach()
    return w if dtype is None else w.to(dtype)


def formats_in(model: nn.Module) -> dict:
    """{format name: number of layers} of the model's linear layers ('float' for ``nn.Linear``)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"formats_in expects a model (an nn.Module), got {type(model).__name__}")
    counts: dict = {}
    for mod in model.modules():
        if isinstance(mod, LinearFormat) or type(mod) is nn.Linear:
            key = "float" if type(mod) is nn.Linear else type(mod).__name__
            counts[key] = counts.get(key, 0) + 1
    return counts
