"""Rotary position embeddings (RoPE, Su et al. 2021) in Mistral's layout, and the Hugging Face layout.

A head vector of width D is read as D/2 pairs; pair i is rotated by the angle ``pos * theta**(-2i/D)``.
Rotating queries and keys by their absolute positions makes their dot product depend only on the
*difference* of positions: <R(m) q, R(n) k> = <q, R(n - m) k>.

Two checkpoint layouts exist for the same model:
  * Mistral's reference code pairs adjacent channels (0, 1), (2, 3), ... (``torch.view_as_complex``);
  * Hugging Face pairs channel i with channel i + D/2 (``rotate_half``).
They compute the same function once the rows of wq and wk are permuted within each head; this
package computes in Mistral's layout and converts Hugging Face checkpoints on load.
"""

from __future__ import annotations

import torch


def rope_inv_freq(head_dim: int, theta: float = 10000.0, device=None) -> torch.Tensor:
    """Angular frequency of each pair: theta ** (-2i / head_dim), i = 0 .. head_dim/2 - 1. Shape (head_dim/2,)."""
    assert head_dim % 2 == 0, f"head_dim must be even, got {head_dim}"
    exponents = torch.arange(0, head_dim, 2, device=device, dtype=torch.int64).float() / head_dim
    return 1.0 / (theta ** exponents)


def rope_angles(positions: torch.Tensor, head_dim: int, theta: float = 10000.0):
    """cos and sin of the rotation angles for integer ``positions`` of any shape P.

    Returns (cos, sin), each float32 of shape (*P, head_dim/2). Negative positions (padding) are
    clamped to 0: their outputs are never attended to.
    """
    inv_freq = rope_inv_freq(head_dim, theta, device=positions.device)  # (D/2,)
    angles = positions.clamp(min=0).float()[..., None] * inv_freq       # (*P, D/2)
    return torch.cos(angles), torch.sin(angles)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent pairs (2i, 2i+1) of ``x`` (Mistral layout).

    x: (B, S, H, D); cos, sin: (B, S, D/2) or (S, D/2). Computed in float32, returned in x's dtype.
    """
    if cos.dim() == 2:                       # (S, D/2) -> (1, S, D/2)
        cos, sin = cos[None], sin[None]
    cos, sin = cos[:, :, None, :], sin[:, :, None, :]              # (B, S, 1, D/2): same for every head
    pairs = x.float().reshape(*x.shape[:-1], -1, 2)                # (B, S, H, D/2, 2)
    x_even, x_odd = pairs[..., 0], pairs[..., 1]                   # (B, S, H, D/2) each
    out = torch.stack((x_even * cos - x_odd * sin,                 # a complex multiplication
                       x_even * sin + x_odd * cos), dim=-1)        # (B, S, H, D/2, 2)
    return out.flatten(-2).type_as(x)                              # (B, S, H, D)


def apply_rope_complex(x: torch.Tensor, positions: torch.Tensor, theta: float = 10000.0) -> torch.Tensor:
    """The same rotation written as Mistral's reference code writes it: pairs as complex numbers.

    x: (B, S, H, D); positions: (S,). For teaching; ``apply_rope`` is what the model runs.
    """
    inv_freq = rope_inv_freq(x.shape[-1], theta, device=x.device)
    freqs_cis = torch.polar(torch.ones(len(positions), len(inv_freq), device=x.device),
                            torch.outer(positions.float(), inv_freq))          # (S, D/2), complex64
    x_c = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))       # (B, S, H, D/2)
    return torch.view_as_real(x_c * freqs_cis[None, :, None, :]).flatten(-2).type_as(x)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """Hugging Face's helper: (x1, x2) -> (-x2, x1) on the two halves of the last dimension."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope_hf(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (i, i + D/2) of ``x`` (Hugging Face layout). Shapes as in ``apply_rope``."""
    if cos.dim() == 2:
        cos, sin = cos[None], sin[None]
    cos = torch.cat((cos, cos), dim=-1)[:, :, None, :]             # (B, S, 1, D)
    sin = torch.cat((sin, sin), dim=-1)[:, :, None, :]
    x32 = x.float()
    return (x32 * cos + rotate_half(x32) * sin).type_as(x)


def mistral_to_hf_qk(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Permute the rows of a wq/wk weight (n_heads*hd, dim) from Mistral's to Hugging Face's layout.

    Within each head, row 2i (first of pair i) moves to row i and row 2i+1 to row i + hd/2.
    """
    rows, dim = w.shape
    hd = rows // n_heads
    assert hd * n_heads == rows and hd % 2 == 0, f"cannot split {tuple(w.shape)} into {n_heads} heads of even width"
    return w.view(n_heads, hd // 2, 2, dim).transpose(1, 2).reshape(rows, dim)


def hf_to_mistral_qk(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Inverse of ``mistral_to_hf_qk``: rows i and i + hd/2 of each head become rows 2i and 2i+1."""
    rows, dim = w.shape
    hd = rows // n_heads
    assert hd * n_heads == rows and hd % 2 == 0, f"cannot split {tuple(w.shape)} into {n_heads} heads of even width"
    return w.view(n_heads, 2, hd // 2, dim).transpose(1, 2).reshape(rows, dim)
