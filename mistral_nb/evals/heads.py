"""What the heads of a trained model do: their attention maps, and scores for the well-known kinds of head.

``attention_maps`` recomputes the softmax weights of every layer and query head: (L, B, H, S, S)
float32 (rows: queries, columns: keys); the scores below all take such maps.

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

from ..attention import attention_weights
from ..masks import sliding_window_mask
from ..model import Transformer
from ..training.checks import as_count

__all__ = ["attention_maps", "hop_path", "previous_token_scores", "duplicate_token_scores", "sampled_tokens", "first_token_scores", "repeated_random_tokens", "induction_scores",
           "attention_by_distance", "top_heads"]


def _layer_inputs(model: Transformer, tokens: torch.Tensor) -> list[tuple]:
    """Run ``model`` once and keep what each attention layer receives: (x, cos, sin) per layer."""
    seen: list = []
    hooks = [layer.attention.register_forward_pre_hook(lambda mod, args: seen.append(args[:3]))
             for layer in model.layers]
    try:
        model(tokens)
    finally:
        for h in hooks:
            h.remove()
    return seen


@torch.no_grad()
def attention_maps(model: Transformer, tokens: torch.Tensor) -> torch.Tensor:
    """Softmax attention weights of every layer and query head: (B, S) -> (L, B, H, S, S), float32.

    Recomputed from each layer's input with ``attention.attention_weights`` and the model's own
    sliding-window mask (the forward pass itself uses fused kernels that do not return weights).
    """
    model.eval()
    S = tokens.shape[1]
    mask = sliding_window_mask(S, model.args.sliding_window, device=tokens.device)   # (S, S)
    maps = []
    for layer, (x, cos, sin) in zip(model.layers, _layer_inputs(model, tokens)):
        q, k, _ = layer.attention.project(x, cos, sin)                           # (B, S, H|K, D)
        maps.append(attention_weights(q.transpose(1, 2), k.transpose(1, 2), mask))   # (B, H, S, S)
    return torch.stack(maps)


def hop_path(maps: torch.Tensor, query_pos: int) -> tuple[list[int], list[float]]:
    """Follow the strongest attention link down from a query, layer by layer.

    maps: (L, H, S, S) attention weights of one sequence. In the last layer, take the key position the
    query attends to most (over all heads); in the layer below, the position *that* one attends to
    most; and so on. Returns ([p_0, ..., p_L], [w_1, ..., w_L]): p_L = query_pos, and w_l is the
    weight with which p_l attends to p_(l-1) in layer l.
    """
    if not isinstance(maps, torch.Tensor) or maps.dim() != 4 or maps.shape[-1] != maps.shape[-2]:
        raise ValueError(f"hop_path: maps must be (L, H, S, S), the maps of one sequence, got "
                         f"{tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__}")
    L = maps.shape[0]
    path, weights = [as_count("hop_path", "query_pos", query_pos, 0, maps.shape[-1] - 1)], []
    for layer in reversed(range(L)):
        row = maps[layer, :, path[0]].max(dim=0).values                            # (S,) best head per key
        src = int(row.argmax())
        path.insert(0, src)
        weights.insert(0, float(row[src]))
    return path, weights


def _check(maps: torch.Tensor, where: str = "", min_len: int = 1) -> None:
    """maps (L, B, H, S, S) with S >= ``min_len`` (fewer queries than a score needs would make it NaN)."""
    if not isinstance(maps, torch.Tensor) or maps.dim() != 5 or maps.shape[-1] != maps.shape[-2]:
        got = tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__
        raise ValueError(f"{where + ': ' if where else ''}attention maps must be (L, B, H, S, S), got {got}")
    if maps.shape[-1] < min_len or 0 in maps.shape:
        raise ValueError(f"{where}: needs maps of at least {min_len} positions and no empty dimension, "
                         f"got shape {tuple(maps.shape)}")


def previous_token_scores(maps: torch.Tensor) -> torch.Tensor:
    """(L, H): mean weight a query at position i >= 1 gives the key at i - 1."""
    _check(maps, "previous_token_scores", min_len=2)
    S = maps.shape[-1]
    i = torch.arange(1, S)
    return maps[..., i, i - 1].mean(dim=(1, 3))


def first_token_scores(maps: torch.Tensor, min_query: int = 1) -> torch.Tensor:
    """(L, H): mean weight on key 0 (``<s>``) from queries i >= ``min_query`` that can still see it
    (with a sliding window, queries past the window cannot: pass the maps of a short enough text)."""
    _check(maps, "first_token_scores")
    min_query = as_count("first_token_scores", "min_query", min_query, 0, maps.shape[-1] - 1)
    return maps[..., min_query:, 0].mean(dim=(1, 3))


def repeated_random_tokens(n_sequences: int, length: int, low: int, high: int, bos: int,
                           generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """(n, 1 + 2 * length): ``<s>``, then ``length`` random ids in [low, high), then the same ids again."""
    where = "repeated_random_tokens"
    n_sequences, length = as_count(where, "n_sequences", n_sequences), as_count(where, "length", length)
    low, high, bos = as_count(where, "low", low, 0), as_count(where, "high", high, 1), as_count(where, "bos", bos, 0)
    if high <= low:
        raise ValueError(f"{where}: the ids are drawn from [low, high), so high must be > low, got [{low}, {high})")
    r = torch.randint(low, high, (n_sequences, length), generator=generator)
    return torch.cat([torch.full((n_sequences, 1), bos), r, r], dim=1)


def sampled_tokens(n_sequences: int, length: int, probs: torch.Tensor,
                   generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """(n, length) ids drawn independently from ``probs`` (V,), e.g. a unigram model of the training
    text: random sequences whose tokens the model has seen often, unlike uniform ids (most of a
    32,000-id vocabulary is rare or absent in a small corpus)."""
    n_sequences, length = as_count("sampled_tokens", "n_sequences", n_sequences), as_count("sampled_tokens", "length", length)
    if (not isinstance(probs, torch.Tensor) or probs.dim() != 1 or not bool(torch.isfinite(probs).all())
            or not bool((probs >= 0).all()) or float(probs.sum()) <= 0):
        raise ValueError("sampled_tokens: probs must be a 1-D tensor of finite non-negative weights with a positive sum")
    return torch.multinomial(probs.double(), n_sequences * length, replacement=True,
                             generator=generator).view(n_sequences, length)


def duplicate_token_scores(maps: torch.Tensor, tokens: torch.Tensor, window: Optional[int] = None):
    """Duplicate-token heads: weight a query puts on earlier copies of its own token.

    maps (L, B, H, S, S), tokens (B, S). For every query i that has at least one earlier key j < i
    in its window (i - W < j) with tokens[j] == tokens[i], the weight on those keys is summed.
    Returns ((L, H) mean of that weight, the same mean for an even spread over the window — the
    control a score must beat, since a head that attends evenly also lands on duplicates)."""
    _check(maps, "duplicate_token_scores", min_len=2)
    if not isinstance(tokens, torch.Tensor) or tuple(tokens.shape) != (maps.shape[1], maps.shape[-1]):
        raise ValueError(f"duplicate_token_scores: tokens must be (B, S) = {(maps.shape[1], maps.shape[-1])} like the "
                         f"maps, got {tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__}")
    if window is not None:
        window = as_count("duplicate_token_scores", "window", window)
    B, S = tokens.shape
    i, j = torch.arange(S)[:, None], torch.arange(S)[None, :]
    seen = (j < i) & ((i - j < window) if window else True)                        # (S, S) earlier keys in view
    dup = (tokens[:, :, None] == tokens[:, None, :]) & seen                          # (B, S, S)
    has = dup.any(-1)                                                                # (B, S) queries with a copy
    if not bool(has.any()):
        raise ValueError("duplicate_token_scores: no query has an earlier copy of its token in view")
    on_dup = (maps * dup[None, :, None]).sum(-1)                                     # (L, B, H, S)
    score = (on_dup * has[None, :, None]).sum(dim=(1, 3)) / has.sum()
    in_view = (seen | (i == j)).sum(-1).float()                                      # keys a query sees
    even = float((dup.sum(-1) / in_view)[has].mean())
    return score, even


def induction_scores(maps: torch.Tensor, length: int) -> torch.Tensor:
    """(L, H): on ``repeated_random_tokens`` input, the mean weight that a query in the second copy
    (position p, p - length its earlier copy) puts on p - length + 1, the token that followed it."""
    _check(maps, "induction_scores", min_len=3)
    length = as_count("induction_scores", "length", length, 1, (maps.shape[-1] - 1) // 2)
    p = torch.arange(1 + length, 1 + 2 * length)        # the second copy (position 0 is <s>)
    return maps[..., p, p - length + 1].mean(dim=(1, 3))


def attention_by_distance(maps: torch.Tensor, max_distance: int, min_query: Optional[int] = None) -> torch.Tensor:
    """(L, H, max_distance + 1): mean weight at distance d = i - j from the query, d = 0 .. max_distance,
    averaged over queries i >= ``min_query`` (default ``max_distance``: queries whose window is full).
    Each row sums to 1 when ``max_distance`` covers the whole window."""
    _check(maps, "attention_by_distance")
    S = maps.shape[-1]
    max_distance = as_count("attention_by_distance", "max_distance", max_distance, 0)
    start = max_distance if min_query is None else as_count("attention_by_distance", "min_query", min_query, 0)
    if start >= S:
        raise ValueError(f"attention_by_distance: min_query {start} must be < sequence length {S}")
    i = torch.arange(start, S)                                            # queries
    d = torch.arange(max_distance + 1)
    j = i[:, None] - d[None, :]                                           # (Q, D) key positions
    valid = j >= 0
    w = maps[..., i[:, None], j.clamp(min=0)] * valid                     # (L, B, H, Q, D)
    return w.mean(dim=(1, 3))


def top_heads(scores: torch.Tensor, k: int = 3) -> list[tuple[int, int, float]]:
    """The k (layer, head, score) with the highest scores of an (L, H) table."""
    if not isinstance(scores, torch.Tensor) or scores.dim() != 2:
        raise ValueError(f"top_heads: scores must be an (L, H) tensor, got "
                         f"{tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__}")
    k = as_count("top_heads", "k", k)
    flat = scores.flatten()
    idx = flat.argsort(descending=True)[:k]
    H = scores.shape[1]
    return [(int(i) // H, int(i) % H, round(float(flat[i]), 4)) for i in idx]
