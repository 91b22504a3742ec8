"""Int4 weight-only quantization: the group-wise rounding, PyTorch's int4 kernel and its byte layout,
the layer on both paths, whole models, streaming it while loading, and GPTQ."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import random_model, rel_err, tiny_args
from mistral_nb import load_model, save_checkpoint
from mistral_nb.costs import QUANTIZED_FORMATS, model_nbytes, weights_nbytes
from mistral_nb.speed import int4pack
from mistral_nb.speed.gptq import gptq_quantize, quantize_model_gptq
from mistral_nb.speed import int4 as int4_module
from mistral_nb.speed.int4 import (INT4_KERNEL_MAX_ROWS, INT4_MODES, Int4Linear, dequantize_dtype, dequantize_int4,
                                   int4_kernel_used, quantize_int4, quantize_model_int4)

needs_kernel = pytest.mark.skipif(int4pack.kernel_layout() is None,
                                  reason="this PyTorch build has no int4 CPU kernel (_weight_int4pack_mm_for_cpu)")


@settings(max_examples=40, deadline=None, database=None)
@given(rows=st.integers(1, 9), groups=st.integers(1, 3), group=st.sampled_from([2, 8, 32]),
       scale=st.floats(1e-4, 1e3), seed=st.integers(0, 2**16), symmetric=st.booleans())
def test_rounding_error_is_at_most_half_a_step(rows, groups, group, scale, seed, symmetric):
    w = torch.randn(rows, groups * group, generator=torch.Generator().manual_seed(seed)) * scale
    q, sz = quantize_int4(w, group, symmetric, chunk_rows=2)
    assert q.dtype == torch.uint8 and int(q.max()) <= 15 and sz.shape == (groups, rows, 2)
    back = dequantize_int4(q, sz, group)
    step = sz[..., 0].T.repeat_interleave(group, dim=1).abs()                   # (rows, in)
    err = (back - w).abs()
    if symmetric:   # one level beyond +max is missing (levels -8..7): the largest positive value may be off by a step
        assert bool((err <= step * (1 + 1e-4)).all())
        assert bool((sz[..., 1] == 0).all())
        m = w.view(rows, groups, group)
        biggest = torch.gather(m, 2, m.abs().argmax(2, keepdim=True)).squeeze(2)      # lands exactly on -8 d
        assert torch.allclose(back.view(rows, groups, group).gather(2, m.abs().argmax(2, keepdim=True)).squeeze(2),
                              biggest, rtol=1e-5, atol=0)
    else:
        assert bool((err <= step / 2 * (1 + 1e-4) + 1e-6 * scale).all())


def test_symmetric_int4_is_q4_0s_rule():
    """The symmetric scheme places levels as ggml's Q4_0: d = m / -8 for m the signed largest value."""
    from mistral_nb.checkpoint.gguf_blocks import dequantize_q4_0, quantize_q4_0

    w = torch.randn(64, 128, generator=torch.Generator().manual_seed(0))
    q, sz = quantize_int4(w, 32, True, dtype=torch.float32)
    ours, q40 = dequantize_int4(q, sz, 32), dequantize_q4_0(quantize_q4_0(w), 128)
    # same scales up to Q4_0's float16 rounding of d; the levels can differ only on exact ties
    assert rel_err(ours, q40) < 2e-3


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="in_features 100 is not a multiple of group_size 32"):
        quantize_int4(torch.ones(4, 100))
    with pytest.raises(ValueError, match="2-D weight"):
        quantize_int4(torch.ones(32))
    with pytest.raises(ValueError, match="floating-point"):
        quantize_int4(torch.ones(2, 32, dtype=torch.int32))
    with pytest.raises(ValueError, match="group_size must be an even int"):
        Int4Linear(64, 16, group_size=3)
    with pytest.raises(ValueError, match=r"weight of shape \(4, 64\) does not fit an Int4Linear \(16, 64\)"):
        Int4Linear(64, 16).set_weight(torch.ones(4, 64))
    w = torch.randn(40, 64)
    w[33, 5] = float("nan")
    with pytest.raises(ValueError, match="quantize_int4: row 33 of the weight holds NaN or Inf"):
        quantize_int4(w, chunk_rows=16)


@needs_kernel
@pytest.mark.parametrize("n", [16, 48, 64, 208, 1024])
def test_the_kernel_layout_is_understood(n):
    """Unpacking the kernel's packed bytes gives back the integers, for full and partial blocks."""
    q = torch.randint(0, 16, (n, 96), generator=torch.Generator().manual_seed(n), dtype=torch.int32)
    packed = int4pack.pack_for_kernel(q)
    assert torch.equal(int4pack.unpack(packed, n, 96, int4pack.kernel_layout()), q.to(torch.uint8))


def test_nibbles_round_trip():
    q = torch.randint(0, 16, (5, 12), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    assert torch.equal(int4pack.unpack_nibbles(int4pack.pack_nibbles(q)), q)
    assert int4pack.pack_nibbles(q).shape == (5, 6)


def _layer(n, k, group, symmetric, seed=0):
    linear = torch.nn.Linear(k, n, bias=False)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(n, k, generator=torch.Generator().manual_seed(seed)) * 0.02)
    return linear, Int4Linear.from_linear(linear, group, symmetric)


@pytest.mark.parametrize("n,group,symmetric", [(64, 32, True), (208, 32, False), (96, 128, True), (40, 32, True)])
@pytest.mark.parametrize("rows", [1, 3, 40])
def test_both_paths_multiply_by_the_dequantized_weight(n, group, symmetric, rows):
    linear, layer = _layer(n, 256, group, symmetric)
    w = layer.float_weight(torch.float32)
    x = torch.randn(rows, 256, generator=torch.Generator().manual_seed(rows))
    assert torch.allclose(layer(x), x @ w.T, rtol=1e-4, atol=1e-6)         # float32: the kernel or the fallback
    y = layer(x.to(torch.bfloat16))
    assert y.dtype == torch.bfloat16 and rel_err(y, x @ w.T) < 1e-2          # bf16: rounding of inputs and outputs
    assert rel_err(layer(x), linear(x)) < 0.15                               # 16 levels: a few % of error
    expect_kernel = int4pack.kernel_fits(n, 256, group, torch.device("cpu"))
    assert (layer.layout is not None) == expect_kernel                        # N % 16 == 0 on a CPU with the kernel
    assert int4_kernel_used(layer, x.to(torch.bfloat16), rows) == (expect_kernel and rows <= INT4_KERNEL_MAX_ROWS[torch.bfloat16])


@needs_kernel
def test_many_rows_path_equals_the_kernel():
    _, layer = _layer(128, 256, 32, False)
    x = torch.randn(7, 256, generator=torch.Generator().manual_seed(0))
    kernel = torch.ops.aten._weight_int4pack_mm_for_cpu(x, layer.qweight, 32, layer.scales_and_zeros)
    assert torch.allclose(layer._dequantized_matmul(x), kernel, rtol=1e-4, atol=1e-6)


@needs_kernel
@pytest.mark.parametrize("native_bf16", [True, False])
def test_many_rows_bf16_computes_in_float32_without_bf16_kernels(monkeypatch, native_bf16):
    # Without oneDNN bf16 (AVX2), the (in, out) bf16 product is PyTorch's slow generic loop: float32 instead.
    monkeypatch.setattr(int4_module, "pack_available", lambda: native_bf16)
    assert dequantize_dtype(torch.bfloat16) == (torch.bfloat16 if native_bf16 else torch.float32)
    assert dequantize_dtype(torch.float32) == torch.float32
    w, layer = _layer(128, 256, 32, False)
    x = torch.randn(200, 256, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    y = layer(x)                                                              # 200 rows: the dequantize path
    assert not int4_kernel_used(layer, x, 200) and y.dtype == torch.bfloat16
    exact = x.float() @ layer.float_weight(torch.float32).T
    assert rel_err(y.float(), exact) < (1e-2 if native_bf16 else 4e-3)      # float32: one rounding, at the end


def test_state_dict_holds_portable_nibbles_and_round_trips():
    _, layer = _layer(64, 128, 32, True)
    sd = layer.state_dict()
    assert set(sd) == {"qweight", "scales_and_zeros"} and sd["qweight"].shape == (64, 64)
    assert torch.equal(int4pack.unpack_nibbles(sd["qweight"]), layer.int_weight())
    other = Int4Linear(128, 64, 32, True)
    other.load_state_dict(sd)
    assert torch.equal(other.int_weight(), layer.int_weight()) and torch.equal(other.float_weight(), layer.float_weight())


def test_meta_layer_and_bytes():
    layer = Int4Linear.from_linear(torch.nn.Linear(4096, 14336, bias=False, device="meta"))
    assert layer.qweight.is_meta and layer.float_weight().is_meta
    assert model_nbytes(layer) == 14336 * 4096 // 2 + 4096 // 32 * 14336 * 2 * 4     # float32 scales and zeros


def test_modes_and_costs_agree():
    assert set(QUANTIZED_FORMATS) == {None, "int8", *INT4_MODES}
    args = tiny_args(dim=128, hidden_dim=256, head_dim=32, n_heads=4, n_kv_heads=2, vocab_size=500, n_layers=2)
    with torch.device("meta"):
        from mistral_nb import Transformer
        for mode, (group, symmetric) in INT4_MODES.items():
            m = quantize_model_int4(Transformer(args).to(torch.bfloat16), group, symmetric)
            assert model_nbytes(m) == weights_nbytes(args, 2, mode), mode


def test_quantize_model_keeps_the_head_and_stays_close():
    args = tiny_args(dim=128, hidden_dim=256, n_heads=4, n_kv_heads=2, head_dim=32, vocab_size=500, n_layers=3)
    tokens = torch.randint(0, 500, (2, 40), generator=torch.Generator().manual_seed(0))
    ref = random_model(args, seed=3)
    q = quantize_model_int4(random_model(args, seed=3))
    with torch.no_grad():
        a, b = ref(tokens), q(tokens)
    names = [n for n, m in q.named_modules() if isinstance(m, Int4Linear)]
    assert len(names) == 7 * args.n_layers and "output" not in names
    assert len({id(m.scratch) for m in q.modules() if isinstance(m, Int4Linear)}) == 1
    assert rel_err(b, a) < 0.1 and (a.argmax(-1) == b.argmax(-1)).float().mean() > 0.7


@pytest.mark.parametrize("mode", ["int4", "int4_zp"])
def test_load_model_streams_int4_and_saves_back(tmp_path, mode):
    args = tiny_args(dim=128, hidden_dim=256, n_heads=4, n_kv_heads=2, head_dim=32, vocab_size=500, n_layers=2)
    ref = random_model(args, seed=1)
    path = save_checkpoint(ref, tmp_path / "ck", layout="hf")
    m = load_model(path, dtype=torch.bfloat16, quantize=mode)
    group, symmetric = INT4_MODES[mode]
    for name, a in m.named_modules():               # quantized from the checkpoint's float32, scales in bf16
        if isinstance(a, Int4Linear):
            q, sz = quantize_int4(ref.get_submodule(name).weight, group, symmetric, dtype=torch.bfloat16)
            assert torch.equal(a.int_weight(), q) and torch.equal(a.scales_and_zeros, sz), name
    again = load_model(save_checkpoint(m, tmp_path / "back"), dtype=torch.bfloat16, quantize=mode)   # dequantized
    a = next(x for x in m.modules() if isinstance(x, Int4Linear))
    b = next(x for x in again.modules() if isinstance(x, Int4Linear))
    assert torch.equal(a.int_weight(), b.int_weight())                       # the same levels once re-quantized


def test_unknown_group_for_the_checkpoint(tmp_path):
    path = save_checkpoint(random_model(tiny_args(n_layers=1)), tmp_path / "ck")
    with pytest.raises(ValueError, match="in_features 64 is not a multiple of group_size 128"):
        load_model(path, quantize="int4_g128")
    with pytest.raises(ValueError, match="quantize must be one of"):
        load_model(path, quantize="int3")


def test_gptq_lowers_the_output_error():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(64, 256, generator=gen) * 0.02
    x = torch.randn(2048, 256, generator=gen) @ (torch.randn(256, 256, generator=gen) / 16)   # correlated inputs
    h = x.T @ x
    for symmetric in (True, False):
        q0, s0 = quantize_int4(w, 32, symmetric)
        q1, s1 = gptq_quantize(w, h, 32, symmetric)
        e0 = (x @ (dequantize_int4(q0, s0, 32) - w).T).norm()
        e1 = (x @ (dequantize_int4(q1, s1, 32) - w).T).norm()
        assert e1 < 0.85 * e0
    with pytest.raises(ValueError, match="hessian of shape"):
        gptq_quantize(w, h[:8, :8])


def test_quantize_model_gptq_calibrates_block_by_block():
    args = tiny_args(dim=128, hidden_dim=256, n_heads=4, n_kv_heads=2, head_dim=32, vocab_size=500, n_layers=2)
    tokens = torch.randint(0, 500, (8, 32), generator=torch.Generator().manual_seed(0))
    ref = random_model(args, seed=2)
    g = quantize_model_gptq(random_model(args, seed=2), tokens, group_size=32)
    layers = [n for n, m in g.named_modules() if isinstance(m, Int4Linear)]
    assert len(layers) == 7 * args.n_layers and "output" not in layers
    with torch.no_grad():
        assert rel_err(g(tokens), ref(tokens)) < 0.1
    with_head = quantize_model_gptq(random_model(args, seed=2), tokens, group_size=32, skip=())
    assert isinstance(with_head.output, Int4Linear)


def test_chapter_10_code_exercises():
    """10.4 accepts a right Q4_0 block and refuses a plausible wrong one; 10.5 recomputes its answer."""
    import copy
    import struct

    from mistral_nb.book.chapter10 import small_model
    from mistral_nb.book.exercises import is_correct

    def q4_0_block(x):
        m = float(x[int(x.abs().argmax())])
        d = torch.tensor(m / -8, dtype=torch.float32)
        inv = 0.0 if float(d) == 0 else float(torch.tensor(1.0) / d)
        q = [min(15, int(float(torch.tensor(v * inv, dtype=torch.float32) + 8.5))) for v in x.tolist()]
        return struct.pack("<e", float(d)) + bytes(q[j] | (q[j + 16] << 4) for j in range(16))

    def interleaved(x):                   # wrong: pairs (2j, 2j + 1) in a byte, as int4pack's nibbles
        good = q4_0_block(x)
        q = [(b & 15, b >> 4) for b in good[2:]]
        lo = [a for a, _ in q] + [b for _, b in q]
        return good[:2] + bytes(lo[2 * j] | (lo[2 * j + 1] << 4) for j in range(16))

    assert is_correct("10.4", q4_0_block) and not is_correct("10.4", interleaved)
    model, tokens = small_model()
    with torch.no_grad():
        ref = model(tokens).argmax(-1)
        flips = [int((quantize_model_int4(copy.deepcopy(model), skip=skip)(tokens).argmax(-1) != ref).sum())
                 for skip in (("output",), ())]
    assert is_correct("10.5", tuple(flips)) and not is_correct("10.5", (flips[0] + 1, flips[1]))
    assert flips[1] >= flips[0] > 0


def test_int4_kernel_row_limits_are_the_recorded_crossovers():
    from mistral_nb.book.results import load_recorded

    recorded = load_recorded("benchmarks/results/int4_linear.json")["int4_kernel_max_rows"]
    assert {str(k).removeprefix("torch."): v for k, v in INT4_KERNEL_MAX_ROWS.items()} == recorded
