"""Chapter 14's figures draw what they are given (headless)."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from mistral_nb import viz  # noqa: E402


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def test_task_scores_one_panel_per_task_with_intervals_and_chance():
    scores = {"next sentence": {"model": {0: (0.5, 0.45, 0.55), 3: (0.6, 0.55, 0.65)}, "bigram": {0: (0.3, 0.26, 0.34)}},
              "cloze": {"model": {0: (0.1, 0.08, 0.12)}}}
    axes = viz.plot_task_scores(scores, chance={"next sentence": 0.25, "cloze": None})
    assert len(axes) == 2 and [a.get_title() for a in axes] == ["next sentence", "cloze"]
    assert [t.get_text() for t in axes[0].get_yticklabels()] == ["model", "bigram"]
    dots = [line for line in axes[0].lines if line.get_marker() in ("o", "s")]          # not the caps
    assert sorted(round(float(d.get_xdata()[0]), 2) for d in dots) == [0.3, 0.5, 0.6]
    assert any(list(line.get_xdata()) == [0.25, 0.25] for line in axes[0].lines)        # the chance line
    assert any("chance 25%" in t.get_text() for t in axes[0].texts) and not axes[1].texts
    bars = [c for c in axes[0].collections if hasattr(c, "get_segments")]
    assert any(abs(seg[0][0] - 0.55) < 1e-9 and abs(seg[1][0] - 0.65) < 1e-9 for c in bars for seg in c.get_segments())


def test_paper_table_bars_and_values():
    ax = viz.plot_paper_table({"MMLU": {"Mistral 7B": 60.1, "Llama 2 13B": 55.6}, "HellaSwag": {"Mistral 7B": 81.3}})
    assert len(ax.patches) == 4                        # 2 benchmarks x 2 models; the missing value is an empty bar
    assert sorted(t.get_text() for t in ax.texts) == ["55.6", "60.1", "81.3"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["MMLU", "HellaSwag"]
