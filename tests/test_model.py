"""Building blocks: RMSNorm, RoPE, masks, attention paths, the 7B parameter count."""

import math

import pytest
import torch
import torch.nn.functional as F

from helpers import random_model, rel_err, tiny_args
from mistral_nb import ModelArgs, Transformer
from mistral_nb.attention import attention_naive, attention_sdpa, banded_attention, repeat_kv
from mistral_nb.masks import (and_masks, causal, chunk_mask, mask_matrix, reachability, receptive_field,
                              sliding_window, sliding_window_mask)
from mistral_nb.norm import RMSNorm, rms_norm
from mistral_nb.rope import (apply_rope, apply_rope_complex, apply_rope_hf, hf_to_mistral_qk, mistral_to_hf_qk,
                             rope_angles)


def test_mistral_7b_parameter_count_on_meta():
    with torch.device("meta"):
        model = Transformer(ModelArgs.mistral_7b())
    assert model.num_parameters() == 7_241_732_096
    assert all(p.is_meta for p in model.parameters())


def test_mistral_7b_args():
    a = ModelArgs.mistral_7b()
    assert (a.dim, a.n_layers, a.n_heads, a.n_kv_heads, a.head_dim) == (4096, 32, 32, 8, 128)
    assert (a.hidden_dim, a.vocab_size, a.sliding_window, a.rope_theta, a.norm_eps) == (14336, 32000, 4096, 1e4, 1e-5)
    assert a.n_rep == 4


def test_rms_norm_matches_formula_and_runs_in_float32():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 16) * 10
    w = torch.randn(16)
    ref = x / torch.sqrt((x ** 2).mean(-1, keepdim=True) + 1e-5) * w
    assert torch.allclose(rms_norm(x, w, 1e-5), ref, atol=1e-5)
    xb = x.to(torch.bfloat16)
    out = RMSNorm(16).to(torch.bfloat16)(xb)
    assert out.dtype == torch.bfloat16
    # statistics in float32: rows have unit RMS up to bf16 rounding of the output
    assert torch.allclose(out.float().pow(2).mean(-1), torch.ones(3, 5), atol=2e-2)


def test_rope_relative_position_property():
    torch.manual_seed(0)
    D = 32
    q, k = torch.randn(1, 1, 1, D), torch.randn(1, 1, 1, D)

    def rot(x, p):
        cos, sin = rope_angles(torch.tensor([p]), D)
        return apply_rope(x, cos, sin)

    dots = [(rot(q, m) * rot(k, m + 5)).sum().item() for m in (0, 7, 100, 3000)]
    assert max(dots) - min(dots) < 1e-3 * abs(dots[0]) + 1e-4
    assert abs((rot(q, 0) * rot(k, 5)).sum() - (rot(q, 0) * rot(k, 6)).sum()) > 1e-4


def test_rope_complex_form_equals_real_form():
    torch.manual_seed(0)
    x = torch.randn(2, 10, 3, 16)
    pos = torch.arange(10)
    cos, sin = rope_angles(pos, 16)
    assert torch.allclose(apply_rope(x, cos, sin), apply_rope_complex(x, pos), atol=1e-6)


def test_rope_layouts_agree_after_permutation():
    torch.manual_seed(0)
    H, D, dim = 3, 16, 24
    w = torch.randn(H * D, dim)
    x = torch.randn(2, 7, dim)
    cos, sin = rope_angles(torch.arange(7), D)
    q_mistral = apply_rope((x @ w.T).view(2, 7, H, D), cos, sin)
    q_hf = apply_rope_hf((x @ mistral_to_hf_qk(w, H).T).view(2, 7, H, D), cos, sin)
    # the same scores: q . k is invariant to the same permutation of q and k channels
    k_mistral, k_hf = q_mistral.roll(1, dims=1), q_hf.roll(1, dims=1)
    assert torch.allclose((q_mistral * k_mistral).sum(-1), (q_hf * k_hf).sum(-1), atol=1e-4)
    assert torch.equal(hf_to_mistral_qk(mistral_to_hf_qk(w, H), H), w)
    assert not torch.equal(mistral_to_hf_qk(w, H), w)


@pytest.mark.parametrize("W", [1, 3, 8])
def test_window_counts_the_current_token(W):
    m = sliding_window_mask(20, W)
    for i in range(20):
        visible = m[i].nonzero().flatten().tolist()
        assert visible == list(range(max(0, i - W + 1), i + 1))
    assert (m.sum(-1) <= W).all() and m.sum(-1).max() == W


def test_mask_predicates_compose():
    q = torch.arange(6)
    m = mask_matrix(and_masks(causal, sliding_window(2)), q)
    assert m.tolist()[3] == [False, False, True, True, False, False]
    assert torch.equal(mask_matrix(causal, q), torch.ones(6, 6).tril().bool())


def test_receptive_field_grows_k_times_w():
    W, L = 4, 3
    assert receptive_field(L, W) == L * (W - 1)
    reach = reachability(40, W, L)
    assert reach[39].nonzero().min().item() == 39 - receptive_field(L, W)


def test_chunk_mask_padding_and_empty_slots():
    # cache of W=4 slots holding positions 2..5 (slot = pos % 4), chunk = positions 6, 7
    slot_pos = torch.tensor([[4, 5, 2, 3]])
    q = torch.tensor([[6, 7]])
    m = chunk_mask(q, torch.cat([slot_pos, q], 1), 4)[0, 0]
    # query 6 sees 3, 4, 5, 6; query 7 sees 4, 5, 6, 7
    assert m.tolist() == [[True, True, False, True, True, False], [True, True, False, False, True, True]]
    empty = chunk_mask(torch.tensor([[-1, 0]]), torch.tensor([[-1, -1, -1, -1, -1, 0]]), 4)[0, 0]
    assert empty.tolist() == [[False] * 4 + [True, False], [False] * 5 + [True]]


@pytest.mark.parametrize("n_kv", [1, 2, 4])
def test_attention_paths_agree(n_kv):
    torch.manual_seed(0)
    B, H, S, D = 2, 4, 11, 8
    q, k, v = torch.randn(B, H, S, D), torch.randn(B, n_kv, S, D), torch.randn(B, n_kv, S, D)
    mask = sliding_window_mask(S, 4)
    a = attention_naive(q, k, v, mask)
    assert torch.allclose(a, attention_sdpa(q, k, v, mask), atol=1e-5)
    assert torch.allclose(a, banded_attention(q, k, v, 4, block_size=3), atol=1e-5)


def test_banded_equals_dense_at_window_boundaries():
    torch.manual_seed(0)
    W = 16
    for S in (W - 1, W, W + 1, 4 * W):
        q, k, v = torch.randn(1, 4, S, 8), torch.randn(1, 2, S, 8), torch.randn(1, 2, S, 8)
        dense = attention_sdpa(q, k, v, sliding_window_mask(S, W))
        assert torch.allclose(banded_attention(q, k, v, W), dense, atol=1e-5), S


def test_gqa_with_all_kv_heads_is_multi_head_attention():
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 4, 9, 8), torch.randn(1, 4, 9, 8), torch.randn(1, 4, 9, 8)
    mask = sliding_window_mask(9, None)
    mha = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert torch.allclose(attention_naive(q, k, v, mask), mha, atol=1e-5)
    args = tiny_args(n_heads=4, n_kv_heads=4)
    model = random_model(args)
    assert model.layers[0].attention.wk.weight.shape == (64, 64)
    assert model(torch.randint(0, 300, (1, 9))).shape == (1, 9, 300)


def test_repeat_kv_groups_heads_in_order():
    x = torch.arange(2).view(1, 2, 1, 1).float()
    assert repeat_kv(x, 3).flatten().tolist() == [0, 0, 0, 1, 1, 1]


def test_gqa_equals_mha_with_repeated_weights():
    """A GQA model = an MHA model whose k/v weights repeat each kv head for its group."""
    gqa = random_model(tiny_args(n_kv_heads=2))
    mha = Transformer(tiny_args(n_kv_heads=4)).eval()
    sd = gqa.state_dict()
    for name, w in list(sd.items()):
        if name.endswith(("wk.weight", "wv.weight")):
            sd[name] = w.view(2, 1, 16, 64).expand(2, 2, 16, 64).reshape(64, 64)
    mha.load_state_dict(sd)
    tokens = torch.randint(0, 300, (2, 20))
    with torch.no_grad():
        assert rel_err(mha(tokens), gqa(tokens)) < 1e-5


def test_whole_forward_dense_equals_banded_path():
    model = random_model(tiny_args())
    tokens = torch.randint(0, 300, (2, 40))
    with torch.no_grad():
        banded = model(tokens)                      # S >= 2W uses the banded path
        h = model.tok_embeddings(tokens)
        cos, sin = rope_angles(torch.arange(40), 16)
        mask = sliding_window_mask(40, 8)
        for layer in model.layers:
            h = layer(h, cos, sin, mask)
        dense = model.output(model.norm(h))
    assert rel_err(banded, dense) < 1e-5


def test_logits_are_float32_for_bf16_models():
    model = random_model(tiny_args()).to(torch.bfloat16)
    out = model(torch.randint(0, 300, (1, 5)))
    assert out.dtype == torch.float32


def test_attended_pairs_closed_form_counts_the_mask():
    from mistral_nb.masks import attended_pairs

    for S in range(1, 30):
        for W in (None, 1, 2, 5, 8, 40):
            assert attended_pairs(S, W) == int(sliding_window_mask(S, W).sum()), (S, W)


def test_banded_pairs_cover_the_window_and_beat_dense():
    from mistral_nb.attention import band_blocks, banded_pairs
    from mistral_nb.masks import attended_pairs

    for S, W, b in [(40, 8, 3), (16384, 4096, None), (100, 7, 100)]:
        n = banded_pairs(S, W, b)
        assert attended_pairs(S, W) <= n <= S * S
    assert banded_pairs(12, 4, 4) == sum((s1 - s0) * (s1 - k0) for s0, s1, k0 in band_blocks(12, 4, 4)) == 4 * 4 + 4 * 7 + 4 * 7


def test_parameter_counts_and_bytes_read_per_token():
    from mistral_nb.costs import parameter_counts, weights_read_per_token

    for args in (ModelArgs.mistral_7b(), tiny_args(), tiny_args(n_kv_heads=4, sliding_window=None)):
        with torch.device("meta"):
            model = Transformer(args)
        assert sum(parameter_counts(args).values()) == model.num_parameters()
    args = ModelArgs.mistral_7b()
    assert weights_read_per_token(args) == 2 * (7_241_732_096 - 31_999 * 4096) == 14_221_328_384
