"""GGUF export: ggml's Q8_0 / Q4_0 blocks byte for byte, the container byte for byte against the gguf
package's writer, the metadata llama.cpp reads, streaming conversion, errors; and, where llama.cpp is
installed (llama-cpp-python in this interpreter, or $LLAMA_CPP_PYTHON naming one that has it), its
logits on an exported model."""

import json
import os

import numpy as np
import pytest
import torch

from helpers import random_model, tiny_args
from mistral_nb import ModelArgs, Tokenizer, save_checkpoint
from mistral_nb.checkpoint.gguf import (ARRAY, BOOL, F32, I32, STRING, U32, convert_to_gguf, gguf_metadata, gguf_name,
                                        read_gguf, save_gguf, tensor_types)
from mistral_nb.checkpoint.gguf_blocks import (dequantize_q4_0, dequantize_q8_0, encode, quantize_q4_0,
                                               quantize_q8_0)
from mistral_nb.checkpoint.llamacpp import llamacpp_available, llamacpp_logits
from mistral_nb.checkpoint.names import expected_shapes
from mistral_nb.speed.int4 import quantize_model_int4

import gguf  # noqa: E402  (required by requirements.txt: a broken install must fail, not skip)

needs_llamacpp = pytest.mark.skipif(not llamacpp_available(),
                                    reason="llama-cpp-python is not importable here and $LLAMA_CPP_PYTHON is not set")


def _awkward(rows: int, cols: int, seed: int) -> torch.Tensor:
    """Random values with the cases rounding rules disagree on: zero blocks, ties, tiny and huge scales."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, cols, generator=g) * torch.logspace(-4, 3, rows)[:, None]
    x[0, :32] = 0
    x[1, :32] = torch.arange(32) - 16.0                 # exact ties at .5 after scaling
    x[2, :32] = torch.tensor([1.0, -1.0] * 16)          # two values of largest magnitude, opposite signs
    x[3, :32] = 1e-30
    return x.to(torch.bfloat16).float()                  # the checkpoints' values


@pytest.mark.parametrize("kind", ["Q8_0", "Q4_0", "BF16", "F16", "F32"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_block_quantizers_are_byte_identical_to_the_reference(kind, seed):
    x = _awkward(40, 256, seed)
    ref = gguf.quants.quantize(x.numpy(), getattr(gguf.GGMLQuantizationType, kind)).reshape(-1).view(np.uint8)
    assert np.array_equal(encode(x, kind).numpy(), ref)


def test_dequantizers_invert_the_blocks():
    x = _awkward(8, 64, 3)
    for quantize, dequantize, kind in ((quantize_q8_0, dequantize_q8_0, "Q8_0"), (quantize_q4_0, dequantize_q4_0, "Q4_0")):
        ref = gguf.quants.dequantize(quantize(x).numpy(), getattr(gguf.GGMLQuantizationType, kind))
        assert np.array_equal(dequantize(quantize(x), 64).numpy(), ref.reshape(8, 64))


def _reference_file(path, model, quant):
    """The same file written with the gguf package's own GGUFWriter."""
    w = gguf.GGUFWriter(str(path), "llama")
    w.kv_data[0].clear()
    vt = gguf.GGUFValueType
    kinds = {STRING: vt.STRING, U32: vt.UINT32, F32: vt.FLOAT32, I32: vt.INT32, BOOL: vt.BOOL}
    for key, kind, value in gguf_metadata(model.args, quant, "mistral_v1"):
        if kind == ARRAY:
            w.add_key_value(key, value[1], vt.ARRAY, sub_type=kinds[value[0]])
        else:
            w.add_key_value(key, value, kinds[kind])
    types, state = tensor_types(model.args, quant), model.state_dict()
    for name in expected_shapes(model.args):
        t, kind = state[name].float().numpy(), types[name]
        qtype = getattr(gguf.GGMLQuantizationType, kind)
        if kind == "F32":
            w.add_tensor(gguf_name(name), t)
        else:
            w.add_tensor(gguf_name(name), gguf.quants.quantize(t, qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize("quant", ["Q8_0", "Q4_0", "BF16"])
def test_the_file_is_byte_identical_to_the_gguf_packages_writer(tmp_path, quant):
    model = random_model(tiny_args(vocab_size=32000, n_layers=2))
    ours = save_gguf(model, tmp_path / "ours.gguf", quant=quant)
    ref = _reference_file(tmp_path / "ref.gguf", model, quant)
    assert ours.read_bytes() == ref.read_bytes()


def test_metadata_and_tensors_read_back(tmp_path):
    args = tiny_args(vocab_size=32000, n_layers=2)
    model = random_model(args)
    path = save_gguf(model, tmp_path / "m.gguf", quant="Q4_0", float_type="BF16")
    meta, tensors = read_gguf(path)
    assert meta["general.architecture"] == "llama" and meta["general.file_type"] == 2
    assert meta["llama.block_count"] == 2 and meta["llama.attention.head_count_kv"] == args.n_kv_heads
    assert "llama.attention.sliding_window" not in meta        # as llama.cpp's converter writes Mistral v0.1
    tok = Tokenizer.mistral_v1()
    assert meta["tokenizer.ggml.tokens"][:3] == ["<unk>", "<s>", "</s>"]
    assert meta["tokenizer.ggml.tokens"][22557] == tok.id_to_piece(22557)
    assert meta["tokenizer.ggml.token_type"][:4] == [2, 3, 3, 6]          # unknown, control, control, byte
    assert tensors["blk.1.ffn_down.weight"][:2] == ((args.dim, args.hidden_dim), "Q4_0")
    assert tensors["token_embd.weight"][1] == "BF16" and tensors["output_norm.weight"][1] == "F32"
    shape, kind, offset = tensors["blk.0.attn_q.weight"]
    raw = _tensor_bytes(path, tensors["blk.0.attn_q.weight"])
    back = dequantize_q4_0(raw.view(shape[0], -1), shape[1])
    assert torch.equal(back, dequantize_q4_0(quantize_q4_0(model.layers[0].attention.wq.weight), shape[1]))


def _tensor_bytes(path, info) -> torch.Tensor:
    from mistral_nb.checkpoint.gguf_blocks import encoded_nbytes

    shape, kind, offset = info
    with open(path, "rb") as f:
        f.seek(offset)
        return torch.frombuffer(bytearray(f.read(encoded_nbytes(shape, kind))), dtype=torch.uint8)


def test_q_and_k_go_in_unpermuted_from_mistral_layout(tmp_path):
    """llama.cpp rotates adjacent pairs, as Mistral's layout does: the converter's permute of Hugging
    Face's q_proj gives back exactly this package's wq."""
    from mistral_nb.rope import mistral_to_hf_qk

    args = tiny_args(vocab_size=300, n_layers=1)
    model = random_model(args)
    wq = model.layers[0].attention.wq.weight.detach()
    hf = mistral_to_hf_qk(wq, args.n_heads).numpy()
    n_head = args.n_heads
    converted = hf.reshape(n_head, 2, hf.shape[0] // n_head // 2, *hf.shape[1:]).swapaxes(1, 2).reshape(hf.shape)
    assert np.array_equal(converted, wq.numpy())


@pytest.mark.parametrize("layout", ["hf", "mistral"])
def test_converting_a_checkpoint_streams_the_same_file(tmp_path, layout):
    model = random_model(tiny_args(vocab_size=300, n_layers=2))
    ckpt = save_checkpoint(model, tmp_path / "ck", layout=layout)
    a = save_gguf(model, tmp_path / "a.gguf", quant="Q8_0")
    b = convert_to_gguf(ckpt, tmp_path / "b.gguf", quant="Q8_0")
    meta_a, tensors_a = read_gguf(a)
    meta_b, tensors_b = read_gguf(b)
    assert meta_a == meta_b and set(tensors_a) == set(tensors_b)          # the tensors in another order
    assert all(torch.equal(_tensor_bytes(a, tensors_a[n]), _tensor_bytes(b, tensors_b[n])) for n in tensors_a)
    assert a.stat().st_size == b.stat().st_size


def test_quantized_models_export_their_float_matrices(tmp_path):
    args = tiny_args(vocab_size=300, n_layers=1)
    q = quantize_model_int4(random_model(args))
    path = save_gguf(q, tmp_path / "q.gguf", quant="F32", tokenizer=None)
    meta, tensors = read_gguf(path)
    assert meta["tokenizer.ggml.model"] == "none" and "blk.0.ffn_up.weight" in tensors


def test_save_checkpoint_writes_gguf(tmp_path):
    model = random_model(tiny_args(vocab_size=300, n_layers=1))
    path = save_checkpoint(model, tmp_path / "m.gguf", layout="gguf", quant="Q8_0")
    assert read_gguf(path)[0]["general.file_type"] == 7
    with pytest.raises(ValueError, match="quant applies to layout='gguf'"):
        save_checkpoint(model, tmp_path / "x", quant="Q8_0")


def test_bad_arguments_are_named(tmp_path):
    model = random_model(tiny_args(vocab_size=300, n_layers=1))
    with pytest.raises(ValueError, match="quant must be one of"):
        save_gguf(model, tmp_path / "m.gguf", quant="Q5_K")
    with pytest.raises(ValueError, match="float_type must be"):
        save_gguf(model, tmp_path / "m.gguf", quant="Q8_0", float_type="Q8_0")
    with pytest.raises(ValueError, match="is a directory"):
        save_gguf(model, tmp_path, quant="F16")
    with pytest.raises(ValueError, match="300 .*32000|32000 pieces but the model's vocab_size is 300"):
        save_gguf(model, tmp_path / "m.gguf", tokenizer="mistral_v1")
    with pytest.raises(ValueError, match="Q4_0 needs rows whose length is a multiple of 32"):
        save_gguf(random_model(tiny_args(dim=48, head_dim=12, vocab_size=300, n_layers=1)), tmp_path / "m.gguf",
                  quant="Q4_0")
    assert not (tmp_path / "m.gguf").exists() and not list(tmp_path.glob(".*partial"))
    with pytest.raises(TypeError, match="expects a Transformer"):
        save_gguf(torch.nn.Linear(2, 2), tmp_path / "m.gguf")
    with pytest.raises(ValueError, match="not a GGUF file"):
        (tmp_path / "bad.gguf").write_bytes(b"GGML" + bytes(20))
        read_gguf(tmp_path / "bad.gguf")


def test_the_recorded_divergence_is_what_the_chapters_say():
    """benchmarks/results/llamacpp_window.json: equal below the window, full attention everywhere."""
    from mistral_nb.book.results import load_recorded

    rec = load_recorded("benchmarks/results/llamacpp_window.json")
    windowed, full = rec["llamacpp_vs_ours_windowed"], rec["llamacpp_vs_ours_full_attention"]
    assert windowed[0]["positions"] == "0-63" and windowed[0]["max_abs_diff"] < 1e-3
    assert windowed[0]["argmax_agreement"] == 1.0
    assert all(b["max_abs_diff"] > 1 for b in windowed[1:])
    assert all(b["max_abs_diff"] < 1e-3 and b["argmax_agreement"] == 1.0 for b in full)
    assert rec["mask"]["keys_per_query"] == list(range(1, rec["mask"]["seq_len"] + 1))


# ---------------------------------------------------------------- with llama.cpp itself
@needs_llamacpp
def test_llamacpp_equals_the_package_below_the_window(tmp_path):
    args = ModelArgs.tiny(vocab_size=32000, n_layers=2, sliding_window=8)
    model = random_model(args)
    path = save_gguf(model, tmp_path / "m.gguf", quant="F32")
    tokens = torch.randint(3, 32000, (2, 24), generator=torch.Generator().manual_seed(0))
    tokens[:, 0] = 1
    theirs = llamacpp_logits(path, tokens)
    with torch.no_grad():
        ours = model(tokens)
    diff = (theirs - ours).abs().amax(-1)                     # (batch, position)
    assert float(diff[:, :8].max()) < 1e-4
    assert float(diff[:, 8:].max()) > 1e-2                    # past the window: another function
    from mistral_nb import Transformer

    unwindowed = Transformer(ModelArgs(**{**vars(args), "sliding_window": None})).eval()
    unwindowed.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert float((theirs - unwindowed(tokens)).abs().max()) < 1e-4       # ... whole-context attention


@needs_llamacpp
def test_llamacpp_loads_the_quantized_exports(tmp_path):
    model = random_model(tiny_args(vocab_size=32000, n_layers=2))
    tokens = torch.randint(3, 32000, (1, 8), generator=torch.Generator().manual_seed(0))
    tokens[:, 0] = 1
    with torch.no_grad():
        ours = model(tokens)
    for quant in ("BF16", "Q8_0", "Q4_0"):
        theirs = llamacpp_logits(save_gguf(model, tmp_path / f"{quant}.gguf", quant=quant), tokens)
        assert float((theirs - ours).abs().max()) < 0.25 * float(ours.abs().max()) + 0.05, quant


def test_llamacpp_logits_says_how_to_get_it(monkeypatch):
    import mistral_nb.checkpoint.llamacpp as lc

    monkeypatch.delenv(lc.PYTHON_ENV, raising=False)
    monkeypatch.setattr(lc, "_importable", lambda: False)
    with pytest.raises(ImportError, match="pip install llama-cpp-python"):
        llamacpp_logits("x.gguf", torch.zeros(1, 2, dtype=torch.long))
    assert not lc.llamacpp_available()
    assert json.dumps(os.environ.get(lc.PYTHON_ENV)) == "null"


# ---------------------------------------------------------------- chapter 05's row: what llama.cpp attends to
def test_dependence_mask_recovers_the_packages_window():
    from mistral_nb import Transformer
    from mistral_nb.book.conventions import dependence_mask
    from mistral_nb.masks import sliding_window_mask

    args = ModelArgs.tiny(n_layers=1, vocab_size=256, sliding_window=3)
    torch.manual_seed(0)
    model = Transformer(args).eval()
    tokens = torch.randint(3, 256, (12,), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(dependence_mask(model, tokens, 256), sliding_window_mask(12, 3))


def test_llamacpp_mask_falls_back_to_the_recorded_one(monkeypatch):
    import mistral_nb.checkpoint.llamacpp as lc
    from mistral_nb.book.conventions import keys_per_query, llamacpp_mask

    monkeypatch.setattr(lc, "llamacpp_available", lambda python=None: False)
    mask, how = llamacpp_mask(12, 3)
    assert how == "recorded" and torch.equal(mask, torch.ones(12, 12).tril().bool())     # no window at all
    assert keys_per_query(mask) == list(range(1, 13))
    with pytest.raises(ValueError, match="needs llama-cpp-python"):
        llamacpp_mask(20, 5)


@needs_llamacpp
def test_llamacpp_mask_computed_equals_the_recorded_one():
    from mistral_nb.book.conventions import llamacpp_mask
    from mistral_nb.book.results import load_recorded

    mask, how = llamacpp_mask(12, 3)
    assert how == "computed"
    assert mask.int().tolist() == load_recorded("benchmarks/results/llamacpp_window.json")["mask"]["rows"]


def test_machine_info_names_the_cpu_and_its_vector_extensions():
    from mistral_nb.book.results import CPU_FLAGS, machine_info

    cpu = machine_info()["cpu"]
    assert isinstance(cpu["model"], str) and cpu["model"]
    assert set(cpu["flags"]) <= set(CPU_FLAGS) and cpu["torch_capability"] == torch.backends.cpu.get_cpu_capability()
    if os.path.exists("/proc/cpuinfo"):
        flags = set(open("/proc/cpuinfo").read().split())
        assert [f for f in CPU_FLAGS if f in flags] == cpu["flags"]
