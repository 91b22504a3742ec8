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
    cpu = cpu_machine(recorded("cpu_gemm_peak"))
    assert viz.plot_roofline(cpu, points[:1]).get_title() == cpu.name


def test_roofline_draws_more_roofs_and_configurations_that_do_not_fit():
    from mistral_nb import ModelArgs
    from mistral_nb.costs import decode_cost, prefill_cost
    from mistral_nb.speed.roofline import Machine

    m7 = ModelArgs.mistral_7b()
    fp32, bf16 = Machine("fp32", 1e11, 2e10), Machine("bf16", 3e11, 2e10)
    prefill = prefill_cost(m7, 128)
    points = [{"label": "bf16 prefill", "cost": prefill, "roof": bf16, "achieved": 2.5e11},
              {"label": None, "cost": prefill, "roof": bf16, "achieved": 2e11},
              {"label": "too big", "cost": decode_cost(m7, batch=8), "fits": False}]
    ax = viz.plot_roofline(fp32, points, others=[bf16])
    roofs = [ln for ln in ax.get_lines() if ln.get_label() in ("fp32", "bf16")]
    assert [(r.get_label(), r.get_linestyle(), max(r.get_ydata())) for r in roofs] == [("fp32", "-", 1e11),
                                                                                      ("bf16", "--", 3e11)]
    filled = [ln for ln in ax.get_lines() if ln.get_marker() == "o" and ln.get_markerfacecolor() != "white"]
    assert filled[0].get_ydata()[0] == 3e11                      # on the bf16 roof, above the fp32 one
    crosses = [ln for ln in ax.get_lines() if ln.get_marker() == "X"]
    assert len(crosses) == 1 and crosses[0].get_ydata()[0] == fp32.attainable(points[2]["cost"].intensity)
    assert [t.get_text() for t in ax.texts][-2:] == ["bf16 prefill", "too big"]     # the unlabelled point adds none
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["fp32", "bf16"]


def test_batch_capacity_marks_the_contexts_where_a_batch_does_not_fit():
    from mistral_nb import ModelArgs
    from mistral_nb.costs import sequences_that_fit

    m7 = ModelArgs.mistral_7b()
    contexts = [512, 1024, 2048, 4096]
    fits = {"GQA": [sequences_that_fit(m7, 80e9, c) for c in contexts],
            "MHA": [sequences_that_fit(m7.replace(n_kv_heads=32), 80e9, c) for c in contexts]}
    ax = viz.plot_batch_capacity(contexts, fits, "80 GB", asked=256)
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert list(lines["GQA"].get_ydata()) == fits["GQA"] and list(lines["MHA"].get_ydata()) == fits["MHA"]
    short = lines["batch 256 does not fit"]
    expected = [(c, n) for counts in fits.values() for c, n in zip(contexts, counts) if n < 256]
    assert list(zip(short.get_xdata(), short.get_ydata())) == expected
    assert fits["GQA"][-1] < 256 < fits["GQA"][0]                # 976 sequences of 512 tokens, 122 of 4,096
    assert [t.get_text() for t in ax.get_xticklabels()] == ["512", "1k", "2k", "4k"]


def test_flash_tiles_outline_the_visited_tiles():
    from mistral_nb.speed.flash import visited_tiles

    ax = viz.plot_flash_tiles(32, 8, 4)
    assert len(ax.patches) == len(visited_tiles(32, 8, 4, 4)) == 21
    assert ax.get_title().endswith("21 of 64 computed")
