"""Figures of chapter 05 (sliding-window masks and the receptive field).

* ``plot_mask``: a boolean (query, key) mask as a grid, optionally with one query row highlighted;
* ``plot_banded_tiles``: the mask with the tiles ``banded_attention`` actually computes;
* ``plot_reachability``: which positions can influence which after k layers;
* ``plot_reach_strip``: for the last token, the positions that can reach it, one row per depth;
* ``plot_attended_pairs``: attended (query, key) pairs of full causal vs sliding-window attention.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from ..masks import reachability, sliding_window_mask
from .common import new_axes

__all__ = ["MASK_COLORS", "plot_mask", "plot_banded_tiles", "plot_reachability", "plot_reach_strip",
           "plot_attended_pairs", "plot_influence"]

# 0 = masked out, 1 = attended, 2 = attended by the highlighted query
MASK_COLORS = ["#f4f4f4", "#6f9fd8", "#d62728"]


def _as_int_array(mask) -> np.ndarray:
    if hasattr(mask, "detach"):
        mask = mask.detach().cpu().numpy()
    a = np.asarray(mask)
    if a.ndim != 2:
        raise ValueError(f"mask must be 2-D (queries, keys), got shape {a.shape}")
    return a.astype(int)


def _grid(ax, rows: int, cols: int, labels_x, labels_y, max_ticks: int):
    ax.set_xticks(np.arange(-0.5, cols, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, rows, 1), minor=True)
    ax.grid(which="minor", color="white", linewidth=0.6 if max(rows, cols) <= 40 else 0)
    ax.tick_params(which="minor", length=0)
    if labels_x is not None and len(labels_x) <= max_ticks:
        ax.set_xticks(range(cols), list(labels_x), rotation=90, fontsize=7)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=8, min_n_ticks=1))
    if labels_y is not None and len(labels_y) <= max_ticks:
        ax.set_yticks(range(rows), list(labels_y), fontsize=7)
    else:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=8, min_n_ticks=1))


def plot_mask(mask, ax=None, labels: Optional[Sequence[str]] = None, title: str = "",
              highlight_row: Optional[int] = None, xlabel: str = "key position",
              ylabel: str = "query position", max_ticks: int = 40):
    """Draw a boolean (queries, keys) mask: attended cells blue, masked cells light grey.

    ``highlight_row`` colours that query's attended keys red. Returns the Axes.
    """
    a = _as_int_array(mask)
    if highlight_row is not None:
        a = a.copy()
        a[highlight_row] *= 2
    ax = new_axes(ax, figsize=(4, 4))
    ax.imshow(a, cmap=ListedColormap(MASK_COLORS), vmin=0, vmax=2, interpolation="nearest")
    rows, cols = a.shape
    _grid(ax, rows, cols, labels, labels, max_ticks)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def plot_banded_tiles(seq_len: int, window: int, block_size: Optional[int] = None, ax=None,
                      labels: Optional[Sequence[str]] = None, title: Optional[str] = None):
    """The sliding-window mask with one rectangle per query block of ``banded_attention``.

    The blocks are ``attention.band_blocks`` (block size ``attention.default_block_size(W)`` unless
    given): block [s0, s1) of queries is scored against keys [k0, s1) only, so everything outside
    the rectangles is never computed. The title compares the scores computed with dense attention's S².
    """
    from ..attention import band_blocks, default_block_size

    block = block_size or default_block_size(window)
    ax = plot_mask(sliding_window_mask(seq_len, window), ax=ax, labels=labels, title="")
    computed = 0
    for s0, s1, k0 in band_blocks(seq_len, window, block):
        computed += (s1 - s0) * (s1 - k0)
        ax.add_patch(Rectangle((k0 - 0.5, s0 - 0.5), s1 - k0, s1 - s0, fill=False,
                               edgecolor="black", linewidth=1.6, zorder=3))
    ax.set_title(title if title is not None else
                 f"S = {seq_len}, W = {window}, blocks of {block} queries:\n"
                 f"{computed} scores computed instead of {seq_len * seq_len}", fontsize=9)
    return ax


def plot_reachability(reach, ax=None, labels: Optional[Sequence[str]] = None, title: str = "",
                      query: int = -1, max_ticks: int = 40):
    """Draw a (seq_len, seq_len) reachability matrix; the row of ``query`` (default the last) in red.

    Cell (i, j) is filled when position j can influence position i.
    """
    a = _as_int_array(reach)
    return plot_mask(a, ax=ax, labels=labels, title=title, highlight_row=query % a.shape[0],
                     xlabel="source position (can influence ...)", ylabel="target position",
                     max_ticks=max_ticks)


def plot_reach_strip(seq_len: int, window: int, n_layers: int, ax=None,
                     labels: Optional[Sequence[str]] = None, max_ticks: int = 40):
    """One row per depth k = 1 .. n_layers: the positions that can influence the last token.

    Computed with ``masks.reachability``; each row is annotated with the reach k * (W - 1).
    """
    rows = np.stack([reachability(seq_len, window, k)[-1].numpy() for k in range(1, n_layers + 1)]).astype(int)
    ax = new_axes(ax, figsize=(max(5, seq_len * 0.25), 0.45 * n_layers + 1.2))
    ax.imshow(rows * 2, cmap=ListedColormap(MASK_COLORS), vmin=0, vmax=2, interpolation="nearest",
              aspect="auto")
    _grid(ax, n_layers, seq_len, labels, None, max_ticks)
    ax.set_yticks(range(n_layers), [f"{k} layer{'s' if k > 1 else ''}" for k in range(1, n_layers + 1)],
                  fontsize=8)
    for k in range(1, n_layers + 1):
        first = int(np.argmax(rows[k - 1]))
        ax.text(first - 0.7, k - 1, f"{seq_len - 1 - first} back", ha="right", va="center", fontsize=7)
    ax.set_xlim(-0.5 - min(seq_len, 6), seq_len - 0.5)
    if labels is None or len(labels) > max_ticks:
        step = max(1, int(np.ceil(seq_len / 8)))
        ax.set_xticks(range(0, seq_len, step))
    ax.set_xlabel("position")
    ax.set_title(f"positions that can influence the last token (W = {window})", fontsize=10)
    return ax


def plot_attended_pairs(seq_lens: Sequence[int], full_pairs: Sequence[int], window_pairs: Sequence[int],
                        window: int, ax=None, title: str = ""):
    """Attended (query, key) pairs against sequence length, log-log: S(S+1)/2 vs about S * W."""
    ax = new_axes(ax, figsize=(5.5, 3.8))
    ax.loglog(seq_lens, full_pairs, "o-", label="full causal: S(S+1)/2", color="#444444")
    ax.loglog(seq_lens, window_pairs, "s-", label=f"sliding window W = {window:,}", color=MASK_COLORS[1])
    ax.axvline(window, color=MASK_COLORS[2], linestyle=":", linewidth=1)
    ax.text(window, min(full_pairs), " S = W", color=MASK_COLORS[2], fontsize=8, va="bottom")
    ax.set_xlabel("sequence length S (tokens)")
    ax.set_ylabel("attended (query, key) pairs")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def plot_influence(norms, ax=None, first_reachable: Optional[int] = None,
                   labels: Optional[Sequence[str]] = None, title: str = ""):
    """Bars (log scale) of how strongly each input position influences an output, e.g. gradient norms.

    Exact zeros are drawn as small grey ticks at the bottom; ``first_reachable`` draws the
    receptive-field boundary as a dashed line.
    """
    v = norms.detach().float().cpu().numpy() if hasattr(norms, "detach") else np.asarray(norms, float)
    ax = new_axes(ax, figsize=(max(5, len(v) * 0.3), 3.2))
    x = np.arange(len(v))
    nz = v > 0
    floor = v[nz].min() / 10 if nz.any() else 1e-12
    ax.bar(x[nz], v[nz], bottom=floor, color=MASK_COLORS[1], label="influence > 0")
    ax.scatter(x[~nz], np.full((~nz).sum(), floor), marker="|", s=80, color="#999999",
               label="exactly 0")
    ax.set_yscale("log")
    ax.set_ylim(bottom=floor * 0.8)
    if first_reachable is not None:
        ax.axvline(first_reachable - 0.5, color=MASK_COLORS[2], linestyle="--", linewidth=1.2,
                   label="receptive-field boundary")
    if labels is not None and len(labels) <= 40:
        ax.set_xticks(x, list(labels), rotation=90, fontsize=7)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("input position")
    ax.set_ylabel("influence on the last output")
    ax.legend(fontsize=8, loc="upper left")
    if title:
        ax.set_title(title, fontsize=10)
    return ax
