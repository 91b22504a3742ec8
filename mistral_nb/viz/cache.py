"""Figures of chapter 06: the rolling-buffer cache filling and wrapping, chunk masks, cache memory."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from matplotlib.patches import Patch, Rectangle

from .common import new_axes

__all__ = ["plot_rolling_buffer", "plot_chunk_mask", "plot_chunk_masks", "plot_kv_cache_memory"]

_NEW, _KEPT, _EMPTY, _OFF = "#f4a261", "#a8dadc", "#dedede", "#f7f7f7"


def _as_int_array(x) -> np.ndarray:
    return x.detach().cpu().numpy().astype(int) if hasattr(x, "detach") else np.asarray(x, dtype=int)


def plot_rolling_buffer(history, tokens: Optional[Sequence[str]] = None, ax=None, title: str = ""):
    """Draw a rolling buffer step by step: one row per decoded token, one column per slot.

    history: (T, W) integer array — row t is ``cache.slot_pos`` after the token of step t was cached
    (-1 = empty slot). tokens: optional label of each position (``tokens[p]`` is shown above ``p``).
    The cell written at each step is highlighted; empty slots are grey.
    """
    h = _as_int_array(history)
    if h.ndim != 2:
        raise ValueError(f"history must be (steps, slots), got shape {h.shape}")
    T, W = h.shape
    ax = new_axes(ax, figsize=(1.1 * W + 2.6, 0.42 * T + 1.4))
    prev = np.full(W, -1)
    for t in range(T):
        for s in range(W):
            p = int(h[t, s])
            color = _EMPTY if p < 0 else (_NEW if p != prev[s] else _KEPT)
            ax.add_patch(_cell(s, t, color))
            if p < 0:
                label = "–"
            elif tokens is not None and p < len(tokens):
                label = f"{tokens[p]!r} @{p}" if isinstance(tokens[p], str) else f"{tokens[p]} @{p}"
            else:
                label = str(p)
            ax.text(s, t, label, ha="center", va="center", fontsize=9,
                    color="#999999" if p < 0 else "black", fontweight="bold" if color == _NEW else "normal")
        prev = h[t]
    ax.set_xlim(-0.5, W - 0.5)
    ax.set_ylim(T - 0.5, -0.5)
    ax.set_xticks(range(W), [f"slot {s}" for s in range(W)], fontsize=9)
    ax.xaxis.tick_top()
    ax.xaxis.set_label_position("top")
    ax.set_yticks(range(T), [f"step {t}" for t in range(T)], fontsize=9)
    ax.set_xlabel("buffer slot  (position p lives in slot p mod W)")
    ax.set_ylabel("after caching the token of step")
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.legend(handles=[Patch(color=_NEW, label="just written"), Patch(color=_KEPT, label="kept"),
                       Patch(color=_EMPTY, label="empty")],
              loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    if title:
        ax.set_title(title, pad=10)
    return ax


def _cell(x, y, color):
    """A unit square centred on (x, y), with a white border so neighbouring cells stay apart."""
    return Rectangle((x - 0.5, y - 0.5), 1, 1, facecolor=color, edgecolor="white", linewidth=2)


def plot_chunk_mask(mask, q_pos, k_pos, ax=None, title: str = "", n_cache: Optional[int] = None,
                    legend: bool = False):
    """Draw the mask of a chunk attending to the cache (plus itself).

    mask: (C, T) bool (one batch row and head of ``chunk_mask``); q_pos: (C,) query positions;
    k_pos: (T,) key positions — the ``n_cache`` cache slots (-1 = empty) then the chunk. By default
    the last C keys are the chunk when their positions are the queries' (``cache.begin`` of a chunk),
    and otherwise every key is a slot (a decode step, written into its slot first).
    Allowed cells are coloured and labelled with the key position — keys of this chunk in their own
    colour, wherever they sit — and a line separates cache and chunk.
    ``legend`` adds a colour key to the right of the axes.
    """
    m = _as_int_array(mask).astype(bool)
    q, k = _as_int_array(q_pos).ravel(), _as_int_array(k_pos).ravel()
    C, T = m.shape
    if (len(q), len(k)) != (C, T):
        raise ValueError(f"mask {m.shape} does not match {len(q)} query and {len(k)} key positions")
    if n_cache is None:
        n_cache = T - C if T > C and list(k[T - C:]) == list(q) else T
    ours = set(q.tolist())
    ax = new_axes(ax, figsize=(0.55 * T + 1.5, 0.55 * C + 1.6))
    for i in range(C):
        for j in range(T):
            new = j >= n_cache or k[j] in ours
            color = (_NEW if new else _KEPT) if m[i, j] else (_EMPTY if k[j] < 0 else _OFF)
            ax.add_patch(_cell(j, i, color))
            if m[i, j]:
                ax.text(j, i, str(k[j]), ha="center", va="center", fontsize=8)
    if n_cache < T:
        ax.axvline(n_cache - 0.5, color="black", linewidth=1.5)
    ax.set_xlim(-0.5, T - 0.5)
    ax.set_ylim(C - 0.5, -0.5)
    ax.set_xticks(range(T), [("–" if p < 0 else str(p)) for p in k], fontsize=8)
    ax.set_yticks(range(C), [str(p) for p in q], fontsize=8)
    ax.set_xlabel("key position  [cache slots | chunk]" if n_cache < T else "key position  [cache slots]")
    ax.set_ylabel("query position")
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    if legend:
        ax.legend(handles=[Patch(color=_KEPT, label="cached key, visible"), Patch(color=_NEW, label="this chunk's key, visible"),
                           Patch(facecolor=_OFF, edgecolor="#bbbbbb", label="masked"),
                           Patch(facecolor=_EMPTY, edgecolor="#bbbbbb", label="empty slot")],
                  loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def plot_chunk_masks(panels, cell: float = 0.48, legend: bool = True, ncols: Optional[int] = 2):
    """Several chunk masks on a grid of ``ncols`` columns (None: one row), panels top-aligned in each
    row, every cell the same size (``cell`` inches).

    panels: list of (mask (C, T), q_pos (C,), k_pos (T,), title) as for ``plot_chunk_mask``, placed
    row by row. A column is as wide as its widest panel, a row as tall as its tallest; the colour key
    sits to the right of the last panel. Returns the list of Axes.
    """
    import matplotlib.pyplot as plt

    shapes = [tuple(_as_int_array(m).shape) for m, *_ in panels]
    n = len(panels)
    ncols = n if ncols is None else max(1, min(int(ncols), n))
    nrows = -(-n // ncols)
    spot = [divmod(i, ncols) for i in range(n)]                       # (row, column) of each panel
    col_w = [max(T for (C, T), (r, c) in zip(shapes, spot) if c == col) * cell for col in range(ncols)]
    row_h = [max(C for (C, T), (r, c) in zip(shapes, spot) if r == row) * cell for row in range(nrows)]
    left, gap, right, top, bottom, key_w = 0.75, 0.85, 0.2, 0.6, 0.65, 2.1
    col_x = [left + sum(col_w[:c]) + gap * c for c in range(ncols)]
    row_top = [top + sum(row_h[:r]) + (top + bottom) * r for r in range(nrows)]   # inches from the top
    width = left + sum(col_w) + gap * (ncols - 1) + right
    if legend:                                                        # room for the key beside the last panel
        r, c = spot[-1]
        width = max(width, col_x[c] + shapes[-1][1] * cell + key_w)
    height = sum(row_h) + (top + bottom) * nrows
    fig = plt.figure(figsize=(width, height))
    axes = []
    for i, ((C, T), (r, c), (m, q, k, title)) in enumerate(zip(shapes, spot, panels)):
        ax = fig.add_axes([col_x[c] / width, (height - row_top[r] - C * cell) / height,
                           T * cell / width, C * cell / height])
        plot_chunk_mask(m, q, k, ax=ax, title=title, legend=legend and i == n - 1)
        if c:
            ax.set_ylabel("")
        if i:
            ax.set_xlabel("key position")
        axes.append(ax)
    return axes


def plot_kv_cache_memory(seq_lens, full_gb, rolling_gb, window: Optional[int] = None, ax=None,
                         title: str = "KV cache of Mistral 7B (bf16, batch 1)"):
    """Cache size against sequence length: a full cache grows linearly, the rolling one stops at W.

    seq_lens: (N,) token counts; full_gb, rolling_gb: (N,) sizes in GB. The last point's ratio is
    written next to it; ``window`` draws a dotted line where the rolling cache stops growing.
    """
    x = np.asarray(seq_lens, dtype=float)
    full, rolling = np.asarray(full_gb, dtype=float), np.asarray(rolling_gb, dtype=float)
    ax = new_axes(ax, figsize=(6, 3.8))
    ax.plot(x, full, color="#e76f51", linewidth=2, label="full cache (every token)")
    ax.plot(x, rolling, color="#2a9d8f", linewidth=2, label="rolling buffer (last W tokens)")
    if window is not None:
        ax.axvline(window, color="grey", linestyle=":", linewidth=1)
        ax.text(window, full.max() * 0.6, f" W = {window:,}", color="dimgrey", fontsize=8, va="center")
        ticks = np.arange(0, x.max() + 1, window)
        ax.set_xticks(ticks, [f"{t / 1024:g}k" if t else "0" for t in ticks])
    ratio = full[-1] / rolling[-1]
    xr = x[-1] * 0.985
    ax.annotate("", xy=(xr, full[-1]), xytext=(xr, rolling[-1]),
                arrowprops=dict(arrowstyle="<->", color="black", shrinkA=0, shrinkB=0))
    ax.text(xr * 0.985, (full[-1] + rolling[-1]) / 2, f"{ratio:.0f}× smaller", ha="right", va="center", fontsize=9)
    ax.set_xlabel("tokens in the sequence")
    ax.set_ylabel("cache size (GB)")
    ax.set_xlim(0, x.max() * 1.02)
    ax.set_ylim(0, full.max() * 1.05)
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    return ax
