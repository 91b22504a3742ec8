"""mistral_nb.book.source: listings of whole objects and of pieces of long functions."""

from __future__ import annotations

import pytest

from mistral_nb.book.source import show_source, source_of, source_part


def sample(x):
    """A function to cut into pieces."""
    y = x + 1          # first step
    if y > 2:
        y = y * 2      # second step
    return y           # last step


def test_source_of_is_the_dedented_source():
    text = source_of(sample)
    assert text.startswith("def sample(x):") and text.endswith("return y           # last step\n")


def test_whole_piece_equals_the_source():
    assert source_part(sample) == source_of(sample)


def test_piece_between_markers_with_elisions():
    piece = source_part(sample, start="if y > 2", stop="return y")
    assert piece.splitlines() == ["# ...", "if y > 2:", "    y = y * 2      # second step", "# ..."]


def test_piece_from_start_and_to_end():
    head = source_part(sample, stop="if y > 2").splitlines()
    assert head[0] == "def sample(x):" and head[-1] == "    # ..." and "first step" in head[-2]
    tail = source_part(sample, start="return y").splitlines()
    assert tail == ["# ...", "return y           # last step"]


def test_missing_marker_names_it():
    with pytest.raises(ValueError, match="no line containing 'nothing like this'.*sample"):
        source_part(sample, start="nothing like this")
    with pytest.raises(ValueError, match="stop"):
        source_part(sample, start="return y", stop="first step")       # stop must come after start


def test_show_source_markdown():
    md = show_source(sample, start="if y", stop="return")
    assert md.data.startswith("```python\n# ...\nif y > 2:") and md.data.endswith("```")
    both = show_source(sample, source_of).data
    assert "def sample(x):" in both and "def source_of(obj)" in both
    with pytest.raises(ValueError, match="exactly one"):
        show_source(sample, source_of, start="x")
