"""Chapter 15's figures draw what they are given (headless)."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from mistral_nb import viz  # noqa: E402


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def test_scored_tokens_colour_the_answer_and_count_it():
    ax = viz.plot_scored_tokens(["<s>", "▁[", "INST", "▁Hi", "▁Hello", "</s>"], [False] * 4 + [True] * 2, per_row=4)
    colours = [p.get_facecolor()[:3] for p in ax.patches]
    assert len(ax.patches) == 6 and colours[4] == colours[5] != colours[0]
    assert "2 of 6 tokens are scored" in ax.get_title()
    assert [t.get_text() for t in ax.texts][3] == "▁Hi"


def test_lora_shapes_are_to_scale_and_count_the_parameters():
    ax = viz.plot_lora_shapes(4096, 4096, 8)
    w, b, a = ax.patches
    assert w.get_height() == pytest.approx(b.get_height()) and a.get_width() == pytest.approx(w.get_width())
    assert b.get_width() == pytest.approx(max(8 / 4096, 0.012))
    assert "65,536 trainable numbers instead of 16,777,216 (0.39%)" in ax.get_title()


def test_losses_one_line_per_run_from_step_1():
    ax = viz.plot_finetune_losses({"full": [3.0, 2.0, 1.5], "LoRA": [3.0, 2.5]})
    assert [list(line.get_xdata()) for line in ax.lines] == [[1, 2, 3], [1, 2]]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["full", "LoRA"]
    ax = viz.plot_finetune_losses({"full": [4.0, 2.0, 3.0, 1.0, 5.0]}, every=2)
    assert list(ax.lines[0].get_xdata()) == [2, 4, 5] and list(ax.lines[0].get_ydata()) == [3.0, 2.0, 5.0]


def test_exact_match_groups_bars_by_task_with_chance_lines():
    ax = viz.plot_exact_match({"base": {"repeat": 0.0, "order": 0.5}, "SFT": {"repeat": 0.75, "order": 0.5}},
                              ["repeat", "order"], chance={"order": 0.5})
    heights = [p.get_height() for p in ax.patches]
    assert heights == [0.0, 0.5, 0.75, 0.5]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["repeat", "order"]
    assert len(ax.collections) == 1                           # one chance line


def test_memory_budget_stacks_components_and_marks_the_gpu():
    ax = viz.plot_memory_budget({"int8 + LoRA": {"weights": 7.5e9, "activations": 0.8e9},
                                 "fp16 + LoRA": {"weights": 14.5e9, "activations": 3e9}}, limit_gb=15, limit_label="T4")
    lefts = [p.get_x() for p in ax.patches]
    assert lefts == [0.0, 7.5, 0.0, 14.5]
    assert any(t.get_text().strip() == "8.3 GB" for t in ax.texts) and any("T4" in t.get_text() for t in ax.texts)
