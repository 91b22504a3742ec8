"""Figures of chapter 01: pieces as coloured boxes over the text, BPE merges step by step, and the
number of tokens the same sentence costs in different languages.

Text is drawn with DejaVu Sans Mono, the monospace font matplotlib ships, so box widths can be
computed from character counts and the figures look the same on every machine. A character that
font cannot draw (CJK, emoji) is written as ``U+XXXX`` instead of an empty square: see
:func:`piece_label`.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.legend_handler import HandlerTuple
from matplotlib.patches import FancyBboxPatch, Patch

from .common import despine, new_axes

__all__ = ["piece_label", "plot_token_boxes", "plot_bpe_merges", "plot_tokens_by_language"]

FONT = "DejaVu Sans Mono"
_CHAR_EM = 0.602          # advance width of one DejaVu Sans Mono character, in em
_PALETTE = ["#8ecae6", "#ffb703", "#90be6d", "#f4a6c4", "#b8a1e3", "#f9c784", "#84dcc6", "#ff9f8a"]
_BYTE, _BYTE_FACE, _CONTROL = "#d62828", "#fbd3d3", "#6c757d"
_NEW, _OLD = "#f4a261", "#dde7ee"


@lru_cache(maxsize=None)
def _charmap() -> frozenset:
    from matplotlib import font_manager, ft2font

    path = font_manager.findfont(font_manager.FontProperties(family=FONT), fallback_to_default=True)
    return frozenset(ft2font.FT2Font(path).get_charmap())


def piece_label(piece: str) -> str:
    """How a piece is written in a figure: '▁' stays visible, ``\\n``/``\\t`` are escaped, and
    characters the figure font has no glyph for (CJK, emoji) become ``U+XXXX``.

    >>> piece_label("▁Hello"), piece_label("\\n"), piece_label("東")
    ('▁Hello', '\\\\n', 'U+6771')
    """
    glyphs = _charmap()
    out = []
    for ch in piece:
        if ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) in glyphs and ch.isprintable():
            out.append(ch)
        else:
            out.append(f"U+{ord(ch):04X}")
    return "".join(out)


def _is_byte(piece: str) -> bool:
    return len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">")


def _box(ax, x, y, w, h, color, edge="white", lw=1.5):
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0,rounding_size=0.15",
                                facecolor=color, edgecolor=edge, linewidth=lw))


def plot_token_boxes(examples: Sequence[tuple], ax=None, width: int = 64, fontsize: float = 10.0,
                     control: Sequence[int] = (0, 1, 2), legend: bool = True):
    """Draw tokenized texts as rows of coloured boxes: the piece on top, its id below.

    examples: ``[(caption, pieces, ids), ...]`` with ``pieces`` and ``ids`` of the same length, e.g.
    ``ids = tok.encode(text)`` and ``pieces = [tok.id_to_piece(i) for i in ids]``. Lines wrap after
    ``width`` characters. Byte-fallback pieces (``<0xNN>``) are drawn in red, control ids
    (``control``: ``<unk>``, ``<s>``, ``</s>``) in grey, so they stand out; ``legend`` adds a key.
    Without ``ax`` the figure is sized so that every label fits its box.
    """
    rows = []                                   # (kind, y, payload): caption lines and box lines
    y = 0.0
    line_h, box_h, cap_h = 4.0, 3.5, 2.0        # in units of 0.75 em
    for k, example in enumerate(examples):
        if len(example) != 3:
            raise ValueError(f"example {k} must be (caption, pieces, ids), got {len(example)} items")
        caption, pieces, ids = example
        if len(pieces) != len(ids):
            raise ValueError(f"example {k}: pieces ({len(pieces)}) and ids ({len(ids)}) must have the same length")
        if caption:
            rows.append(("caption", y, piece_label(caption)))
            y -= cap_h
        labels = [piece_label(p) for p in pieces]
        widths = [max(len(lab), len(str(i))) + 1.4 for lab, i in zip(labels, ids)]   # box widths, in chars
        x, boxes = 0.0, []
        for lab, tid, piece, w in zip(labels, ids, pieces, widths):
            if x > 0 and x + w > width:
                rows.append(("boxes", y, boxes))
                x, boxes, y = 0.0, [], y - line_h
            boxes.append((x, w, lab, int(tid), piece))
            x += w + 0.35
        rows.append(("boxes", y, boxes))
        y -= line_h + 0.6
    height_units = -y + (1.6 if legend else 0.0)
    unit_in = 0.75 * fontsize / 72                      # one y unit, in inches
    char_in = _CHAR_EM * fontsize / 72                  # one x unit (a character), in inches
    if ax is None:
        fig = plt.figure(figsize=((width + 0.4) * char_in, height_units * unit_in))
        ax = fig.add_axes((0, 0, 1, 1))
    colour = 0
    for kind, y0, payload in rows:
        if kind == "caption":
            ax.text(0, y0 - 0.9, payload, ha="left", va="center", fontsize=fontsize + 0.5, color="#222222")
            continue
        for x, w, lab, tid, piece in payload:
            if tid in control:
                face, edge, ink = _CONTROL, _CONTROL, "white"
            elif _is_byte(piece):
                face, edge, ink = _BYTE_FACE, _BYTE, _BYTE
            else:
                face, edge, ink = _PALETTE[colour % len(_PALETTE)], "white", "black"
                colour += 1
            _box(ax, x, y0 - box_h, w, box_h, face, edge=edge, lw=1.5)
            ax.text(x + w / 2, y0 - 1.15, lab, ha="center", va="center", family=FONT, fontsize=fontsize,
                    color=ink if ink != _BYTE else "black")
            ax.text(x + w / 2, y0 - 2.65, str(tid), ha="center", va="center", family=FONT,
                    fontsize=fontsize * 0.72, color=ink if ink == "white" else "#333333")
    ax.set_xlim(-0.2, width + 0.2)
    ax.set_ylim(-height_units, 0.2)
    ax.axis("off")
    if legend:
        # ordinary pieces cycle through the palette only to tell neighbours apart, so their key shows
        # several colours side by side: the colour itself means nothing
        pieces_key = tuple(Patch(facecolor=c, edgecolor="white") for c in _PALETTE[:4])
        ax.legend(handles=[pieces_key, Patch(facecolor=_BYTE_FACE, edgecolor=_BYTE),
                           Patch(facecolor=_CONTROL)],
                  labels=["piece, id below (colours alternate)", "byte fallback <0xNN>", "control id (<s>, </s>)"],
                  handler_map={tuple: HandlerTuple(ndivide=None, pad=0)}, handlelength=3.2,
                  loc="lower left", ncol=3, fontsize=fontsize * 0.85, frameon=False,
                  bbox_to_anchor=(0, 0), borderaxespad=0.1, columnspacing=1.2)
    return ax


def _spans(symbols: Sequence[str]):
    """(start, end) character span of each symbol in the concatenated text."""
    out, pos = [], 0
    for s in symbols:
        out.append((pos, pos + len(s)))
        pos += len(s)
    return out


def plot_bpe_merges(steps: Sequence[Sequence[str]], ax=None, title: str = "", fontsize: float = 11.0):
    """Draw BPE merges as a ladder: one row per step (``BPETokenizer.merge_steps(text)``), each
    symbol a box spanning the characters it covers; the symbol created by that step is highlighted
    and the merge is written on the right (``'▁t' + 'o'``).
    """
    if len(steps) == 0:
        raise ValueError("steps is empty: pass BPETokenizer.merge_steps(text)")
    n_chars = sum(len(s) for s in steps[0])
    for k, row in enumerate(steps):
        if sum(len(s) for s in row) != n_chars:
            raise ValueError(f"step {k} covers {sum(len(s) for s in row)} characters, step 0 covers {n_chars}")
    char_w = max(2.2, max(len(piece_label(c)) for c in steps[0]) + 0.8)   # width of one character column
    T = len(steps)
    ax = new_axes(ax, figsize=(n_chars * char_w * fontsize * _CHAR_EM / 72 * 1.05 + 3.2, 0.36 * T + 0.8))
    prev = set()
    for t, row in enumerate(steps):
        spans = _spans(row)
        new = [sp for sp in spans if sp not in prev] if t > 0 else []
        for (a, b), sym in zip(spans, row):
            is_new = (a, b) in new
            _box(ax, a * char_w + 0.08, -t - 0.42, (b - a) * char_w - 0.16, 0.84, _NEW if is_new else _OLD)
            ax.text((a + b) / 2 * char_w, -t, piece_label(sym), ha="center", va="center", family=FONT,
                    fontsize=fontsize, fontweight="bold" if is_new else "normal")
        if new:
            (a, b), = new[:1]
            parts = [piece_label(s) for sp, s in zip(_spans(steps[t - 1]), steps[t - 1]) if a <= sp[0] and sp[1] <= b]
            ax.text(n_chars * char_w + 0.6, -t, "  +  ".join(repr(p) for p in parts), ha="left", va="center",
                    family=FONT, fontsize=fontsize * 0.8, color="#555555")
        prev = set(spans)
    ax.set_xlim(-0.2, n_chars * char_w + 0.2)
    ax.set_ylim(-T + 0.4, 0.6)
    ax.set_yticks([-t for t in range(T)], ["characters"] + [f"merge {t}" for t in range(1, T)], fontsize=9)
    ax.set_xticks([])
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.text(n_chars * char_w + 0.6, 0, "merged pair:", ha="left", va="center", fontsize=9, color="#555555",
            style="italic")
    if title:
        ax.set_title(title, loc="left")
    return ax


def plot_tokens_by_language(languages: Sequence[str], text_tokens: Sequence[int], byte_tokens: Sequence[int],
                            ax=None, title: str = "", reference: Optional[str] = None):
    """Horizontal stacked bars: tokens spent on the same sentence in each language, split into
    ordinary pieces and byte-fallback pieces; the count (and the ratio to ``reference``) at the end.
    """
    n = len(languages)
    if not (len(text_tokens) == len(byte_tokens) == n):
        raise ValueError("languages, text_tokens and byte_tokens must have the same length")
    text = np.asarray(text_tokens, dtype=float)
    byte = np.asarray(byte_tokens, dtype=float)
    total = text + byte
    ax = new_axes(ax, figsize=(7.5, 0.34 * n + 1.2))
    y = np.arange(n)
    ax.barh(y, text, color="#8ecae6", label="vocabulary pieces")
    ax.barh(y, byte, left=text, color="#d62828", label="byte-fallback pieces <0xNN>")
    ref = total[list(languages).index(reference)] if reference is not None else None
    for i in range(n):
        note = f"{int(total[i])}" + (f"  (×{total[i] / ref:.1f})" if ref else "")
        ax.text(total[i] + total.max() * 0.01, i, note, va="center", fontsize=9)
    ax.set_yticks(y, list(languages))
    ax.invert_yaxis()
    ax.set_xlim(0, total.max() * 1.22)
    ax.set_xlabel("tokens for the same sentence" + (f"  (× = relative to {reference})" if ref else ""))
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    despine(ax)
    if title:
        ax.set_title(title)
    return ax
