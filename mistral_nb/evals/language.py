"""Measuring a trained language model: mean loss, loss by position, loss by context length.

All losses are next-token cross-entropies in nats over windows of S + 1 token ids (see
``train.next_token_loss``); targets equal to an id in ``ignore_ids`` (``<s>``) are not scored.

* ``mean_loss``: the validation loss; ``exp`` of it is the perplexity.
* ``loss_by_position``: the mean loss at each position 0 .. S-1 of the window, i.e. as a function
  of how many tokens of context the prediction had. A model that uses far context keeps improving
  with position; one that cannot see beyond some distance flattens out there.
* ``loss_by_context``: the loss on the same targets when the model is given only the last c tokens
  before them, for several c: where the curve stops falling, the extra context stops helping.
* ``repeats_a_phrase``: whether a generated text says the same few words twice, the mark of a
  greedy decoding loop.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from ..training.checks import as_count, check_id_tensor, check_ignore_ids
from ..training.loop import next_token_loss

__all__ = ["per_token_losses", "mean_loss", "loss_by_position", "loss_by_context", "cached_logits", "repeats_a_phrase"]


@torch.no_grad()
def per_token_losses(model, windows: torch.Tensor, ignore_ids: tuple = (), batch_size: int = 8):
    """(n, S + 1) windows -> per-target losses (n, S) float32 and a bool mask (n, S) of the scored ones."""
    model.eval()
    return _per_token("per_token_losses", model, windows, ignore_ids, batch_size)


def _check_windows(where: str, model, windows, ignore_ids, batch_size) -> tuple[tuple, int]:
    """Windows (n, S + 1) of ids inside the model's vocabulary, ignore_ids a tuple of ints, batch_size >= 1."""
    args = getattr(model, "args", None)
    check_id_tensor(where, "windows", windows, getattr(args, "vocab_size", None), dims=(2,), min_len=2)
    return check_ignore_ids(where, ignore_ids), as_count(where, "batch_size", batch_size)


def _scored_mean(where: str, loss: torch.Tensor, keep: torch.Tensor) -> float:
    if not bool(keep.any()):
        raise ValueError(f"{where}: no target is scored: every one is in ignore_ids")
    return float(loss[keep].double().mean())


def _per_token(where: str, model, windows: torch.Tensor, ignore_ids: tuple, batch_size: int):
    ignore_ids, batch_size = _check_windows(where, model, windows, ignore_ids, batch_size)
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
    loss, keep = _per_token("mean_loss", model, windows, ignore_ids, batch_size)
    return _scored_mean("mean_loss", loss, keep)


@torch.no_grad()
def loss_by_position(model, windows: torch.Tensor, ignore_ids: tuple = (), batch_size: int = 8) -> torch.Tensor:
    """(S,) mean loss at each position of the window (position i predicts window[:, i + 1] from i + 1 tokens).
    Every position needs at least one scored target (otherwise its mean would be a made-up 0)."""
    model.eval()
    loss, keep = _per_token("loss_by_position", model, windows, ignore_ids, batch_size)
    empty = (~keep.any(0)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"loss_by_position: no target is scored at position(s) {empty[:10]}: every window's "
                         "target there is in ignore_ids; pass more windows")
    return (loss * keep).double().sum(0) / keep.sum(0)


@torch.no_grad()
def loss_by_context(model, windows: torch.Tensor, contexts: Sequence[int], n_targets: int,
                    ignore_ids: tuple = (), batch_size: int = 8) -> list[float]:
    """Mean loss on the last ``n_targets`` targets of each window, given only ``c`` tokens before them.

    For each c in ``contexts`` the model reads the c tokens that precede the scored span, then the
    span itself, so the first scored target is predicted from c tokens and the last from
    c + n_targets - 1. windows: (n, S + 1) with S >= max(contexts) + n_targets - 1.
    """
    model.eval()
    where = "loss_by_context"
    _check_windows(where, model, windows, ignore_ids, batch_size)
    S = windows.shape[1] - 1
    n_targets = as_count(where, "n_targets", n_targets)
    if isinstance(contexts, (str, bytes)) or not hasattr(contexts, "__iter__"):
        raise TypeError(f"{where}: contexts must be a sequence of context lengths, got {contexts!r}")
    out = []
    for c in [as_count(where, "each of contexts", c) for c in contexts]:
        if c + n_targets - 1 > S:
            raise ValueError(f"{where}: context {c} with {n_targets} targets does not fit windows of {S} inputs")
        start = S - n_targets - c + 1                   # first input token kept
        w = windows[:, start:]                          # (n, c + n_targets)
        loss, keep = _per_token(where, model, w, ignore_ids, batch_size)
        loss, keep = loss[:, c - 1:], keep[:, c - 1:]   # the n_targets scored predictions
        out.append(_scored_mean(where, loss, keep))
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
    check_id_tensor("cached_logits", "ids", ids, model.args.vocab_size, dims=(1,))
    prompt_len = as_count("cached_logits", "prompt_len", prompt_len, 1, len(ids))
    cache = RollingBufferCache.for_model(model, 1, window=window)
    tokens = ids[None, :prompt_len]
    out = [prefill(model, tokens, torch.arange(prompt_len)[None], cache)]       # (1, V)
    for t in ids[prompt_len:]:
        out.append(model(t.view(1, 1), cache=cache)[:, -1])
    return torch.cat(out)


def repeats_a_phrase(text: str, n_words: int = 4) -> bool:
    """True when some run of ``n_words`` consecutive words (split on whitespace) occurs twice in
    ``text``: the mark of a decoding loop ("the following example shows the following example shows")."""
    if not isinstance(text, str):
        raise TypeError(f"repeats_a_phrase: text must be a str, got {type(text).__name__}")
    n_words = as_count("repeats_a_phrase", "n_words", n_words, 1)
    words = text.split()
    phrases = [tuple(words[i:i + n_words]) for i in range(len(words) - n_words + 1)]
    return len(phrases) != len(set(phrases))
