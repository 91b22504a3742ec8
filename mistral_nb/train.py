"""A small, deterministic training loop for tiny Mistral models on the CPU.

The loop is the textbook recipe that large models are trained with, shrunk to a few hundred steps:

* AdamW (Loshchilov & Hutter), with weight decay on the matrices only (not on RMSNorm gains);
* a learning rate that warms up linearly, then follows a cosine down to ``min_lr_ratio * lr``;
* gradient clipping by global norm;
* one seed for everything random inside the loop (the batches come from a ``torch.Generator``
  seeded with it), so the same call gives the same losses on the same machine.

The model is built (and its weights initialised) by the caller: ``seeded_model(args, seed)`` does
that reproducibly. A batch function receives the loop's generator and returns ``(tokens, targets)``:
LongTensors of shape (B, S), with ``targets == IGNORE`` (-100) where no prediction is scored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from .config import ModelArgs
from .model import Transformer

__all__ = ["IGNORE", "TrainHistory", "seeded_model", "lr_at", "param_groups", "loss_on", "train"]

IGNORE = -100   # target value of positions that are not scored (F.cross_entropy's ignore_index)

BatchFn = Callable[[torch.Generator], "tuple[torch.Tensor, torch.Tensor]"]


@dataclass
class TrainHistory:
    """What ``train`` records at every step: the batch loss, the learning rate and the gradient norm
    (before clipping)."""

    loss: list = field(default_factory=list)
    lr: list = field(default_factory=list)
    grad_norm: list = field(default_factory=list)

    def smoothed(self, every: int = 10) -> list:
        """Mean loss of consecutive groups of ``every`` steps (the last group may be shorter)."""
        return [sum(self.loss[i:i + every]) / len(self.loss[i:i + every]) for i in range(0, len(self.loss), every)]


def seeded_model(args: ModelArgs, seed: int = 0) -> Transformer:
    """A ``Transformer(args)`` whose initial weights depend only on ``seed`` (global RNG left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Transformer(args)


def lr_at(step: int, steps: int, lr: float, warmup: int, min_lr_ratio: float = 0.1) -> float:
    """Learning rate of ``step`` (0-based): linear warm-up over ``warmup`` steps, then a cosine
    from ``lr`` down to ``min_lr_ratio * lr`` at the last step."""
    if step < warmup:
        return lr * (step + 1) / warmup
    span = max(1, steps - 1 - warmup)
    progress = min(1.0, (step - warmup) / span)
    return lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: matrices (linear layers, embeddings) decay; vectors (RMSNorm gains) do not."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def loss_on(model: Transformer, tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the scored positions. tokens, targets: (B, S) -> scalar."""
    logits = model(tokens)                                                   # (B, S, vocab), float32
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE)


def train(model: Transformer, batches: BatchFn, steps: int, lr: float = 3e-3, warmup: int = 50,
          weight_decay: float = 0.01, clip: Optional[float] = 1.0, seed: int = 0,
          min_lr_ratio: float = 0.1, betas: tuple = (0.9, 0.98), progress: bool = True,
          desc: str = "train") -> TrainHistory:
    """Train ``model`` in place for ``steps`` AdamW steps; returns the per-step ``TrainHistory``.

    batches: ``batches(generator) -> (tokens, targets)``, both (B, S) LongTensors; the generator is
        the loop's own, seeded with ``seed``, so the data sequence is fixed by the seed.
    lr, warmup, min_lr_ratio: peak learning rate and the schedule of ``lr_at``.
    clip: maximum global gradient norm (None: no clipping).
    progress: show a tqdm bar (pass False in notebooks and tests).
    """
    if steps <= 0:
        raise ValueError(f"train: steps must be > 0, got {steps}")
    if not 0 <= warmup < steps:
        raise ValueError(f"train: warmup must be in [0, steps), got warmup={warmup}, steps={steps}")
    from tqdm.auto import tqdm

    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas)
    history = TrainHistory()
    model.train()
    bar = tqdm(range(steps), desc=desc, disable=not progress)
    for step in bar:
        rate = lr_at(step, steps, lr, warmup, min_lr_ratio)
        for group in opt.param_groups:
            group["lr"] = rate
        tokens, targets = batches(gen)
        loss = loss_on(model, tokens, targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip if clip is not None else float("inf"))
        opt.step()
        history.loss.append(loss.item())
        history.lr.append(rate)
        history.grad_norm.append(float(norm))
        if progress and step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    model.eval()
    return history
