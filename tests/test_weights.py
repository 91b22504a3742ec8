"""Checkpoint reading and writing, in both layouts, and the errors for bad checkpoints."""

import json
import math
import shutil

import pytest
import torch

from helpers import random_model, rel_err, tiny_args
from mistral_nb import CheckpointError, load_model, save_checkpoint
from mistral_nb.checkpoint.safetensors_file import read_header, read_tensor
from mistral_nb.checkpoint import convert_checkpoint, detect_layout, hf_to_mistral_name, mistral_to_hf_name


@pytest.fixture(scope="module")
def model():
    return random_model(tiny_args(n_layers=2))


@pytest.mark.parametrize("layout,shard", [("mistral", None), ("hf", None), ("hf", 20_000)])
def test_save_load_round_trip(model, tmp_path, layout, shard):
    path = save_checkpoint(model, tmp_path / "ckpt", layout=layout, max_shard_bytes=shard)
    assert detect_layout(path) == layout
    if shard:
        assert len(list(path.glob("model-*-of-*.safetensors"))) > 1
    loaded = load_model(path)
    for (n, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), n
    assert all(not p.requires_grad for p in loaded.parameters())


def test_own_reader_matches_safetensors(model, tmp_path):
    from safetensors.torch import load_file

    path = save_checkpoint(model, tmp_path / "c", layout="hf", dtype=torch.bfloat16)
    ref = load_file(str(path / "model.safetensors"))
    infos = read_header(path / "model.safetensors")
    assert set(infos) == set(ref)
    for name, info in infos.items():
        assert torch.equal(read_tensor(info), ref[name])


def test_load_dtype_and_hf_files_written_by_us_load_in_transformers(model, tmp_path):
    from transformers import MistralForCausalLM

    path = save_checkpoint(model, tmp_path / "hf", layout="hf")
    hf = MistralForCausalLM.from_pretrained(str(path)).eval()
    tokens = torch.randint(0, 300, (1, 20))
    with torch.no_grad():
        assert rel_err(model(tokens), hf(tokens).logits) < 1e-4
    half = load_model(path, dtype=torch.bfloat16)
    assert half.output.weight.dtype == torch.bfloat16


def test_name_mapping_round_trips(model):
    for name in model.state_dict():
        assert hf_to_mistral_name(mistral_to_hf_name(name)) == name
    assert hf_to_mistral_name("model.layers.0.mlp.gate_proj.weight") == "layers.0.feed_forward.w1.weight"


def test_convert_both_ways(model, tmp_path):
    a = save_checkpoint(model, tmp_path / "m", layout="mistral")
    b = convert_checkpoint(a, tmp_path / "h", "hf")
    c = convert_checkpoint(b, tmp_path / "m2", "mistral")
    from safetensors.torch import load_file
    x, y = load_file(str(a / "consolidated.safetensors")), load_file(str(c / "consolidated.safetensors"))
    assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


# ---------------------------------------------------------------- bad checkpoints
@pytest.fixture()
def ckpt(model, tmp_path):
    return save_checkpoint(model, tmp_path / "good", layout="mistral")


def test_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(tmp_path / "nowhere")


def test_neither_layout(tmp_path):
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(CheckpointError, match="neither layout"):
        load_model(tmp_path)


def test_pickle_checkpoint_is_refused(tmp_path, model):
    torch.save(model.state_dict(), tmp_path / "consolidated.00.pth")
    with pytest.raises(CheckpointError, match="pickle"):
        load_model(tmp_path)


def test_pickle_disguised_as_safetensors(ckpt, model):
    torch.save(model.state_dict(), ckpt / "consolidated.safetensors")
    with pytest.raises(CheckpointError, match="pickle"):
        load_model(ckpt)


def test_truncated_file(ckpt):
    f = ckpt / "consolidated.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError, match="truncated"):
        load_model(ckpt)


def test_corrupt_header(ckpt):
    f = ckpt / "consolidated.safetensors"
    data = bytearray(f.read_bytes())
    data[10:20] = b"\xff" * 10
    f.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        load_model(ckpt)


def _rewrite(ckpt, edit):
    from safetensors.torch import load_file, save_file
    f = ckpt / "consolidated.safetensors"
    tensors = load_file(str(f))
    edit(tensors)
    save_file(tensors, str(f))


def test_missing_tensor_is_named(ckpt):
    _rewrite(ckpt, lambda t: t.pop("layers.1.feed_forward.w3.weight"))
    with pytest.raises(CheckpointError, match="missing.*layers.1.feed_forward.w3.weight"):
        load_model(ckpt)


def test_unexpected_tensor_is_named(ckpt):
    _rewrite(ckpt, lambda t: t.update({"layers.7.attention.wq.weight": torch.zeros(1)}))
    with pytest.raises(CheckpointError, match="unexpected tensor 'layers.7.attention.wq.weight'"):
        load_model(ckpt)


def test_shape_mismatch_names_tensor_and_shapes(ckpt):
    params = json.loads((ckpt / "params.json").read_text())
    params["hidden_dim"] = 96
    (ckpt / "params.json").write_text(json.dumps(params))
    with pytest.raises(CheckpointError, match=r"w1.weight' has shape \(128, 64\) but the config expects \(96, 64\)"):
        load_model(ckpt)


def test_index_naming_missing_shard(model, tmp_path):
    path = save_checkpoint(model, tmp_path / "s", layout="hf", max_shard_bytes=20_000)
    victim = sorted(path.glob("model-*.safetensors"))[1]
    victim.unlink()
    with pytest.raises(CheckpointError, match=f"names shard '{victim.name}'.*does not exist"):
        load_model(path)


def test_unsupported_dtype(ckpt):
    with pytest.raises(ValueError, match="unsupported dtype"):
        load_model(ckpt, dtype=torch.int8)


def test_invalid_config_in_checkpoint(ckpt):
    params = json.loads((ckpt / "params.json").read_text())
    params["n_kv_heads"] = 3
    (ckpt / "params.json").write_text(json.dumps(params))
    with pytest.raises(ValueError, match="divisible by n_kv_heads"):
        load_model(ckpt)


def test_path_is_a_file(ckpt):
    with pytest.raises(CheckpointError, match="expected a checkpoint directory"):
        load_model(ckpt / "params.json")


# ---------------------------------------------------------------- saving replaces, atomically
def _files(path):
    return sorted(p.name for p in path.iterdir())


def _same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)



@pytest.mark.parametrize("old,new", [(("hf", 20_000), ("hf", None)), (("mistral", None), ("hf", None)),
                                     (("hf", 20_000), ("mistral", None)), (("hf", None), ("hf", 40_000)),
                                     (("hf", 20_000), ("hf", 40_000))])
def test_save_replaces_an_older_checkpoint(model, tmp_path, old, new):
    """Saving into a directory that holds an older checkpoint (the other layout, or sharded then
    unsharded, or another shard count) leaves exactly the new checkpoint, and files that are not part
    of a checkpoint (a tokenizer) where they were."""
    older = random_model(tiny_args(n_layers=2), seed=7)
    path = save_checkpoint(older, tmp_path / "ckpt", layout=old[0], max_shard_bytes=old[1])
    (path / "tokenizer.model").write_bytes(b"not touched")
    old_files = _files(path)
    new_files = _files(save_checkpoint(model, tmp_path / "reference", layout=new[0], max_shard_bytes=new[1]))
    assert set(old_files) - set(new_files) - {"tokenizer.model"}, "the old checkpoint has files the new one lacks"
    save_checkpoint(model, path, layout=new[0], max_shard_bytes=new[1])
    assert _files(path) == sorted(new_files + ["tokenizer.model"])
    assert _same(load_model(path), model)
    assert (path / "tokenizer.model").read_bytes() == b"not touched"
    assert _files(tmp_path) == ["ckpt", "reference"]        # no temporary directory left behind


def test_failed_save_changes_nothing(model, tmp_path, monkeypatch):
    """A write that fails half-way (here: the disk fills up during the weights) leaves an existing
    checkpoint as it was and creates no new directory; the config is never written without weights."""
    import safetensors.torch
    older = random_model(tiny_args(n_layers=1), seed=7)
    path = save_checkpoint(older, tmp_path / "ckpt")
    before = {f: (path / f).read_bytes() for f in _files(path)}
    real_save = safetensors.torch.save_file

    def disk_full(tensors, filename, metadata=None):
        real_save(dict(list(tensors.items())[:2]), filename, metadata=metadata)     # a partial file...
        raise OSError(28, "No space left on device")                               # ...then the disk is full

    monkeypatch.setattr(safetensors.torch, "save_file", disk_full)
    for layout in ("mistral", "hf"):
        with pytest.raises(OSError, match="No space left on device"):
            save_checkpoint(model, path, layout=layout)
        assert {f: (path / f).read_bytes() for f in _files(path)} == before
        with pytest.raises(OSError, match="No space left on device"):
            save_checkpoint(model, tmp_path / "fresh", layout=layout)
        assert not (tmp_path / "fresh").exists()
    assert _files(tmp_path) == ["ckpt"]
    monkeypatch.setattr(safetensors.torch, "save_file", real_save)
    assert _same(load_model(path), older)


def test_bad_save_arguments_create_nothing(model, tmp_path):
    from mistral_nb.checkpoint import empty_model
    for kwargs, exc, message in [
        (dict(layout="onnx"), ValueError, "layout must be 'hf', 'mistral' or 'gguf', got 'onnx'"),
        (dict(layout="gguf", dtype=torch.float16), ValueError, "layout='gguf' takes quant=..., not dtype"),
        (dict(dtype="int8"), ValueError, "unsupported dtype 'int8'"),
        (dict(layout="mistral", max_shard_bytes=1000), ValueError,
         "max_shard_bytes applies to the Hugging Face layout"),
        (dict(layout="hf", max_shard_bytes=0), ValueError, "max_shard_bytes must be a positive int or None, got 0"),
    ]:
        with pytest.raises(exc, match=message):
            save_checkpoint(model, tmp_path / "x", **kwargs)
        assert not (tmp_path / "x").exists()
    with pytest.raises(ValueError, match=r"tensor 'tok_embeddings.weight' is on the meta device \(an empty model\)"):
        save_checkpoint(empty_model(model.args), tmp_path / "x")
    with pytest.raises(TypeError, match="save_checkpoint expects a Transformer, got OrderedDict"):
        save_checkpoint(model.state_dict(), tmp_path / "x")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="file: it exists and is not a directory"):
        save_checkpoint(model, tmp_path / "file")
    src = save_checkpoint(model, tmp_path / "src")
    with pytest.raises(ValueError, match="layout must be 'hf' or 'mistral', got 'safetensors'"):
        convert_checkpoint(src, tmp_path / "y", "safetensors")
    assert _files(tmp_path) == ["file", "src"]


def test_convert_refuses_the_same_directory(model, tmp_path):
    src = save_checkpoint(model, tmp_path / "m", layout="mistral")
    for dst in (src, tmp_path / "m" / ".." / "m"):
        with pytest.raises(ValueError, match=r"src and dst are the same directory"):
            convert_checkpoint(src, dst, "hf")
    assert _files(src) == ["consolidated.safetensors", "params.json"]
    assert _same(load_model(convert_checkpoint(src, tmp_path / "h", "hf")), model)


@pytest.mark.parametrize("layout", ["mistral", "hf"])
def test_save_int8_model_writes_a_loadable_checkpoint(model, tmp_path, layout):
    """An int8 model is saved dequantized (q * scale): a standard checkpoint that computes what the
    int8 model computes, and that quantizes back to the same int8 weights."""
    from mistral_nb.speed.int8 import Int8Linear, quantize_model
    int8 = quantize_model(random_model(tiny_args(n_layers=2), seed=3))
    path = save_checkpoint(int8, tmp_path / "q", layout=layout)
    tokens = torch.randint(0, 300, (2, 12))
    with torch.no_grad():
        assert rel_err(load_model(path)(tokens), int8(tokens)) < 1e-5
    again = load_model(path, quantize="int8")
    for name, m in int8.named_modules():
        if isinstance(m, Int8Linear):
            back = again.get_submodule(name)
            assert torch.equal(back.weight, m.weight), name
            assert torch.allclose(back.scale, m.scale, rtol=1e-6, atol=0), name


# ---------------------------------------------------------------- the package split
@pytest.mark.parametrize("args", [tiny_args(n_layers=2), tiny_args(n_layers=3, n_kv_heads=4, head_dim=32)])
def test_expected_shapes_match_the_model(args):
    from mistral_nb.checkpoint import empty_model, expected_shapes
    assert expected_shapes(args) == {k: tuple(v.shape) for k, v in empty_model(args).state_dict().items()}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_first_non_finite_finds_the_first_culprit(dtype, monkeypatch):
    from mistral_nb.checkpoint import first_non_finite, loading
    monkeypatch.setattr(loading, "FINITE_CHECK_ELEMENTS", 64)          # several chunks even for a small tensor
    t = torch.randn(30, 20).to(dtype)
    assert first_non_finite(t) is None
    assert first_non_finite(torch.zeros(3, 0)) is None and first_non_finite(torch.arange(4)) is None
    for where, value in (((29, 19), math.nan), ((4, 7), math.inf), ((0, 0), -math.inf)):
        bad = t.clone()
        bad[where] = value
        bad[29, 19] = math.nan
        assert first_non_finite(bad) == where


def test_read_tensor_reads_exactly_a_piece_of_rows_or_columns(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    tensors = {"a": torch.randn(6, 10), "b": torch.randn(7, 12).to(torch.bfloat16), "n": torch.randn(5)}
    save_file(tensors, str(tmp_path / "x.safetensors"))
    info = read_header(tmp_path / "x.safetensors")
    for name in ("a", "b"):
        full = tensors[name]
        assert torch.equal(read_tensor(info[name], piece=(0, 2, 5)), full[2:5])
        assert torch.equal(read_tensor(info[name], piece=(1, 3, 9)), full[:, 3:9])
        assert read_tensor(info[name], piece=(1, 3, 3)).shape == (full.shape[0], 0)
    assert torch.equal(read_tensor(info["n"], piece=(0, 1, 4)), tensors["n"][1:4])
    assert torch.equal(read_tensor(info["n"]), tensors["n"])
    for bad in ((1, 8, 13), (2, 0, 1), (-1, 0, 1), (0, 4, 2)):
        with pytest.raises(CheckpointError, match=r"cannot take piece .* of tensor 'a' of shape \(6, 10\)"):
            read_tensor(info["a"], piece=bad)
    with open(tmp_path / "x.safetensors", "r+b") as f:      # truncate the file under its header
        f.truncate(info["b"].start + 10)
    with pytest.raises(CheckpointError, match=r"truncated while reading tensor 'b' \(piece \(1, 3, 9\)\)"):
        read_tensor(info["b"], piece=(1, 3, 9))
