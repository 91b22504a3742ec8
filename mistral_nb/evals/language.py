"""Measuring a trained language model: mean loss, loss by position, loss by context length.

All losses are next-token cross-entropies in nats over windows of S + 1 token ids (see
``train.next_token_loss``); targets equal to an id in ``ignore_ids`` (``<s>``) are not scored.

* ``mean_loss``: the validation loss; ``exp`` of it is the perplexity.
* ``loss_by_position``: the mean loss at each position 0 .. S-1 of the window, i.e. as a function
  of how many tokens of context the prediction had. A model that uses far context keeps improving
  with position; one that cannot see beyond some distance flattens out there.
* ``loss_by_context``: the loss on the same targets when the model is given only the last c tokens
  before them, for several c: where the curve stops falling, the extra context stops helping.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from ..training.loop import next_token_loss

__all__ = ["per_token_losses", "mean_loss", "loss_by_position", "loss_by_context", "cached_logits"]


@torch.no_grad()
def per_token_losses(model, windows: torch.Tensor, ignore_ids: tuple = (), batch_size: int = 8):
    """(n, S + 1) windows -> per-target losses (n, S) float32 and a bool mask (n, S) of the scored ones."""
    model.eval()
    return _per_token(model, windows, ignore_ids, batch_size)


def _per_token(model, windows: torch.Tensor, ignore_ids: tuple, batch_size: int):
    losses, scored = [], []
    for i in range(0, len(windows), batch_size):
        w = windows[i:i + batch_size]
        losses.append(next_token_loss(model, w, ignore_ids=ignore_ids, reduction="none"))
        keep = torch.ones_like(w[:, 1:], dtype=torch.bool)
        for t in ignore_ids:
            keep &= w[:, 1:] != t
        scored.append(keep)
    return torch.cat(losses), torch.cat(scored)


@torch.no_grad()
def mean_loss(model, windows: torch.Tensor, ignore_ids: tuple = (), batch_size: int = 8) -> float:
    """Mean loss (nats) over every scored target of (n, S + 1) windows."""
    model.eval()
    loss, keep = _per_token(model, windows, ignore_ids, batch_size)
    return float(loss[keep].double().mean())


@torch.no_grad()
def loss_by_position(model, windows: torch.Tensor, ignore_ids: tuple = (), batch_size: int = 8) -> torch.Tensor:
    """(S,) mean loss at each position of the window (position i predicts window[:, i + 1] from i + 1 tokens)."""
    model.eval()
    loss, keep = _per_token(model, windows, ignore_ids, batch_size)
    return (loss * keep).double().sum(0) / keep.sum(0).clamp(min=1)


@torch.no_grad()
def loss_by_context(model, windows: torch.Tensor, contexts: Sequence[int], n_targets: int,
                    ignore_ids: tuple = (), batch_size: int = 8) -> list[float]:
    """Mean loss on the last ``n_targets`` targets of each window, given only ``c`` tokens before them.

    For each c in ``contexts`` the model reads the c tokens that precede the scored span, then the
    span itself, so the first scored target is predicted from c tokens and the last from
    c + n_targets - 1. windows: (n, S + 1) with S >= max(contexts) + n_targets - 1.
    """
    model.eval()
    S = windows.shape[1] - 1
    out = []
    for c in contexts:
        if c < 1 or c + n_targets - 1 > S:
            raise ValueError(f"context {c} with {n_targets} targets does not fit windows of {S} inputs")
        start = S - n_targets - c + 1                   # first input token kept
        w = windows[:, start:]                          # (n, c + n_targets)
        loss, keep = _per_token(model, w, ignore_ids, batch_size)
        loss, keep = loss[:, c - 1:], keep[:, c - 1:]   # the n_targets scored predictions
        out.append(float(loss[keep].double().mean()))
    return out


@torch.no_grad()
def cached_logits(model, ids: torch.Tensor, prompt_len: int, window: Optional[int] = None) -> torch.Tensor:
    """Logits of one sequence computed the way ``generate`` computes them: the first ``prompt_len``
    ids prefilled in chunks of W through a ``RollingBufferCache`` of W slots, then one id at a time.

    ids: (S,) -> (S - prompt_len + 1, vocab): the logits after the prompt, then after each later id.
    Compare with ``model(ids[None])[0, prompt_len - 1:]``, the whole sequence recomputed at once.
    """
    from ..cache import RollingBufferCache
    from ..generate import prefill

    model.eval()
    cache = RollingBufferCache.for_model(model, 1, window=window)
    tokens = ids[None, :prompt_len]
    out = [prefill(model, tokens, torch.arange(prompt_len)[None], cache)]       # (1, V)
    for t in ids[prompt_len:]:
        out.append(model(t.view(1, 1), cache=cache)[:, -1])
    return torch.cat(out)
