"""GPTQ: int4 rounding that compensates each weight's error with the weights not yet rounded.

Rounding every weight to its nearest level (``int4.quantize_int4``) minimises each weight's error,
not the layer's: what matters is the error of the outputs ``x W^T`` over the inputs the layer
actually sees. GPTQ (Frantar et al., 2022, arXiv:2210.17323) rounds the columns of ``W`` one at a
time and, after each, spreads that column's rounding error over the columns still to come, weighted
by how the inputs correlate. With ``H = X^T X`` over calibration inputs ``X`` (tokens, in) and
``U`` the upper Cholesky factor of ``H^-1``, column ``j`` is rounded and then::

    err = (w_j - round(w_j)) / U[j, j];      w_k -= err * U[j, k]   for every k > j

which is the optimal update of the remaining weights for that column's error (the Optimal Brain
Surgeon step), done lazily in blocks of 128 columns. Group scales and zeros are taken from the
already-updated weights when each group starts, as the reference implementation does by default.

``quantize_model_gptq`` calibrates block by block: the inputs of block ``l``'s linear layers are
recorded with blocks ``0 .. l-1`` already quantized, so each block corrects the error of the earlier ones.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from .formats import check_skip
from .int4 import Int4Linear, group_params, round_to_grid

__all__ = ["gptq_quantize", "quantize_model_gptq"]


def _inverse_cholesky(h: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor of (H + damp * mean(diag H) * I)^-1 (float64 for stability)."""
    h = h.double().clone()
    h += damp * torch.diag(h).mean() * torch.eye(h.shape[0], dtype=h.dtype)
    inv = torch.cholesky_inverse(torch.linalg.cholesky(h))
    return torch.linalg.cholesky(inv, upper=True).float()


@torch.no_grad()
def gptq_quantize(weight: torch.Tensor, hessian: torch.Tensor, group_size: int = 32, symmetric: bool = True,
                  dtype: torch.dtype = torch.float32, damp: float = 0.01,
                  block: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """GPTQ-round ``weight`` (N, K) given ``hessian`` = X^T X (K, K) -> (q uint8 (N, K), (K/g, N, 2)),
    the same outputs as ``int4.quantize_int4``. ``block`` must be a multiple of ``group_size``."""
    n, k = weight.shape
    if tuple(hessian.shape) != (k, k):
        raise ValueError(f"hessian of shape {tuple(hessian.shape)} does not fit a weight with {k} columns")
    if k % group_size or block % group_size:
        raise ValueError(f"group_size {group_size} must divide in_features {k} and block {block}")
    w = weight.detach().float().clone()
    h = hessian.detach().float().clone()
    dead = torch.diag(h) == 0                               # inputs that were always zero: any weight works
    h[dead, dead] = 1
    w[:, dead] = 0
    u = _inverse_cholesky(h, damp)
    q = torch.empty(n, k, dtype=torch.uint8)
    sz = torch.empty(k // group_size, n, 2, dtype=dtype)
    for b0 in range(0, k, block):
        b1 = min(b0 + block, k)
        wb, err = w[:, b0:b1].clone(), torch.zeros(n, b1 - b0)
        for i in range(b1 - b0):
            col = b0 + i
            if col % group_size == 0:
                scale, zero = group_params(wb[:, i:i + group_size].view(n, 1, group_size), symmetric, dtype)
                sz[col // group_size, :, 0], sz[col // group_size, :, 1] = scale[:, 0], zero[:, 0]
            g = col // group_size
            s, z = sz[g, :, 0], sz[g, :, 1]
            qi = round_to_grid(wb[:, i].view(n, 1, 1), s.view(n, 1), z.view(n, 1)).view(n)
            q[:, col] = qi
            rounded = (qi.float() - 8) * s.float() + z.float()
            e = (wb[:, i] - rounded) / u[col, col]
            wb[:, i:] -= e[:, None] * u[col, col:b1][None, :]
            err[:, i] = e
        w[:, b1:] -= err @ u[b0:b1, b1:]
    return q, sz


class _Stop(Exception):
    pass


def _skipped(name: str, skip: tuple) -> bool:
    return any(name == s or name.startswith(s + ".") for s in skip)


def _block_hessians(model: nn.Module, block: nn.Module, names: list, tokens: torch.Tensor,
                    batch_size: int) -> dict:
    """{linear name: X^T X} of the inputs each named linear of ``block`` receives on ``tokens``."""
    hess: dict = {}

    def record(name):
        def hook(_module, args):
            x = args[0].detach().float().reshape(-1, args[0].shape[-1])
            hess[name] = hess.get(name, 0) + x.T @ x
        return hook

    def stop(_module, _args, _out):
        raise _Stop

    handles = [block.get_submodule(n).register_forward_pre_hook(record(n)) for n in names]
    handles.append(block.register_forward_hook(stop))
    try:
        for b0 in range(0, tokens.shape[0], batch_size):
            try:
                model(tokens[b0:b0 + batch_size])
            except _Stop:
                pass
    finally:
        for h in handles:
            h.remove()
    return hess


@torch.no_grad()
def quantize_model_gptq(model: nn.Module, calibration: torch.Tensor, group_size: int = 32, symmetric: bool = True,
                        skip: Iterable[str] = ("output",), batch_size: int = 8, damp: float = 0.01) -> nn.Module:
    """Quantize ``model``'s linear layers to int4 in place with GPTQ, calibrated on ``calibration``
    token ids (B, S); block by block, then the output head unless ``skip`` names it. Returns ``model``."""
    skip = check_skip(skip)
    if calibration.dim() != 2:
        raise ValueError(f"calibration must be token ids (batch, seq), got shape {tuple(calibration.shape)}")
    model.eval()
    dtype = next(model.parameters()).dtype
    targets = [(f"layers.{i}", layer) for i, layer in enumerate(model.layers)]
    if "output" not in skip:
        targets.append(("", model))
    for prefix, block in targets:
        names = ["output"] if block is model else [n for n, m in block.named_modules() if type(m) is nn.Linear]
        names = [n for n in names if not _skipped(f"{prefix}.{n}".strip("."), skip)]
        if block is model:
            hess = _head_hessian(model, calibration, batch_size)
        else:
            hess = _block_hessians(model, block, names, calibration, batch_size)
        for name in names:
            linear = block.get_submodule(name)
            q, sz = gptq_quantize(linear.weight, hess[name], group_size, symmetric, dtype, damp)
            layer = Int4Linear(linear.in_features, linear.out_features, group_size, symmetric, dtype=dtype)
            layer.set_quantized(q, sz)
            parent, _, leaf = name.rpartition(".")
            setattr(block.get_submodule(parent) if parent else block, leaf, layer)
    _share_scratch(model)
    return model


def _head_hessian(model: nn.Module, tokens: torch.Tensor, batch_size: int) -> dict:
    hess: dict = {}

    def hook(_module, args):
        x = args[0].detach().float().reshape(-1, args[0].shape[-1])
        hess["output"] = hess.get("output", 0) + x.T @ x

    handle = model.output.register_forward_pre_hook(hook)
    try:
        for b0 in range(0, tokens.shape[0], batch_size):
            model(tokens[b0:b0 + batch_size])
    finally:
        handle.remove()
    return hess


def _share_scratch(model: nn.Module) -> None:
    """One dequantization buffer for all the int4 layers (they run one after another)."""
    layers = [m for m in model.modules() if isinstance(m, Int4Linear)]
    for m in layers:
        m.scratch = layers[0].scratch
