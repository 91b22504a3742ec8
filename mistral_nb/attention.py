"""Grouped-query attention (GQA, Ainslie et al. 2023) with RoPE and Mistral's sliding window.

Shapes: B batch, S query length, T key length, H query heads, K key/value heads (H % K == 0), D head_dim.

Three ways to compute the same attention:
  * ``attention_naive``: repeat each key/value head for its group of query heads (``repeat_kv``),
    then softmax(q k^T / sqrt(D)) v with the softmax in float32 — the textbook version;
  * ``attention_sdpa``: PyTorch's fused ``scaled_dot_product_attention`` with ``enable_gqa``, no copies;
  * ``banded_attention``: for long whole-sequence forwards, split queries into blocks and give each
    block only the keys inside its window, so the cost grows as S x W instead of S^2.
"""

from __future__ import annotations

import functools
import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelArgs
from .masks import mask_matrix, mistral_mask
from .rope import apply_rope


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(B, K, T, D) -> (B, K * n_rep, T, D): each key/value head copied for its n_rep query heads."""
    if n_rep == 1:
        return x
    B, K, T, D = x.shape
    return x[:, :, None].expand(B, K, n_rep, T, D).reshape(B, K * n_rep, T, D)


def attention_naive(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                    mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Textbook attention. q: (B, H, S, D); k, v: (B, K, T, D); mask: bool broadcastable to (B, H, S, T).

    Returns (B, H, S, D) in q's dtype. Scores and softmax are computed in float32.
    """
    n_rep = q.shape[1] // k.shape[1]
    k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)                            # (B, H, T, D)
    scores = q.float() @ k.float().transpose(-2, -1) / math.sqrt(q.shape[-1])   # (B, H, S, T)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)                                     # (B, H, S, T)
    return (weights @ v.float()).type_as(q)                                     # (B, H, S, D)


def attention_weights(q: torch.Tensor, k: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """The softmax weights of ``attention_naive`` (B, H, S, T), float32 — what the book's heatmaps show."""
    n_rep = q.shape[1] // k.shape[1]
    scores = q.float() @ repeat_kv(k, n_rep).float().transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1)


def additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Bool mask (True = attend) -> additive bias: 0 where allowed, -inf elsewhere.

    PyTorch's fused attention on the CPU takes a slow path for boolean masks combined with
    ``enable_gqa`` (about 100x slower at decode in our measurements); an additive mask keeps it fast.
    """
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, float("-inf"))


def attention_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Fused attention; grouped heads handled by ``enable_gqa`` (no repeated copies). Shapes as naive.

    ``mask``: bool (True = attend) or an additive bias, broadcastable to (B, H, S, T).
    """
    if mask is not None and mask.dtype == torch.bool:
        mask = additive_mask(mask, q.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=k.shape[1] != q.shape[1])


def banded_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int,
                     block_size: Optional[int] = None) -> torch.Tensor:
    """Sliding-window causal attention of a whole sequence (positions 0 .. S-1) in O(S * W).

    Query block [s0, s1) only needs keys [s0 - W + 1, s1): at most block_size + W - 1 of them.
    q: (B, H, S, D); k, v: (B, K, S, D). Equal to dense masked attention up to float rounding.
    """
    S = q.shape[2]
    block = block_size or default_block_size(window)
    outs = []
    for (s0, s1, k0), bias in zip(band_blocks(S, window, block), _band_biases(S, window, block, q.device, q.dtype)):
        outs.append(attention_sdpa(q[:, :, s0:s1], k[:, :, k0:s1], v[:, :, k0:s1], bias))
    return torch.cat(outs, dim=2)                                               # (B, H, S, D)


def default_block_size(window: int) -> int:
    """Query block of the banded path: a quarter of the window, so each block reads about 1.25 W keys."""
    return max(16, window // 4)


def band_blocks(seq_len: int, window: int, block: int) -> list[tuple[int, int, int]]:
    """(first query, end query, first key) of each query block of the banded path."""
    return [(s0, min(seq_len, s0 + block), max(0, s0 - window + 1)) for s0 in range(0, seq_len, block)]


def banded_pairs(seq_len: int, window: int, block_size: Optional[int] = None) -> int:
    """Number of (query, key) scores ``banded_attention`` computes: each block scores its queries
    against every key of its band, including the few its first queries may not see."""
    block = block_size or default_block_size(window)
    return sum((s1 - s0) * (s1 - k0) for s0, s1, k0 in band_blocks(seq_len, window, block))


def _band_biases(seq_len: int, window: int, block: int, device, dtype) -> list[torch.Tensor]:
    """Additive masks of every block. A block's mask depends only on its shape and on how far its
    first key lies behind its first query, so all the blocks past the first window share one tensor:
    a 16k-token forward with W = 4096 holds 5 distinct masks, not 16."""
    return [_band_bias(s1 - s0, s1 - k0, s0 - k0, window, device, dtype) for s0, s1, k0 in band_blocks(seq_len, window, block)]


@functools.lru_cache(maxsize=16)
def _band_bias(n_queries: int, n_keys: int, lag: int, window: int, device, dtype) -> torch.Tensor:
    """(n_queries, n_keys) additive mask of queries lag .. lag + n_queries - 1 over keys 0 .. n_keys - 1.

    Cached (the same for every layer and every forward of that shape); at most 16 small masks stay
    alive: at W = 4096 in float32, 16 x 1024 x 5119 x 4 bytes = 0.34 GB in the worst case.
    """
    return additive_mask(mask_matrix(mistral_mask(window), torch.arange(lag, lag + n_queries, device=device),
                                     torch.arange(n_keys, device=device)), dtype)


def use_banded(seq_len: int, window: Optional[int]) -> bool:
    """Whether the banded path pays: only when the sequence is well beyond the window."""
    return window is not None and seq_len >= 2 * window


class Attention(nn.Module):
    """Multi-head attention with grouped key/value heads, RoPE, and no biases (as in Mistral)."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = args.n_heads, args.n_kv_heads, args.head_dim
        self.window = args.sliding_window
        self.wq = nn.Linear(args.dim, args.n_heads * args.head_dim, bias=False)
        self.wk = nn.Linear(args.dim, args.n_kv_heads * args.head_dim, bias=False)
        self.wv = nn.Linear(args.dim, args.n_kv_heads * args.head_dim, bias=False)
        self.wo = nn.Linear(args.n_heads * args.head_dim, args.dim, bias=False)

    def project(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """x (B, S, dim) -> rotated q (B, S, H, D), rotated k (B, S, K, D), v (B, S, K, D)."""
        B, S, _ = x.shape
        q = self.wq(x).view(B, S, self.n_heads, self.head_dim)
        k = self.wk(x).view(B, S, self.n_kv_heads, self.head_dim)
        v = self.wv(x).view(B, S, self.n_kv_heads, self.head_dim)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                mask: Optional[torch.Tensor] = None, cache=None) -> torch.Tensor:
        """x: (B, S, dim) -> (B, S, dim).

        Without a cache, ``mask`` is the (S, S) whole-sequence mask, or None to use the banded path.
        With a cache (a ``LayerCache``), the chunk's keys/values are written to the cache and the keys
        are the cached W slots followed by the chunk — or, for one token, the W slots alone, the token
        already written into its slot — with ``mask`` the (B, 1, S, T) chunk mask.
        """
        B, S, _ = x.shape
        q, k, v = self.project(x, cos, sin)
        if cache is not None:
            k, v = cache.extend(k, v)                             # (B, W + S, K, D), (B, W, K, D) if S = 1
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))          # (B, S, H, D) -> (B, H, S, D)
        if mask is None and cache is None and self.window is not None:
            out = banded_attention(q, k, v, self.window)
        else:
            out = attention_sdpa(q, k, v, mask)                   # (B, H, S, D)
        return self.wo(out.transpose(1, 2).reshape(B, S, -1))    # (B, H, S, D) -> (B, S, H*D) -> (B, S, dim)
