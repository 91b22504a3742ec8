"""Figures of chapter 13: the tensor-parallel partition of a block, memory and communication per rank,
and the paged KV cache of a serving engine next to the rolling buffer."""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np
from matplotlib.patches import Circle, FancyArrowPatch, Patch, Rectangle

from .common import despine, new_axes

__all__ = ["plot_tp_partition", "plot_tp_memory", "plot_tp_times", "plot_paged_vs_rolling",
           "plot_kv_per_sequence", "rank_color"]

_PALETTE = ["#264653", "#2a9d8f", "#e9c46a", "#f4a261", "#e76f51", "#8ab17d", "#6d597a", "#b56576"]
_GREY, _LIGHT = "#dedede", "#f4f4f4"


def rank_color(rank: int) -> str:
    """The colour of a rank in every figure of the chapter (8 colours, then they repeat)."""
    return _PALETTE[rank % len(_PALETTE)]


def _stripes(ax, x, y, w, h, world, axis, name, groups=None):
    """A matrix (x, y: lower-left corner) cut into ``world`` stripes — rows (axis 0) or columns (axis 1).

    ``groups``: for replicated key/value heads, the number of distinct stripes; stripe g is held by
    ranks g*m .. (g+1)*m - 1 (m = world / groups) and drawn hatched in the first one's colour.
    """
    n = groups or world
    m = world // n
    for i in range(n):
        if axis == 0:            # rows: rank 0 at the top
            rect = Rectangle((x, y + h - (i + 1) * h / n), w, h / n)
        else:                    # columns: rank 0 at the left
            rect = Rectangle((x + i * w / n, y), w / n, h)
        rect.set_facecolor(rank_color(i * m))
        rect.set_edgecolor("white")
        rect.set_linewidth(1.0)
        if m > 1:
            rect.set_hatch("//")
            rect.set_gid(f"{name}/ranks{i * m}-{(i + 1) * m - 1}")
        else:
            rect.set_gid(f"{name}/rank{i}")
        ax.add_patch(rect)
    ax.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor="black", linewidth=1.0))


def _all_reduce_marker(ax, x, y, label):
    ax.add_patch(Circle((x, y), 0.28, facecolor="white", edgecolor="#c1121f", linewidth=2, gid="all-reduce"))
    ax.text(x, y, "Σ", ha="center", va="center", fontsize=13, color="#c1121f", fontweight="bold")
    ax.text(x, y - 0.45, label, ha="center", va="top", fontsize=8, color="#c1121f")


def _arrow(ax, x0, x1, y=0.0):
    ax.add_patch(FancyArrowPatch((x0, y), (x1, y), arrowstyle="-|>", mutation_scale=12, color="#555555",
                                 linewidth=1.2))


def plot_tp_partition(args, world: int, ax=None, title: str = ""):
    """One transformer block of ``args`` split over ``world`` ranks, drawn to scale.

    Every weight is a rectangle of height = output features and width = input features (as stored,
    (out, in)), cut into one coloured stripe per rank: wq/wk/wv and w1/w3 by rows (each rank computes
    its own heads / hidden features), wo and w2 by columns (each rank's partial product) — followed by
    the two all-reduces (Σ). With more ranks than key/value heads, wk/wv show one hatched stripe per
    key/value head, held by several ranks.
    """
    d = args.dim
    hq, hkv, f = args.n_heads * args.head_dim / d, args.n_kv_heads * args.head_dim / d, args.hidden_dim / d
    groups = args.n_kv_heads if world > args.n_kv_heads else None
    ax = new_axes(ax, figsize=(13, 4.8))
    gap = 0.9
    x = 0.0
    # attention: wq over wk over wv, rows split
    top = (hq + 2 * hkv + 0.3) / 2
    y = top
    for name, h, grp in (("wq", hq, None), ("wk", hkv, groups), ("wv", hkv, groups)):
        y -= h
        _stripes(ax, x, y, 1.0, h, world, 0, name, grp)
        ax.text(x - 0.08, y + h / 2, f"{name}\n{int(h * d)}×{d}", ha="right", va="center", fontsize=8)
        y -= 0.15
    ax.text(x + 0.5, -top - 0.25, "rows = heads\n(column-parallel)", ha="center", va="top", fontsize=8)
    _arrow(ax, x + 1.1, x + 1.1 + gap - 0.2)
    ax.text(x + 1.1 + (gap - 0.2) / 2, 0.12, "attention of\nown heads", ha="center", va="bottom", fontsize=7)
    x += 1.0 + gap
    _stripes(ax, x, -0.5, hq, 1.0, world, 1, "wo")
    ax.text(x + hq / 2, 0.55, f"wo  {d}×{int(hq * d)}", ha="center", va="bottom", fontsize=8)
    ax.text(x + hq / 2, -top - 0.25, "columns = heads\n(row-parallel)", ha="center", va="top", fontsize=8)
    x += hq + 0.5
    _all_reduce_marker(ax, x, 0.0, "all-reduce 1")
    _arrow(ax, x + 0.3, x + gap)
    x += gap + 0.1
    # feed-forward: w1 and w3 side by side, rows split
    for name in ("w1", "w3"):
        _stripes(ax, x, -f / 2, 1.0, f, world, 0, name)
        ax.text(x + 0.5, f / 2 + 0.05, f"{name}\n{int(f * d)}×{d}", ha="center", va="bottom", fontsize=8)
        x += 1.15
    ax.text(x - 1.15, -f / 2 - 0.1, "rows = hidden features\n(column-parallel)", ha="center", va="top", fontsize=8)
    _arrow(ax, x - 0.05, x + gap - 0.3)
    ax.text(x + (gap - 0.35) / 2, 0.12, "silu(·)·(·)", ha="center", va="bottom", fontsize=7)
    x += gap - 0.2
    _stripes(ax, x, -0.5, f, 1.0, world, 1, "w2")
    ax.text(x + f / 2, 0.55, f"w2  {d}×{int(f * d)}", ha="center", va="bottom", fontsize=8)
    ax.text(x + f / 2, -f / 2 - 0.1, "columns = hidden features\n(row-parallel)", ha="center", va="top", fontsize=8)
    x += f + 0.5
    _all_reduce_marker(ax, x, 0.0, "all-reduce 2")
    ax.set_xlim(-0.9, x + 0.6)
    ax.set_ylim(-max(f, 2 * top) / 2 - 0.9, max(f, 2 * top) / 2 + 0.6)
    ax.set_aspect("equal")
    ax.axis("off")
    shown = min(world, len(_PALETTE))
    handles = [Patch(color=rank_color(r), label=f"rank {r}") for r in range(shown)]
    ax.legend(handles=handles, loc="lower left", bbox_to_anchor=(0.0, 0.0), ncol=2 if shown > 4 else 1,
              fontsize=8, frameon=False)
    ax.set_title(title or f"one block split over {world} ranks", pad=6)
    return ax


def plot_tp_memory(rows: Sequence[dict], ax=None, title: str = "", unit: float = 1e9):
    """Bars of bytes per rank (in GB) for each degree: weights, plus the rolling cache stacked on top.

    rows: ``mistral_nb.parallel.memory_per_rank`` output (keys 'ranks', 'weights', 'kv cache',
    'total', 'kv replicas'). Degrees whose key/value heads are replicated are marked.
    """
    ax = new_axes(ax, figsize=(7, 3.8))
    labels = [str(r["ranks"]) + (" (kv ×%d)" % r["kv replicas"] if r["kv replicas"] > 1 else "") for r in rows]
    x = np.arange(len(rows))
    w = np.array([r["weights"] for r in rows]) / unit
    c = np.array([r["kv cache"] for r in rows]) / unit
    ax.bar(x, w, width=0.6, color="#2a9d8f", label="weights (its slices)")
    ax.bar(x, c, bottom=w, width=0.6, color="#f4a261", label="rolling KV cache (its kv heads)")
    for xi, total in zip(x, w + c):
        ax.text(xi, total, f"{total:.2f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, labels)
    ax.set_xlabel("tensor-parallel degree (ranks)")
    ax.set_ylabel("GB per rank")
    ax.set_ylim(0, (w + c).max() * 1.15)
    ax.legend(fontsize=8, frameon=False)
    despine(ax)
    if title:
        ax.set_title(title)
    return ax


def plot_tp_times(tokens: Sequence[int], times: Dict[int, Dict[str, Sequence[float]]], ax=None, title: str = ""):
    """Time of one forward pass on one rank against the tokens it processes (batch × tokens per
    sequence), log-log: the rank's computation (solid) and its all-reduces over each link (dashed,
    dotted, ...), one colour per degree.

    times: {degree: {"compute": seconds per pass, link name: all-reduce seconds per pass, ...}}, each
    a sequence over ``tokens`` (``parallel.rank_pass_seconds``). A dot marks where a link's line
    crosses the compute line: beyond it the all-reduces take longer than the computation.
    """
    ax = new_axes(ax, figsize=(7, 4.2))
    t = np.asarray(tokens, dtype=float)
    styles = ["--", ":", "-."]
    for i, n in enumerate(sorted(times)):
        color = _PALETTE[(i * 2 + 1) % len(_PALETTE)]
        compute = np.asarray(times[n]["compute"], dtype=float) * 1e6
        ax.plot(t, compute, color=color, lw=2, label=f"{n} ranks: compute")
        links = [k for k in times[n] if k != "compute"]
        for style, link in zip(styles, links):
            comm = np.asarray(times[n][link], dtype=float) * 1e6
            ax.plot(t, comm, color=color, ls=style, lw=1.3, label=f"{n} ranks: all-reduce, {link}")
            above = np.nonzero(comm > compute)[0]
            if len(above):
                ax.plot([t[above[0]]], [compute[above[0]]], "o", color=color, ms=5)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("tokens in one forward pass (batch × tokens per sequence)")
    ax.set_ylabel("µs per forward pass, one rank")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, frameon=False, ncol=1, loc="upper left")
    despine(ax)
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def plot_paged_vs_rolling(n_tokens: int, window: int, table: Sequence[Optional[int]], block_size: int, axes=None):
    """Where the keys of a sequence of ``n_tokens`` tokens live: the rolling buffer (top: W slots,
    position p in slot p mod W) and a paged cache (bottom: the block table, logical block i -> a
    physical block of ``block_size`` slots from a shared pool; None = freed, outside the window).

    Colours: blue = a key the next token (position n_tokens) can see; grey = held but outside the
    window; white = a slot not written yet; hatched = a freed block (the table points to nothing).
    """
    import matplotlib.pyplot as plt

    width = max(window, len(table) * block_size)
    if axes is None:
        _, axes = plt.subplots(2, 1, figsize=(max(7.0, 0.62 * width + 1), 3.4), constrained_layout=True,
                               gridspec_kw={"height_ratios": [1, 1]})
    top, bottom = axes
    first_seen = n_tokens - window + 1              # the next token (position n) sees n - W + 1 .. n

    def cell(ax, x, p, gid, freed=False):
        if freed:
            color, hatch = _LIGHT, "//"
        elif p is None or p >= n_tokens:
            color, hatch = "white", None
        else:
            color, hatch = ("#a8dadc" if p >= first_seen else _GREY), None
        rect = Rectangle((x, 0), 1, 1, facecolor=color, edgecolor="#999999", linewidth=0.8, hatch=hatch, gid=gid)
        ax.add_patch(rect)
        if p is not None and p < n_tokens and not freed:
            ax.text(x + 0.5, 0.5, f"p={p}", ha="center", va="center", fontsize=7)

    for s in range(window):
        held = [p for p in range(n_tokens) if p % window == s]
        cell(top, s, held[-1] if held else None, f"slot{s}")
        top.text(s + 0.5, -0.08, f"slot {s}", ha="center", va="top", fontsize=7, color="#555555")
    top.text(0, 1.12, f"rolling buffer: {window} slots per sequence, position p in slot p mod {window}",
             fontsize=9, va="bottom")
    for b, phys in enumerate(table):
        x0 = b * block_size
        for j in range(block_size):
            cell(bottom, x0 + j, x0 + j, f"block{b}/slot{j}", freed=phys is None)
        bottom.add_patch(Rectangle((x0, 0), block_size, 1, fill=False, edgecolor="black", linewidth=1.4))
        label = "freed (null block)" if phys is None else f"physical block {phys}"
        bottom.text(x0 + block_size / 2, -0.08, f"logical block {b} → {label}", ha="center", va="top", fontsize=8)
    bottom.text(0, 1.12, f"paged cache: a block table of {len(table)} entries, blocks of {block_size} slots "
                "from a pool shared by all sequences", fontsize=9, va="bottom")
    for ax in axes:
        ax.set_xlim(-0.05, width + 0.05)
        ax.set_ylim(-0.45, 1.45)
        ax.axis("off")
    return axes


def plot_kv_per_sequence(lengths: Sequence[int], series: Dict[str, Sequence[float]], ax=None, title: str = "",
                         unit: float = 1e9):
    """Cache bytes one sequence holds (GB) against its length, one line per cache design."""
    ax = new_axes(ax, figsize=(7, 3.8))
    styles = ["-", "--", ":", "-."]
    for i, (name, values) in enumerate(series.items()):
        if len(values) != len(lengths):
            raise ValueError(f"series {name!r} has {len(values)} values for {len(lengths)} lengths")
        ax.plot(lengths, np.asarray(values, dtype=float) / unit, styles[i % len(styles)], label=name,
                color=_PALETTE[(i * 3 + 1) % len(_PALETTE)], linewidth=2)
    ax.set_xlabel("tokens in the sequence")
    ax.set_ylabel("KV cache per sequence (GB)")
    ax.legend(fontsize=8, frameon=False)
    despine(ax)
    if title:
        ax.set_title(title)
    return ax
