"""The figures of chapters 04 and 05 draw headless and draw what they should; the mask explorer widget
builds, and its callback redraws for new slider values."""

from __future__ import annotations

import base64

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from mistral_nb import viz  # noqa: E402
from mistral_nb.attention import band_blocks, default_block_size  # noqa: E402
from mistral_nb.masks import reachability, receptive_field, sliding_window_mask  # noqa: E402
from mistral_nb.viz.masks import MASK_COLORS  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def image_data(ax) -> np.ndarray:
    return np.asarray(ax.images[0].get_array())


# ----------------------------------------------------------------------------- chapter 04


def test_reexported_from_viz():
    # mistral_nb.viz re-exports every chapter's plots with `import *`: a name defined twice would
    # silently replace one chapter's function with another's, so each must be the submodule's own.
    from mistral_nb.viz import attention, masks

    for module in (attention, masks):
        for name in module.__all__:
            assert getattr(viz, name) is getattr(module, name), f"mistral_nb.viz.{name} is shadowed"


def test_token_labels():
    assert viz.token_labels(["<s>", "\u2581The", "\u2581", "cat"]) == ["<s>", "The", "\u2423", "cat"]
    assert viz.token_labels(["<s>", "\u2581The"], positions=True) == ["0 <s>", "1 The"]


@pytest.mark.parametrize("n_heads, n_kv_heads", [(32, 8), (32, 32), (32, 1), (8, 2)])
def test_head_groups_wires_each_query_head_to_its_kv_head(n_heads, n_kv_heads):
    ax = viz.plot_head_groups(n_heads, n_kv_heads)
    n_rep = n_heads // n_kv_heads
    assert len(ax.patches) == n_heads + n_kv_heads            # one box per head
    assert len(ax.lines) == n_heads                            # one wire per query head
    for q, line in enumerate(ax.lines):
        (x0, x1), _ = line.get_data()
        assert x0 == q and x1 == (q // n_rep) * n_rep + (n_rep - 1) / 2   # lands under its group
    assert f"{n_kv_heads} key/value heads" in ax.get_title() or n_kv_heads == 1


def test_head_groups_rejects_uneven_groups():
    with pytest.raises(ValueError, match="divisible"):
        viz.plot_head_groups(32, 5)


def test_attention_heads_grid_and_mask():
    torch.manual_seed(0)
    H, K, S = 8, 2, 5
    mask = sliding_window_mask(S, None)
    w = torch.softmax(torch.randn(H, S, S).masked_fill(~mask, float("-inf")), -1)
    labels = [f"t{i}" for i in range(S)]
    axes = viz.plot_attention_heads(w, labels, n_kv_heads=K, mask=mask)
    assert axes.shape == (K, H // K)
    for h in range(H):
        ax = axes.flat[h]
        g = h // (H // K)
        assert ax.get_title() == f"query head {h} \u2192 kv head {g}"
        data = image_data(ax)
        assert np.isnan(data[~mask.numpy()]).all()               # masked cells left blank
        np.testing.assert_allclose(data[mask.numpy()], w[h][mask].numpy(), rtol=1e-6)
    assert [t.get_text() for t in axes[-1, 0].get_xticklabels()] == labels
    assert [t.get_text() for t in axes[0, 0].get_yticklabels()] == labels


def test_attention_heads_rejects_bad_shapes():
    with pytest.raises(ValueError, match="heads, queries, keys"):
        viz.plot_attention_heads(torch.rand(4, 4))
    with pytest.raises(ValueError, match="groups"):
        viz.plot_attention_heads(torch.rand(6, 3, 3), n_kv_heads=4)


def test_kv_bytes_bars():
    ax = viz.plot_kv_bytes(["MHA", "GQA"], [524_288, 131_072])
    widths = [p.get_width() for p in ax.patches]
    assert widths == [512, 128]                                  # KiB
    texts = [t.get_text() for t in ax.texts]
    assert any("131,072 bytes" in t for t in texts) and any("524,288 bytes" in t for t in texts)


# ----------------------------------------------------------------------------- chapter 05


def test_plot_mask_draws_the_mask_and_highlights_a_row():
    S, W = 10, 3
    mask = sliding_window_mask(S, W)
    labels = [str(i) for i in range(S)]
    ax = viz.plot_mask(mask, labels=labels, highlight_row=S - 1, title="W = 3")
    data = image_data(ax)
    expected = mask.int().numpy()
    expected[-1] *= 2
    np.testing.assert_array_equal(data, expected)
    assert [t.get_text() for t in ax.get_xticklabels()] == labels
    assert ax.get_title() == "W = 3"


def test_banded_tiles_match_the_package_blocks():
    S, W, block = 24, 6, 4
    ax = viz.plot_banded_tiles(S, W, block_size=block)
    rects = [(p.get_x() + 0.5, p.get_y() + 0.5, p.get_width(), p.get_height()) for p in ax.patches]
    expected = [(k0, s0, s1 - k0, s1 - s0) for s0, s1, k0 in band_blocks(S, W, block)]
    assert rects == expected
    computed = sum(w * h for *_, w, h in expected)
    assert f"{computed} scores computed instead of {S * S}" in ax.get_title()
    # every allowed (query, key) pair lies inside some tile: nothing attended is skipped
    mask = sliding_window_mask(S, W)
    covered = torch.zeros(S, S, dtype=torch.bool)
    for k0, s0, w, h in expected:
        covered[s0:s0 + h, k0:k0 + w] = True
    assert not (mask & ~covered).any()


def test_banded_tiles_default_block_is_the_package_default():
    ax = viz.plot_banded_tiles(80, 16)
    assert len(ax.patches) == len(band_blocks(80, 16, default_block_size(16)))


def test_reachability_plot_and_strip():
    S, W, k = 20, 4, 3
    ax = viz.plot_reachability(reachability(S, W, k))
    data = image_data(ax)
    last = data[-1]
    assert (last[: S - 1 - receptive_field(k, W)] == 0).all()
    assert (last[S - 1 - receptive_field(k, W):] == 2).all()     # the last row is highlighted

    ax = viz.plot_reach_strip(32, 4, 5)
    rows = image_data(ax)
    assert rows.shape == (5, 32)
    for layer in range(1, 6):
        first = int(np.argmax(rows[layer - 1] > 0))
        assert 31 - first == receptive_field(layer, 4)
    assert [t.get_text() for t in ax.texts] == [f"{receptive_field(n, 4)} back" for n in range(1, 6)]


def test_attention_cost_and_influence():
    lengths = [256, 1024, 4096, 16384]
    ax = viz.plot_attended_pairs(lengths, [s * (s + 1) // 2 for s in lengths], [s * 10 for s in lengths], 4096)
    assert len(ax.lines) >= 2 and ax.get_xscale() == "log"
    norms = torch.tensor([0.0, 0.0, 0.5, 2.0])
    ax = viz.plot_influence(norms, first_reachable=2)
    assert len(ax.patches) == 2                                  # bars only for non-zero influence
    assert ax.get_yscale() == "log"


def test_mask_colors_are_three():
    assert len(MASK_COLORS) == 3


# ----------------------------------------------------------------------------- the widget


def test_mask_explorer_builds_and_redraws():
    from mistral_nb.book.widgets import MaskExplorer, mask_explorer

    ex = mask_explorer(window=4, seq_len=20, layers=3)
    assert isinstance(ex, MaskExplorer)
    assert ex.children == (ex.window, ex.seq_len, ex.layers, ex.summary, ex.output)
    assert ex.state == {"window": 4, "seq_len": 20, "layers": 3, "keys_of_last_query": 4,
                        "first_reaching_last": 10, "receptive_field": 9}
    assert "positions 10 to 19" in ex.summary.value
    (out,) = ex.output.outputs
    png0 = base64.b64decode(out["data"]["image/png"])
    assert png0.startswith(b"\x89PNG")
    ax_mask, ax_reach = ex.figure.axes
    np.testing.assert_array_equal(image_data(ax_mask) > 0, sliding_window_mask(20, 4).numpy())

    ex.window.value = 6                      # the slider callback redraws
    assert ex.state["window"] == 6 and ex.state["keys_of_last_query"] == 6
    assert ex.state["first_reaching_last"] == max(0, 19 - receptive_field(3, 6)) == 4
    assert "W = 6" in ex.summary.value
    png1 = base64.b64decode(ex.output.outputs[0]["data"]["image/png"])
    assert png1 != png0
    np.testing.assert_array_equal(image_data(ex.figure.axes[0]) > 0, sliding_window_mask(20, 6).numpy())

    ex.seq_len.value, ex.layers.value = 30, 1
    assert ex.state["seq_len"] == 30 and ex.state["layers"] == 1
    assert ex.state["first_reaching_last"] == 29 - 5
    assert image_data(ex.figure.axes[1]).shape == (30, 30)
    assert len(ex.output.outputs) == 1      # replaced, not appended


def test_mask_explorer_png_is_deterministic():
    from mistral_nb.book.widgets import mask_explorer

    a, b = mask_explorer(window=3, seq_len=12, layers=2), mask_explorer(window=3, seq_len=12, layers=2)
    assert a.output.outputs[0]["data"]["image/png"] == b.output.outputs[0]["data"]["image/png"]


def test_attention_layers_grey_masked_cells_apart_from_zero_weights():
    from matplotlib.colors import to_hex

    from mistral_nb.viz.training import MASKED_COLOR

    S = 6
    w = torch.zeros(2, 2, S, S)
    w[..., torch.arange(S), torch.arange(S)] = 1.0                  # every query on itself: the rest is 0
    axes = viz.plot_attention_layers(w, [str(i) for i in range(S)], window=3)
    image = axes[0, 0].images[0]
    data = image.get_array()
    assert data.mask[0, 5] and data.mask[5, 0]                      # future, and outside the window: masked
    assert not data.mask[2, 1] and data[2, 1] == 0                  # allowed, weight 0: a colour of the scale
    assert to_hex(image.get_cmap().get_bad()) == MASKED_COLOR
    assert to_hex(image.get_cmap()(0.0)) != MASKED_COLOR
    texts = [t.get_text() for lg in axes[0, 0].figure.findobj(matplotlib.legend.Legend) for t in lg.get_texts()]
    assert any(t.startswith("masked") for t in texts)
