"""Plots of the recorded benchmarks (benchmarks/results/*.json) for the performance chapter."""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt

from .common import new_axes

__all__ = ["plot_banded_vs_dense", "plot_kv_cache_gb", "plot_speed_ratios", "plot_attention_cost"]


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
    """Two panels from banded_vs_dense.json rows: time and peak memory per sequence length."""
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    S = [r["seq_len"] for r in rows]
    axes[0].plot(S, [r["dense_s"] for r in rows], "o-", label="dense masked")
    axes[0].plot(S, [r["banded_s"] for r in rows], "s-", label="banded")
    for r in rows:
        axes[0].annotate(f"{r['speedup']:.1f}×", (r["seq_len"], r["banded_s"]), textcoords="offset points",
                         xytext=(0, -14), ha="center", fontsize=8)
    axes[0].set_xlabel("sequence length S")
    axes[0].set_ylabel("seconds per attention call")
    axes[0].set_title("time (median)")
    axes[1].plot(S, [r["dense_peak_mb"] for r in rows], "o-", label="dense masked")
    axes[1].plot(S, [r["banded_peak_mb"] for r in rows], "s-", label="banded")
    axes[1].set_xlabel("sequence length S")
    axes[1].set_ylabel("peak extra memory (MB)")
    axes[1].set_title("memory")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xticks(S, [f"{s // 1024}k" for s in S])
        ax.legend(fontsize=8)
    return axes


def plot_kv_cache_gb(computed: Sequence[dict], ax=None):
    """Grouped bars: KV-cache GB for MHA full, GQA full and GQA rolling at each length."""
    ax = new_axes(ax, figsize=(6, 3.6))
    labels = [f"{c['tokens'] // 1024}k" for c in computed]
    series = [("MHA, full cache", "mha_full_gb"), ("GQA, full cache", "gqa_full_gb"),
              ("GQA, rolling buffer", "gqa_rolling_gb")]
    width = 0.27
    for i, (name, key) in enumerate(series):
        xs = [j + (i - 1) * width for j in range(len(computed))]
        bars = ax.bar(xs, [c[key] for c in computed], width, label=name)
        ax.bar_label(bars, fmt="%.2g", fontsize=7)
    ax.set_xticks(range(len(computed)), labels)
    ax.set_xlabel("tokens in context")
    ax.set_ylabel("KV cache (GB, bf16, batch 1)")
    ax.set_title("Mistral 7B KV cache")
    ax.legend(fontsize=8)
    return ax


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
