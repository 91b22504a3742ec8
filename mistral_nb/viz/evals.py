"""Figures of chapter 14 (how benchmark numbers are measured).

* ``plot_task_scores``: one panel per task; each row a model or baseline, its score as a dot with
  the 95 % interval as a bar (0-shot and few-shot side by side), and the task's chance level as a
  dashed line;
* ``plot_paper_table``: the paper's benchmark table as grouped bars (Mistral 7B against Llama 2).
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np

from .common import despine

__all__ = ["plot_task_scores", "plot_paper_table"]

SHOT_STYLE = {0: ("o", "#1f77b4"), 3: ("s", "#ff7f0e"), 5: ("s", "#ff7f0e")}


def plot_task_scores(scores: Mapping[str, Mapping[str, Mapping[int, Sequence[float]]]],
                     chance: Optional[Mapping[str, Optional[float]]] = None, fig=None, title: str = "",
                     xlabel: str = "accuracy"):
    """scores: task -> row label -> shots -> (value, low, high) of the 95 % interval; chance: task ->
    chance level (None: no line). Returns the panels' axes."""
    tasks = list(scores)
    rows = list(dict.fromkeys(r for t in tasks for r in scores[t]))
    if fig is None:
        fig = plt.figure(figsize=(3.1 * len(tasks) + 1.4, 0.42 * len(rows) + 1.5), layout="constrained")
    axes = fig.subplots(1, len(tasks), squeeze=False, sharey=True)[0]
    shots_seen = sorted({k for t in tasks for r in scores[t].values() for k in r})
    offsets = {k: (i - (len(shots_seen) - 1) / 2) * 0.22 for i, k in enumerate(shots_seen)}
    for ax, task in zip(axes, tasks):
        for y, row in enumerate(rows):
            for k, (value, lo, hi) in (scores[task].get(row) or {}).items():
                marker, color = SHOT_STYLE.get(k, ("D", "#2ca02c"))
                ax.errorbar([value], [y + offsets[k]], xerr=[[value - lo], [hi - value]], fmt=marker, color=color,
                            markersize=4.5, capsize=2, linewidth=1.1, label=f"{k}-shot" if y == 0 else None)
        level = (chance or {}).get(task)
        if level is not None:
            ax.axvline(level, color="#7f7f7f", linestyle="--", linewidth=1)
            ax.text(level, len(rows) - 0.45, f" chance {level:.0%}", color="#555555", fontsize=7.5, va="bottom")
        ax.set_yticks(range(len(rows)), rows)
        ax.set_ylim(len(rows) - 0.35, -0.65)
        ax.set_xlim(0, 1)
        ax.set_title(task, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.grid(True, axis="x", alpha=0.3)
        despine(ax)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        axes[-1].legend(handles, labels, fontsize=7.5, loc="lower right")
    if title:
        fig.suptitle(title, fontsize=10)
    return axes


def plot_paper_table(table: Mapping[str, Mapping[str, float]], ax=None, title: str = ""):
    """table: benchmark -> model -> score in %; grouped bars, one colour per model, values on top."""
    benches = list(table)
    models = list(dict.fromkeys(m for b in benches for m in table[b]))
    if ax is None:
        _, ax = plt.subplots(figsize=(1.1 * len(benches) + 2.5, 3.4))
    width = 0.8 / len(models)
    colors = plt.get_cmap("tab10")
    for i, model in enumerate(models):
        x = np.arange(len(benches)) + (i - (len(models) - 1) / 2) * width
        values = [table[b].get(model, np.nan) for b in benches]
        bars = ax.bar(x, values, width * 0.95, color=colors(i), label=model)
        for bar, v in zip(bars, values):
            if not np.isnan(v):
                ax.text(bar.get_x() + bar.get_width() / 2, v + 0.8, f"{v:.1f}", ha="center", fontsize=6.5)
    ax.set_xticks(range(len(benches)), benches, fontsize=8)
    ax.set_ylabel("score (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7.5, loc="upper right")
    despine(ax)
    if title:
        ax.set_title(title, fontsize=10)
    return ax
