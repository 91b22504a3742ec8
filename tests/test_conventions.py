"""mistral_nb.book.conventions: the window conventions of the paper, Mistral's reference and transformers."""

from __future__ import annotations

import pytest
import torch

from mistral_nb.book.conventions import (keys_per_query, paper_text_mask, reach, reference_prefill_mask,
                                         rolling_decode_mask)
from mistral_nb.masks import receptive_field, sliding_window_mask


@pytest.mark.parametrize("S,W", [(1, 1), (5, 3), (9, 8), (8, 8), (7, 8), (32, 8), (40, 1)])
def test_paper_reading_equals_reference_prefill(S, W):
    assert torch.equal(paper_text_mask(S, W), reference_prefill_mask(S, W))
    assert keys_per_query(paper_text_mask(S, W)) == [min(i + 1, W + 1) for i in range(S)]


@pytest.mark.parametrize("S,W", [(1, 1), (5, 3), (9, 8), (8, 8), (7, 8), (32, 8), (40, 1)])
def test_rolling_decode_equals_the_package(S, W):
    assert torch.equal(rolling_decode_mask(S, W), sliding_window_mask(S, W))
    assert keys_per_query(rolling_decode_mask(S, W)) == [min(i + 1, W) for i in range(S)]


def test_transformers_counts_like_the_package():
    import transformers.masking_utils as masking_utils   # transformers is pinned: a missing module must fail
    S, W = 20, 5
    i, j = torch.arange(S)[:, None], torch.arange(S)[None, :]
    window = masking_utils.sliding_window_overlay(W)(0, 0, i, j)
    causal = masking_utils.causal_mask_function(0, 0, i, j)
    assert torch.equal(window & causal, sliding_window_mask(S, W))


@pytest.mark.parametrize("layers,W", [(1, 4), (2, 4), (3, 4), (3, 8), (5, 2)])
def test_reach(layers, W):
    S = layers * (W + 1) + 5
    assert reach(paper_text_mask(S, W), layers) == layers * W
    assert reach(sliding_window_mask(S, W), layers) == layers * (W - 1) == receptive_field(layers, W)


def test_reach_needs_a_long_enough_mask():
    with pytest.raises(ValueError, match="longer"):
        reach(paper_text_mask(8, 4), 2)
