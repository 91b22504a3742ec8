"""Argument checks shared by training and evaluation: counts, token-id tensors, ids to ignore.

Each raises TypeError for a value of the wrong kind and ValueError for one out of range, with a
message that starts with the function the caller called and names the argument, e.g.
``mean_loss: batch_size must be an int in [1, ...], got 0`` or
``UnigramLM.fit: ids hold 40000 at position 7, outside the vocabulary [0, 32000)``. Without them a
bad value surfaces as ``range() arg 3 must not be zero``, ``index out of range in self``, a NaN
mean of nothing, or — worst — a silently wrong number (an id beyond the vocabulary counted into
another id's bin).
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from ..config import ModelArgs
from ..generate import _as_int, _as_real     # the checks generate() gives its own arguments

__all__ = ["as_count", "as_real", "check_id_tensor", "check_ignore_ids", "check_schedule", "check_train_callables",
           "check_batch"]


def as_count(where: str, name: str, value: Any, low: int = 1, high: Optional[int] = None) -> int:
    """``value`` as a Python int in [low, high] (an int, a numpy integer or a 0-d integer tensor; never
    a bool or a float such as 8.0): ``generate``'s own check, with the caller's name in front."""
    return _as_int(f"{where}: {name}", value, low, high)


def as_real(where: str, name: str, value: Any, rule: str, ok) -> float:
    """``value`` as a finite float for which ``ok(value)`` holds; ``rule`` says what that is in words."""
    return _as_real(f"{where}: {name}", value, rule, ok)


def check_ignore_ids(where: str, ignore_ids: Any) -> tuple:
    """A tuple of ints (ids whose targets are not scored), from any iterable of ints."""
    if isinstance(ignore_ids, (str, bytes)) or not hasattr(ignore_ids, "__iter__"):
        raise TypeError(f"{where}: ignore_ids must be a tuple of token ids, e.g. (1,), got {ignore_ids!r}")
    return tuple(as_count(where, "each of ignore_ids", i, low=-(2 ** 63)) for i in ignore_ids)


def check_id_tensor(where: str, name: str, ids: Any, vocab_size: Optional[int], dims: tuple = (1, 2),
                    min_len: int = 1) -> torch.Tensor:
    """An integer tensor of ``dims`` dimensions, at least ``min_len`` long in its last one, whose ids lie
    in [0, vocab_size) (not checked when ``vocab_size`` is None). The first bad id is named with its
    position."""
    if not isinstance(ids, torch.Tensor):
        raise TypeError(f"{where}: {name} must be a torch.Tensor of token ids, got {type(ids).__name__}")
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise TypeError(f"{where}: {name} must hold integer token ids, got dtype {ids.dtype}")
    if ids.dim() not in dims:
        shape = " or ".join(("(N,)", "(n, S)", "(n, ...)")[min(d, 3) - 1] for d in dims)
        raise ValueError(f"{where}: {name} must have shape {shape}, got {tuple(ids.shape)}")
    if ids.is_meta:
        raise ValueError(f"{where}: {name} are on the meta device, which holds no data")
    if min_len and ids.numel() == 0 and ids.shape[-1] >= min_len:
        raise ValueError(f"{where}: {name} are empty: shape {tuple(ids.shape)}")
    if ids.shape[-1] < min_len:
        raise ValueError(f"{where}: {name} must hold at least {min_len} ids per row, got shape {tuple(ids.shape)}")
    if vocab_size is not None:
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= vocab_size:
            bad = lo if lo < 0 else hi
            pos = tuple(int(i) for i in (ids == bad).nonzero()[0])
            pos = pos[0] if len(pos) == 1 else pos
            raise ValueError(f"{where}: {name} hold {bad} at position {pos}, outside the vocabulary [0, {vocab_size})")
    return ids


def check_train_callables(model, batches, eval_fn) -> None:
    """``train``'s model, batch function and evaluation function are what it can call."""
    if not isinstance(model, torch.nn.Module) or not isinstance(getattr(model, "args", None), ModelArgs):
        raise TypeError(f"train: model must be a Transformer (a module with ModelArgs .args), got {type(model).__name__}")
    if not callable(batches):
        raise TypeError(f"train: batches must be a function generator -> (tokens, targets), got {type(batches).__name__}")
    if eval_fn is not None and not callable(eval_fn):
        raise TypeError(f"train: eval_fn must be a function model -> validation loss, got {type(eval_fn).__name__}")


def check_batch(batch, vocab_size: int, ignore: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch function's (tokens, targets): two (B, S) tensors, each target an id in [0, vocab_size) or
    ``ignore``, at least one of them scored (else the mean loss is NaN, and training would blame the model)."""
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2 and all(isinstance(t, torch.Tensor) for t in batch)):
        got = type(batch).__name__ if not isinstance(batch, (tuple, list)) else f"{len(batch)} items"
        raise TypeError(f"train: the batch function must return (tokens, targets), two (B, S) tensors, got {got}")
    tokens, targets = batch
    if targets.shape != tokens.shape or targets.dtype.is_floating_point or targets.dtype == torch.bool:
        raise ValueError(f"train: targets must be integer ids of the tokens' shape {tuple(tokens.shape)}, got "
                         f"{targets.dtype} {tuple(targets.shape)}")
    scored = targets != ignore
    bad = scored & ((targets < 0) | (targets >= vocab_size))
    if bool(bad.any()):
        where = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(f"train: target {int(targets[where])} at (batch, position) {where} is outside [0, {vocab_size}) "
                         f"and is not IGNORE ({ignore})")
    if not bool(scored.any()):
        raise ValueError(f"train: the batch scores no target: every one is IGNORE ({ignore})")
    return tokens, targets


def check_schedule(where: str, step, steps, lr, warmup, min_lr_ratio) -> None:
    """A learning-rate schedule's arguments: 0 <= step < steps, 0 <= warmup <= steps, lr > 0, 0 <= min_lr_ratio <= 1."""
    steps = as_count(where, "steps", steps)
    as_count(where, "step", step, 0, steps - 1)
    as_count(where, "warmup", warmup, 0, steps)
    as_real(where, "lr", lr, "a number > 0", lambda v: v > 0)
    as_real(where, "min_lr_ratio", min_lr_ratio, "a number in [0, 1]", lambda v: 0 <= v <= 1)
