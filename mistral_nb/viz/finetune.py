"""Figures of chapter 15 (from base to instruct: SFT, LoRA, DPO).

* ``plot_scored_tokens``: a conversation's tokens, the scored ones (the answers) highlighted;
* ``plot_lora_shapes``: the frozen matrix W beside the two thin matrices B and A of its adapter, to scale;
* ``plot_finetune_losses``: the training loss of several runs against the step;
* ``plot_exact_match``: exact-match accuracy per task, one group of bars per task, a bar per run;
* ``plot_memory_budget``: the bytes of a training step by component, stacked, one bar per setting,
  with the memory of a GPU as a line.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from matplotlib.patches import Rectangle

from .common import despine, new_axes

__all__ = ["plot_scored_tokens", "plot_lora_shapes", "plot_finetune_losses", "plot_exact_match", "plot_memory_budget"]

SCORED, UNSCORED = "#2ca02c", "#d9d9d9"
COMPONENT_COLORS = {"weights": "#4c72b0", "gradients": "#dd8452", "AdamW moments": "#c44e52", "activations": "#55a868"}


def plot_scored_tokens(pieces: Sequence[str], scored: Sequence[bool], ax=None, per_row: int = 16, title: str = ""):
    """Tokens as boxes in reading order, ``per_row`` to a row; scored targets green, the rest grey."""
    n = len(pieces)
    rows = (n + per_row - 1) // per_row
    ax = new_axes(ax, figsize=(min(12, 0.75 * per_row), 0.5 + 0.45 * rows))
    for i, (piece, s) in enumerate(zip(pieces, scored)):
        r, c = divmod(i, per_row)
        ax.add_patch(Rectangle((c, -r), 0.95, 0.85, color=SCORED if s else UNSCORED))
        ax.text(c + 0.475, -r + 0.42, piece, ha="center", va="center", fontsize=7,
                color="white" if s else "black")
    ax.set_xlim(0, per_row)
    ax.set_ylim(-rows + 0.9, 0.95)
    ax.axis("off")
    ax.set_title(title or f"{sum(scored)} of {n} tokens are scored (green: the answers and their </s>)", fontsize=10)
    return ax


def plot_lora_shapes(out_features: int, in_features: int, r: int, ax=None, title: str = ""):
    """W (out x in, frozen) and its adapter's B (out x r) and A (r x in), drawn to the same scale."""
    ax = new_axes(ax, figsize=(8, 3.2))
    scale = 1.0 / max(out_features, in_features)
    w, h = in_features * scale, out_features * scale
    gap, rr = 0.25, max(r * scale, 0.012)
    shapes = [(0, 0, w, h, "#b0b0b0", f"W  {out_features} x {in_features}\nfrozen"),
              (w + gap, 0, rr, h, "#dd8452", f"B\n{out_features} x {r}"),
              (w + gap + rr + 0.08, h - rr, w, rr, "#4c72b0", f"A  {r} x {in_features}")]
    for x, y, dx, dy, color, label in shapes:
        ax.add_patch(Rectangle((x, y), dx, dy, color=color))
        ax.text(x + dx / 2 if dx > 0.1 else x + dx + 0.02, y + dy / 2 if dy > 0.1 else y - 0.06, label,
                ha="center" if dx > 0.1 else "left", va="center", fontsize=9)
    ax.text(w + gap / 2, h / 2, "+", ha="center", va="center", fontsize=16)
    ax.set_xlim(-0.05, 2 * w + gap + 0.3)
    ax.set_ylim(-0.15, h + 0.05)
    ax.set_aspect("equal")
    ax.axis("off")
    full, low = out_features * in_features, r * (out_features + in_features)
    ax.set_title(title or f"W + (alpha/r) B A: {low:,} trainable numbers instead of {full:,} ({low / full:.2%})",
                 fontsize=10)
    return ax


def plot_finetune_losses(losses: dict, ax=None, title: str = "", ylabel: str = "loss on the answers (nats)",
                         every: int = 1):
    """One line per run: ``losses`` maps a label to the loss of every step; with ``every`` > 1, the mean
    of each group of ``every`` consecutive steps, drawn at the group's last step."""
    ax = new_axes(ax, figsize=(6, 3.6))
    for label, y in losses.items():
        y = np.asarray(y, dtype=float)
        groups = [y[i:i + every] for i in range(0, len(y), every)]
        x = [min(i + every, len(y)) for i in range(0, len(y), every)]
        ax.plot(x, [g.mean() for g in groups], label=label, linewidth=1.3, marker="." if every > 1 else None)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    despine(ax)
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def plot_exact_match(scores: dict, tasks: Sequence[str], ax=None, title: str = "", chance: Optional[dict] = None):
    """Grouped bars: for each task, one bar per run. ``scores``: {run label: {task: accuracy}};
    ``chance``: {task: accuracy of a blind guess}, drawn as a short dashed line over the task."""
    ax = new_axes(ax, figsize=(8, 3.6))
    width = 0.8 / max(1, len(scores))
    x = np.arange(len(tasks))
    for k, (label, per_task) in enumerate(scores.items()):
        ax.bar(x + (k - (len(scores) - 1) / 2) * width, [per_task.get(t, 0.0) for t in tasks], width, label=label)
    for i, t in enumerate(tasks):
        if chance and t in chance:
            ax.hlines(chance[t], i - 0.42, i + 0.42, colors="black", linestyles="--", linewidth=1)
    ax.set_xticks(x, list(tasks))
    ax.set_ylim(0, 1)
    ax.set_ylabel("exact match on held-out instructions")
    ax.legend(fontsize=7, ncol=min(3, len(scores)))
    despine(ax)
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def plot_memory_budget(budgets: dict, ax=None, limit_gb: Optional[float] = None, limit_label: str = "",
                       title: str = ""):
    """Stacked horizontal bars of GB by component. ``budgets``: {setting: {component: bytes}}."""
    ax = new_axes(ax, figsize=(8, 0.6 + 0.55 * len(budgets)))
    names = list(budgets)
    for row, name in enumerate(names):
        left = 0.0
        for comp, value in budgets[name].items():
            gb = value / 1e9
            ax.barh(row, gb, left=left, color=COMPONENT_COLORS.get(comp), label=comp if row == 0 else None)
            left += gb
        ax.text(left, row, f" {left:.1f} GB", va="center", fontsize=8)
    if limit_gb is not None:
        ax.axvline(limit_gb, color="black", linestyle="--", linewidth=1)
        ax.text(limit_gb, -0.45, f" {limit_label or f'{limit_gb:g} GB'}", fontsize=8, va="top")
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("GB")
    ax.legend(fontsize=7, loc="lower right")
    despine(ax)
    if title:
        ax.set_title(title, fontsize=10)
    return ax
