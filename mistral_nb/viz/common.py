"""Shared plotting helpers: fresh axes, a labelled heatmap (masks, attention weights, caches), despine."""

from __future__ import annotations

from typing import Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np


def new_axes(ax=None, figsize=(5, 4)):
    """Return ``ax``, or a fresh Axes of ``figsize`` when ``ax`` is None."""
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def despine(ax) -> None:
    """Hide the top and right frame lines of a bar or line chart."""
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def heatmap(matrix, ax=None, xlabels: Optional[Sequence[str]] = None, ylabels: Optional[Sequence[str]] = None,
            title: str = "", xlabel: str = "key", ylabel: str = "query", cmap: str = "viridis",
            vmin=None, vmax=None, colorbar: bool = True, max_ticks: int = 40):
    """Draw a 2-D array as an image with optional token labels on the axes.

    matrix: (rows, cols) tensor or array; rows are queries (y axis), columns keys (x axis).
    Labels are shown only when there are at most ``max_ticks`` of them.
    """
    data = matrix.detach().float().cpu().numpy() if hasattr(matrix, "detach") else np.asarray(matrix, dtype=float)
    ax = new_axes(ax)
    im = ax.imshow(data, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest", aspect="auto")
    if xlabels is not None and len(xlabels) <= max_ticks:
        ax.set_xticks(range(len(xlabels)), list(xlabels), rotation=90, fontsize=8)
    if ylabels is not None and len(ylabels) <= max_ticks:
        ax.set_yticks(range(len(ylabels)), list(ylabels), fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if colorbar:
        ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return ax
