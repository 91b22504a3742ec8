"""costs: one place for every count, each checked against the tensors or the masks it counts."""

import pytest
import torch

from helpers import tiny_args
from mistral_nb import ModelArgs, Transformer
from mistral_nb.checkpoint import empty_model
from mistral_nb.costs import (block_linear_rows, decode_bytes_per_token, keys_seen, kv_bytes_per_token, kv_cache_bytes,
                              model_nbytes, parameter_count, sequences_that_fit, weights_nbytes, weights_read_per_token)
from mistral_nb.masks import sliding_window_mask
from mistral_nb.speed.int8 import quantize_model

M7 = ModelArgs.mistral_7b()


def test_mistral_7b_counts():
    assert parameter_count(M7) == 7_241_732_096 == empty_model(M7).num_parameters()
    assert weights_nbytes(M7) == 2 * 7_241_732_096
    assert weights_read_per_token(M7) == 2 * (7_241_732_096 - 31_999 * 4096)
    assert kv_bytes_per_token(M7) == 32 * 2 * 8 * 128 * 2 == 131_072
    assert kv_cache_bytes(M7, 32_768) == 4096 * 131_072                        # the rolling buffer stops at W
    assert kv_cache_bytes(M7, 32_768, rolling=False) == 8 * kv_cache_bytes(M7, 32_768)   # the paper's 8x at 32k


@pytest.mark.parametrize("args", [tiny_args(), tiny_args(n_kv_heads=4, hidden_dim=96), tiny_args(sliding_window=None)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_config_counts_equal_the_built_models(args, dtype):
    model = empty_model(args).to(dtype)
    b = torch.empty((), dtype=dtype).element_size()
    assert model_nbytes(model) == weights_nbytes(args, b)
    assert decode_bytes_per_token(model) == weights_read_per_token(args, b)
    q = quantize_model(empty_model(args).to(dtype))
    assert model_nbytes(q) == weights_nbytes(args, b, "int8")
    assert decode_bytes_per_token(q) == weights_read_per_token(args, b, "int8")
    assert block_linear_rows(args) == sum(m.scale.numel() for m in q.modules() if hasattr(m, "scale"))


@pytest.mark.parametrize("window", [None, 1, 5, 8])
def test_keys_seen_closed_form_counts_the_mask(window):
    args = tiny_args(sliding_window=window)
    for past in (0, 3, 7, 8, 20):
        for tokens in (1, 2, 9, 30):
            q = torch.arange(past, past + tokens)[:, None]
            k = torch.arange(past + tokens)[None, :]
            seen = (k <= q) & ((q - k < window) if window else True)
            assert keys_seen(args, past, tokens) == int(seen.sum()), (past, tokens)
    assert keys_seen(tiny_args(sliding_window=8), 0, 40) == int(sliding_window_mask(40, 8).sum())


def test_sequences_that_fit_an_80_gb_gpu():
    # bf16 weights 14.48 GB; one 4,096-token sequence holds 0.54 GB of keys and values
    assert sequences_that_fit(M7, 80e9, 4096) == int((80e9 - 2 * 7_241_732_096) // (4096 * 131_072))
    assert sequences_that_fit(M7, 80e9, 4096) < 256 < sequences_that_fit(M7, 80e9, 128)
    assert sequences_that_fit(M7, 10e9, 4096) == 0                             # the weights alone do not fit
    mha = M7.replace(n_kv_heads=32)
    assert 4 < sequences_that_fit(M7, 80e9, 4096) / sequences_that_fit(mha, 80e9, 4096) < 4.3   # MHA: 4x the cache, and bigger wk, wv


def test_bad_quantize_name_is_refused():
    with pytest.raises(ValueError, match="quantize must be one of"):
        weights_nbytes(M7, 2, "int3")


def test_transformer_num_parameters_is_the_config_count():
    args = tiny_args()
    assert Transformer(args).num_parameters() == parameter_count(args)
