"""Figures of chapter 08: how temperature reshapes a next-token distribution, which tokens the top-p
nucleus keeps, and how prompts of different lengths are left-padded into one batch.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from matplotlib.patches import Patch, Rectangle

from ..generate import top_p_keep
from .common import despine, new_axes

__all__ = ["plot_temperature", "plot_top_p", "plot_left_padding"]

_KEEP, _DROP, _PAD, _TOK = "#2a9d8f", "#d9d9d9", "#eeeeee", "#a8dadc"


def _np(x) -> np.ndarray:
    return x.detach().float().cpu().numpy() if hasattr(x, "detach") else np.asarray(x, dtype=float)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def _labels(labels: Optional[Sequence[str]], n: int) -> list:
    if labels is None:
        return [str(i) for i in range(n)]
    if len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} tokens")
    return [repr(s) if isinstance(s, str) else str(s) for s in labels]


def plot_temperature(logits, temperatures: Sequence[float] = (0.5, 1.0, 2.0), labels: Optional[Sequence[str]] = None,
                     ax=None, title: str = ""):
    """Grouped bars of softmax(logits / T) for each temperature T (> 0), one group per token.

    logits: (V,) one position's logits (a short, illustrative vector). Low T sharpens the
    distribution towards the argmax, high T flattens it towards uniform; the order never changes.
    """
    z = _np(logits).reshape(-1)
    if any(not t > 0 for t in temperatures):
        raise ValueError(f"temperatures must be > 0 (T = 0 is greedy, a one-hot), got {list(temperatures)}")
    V, n = len(z), len(temperatures)
    names = _labels(labels, V)
    ax = new_axes(ax, figsize=(max(6.0, 0.75 * V + 1.5), 3.6))
    width = 0.8 / n
    colors = ["#e76f51", "#264653", "#8ab17d", "#e9c46a", "#6d597a"]
    x = np.arange(V)
    for k, t in enumerate(temperatures):
        p = _softmax(z / t)
        ax.bar(x + (k - (n - 1) / 2) * width, p, width=width * 0.95, color=colors[k % len(colors)],
               label=f"T = {t:g}  (top token {p.max():.2f})")
    ax.set_xticks(x, names, rotation=30, ha="right", fontsize=9)
    ax.set_ylabel("probability")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, frameon=False)
    despine(ax)
    if title:
        ax.set_title(title)
    return ax


def plot_top_p(probs, p: float, labels: Optional[Sequence[str]] = None, ax=None, title: str = ""):
    """Bars of the probabilities sorted from most to least likely; the tokens nucleus sampling
    with ``p`` keeps are coloured, the rest grey. Dots show the mass of all *more* likely tokens:
    a token is kept when its dot is on or below the dashed line at p, the rule of
    :func:`mistral_nb.generate.sample_top_p` (so the most likely token is always kept).
    """
    q = _np(probs).reshape(-1)
    if not 0 < p <= 1:
        raise ValueError(f"p must be in (0, 1], got {p}")
    order = np.argsort(-q, kind="stable")
    qs = q[order]
    before = np.cumsum(qs) - qs
    keep = top_p_keep(torch.as_tensor(qs), p).numpy()         # the package's rule, on the sorted values
    names = [_labels(labels, len(q))[i] for i in order]
    ax = new_axes(ax, figsize=(max(6.0, 0.7 * len(q) + 1.5), 3.6))
    x = np.arange(len(q))
    ax.bar(x, qs, color=[_KEEP if k else _DROP for k in keep], edgecolor="white")
    ax.plot(x, before, "o-", color="#555555", linewidth=1.0, markersize=4, label="mass before the token")
    ax.axhline(p, color="#e76f51", linestyle="--", linewidth=1.2, label=f"p = {p:g}")
    for i, v in enumerate(qs):
        ax.text(i, v + 0.01, f"{v:.2f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, names, rotation=30, ha="right", fontsize=9)
    ax.set_ylabel("probability  /  cumulative mass")
    ax.set_ylim(0, 1.05)
    handles, _ = ax.get_legend_handles_labels()
    handles += [Patch(color=_KEEP, label=f"kept: {int(keep.sum())} tokens, mass {qs[keep].sum():.2f}"),
                Patch(color=_DROP, label="cut")]
    ax.legend(handles=handles, fontsize=8, frameon=False, loc="center right")
    despine(ax)
    if title:
        ax.set_title(title)
    return ax


def plot_left_padding(tokens, positions, ax=None, title: str = "", pieces: Optional[Sequence[Sequence[str]]] = None):
    """A left-padded batch as a grid: one row per prompt, padding grey, each real token with its id
    and its position (padding has negative positions and is never attended to nor cached).

    tokens, positions: (B, L) from :func:`mistral_nb.generate.left_pad`; ``pieces`` optionally
    replaces the ids by text, row by row for the real tokens.
    """
    t, pos = _np(tokens).astype(int), _np(positions).astype(int)
    if t.shape != pos.shape or t.ndim != 2:
        raise ValueError(f"tokens {t.shape} and positions {pos.shape} must both be (B, L)")
    B, L = t.shape
    ax = new_axes(ax, figsize=(0.75 * L + 2.0, 0.62 * B + 1.3))
    for b in range(B):
        real = 0
        for j in range(L):
            is_pad = pos[b, j] < 0
            ax.add_patch(Rectangle((j - 0.5, b - 0.5), 1, 1, facecolor=_PAD if is_pad else _TOK,
                                   edgecolor="white", linewidth=2))
            if is_pad:
                ax.text(j, b - 0.12, "pad", ha="center", va="center", fontsize=8, color="#999999")
            else:
                main = pieces[b][real] if pieces is not None else str(t[b, j])
                real += 1
                ax.text(j, b - 0.12, main, ha="center", va="center", fontsize=9)
            ax.text(j, b + 0.27, f"p={pos[b, j]}", ha="center", va="center", fontsize=7,
                    color="#999999" if is_pad else "#1d3557")
    ax.set_xlim(-0.5, L - 0.5)
    ax.set_ylim(B - 0.5, -0.5)
    ax.set_yticks(range(B), [f"prompt {b}" for b in range(B)], fontsize=9)
    ax.set_xticks(range(L), [str(j) for j in range(L)], fontsize=8)
    ax.set_xlabel("column of the batch tensor (id on top, position p below)")
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    if title:
        ax.set_title(title)
    return ax
