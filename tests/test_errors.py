"""Bad input fails clearly, and nothing half-loaded or half-written survives a failure.

Every case of the "bad input" lists (the first list, then issue 12's adversarial review) has a test.
Cases already tested next to the code they exercise stay there; ``CASES`` below maps every listed
case to the tests that cover it (here or elsewhere), and ``test_every_listed_case_has_a_test`` keeps
that map honest. The contract: the package's own exception types (CheckpointError, ConfigError,
ChatFormatError; ValueError / TypeError for arguments) with messages naming the file, tensor, field
or argument; nothing left half-written; no hang; no unbounded memory.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import math
import os
import pickle
import re
import shutil
import signal
import weakref

import numpy as np
import pytest
import torch

from helpers import random_model, tiny_args
from mistral_nb import CheckpointError, ConfigError, RollingBufferCache, generate, load_model, save_checkpoint
from mistral_nb.checkpoint import loading as weights_mod   # where load_model looks its helpers up

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
    # ---- issue 12, silent wrong results
    "directory holding both layouts": ["test_errors::test_both_layouts_in_one_directory_are_refused"],
    "unsharded model.safetensors beside a sharded index": [
        "test_errors::test_unsharded_file_beside_a_sharded_index_is_refused"],
    "saving over an older checkpoint (other layout, sharded then unsharded)": [
        "test_weights::test_save_replaces_an_older_checkpoint"],
    "NaN / Inf weights in a checkpoint": ["test_errors::test_non_finite_weight_is_named"],
    "int8 quantization of a NaN / Inf row": ["test_errors::test_quantize_int8_refuses_non_finite"],
    "bfloat16 values beyond float16's range": ["test_errors::test_values_beyond_float16_range"],
    "config fields the model does not implement": ["test_config::test_unsupported_features_are_refused"],
    "degenerate or replaced config values": ["test_config::test_degenerate_values_are_refused",
                                             "test_fuzz::test_random_config_values_fail_cleanly"],
    "duplicate JSON keys (header, config, index)": ["test_errors::test_duplicate_json_keys"],
    "fractional, string or infinite shapes, list dtypes, negative offsets": [
        "test_errors::test_malformed_header_entry", "test_fuzz::test_random_header_entries_fail_cleanly"],
    "True as a token id": ["test_tokenizer::test_decode_rejects_bool_ids",
                           "test_errors::test_generate_argument_errors"],
    "sampling arguments: inf, strings, None; chunk_size 0; bad eos_id; huge seed or count": [
        "test_errors::test_generate_argument_errors"],
    "int8 model saved unloadable": ["test_weights::test_save_int8_model_writes_a_loadable_checkpoint"],
    # ---- issue 23, int4 and GGUF
    "int4: group size that does not divide the rows, NaN rows, wrong shapes": [
        "test_int4::test_bad_arguments_are_named", "test_int4::test_unknown_group_for_the_checkpoint"],
    "GGUF export: unknown quant or float type, a directory, a vocabulary mismatch, rows not in 32s": [
        "test_gguf::test_bad_arguments_are_named", "test_gguf::test_save_checkpoint_writes_gguf"],
    "llama.cpp not installed": ["test_gguf::test_llamacpp_logits_says_how_to_get_it"],
    "convert_checkpoint(src, src)": ["test_weights::test_convert_refuses_the_same_directory"],
    # ---- issue 12, hangs and memory
    "FIFO, /dev/zero or directory where a file belongs": ["test_errors::test_special_files_are_refused",
                                                          "test_tokenizer::test_from_file_special_files"],
    "config far larger than its checkpoint": ["test_errors::test_huge_config_is_refused_before_building",
                                              "test_hub::test_estimate_nbytes_builds_nothing"],
    "header too large or with too many entries": ["test_errors::test_header_size_limits"],
    # ---- issue 12, unclear errors
    "hostile JSON: nested 100k deep, 5000-digit numbers": ["test_errors::test_hostile_json"],
    "params.json: head_dim given with dim % n_heads != 0; a string dim": [
        "test_config::test_params_json_head_dim_and_types"],
    "malformed tokenizer models (what sentencepiece refuses)": [
        "test_tokenizer::test_bpe_refuses_what_sentencepiece_refuses"],
    "lone surrogate in chat content": ["test_tokenizer::test_encode_chat_names_the_message_with_a_surrogate"],
    "numpy prompts and counts": ["test_errors::test_generate_accepts_numpy_prompts_and_counts"],
    "model inputs: empty batch, meta ids, float positions, a cache for another batch or model": [
        "test_errors::test_forward_input_errors"],
    "device not on this machine (mps, xpu)": ["test_errors::test_unavailable_device"],
    "load_pretrained on a mistyped local path": ["test_hub::test_mistyped_local_path_is_not_sent_to_the_hub"],
    "saving: bad arguments create nothing, a failed write leaves the old checkpoint": [
        "test_weights::test_bad_save_arguments_create_nothing", "test_weights::test_failed_save_changes_nothing"],
    "public names of the packages, and no private re-exports": [
        "test_tokenizer::test_the_tokenizer_package_exports_its_public_names_only",
        "test_layout::test_every_module_imports_and_exports_what_it_names"],
    # ---- issue 24 (trust, round 3): the table BAD_INPUTS in test_trust_round3 lists each case and its message
    "n-gram ids beyond the vocabulary; NaN head and evaluation scores on empty or short input": [
        "test_trust_round3::test_bad_inputs_get_a_clear_error", "test_trust_round3::test_the_neighbours_of_the_bad_inputs_still_work"],
    "downloads with a total deadline (a Hub or raw server that stalls or trickles)": [
        "test_trust_round3::test_recorded_downloads_have_a_total_deadline",
        "test_trust_round3::test_load_pretrained_gives_up_on_a_hub_that_never_answers",
        "test_trust_round3::test_load_pretrained_uses_the_cached_copy_when_the_hub_is_late"],
    "a truncated download is never cached; the manifest of recorded files": [
        "test_trust_round3::test_a_truncated_download_is_never_cached",
        "test_trust_round3::test_a_truncated_file_already_in_the_cache_is_fetched_again",
        "test_trust_round3::test_the_manifest_lists_every_recorded_file_as_it_is"],
    "a recorded result that is not JSON, a corpus file that is a pipe": [
        "test_trust_round3::test_a_recorded_result_that_is_not_json_is_named",
        "test_trust_round3::test_the_corpus_reader_refuses_a_named_pipe"],
    "an empty path or repository id is not the working directory": [
        "test_trust_round3::test_an_empty_repo_id_is_not_the_current_directory",
        "test_trust_round3::test_bad_inputs_get_a_clear_error"],
    "check() with wrong types, a header dimension of 2**63, a forward on an empty model": [
        "test_trust_round3::test_exercise_answers_that_cannot_be_compared_are_wrong_answers",
        "test_trust_round3::test_a_dimension_of_2_63_beside_a_zero_is_refused_in_the_header",
        "test_trust_round3::test_a_forward_on_an_empty_model_blames_the_model_not_the_tokens"],
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

    def plan_then_truncate(path, args=None, layout=None):
        result = plan(path, args, layout)
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


@pytest.mark.parametrize("kwargs,exc,message", [
    (dict(temperature=math.nan), ValueError, r"temperature must be a finite number >= 0 \(0 = greedy\), got nan"),
    (dict(top_p=math.nan), ValueError, r"top_p must be in \(0, 1\]"),
    (dict(max_new_tokens=2.5), TypeError, "max_new_tokens must be an int, got 2.5"),
])
def test_nan_sampling_parameters(model, kwargs, exc, message):
    with pytest.raises(exc, match=message):
        generate(model, [[1, 2]], **{"max_new_tokens": 2, **kwargs})


# ---------------------------------------------------------------- devices
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error for a machine without CUDA")
def test_unavailable_device(ckpt):
    with pytest.raises(ValueError, match=r"device 'cuda' requested but torch.cuda.is_available\(\) is False"):
        load_model(ckpt, device="cuda")
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        load_model(ckpt, device="gpu")
    if not torch.backends.mps.is_available():
        with pytest.raises(ValueError, match=r"device 'mps' is not available on this machine \(.+\)"):
            load_model(ckpt, device="mps")
    if not (hasattr(torch, "xpu") and torch.xpu.is_available()):
        with pytest.raises(ValueError, match=r"device 'xpu' is not available on this machine \(.+\)"):
            load_model(ckpt, device="xpu")


# ---------------------------------------------------------------- nothing half-loaded
@pytest.mark.parametrize("quantize", [None, "int8"])
def test_failed_load_releases_everything(ckpt, monkeypatch, quantize):
    """A failure in the middle of a load (here: out of memory at the 5th tensor) returns no model, and
    every tensor already placed is released, even while the traceback is kept (as a notebook does)."""
    placed, seen_models = [], []
    set_tensor = weights_mod.set_tensor
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

    monkeypatch.setattr(weights_mod, "set_tensor", recording_set_tensor)
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


# ================================================================ issue 12: the adversarial review
@contextlib.contextmanager
def no_hang(seconds: int = 20):
    """Fail instead of hanging: a reader blocked on a FIFO is interrupted by SIGALRM (main thread)."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def on_alarm(*_):
        raise TimeoutError(f"still blocked after {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ---------------------------------------------------------------- two checkpoints in one directory
def test_both_layouts_in_one_directory_are_refused(model, tmp_path):
    other = random_model(tiny_args(n_layers=2), seed=1)
    path = save_checkpoint(model, tmp_path / "both", layout="hf")
    old = save_checkpoint(other, tmp_path / "old", layout="mistral")
    for f in old.iterdir():                          # an older Mistral checkpoint left in the same place
        shutil.copy(f, path / f.name)
    with pytest.raises(CheckpointError, match=r"both: holds two checkpoints, a Hugging Face one \(config.json, "
                                              r"model.safetensors\) and a Mistral one \(params.json, "
                                              r"consolidated.safetensors\).*layout='hf' or layout='mistral'"):
        load_model(path)
    assert _same_weights(load_model(path, layout="hf"), model)          # the choice, made explicitly
    assert _same_weights(load_model(path, layout="mistral"), other)


def test_unsharded_file_beside_a_sharded_index_is_refused(model, tmp_path):
    path = save_checkpoint(model, tmp_path / "s", layout="hf", max_shard_bytes=20_000)
    single = save_checkpoint(random_model(tiny_args(n_layers=2), seed=1), tmp_path / "u", layout="hf")
    shutil.copy(single / "model.safetensors", path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"s: holds both an unsharded model.safetensors and a sharded index "
                                              r"model.safetensors.index.json.*delete it"):
        load_model(path)


# ---------------------------------------------------------------- NaN / Inf
def _poke(path, layout, name, index, value):
    """Set one value of tensor ``name`` (Mistral name) in a saved checkpoint; return the file's tensor name."""
    from safetensors.torch import load_file, save_file
    from mistral_nb.checkpoint import mistral_to_hf_name
    file = path / ("consolidated.safetensors" if layout == "mistral" else "model.safetensors")
    stored = name if layout == "mistral" else mistral_to_hf_name(name)
    tensors = load_file(str(file))
    tensors[stored][index] = value
    save_file(tensors, str(file))
    return file.name, stored


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("layout,quantize", [("mistral", None), ("hf", None), ("hf", "int8")])
def test_non_finite_weight_is_named(model, tmp_path, value, layout, quantize):
    path = save_checkpoint(model, tmp_path / "c", layout=layout)
    fname, tname = _poke(path, layout, "layers.1.attention.wq.weight", (3, 5), value)
    with pytest.raises(CheckpointError, match=rf"{fname}: tensor '{tname}' holds {value} at index \(3, 5\): "
                                              "the checkpoint is corrupt"):
        load_model(path, quantize=quantize)


def test_quantize_int8_refuses_non_finite():
    from mistral_nb.speed.int8 import quantize_int8, quantize_model
    w = torch.randn(40, 16)
    w[33, 2] = math.nan
    with pytest.raises(ValueError, match="quantize_int8: row 33 of the weight holds NaN or Inf"):
        quantize_int8(w, chunk_rows=16)
    m = random_model(tiny_args(n_layers=1))
    with torch.no_grad():
        m.layers[0].feed_forward.w2.weight[7, 0] = math.inf
    with pytest.raises(ValueError, match=r"layers.0.feed_forward.w2.weight: quantize_int8: row 7"):
        quantize_model(m)


def test_values_beyond_float16_range(model, tmp_path):
    path = save_checkpoint(model, tmp_path / "bf16", layout="hf", dtype=torch.bfloat16)
    _poke(path, "hf", "norm.weight", 3, 1e6)                    # finite in bfloat16, inf in float16
    big = torch.tensor(1e6, dtype=torch.bfloat16).item()               # 999424 once rounded to bfloat16
    largest = re.escape(f"{big:.4g}")
    with pytest.raises(CheckpointError, match=r"model.safetensors: tensor 'model.norm.weight' has values too large "
                                              rf"for torch.float16 \(largest magnitude {largest}; torch.float16 "
                                              r"ends at 6.55e\+04\), which would become inf — load it as bfloat16 "
                                              r"or float32"):
        load_model(path, dtype="float16")
    assert load_model(path, dtype="bfloat16").norm.weight[3].item() == big       # as bfloat16 it loads as saved
    assert load_model(path, dtype="float32").norm.weight[3].item() == big


# ---------------------------------------------------------------- JSON: duplicates, nesting, long numbers
def _duplicate_first_key(text: str) -> str:
    """'{"a": 1, ...}' -> '{"a": 1, "a": 1, ...}' (the same key twice; json.loads keeps the last)."""
    obj = json.loads(text)
    key = next(iter(obj))
    return "{" + json.dumps(key) + ": " + json.dumps(obj[key]) + ", " + text.lstrip()[1:]


def test_duplicate_json_keys(model, tmp_path):
    path = save_checkpoint(model, tmp_path / "hf", layout="hf", max_shard_bytes=20_000)
    config = path / "config.json"
    original = config.read_text()
    config.write_text(_duplicate_first_key(original))
    with pytest.raises(ConfigError, match=r"config.json: not valid JSON \(the key 'architectures' appears twice"):
        load_model(path)
    config.write_text(original)
    index = path / "model.safetensors.index.json"
    index.write_text(_duplicate_first_key(index.read_text()))
    with pytest.raises(CheckpointError, match=r"index.json: not a valid safetensors index \(the key 'metadata' "
                                              "appears twice"):
        load_model(path)
    ckpt = save_checkpoint(model, tmp_path / "m")
    f = ckpt / "consolidated.safetensors"
    header, data = _header_and_data(f)
    name = next(k for k in header if k != "__metadata__")
    raw = json.dumps(header)
    raw = "{" + json.dumps(name) + ": " + json.dumps(header[name]) + ", " + raw[1:]
    f.write_bytes(len(raw.encode()).to_bytes(8, "little") + raw.encode() + data)
    with pytest.raises(CheckpointError, match=rf"consolidated.safetensors: corrupt safetensors header \(the key "
                                              rf"'{name}' appears twice"):
        load_model(ckpt)


@pytest.mark.parametrize("text,reason", [("[" * 100_000 + "]" * 100_000, "nested too deeply"),
                                         ('{"dim": ' + "9" * 5000 + "}", "Exceeds the limit")])
def test_hostile_json(model, tmp_path, text, reason):
    path = save_checkpoint(model, tmp_path / "hf", layout="hf", max_shard_bytes=20_000)
    for name, error, problem in (("config.json", ConfigError, "not valid JSON"),
                                 ("model.safetensors.index.json", CheckpointError, "not a valid safetensors index")):
        saved = (path / name).read_text()
        (path / name).write_text(text)
        with pytest.raises(error, match=rf"{name}: {problem} \({reason}"):
            load_model(path)
        (path / name).write_text(saved)
    f = sorted(path.glob("model-*.safetensors"))[0]
    f.write_bytes(len(text).to_bytes(8, "little") + text.encode())
    with pytest.raises(CheckpointError, match=rf"{f.name}: corrupt safetensors header \({reason}"):
        load_model(path)


# ---------------------------------------------------------------- header entries
@pytest.mark.parametrize("field,value,message", [
    ("dtype", ["F32"], r"malformed header entry: dtype must be a string such as 'BF16', got \['F32'\]"),
    ("shape", [64.9], r"malformed header entry: shape must be a list of integers, got \[64.9\]"),
    ("shape", "64", r"malformed header entry: shape must be a list of integers, got '64'"),
    ("shape", [math.inf], r"malformed header entry: shape must be a list of integers, got \[inf\]"),
    ("shape", [True] * 1, r"malformed header entry: shape must be a list of integers, got \[True\]"),
    ("data_offsets", "negative", r"malformed header entry: data_offsets \[-256, 0\] must satisfy 0 <= start <= end"),
    ("data_offsets", [0.5, 256.5], r"malformed header entry: data_offsets must be a list of two integers"),
])
def test_malformed_header_entry(ckpt, field, value, message):
    f = ckpt / "consolidated.safetensors"
    header, data = _header_and_data(f)
    entry = header["norm.weight"]                               # 64 float32 values = 256 bytes
    entry[field] = [-256, 0] if value == "negative" else value
    _write(f, header, data)
    with pytest.raises(CheckpointError, match=rf"consolidated.safetensors: tensor 'norm.weight' has a {message}"):
        load_model(ckpt)


def test_header_size_limits(ckpt, monkeypatch):
    from mistral_nb.checkpoint import safetensors_file as safetensors_io
    f = ckpt / "consolidated.safetensors"
    header, _ = _header_and_data(f)
    monkeypatch.setattr(safetensors_io, "MAX_TENSORS", len(header) - 2)
    with pytest.raises(CheckpointError, match=rf"consolidated.safetensors: the header lists {len(header)} entries, "
                                              rf"more than the {len(header) - 2} tensors this reader accepts"):
        load_model(ckpt)
    monkeypatch.setattr(safetensors_io, "MAX_TENSORS", 10**5)
    monkeypatch.setattr(safetensors_io, "MAX_HEADER_BYTES", 1000)
    with pytest.raises(CheckpointError, match=r"consolidated.safetensors: the header is [\d,]+ bytes, more than the "
                                              "1,000 this reader accepts"):
        load_model(ckpt)


# ---------------------------------------------------------------- FIFOs, devices, directories
def _make_special(path, kind):
    path.unlink() if path.is_file() or path.is_symlink() else None
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev_zero":
        os.symlink("/dev/zero", path)
    else:
        path.mkdir()


SPECIAL = {"fifo": "a FIFO \\(named pipe\\)", "dev_zero": "a character device", "directory": "a directory"}


@pytest.mark.skipif(not hasattr(os, "mkfifo") or not os.path.exists("/dev/zero"), reason="POSIX special files")
@pytest.mark.parametrize("kind", list(SPECIAL))
@pytest.mark.parametrize("name", ["model.safetensors.index.json", "config.json", "model-00001-of-00003.safetensors",
                                  "model.safetensors", "params.json"])
def test_special_files_are_refused(model, tmp_path, kind, name):
    """Each is refused at once with what it is — never waited on (FIFO) or read forever (/dev/zero)."""
    layout = "mistral" if name == "params.json" else "hf"
    path = save_checkpoint(model, tmp_path / "c", layout=layout,
                           max_shard_bytes=None if name == "model.safetensors" or layout == "mistral" else 60_000)
    if name.startswith("model-"):
        name = sorted(p.name for p in path.glob("model-*.safetensors"))[0]
    _make_special(path / name, kind)
    with no_hang(), pytest.raises(CheckpointError, match=rf"{name}: not a regular file \(it is {SPECIAL[kind]}\)"):
        load_model(path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX FIFOs")
def test_special_files_are_refused_by_the_readers_themselves(tmp_path):
    """Called directly (without the directory scan in front), the readers refuse them too."""
    from mistral_nb import ModelArgs
    from mistral_nb.checkpoint.safetensors_file import read_header
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with no_hang(), pytest.raises(CheckpointError, match=r"pipe: safetensors file is not a regular file \(it is a "
                                                         r"FIFO \(named pipe\)\)"):
        read_header(fifo)
    with no_hang(), pytest.raises(ConfigError, match=r"pipe: config file is not a regular file \(it is a FIFO"):
        ModelArgs.from_hf_config(fifo)
    (tmp_path / "big.json").write_bytes(b" " * 1_000_001)
    with pytest.raises(ConfigError, match=r"big.json: config file is 1,000,001 bytes, more than the 1,000,000"):
        ModelArgs.from_params_json(tmp_path / "big.json")


# ---------------------------------------------------------------- a config far larger than its checkpoint
@pytest.mark.parametrize("field,value,message", [
    ("num_hidden_layers", 10**7, r"the config asks for 10000000 layers, but the checkpoint holds only 21 tensors"),
    ("vocab_size", 10**9, r"'lm_head.weight' has shape \(300, 64\) but the config expects \(1000000000, 64\)"),
    ("hidden_size", 10**8, r"has shape .* but the config expects .*100000000"),
    ("intermediate_size", 10**9, r"has shape .* but the config expects .*1000000000"),
])
def test_huge_config_is_refused_before_building(model, tmp_path, monkeypatch, field, value, message):
    """A 100-byte config.json claiming a gigantic model is checked against the checkpoint's actual
    tensors before any model (even on the meta device) is built."""
    from mistral_nb.model import Transformer
    path = save_checkpoint(model, tmp_path / "hf", layout="hf")
    config = json.loads((path / "config.json").read_text())
    config[field] = value
    (path / "config.json").write_text(json.dumps(config))
    built = []
    init = Transformer.__init__

    def spy(self, args):
        built.append(args)
        init(self, args)

    monkeypatch.setattr(Transformer, "__init__", spy)
    with pytest.raises(CheckpointError, match=message):
        load_model(path)
    assert built == []


# ---------------------------------------------------------------- generate's arguments
@pytest.mark.parametrize("kwargs,exc,message", [
    (dict(max_new_tokens=10**12), ValueError, r"max_new_tokens must be an int in \[0, 1048576\], got 10{12}"),
    (dict(max_new_tokens="4"), TypeError, r"max_new_tokens must be an int, got '4' \(str\)"),
    (dict(temperature="0.5"), TypeError, r"temperature must be a number, got '0.5' \(str\)"),
    (dict(temperature=None), TypeError, r"temperature must be a number, got None"),
    (dict(temperature=math.inf), ValueError, r"temperature must be a finite number >= 0 \(0 = greedy\), got inf"),
    (dict(top_p="0.9"), TypeError, r"top_p must be a number, got '0.9'"),
    (dict(top_p=None), TypeError, r"top_p must be a number, got None"),
    (dict(seed=2**70), ValueError, r"seed must be an int in \[-9223372036854775808, 18446744073709551615\], got"),
    (dict(seed=1.5), TypeError, r"seed must be an int, got 1.5"),
    (dict(chunk_size=0), ValueError, r"chunk_size must be an int in \[1, 8\], got 0"),
    (dict(chunk_size=9), ValueError, r"chunk_size must be an int in \[1, 8\], got 9"),
    (dict(eos_id=-1), ValueError, r"eos_id must be an int in \[0, 299\], got -1"),
    (dict(eos_id=10**6), ValueError, r"eos_id must be an int in \[0, 299\], got 1000000"),
    (dict(eos_id=[2]), TypeError, r"eos_id must be an int, got \[2\] \(list\)"),
    (dict(eos_id=True), TypeError, r"eos_id must be an int, got True"),
    (dict(prompts=np.array([1, 2])), ValueError, r"prompts given as an array or tensor must be 2-D"),
])
def test_generate_argument_errors(model, kwargs, exc, message):
    call = dict(prompts=[[1, 2]], max_new_tokens=2, temperature=1.0, seed=0)
    call.update(kwargs)
    with pytest.raises(exc, match=message):
        generate(model, call.pop("prompts"), **call)


def test_generate_accepts_numpy_prompts_and_counts(model):
    reference = generate(model, [[1, 2, 3], [4, 5]], max_new_tokens=4, temperature=0.8, seed=3, eos_id=7)
    as_numpy = generate(model, [np.array([1, 2, 3]), np.array([4, 5], dtype=np.int32)], max_new_tokens=np.int64(4),
                        temperature=np.float32(0.8), seed=np.int64(3), eos_id=np.int64(7), chunk_size=np.int64(2))
    assert as_numpy == reference
    assert generate(model, np.array([[1, 2, 3]]), max_new_tokens=np.int32(4)) == \
        generate(model, [[1, 2, 3]], max_new_tokens=4) == generate(model, torch.tensor([[1, 2, 3]]), max_new_tokens=4)


# ---------------------------------------------------------------- the model's inputs
def test_forward_input_errors(model):
    with pytest.raises(ValueError, match=r"tokens must have shape \(B, S\) with B >= 1 and S >= 1, got \(0, 3\)"):
        model(torch.zeros(0, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="tokens are on the meta device, which holds no data"):
        model(torch.zeros(1, 3, dtype=torch.long, device="meta"))
    tokens = torch.tensor([[1, 2, 3]])
    cache = RollingBufferCache.for_model(model, 1)
    with pytest.raises(TypeError, match="positions must be an integer .* got torch.float32"):
        model(tokens, cache=cache, positions=torch.tensor([[0.0, 1.0, 2.0]]))
    with pytest.raises(ValueError, match=r"the cache was built for batch size 2, but the tokens have batch size 1"):
        model(tokens, cache=RollingBufferCache.for_model(model, 2))
    bigger = random_model(tiny_args(n_layers=3))
    with pytest.raises(ValueError, match=r"the cache was built for \(n_layers, n_kv_heads, head_dim\) = \(3, 2, 16\), "
                                         r"but the model has \(2, 2, 16\)"):
        model(tokens, cache=RollingBufferCache.for_model(bigger, 1))
    with pytest.raises(ValueError, match=r"cache window must be an int > 0, got 0"):
        RollingBufferCache.for_model(model, 1, window=0)
    small = RollingBufferCache.for_model(model, 1, window=4)          # the model's window is 8
    model(tokens, cache=small)                                         # positions 0..2 fit
    with pytest.raises(ValueError, match=r"position 5 does not fit a cache of 4 slots for a model whose window is 8"):
        model(tokens, cache=small)                                     # 3..5 would overwrite keys still in view
