"""The figures of chapters 01 (tokenizer) and 08 (generation): they run headless and draw what they should."""

from __future__ import annotations

import warnings

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402
from matplotlib.patches import FancyBboxPatch, Rectangle  # noqa: E402

from mistral_nb import viz  # noqa: E402
from mistral_nb.generate import left_pad  # noqa: E402
from mistral_nb.viz import generation as vg  # noqa: E402
from mistral_nb.viz import tokens as vt  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def draw_without_glyph_warnings(ax):
    """Render the figure; fail on matplotlib's 'Glyph ... missing from font' warning (empty boxes)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        ax.figure.canvas.draw()


def texts(ax):
    return [t.get_text() for t in ax.texts]


def test_exported_from_viz():
    for name in ("plot_token_boxes", "plot_bpe_merges", "plot_tokens_by_language", "piece_label",
                 "plot_temperature", "plot_top_p", "plot_left_padding"):
        assert callable(getattr(viz, name)), name


# ------------------------------------------------------------------------------ tokens


def test_piece_label_escapes_what_the_font_cannot_draw():
    assert vt.piece_label("▁Hello") == "▁Hello"
    assert vt.piece_label("\n") == "\\n" and vt.piece_label("\t") == "\\t"
    assert vt.piece_label("東") == "U+6771"            # DejaVu Sans Mono has no CJK
    assert vt.piece_label("a🤖") == "aU+1F916"
    assert vt.piece_label("Привет") == "Привет"        # Cyrillic is drawn as is


def test_token_boxes_one_box_per_token_with_piece_and_id():
    pieces = ["<s>", "▁Hello", "▁", "<0xF0>", "<0x9F>", "<0xA4>", "<0x96>", "東"]
    ids = [1, 22557, 28705, 243, 162, 167, 153, 30366]
    ax = vt.plot_token_boxes([("caption 🤖", pieces, ids)])
    boxes = [p for p in ax.patches if isinstance(p, FancyBboxPatch)]
    assert len(boxes) == len(ids)
    shown = texts(ax)
    for i in ids:
        assert str(i) in shown
    assert "▁Hello" in shown and "U+6771" in shown and "captionU+1F916" not in shown
    assert "caption U+1F916" in shown
    # byte pieces framed in red, control id grey
    edges = [to_hex(b.get_edgecolor()) for b in boxes]
    assert edges[3:7] == [vt._BYTE] * 4
    assert to_hex(boxes[0].get_facecolor()) == vt._CONTROL
    # the legend's key for ordinary pieces shows several colours: the colours only alternate
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()][0] == "piece, id below (colours alternate)"
    from matplotlib.patches import Rectangle
    swatches = {to_hex(r.get_facecolor()) for r in legend.findobj(Rectangle) if r.get_visible()}
    assert set(vt._PALETTE[:4]) <= swatches
    draw_without_glyph_warnings(ax)


def test_token_boxes_wrap_long_texts_and_stack_examples():
    pieces = [f"▁word{i}" for i in range(30)]
    ids = list(range(1000, 1030))
    ax = vt.plot_token_boxes([("a", pieces, ids), ("b", pieces[:3], ids[:3])], width=40, legend=False)
    boxes = [p for p in ax.patches if isinstance(p, FancyBboxPatch)]
    assert len(boxes) == 33
    rows = sorted({round(b.get_y(), 3) for b in boxes})
    assert len(rows) >= 5                              # 30 boxes of ~9 chars in 40 columns: 4+ lines, plus example b
    assert all(b.get_x() + b.get_width() <= 40 + 1e-9 for b in boxes)
    assert ax.get_legend() is None


def test_token_boxes_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="same length"):
        vt.plot_token_boxes([("x", ["a", "b"], [1])])
    with pytest.raises(ValueError, match=r"\(caption, pieces, ids\)"):
        vt.plot_token_boxes([(["a"], [1])])


STEPS = [["▁", "t", "o", "k", "e", "n"], ["▁t", "o", "k", "e", "n"], ["▁t", "o", "k", "en"],
         ["▁to", "k", "en"], ["▁to", "ken"], ["▁token"]]


def test_bpe_merges_one_row_per_step_and_one_highlight_per_merge():
    ax = vt.plot_bpe_merges(STEPS, title="t")
    boxes = [p for p in ax.patches if isinstance(p, FancyBboxPatch)]
    assert len(boxes) == sum(len(row) for row in STEPS)
    highlighted = [b for b in boxes if to_hex(b.get_facecolor()) == vt._NEW]
    assert len(highlighted) == len(STEPS) - 1
    shown = texts(ax)
    assert "'▁to'  +  'ken'" in shown and "'e'  +  'n'" in shown
    assert [t.get_text() for t in ax.get_yticklabels()] == ["characters"] + [f"merge {i}" for i in range(1, 6)]
    draw_without_glyph_warnings(ax)


def test_bpe_merges_rejects_inconsistent_steps():
    with pytest.raises(ValueError, match="covers"):
        vt.plot_bpe_merges([["a", "b"], ["abc"]])
    with pytest.raises(ValueError, match="empty"):
        vt.plot_bpe_merges([])


def test_tokens_by_language_stacks_bytes_and_labels_ratios():
    ax = vt.plot_tokens_by_language(["English", "Greek", "Hindi"], [14, 47, 43], [0, 0, 6], reference="English")
    bars = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert len(bars) == 6
    widths = sorted(round(b.get_width()) for b in bars)
    assert widths == [0, 0, 6, 14, 43, 47]
    shown = texts(ax)
    assert "14  (×1.0)" in shown and "49  (×3.5)" in shown
    with pytest.raises(ValueError, match="same length"):
        vt.plot_tokens_by_language(["a"], [1, 2], [0])


# ------------------------------------------------------------------------------ generation


LOGITS = torch.tensor([5.0, 3.2, 2.6, 2.3, 1.6, 1.2, 0.9, 0.4])


def test_temperature_bars_are_softmax_of_scaled_logits():
    temps = (0.5, 1.0, 2.0)
    ax = vg.plot_temperature(LOGITS, temps, labels=[f"t{i}" for i in range(8)])
    bars = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert len(bars) == len(temps) * len(LOGITS)
    for k, t in enumerate(temps):
        heights = torch.tensor([b.get_height() for b in bars[k * 8:(k + 1) * 8]], dtype=torch.float32)
        assert torch.allclose(heights, torch.softmax(LOGITS / t, -1), atol=1e-6)
    assert len(ax.get_legend().get_texts()) == 3
    with pytest.raises(ValueError, match="temperatures must be > 0"):
        vg.plot_temperature(LOGITS, (0.0, 1.0))
    with pytest.raises(ValueError, match="labels"):
        vg.plot_temperature(LOGITS, labels=["a"])


def test_top_p_colours_exactly_the_nucleus():
    probs = torch.softmax(LOGITS, -1)
    ax = vg.plot_top_p(probs, 0.9)
    bars = [p for p in ax.patches if isinstance(p, Rectangle)]
    kept = [b for b in bars if to_hex(b.get_facecolor()) == vg._KEEP]
    # the same rule as sample_top_p: keep while the mass of more likely tokens is <= p
    sorted_p, _ = torch.sort(probs, descending=True)
    n_keep = int(((torch.cumsum(sorted_p, 0) - sorted_p) <= 0.9).sum())
    assert len(kept) == n_keep == 4
    heights = [b.get_height() for b in bars]
    assert heights == sorted(heights, reverse=True)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(s.startswith("kept: 4 tokens") for s in legend)
    with pytest.raises(ValueError, match="p must be"):
        vg.plot_top_p(probs, 0.0)


def test_left_padding_grid_marks_pads_and_positions():
    tokens, positions = left_pad([[1, 5, 6, 7], [1, 9], [1, 2, 3]])
    ax = vg.plot_left_padding(tokens, positions, title="pad")
    cells = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert len(cells) == 3 * 4
    shown = texts(ax)
    assert shown.count("pad") == int((positions < 0).sum()) == 3
    assert "p=-2" in shown and "p=3" in shown and "9" in shown
    with pytest.raises(ValueError, match="must both be"):
        vg.plot_left_padding(tokens, positions[:, :2])
