"""Figures of chapter 10: int8 rounding of one row, per-channel scales and errors, load-memory benchmark,
decode against the bandwidth ceiling, this package beside llama.cpp, and the quality of int8 / int4 weights."""

from __future__ import annotations

from typing import Mapping, Optional

import matplotlib.pyplot as plt
import numpy as np
import torch

from .common import despine, new_axes

__all__ = ["plot_int8_row", "plot_channel_scales", "plot_load_memory", "channel_errors", "plot_decode_vs_ceiling",
           "plot_side_by_side", "plot_quant_quality"]


def _np(t) -> np.ndarray:
    return t.detach().float().cpu().numpy() if hasattr(t, "detach") else np.asarray(t, dtype=float)


def plot_int8_row(row, ax=None, bins: int = 60, title: str = "One output channel, rounded to int8"):
    """Histogram of one weight row (in,) with its int8 grid: 255 levels between -max|w| and +max|w|.

    The step between levels is the row's scale ``max|w| / 127``; every weight moves to the nearest level.
    """
    from ..speed.int8 import dequantize_int8, quantize_int8

    w = torch.as_tensor(row).float().reshape(1, -1)
    q, s = quantize_int8(w)
    err = _np(dequantize_int8(q, s) - w)[0]
    ax = new_axes(ax, figsize=(6, 3.6))
    values = _np(w)[0]
    ax.hist(values, bins=bins, color="#4C72B0", alpha=0.85, label="weights")
    step = float(s[0])
    lo, hi = ax.get_ylim()
    for k in range(-127, 128, 16):      # every 16th level, or the plot turns grey
        ax.axvline(k * step, color="#DD8452", linewidth=0.6, alpha=0.7)
    ax.axvline(127 * step, color="#C44E52", linewidth=1.5, label="±max|w| = ±127 × scale")
    ax.axvline(-127 * step, color="#C44E52", linewidth=1.5)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("weight value")
    ax.set_ylabel("count")
    ax.set_title(title, fontsize=10)
    ax.text(0.02, 0.95, f"scale = {step:.2e}\nmax |error| = {np.abs(err).max():.2e} (≤ scale / 2)",
            transform=ax.transAxes, va="top", fontsize=8)
    ax.plot([], [], color="#DD8452", linewidth=0.6, label="every 16th int8 level")
    ax.legend(fontsize=8, loc="upper right")
    return ax


def channel_errors(weight) -> dict:
    """Per output channel: scale and relative error ||w_row - dequant(w_row)|| / ||w_row||, for one scale
    per channel (int8 as in ``speed/int8.py``) and for a single scale for the whole matrix."""
    from ..speed.int8 import dequantize_int8, quantize_int8

    w = torch.as_tensor(weight).float()
    q, s = quantize_int8(w)
    per_channel = (dequantize_int8(q, s) - w).norm(dim=1) / w.norm(dim=1)
    t = w.abs().max() / 127
    per_tensor = (torch.round(w / t).clamp(-127, 127) * t - w).norm(dim=1) / w.norm(dim=1)
    return {"scale": s, "per_channel": per_channel, "per_tensor": per_tensor}


def plot_channel_scales(weight, axes=None, title: Optional[str] = None):
    """Two panels over the output channels of a (out, in) weight: its per-channel scale, and the relative
    rounding error per channel with a scale per channel vs one scale for the whole matrix."""
    import matplotlib.pyplot as plt

    e = channel_errors(weight)
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    ch = np.arange(len(e["scale"]))
    axes[0].bar(ch, _np(e["scale"]), color="#4C72B0", width=1.0)
    axes[0].set_xlabel("output channel (row)")
    axes[0].set_ylabel("scale = max|w| / 127")
    axes[0].set_title("One scale per output channel", fontsize=10)
    axes[1].semilogy(ch, _np(e["per_tensor"]), ".", color="#C44E52", markersize=4, label="one scale per matrix")
    axes[1].semilogy(ch, _np(e["per_channel"]), ".", color="#55A868", markersize=4, label="one scale per channel")
    axes[1].set_xlabel("output channel (row)")
    axes[1].set_ylabel("relative error of the row")
    axes[1].set_title("Rounding error per channel", fontsize=10)
    axes[1].legend(fontsize=8)
    if title:
        axes[0].figure.suptitle(title, fontsize=11)
    axes[0].figure.tight_layout()
    return axes


_LABELS = {"stream": "load_model\n(Mistral layout)", "stream_hf": "load_model\n(HF layout, q/k permuted)",
           "stream_int8": "load_model\nquantize='int8'", "naive": "naive: Transformer()\n+ load_file + load_state_dict"}


def plot_load_memory(result: Mapping, ax=None):
    """Bars of peak resident memory during a load, in units of the checkpoint's size, from
    ``benchmarks/results/load_memory.json``: the process before loading, and what the load added, with
    the size of the checkpoint itself marked above each bar's baseline for comparison."""
    methods = result["methods"]
    nbytes = result["checkpoint_bytes"]
    names = list(methods)
    base = np.array([methods[m]["baseline_peak_rss"] / nbytes for m in names])
    added = np.array([(methods[m]["peak_rss"] - methods[m]["baseline_peak_rss"]) / nbytes for m in names])
    ax = new_axes(ax, figsize=(7, 3.8))
    x = np.arange(len(names))
    ax.bar(x, base, color="#BBBBBB", width=0.6, label="Python + torch before the load")
    ax.bar(x, added, bottom=base, color="#4C72B0", width=0.6, label="added by the load")
    for xi, b, a in zip(x, base, added):
        ax.text(xi, b + a, f"+{a:.2f}×", ha="center", va="bottom", fontsize=9)
    ax.hlines(base + 1.0, x - 0.4, x + 0.4, color="black", linestyle=":", linewidth=1.2,
              label="baseline + 1× checkpoint (the model itself)")
    ax.set_xticks(x, [_LABELS.get(n, n) for n in names], fontsize=8)
    ax.set_ylabel("peak RSS / checkpoint bytes")
    ax.set_title(f"Peak memory loading a {nbytes / 1e9:.2f} GB checkpoint on the CPU", fontsize=10)
    ax.set_ylim(0, max(base + added) * 1.2)
    ax.legend(fontsize=8, loc="upper left")
    despine(ax)
    return ax


def plot_decode_vs_ceiling(summary: Mapping, ax=None, title: str = "Mistral 7B decoding on this CPU"):
    """Decode tokens/s of each recorded method (``benchmarks/results/cpu_7b.json``'s summary) as bars,
    each with its memory-bandwidth ceiling (bytes read per token / measured read bandwidth) as a
    line across it, labelled with the fraction reached. A bar can pass its ceiling (the bandwidth is a
    rate a plain sum reached, not the memory's limit); its ceiling's label then goes under the line."""
    names = list(summary)
    got = [summary[n]["decode_tokens_per_s"] for n in names]
    ceiling = [summary[n]["ceiling_tokens_per_s"] for n in names]
    ax = ax or plt.subplots(figsize=(6.2, 3.4), layout="constrained")[1]
    x = np.arange(len(names))
    colors = ["#1f77b4" if "int8" not in n else "#2ca02c" for n in names]
    ax.bar(x, got, width=0.55, color=colors, alpha=0.85, label="measured decode")
    for xi, c, g in zip(x, ceiling, got):
        ax.hlines(c, xi - 0.36, xi + 0.36, color="#d62728", linewidth=2)
        if g < c:       # the ceiling's label above its line
            ax.text(xi, c, f"ceiling {c:.2f}", ha="center", va="bottom", fontsize=8, color="#d62728")
        else:           # a bar past its ceiling: the label below the line, on the bar, clear of the value's
            ax.text(xi, c, f"ceiling {c:.2f}", ha="center", va="top", fontsize=8, color="white")
        # the value above its bar, in black: inside a short bar a white label would run off it
        ax.text(xi, g, f"{g:.2f} tok/s\n{g / c:.0%} of ceiling", ha="center", va="bottom", fontsize=7.5,
                color="black")
    ax.set_xticks(x, [n.replace("_", " ") for n in names], fontsize=8)
    ax.set_ylabel("tokens per second (batch 1)")
    ax.set_ylim(0, max(ceiling + got) * 1.25)
    ax.grid(True, axis="y", alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def plot_side_by_side(summary: Mapping, pairs: Mapping, axes=None, title: Optional[str] = None):
    """Two panels from ``benchmarks/results/cpu_vs_llamacpp.json``: decode and prefill tokens/s of this
    package and of llama.cpp, one pair of bars per weight format (``pairs``: {format: (ours, theirs)}),
    the decode panel with each method's bandwidth ceiling as a tick above its bar."""
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
    fmts = [f for f, (o, t) in pairs.items() if o in summary and t in summary]
    x = np.arange(len(fmts))
    for ax, key, label in ((axes[0], "decode_tokens_per_s", "decode tokens/s (batch 1)"),
                           (axes[1], "prefill_tokens_per_s", "prefill tokens/s (128-token prompt)")):
        top = 0.0
        for k, (who, color, dx) in enumerate((("this package", "#4C72B0", -0.2), ("llama.cpp", "#DD8452", 0.2))):
            vals = [summary[pairs[f][k]][key] for f in fmts]
            ax.bar(x + dx, vals, width=0.38, color=color, label=who)
            for xi, v in zip(x, vals):
                ax.text(xi + dx, v, f"{v:.1f}" if v >= 10 else f"{v:.2f}", ha="center", va="bottom", fontsize=8)
            top = max(top, max(vals))
            if key == "decode_tokens_per_s":
                ceil = [summary[pairs[f][k]]["ceiling_tokens_per_s"] for f in fmts]
                ax.hlines(ceil, x + dx - 0.17, x + dx + 0.17, color="#C44E52", linewidth=1.5,
                          label="bandwidth ceiling" if k == 0 else None)
                top = max(top, max(ceil))
        ax.set_xticks(x, fmts)
        ax.set_ylabel(label)
        ax.set_ylim(0, top * 1.22)
        if key == "decode_tokens_per_s":           # one legend, where the short bars leave room for it
            ax.legend(fontsize=8, loc="upper left")
        despine(ax)
    if title:
        axes[0].figure.suptitle(title, fontsize=11)
    return axes


def plot_quant_quality(configs: Mapping, names: Optional[list] = None, ax=None, title: Optional[str] = None):
    """Mean KL divergence to the unquantized model (dots, with two standard errors) for the weight formats
    of ``benchmarks/results/quant_quality.json`` (a key's "configs"), on a log axis, best at the top."""
    names = [n for n in (names or list(configs)) if "mean_kld" in configs[n]]
    names = sorted(names, key=lambda n: configs[n]["mean_kld"])
    ax = new_axes(ax, figsize=(7, 0.32 * len(names) + 1.2))
    y = np.arange(len(names))[::-1]
    kld = np.array([configs[n]["mean_kld"] for n in names])
    err = np.array([2 * configs[n]["mean_kld_err"] for n in names])
    colors = ["#55A868" if "int8" in n or "Q8_0" in n else "#DD8452" if "llama.cpp" in n else "#4C72B0" for n in names]
    ax.errorbar(kld, y, xerr=err, fmt="none", ecolor="grey", elinewidth=1)
    ax.scatter(kld, y, c=colors, zorder=3, s=22)
    ax.set_yticks(y, names, fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("mean KL divergence to the unquantized model (nats per token)")
    ax.grid(True, axis="x", alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    despine(ax)
    return ax
