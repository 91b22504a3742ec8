"""mistral_nb.speed.flash (online softmax, tiled attention) and mistral_nb.speed.roofline (FLOPs, bytes, ceilings)."""

from __future__ import annotations

import math

import pytest
import torch

from mistral_nb import ModelArgs
from mistral_nb.attention import attention_naive, attention_sdpa
from mistral_nb.speed.flash import flash_attention, online_softmax, visited_tiles
from mistral_nb.costs import flash_state_bytes, score_matrix_bytes
from mistral_nb.masks import attended_pairs, sliding_window_mask
from mistral_nb.costs import parameter_counts, weights_read_per_token
from mistral_nb.book.results import load_recorded
from mistral_nb.speed.roofline import H100_SXM_BF16, Machine, cpu_machine
from mistral_nb.costs import (Cost, decode_cost, forward_cost, keys_seen, kv_bytes_per_token, matmul_params,
                              prefill_cost)

M7 = ModelArgs.mistral_7b()


# ---------------------------------------------------------------------------------------------- flash


@pytest.mark.parametrize("block", [1, 3, 7, 64])
def test_online_softmax_equals_softmax(block):
    torch.manual_seed(0)
    x = torch.randn(4, 5, 23) * 10
    assert torch.allclose(online_softmax(x, block), torch.softmax(x, -1), atol=1e-6)


def test_online_softmax_survives_huge_scores():
    x = torch.tensor([[1000.0, 1001.0, -1000.0, 999.0]])
    assert torch.allclose(online_softmax(x, 1), torch.softmax(x, -1))


@pytest.mark.parametrize("S,window,bq,bk", [(1, None, 4, 4), (37, None, 8, 8), (40, 8, 8, 8), (100, 16, 16, 8),
                                             (130, 7, 32, 16), (64, 64, 64, 64), (50, 1, 8, 16), (33, 5, 64, 3)])
def test_flash_attention_equals_sdpa(S, window, bq, bk):
    torch.manual_seed(S)
    q, k, v = torch.randn(2, 8, S, 16), torch.randn(2, 2, S, 16), torch.randn(2, 2, S, 16)
    ref = attention_sdpa(q, k, v, sliding_window_mask(S, window))
    out = flash_attention(q, k, v, window=window, block_q=bq, block_k=bk)
    assert out.shape == ref.shape and out.dtype == q.dtype
    assert torch.allclose(out, ref, atol=1e-5)
    assert torch.allclose(out, attention_naive(q, k, v, sliding_window_mask(S, window)), atol=1e-5)


def test_flash_attention_without_mask_and_in_bf16():
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 4, 20, 8), torch.randn(1, 4, 20, 8), torch.randn(1, 4, 20, 8)
    full = flash_attention(q, k, v, causal=False, block_q=6, block_k=5)
    assert torch.allclose(full, torch.nn.functional.scaled_dot_product_attention(q, k, v), atol=1e-5)
    half = flash_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), window=4, block_q=8, block_k=8)
    assert half.dtype == torch.bfloat16
    assert torch.allclose(half.float(), attention_sdpa(q, k, v, sliding_window_mask(20, 4)), atol=3e-2)


def test_flash_attention_rejects_bad_shapes():
    q = torch.randn(1, 3, 5, 4)
    with pytest.raises(ValueError, match="multiple of K"):
        flash_attention(q, torch.randn(1, 2, 5, 4), torch.randn(1, 2, 5, 4))
    with pytest.raises(ValueError, match="causal"):
        flash_attention(q, q, q, window=2, causal=False)


@pytest.mark.parametrize("S,window,b", [(64, None, 8), (64, 16, 8), (100, 10, 16), (17, 4, 4)])
def test_visited_tiles_cover_the_mask_and_skip_empty_tiles(S, window, b):
    mask = sliding_window_mask(S, window)
    covered = torch.zeros(S, S, dtype=torch.bool)
    for q0, q1, k0, k1 in visited_tiles(S, window, b, b):
        assert mask[q0:q1, k0:k1].any(), "a visited tile holds no allowed pair"
        covered[q0:q1, k0:k1] = True
    assert not (mask & ~covered).any(), "an allowed pair lies in no visited tile"


def test_memory_formulas():
    assert score_matrix_bytes(1, 32, 4096) == 32 * 4096 * 4096 * 4
    assert score_matrix_bytes(2, 8, 10, keys=30, bytes_per_value=2) == 2 * 8 * 10 * 30 * 2
    assert flash_state_bytes(1, 32, 4096, 64, 64) == 32 * (2 * 4096 + 64 * 64) * 4


# ---------------------------------------------------------------------------------------------- roofline


def test_two_n_rule_and_bytes_of_a_decode_step():
    c = decode_cost(M7)
    n = matmul_params(M7)
    assert n == 7_241_732_096 - 131_072_000 - 65 * 4096               # all but the table and the norms
    attention = 4 * 32 * 32 * 128 * 1                                  # one pair: the token with itself
    assert c.flops == 2 * n + attention
    assert c.bytes == weights_read_per_token(M7) + kv_bytes_per_token(M7)
    assert kv_bytes_per_token(M7) == 131_072
    assert math.isclose(c.intensity, 1.0, rel_tol=1e-3)               # bf16: 2 FLOPs per 2-byte weight
    assert math.isclose(decode_cost(M7, bytes_per_value=4).intensity, 0.5, rel_tol=1e-3)


def test_batching_raises_intensity_until_the_cache_dominates():
    short = [decode_cost(M7, batch=b).intensity for b in (1, 8, 64, 512)]
    assert short == sorted(short) and short[-1] > 400
    full = [decode_cost(M7, batch=b, context=4096).intensity for b in (1, 64, 512, 4096)]
    assert full == sorted(full) and full[-1] < 33          # each sequence brings 0.54 GB of cache


def test_keys_seen_matches_the_mask():
    small = ModelArgs.tiny(sliding_window=8)
    assert keys_seen(small, 0, 40) == attended_pairs(40, 8)
    assert keys_seen(small, 30, 1) == 8 and keys_seen(small, 3, 1) == 4
    assert keys_seen(small.replace(sliding_window=None), 0, 40) == attended_pairs(40)


def test_prefill_in_chunks_reads_weights_once_per_chunk():
    one = forward_cost(M7, 4096)
    two = prefill_cost(M7, 8192)
    assert two.tokens == 8192 and one.tokens == 4096
    assert two.bytes > 2 * one.bytes - 1 and two.flops > 2 * one.flops    # the second chunk also attends to the cache
    assert prefill_cost(M7, 4096).flops == one.flops


def test_machine_roofline():
    h = H100_SXM_BF16
    assert h.peak_flops == 989.5e12 and h.bandwidth == 3.35e12
    assert math.isclose(h.ridge, 295.37, rel_tol=1e-4)
    assert h.attainable(1.0) == 3.35e12 and h.attainable(1e4) == h.peak_flops
    c = decode_cost(M7)
    assert c.bound(h) == "memory" and round(c.tokens_per_second(h)) == 236
    assert prefill_cost(M7, 4096).bound(h) == "compute"
    toy = Machine("toy", 100.0, 10.0)
    assert Cost(50.0, 10.0).seconds(toy) == 1.0 and Cost(1000.0, 1.0).seconds(toy) == 10.0


def test_cpu_machine_from_the_recorded_gemm_peak():
    rec = load_recorded("benchmarks/results/cpu_gemm_peak.json")
    fp32, bf16 = cpu_machine(rec), cpu_machine(rec, "bf16")
    assert fp32.peak_flops == rec["peak_gflop_per_s"]["float32"] * 1e9
    assert bf16.peak_flops == rec["peak_gflop_per_s"]["bf16"] * 1e9
    assert fp32.bandwidth == bf16.bandwidth == rec["read_gb_per_s"] * 1e9      # one memory roof for both
    assert "float32" in fp32.name and "bf16" in bf16.name
    best = {d: max(r["gflop_per_s"] for r in rec["gemm"] if r["dtype"] == d) for d in ("float32", "bf16")}
    assert best == rec["peak_gflop_per_s"]                                # the peak is the best measured rate
    assert 1e10 < fp32.peak_flops < bf16.peak_flops < 1e13 and 1 < fp32.ridge < bf16.ridge < 100
    assert "avx512_bf16" in rec["cpu"]["has"] or "amx_bf16" in rec["cpu"]["has"]
    with pytest.raises(ValueError, match="dtype must be one of"):
        cpu_machine(rec, "float16")
    with pytest.raises(ValueError, match="not a cpu_gemm_peak.json record"):
        cpu_machine({"copy_gb_per_s": 28.4})
