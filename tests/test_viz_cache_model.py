"""The figures of chapters 06 (rolling cache) and 07 (full model) draw headless and show what they should."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from mistral_nb import ModelArgs, RollingBufferCache, Transformer, viz  # noqa: E402
from mistral_nb.costs import kv_cache_bytes  # noqa: E402
from mistral_nb.masks import chunk_mask  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def texts(ax):
    return [t.get_text() for t in ax.texts]


def cells(ax):
    return [p for p in ax.patches if isinstance(p, Rectangle)]


# ------------------------------------------------------------------ chapter 06


def real_history(window=4, n=10):
    torch.manual_seed(0)
    model = Transformer(ModelArgs.tiny(sliding_window=window)).eval()
    cache = RollingBufferCache.for_model(model, batch_size=1)
    history = []
    with torch.no_grad():
        for p in range(n):
            model(torch.tensor([[p + 40]]), cache=cache)
            history.append(cache.slot_pos[0].tolist())
    return history


def test_rolling_buffer_grid_shows_each_slot_position():
    history = real_history()
    ax = viz.plot_rolling_buffer(history, tokens=list("Mistral 7B"), title="buffer")
    assert len(cells(ax)) == 10 * 4
    labels = texts(ax)
    assert len(labels) == 40
    # row 9 (last step) holds positions 8, 9, 6, 7 in slots 0..3; labels go row by row
    assert labels[36:40] == ["'7' @8", "'B' @9", "'l' @6", "' ' @7"]
    assert labels[1:4] == ["–", "–", "–"]                       # empty slots at step 0
    assert [t.get_text() for t in ax.get_xticklabels()] == ["slot 0", "slot 1", "slot 2", "slot 3"]
    assert ax.get_title() == "buffer"
    assert ax.get_legend() is not None


def test_rolling_buffer_highlights_the_slot_just_written():
    history = real_history()
    ax = viz.plot_rolling_buffer(history)
    colors = [to_hex(c.get_facecolor()) for c in cells(ax)]
    written = [colors[4 * t:4 * t + 4].index("#f4a261") for t in range(10)]
    assert written == [t % 4 for t in range(10)]                   # slot p mod W, every step
    assert texts(ax)[0] == "0"                                      # no tokens given: positions only


def test_rolling_buffer_rejects_1d_history():
    with pytest.raises(ValueError, match="steps, slots"):
        viz.plot_rolling_buffer([0, 1, 2])


def test_chunk_mask_draws_allowed_keys_and_the_cache_chunk_divider():
    positions = torch.arange(4, 8)[None]
    key_pos = torch.cat([torch.tensor([[0, 1, 2, 3]]), positions], dim=1)
    mask = chunk_mask(positions, key_pos, window=4)[0, 0]
    ax = viz.plot_chunk_mask(mask, positions[0], key_pos[0], title="chunk 2", legend=True)
    assert len(cells(ax)) == 4 * 8
    assert len(texts(ax)) == int(mask.sum()) == 16                  # each query sees W = 4 keys
    assert texts(ax)[:4] == ["1", "2", "3", "4"]                   # query 4 sees keys 1..4
    assert [line.get_xdata()[0] for line in ax.lines] == [3.5]      # [cache slots | chunk]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["4", "5", "6", "7"]
    assert ax.get_legend() is not None and ax.get_title() == "chunk 2"


def test_decode_step_mask_has_no_divider_and_marks_the_slot_just_written():
    """A decode step writes itself into its slot first: every key is a slot, its own among them."""
    from mistral_nb import RollingBufferCache
    cache = RollingBufferCache(n_layers=1, batch_size=1, window=4, n_kv_heads=1, head_dim=2)
    for p in range(10):
        cache.begin(torch.tensor([[p]]))
        cache.commit()
    q = torch.tensor([[10]])
    key_pos = cache.begin(q)                                        # slots after the write: 8, 9, 10, 7
    mask = chunk_mask(q, key_pos, window=4, chunk_in_keys=not cache.writes_first)[0, 0]
    ax = viz.plot_chunk_mask(mask, q[0], key_pos[0])
    assert key_pos[0].tolist() == [8, 9, 10, 7] and len(ax.lines) == 0
    assert texts(ax) == ["8", "9", "10", "7"]
    colors = [c.get_facecolor() for c in cells(ax)]
    assert colors[2] != colors[0] and colors[0] == colors[1] == colors[3]   # the new key stands out
    assert "chunk" not in ax.get_xlabel()


def test_chunk_mask_marks_empty_slots_and_checks_shapes():
    positions = torch.arange(0, 2)[None]
    key_pos = torch.cat([torch.full((1, 4), -1), positions], dim=1)
    mask = chunk_mask(positions, key_pos, window=4)[0, 0]
    ax = viz.plot_chunk_mask(mask, positions[0], key_pos[0])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["–"] * 4 + ["0", "1"]
    with pytest.raises(ValueError, match="does not match"):
        viz.plot_chunk_mask(mask, positions[0], key_pos[0, :3])


def test_chunk_masks_panels_share_one_cell_size():
    panels = []
    for a, b in [(0, 4), (4, 6)]:
        q = torch.arange(a, b)[None]
        k = torch.cat([torch.full((1, 4), -1), q], dim=1)
        panels.append((chunk_mask(q, k, 4)[0, 0], q[0], k[0], f"{a}"))
    axes = viz.plot_chunk_masks(panels)
    assert len(axes) == 2 and axes[0].figure is axes[1].figure
    (w0, h0), (w1, h1) = (ax.get_position().size for ax in axes)
    assert w0 / 8 == pytest.approx(w1 / 6) and h0 / 4 == pytest.approx(h1 / 2)   # square-ish cells of equal size
    assert axes[-1].get_legend() is not None and axes[0].get_legend() is None


def chapter_06_panels():
    """The four panels of chapter 06: chunks 0-3, 4-7, 8-9 into a W = 4 cache, then one decode step."""
    panels = []
    for a, b, filled in [(0, 4, []), (4, 8, [0, 1, 2, 3]), (8, 10, [4, 5, 6, 7])]:
        q = torch.arange(a, b)[None]
        k = torch.cat([torch.tensor([filled + [-1] * (4 - len(filled))]), q], dim=1)
        panels.append((chunk_mask(q, k, 4)[0, 0], q[0], k[0], f"{a}-{b - 1}"))
    q, k = torch.tensor([[10]]), torch.tensor([[8, 9, 10, 7]])
    panels.append((chunk_mask(q, k, 4, chunk_in_keys=False)[0, 0], q[0], k[0], "decode"))
    return panels


def test_chunk_masks_wrap_onto_a_two_column_grid():
    panels = chapter_06_panels()
    axes = viz.plot_chunk_masks(panels)                                # default: two columns
    boxes = [ax.get_position() for ax in axes]
    (tl, tr, bl, br), fig = boxes, axes[0].figure
    assert tl.x0 == pytest.approx(bl.x0) and tr.x0 == pytest.approx(br.x0) and tr.x0 > tl.x1   # two columns
    assert tl.y1 == pytest.approx(tr.y1) and bl.y1 == pytest.approx(br.y1) and bl.y1 < tl.y0   # two rows, top-aligned
    cell_w = [b.width * fig.get_figwidth() / T for b, (m, *_) in zip(boxes, panels) for T in [m.shape[1]]]
    cell_h = [b.height * fig.get_figheight() / C for b, (m, *_) in zip(boxes, panels) for C in [m.shape[0]]]
    assert cell_w == pytest.approx([0.48] * 4) and cell_h == pytest.approx([0.48] * 4)   # one cell size
    assert fig.get_figwidth() <= 9.5                                   # fits the book's figure width
    assert [ax.get_ylabel() for ax in axes] == ["query position", "", "query position", ""]
    assert axes[-1].get_legend() is not None and all(ax.get_legend() is None for ax in axes[:-1])
    # the colour key beside the last panel stays inside the figure
    fig.canvas.draw()
    key = axes[-1].get_legend().get_window_extent()
    assert key.x1 <= fig.bbox.x1 and key.y0 >= fig.bbox.y0


def test_chunk_masks_in_one_row_or_one_column():
    panels = chapter_06_panels()
    row = viz.plot_chunk_masks(panels, ncols=None)
    assert len({round(ax.get_position().y1, 6) for ax in row}) == 1
    assert [ax.get_position().x0 for ax in row] == sorted(ax.get_position().x0 for ax in row)
    column = viz.plot_chunk_masks(panels, ncols=1, legend=False)
    assert len({round(ax.get_position().x0, 6) for ax in column}) == 1
    assert [ax.get_position().y0 for ax in column] == sorted((ax.get_position().y0 for ax in column), reverse=True)
    assert all(ax.get_legend() is None for ax in column)


def test_kv_cache_memory_plot_shows_both_caches_and_the_ratio():
    args = ModelArgs.mistral_7b()
    lengths = list(range(0, 32769, 1024))
    full = [kv_cache_bytes(args, n, rolling=False) / 1e9 for n in lengths]
    rolling = [kv_cache_bytes(args, n) / 1e9 for n in lengths]
    ax = viz.plot_kv_cache_memory(lengths, full, rolling, window=4096)
    data = [line.get_ydata() for line in ax.lines if len(line.get_xdata()) == len(lengths)]
    assert len(data) == 2
    assert max(data[1]) == pytest.approx(4096 * 131072 / 1e9)       # the rolling cache stops at W
    assert "8× smaller" in texts(ax)
    assert [t.get_text() for t in ax.get_xticklabels()][-1] == "32k"
    assert ax.get_legend() is not None and ax.get_ylabel() == "cache size (GB)"


# ------------------------------------------------------------------ chapter 07


def test_param_breakdown_bars_and_labels():
    counts = {"feed-forward": 5_637_144_576, "attention": 1_342_177_280, "norms": 266_240}
    ax = viz.plot_param_breakdown(counts)
    bars = cells(ax)
    assert len(bars) == 3
    assert [b.get_width() for b in bars] == pytest.approx([5.637144576, 1.34217728, 0.00026624])
    labels = texts(ax)
    assert labels[0].startswith("5.64 B") and "(80.8 %)" in labels[0]
    assert labels[2] == "266.24 k  (0.004 %)"                     # tiny shares keep their digits
    assert [t.get_text() for t in ax.get_yticklabels()] == list(counts)
    assert "total 6.98 B" in ax.get_title()


def test_memory_by_dtype_bars_and_budget_lines():
    gb = {"float32": 28.97, "bfloat16": 14.48, "int8": 7.24}
    ax = viz.plot_memory_by_dtype(gb, capacities={"T4": 15, "H100": 80})
    assert [b.get_height() for b in cells(ax)] == pytest.approx([28.97, 14.48, 7.24])
    assert {"28.97 GB", "14.48 GB", "7.24 GB", "T4: 15 GB", "H100: 80 GB"} <= set(texts(ax))
    assert sorted(line.get_ydata()[0] for line in ax.lines) == [15, 80]
    assert ax.get_ylim()[1] > 80


def test_parity_errors_colours_pass_and_fail():
    errors = {"hf": 2e-7, "mistral": 3e-7, "broken": 1e-2}
    ax = viz.plot_parity_errors(errors, threshold=1e-5)
    colors = [to_hex(b.get_facecolor()) for b in cells(ax)]
    assert colors[0] == colors[1] != colors[2]
    assert ax.get_yscale() == "log"
    assert [line.get_ydata()[0] for line in ax.lines] == [1e-5]
    assert [t.get_text() for t in ax.get_xticklabels()] == list(errors)


def test_every_plot_accepts_an_existing_axes():
    fig, axes = plt.subplots(1, 5)
    q = torch.arange(2)[None]
    k = torch.cat([torch.full((1, 2), -1), q], dim=1)
    assert viz.plot_rolling_buffer([[0, -1], [0, 1]], ax=axes[0]) is axes[0]
    assert viz.plot_chunk_mask(chunk_mask(q, k, 2)[0, 0], q[0], k[0], ax=axes[1]) is axes[1]
    assert viz.plot_kv_cache_memory([1, 2], [1.0, 2.0], [1.0, 1.0], ax=axes[2]) is axes[2]
    assert viz.plot_param_breakdown({"a": 1, "b": 2}, ax=axes[3]) is axes[3]
    assert viz.plot_memory_by_dtype({"a": 1.0}, ax=axes[4]) is axes[4]
    assert all(ax.figure is fig for ax in axes)


def test_table_renders_as_html_markdown_and_text():
    t = viz.Table(["tokens", "GB"], [["4,096", "0.54"], ["<32k>", "4.29"]])
    html = t._repr_html_()
    assert html.count("<tr>") == 3 and "&lt;32k&gt;" in html              # header + 2 rows, escaped
    assert '<td style="text-align: right; padding: 2px 10px">0.54</td>' in html
    assert t._repr_markdown_().splitlines()[1] == "| --- | ---: |"
    assert repr(t).splitlines() == ["tokens    GB", "4,096   0.54", "<32k>   4.29"]
    with pytest.raises(ValueError, match="2 columns"):
        viz.Table(["a", "b"], [["only one"]])


def test_silu_relu_and_the_gate():
    import numpy as np

    ax = viz.plot_silu_relu()
    relu, silu, sigmoid = ax.get_lines()[:3]
    x = np.asarray(silu.get_xdata())
    assert np.allclose(silu.get_ydata(), x / (1 + np.exp(-x)))
    assert np.allclose(relu.get_ydata(), np.maximum(x, 0))
    assert any("minimum -0.278" in t.get_text() for t in ax.texts)
    ax = viz.plot_swiglu_gate(n=41)
    z = ax.images[0].get_array()
    g = np.linspace(-4, 4, 41)
    assert np.allclose(z[-1], g / (1 + np.exp(-g)) * 4)             # top row: u = 4
    assert abs(z[:, 0]).max() < 0.3 and abs(z[:, -1]).max() > 10   # closed gate on the left, open on the right
