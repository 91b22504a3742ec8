"""The figures of chapters 02 (embeddings, RMSNorm) and 03 (RoPE) draw headless and draw what they should."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import mistral_nb.viz as viz  # noqa: E402
from mistral_nb.norm import rms_norm  # noqa: E402
from mistral_nb.rope import mistral_to_hf_qk  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_reexported_from_viz():
    for name in ("plot_rms_before_after", "plot_gain_effect", "plot_running_sums", "plot_rope_wavelengths",
                 "plot_pair_rotation", "plot_qk_permutation", "plot_rope_decay", "plot_error_by_position"):
        assert callable(getattr(viz, name)), name


# ------------------------------------------------------------------ chapter 02
def test_plot_rms_before_after():
    torch.manual_seed(0)
    scales = torch.logspace(-4, 2, 13)
    x = torch.randn(13, 32) * scales[:, None]
    y = rms_norm(x, torch.ones(32), 1e-5)
    ax = viz.plot_rms_before_after(x, y, eps=1e-5)
    assert isinstance(ax, plt.Axes)
    assert len(ax.collections) == 2                                  # before and after scatters
    after = ax.collections[1].get_offsets()
    np.testing.assert_allclose(after[:, 0], x.pow(2).mean(-1).sqrt().numpy(), rtol=1e-5)
    np.testing.assert_allclose(after[-1, 1], 1.0, rtol=1e-4)         # large inputs come out at RMS 1
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert "RMS" in ax.get_xlabel() and ax.get_ylabel()
    assert len(ax.get_legend().get_texts()) == 3                     # curve + two scatters
    # without eps there is no theoretical curve
    ax2 = viz.plot_rms_before_after(x, y)
    assert len(ax2.get_lines()) == 0 and len(ax2.get_legend().get_texts()) == 2


def test_plot_gain_effect():
    torch.manual_seed(0)
    gain = torch.rand(16) * 2
    out = rms_norm(torch.randn(256, 16), gain, 1e-5)
    ax = viz.plot_gain_effect(out, gain)
    assert len(ax.patches) == 16                                     # one bar per channel
    np.testing.assert_allclose([p.get_height() for p in ax.patches], gain.numpy(), rtol=1e-6)
    dots = ax.get_lines()[0]
    assert len(dots.get_xdata()) == 16
    assert ax.get_xlabel() == "channel c" and "RMS" in ax.get_ylabel()


def test_plot_running_sums():
    sq = torch.arange(1.0, 11.0)
    ax = viz.plot_running_sums({"float32": sq.cumsum(0), "bfloat16": sq.bfloat16().cumsum(0)})
    lines = ax.get_lines()
    assert len(lines) == 2 and [t.get_text() for t in ax.get_legend().get_texts()] == ["float32", "bfloat16"]
    assert list(lines[0].get_xdata()) == list(range(1, 11)) and lines[0].get_ydata()[-1] == 55
    assert ax.get_xlabel() and ax.get_ylabel()


# ------------------------------------------------------------------ chapter 03
def test_plot_rope_wavelengths():
    ax = viz.plot_rope_wavelengths(128, 10000.0, marks={"window": 4096, "context": 8192})
    line = ax.get_lines()[0]
    y = line.get_ydata()
    assert len(y) == 64 and ax.get_yscale() == "log"
    assert math.isclose(y[0], 2 * math.pi, rel_tol=1e-6) and round(y[-1]) == 54410
    assert len(ax.get_lines()) == 3                                  # wavelengths + two marks
    assert "pair" in ax.get_xlabel() and "wavelength" in ax.get_ylabel()


def test_plot_pair_rotation():
    ax = viz.plot_pair_rotation(range(5), pairs=[0, 3], head_dim=16)
    points = [ln for ln in ax.get_lines() if ln.get_marker() == "o"]
    assert len(points) == 2                                          # one set of points per pair
    xs, ys = points[0].get_xdata(), points[0].get_ydata()
    np.testing.assert_allclose(xs, np.cos(np.arange(5)), atol=1e-6)  # pair 0 turns 1 rad per token
    np.testing.assert_allclose(ys, np.sin(np.arange(5)), atol=1e-6)
    r = np.hypot(points[1].get_xdata(), points[1].get_ydata())
    np.testing.assert_allclose(r, r[0], atol=1e-6)                   # the second pair stays on its circle
    assert len(ax.texts) == 10                                       # every point labelled with its position
    assert ax.get_xlabel() and ax.get_ylabel()


def test_plot_qk_permutation_draws_the_package_permutation():
    hd = 8
    ax = viz.plot_qk_permutation(hd)
    arrows = [t for t in ax.texts if getattr(t, "arrow_patch", None) is not None]
    assert len(arrows) == hd
    moved = mistral_to_hf_qk(torch.arange(float(hd))[:, None], 1)[:, 0].long().tolist()
    drawn = sorted((int(-a.xy[1]), int(-a.xyann[1])) for a in arrows)   # (hf row, mistral row)
    assert drawn == sorted((r, j) for r, j in enumerate(moved))
    labels = [t.get_text() for t in ax.texts if getattr(t, "arrow_patch", None) is None]
    assert "row 1: pair 0, 2nd" in labels and "row 4: pair 0, 2nd" in labels


def test_plot_rope_decay():
    d = np.arange(0, 5000)
    b = 32.5 / (1 + d) + np.abs(np.sin(d))           # a decaying curve that oscillates fast
    ax = viz.plot_rope_decay(d, b)
    raw, envelope, mean = ax.get_lines()
    assert len(raw.get_xdata()) == 5000
    # the envelope is the maximum of the raw curve in each bin, the mean line its mean: never above it
    assert np.isclose(envelope.get_ydata().max(), b.max())
    assert all(m <= e + 1e-12 for m, e in zip(mean.get_ydata(), envelope.get_ydata()))
    assert len(envelope.get_xdata()) < 100            # binned: a readable line, not a band
    assert "distance" in ax.get_xlabel() and ax.get_ylabel()
    assert [t.get_text() for t in ax.get_legend().get_texts()][1].startswith("maximum")


def test_plot_error_by_position():
    ax = viz.plot_error_by_position({"a": torch.zeros(6), "b": np.linspace(0, 1, 6)})
    assert len(ax.get_lines()) == 2 and len(ax.get_lines()[1].get_ydata()) == 6
    assert ax.get_xlabel() == "position in the sequence" and ax.get_ylabel()
