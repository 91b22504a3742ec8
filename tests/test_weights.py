"""Checkpoint reading and writing, in both layouts, and the errors for bad checkpoints."""

import json
import shutil

import pytest
import torch

from helpers import random_model, rel_err, tiny_args
from mistral_nb import CheckpointError, load_model, save_checkpoint
from mistral_nb.safetensors_io import read_header, read_tensor
from mistral_nb.weights import convert_checkpoint, detect_layout, hf_to_mistral_name, mistral_to_hf_name


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
