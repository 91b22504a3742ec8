"""Int8 weight-only quantization: the rounding, the layer, whole models, and streaming it while loading."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import random_model, rel_err, tiny_args
from mistral_nb import ModelArgs, Transformer, generate, load_model, save_checkpoint
from mistral_nb.speed.int8 import Int8Linear, dequantize_int8, quantize_int8, quantize_model
from mistral_nb.costs import model_nbytes


@settings(max_examples=40, deadline=None, database=None)
@given(rows=st.integers(1, 9), cols=st.integers(1, 40), scale=st.floats(1e-6, 1e3), seed=st.integers(0, 2**16),
       chunk=st.integers(1, 4))
def test_rounding_error_is_at_most_half_a_step(rows, cols, scale, seed, chunk):
    w = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed)) * scale
    q, s = quantize_int8(w, chunk_rows=chunk)
    assert q.dtype == torch.int8 and s.shape == (rows,)
    assert int(q.abs().max()) <= 127
    assert torch.equal(q.abs().amax(dim=1), torch.full((rows,), 127, dtype=torch.int8))   # each row uses the range
    err = (dequantize_int8(q, s) - w).abs()
    assert bool((err <= s[:, None] / 2 * (1 + 1e-5)).all())


def test_zero_row_and_bad_shapes():
    q, s = quantize_int8(torch.zeros(2, 3))
    assert torch.equal(q, torch.zeros(2, 3, dtype=torch.int8)) and torch.equal(dequantize_int8(q, s), torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"2-D weight \(out, in\), got shape \(3,\)"):
        quantize_int8(torch.ones(3))
    with pytest.raises(ValueError, match="floating-point"):
        quantize_int8(torch.ones(2, 2, dtype=torch.int32))
    layer = Int8Linear(4, 3)
    with pytest.raises(ValueError, match=r"weight of shape \(4, 4\) does not fit an Int8Linear \(3, 4\)"):
        layer.set_weight(torch.ones(4, 4))


def test_int8_linear_scales_after_the_matmul():
    torch.manual_seed(0)
    linear = torch.nn.Linear(32, 24, bias=False)
    layer = Int8Linear.from_linear(linear)
    x = torch.randn(5, 7, 32)
    expected = torch.nn.functional.linear(x, layer.dequantize())       # x (q * s)^T
    assert torch.allclose(layer(x), expected, atol=1e-5)
    assert rel_err(layer(x), linear(x)) < 0.01
    assert [n for n, _ in layer.named_parameters()] == []                # buffers, not trainable parameters
    assert layer.weight.dtype == torch.int8 and layer.scale.shape == (24,)


def test_quantize_model_keeps_output_head_and_stays_close():
    args = tiny_args(dim=128, hidden_dim=256, n_heads=4, n_kv_heads=2, head_dim=32, vocab_size=500, n_layers=3)
    model = random_model(args, seed=3)
    tokens = torch.randint(0, 500, (4, 48), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(tokens)
        q = quantize_model(random_model(args, seed=3))
        out = q(tokens)
    int8 = [n for n, m in q.named_modules() if isinstance(m, Int8Linear)]
    assert len(int8) == 7 * args.n_layers and "output" not in int8
    assert isinstance(q.output, torch.nn.Linear)
    assert rel_err(out, ref) < 0.01
    assert (out.argmax(-1) == ref.argmax(-1)).float().mean() >= 0.95
    assert model_nbytes(q) < 0.5 * model_nbytes(model)
    prompts = [[1, 2, 3], [4]]
    out = generate(q, prompts, max_new_tokens=10)
    assert out == generate(model, prompts, max_new_tokens=10)        # int8 continues as float does here
    for prompt, new in zip(prompts, out):                              # cached decode == full recomputation
        with torch.no_grad():
            full = q(torch.tensor([prompt + new[:-1]]))[0].argmax(-1)
        assert full[len(prompt) - 1:].tolist() == new


@pytest.mark.parametrize("layout", ["mistral", "hf"])
def test_streaming_quantization_equals_quantizing_afterwards(tmp_path, layout):
    args = tiny_args(n_layers=2)
    model = random_model(args, seed=5)
    path = save_checkpoint(model, tmp_path / layout, layout=layout, max_shard_bytes=30_000 if layout == "hf" else None)
    streamed = load_model(path, quantize="int8")
    after = quantize_model(load_model(path))
    for (n, a), (_, b) in zip(streamed.state_dict().items(), after.state_dict().items()):
        assert torch.equal(a, b), n
    tokens = torch.randint(0, args.vocab_size, (2, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert rel_err(streamed(tokens), model(tokens)) < 0.01
    out = generate(streamed, [[1, 2, 3]], max_new_tokens=12)[0]
    assert len(out) == 12 and all(0 <= t < args.vocab_size for t in out)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_int8_in_half_precision(tmp_path, dtype):
    model = random_model(tiny_args(n_layers=1), seed=2)
    path = save_checkpoint(model, tmp_path / "c", layout="hf", dtype=torch.bfloat16)
    q = load_model(path, dtype=dtype, quantize="int8")
    assert q.layers[0].attention.wq.scale.dtype == dtype and q.tok_embeddings.weight.dtype == dtype
    tokens = torch.tensor([[1, 5, 9, 13]])
    with torch.no_grad():
        out = q(tokens)
        assert out.dtype == torch.float32 and bool(out.isfinite().all())
        assert rel_err(out, model(tokens)) < 0.05


def test_mistral_7b_int8_is_about_7_5_gb():
    with torch.device("meta"):
        model = Transformer(ModelArgs.mistral_7b()).to(torch.float16)
    assert model_nbytes(model) == 2 * 7_241_732_096
    quantize_model(model)
    assert 7.45e9 < model_nbytes(model) < 7.55e9
    assert all(t.is_meta for t in model.buffers())


def test_unknown_quantize_mode(tmp_path):
    path = save_checkpoint(random_model(tiny_args(n_layers=1)), tmp_path / "c")
    with pytest.raises(ValueError, match=r"quantize must be one of \(None, 'int8', 'int4', .*\), got 'int3'"):
        load_model(path, quantize="int3")


# ---------------------------------------------------------------- the chapter's figures
def test_figures_draw_headless():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mistral_nb import viz

    torch.manual_seed(0)
    w = torch.randn(64, 128) * 0.02
    w[::16] *= 10
    e = viz.channel_errors(w)
    assert bool((e["per_channel"] <= e["per_tensor"] + 1e-7).all())
    assert torch.isclose(e["per_channel"][0], e["per_tensor"][0]) or e["scale"].argmax() % 16 == 0
    ax = viz.plot_int8_row(w[1])
    assert "scale = " in ax.texts[0].get_text()
    axes = viz.plot_channel_scales(w)
    assert len(axes[0].patches) == 64 and len(axes[1].lines) == 2
    fake = {"checkpoint_bytes": 10**9, "methods": {
        "stream": {"baseline_peak_rss": 2 * 10**8, "peak_rss": 12 * 10**8},
        "naive": {"baseline_peak_rss": 2 * 10**8, "peak_rss": 22 * 10**8}}}
    ax = viz.plot_load_memory(fake)
    labels = [t.get_text() for t in ax.texts]
    assert "+1.00×" in labels and "+2.00×" in labels
    plt.close("all")


def test_progress_bar_counts_bytes_and_names_the_shard(tmp_path, capsys):
    path = save_checkpoint(random_model(tiny_args(n_layers=1)), tmp_path / "s", layout="hf", max_shard_bytes=30_000)
    n_shards = len(list(path.glob("model-*.safetensors")))
    load_model(path, progress=True)
    err = capsys.readouterr().err
    assert "loading s" in err and f"shard {n_shards}/{n_shards}: model-{n_shards:05d}-of-{n_shards:05d}" in err
    load_model(path)                                   # small checkpoint: no bar by default
    assert capsys.readouterr().err == ""


# ------------------------------------------------------------------ the int8 kernel (decode) and its fallback
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("rows", [1, 3, 40])
def test_int8_kernel_and_cast_path_equal_the_dequantized_reference(dtype, rows):
    from mistral_nb.speed.int8 import INT8_KERNEL_MAX_ROWS, Int8Linear, int8_kernel_used

    torch.manual_seed(rows)
    w = torch.randn(96, 64) * 0.05
    layer = Int8Linear.from_weight(w.to(dtype))
    x = torch.randn(rows, 64).to(dtype)
    ref = x.float() @ layer.dequantize(torch.float32).T                      # float32 reference
    with torch.no_grad():
        y = layer(x)
        y3 = layer(x[None])                                                # (1, rows, 64): same rows
    assert y.dtype == dtype and y.shape == (rows, 96) and torch.equal(y3[0], y)
    assert int8_kernel_used(x, rows) == (rows <= INT8_KERNEL_MAX_ROWS.get(dtype, 0))
    tol = {torch.bfloat16: 2e-2, torch.float16: 2e-3, torch.float32: 1e-5}[dtype]   # the dtype's rounding
    assert float((y.float() - ref).abs().max() / ref.abs().max()) < tol


def test_int8_kernel_is_what_decoding_uses(monkeypatch):
    """A one-token step of an int8 bf16 model goes through torch._weight_int8pack_mm; a prefill of many
    tokens does not (cast and multiply)."""
    from mistral_nb import ModelArgs, Transformer
    from mistral_nb.speed.int8 import quantize_model

    calls = []
    real = torch._weight_int8pack_mm
    monkeypatch.setattr(torch, "_weight_int8pack_mm", lambda *a: calls.append(a[0].shape[0]) or real(*a))
    torch.manual_seed(0)
    model = quantize_model(Transformer(ModelArgs.tiny()).to(torch.bfloat16)).eval()
    with torch.no_grad():
        model(torch.zeros(1, 1, dtype=torch.long))
        assert len(calls) == 7 * model.args.n_layers and set(calls) == {1}
        calls.clear()
        model(torch.zeros(1, 32, dtype=torch.long))
    assert calls == []


def test_decode_bytes_per_token_counts_int8_weights_and_one_embedding_row():
    from mistral_nb import ModelArgs, Transformer
    from mistral_nb.costs import weights_read_per_token
    from mistral_nb.costs import decode_bytes_per_token
    from mistral_nb.speed.int8 import quantize_model

    args = ModelArgs.tiny()
    model = Transformer(args).to(torch.bfloat16)
    assert decode_bytes_per_token(model) == weights_read_per_token(args, 2)
    q = quantize_model(model)
    linear = args.n_layers * (args.dim * args.head_dim * 2 * (args.n_heads + args.n_kv_heads) + 3 * args.dim * args.hidden_dim)
    scales = sum(m.scale.numel() * m.scale.element_size() for m in q.modules() if hasattr(m, "scale"))
    assert decode_bytes_per_token(q) == weights_read_per_token(args, 2) - linear * 2 + linear + scales


def test_cast_path_reuses_one_scratch_per_model_and_dtype():
    from mistral_nb.speed.int8 import CastScratch, Int8Linear

    torch.manual_seed(0)
    model = quantize_model(torch.nn.Sequential(torch.nn.Linear(48, 64, bias=False), torch.nn.Linear(48, 16, bias=False)))
    big, small = model[0], model[1]
    assert big.scratch is small.scratch and isinstance(big.scratch, CastScratch)   # one per model
    other = Int8Linear.from_weight(torch.randn(8, 48))
    assert other.scratch is not big.scratch                                         # not one per process
    x = torch.randn(50, 48, dtype=torch.bfloat16)                       # 50 rows: the cast path
    with torch.no_grad():
        a = big(x)
        buf = big.scratch.buffers[torch.bfloat16]
        b = small(x)
        c = big(x)
    assert big.scratch.buffers[torch.bfloat16] is buf and buf.numel() == 64 * 48     # reused, not regrown
    assert torch.equal(a, c) and b.shape == (50, 16)
    ref = x.float() @ small.dequantize().T
    assert float((b.float() - ref).abs().max() / ref.abs().max()) < 2e-2


def test_int8_kernel_row_limits_are_the_recorded_crossovers():
    from mistral_nb.speed.int8 import INT8_KERNEL_MAX_ROWS
    from mistral_nb.book.results import load_recorded

    recorded = load_recorded("benchmarks/results/int8_linear.json")["int8_kernel_max_rows"]
    assert {str(k).removeprefix("torch."): v for k, v in INT8_KERNEL_MAX_ROWS.items()} == recorded
