"""Plots of the performance chapter: the recorded benchmarks (benchmarks/results/*.json), the
roofline of a machine with forward passes placed on it, and the tiles of a one-pass attention."""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import matplotlib.pyplot as plt

from .common import despine, new_axes

__all__ = ["plot_banded_vs_dense", "plot_speed_ratios", "plot_attention_cost",
           "plot_roofline", "plot_batch_capacity", "plot_flash_tiles"]


def plot_attention_cost(seq_lens: Sequence[int], window: int, ax=None):
    """Query-key pairs computed by dense masked attention (S^2) vs the banded path (~ S x (W + b))."""
    ax = new_axes(ax, figsize=(5.5, 3.6))
    from ..attention import banded_pairs, default_block_size
    from ..masks import attended_pairs

    block = default_block_size(window)
    dense = [s * s for s in seq_lens]
    banded = [banded_pairs(s, window) for s in seq_lens]
    needed = [attended_pairs(s, window) for s in seq_lens]
    ax.plot(seq_lens, [d / 1e6 for d in dense], "o-", label="dense masked: S²")
    ax.plot(seq_lens, [b / 1e6 for b in banded], "s-", label=f"banded (blocks of {block})")
    ax.plot(seq_lens, [n / 1e6 for n in needed], "k--", label="pairs inside the window")
    ax.set_xlabel("sequence length S")
    ax.set_ylabel("query·key pairs (millions)")
    ax.set_title(f"Attention work per head, W = {window}")
    ax.legend(fontsize=8)
    return ax


def plot_banded_vs_dense(rows: Sequence[dict], axes=None):
    """Two panels from banded_vs_dense.json rows: time and peak memory per sequence length.

    Both axes are logarithmic, so the S^2 growth of dense attention and the S x W growth of the
    banded path are straight lines of different slopes; each length's speed-up is written just
    below and to the right of its banded point, under the rising curves and inside the axes (the
    time axis reaches low enough to hold it), so no label crosses a curve or the tick labels.
    """
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(9.2, 3.8), layout="constrained")
    S = [r["seq_len"] for r in rows]
    axes[0].plot(S, [r["dense_s"] for r in rows], "o-", label="dense masked")
    axes[0].plot(S, [r["banded_s"] for r in rows], "s-", label="banded")
    for r in rows:
        axes[0].annotate(f"{r['speedup']:.1f}× faster", (r["seq_len"], r["banded_s"]), textcoords="offset points",
                         xytext=(5, -7), ha="left", va="top", fontsize=8, color="#333333")
    axes[0].set_ylabel("seconds per attention call")
    axes[0].set_title("time (median)")
    axes[1].plot(S, [r["dense_peak_mb"] for r in rows], "o-", label="dense masked")
    axes[1].plot(S, [r["banded_peak_mb"] for r in rows], "s-", label="banded")
    axes[1].set_ylabel("peak extra memory (MB)")
    axes[1].set_title("memory")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(S, [f"{s // 1024}k" for s in S])
        ax.set_xlim(S[0] / 1.3, S[-1] * 1.8)
        ax.set_xlabel("sequence length S")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    times = [r[k] for r in rows for k in ("dense_s", "banded_s")]
    axes[0].set_ylim(min(times) / 2.5, max(times) * 1.6)            # room for the labels under the lowest point
    return axes


SPEED_ROWS = [("prefill", "prefill_ratio"),
              ("generation", "generate_ratio"),
              ("generation,\ncompiled step", "generate_ratio_compiled"),
              ("transformers'\ncompiled generation", "hf_compiled_vs_hf_eager")]


def plot_speed_ratios(summary: dict, ax=None):
    """Horizontal bars of time relative to transformers' eager run (1 = parity), from
    vs_transformers.json: mistral_nb's prefill, its eager and compiled generation, and, in grey,
    transformers' own compiled generation."""
    ax = new_axes(ax, figsize=(6, 3.4))
    rows = [(name, summary[key]) for name, key in SPEED_ROWS]
    ys = range(len(rows))[::-1]
    colors = ["tab:blue", "tab:orange", "tab:orange", "tab:gray"]
    bars = ax.barh(list(ys), [r for _, r in rows], color=colors)
    ax.bar_label(bars, fmt="%.2f×", fontsize=8, padding=2)
    ax.set_yticks(list(ys), [n for n, _ in rows], fontsize=8)
    ax.axvline(1.0, color="k", lw=1, ls="--")
    ax.text(1.0, len(rows) - 0.45, " transformers (eager)", va="bottom", ha="left", fontsize=8)
    ax.set_xlabel("time relative to transformers' eager run (lower is faster)")
    ax.set_xlim(0, max(1.3, max(r for _, r in rows) * 1.2))
    ax.set_ylim(-0.6, len(rows) - 0.1)
    ax.set_title("mistral_nb vs transformers, same checkpoint (CPU)")
    return ax


def _si(x: float, unit: str) -> str:
    for prefix, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= scale:
            return f"{x / scale:.3g} {prefix}{unit}"
    return f"{x:.3g} {unit}"


def _roof_line(ax, machine, x, style: str, label: str):
    ax.plot(x, [machine.attainable(v) for v in x], color="black", lw=2 if style == "-" else 1.4, ls=style, label=label)
    ax.axvline(machine.ridge, color="#777777", ls=":", lw=1)


def plot_roofline(machine, points: Sequence[dict], ax=None, title: str = "", others: Sequence = ()):
    """A machine's roofline on log-log axes: attainable FLOP/s against arithmetic intensity
    (FLOP per byte), with the ridge point marked, and forward passes placed on it.

    machine: a ``speed.roofline.Machine``. others: more Machines drawn on the same axes, dashed (e.g.
    the same CPU in another dtype: same bandwidth, another peak), with a legend naming each roof.
    points: dicts with ``label`` and ``cost`` (a ``costs.Cost``: drawn on its roof, filled);
    optionally ``roof`` (the Machine of ``others`` whose roof the point belongs to; default
    ``machine``), ``achieved`` (a measured FLOP/s: drawn hollow at that height, joined to the roof, and
    labelled there), ``fits=False`` (a configuration that does not fit in the machine's memory: a
    grey cross instead of a dot), ``color``, ``offset`` (label offset in points, default (6, -10)) and
    ``ha`` (the label's horizontal alignment, default "left"). A point with ``label`` None is unlabelled.
    """
    import numpy as np

    ax = new_axes(ax, figsize=(6.4, 4.2))
    roofs = [machine, *others]
    intensities = [p["cost"].intensity for p in points]
    lo = min([m.ridge / 30 for m in roofs] + [i / 3 for i in intensities])
    hi = max([m.ridge * 30 for m in roofs] + [i * 3 for i in intensities])
    x = np.logspace(np.log10(lo), np.log10(hi), 200)
    for k, m in enumerate(roofs):
        _roof_line(ax, m, x, "-" if k == 0 else "--", m.name)
    bottom = min(m.attainable(lo) for m in roofs) / 10
    for m in roofs:
        ax.text(m.ridge * 1.12, bottom * 1.5, f"ridge {m.ridge:.3g} FLOP/byte", fontsize=8, color="#555555", va="bottom",
                ha="left", rotation=90)
    ax.text(0.02, 0.97, "\n".join(f"roof = min({_si(m.peak_flops, 'FLOP/s')}, {_si(m.bandwidth, 'B/s')} × intensity)"
                                  for m in roofs), transform=ax.transAxes, fontsize=8, va="top")
    cmap = plt.get_cmap("tab10")
    for k, p in enumerate(points):
        _roofline_point(ax, p, p.get("roof", machine), p.get("color", cmap(k % 10)))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(bottom, max(m.peak_flops for m in roofs) * 4)
    ax.set_xlabel("arithmetic intensity (FLOP per byte moved)")
    ax.set_ylabel("attainable FLOP/s")
    ax.grid(True, which="major", alpha=0.3)
    if others:
        ax.legend(fontsize=8, loc="lower right", frameon=False)
    ax.set_title(title or machine.name, fontsize=10)
    return ax


def _roofline_point(ax, p: dict, roof, color) -> None:
    c = p["cost"]
    y = roof.attainable(c.intensity)
    if p.get("fits", True):
        ax.plot([c.intensity], [y], "o", color=color, ms=7, zorder=3)
    else:
        color = "#888888"
        ax.plot([c.intensity], [y], "X", color=color, ms=8, zorder=3)
    at = y
    if p.get("achieved") is not None:
        at = p["achieved"]
        ax.plot([c.intensity], [at], "o", mfc="white", mec=color, mew=1.5, ms=7, zorder=3)
        ax.plot([c.intensity] * 2, [at, y], color=color, lw=0.8, ls="--")
    if p.get("label") is not None:
        ax.annotate(p["label"], (c.intensity, at), textcoords="offset points", xytext=p.get("offset", (6, -10)),
                    fontsize=8, color=color, va="top", ha=p.get("ha", "left"))


def plot_batch_capacity(contexts: Sequence[int], fits: Dict[str, Sequence[int]], memory_label: str,
                        asked: Optional[int] = None, ax=None, title: str = ""):
    """How many sequences fit beside the weights, against the context length (log-log).

    fits: {label: sequences that fit at each context} (``costs.sequences_that_fit``), one line each.
    asked: a batch size to mark as a horizontal line; a filled marker where a line lies below it
    (that batch does not fit at that context).
    """
    ax = new_axes(ax, figsize=(6.4, 3.8))
    cmap = plt.get_cmap("tab10")
    for k, (label, counts) in enumerate(fits.items()):
        ax.plot(contexts, counts, "o-", color=cmap(k), label=label, ms=4)
    if asked is not None:
        ax.axhline(asked, color="black", ls="--", lw=1)
        ax.text(contexts[0], asked * 1.08, f"batch {asked}", fontsize=8, va="bottom", ha="left")
        short = [(c, n) for counts in fits.values() for c, n in zip(contexts, counts) if n < asked]
        if short:
            ax.plot(*zip(*short), "x", color="black", ms=7, label=f"batch {asked} does not fit")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(list(contexts), [f"{c // 1024}k" if c >= 1024 else str(c) for c in contexts])
    ax.set_xlabel("tokens per sequence (context)")
    ax.set_ylabel(f"sequences that fit in {memory_label}")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    despine(ax)
    ax.set_title(title, fontsize=10)
    return ax


def plot_flash_tiles(seq_len: int, window, block: int, ax=None, title: str = ""):
    """The sliding-window mask (blue) and the (block x block) tiles a one-pass attention computes
    (black outlines, from ``flash.visited_tiles``); tiles that hold no allowed pair are skipped."""
    from matplotlib.patches import Rectangle

    from ..speed.flash import visited_tiles
    from ..masks import sliding_window_mask

    ax = new_axes(ax, figsize=(4.6, 4.6))
    mask = sliding_window_mask(seq_len, window).float().numpy()
    ax.imshow(mask, cmap="Blues", vmin=0, vmax=1.6, interpolation="nearest")
    tiles = visited_tiles(seq_len, window, block, block)
    for q0, q1, k0, k1 in tiles:
        ax.add_patch(Rectangle((k0 - 0.5, q0 - 0.5), k1 - k0, q1 - q0, fill=False, edgecolor="black", lw=1.4))
    n = -(-seq_len // block)
    ax.set_xlabel("key position")
    ax.set_ylabel("query position")
    ax.set_title(title or f"S = {seq_len}, W = {window}, tiles of {block}: {len(tiles)} of {n * n} computed",
                 fontsize=10)
    return ax
