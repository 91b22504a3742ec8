"""Bad input fails clearly, and nothing half-loaded survives a failed load.

Every case of the "bad input" list has a test. Cases already tested next to the code they exercise
stay there; ``CASES`` below maps every listed case to the test that covers it (here or elsewhere), and
``test_every_listed_case_has_a_test`` keeps that map honest. The tests in this file fill the gaps.
"""

from __future__ import annotations

import gc
import importlib
import json
import math
import pickle
import weakref

import pytest
import torch

from helpers import random_model, tiny_args
from mistral_nb import CheckpointError, ConfigError, load_model, save_checkpoint
from mistral_nb import weights as weights_mod

# listed case -> [module::test, ...] covering it
CASES = {
    "path missing": ["test_weights::test_missing_path", "test_weights::test_path_is_a_file"],
    "directory with neither layout": ["test_weights::test_neither_layout", "test_errors::test_empty_directory"],
    "config and weights disagree (shape)": ["test_weights::test_shape_mismatch_names_tensor_and_shapes"],
    "missing tensor": ["test_weights::test_missing_tensor_is_named"],
    "unexpected extra tensor": ["test_weights::test_unexpected_tensor_is_named"],
    "truncated or corrupt safetensors": [
        "test_weights::test_truncated_file", "test_weights::test_corrupt_header",
        "test_errors::test_overlapping_offsets_are_corrupt", "test_errors::test_trailing_garbage_is_corrupt",
        "test_errors::test_file_truncated_while_loading", "test_fuzz::test_random_bytes_as_safetensors"],
    "sharded index naming a missing shard": [
        "test_weights::test_index_naming_missing_shard", "test_errors::test_index_disagrees_with_shards",
        "test_errors::test_index_is_not_json", "test_errors::test_index_shard_outside_directory"],
    "pickle checkpoint refused, never executed": [
        "test_weights::test_pickle_checkpoint_is_refused", "test_weights::test_pickle_disguised_as_safetensors",
        "test_errors::test_pickle_checkpoint_is_never_executed"],
    "unsupported dtype": ["test_weights::test_unsupported_dtype", "test_errors::test_unsupported_dtype_names",
                          "test_errors::test_unsupported_dtype_in_checkpoint",
                          "test_errors::test_unknown_dtype_in_safetensors_header"],
    "invalid config values": ["test_config::test_invalid_values_name_the_field",
                              "test_weights::test_invalid_config_in_checkpoint",
                              "test_errors::test_non_positive_size_in_config_json"],
    "token ids out of range or negative": ["test_generate::test_forward_rejects_out_of_range_ids",
                                           "test_generate::test_bad_arguments",
                                           "test_errors::test_negative_token_id_in_forward",
                                           "test_fuzz::test_model_on_random_token_ids"],
    "empty prompt list or empty prompt": ["test_generate::test_bad_arguments"],
    "max_new_tokens < 0": ["test_generate::test_bad_arguments"],
    "temperature < 0": ["test_generate::test_bad_arguments", "test_errors::test_nan_sampling_parameters"],
    "top_p outside (0, 1]": ["test_generate::test_bad_arguments", "test_errors::test_nan_sampling_parameters"],
    "tokenizer file missing or not sentencepiece": ["test_tokenizer::test_from_file_missing",
                                                     "test_tokenizer::test_from_file_not_a_model"],
    "chat messages in an invalid order": ["test_tokenizer::test_encode_chat_errors"],
    "no partially filled model after a failed load": [
        "test_errors::test_failed_load_releases_everything", "test_errors::test_file_truncated_while_loading"],
    "device that does not exist": ["test_errors::test_unavailable_device"],
    "unknown quantization": ["test_quant::test_unknown_quantize_mode"],
}


def test_every_listed_case_has_a_test():
    for case, tests in CASES.items():
        for ref in tests:
            module, name = ref.split("::")
            assert hasattr(importlib.import_module(module), name), f"{case}: {ref} does not exist"


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def model():
    return random_model(tiny_args(n_layers=2))


@pytest.fixture()
def ckpt(model, tmp_path):
    return save_checkpoint(model, tmp_path / "good", layout="mistral")


@pytest.fixture()
def sharded(model, tmp_path):
    return save_checkpoint(model, tmp_path / "sharded", layout="hf", max_shard_bytes=20_000)


def _header_and_data(file):
    raw = file.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def _write(file, header, data):
    h = json.dumps(header).encode()
    file.write_bytes(len(h).to_bytes(8, "little") + h + data)


# ---------------------------------------------------------------- layouts and paths
def test_empty_directory(tmp_path):
    with pytest.raises(CheckpointError, match="neither layout.*an empty directory"):
        load_model(tmp_path)


# ---------------------------------------------------------------- corrupt files
def test_overlapping_offsets_are_corrupt(ckpt):
    f = ckpt / "consolidated.safetensors"
    header, data = _header_and_data(f)
    a, b = sorted((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0])[:2]
    start = header[a]["data_offsets"][0]          # b now starts where a does: the two overlap
    size = header[b]["data_offsets"][1] - header[b]["data_offsets"][0]
    header[b]["data_offsets"] = [start, start + size]
    _write(f, header, data)
    with pytest.raises(CheckpointError, match=f"corrupt.*{b}|corrupt.*{a}"):
        load_model(ckpt)


def test_trailing_garbage_is_corrupt(ckpt):
    f = ckpt / "consolidated.safetensors"
    f.write_bytes(f.read_bytes() + b"\0" * 64)
    with pytest.raises(CheckpointError, match="consolidated.safetensors: corrupt.*accounts for"):
        load_model(ckpt)


def test_file_truncated_while_loading(ckpt, monkeypatch):
    """The header was fine when planned, then the file shrank (a download still running, a full disk)."""
    plan = weights_mod.plan_checkpoint

    def plan_then_truncate(path, args=None):
        result = plan(path, args)
        f = ckpt / "consolidated.safetensors"
        f.write_bytes(f.read_bytes()[:-1000])
        return result

    monkeypatch.setattr(weights_mod, "plan_checkpoint", plan_then_truncate)
    with pytest.raises(CheckpointError, match=r"consolidated.safetensors: truncated while reading tensor '.+'"):
        load_model(ckpt)


# ---------------------------------------------------------------- sharded index
def test_index_disagrees_with_shards(sharded):
    index_file = sharded / "model.safetensors.index.json"
    original = json.loads(index_file.read_text())
    shards = list(original["weight_map"].values())
    # a tensor whose shard holds others too: that shard is still read, and holds a tensor the index puts elsewhere
    name, shard = next((n, s) for n, s in original["weight_map"].items() if shards.count(s) > 1)
    other = next(s for s in shards if s != shard)
    index_file.write_text(json.dumps({**original, "weight_map": {**original["weight_map"], name: other}}))
    with pytest.raises(CheckpointError, match=f"{shard}: holds tensor '{name}', but .*index.json puts it in '{other}'"):
        load_model(sharded)
    # the only tensor of a shard moved to another shard: that shard lacks it
    name, shard = next((n, s) for n, s in original["weight_map"].items() if shards.count(s) == 1)
    other = next(s for s in shards if s != shard)
    index_file.write_text(json.dumps({**original, "weight_map": {**original["weight_map"], name: other}}))
    with pytest.raises(CheckpointError, match=f"index.json: tensor '{name}' is listed in shard '{other}', "
                                              "which does not contain it"):
        load_model(sharded)


def test_index_is_not_json(sharded):
    (sharded / "model.safetensors.index.json").write_text("{ truncated")
    with pytest.raises(CheckpointError, match="model.safetensors.index.json: not a valid safetensors index"):
        load_model(sharded)


def test_index_shard_outside_directory(sharded):
    index_file = sharded / "model.safetensors.index.json"
    index = json.loads(index_file.read_text())
    first = next(iter(index["weight_map"]))
    index["weight_map"][first] = "../elsewhere.safetensors"
    index_file.write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=r"names shard '\.\./elsewhere.safetensors': expected a file name"):
        load_model(sharded)


# ---------------------------------------------------------------- pickles
class _Payload:
    """Unpickling this creates a file: proof that a pickle was executed."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_checkpoint_is_never_executed(tmp_path, model):
    marker = tmp_path / "EXECUTED"
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps(model.args.to_hf_config()))
    with open(hf / "pytorch_model.bin", "wb") as f:
        pickle.dump({"model.embed_tokens.weight": _Payload(marker)}, f)
    with pytest.raises(CheckpointError, match=r"pytorch_model.bin.*pickles can run arbitrary code"):
        load_model(hf)
    with pytest.raises(CheckpointError, match=r"pytorch_model.bin: a pickle checkpoint"):
        load_model(hf / "pytorch_model.bin")
    (hf / "pytorch_model.bin").rename(hf / "model.safetensors")     # a pickle under a safetensors name
    with pytest.raises(CheckpointError, match=r"model.safetensors: this is a PyTorch pickle"):
        load_model(hf)
    assert not marker.exists()


# ---------------------------------------------------------------- dtypes
@pytest.mark.parametrize("dtype", ["int8", "fp8", torch.int64, torch.complex64, None])
def test_unsupported_dtype_names(ckpt, dtype):
    with pytest.raises(ValueError, match=r"unsupported dtype .*choose one of torch.float32"):
        load_model(ckpt, dtype=dtype)


def test_dtype_names_are_accepted(ckpt):
    assert load_model(ckpt, dtype="bf16").output.weight.dtype == torch.bfloat16


def test_unsupported_dtype_in_checkpoint(ckpt):
    from safetensors.torch import load_file, save_file
    f = ckpt / "consolidated.safetensors"
    tensors = load_file(str(f))
    tensors["norm.weight"] = tensors["norm.weight"].to(torch.int32)
    save_file(tensors, str(f))
    with pytest.raises(CheckpointError, match=r"tensor 'norm.weight' has dtype torch.int32; weights must be one of"):
        load_model(ckpt)


def test_unknown_dtype_in_safetensors_header(ckpt):
    f = ckpt / "consolidated.safetensors"
    header, data = _header_and_data(f)
    header["norm.weight"]["dtype"] = "F8_E4M3"
    _write(f, header, data)
    with pytest.raises(CheckpointError, match=r"tensor 'norm.weight' has unsupported dtype 'F8_E4M3'"):
        load_model(ckpt)


# ---------------------------------------------------------------- config
@pytest.mark.parametrize("field,value,message", [
    ("num_hidden_layers", 0, "n_layers must be > 0, got 0"),
    ("intermediate_size", -128, "hidden_dim must be > 0, got -128"),
    ("num_key_value_heads", 3, r"n_heads \(4\) must be divisible by n_kv_heads \(3\)"),
])
def test_non_positive_size_in_config_json(model, tmp_path, field, value, message):
    path = save_checkpoint(model, tmp_path / "hf", layout="hf")
    config = json.loads((path / "config.json").read_text())
    config[field] = value
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=f"config.json: ModelArgs.{message}"):
        load_model(path)


# ---------------------------------------------------------------- tokens and sampling
def test_negative_token_id_in_forward(model):
    with pytest.raises(ValueError, match=r"token id -3 at \(batch, position\) \(1, 0\) is outside \[0, 300\)"):
        model(torch.tensor([[1, 2], [-3, 4]]))


@pytest.mark.parametrize("kwargs,message", [
    (dict(temperature=math.nan), "temperature must be >= 0"),
    (dict(top_p=math.nan), r"top_p must be in \(0, 1\]"),
    (dict(max_new_tokens=2.5), "max_new_tokens must be an int >= 0, got 2.5"),
])
def test_nan_sampling_parameters(model, kwargs, message):
    from mistral_nb import generate
    with pytest.raises(ValueError, match=message):
        generate(model, [[1, 2]], **{"max_new_tokens": 2, **kwargs})


# ---------------------------------------------------------------- devices
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error for a machine without CUDA")
def test_unavailable_device(ckpt):
    with pytest.raises(ValueError, match=r"device 'cuda' requested but torch.cuda.is_available\(\) is False"):
        load_model(ckpt, device="cuda")
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        load_model(ckpt, device="gpu")


# ---------------------------------------------------------------- nothing half-loaded
@pytest.mark.parametrize("quantize", [None, "int8"])
def test_failed_load_releases_everything(ckpt, monkeypatch, quantize):
    """A failure in the middle of a load (here: out of memory at the 5th tensor) returns no model, and
    every tensor already placed is released, even while the traceback is kept (as a notebook does)."""
    placed, seen_models = [], []
    set_tensor = weights_mod._set_tensor
    read_tensor = weights_mod.read_tensor
    calls = {"n": 0}

    def recording_set_tensor(model, name, value, dtype=None):
        set_tensor(model, name, value, dtype)
        module_name, _, leaf = name.rpartition(".")
        module = model.get_submodule(module_name)
        placed.append(weakref.ref(module._parameters.get(leaf, module._buffers.get(leaf))))
        seen_models.append(weakref.ref(model))

    def failing_read(info, handle=None):
        calls["n"] += 1
        if calls["n"] == 5:
            raise MemoryError("simulated out-of-memory while loading")
        return read_tensor(info, handle)

    monkeypatch.setattr(weights_mod, "_set_tensor", recording_set_tensor)
    monkeypatch.setattr(weights_mod, "read_tensor", failing_read)
    with pytest.raises(MemoryError, match="simulated") as excinfo:
        load_model(ckpt, quantize=quantize)
    assert len(placed) == 4
    gc.collect()
    assert all(ref() is None for ref in placed), "tensors of the failed load are still alive"
    m = seen_models[0]()
    if m is not None:   # still referenced by the kept traceback: then it must hold nothing
        assert all(t.is_meta for t in list(m.parameters()) + list(m.buffers()))
    del excinfo
