"""Online softmax and a tiled, one-pass attention (the idea of FlashAttention) in plain PyTorch.

Ordinary attention writes the whole (S, T) matrix of scores to memory, takes its softmax (another
(S, T) matrix) and multiplies by the values. FlashAttention (Dao et al., 2022) never holds that
matrix: it walks over tiles of keys, and for each query keeps only three running quantities,

    m = the largest score seen so far,   l = sum of exp(score - m),   acc = sum of exp(score - m) v,

rescaling ``l`` and ``acc`` by exp(m_old - m_new) whenever a tile raises the maximum (the online
softmax of Milakov & Gimelshein, 2018). After the last tile, ``acc / l`` is exactly the softmax-weighted
sum of the values. With a causal sliding window, tiles that lie entirely in the future or entirely
outside the window are skipped, so the work follows the band of the mask.

This module is for reading and testing, not speed: the loops run in Python. On a GPU the same
loop runs inside one kernel with the tiles in on-chip memory, which is where the speed comes from.
"""

from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch

from ..masks import mask_matrix, mistral_mask


def online_softmax(x: torch.Tensor, block: int = 4) -> torch.Tensor:
    """Softmax over the last dimension in one pass over blocks of ``block`` entries.

    Keeps a running maximum ``m`` and a running sum ``l`` of exp(x - m); when a block raises the
    maximum, the sum so far is rescaled by exp(m_old - m_new). x (..., N) -> (..., N), float32.
    """
    x = x.float()
    m = torch.full(x.shape[:-1], float("-inf"), dtype=x.dtype, device=x.device)
    l = torch.zeros(x.shape[:-1], dtype=x.dtype, device=x.device)
    for b0 in range(0, x.shape[-1], block):
        xb = x[..., b0:b0 + block]
        m_new = torch.maximum(m, xb.amax(dim=-1))
        l = l * torch.exp(m - m_new) + torch.exp(xb - m_new[..., None]).sum(dim=-1)
        m = m_new
    return torch.exp(x - m[..., None]) / l[..., None]


def visited_tiles(seq_len: int, window: Optional[int], block_q: int, block_k: int,
                  causal: bool = True) -> List[Tuple[int, int, int, int]]:
    """The (q0, q1, k0, k1) tiles a causal (sliding-window) attention over ``seq_len`` positions must
    compute: every key block that holds at least one key some query of the block may see."""
    tiles = []
    for q0 in range(0, seq_len, block_q):
        q1 = min(q0 + block_q, seq_len)
        for k0 in range(0, seq_len, block_k):
            k1 = min(k0 + block_k, seq_len)
            if causal and k0 > q1 - 1:                            # every key is in the future of every query
                continue
            if window is not None and k1 - 1 <= q0 - window:      # every key is out of every query's window
                continue
            tiles.append((q0, q1, k0, k1))
    return tiles


def _check_flash_args(q, k, v, block_q, block_k) -> None:
    if not all(isinstance(t, torch.Tensor) and t.dim() == 4 for t in (q, k, v)):
        got = [tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__ for t in (q, k, v)]
        raise ValueError(f"flash_attention expects q (B, H, S, D) and k, v (B, K, S, D) tensors, got {got}")
    for name, b in (("block_q", block_q), ("block_k", block_k)):
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            raise ValueError(f"flash_attention: {name} must be an int >= 1, got {b!r}")


def flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: Optional[int] = None,
                    causal: bool = True, block_q: int = 64, block_k: int = 64) -> torch.Tensor:
    """Attention of a whole sequence, one tile of keys at a time, never forming the (S, S) matrix.

    q: (B, H, S, D); k, v: (B, K, S, D) with H a multiple of K (grouped-query attention: query
    head h reads key/value head h // (H / K)). Query i sees key j when j <= i (``causal``) and
    i - j < ``window`` (None: no window) — the package's mask. Returns (B, H, S, D) in q's dtype;
    scores, running statistics and the accumulator are float32.
    """
    _check_flash_args(q, k, v, block_q, block_k)
    B, H, S, D = q.shape
    Kh = k.shape[1]
    if H % Kh or k.shape[2] != S or v.shape != k.shape:
        raise ValueError(f"expected q (B, H, S, D), k and v (B, K, S, D) with H a multiple of K; "
                         f"got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if window is not None and not causal:
        raise ValueError("a sliding window needs causal=True")
    rep = H // Kh
    scale = 1.0 / math.sqrt(D)
    qg = q.float().view(B, Kh, rep, S, D) * scale            # query heads grouped by the kv head they read
    kf, vf = k.float()[:, :, None], v.float()[:, :, None]    # (B, K, 1, S, D): shared by the group
    pos = torch.arange(S, device=q.device)
    out = torch.empty(B, Kh, rep, S, D, dtype=torch.float32, device=q.device)
    tiles = visited_tiles(S, window, block_q, block_k, causal)
    for q0 in range(0, S, block_q):
        q1 = min(q0 + block_q, S)
        m = torch.full((B, Kh, rep, q1 - q0), float("-inf"), device=q.device)   # running max
        l = torch.zeros(B, Kh, rep, q1 - q0, device=q.device)                   # running sum of exp
        acc = torch.zeros(B, Kh, rep, q1 - q0, D, device=q.device)              # running sum of exp * v
        for _, _, k0, k1 in (t for t in tiles if t[0] == q0):
            s = qg[:, :, :, q0:q1] @ kf[..., k0:k1, :].transpose(-1, -2)        # (B, K, rep, bq, bk)
            if causal:
                allowed = mask_matrix(mistral_mask(window), pos[q0:q1], pos[k0:k1])   # (bq, bk)
                s = s.masked_fill(~allowed, float("-inf"))
            m_new = torch.maximum(m, s.amax(dim=-1))
            safe = torch.where(torch.isinf(m_new), torch.zeros_like(m_new), m_new)  # rows with no key yet
            p = torch.exp(s - safe[..., None])                                 # 0 where masked
            correction = torch.exp(m - safe)                                   # rescale what came before
            l = l * correction + p.sum(dim=-1)
            acc = acc * correction[..., None] + p @ vf[..., k0:k1, :]
            m = m_new
        out[:, :, :, q0:q1] = acc / l[..., None]
    return out.view(B, H, S, D).to(q.dtype)
