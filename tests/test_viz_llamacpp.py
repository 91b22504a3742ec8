"""Chapter 10's new figures: this package beside llama.cpp, and the quality of int8 / int4 weights."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from mistral_nb import viz  # noqa: E402


def test_side_by_side_bars_and_ceilings():
    row = lambda d, p, c: {"decode_tokens_per_s": d, "prefill_tokens_per_s": p, "ceiling_tokens_per_s": c}  # noqa: E731
    summary = {"a": row(1.5, 27.0, 2.1), "b": row(1.2, 20.0, 2.1), "c": row(4.0, 10.0, 6.0), "d": row(5.0, 30.0, 6.5)}
    axes = viz.plot_side_by_side(summary, {"bf16": ("a", "b"), "4-bit": ("c", "d"), "absent": ("x", "y")})
    decode, prefill = axes
    assert sorted(p.get_height() for p in decode.patches) == [1.2, 1.5, 4.0, 5.0]
    assert [t.get_text() for t in decode.get_xticklabels()] == ["bf16", "4-bit"]
    assert sorted(t.get_text() for t in prefill.texts) == ["10.0", "20.0", "27.0", "30.0"]
    assert len(decode.collections) == 2 and decode.get_ylim()[1] > 6.5          # ceilings drawn, in view
    assert decode.get_legend() is not None and prefill.get_legend() is None       # one legend, off the tall bars
    plt.close("all")


def test_quant_quality_dots_sorted_best_first():
    configs = {"int8": {"mean_kld": 1e-4, "mean_kld_err": 1e-5}, "int4": {"mean_kld": 1e-2, "mean_kld_err": 1e-3},
               "llama.cpp Q4_0": {"mean_kld": 5e-2, "mean_kld_err": 1e-2}, "n/a": {"not_applicable": "shape"}}
    ax = viz.plot_quant_quality(configs)
    by_height = sorted((t.get_position()[1], t.get_text()) for t in ax.get_yticklabels())
    assert [name for _, name in by_height] == ["llama.cpp Q4_0", "int4", "int8"]          # bottom to top
    assert ax.get_xscale() == "log"
    plt.close("all")
