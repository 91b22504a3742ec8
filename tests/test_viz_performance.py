"""The figures of chapter 09 draw the recorded benchmark results they are given."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from mistral_nb import viz  # noqa: E402
from mistral_nb.attention import banded_pairs  # noqa: E402
from mistral_nb.results import load_recorded  # noqa: E402
from mistral_nb.viz.performance import SPEED_ROWS  # noqa: E402

ROOT = Path(__file__).parent.parent


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def recorded(name: str) -> dict:
    return load_recorded(f"benchmarks/results/{name}.json", start=ROOT)


def test_speed_ratios_draw_one_bar_per_recorded_ratio():
    summary = recorded("vs_transformers")
    ax = viz.plot_speed_ratios(summary)
    widths = [round(p.get_width(), 3) for p in ax.patches]
    assert widths == [summary[key] for _, key in SPEED_ROWS]
    top_down = sorted(zip(ax.get_yticks(), (t.get_text() for t in ax.get_yticklabels())), reverse=True)
    assert [label for _, label in top_down] == [name for name, _ in SPEED_ROWS]   # first row at the top
    assert [round(p.get_y() + p.get_height() / 2) for p in ax.patches] == sorted(ax.get_yticks(), reverse=True)
    assert ax.get_xlim()[1] > max(widths)


def test_speed_ratios_need_every_ratio():
    summary = dict(recorded("vs_transformers"))
    del summary["generate_ratio_compiled"]
    with pytest.raises(KeyError, match="generate_ratio_compiled"):
        viz.plot_speed_ratios(summary)


def test_banded_vs_dense_plots_the_recorded_rows():
    rows = recorded("banded_vs_dense")["rows"]
    time_ax, mem_ax = viz.plot_banded_vs_dense(rows)
    dense, banded = time_ax.get_lines()[:2]
    assert list(dense.get_ydata()) == [r["dense_s"] for r in rows]
    assert list(banded.get_ydata()) == [r["banded_s"] for r in rows]
    assert [t.get_text() for t in time_ax.texts] == [f"{r['speedup']:.1f}×" for r in rows]
    assert list(mem_ax.get_lines()[1].get_ydata()) == [r["banded_peak_mb"] for r in rows]


def test_kv_cache_bars_group_three_series_per_length():
    computed = recorded("kv_cache_bytes")["computed_7b_bf16"]
    ax = viz.plot_kv_cache_gb(computed)
    assert len(ax.patches) == 3 * len(computed)
    rolling = [p.get_height() for p in ax.patches[2 * len(computed):]]
    assert rolling == [c["gqa_rolling_gb"] for c in computed]


def test_attention_cost_curves_use_the_package_counts():
    lens, W = [1024, 4096], 256
    ax = viz.plot_attention_cost(lens, W)
    dense, banded, needed = ax.get_lines()
    assert list(dense.get_ydata()) == [s * s / 1e6 for s in lens]
    assert list(banded.get_ydata()) == [banded_pairs(s, W) / 1e6 for s in lens]
