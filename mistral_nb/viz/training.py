"""Figures of chapter 11 (a tiny Mistral trained on key recall; how far information travels).

* ``plot_loss_curve``: training loss per step, with the lowest loss the receptive field allows;
* ``plot_recall_by_distance``: recall accuracy against the key's distance, one curve per model,
  each model's reach L x (W - 1) marked by a dashed line in its colour;
* ``plot_attention_layers``: attention weights of one sequence, a row per layer and a column per head;
* ``plot_key_influence``: how much swapping the key changes each layer's residual stream, by distance,
  with the reach l x (W - 1) of every layer l outlined;
* ``plot_hop_path``: the chain of strongest attention links that carries the key to a query.
"""

from __future__ import annotations

from typing import Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import LogNorm, Normalize
from matplotlib.patches import Patch

from .common import heatmap, new_axes

__all__ = ["plot_loss_curve", "plot_recall_by_distance", "plot_attention_layers", "plot_key_influence",
           "plot_hop_path"]

KEY_COLOR = "#d62728"
MASKED_COLOR = "#b8b8b8"   # cells the mask forbids: grey, so they cannot be read as weights near 0


def _np(x) -> np.ndarray:
    return x.detach().float().cpu().numpy() if hasattr(x, "detach") else np.asarray(x, dtype=float)


def plot_loss_curve(losses: Sequence[float], ax=None, floor: Optional[float] = None, every: int = 1,
                    label: Optional[str] = None, title: str = "", color=None):
    """Loss against training step. ``losses[i]`` is the loss at step ``i * every`` (pass ``every``
    for a smoothed history); ``floor`` draws the lowest reachable loss as a dashed line."""
    y = _np(losses)
    ax = new_axes(ax, figsize=(5.5, 3.4))
    (line,) = ax.plot(np.arange(len(y)) * every, y, label=label, color=color, linewidth=1.4)
    if floor is not None:
        ax.axhline(floor, color=line.get_color(), linestyle="--", linewidth=1,
                   label=f"floor {floor:.2f} (keys out of reach)" if label is None else None)
    ax.set_xlabel("training step")
    ax.set_ylabel("cross-entropy (nats)")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    if label is not None or floor is not None:
        ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def plot_recall_by_distance(curves: Sequence[dict], ax=None, chance: Optional[float] = None, title: str = "",
                            xlabel: str = "distance d from the key (tokens)"):
    """Accuracy against distance, one line per model.

    curves: dicts with ``label``, ``distance`` and ``accuracy`` (as ``tasks.accuracy_by_distance``
        returns them) and optionally ``reach`` (L x (W - 1), drawn as a dashed vertical line just
        after the last reachable distance; None for full attention) and ``color``.
    chance: accuracy of a guess, drawn as a grey dotted line.
    """
    ax = new_axes(ax, figsize=(6.5, 3.6))
    cmap = plt.get_cmap("tab10")
    for i, c in enumerate(curves):
        color = c.get("color", cmap(i % 10))
        ax.plot(c["distance"], c["accuracy"], marker="o", markersize=2.5, linewidth=1.3, color=color,
                label=c["label"], linestyle=c.get("linestyle", "-"))
        if c.get("reach") is not None:
            ax.axvline(c["reach"] + 0.5, color=color, linestyle="--", linewidth=1, alpha=0.8)
    if chance is not None:
        ax.axhline(chance, color="#777777", linestyle=":", linewidth=1, label=f"chance ({chance:.3g})")
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("recall accuracy")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="center right")
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def plot_attention_layers(maps, labels: Optional[Sequence[str]] = None, window: Optional[int] = None,
                          key_pos: Optional[int] = None, positions: Optional[Sequence[int]] = None,
                          fig=None, suptitle: str = "", cell: float = 0.11):
    """Attention weights of one sequence: a row per layer, a column per query head.

    maps: (L, H, S, S) weights (``evals.heads.attention_maps(model, tokens)[:, 0]``).
    positions: (start, stop) to show only queries and keys in that range.
    window: masked cells (outside the causal window) are grey, distinct from the palest colour
    (a weight of 0), and a legend entry says so.
    key_pos: the key's column and row labels are drawn in red.
    Returns the (L, H) array of Axes.
    """
    w = _np(maps)
    if w.ndim != 4:
        raise ValueError(f"maps must be (layers, heads, queries, keys), got shape {w.shape}")
    L, H, S, _ = w.shape
    start, stop = positions if positions is not None else (0, S)
    q = np.arange(S)
    allowed = q[None, :] <= q[:, None]
    if window is not None:
        allowed &= q[:, None] - q[None, :] < window
    w = np.where(allowed[None, None], w, np.nan)[:, :, start:stop, start:stop]
    lab = list(labels)[start:stop] if labels is not None else None
    n = stop - start
    if fig is None:
        side = max(1.8, n * cell)
        fig = plt.figure(figsize=(side * H + 1.2, side * L + 0.8), layout="constrained")
    axes = np.array(fig.subplots(L, H, squeeze=False))
    cmap = plt.get_cmap("magma_r").with_extremes(bad=MASKED_COLOR)
    for layer in range(L):
        for h in range(H):
            ax = axes[layer, h]
            bottom, left = layer == L - 1, h == 0
            heatmap(w[layer, h], ax=ax, xlabels=lab if bottom else None, ylabels=lab if left else None,
                    vmin=0.0, vmax=1.0, colorbar=False, cmap=cmap,
                    xlabel="key" if bottom else "", ylabel=f"layer {layer + 1}\nquery" if left else "")
            if not bottom:
                ax.set_xticks([])
            if not left:
                ax.set_yticks([])
            if layer == 0:
                ax.set_title(f"head {h}", fontsize=9)
            if key_pos is not None and start <= key_pos < stop:
                k = key_pos - start
                ax.axvline(k, color=KEY_COLOR, linewidth=0.6, alpha=0.5)
                for ticks in (ax.get_xticklabels() if bottom else []), (ax.get_yticklabels() if left else []):
                    if k < len(ticks):
                        ticks[k].set_color(KEY_COLOR)
    bar = fig.colorbar(axes[0, 0].images[0], ax=axes.ravel().tolist(), shrink=0.5, label="attention weight")
    bar.ax.legend(handles=[Patch(facecolor=MASKED_COLOR, edgecolor="#888888", label="masked\n(not a key\nof this query)")],
                  loc="upper left", bbox_to_anchor=(-0.5, -0.04), fontsize=8, frameon=False, handlelength=1.2)
    if suptitle:
        fig.suptitle(suptitle, fontsize=11)
    return axes


def plot_key_influence(influence, window: Optional[int] = None, ax=None, title: str = "", log: bool = False):
    """Relative change of the residual stream when the key is swapped: rows = embeddings and the output
    of each layer, columns = distance from the key (``tasks.key_influence_by_distance``).

    Exact zeros (no path from the key) are white. With ``window``, the reach l x (W - 1) of every
    row l is outlined in red: nothing can appear right of it. ``log``: logarithmic colour scale.
    """
    v = _np(influence)
    n_rows, n_cols = v.shape
    ax = new_axes(ax, figsize=(max(5.0, n_cols * 0.22), 0.5 * n_rows + 1.4))
    shown = np.ma.masked_where(v <= 0, v)
    cmap = plt.get_cmap("viridis").with_extremes(bad="white")
    top = max(float(v.max()), 1e-12)
    norm = LogNorm(vmin=top * 1e-3, vmax=top, clip=True) if log else Normalize(vmin=0.0, vmax=top)
    im = ax.imshow(shown, cmap=cmap, norm=norm, aspect="auto", interpolation="nearest")
    ax.set_yticks(range(n_rows), ["embeddings"] + [f"after layer {i}" for i in range(1, n_rows)], fontsize=8)
    ax.set_xlabel("distance from the key (tokens)")
    if window is not None:
        for row in range(n_rows):
            edge = row * (window - 1) + 0.5
            ax.plot([edge, edge], [row - 0.5, row + 0.5], color=KEY_COLOR, linewidth=2)
            if row + 1 < n_rows:
                ax.plot([edge, edge + window - 1], [row + 0.5, row + 0.5], color=KEY_COLOR, linewidth=2)
        ax.plot([], [], color=KEY_COLOR, linewidth=2, label="reach l \u00d7 (W \u2212 1)")
        ax.legend(fontsize=8, loc="upper right")
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label="relative change")
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def plot_hop_path(path: Sequence[int], labels: Sequence[str], window: Optional[int] = None,
                  weights: Optional[Sequence[float]] = None, key_pos: Optional[int] = None, ax=None,
                  title: str = ""):
    """The chain of strongest attention links from a query down to the key (``evals.heads.hop_path``).

    path: positions [p_0, p_1, ..., p_L]: p_L is the query; in layer l, p_l attends most to p_(l-1).
    weights: the attention weight of each link (drawn on the arrow).
    window: each layer's window [p_l - W + 1, p_l] is shaded.
    """
    L = len(path) - 1
    S = len(labels)
    ax = new_axes(ax, figsize=(max(6.0, S * 0.28), 0.8 * L + 1.4))
    for layer in range(1, L + 1):
        dst, src = path[layer], path[layer - 1]
        if window is not None:
            ax.fill_between([max(-0.5, dst - window + 0.5), dst + 0.5], layer - 0.28, layer + 0.28,
                            color="#6f9fd8", alpha=0.25, linewidth=0)
        ax.annotate("", xy=(dst, layer), xytext=(src, layer - 1),
                    arrowprops=dict(arrowstyle="-|>", color="#333333", linewidth=1.4, shrinkA=4, shrinkB=4))
        if weights is not None:
            ax.text((src + dst) / 2, layer - 0.5, f" {weights[layer - 1]:.2f}", fontsize=7, va="center",
                    ha="left", color="#333333")
        ax.plot([dst], [layer], "o", color="#333333", markersize=5)
    ax.plot([path[0]], [0], "o", color=KEY_COLOR if key_pos == path[0] else "#333333", markersize=6)
    ax.set_xlim(-0.5, S - 0.5)
    ax.set_ylim(-0.6, L + 0.6)
    ax.set_xticks(range(S), list(labels), rotation=90, fontsize=7)
    if key_pos is not None:
        ax.get_xticklabels()[key_pos].set_color(KEY_COLOR)
    ax.set_yticks(range(L + 1), ["tokens"] + [f"layer {i}" for i in range(1, L + 1)], fontsize=8)
    ax.grid(True, axis="x", alpha=0.2)
    ax.set_xlabel("position")
    if title:
        ax.set_title(title, fontsize=10)
    return ax
