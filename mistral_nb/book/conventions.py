"""How many keys does "a window of W" give a query? The conventions in use for Mistral 7B.

Each function builds the (S, S) boolean mask of a whole sequence (row = query i, column = key j)
the way its source does, so that the keys per query and the reach after k layers can be read off
the masks themselves rather than from a formula:

* ``paper_text_mask``: the paper's "positions between i - W and i", read inclusively: i - W <= j <= i;
* ``reference_prefill_mask``: Mistral's ``one_file_ref.py`` as released (2023-09-27), which makes the
  causal mask banded with ``torch.triu(mask, diagonal=-sliding_window)``: also i - W <= j <= i;
* ``rolling_decode_mask``: the same file's decode step, which writes position i into slot i mod W of
  a W-slot cache and then attends to the slots: the last W positions, i - W < j <= i;
* the package's ``masks.sliding_window_mask``: i - W < j <= i, as Hugging Face transformers.

A query that sees W + 1 keys reaches W positions back in one layer, and k x W after k layers; one
that sees W keys reaches W - 1, and k x (W - 1).
"""

from __future__ import annotations

import torch


def paper_text_mask(seq_len: int, window: int) -> torch.Tensor:
    """"Attends to all hidden states from the previous layer with positions between i - W and i",
    both ends included: (S, S) bool, W + 1 keys once i >= W."""
    i = torch.arange(seq_len)[:, None]
    j = torch.arange(seq_len)[None, :]
    return (i - window <= j) & (j <= i)


def reference_prefill_mask(seq_len: int, window: int) -> torch.Tensor:
    """The prefill mask of Mistral's released ``one_file_ref.py``: a lower triangle of ones (causal),
    then ``torch.triu(..., diagonal=-window)``, which keeps the diagonals j - i >= -W. (S, S) bool."""
    ones = torch.ones(seq_len, seq_len)
    return torch.triu(torch.tril(ones, diagonal=0), diagonal=-window) > 0


def rolling_decode_mask(seq_len: int, window: int) -> torch.Tensor:
    """Decode one token at a time through a cache of ``window`` slots, writing position p into slot
    p mod W *before* attending to the filled slots (as the reference's decode step does); row p holds
    the positions the slots contain at that moment. (S, S) bool."""
    slots = [-1] * window
    rows = torch.zeros(seq_len, seq_len, dtype=torch.bool)
    for p in range(seq_len):
        slots[p % window] = p
        rows[p, [s for s in slots if s >= 0]] = True
    return rows


def keys_per_query(mask: torch.Tensor) -> list[int]:
    """How many keys each query of an (S, S) mask may read."""
    return mask.sum(dim=-1).tolist()


def reach(mask: torch.Tensor, n_layers: int) -> int:
    """How far back the last position of an (S, S) mask can be influenced after ``n_layers`` layers:
    the boolean ``n_layers``-th power of the mask (each layer adds one hop; the residual stream lets
    a position keep its own value). S must be long enough for the reach not to hit position 0."""
    one = mask.to(torch.float32)
    power = torch.eye(mask.shape[0])
    for _ in range(n_layers):
        power = ((power @ one) > 0).to(torch.float32)
    first = int(power[-1].nonzero()[0])
    if first == 0:
        raise ValueError(f"the reach after {n_layers} layers hits position 0: use a longer mask than {mask.shape[0]}")
    return mask.shape[0] - 1 - first
