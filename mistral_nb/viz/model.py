"""Figures of chapter 07: the SwiGLU activation and its gate, where the parameters are, what they
weigh, and how close we are to transformers."""

from __future__ import annotations

import html
from typing import Mapping, Optional, Sequence

import numpy as np

from .common import despine, new_axes

__all__ = ["plot_silu_relu", "plot_swiglu_gate", "plot_param_breakdown", "plot_memory_by_dtype",
           "plot_parity_errors", "Table"]

_PALETTE = ["#264653", "#2a9d8f", "#e9c46a", "#f4a261", "#e76f51", "#8d99ae", "#6d597a"]


def plot_silu_relu(ax=None, lo: float = -5.0, hi: float = 3.0):
    """ReLU, SiLU (x * sigmoid(x)) and sigmoid(x) on [lo, hi], with SiLU's minimum marked.

    SiLU is smooth, lets small negative values through, and has its minimum of about -0.278 at
    x = -1.278; for large |x| it approaches ReLU.
    """
    ax = new_axes(ax, figsize=(5.6, 3.6))
    x = np.linspace(lo, hi, 801)
    sig = 1 / (1 + np.exp(-x))
    ax.plot(x, np.maximum(x, 0), color="#8d99ae", lw=2, label="ReLU(x) = max(x, 0)")
    ax.plot(x, x * sig, color="#e76f51", lw=2, label="SiLU(x) = x · sigmoid(x)")
    ax.plot(x, sig, color="#2a9d8f", lw=1.2, ls="--", label="sigmoid(x)")
    i = int(np.argmin(x * sig))
    ax.plot([x[i]], [x[i] * sig[i]], "o", color="#e76f51", ms=5)
    ax.annotate(f"minimum {x[i] * sig[i]:.3f} at x = {x[i]:.2f}", (x[i], x[i] * sig[i]), textcoords="offset points",
                xytext=(6, -14), fontsize=8, color="#e76f51")
    ax.axhline(0, color="black", lw=0.6)
    ax.axvline(0, color="black", lw=0.6)
    ax.set_xlim(lo, hi)
    ax.set_ylim(-1, hi)
    ax.set_xlabel("x")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title("SiLU against ReLU", fontsize=10)
    return ax


def plot_swiglu_gate(ax=None, lim: float = 4.0, n: int = 201):
    """One hidden unit of SwiGLU, silu(g) * u, as a map over the gate pre-activation g = (w1 x)_i and
    the value u = (w3 x)_i. Where g is well below 0 the unit is nearly switched off whatever u says
    (|silu(g)| <= 0.278); where g is positive it passes u, scaled by about g. The colour scale is
    clipped at +-lim so that the small outputs of a closed gate stay visible as pale."""
    ax = new_axes(ax, figsize=(5.0, 4.0))
    g = np.linspace(-lim, lim, n)
    u = np.linspace(-lim, lim, n)
    G, U = np.meshgrid(g, u)
    Z = G / (1 + np.exp(-G)) * U
    im = ax.imshow(Z, origin="lower", extent=(-lim, lim, -lim, lim), cmap="RdBu_r", vmin=-lim, vmax=lim,
                   aspect="auto", interpolation="nearest")
    ax.axvline(0, color="black", lw=0.8)
    ax.text(-lim / 2, lim * 0.8, "gate closed:\noutput near 0\nwhatever u", ha="center", va="top", fontsize=8)
    ax.text(lim / 2, lim * 0.1, "gate open:\noutput ≈ g · u", ha="center", va="center", fontsize=8)
    ax.set_xlabel("gate g = (w1 x)_i")
    ax.set_ylabel("value u = (w3 x)_i")
    ax.set_title("one hidden unit: silu(g) · u", fontsize=10)
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04, extend="both", label=f"unit output (clipped at ±{lim:g})")
    return ax


def _human(n: float) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:,.0f}"


def _param_labels(counts: Mapping[str, int]) -> list[str]:
    """The bar labels of ``plot_param_breakdown``: '5.64 B (77.8 %)' for each component."""
    total = sum(counts.values())
    shares = [100 * n / total for n in counts.values()]
    return [f"{_human(n)}  ({s:.1f} %)" if s >= 0.1 else f"{_human(n)}  ({s:.3f} %)"
            for n, s in zip(counts.values(), shares)]


def plot_param_breakdown(counts: Mapping[str, int], ax=None, title: str = "Where Mistral 7B's parameters are"):
    """Horizontal bar chart of parameter counts per component (``{name: count}``), labelled with
    the count and its share of the total."""
    names, values = list(counts), np.asarray(list(counts.values()), dtype=float)
    ax = new_axes(ax, figsize=(7, 0.5 * len(names) + 1.4))
    y = np.arange(len(names))
    ax.barh(y, values / 1e9, color=[_PALETTE[i % len(_PALETTE)] for i in range(len(names))])
    for yi, v, label in zip(y, values, _param_labels(counts)):
        ax.text(v / 1e9 + values.max() / 1e9 * 0.01, yi, label, va="center", fontsize=9)
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlim(0, values.max() / 1e9 * 1.35)
    ax.set_xlabel("parameters (billions)")
    ax.grid(axis="x", alpha=0.3)
    despine(ax)
    if title:
        ax.set_title(f"{title} (total {_human(values.sum())})")
    return ax


def plot_memory_by_dtype(gb: Mapping[str, float], capacities: Optional[Mapping[str, float]] = None, ax=None,
                         title: str = "Mistral 7B's weights in memory"):
    """Bar per storage dtype (``{dtype name: GB}``), with dashed lines for memory budgets
    (``{device name: GB}``) so you can see what fits where."""
    names, values = list(gb), np.asarray(list(gb.values()), dtype=float)
    ax = new_axes(ax, figsize=(6, 3.8))
    x = np.arange(len(names))
    colors = [_PALETTE[i % len(_PALETTE)] for i in range(len(names))]
    ax.bar(x, values, color=colors, width=0.7)
    top = max([values.max(), *(capacities or {}).values()])
    for xi, v, c in zip(x, values, colors):   # inside tall bars, above short ones: clear of the budget lines
        inside = v > 0.15 * top
        ax.text(xi, v - 0.01 * top if inside else v, f"{v:.2f} GB", ha="center", va="top" if inside else "bottom",
                fontsize=9, color=_text_color(c) if inside else "black")
    for name, cap in (capacities or {}).items():
        ax.axhline(cap, color="grey", linestyle="--", linewidth=1)
        ax.text(len(names) - 0.5, cap, f"{name}: {cap:g} GB", ha="right", va="bottom", fontsize=8, color="dimgrey")
    ax.set_xticks(x, names)
    ax.set_ylabel("GB (10⁹ bytes)")
    ax.set_ylim(0, top * 1.15)
    ax.set_xlim(-0.5, len(names) - 0.5)
    despine(ax)
    if title:
        ax.set_title(title)
    return ax


def _text_color(color) -> str:
    """Black on light colours, white on dark ones."""
    from matplotlib.colors import to_rgb

    r, g, b = to_rgb(color)
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"


def _sci(x: float) -> str:
    """1e-05 -> '1e-5'."""
    mantissa, exponent = f"{x:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def plot_parity_errors(errors: Mapping[str, float], threshold: float, ax=None,
                       title: str = "Our logits vs transformers' (relative error)"):
    """Log-scale bars of relative errors (``{label: error}``) against a pass ``threshold``:
    bars under the line pass, bars above it fail (e.g. a deliberately broken control)."""
    names, values = list(errors), np.asarray(list(errors.values()), dtype=float)
    ax = new_axes(ax, figsize=(7, 3.6))
    x = np.arange(len(names))
    floor = 1e-10
    colors = ["#2a9d8f" if v < threshold else "#e76f51" for v in values]
    ax.bar(x, np.maximum(values, floor), color=colors, width=0.6)
    ax.set_yscale("log")
    ax.axhline(threshold, color="black", linestyle="--", linewidth=1)
    ax.text(-0.45, threshold * 1.3, f"pass below {_sci(threshold)}", ha="left", va="bottom", fontsize=8)
    ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("‖ours − theirs‖ / ‖theirs‖")
    ax.set_ylim(floor, 1.0)
    ax.set_xlim(-0.5, len(names) - 0.5)
    despine(ax)
    if title:
        ax.set_title(title)
    return ax


class Table:
    """A small table of already-formatted cells that renders as HTML in Jupyter and in the book
    (Markdown pipe tables are not rendered in the book's CommonMark outputs) and as Markdown or
    plain text elsewhere.

    ``Table(["tokens", "GB"], [["4,096", "0.54"]], align="lr")``: one letter per column, l or r.
    """

    def __init__(self, header: Sequence[str], rows: Sequence[Sequence], align: Optional[str] = None):
        self.header = [str(h) for h in header]
        self.rows = [[str(c) for c in row] for row in rows]
        self.align = align or "l" + "r" * (len(self.header) - 1)
        bad = [i for i, row in enumerate(self.rows) if len(row) != len(self.header)]
        if bad or len(self.align) != len(self.header) or set(self.align) - {"l", "r"}:
            raise ValueError(f"table with {len(self.header)} columns: rows {bad} have another length, "
                             f"or align {self.align!r} is not one l/r per column")

    def _repr_html_(self) -> str:
        style = {"l": "text-align: left; padding: 2px 10px", "r": "text-align: right; padding: 2px 10px"}
        head = "".join(f'<th style="{style[a]}">{html.escape(h)}</th>' for h, a in zip(self.header, self.align))
        body = "".join("<tr>" + "".join(f'<td style="{style[a]}">{html.escape(c)}</td>'
                                         for c, a in zip(row, self.align)) + "</tr>" for row in self.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def _repr_markdown_(self) -> str:
        rule = ["---:" if a == "r" else "---" for a in self.align]
        lines = [self.header, rule, *self.rows]
        return "\n".join("| " + " | ".join(line) + " |" for line in lines)

    def __repr__(self) -> str:
        cols = list(zip(self.header, *self.rows))
        widths = [max(len(c) for c in col) for col in cols]
        fmt = lambda row: "  ".join(c.rjust(w) if a == "r" else c.ljust(w)  # noqa: E731
                                    for c, w, a in zip(row, widths, self.align)).rstrip()
        return "\n".join([fmt(self.header), *(fmt(r) for r in self.rows)])
