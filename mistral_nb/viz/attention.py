"""Figures of chapter 04 (attention, MHA -> MQA -> GQA).

* ``plot_head_groups``: which query heads share which key/value head;
* ``plot_attention_heads``: one attention-weight heatmap per query head, laid out by kv group;
* ``plot_kv_bytes``: KV-cache bytes per token of several layouts, as labelled bars;
* ``token_labels``: readable axis labels for sentencepiece pieces.
"""

from __future__ import annotations

from typing import Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import FancyBboxPatch

from .common import heatmap, new_axes

__all__ = ["token_labels", "group_colors", "plot_head_groups", "plot_attention_heads", "plot_kv_bytes"]


def token_labels(pieces: Sequence[str], positions: bool = False) -> list[str]:
    """Axis labels for sentencepiece pieces: the word-start marker '▁' dropped, empty pieces shown as '␣'.

    With ``positions`` each label is prefixed with its index: ``['0 <s>', '1 The', ...]``.
    """
    out = []
    for i, p in enumerate(pieces):
        text = p.replace("\u2581", "") or "\u2423"
        out.append(f"{i} {text}" if positions else text)
    return out


def group_colors(n_groups: int) -> list:
    """One colour per key/value group (tab10 while it lasts, then evenly spaced hues)."""
    if n_groups <= 10:
        cmap = plt.get_cmap("tab10")
        return [cmap(i) for i in range(n_groups)]
    cmap = plt.get_cmap("hsv")
    return [cmap(i / n_groups) for i in range(n_groups)]


def plot_head_groups(n_heads: int, n_kv_heads: int, ax=None, title: Optional[str] = None,
                     label_every: Optional[int] = None):
    """Draw query heads (top row) wired to the key/value head they read (bottom row).

    Query head h reads kv head h // (n_heads // n_kv_heads), the order ``repeat_kv`` produces.
    Each kv head is drawn as wide as its group, in the group's colour.
    """
    if n_heads % n_kv_heads:
        raise ValueError(f"n_heads ({n_heads}) must be divisible by n_kv_heads ({n_kv_heads})")
    n_rep = n_heads // n_kv_heads
    ax = new_axes(ax, figsize=(max(6, n_heads * 0.3), 2.4))
    colors = group_colors(n_kv_heads)
    every = label_every or (1 if n_heads <= 16 else 4)
    y_q, y_kv, h = 1.6, 0.0, 0.5
    for q in range(n_heads):
        g = q // n_rep
        ax.add_patch(FancyBboxPatch((q - 0.38, y_q), 0.76, h, boxstyle="round,pad=0.02",
                                    facecolor=colors[g], edgecolor="black", linewidth=0.5, alpha=0.85))
        kv_x = g * n_rep + (n_rep - 1) / 2
        ax.plot([q, kv_x], [y_q, y_kv + h], color=colors[g], linewidth=0.8, alpha=0.8)
        if q % every == 0:
            ax.text(q, y_q + h + 0.12, str(q), ha="center", va="bottom", fontsize=7)
    for g in range(n_kv_heads):
        x0 = g * n_rep - 0.42
        ax.add_patch(FancyBboxPatch((x0, y_kv), n_rep - 0.16, h, boxstyle="round,pad=0.02",
                                    facecolor=colors[g], edgecolor="black", linewidth=0.8))
        if n_kv_heads <= 16 or g % every == 0:
            ax.text(g * n_rep + (n_rep - 1) / 2, y_kv - 0.12, str(g), ha="center", va="top", fontsize=7)
    ax.text(-1.0, y_q + h / 2, "query\nheads", ha="right", va="center", fontsize=9)
    ax.text(-1.0, y_kv + h / 2, "key/value\nheads", ha="right", va="center", fontsize=9)
    ax.set_xlim(-1.2, n_heads - 0.2)
    ax.set_ylim(-0.7, y_q + h + 0.6)
    ax.axis("off")
    ax.set_title(title if title is not None else
                 f"{n_heads} query heads, {n_kv_heads} key/value heads ({n_rep} per group)", fontsize=10)
    return ax


def plot_attention_heads(weights, labels: Optional[Sequence[str]] = None, n_kv_heads: int = 1,
                         mask=None, fig=None, suptitle: str = ""):
    """One heatmap per query head, a row per key/value group.

    weights: (H, S, T) attention weights of one sequence (rows sum to 1).
    mask: optional (S, T) bool; masked-out cells are left blank (white) instead of drawn as 0.
    Returns the (n_kv_heads, H // n_kv_heads) array of Axes.
    """
    w = weights.detach().float().cpu().numpy() if hasattr(weights, "detach") else np.asarray(weights, float)
    if w.ndim != 3:
        raise ValueError(f"weights must be (heads, queries, keys), got shape {w.shape}")
    if mask is not None:
        m = mask.detach().cpu().numpy() if hasattr(mask, "detach") else np.asarray(mask)
        w = np.where(m.astype(bool)[None], w, np.nan)
    H = w.shape[0]
    if H % n_kv_heads:
        raise ValueError(f"{H} heads cannot be split into {n_kv_heads} key/value groups")
    n_rep = H // n_kv_heads
    if fig is None:
        fig = plt.figure(figsize=(2.6 * n_rep + 1.0, 2.6 * n_kv_heads + 0.6), layout="constrained")
    axes = np.array(fig.subplots(n_kv_heads, n_rep, squeeze=False))
    colors = group_colors(n_kv_heads)
    vmax = float(np.nanmax(w))
    for h in range(H):
        g, r = divmod(h, n_rep)
        ax = axes[g, r]
        heatmap(w[h], ax=ax, xlabels=labels if g == n_kv_heads - 1 else None,
                ylabels=labels if r == 0 else None, vmin=0.0, vmax=vmax, colorbar=False, cmap="magma",
                xlabel="key" if g == n_kv_heads - 1 else "", ylabel="query" if r == 0 else "")
        ax.set_title(f"query head {h} \u2192 kv head {g}", fontsize=9, color=colors[g])
        if g != n_kv_heads - 1:
            ax.set_xticks([])
        if r != 0:
            ax.set_yticks([])
        for side in ax.spines.values():
            side.set_edgecolor(colors[g])
            side.set_linewidth(2)
    fig.colorbar(axes[0, 0].images[0], ax=axes.ravel().tolist(), shrink=0.6, label="attention weight")
    if suptitle:
        fig.suptitle(suptitle, fontsize=11)
    return axes


def plot_kv_bytes(names: Sequence[str], bytes_per_token: Sequence[int], ax=None, title: str = ""):
    """Horizontal bars of KV-cache bytes per token (x axis in KiB), each bar annotated with its bytes."""
    values = [int(b) for b in bytes_per_token]
    ax = new_axes(ax, figsize=(6, 0.6 * len(values) + 1.0))
    y = np.arange(len(values))
    kib = [b / 1024 for b in values]
    ax.barh(y, kib, color=group_colors(len(values)))
    for yi, b in zip(y, values):
        ax.text(b / 1024, yi, f"  {b:,} bytes = {b / 1024:g} KiB", va="center", fontsize=9)
    ax.set_yticks(y, list(names))
    ax.invert_yaxis()
    ax.set_xlim(0, max(kib) * 1.7)
    ax.set_xlabel("KV-cache KiB per token")
    ax.spines[["top", "right"]].set_visible(False)
    if title:
        ax.set_title(title, fontsize=10)
    return ax
