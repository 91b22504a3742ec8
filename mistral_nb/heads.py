"""What the heads of a trained model do: scores for the well-known kinds of attention head.

All functions take attention weights as returned by ``tasks.attention_maps``: (L, B, H, S, S)
float32, the softmax of each layer and query head (rows: queries, columns: keys).

* previous-token heads put their weight on the token just before the query (i - 1);
* induction heads (Olsson et al. 2022) complete repeated text: in ``A B ... A`` the second ``A``
  attends to the ``B`` that followed the first one. The standard test repeats a random token
  sequence and measures, in the second copy, the weight on "the token after my earlier copy";
* many trained models park attention on the first token (``<s>``): an *attention sink*
  (Xiao et al. 2023) — weight put there when a head has nothing better to do;
* ``attention_by_distance`` shows where in the window the weight lies: next to the query, far
  inside the window, or at its edge.
"""

from __future__ import annotations

from typing import Optional

import torch

__all__ = ["previous_token_scores", "first_token_scores", "repeated_random_tokens", "induction_scores",
           "attention_by_distance", "top_heads"]


def _check(maps: torch.Tensor) -> None:
    if maps.dim() != 5 or maps.shape[-1] != maps.shape[-2]:
        raise ValueError(f"attention maps must be (L, B, H, S, S), got {tuple(maps.shape)}")


def previous_token_scores(maps: torch.Tensor) -> torch.Tensor:
    """(L, H): mean weight a query at position i >= 1 gives the key at i - 1."""
    _check(maps)
    S = maps.shape[-1]
    i = torch.arange(1, S)
    return maps[..., i, i - 1].mean(dim=(1, 3))


def first_token_scores(maps: torch.Tensor, min_query: int = 1) -> torch.Tensor:
    """(L, H): mean weight on key 0 (``<s>``) from queries i >= ``min_query`` that can still see it
    (with a sliding window, queries past the window cannot: pass the maps of a short enough text)."""
    _check(maps)
    return maps[..., min_query:, 0].mean(dim=(1, 3))


def repeated_random_tokens(n_sequences: int, length: int, low: int, high: int, bos: int,
                           generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """(n, 1 + 2 * length): ``<s>``, then ``length`` random ids in [low, high), then the same ids again."""
    r = torch.randint(low, high, (n_sequences, length), generator=generator)
    return torch.cat([torch.full((n_sequences, 1), bos), r, r], dim=1)


def induction_scores(maps: torch.Tensor, length: int) -> torch.Tensor:
    """(L, H): on ``repeated_random_tokens`` input, the mean weight that a query in the second copy
    (position p, p - length its earlier copy) puts on p - length + 1, the token that followed it."""
    _check(maps)
    p = torch.arange(1 + length, 1 + 2 * length)        # the second copy (position 0 is <s>)
    return maps[..., p, p - length + 1].mean(dim=(1, 3))


def attention_by_distance(maps: torch.Tensor, max_distance: int, min_query: Optional[int] = None) -> torch.Tensor:
    """(L, H, max_distance + 1): mean weight at distance d = i - j from the query, d = 0 .. max_distance,
    averaged over queries i >= ``min_query`` (default ``max_distance``: queries whose window is full).
    Each row sums to 1 when ``max_distance`` covers the whole window."""
    _check(maps)
    S = maps.shape[-1]
    start = max_distance if min_query is None else min_query
    if start >= S:
        raise ValueError(f"min_query {start} must be < sequence length {S}")
    i = torch.arange(start, S)                                            # queries
    d = torch.arange(max_distance + 1)
    j = i[:, None] - d[None, :]                                           # (Q, D) key positions
    valid = j >= 0
    w = maps[..., i[:, None], j.clamp(min=0)] * valid                     # (L, B, H, Q, D)
    return w.mean(dim=(1, 3))


def top_heads(scores: torch.Tensor, k: int = 3) -> list[tuple[int, int, float]]:
    """The k (layer, head, score) with the highest scores of an (L, H) table."""
    flat = scores.flatten()
    idx = flat.argsort(descending=True)[:k]
    H = scores.shape[1]
    return [(int(i) // H, int(i) % H, round(float(flat[i]), 4)) for i in idx]
