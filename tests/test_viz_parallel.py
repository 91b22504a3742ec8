"""The figures of chapter 13 (tensor parallelism, paged KV cache) draw headless and show what they should."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402
from matplotlib.patches import Circle, Rectangle  # noqa: E402

from mistral_nb import ModelArgs, viz  # noqa: E402
from mistral_nb.parallel import memory_per_rank  # noqa: E402
from mistral_nb.speed.paged import paged_block_table


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def stripes(ax, name):
    return [p for p in ax.patches if isinstance(p, Rectangle) and (p.get_gid() or "").startswith(name + "/")]


def test_partition_cuts_rows_and_columns_and_marks_two_all_reduces():
    m7 = ModelArgs.mistral_7b()
    ax = viz.plot_tp_partition(m7, 4)
    for name in ("wq", "wk", "wv", "w1", "w3", "wo", "w2"):
        parts = stripes(ax, name)
        assert [p.get_gid() for p in parts] == [f"{name}/rank{r}" for r in range(4)]
        assert [to_hex(p.get_facecolor()) for p in parts] == [viz.rank_color(r) for r in range(4)]
        widths, heights = {round(p.get_width(), 6) for p in parts}, {round(p.get_height(), 6) for p in parts}
        if name in ("wo", "w2"):          # columns: equal widths, full height, rank 0 on the left
            assert len(widths) == 1 and len(heights) == 1 and heights == {1.0}
            xs = [p.get_x() for p in parts]
            assert xs == sorted(xs)
        else:                             # rows: equal heights, full width, rank 0 at the top
            assert widths == {1.0} and len(heights) == 1
            ys = [p.get_y() for p in parts]
            assert ys == sorted(ys, reverse=True)
    # drawn to scale: w1 is 14336 / 4096 = 3.5 times as tall as wq; wk a quarter of wq
    h = {name: sum(p.get_height() for p in stripes(ax, name)) for name in ("wq", "wk", "w1")}
    assert h["w1"] == pytest.approx(3.5 * h["wq"]) and h["wk"] == pytest.approx(0.25 * h["wq"])
    assert len([p for p in ax.patches if isinstance(p, Circle) and p.get_gid() == "all-reduce"]) == 2
    assert {t.get_text() for t in ax.texts} >= {"all-reduce 1", "all-reduce 2"}


def test_partition_beyond_the_kv_heads_shows_shared_hatched_stripes():
    m7 = ModelArgs.mistral_7b()
    ax = viz.plot_tp_partition(m7, 16)
    wk = stripes(ax, "wk")
    assert [p.get_gid() for p in wk] == [f"wk/ranks{2 * g}-{2 * g + 1}" for g in range(8)]
    assert all(p.get_hatch() == "//" for p in wk)
    assert len(stripes(ax, "wq")) == 16


def test_memory_bars_stack_the_cache_on_the_weights():
    rows = memory_per_rank(ModelArgs.mistral_7b(), [1, 2, 4, 8, 16])
    ax = viz.plot_tp_memory(rows)
    bars = ax.patches
    weights, cache = bars[:5], bars[5:]
    assert [round(b.get_height(), 6) for b in weights] == [round(r["weights"] / 1e9, 6) for r in rows]
    assert [round(b.get_height(), 6) for b in cache] == [round(r["kv cache"] / 1e9, 6) for r in rows]
    assert [round(b.get_y(), 6) for b in cache] == [round(r["weights"] / 1e9, 6) for r in rows]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "4", "8", "16 (kv ×2)"]
    assert [t.get_text() for t in ax.texts] == [f"{r['total'] / 1e9:.2f}" for r in rows]


def test_tp_times_draw_compute_and_each_links_all_reduces_with_the_crossing():
    tokens = [1, 10, 100, 1000, 10000]
    times = {2: {"compute": [5e-3] * 5, "fast": [1e-7 * t for t in tokens]},
             8: {"compute": [1e-4, 1e-4, 1e-4, 1.5e-4, 1.5e-3], "fast": [2e-7 * t for t in tokens],
                 "slow": [2e-6 * t for t in tokens]}}
    ax = viz.plot_tp_times(tokens, times)
    lines = ax.get_lines()
    labels = [ln.get_label() for ln in lines]
    assert labels[:2] == ["2 ranks: compute", "2 ranks: all-reduce, fast"]
    assert list(lines[0].get_ydata()) == [5000.0] * 5                    # microseconds
    assert list(lines[1].get_ydata()) == pytest.approx([0.1 * t for t in tokens])
    assert lines[1].get_linestyle() == "--"
    assert "8 ranks: all-reduce, slow" in labels and lines[labels.index("8 ranks: all-reduce, slow")].get_linestyle() == ":"
    dots = [ln for ln in lines if ln.get_marker() == "o"]
    # 2 ranks never cross; 8 ranks: "fast" crosses at 1,000 tokens (0.2 ms > 0.15 ms), "slow" at 100
    assert sorted(d.get_xdata()[0] for d in dots) == [100, 1000]
    assert ax.get_xscale() == ax.get_yscale() == "log"


def test_paged_vs_rolling_shows_slots_blocks_and_the_freed_block():
    table = paged_block_table(14, block_size=4, window=8)
    assert table == [None, 1, 2, 0]
    top, bottom = viz.plot_paged_vs_rolling(14, 8, table, 4)
    slots = [p for p in top.patches if (p.get_gid() or "").startswith("slot")]
    labels = [t.get_text() for t in top.texts if t.get_text().startswith("p=")]
    assert labels == ["p=8", "p=9", "p=10", "p=11", "p=12", "p=13", "p=6", "p=7"]      # slot s holds p mod 8 = s
    grey = [p.get_gid() for p in slots if to_hex(p.get_facecolor()) == "#dedede"]
    assert grey == ["slot6"]                       # position 6 is outside the next token's window
    freed = [p for p in bottom.patches if (p.get_gid() or "").startswith("block0/")]
    assert len(freed) == 4 and all(p.get_hatch() == "//" for p in freed)
    block_labels = [t.get_text() for t in bottom.texts if t.get_text().startswith("logical")]
    assert block_labels == ["logical block 0 → freed (null block)", "logical block 1 → physical block 1",
                            "logical block 2 → physical block 2", "logical block 3 → physical block 0"]
    empty = [p.get_gid() for p in bottom.patches if to_hex(p.get_facecolor()) == "#ffffff"]
    assert empty == ["block3/slot2", "block3/slot3"]        # positions 14 and 15 are not written yet


def test_kv_per_sequence_lines_and_length_check():
    ax = viz.plot_kv_per_sequence([1, 2, 3], {"a": [1e9, 1e9, 1e9], "b": [0, 1e9, 2e9]})
    assert [list(line.get_ydata()) for line in ax.get_lines()] == [[1, 1, 1], [0, 1, 2]]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b"]
    with pytest.raises(ValueError, match="series 'b' has 2 values for 3 lengths"):
        viz.plot_kv_per_sequence([1, 2, 3], {"b": [1, 2]})
    assert np.isfinite(ax.get_ylim()).all()
