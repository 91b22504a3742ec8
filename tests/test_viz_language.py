"""Chapter 12's figures draw what they are given (headless)."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from mistral_nb import viz  # noqa: E402


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


RUN = {"train": {"batch_size": 2}, "seq_len": 8, "loss_every_10": [9.0, 7.0, 6.0], "val_step": [10, 30],
       "val_loss": [7.5, 6.2]}


def test_training_curves_put_tokens_on_x_and_baselines_as_lines():
    ax = viz.plot_training_curves({"swa": RUN}, baselines={"bigram": 5.0})
    train_line, val_line = ax.lines[:2]
    assert list(train_line.get_xdata()) == pytest.approx([5 * 16 / 1e6, 15 * 16 / 1e6, 25 * 16 / 1e6])
    assert list(val_line.get_ydata()) == [7.5, 6.2]
    assert any(list(line.get_ydata()) == [5.0, 5.0] for line in ax.lines)          # the baseline
    assert any("bigram baseline 5.00" in t.get_text() for t in ax.texts)


def test_perplexities_sorted_log_scale_labelled():
    ax = viz.plot_perplexities({"uniform": 32000.0, "bigram": 140.0, "swa": 90.0})
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["uniform", "bigram", "sliding window"]
    assert [t.get_text() for t in ax.texts] == ["32,000.0", "140.0", "90.0"]
    assert not ax.patches, "no bars on a log axis: a bar's length would mean nothing there"
    assert list(ax.collections[-1].get_offsets()[:, 0]) == [32000.0, 140.0, 90.0]      # one dot per model


def test_loss_by_position_and_context_mark_window_and_reach():
    ax = viz.plot_loss_by_position({"swa": np.linspace(6, 4, 50), "full": np.linspace(6, 3.8, 50)}, window=8, reach=21)
    assert len(ax.lines) == 4 and ax.get_xscale() == "log"
    assert {t.get_text().strip() for t in ax.texts} == {"W = 8", "L(W-1) = 21"}
    ha = {t.get_text().strip(): t.get_horizontalalignment() for t in ax.texts}
    assert ha == {"W = 8": "left", "L(W-1) = 21": "right"}        # the reach's label stays inside the axes
    flat = viz.plot_loss_by_position({"swa": np.full(20, 5.0)})
    assert list(flat.lines[0].get_ydata()) == pytest.approx([5.0] * 20)          # smoothing keeps the level and length
    ax2 = viz.plot_loss_by_context([1, 4, 16], {"swa": [6, 5, 4.5]}, window=8)
    assert list(ax2.lines[0].get_xdata()) == [1, 4, 16]


def test_head_scores_one_panel_per_kind_with_values():
    scores = {"previous token": np.eye(3, 4), "induction": np.zeros((3, 4))}
    axes = viz.plot_head_scores(scores)
    assert len(axes) == 2 and axes[0].get_title() == "previous token"
    assert len(axes[0].texts) == 12 and axes[0].texts[0].get_text() == "1.00"


def test_attention_by_distance_one_line_per_layer():
    ax = viz.plot_attention_by_distance(np.full((3, 8), 1 / 8))
    assert len(ax.lines) == 3 and ax.get_yscale() == "log"


def test_decode_vs_ceiling_bars_and_ceilings():
    summary = {"ours_bf16": {"decode_tokens_per_s": 1.0, "ceiling_tokens_per_s": 1.6},
               "ours_int8": {"decode_tokens_per_s": 1.9, "ceiling_tokens_per_s": 3.0}}
    ax = viz.plot_decode_vs_ceiling(summary)
    assert [p.get_height() for p in ax.patches] == [1.0, 1.9]
    texts = [t.get_text() for t in ax.texts]
    assert "ceiling 1.60" in texts and any("63% of ceiling" in t for t in texts)


def test_decode_vs_ceiling_a_bar_past_its_ceiling_keeps_both_labels_apart():
    summary = {"ours_bf16": {"decode_tokens_per_s": 1.0, "ceiling_tokens_per_s": 1.6},
               "ours_bf16_packed": {"decode_tokens_per_s": 1.8, "ceiling_tokens_per_s": 1.6}}
    ax = viz.plot_decode_vs_ceiling(summary)
    ceiling = {t.get_position()[0]: t for t in ax.texts if t.get_text().startswith("ceiling")}
    assert ceiling[0].get_va() == "bottom" and ceiling[1].get_va() == "top"      # under the line where the bar passes it
    assert ax.get_ylim()[1] >= 1.8 * 1.25
