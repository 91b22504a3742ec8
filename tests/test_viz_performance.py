"""The figures of chapter 09 draw the recorded benchmark results they are given."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from mistral_nb import viz  # noqa: E402
from mistral_nb.attention import banded_pairs  # noqa: E402
from mistral_nb.book.results import load_recorded  # noqa: E402
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
    assert [t.get_text() for t in time_ax.texts] == [f"{r['speedup']:.1f}× faster" for r in rows]
    assert list(mem_ax.get_lines()[1].get_ydata()) == [r["banded_peak_mb"] for r in rows]
    assert [t.xy for t in time_ax.texts] == [(r["seq_len"], r["banded_s"]) for r in rows]   # at the banded point
    assert time_ax.get_yscale() == mem_ax.get_yscale() == "log"


def test_banded_vs_dense_speedup_labels_clear_the_curves_and_the_tick_labels():
    import numpy as np

    rows = recorded("banded_vs_dense")["rows"]
    time_ax, _ = viz.plot_banded_vs_dense(rows)
    fig = time_ax.figure
    assert fig.get_figwidth() * fig.dpi <= 936                        # not shrunk by the book
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    inside = time_ax.get_window_extent(renderer)
    ticks = [t.get_window_extent(renderer) for t in time_ax.get_xticklabels() if t.get_text()]
    # each curve, sampled densely along its segments, in display coordinates
    curves = []
    for line in time_ax.get_lines()[:2]:
        xy = time_ax.transData.transform(np.column_stack(line.get_data()))
        f = np.linspace(0, 1, 200)[:, None]
        curves.append(np.concatenate([a + f * (b - a) for a, b in zip(xy[:-1], xy[1:])]))
    for t in time_ax.texts:
        box = t.get_window_extent(renderer)
        assert inside.x0 <= box.x0 and box.x1 <= inside.x1 and inside.y0 <= box.y0 and box.y1 <= inside.y1, t.get_text()
        assert not any(box.overlaps(tick) for tick in ticks), t.get_text()
        for pts in curves:
            hit = (pts[:, 0] >= box.x0) & (pts[:, 0] <= box.x1) & (pts[:, 1] >= box.y0) & (pts[:, 1] <= box.y1)
            assert not hit.any(), f"{t.get_text()!r} crosses a curve"


def test_attention_cost_curves_use_the_package_counts():
    lens, W = [1024, 4096], 256
    ax = viz.plot_attention_cost(lens, W)
    dense, banded, needed = ax.get_lines()
    assert list(dense.get_ydata()) == [s * s / 1e6 for s in lens]
    assert list(banded.get_ydata()) == [banded_pairs(s, W) / 1e6 for s in lens]


def test_roofline_places_points_on_the_roof():
    from mistral_nb import ModelArgs
    from mistral_nb.speed.roofline import H100_SXM_BF16, cpu_machine
    from mistral_nb.costs import decode_cost, prefill_cost

    m7 = ModelArgs.mistral_7b()
    points = [{"label": "decode", "cost": decode_cost(m7)}, {"label": "prefill", "cost": prefill_cost(m7, 4096)},
              {"label": "measured", "cost": decode_cost(m7, batch=4), "achieved": 1e12}]
    ax = viz.plot_roofline(H100_SXM_BF16, points)
    roof = ax.get_lines()[0]
    assert max(roof.get_ydata()) == H100_SXM_BF16.peak_flops
    dots = [ln for ln in ax.get_lines() if ln.get_marker() == "o"]
    assert len(dots) == 4                                            # three on the roof, one measured
    assert dots[0].get_ydata()[0] == H100_SXM_BF16.attainable(points[0]["cost"].intensity)
    assert dots[1].get_ydata()[0] == H100_SXM_BF16.peak_flops      # prefill is compute-bound
    assert [t.get_text() for t in ax.texts][-3:] == ["decode", "prefill", "measured"]
    assert ax.get_xscale() == ax.get_yscale() == "log"
    cpu = cpu_machine(recorded("cpu_bandwidth"), recorded("vs_transformers"), recorded("profile_share"))
    assert viz.plot_roofline(cpu, points[:1]).get_title() == cpu.name


def test_flash_tiles_outline_the_visited_tiles():
    from mistral_nb.speed.flash import visited_tiles

    ax = viz.plot_flash_tiles(32, 8, 4)
    assert len(ax.patches) == len(visited_tiles(32, 8, 4, 4)) == 21
    assert ax.get_title().endswith("21 of 64 computed")
