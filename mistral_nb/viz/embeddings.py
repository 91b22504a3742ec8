"""Figures of chapter 02 (embeddings and RMSNorm).

Every function draws on a matplotlib Axes (a new one when ``ax`` is None) and returns it.
"""

from __future__ import annotations

from typing import Mapping, Optional

import numpy as np

from .common import new_axes

__all__ = ["plot_rms_before_after", "plot_gain_effect", "plot_running_sums"]


def _np(t) -> np.ndarray:
    """A tensor or array-like as a float64 numpy array."""
    if hasattr(t, "detach"):
        return t.detach().double().cpu().numpy()
    return np.asarray(t, dtype=np.float64)


def _rms(a: np.ndarray) -> np.ndarray:
    return np.sqrt((a ** 2).mean(-1))


def plot_rms_before_after(x, y, eps: Optional[float] = None, ax=None):
    """Scatter the RMS of each vector before (``x``) and after (``y``) normalisation, log-log.

    x, y: (N, dim) tensors or arrays, row n of ``y`` being the normalised row n of ``x``.
    With ``eps``, also draws the curve a gain-free RMSNorm must follow: r / sqrt(r^2 + eps),
    which is 1 for r >> sqrt(eps) and falls off below it.
    """
    x, y = _np(x), _np(y)
    r_in, r_out = _rms(x), _rms(y)
    ax = new_axes(ax, figsize=(6, 4))
    if eps is not None:
        r = np.logspace(np.log10(r_in.min()) - 0.3, np.log10(r_in.max()) + 0.3, 200)
        ax.plot(r, r / np.sqrt(r ** 2 + eps), color="0.6", lw=1.5, zorder=1,
                label=r"$r/\sqrt{r^2+\epsilon}$" + f"  (eps = {eps:g})")
        ax.axvline(np.sqrt(eps), color="0.6", ls=":", lw=1)
        ax.annotate(r"$\sqrt{\epsilon}$", (np.sqrt(eps), 0.03), xycoords=("data", "axes fraction"),
                    ha="left", va="bottom", fontsize=10, color="0.4", xytext=(3, 0), textcoords="offset points")
    ax.scatter(r_in, r_in, s=14, color="tab:red", alpha=0.7, zorder=2, label="before: RMS of x")
    ax.scatter(r_in, r_out, s=14, color="tab:blue", zorder=3, label="after: RMS of rms_norm(x)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("RMS of the input vector x")
    ax.set_ylabel("RMS of the vector")
    ax.set_title("RMSNorm maps every vector to RMS 1")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(True, which="major", alpha=0.3)
    return ax


def plot_gain_effect(normed, gain, ax=None):
    """Per-channel RMS (over tokens) of a normalised batch, next to the gain that produced it.

    normed: (N, dim) outputs of ``rms_norm(x, gain, eps)``; gain: (dim,). After the norm every
    channel has RMS about 1, so after the gain channel c has RMS about |gain[c]|.
    """
    normed, gain = _np(normed), _np(gain)
    per_channel = np.sqrt((normed ** 2).mean(0))              # (dim,)
    c = np.arange(len(gain))
    ax = new_axes(ax, figsize=(7, 3.5))
    ax.bar(c, np.abs(gain), color="0.8", width=0.9, label="|gain[c]|")
    ax.plot(c, per_channel, "o", ms=3.5, color="tab:blue", label="measured RMS of channel c")
    ax.axhline(1.0, color="tab:red", lw=1, ls="--", label="RMS 1 (gain of ones)")
    ax.set_xlabel("channel c")
    ax.set_ylabel("per-channel RMS")
    ax.set_xlim(-1, len(gain))
    ax.set_ylim(0, 1.3 * max(np.abs(gain).max(), per_channel.max(), 1.0))
    ax.set_title("The gain sets each channel's scale")
    ax.legend(fontsize=8, loc="upper center", ncol=3, framealpha=0.95)
    return ax


def plot_running_sums(sums: Mapping[str, object], ax=None):
    """Running sums (one line per entry of ``sums``: label -> 1-D sequence of partial sums).

    Used to show a sum of squares accumulated in float32 next to the same sum kept in bfloat16.
    """
    ax = new_axes(ax, figsize=(6, 3.5))
    for label, values in sums.items():
        v = _np(values)
        ax.plot(np.arange(1, len(v) + 1), v, lw=1.8, label=label)
    ax.set_xlabel("number of squares added")
    ax.set_ylabel(r"running sum of $x_i^2$")
    ax.set_title("A running sum kept in bfloat16 falls behind")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(True, alpha=0.3)
    return ax
