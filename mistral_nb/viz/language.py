"""Figures of chapter 12 (a small Mistral trained on English).

* ``plot_training_curves``: training loss against tokens seen, validation losses, and the
  unigram/bigram baselines as horizontal lines;
* ``plot_perplexities``: the perplexity of each model and baseline on the same held-out text (dots, log scale);
* ``plot_loss_by_position``: held-out loss at each position of a window, sliding window vs full attention;
* ``plot_loss_by_context``: the loss on the same targets given only the last c tokens;
* ``plot_head_scores``: one (layer x head) table of scores per kind of head;
* ``plot_attention_by_distance``: where each layer's attention weight lies inside the window.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np

from .common import heatmap, new_axes

__all__ = ["plot_training_curves", "plot_perplexities", "plot_loss_by_position", "plot_loss_by_context",
           "plot_head_scores", "plot_attention_by_distance"]

COLORS = {"swa": "#1f77b4", "full": "#ff7f0e", "bigram": "#2ca02c", "unigram": "#9467bd", "uniform": "#7f7f7f"}
LABELS = {"swa": "sliding window", "full": "full attention", "bigram": "bigram", "unigram": "unigram",
          "uniform": "uniform"}


def _label(name: str) -> str:
    return LABELS.get(name, name)


def plot_training_curves(runs: Mapping[str, Mapping], baselines: Optional[Mapping[str, float]] = None, ax=None,
                         title: str = ""):
    """runs: name -> a recorded training run (``loss_every_10``, ``val_step``, ``val_loss``,
    ``train.batch_size``, ``seq_len``); baselines: name -> held-out loss in nats (dashed lines)."""
    ax = new_axes(ax, figsize=(6.4, 3.8))
    for name, run in runs.items():
        per_step = run["train"]["batch_size"] * run["seq_len"]
        loss = np.asarray(run["loss_every_10"], dtype=float)
        x = (np.arange(len(loss)) * 10 + 5) * per_step / 1e6
        color = COLORS.get(name)
        ax.plot(x, loss, color=color, linewidth=1.0, alpha=0.55, label=f"{_label(name)}: training batches")
        vx = np.asarray(run["val_step"], dtype=float) * per_step / 1e6
        ax.plot(vx, run["val_loss"], "o-", color=color, markersize=3.5, linewidth=1.6,
                label=f"{_label(name)}: held-out text")
    for name, value in (baselines or {}).items():
        ax.axhline(value, color=COLORS.get(name, "k"), linestyle="--", linewidth=1)
        ax.text(0.5, value, f"{_label(name)} baseline {value:.2f}", color=COLORS.get(name, "k"),
                transform=ax.get_yaxis_transform(), ha="center", va="bottom", fontsize=8, zorder=5,
                bbox=dict(facecolor="white", edgecolor="none", alpha=0.85, pad=1.0))   # readable above the curves
    ax.set_xlabel("tokens trained on (millions)")
    ax.set_ylabel("cross-entropy (nats)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7.5, loc="upper right")
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def plot_perplexities(perplexity: Mapping[str, float], ax=None, title: str = "Perplexity on held-out text"):
    """One dot per model on a log axis (a bar's length means nothing on a log scale), best at the
    bottom, each labelled with its value."""
    names = sorted(perplexity, key=lambda k: -perplexity[k])
    values = [perplexity[k] for k in names]
    ax = new_axes(ax, figsize=(6.0, 0.45 * len(names) + 1.0))
    y = np.arange(len(names))
    ax.hlines(y, min(values) / 2, values, color="#dddddd", linewidth=1, zorder=1)
    ax.scatter(values, y, s=45, color=[COLORS.get(k, "#444444") for k in names], zorder=3)
    ax.set_xscale("log")
    ax.set_yticks(y, [_label(k) for k in names])
    for yi, v in zip(y, values):
        ax.text(v * 1.08, yi, f"{v:,.1f}", va="center", fontsize=8)
    ax.set_xlim(min(values) / 2, max(values) * 4)
    ax.set_xlabel("perplexity = exp(loss), log scale (lower is better)")
    ax.grid(True, axis="x", alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def _smooth(y: np.ndarray, k: int) -> np.ndarray:
    if k <= 1:
        return y
    pad = np.concatenate([np.full(k // 2, y[0]), y, np.full(k - 1 - k // 2, y[-1])])
    return np.convolve(pad, np.ones(k) / k, mode="valid")


def _mark_window_and_reach(ax, window: Optional[int], reach: Optional[int]) -> None:
    """Dotted vertical lines at W and at L(W-1), labelled at the top of the axes: W's label to the right
    of its line, the reach's to the left (it lies near the right edge, where a label would be cut off)."""
    for x, text, ha in ((window, "W", "left"), (reach, "L(W-1)", "right")):
        if x is not None:
            ax.axvline(x, color="#555555", linestyle=":", linewidth=1)
            label = f" {text} = {x}" if ha == "left" else f"{text} = {x} "
            ax.text(x, 0.98, label, transform=ax.get_xaxis_transform(), fontsize=8, va="top", ha=ha)


def _finish_loss_axes(ax, title: str):
    ax.set_ylabel("held-out loss (nats)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def plot_loss_by_position(by_position: Mapping[str, Sequence[float]], window: Optional[int] = None,
                          reach: Optional[int] = None, ax=None, smooth: int = 9, title: str = ""):
    """Held-out loss at each position of the window (the number of tokens of context, minus one),
    one line per model, smoothed over ``smooth`` positions; the window W and the reach L(W-1) marked."""
    ax = new_axes(ax, figsize=(6.4, 3.6))
    for name, y in by_position.items():
        y = np.asarray(y, dtype=float)
        ax.plot(np.arange(1, len(y) + 1), _smooth(y, smooth), color=COLORS.get(name), label=_label(name), linewidth=1.4)
    _mark_window_and_reach(ax, window, reach)
    ax.set_xscale("log")
    ax.set_xlabel("tokens of context (position in the window + 1), log scale")
    return _finish_loss_axes(ax, title)


def plot_loss_by_context(contexts: Sequence[int], losses: Mapping[str, Sequence[float]], window: Optional[int] = None,
                         reach: Optional[int] = None, ax=None, title: str = ""):
    """Loss on the same held-out targets when the model may read only the last c tokens before them."""
    ax = new_axes(ax, figsize=(6.4, 3.6))
    for name, y in losses.items():
        ax.plot(contexts, y, "o-", color=COLORS.get(name), label=_label(name), markersize=3.5, linewidth=1.4)
    _mark_window_and_reach(ax, window, reach)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("tokens the model may read before the scored span (c), log scale")
    return _finish_loss_axes(ax, title)


def plot_head_scores(scores: Mapping[str, Sequence[Sequence[float]]], fig=None, vmax: float = 1.0):
    """One heatmap per kind of head: rows = layers (1 at the top), columns = query heads; each cell
    the head's score, printed to 2 decimals."""
    names = list(scores)
    arrays = [np.asarray(scores[k], dtype=float) for k in names]
    L, H = arrays[0].shape
    if fig is None:
        fig = plt.figure(figsize=(3.3 * len(names) + 0.8, 0.42 * L + 1.4), layout="constrained")
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    for ax, name, a in zip(axes, names, arrays):
        heatmap(a, ax=ax, xlabels=[str(h) for h in range(H)], ylabels=[str(layer + 1) for layer in range(L)],
                vmin=0.0, vmax=vmax, colorbar=False, cmap="Blues", xlabel="head", ylabel="layer" if ax is axes[0] else "")
        for (i, j), v in np.ndenumerate(a):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6.5,
                    color="white" if v > 0.55 * vmax else "black")
        ax.set_title(name, fontsize=9)
    return axes


def plot_attention_by_distance(per_layer: Sequence[Sequence[float]], ax=None, title: str = "", log: bool = True):
    """Mean attention weight at each distance d = 0 .. W-1 from the query, one line per layer."""
    a = np.asarray(per_layer, dtype=float)
    ax = new_axes(ax, figsize=(6.4, 3.6))
    cmap = plt.get_cmap("viridis")
    for layer, row in enumerate(a):
        ax.plot(np.arange(len(row)), row, color=cmap(layer / max(1, len(a) - 1)), label=f"layer {layer + 1}", linewidth=1.3)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("distance from the query d = i - j (0 = the token itself)")
    ax.set_ylabel("mean attention weight" + (" (log)" if log else ""))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7.5, ncol=2)
    if title:
        ax.set_title(title, fontsize=10)
    return ax
