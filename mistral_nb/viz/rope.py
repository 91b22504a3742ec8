"""Figures of chapter 03 (rotary position embeddings).

Every function draws on a matplotlib Axes (a new one when ``ax`` is None) and returns it.
"""

from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence

import matplotlib
import numpy as np
import torch

from ..rope import mistral_to_hf_qk, rope_angles, rope_inv_freq
from .common import new_axes

__all__ = ["plot_rope_wavelengths", "plot_pair_rotation", "plot_qk_permutation", "plot_rope_decay",
           "plot_error_by_position"]


def plot_rope_wavelengths(head_dim: int = 128, theta: float = 10000.0,
                          marks: Optional[Mapping[str, float]] = None, ax=None):
    """Wavelength 2*pi / theta**(-2i/D) (in tokens) of each pair i, on a log scale.

    marks: optional {label: tokens} drawn as horizontal lines (e.g. the sliding window).
    """
    wl = (2 * math.pi / rope_inv_freq(head_dim, theta).double()).numpy()      # (D/2,)
    i = np.arange(len(wl))
    ax = new_axes(ax, figsize=(7, 4))
    ax.semilogy(i, wl, "o-", ms=3, lw=1, color="tab:blue", label=f"wavelength of pair i (D = {head_dim}, theta = {theta:g})")
    for (label, value), color in zip((marks or {}).items(), ("tab:red", "tab:orange", "tab:green", "tab:purple")):
        ax.axhline(value, color=color, ls="--", lw=1, label=f"{label} = {value:,g} tokens")
    ax.annotate(f"{wl[0]:.2f}", (i[0], wl[0]), xytext=(6, -2), textcoords="offset points", fontsize=8)
    ax.annotate(f"{wl[-1]:,.0f}", (i[-1], wl[-1]), xytext=(-6, 6), textcoords="offset points", fontsize=8, ha="right")
    ax.set_xlabel("pair index i  (channels 2i, 2i+1)")
    ax.set_ylabel("wavelength (tokens)")
    ax.set_title("One full turn takes longer for higher pairs")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(True, which="major", alpha=0.3)
    return ax


def plot_pair_rotation(positions: Sequence[int], pairs: Sequence[int], head_dim: int = 128,
                       theta: float = 10000.0, ax=None):
    """Where the unit vector (1, 0) of each pair lands at each position: one circle per pair.

    Pair ``pairs[k]`` is drawn on a circle of radius 1 - 0.28 k so the circles do not overlap;
    each point is labelled with its position.
    """
    pos = torch.as_tensor(list(positions))
    cos, sin = rope_angles(pos, head_dim, theta)          # (P, D/2)
    ax = new_axes(ax, figsize=(5.2, 5.2))
    t = np.linspace(0, 2 * np.pi, 200)
    colors = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:red")
    for k, p in enumerate(pairs):
        r = 1.0 - 0.28 * k
        color = colors[k % len(colors)]
        ax.plot(r * np.cos(t), r * np.sin(t), color=color, lw=0.6, alpha=0.35)
        xs, ys = r * cos[:, p].numpy(), r * sin[:, p].numpy()
        ax.plot(xs, ys, "-", color=color, lw=0.8, alpha=0.6)
        ax.plot(xs, ys, "o", color=color, ms=5, label=f"pair {p}: {float(rope_inv_freq(head_dim, theta)[p]):.3g} rad/token")
        for m, x_, y_ in zip(pos.tolist(), xs, ys):
            ax.annotate(str(m), (x_, y_), xytext=(4, 3), textcoords="offset points", fontsize=7, color=color)
    ax.axhline(0, color="0.85", lw=0.8, zorder=0)
    ax.axvline(0, color="0.85", lw=0.8, zorder=0)
    ax.set_aspect("equal")
    ax.set_xlim(-1.25, 1.25)
    ax.set_ylim(-1.25, 1.25)
    ax.set_xlabel("first channel of the pair (2i)")
    ax.set_ylabel("second channel of the pair (2i+1)")
    ax.set_title("(1, 0) rotated to positions " + ", ".join(map(str, pos.tolist())), fontsize=10)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=1, frameon=False)
    return ax


def plot_qk_permutation(head_dim: int = 8, ax=None):
    """Which row of one head of wq/wk goes where under ``mistral_to_hf_qk``.

    Left: Mistral's rows (pair i = rows 2i, 2i+1); right: Hugging Face's rows (pair i = rows i, i + D/2).
    One arrow per row, coloured by the pair the row belongs to.
    """
    rows = torch.arange(head_dim, dtype=torch.float32)[:, None]     # (D, 1): row j holds the number j
    hf_rows = mistral_to_hf_qk(rows, n_heads=1)[:, 0].long()       # hf row r holds Mistral row hf_rows[r]
    half = head_dim // 2
    cmap = matplotlib.colormaps["tab10"]
    ax = new_axes(ax, figsize=(6.4, 0.45 * head_dim + 1.2))
    for r, j in enumerate(hf_rows.tolist()):
        color = cmap(j // 2 % 10)
        ax.annotate("", xy=(0.78, -r), xytext=(0.22, -j),
                    arrowprops=dict(arrowstyle="->", color=color, lw=1.6, shrinkA=2, shrinkB=2))
    for j in range(head_dim):
        color = cmap(j // 2 % 10)
        ax.text(0.2, -j, f"row {j}: pair {j // 2}, {'1st' if j % 2 == 0 else '2nd'}", ha="right", va="center",
                fontsize=9, color=color)
        ax.text(0.8, -j, f"row {j}: pair {j % half}, {'1st' if j < half else '2nd'}", ha="left", va="center",
                fontsize=9, color=cmap(j % half % 10))
    ax.text(0.2, 1.0, "Mistral (interleaved)", ha="right", va="bottom", fontsize=10, weight="bold")
    ax.text(0.8, 1.0, "Hugging Face (halves)", ha="left", va="bottom", fontsize=10, weight="bold")
    ax.set_xlim(-0.45, 1.45)
    ax.set_ylim(-head_dim + 0.4, 1.7)
    ax.set_axis_off()
    ax.set_title(f"mistral_to_hf_qk for one head of width {head_dim}", fontsize=10)
    return ax


def plot_rope_decay(distances, bound, ax=None, bins_per_decade: int = 12):
    """RoFormer's relative upper bound of a RoPE attention score against the relative distance.

    distances: (N,) non-negative ints; bound: (N,) values (computed by the caller).
    Past a few dozen tokens the bound oscillates faster than a figure can show, so the raw curve is
    drawn faintly and, over it, its maximum (the envelope) and mean in logarithmic bins of distance
    (``bins_per_decade`` per factor of ten).
    """
    d, b = np.asarray(distances, dtype=float), np.asarray(bound, dtype=float)
    ax = new_axes(ax, figsize=(6.5, 3.6))
    ax.plot(d, b, lw=0.5, color="tab:blue", alpha=0.25, label="bound at each distance")
    top = np.log10(max(d.max(), 10.0))
    edges = np.unique(np.concatenate([np.arange(0, 10), np.round(np.logspace(1, top, int((top - 1) * bins_per_decade) + 1))]))
    centres, highs, means = [], [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (d >= lo) & (d < hi) if hi < edges[-1] else (d >= lo) & (d <= hi)
        if sel.any():
            centres.append(d[sel].mean())
            highs.append(b[sel].max())
            means.append(b[sel].mean())
    ax.plot(centres, highs, color="tab:blue", lw=1.8, label="maximum in each bin (envelope)")
    ax.plot(centres, means, color="tab:orange", lw=1.4, ls="--", label="mean in each bin")
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlim(0, d.max())
    ax.set_ylim(bottom=0)
    ax.set_xlabel("relative distance m - n (tokens)")
    ax.set_ylabel("relative upper bound")
    ax.set_title("RoPE's long-term decay (Su et al., Fig. 2), D = 128, theta = 1e4", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    return ax


def plot_error_by_position(errors: Mapping[str, object], ax=None):
    """Largest absolute logit error at each position, one line per entry (label -> (S,) values)."""
    ax = new_axes(ax, figsize=(7, 3.6))
    markers = ("o", "s", "^", "D")
    for k, (label, values) in enumerate(errors.items()):
        v = values.detach().double().numpy() if hasattr(values, "detach") else np.asarray(values, dtype=float)
        ax.plot(np.arange(len(v)), v, marker=markers[k % len(markers)], ms=4, lw=1.2, label=label)
    ax.set_xlabel("position in the sequence")
    ax.set_ylabel("max |logit error| over the vocabulary")
    ax.set_title("Logit error against the original model")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(True, alpha=0.3)
    return ax
