"""load_pretrained: the device/dtype/int8 choice, downloads (simulated offline) and the token's privacy."""

import re
import sys
from types import SimpleNamespace

import pytest
import torch

from helpers import random_model, tiny_args
from mistral_nb import ModelArgs, load_model, save_checkpoint
from mistral_nb.checkpoint import hub
from mistral_nb.checkpoint.hub import DeviceInfo, HubAccessError, choose_settings, load_pretrained

GB = 10**9
SECRET = "hf_THIS_IS_A_SECRET_TOKEN_0123456789"
M7B = ModelArgs.mistral_7b()

T4 = DeviceInfo("cuda:0", "Tesla T4", (7, 5), int(14.6 * GB), int(15.8 * GB))
A100 = DeviceInfo("cuda:0", "NVIDIA A100-SXM4-40GB", (8, 0), int(39.4 * GB), int(42.5 * GB))
V100_16 = DeviceInfo("cuda:0", "Tesla V100-SXM2-16GB", (7, 0), int(15.5 * GB), int(16.9 * GB))
SMALL_GPU = DeviceInfo("cuda:0", "tiny", (8, 6), int(6 * GB), int(8 * GB))
COLAB_CPU = DeviceInfo("cpu", "CPU", None, int(11.5 * GB))
BIG_CPU = DeviceInfo("cpu", "CPU", None, int(64 * GB))
LAPTOP_CPU = DeviceInfo("cpu", "CPU", None, int(15 * GB))


@pytest.mark.parametrize("info,dtype,quantize", [
    (T4, torch.float16, "int8"),          # no native bf16, 14.5 GB of fp16 weights do not fit in 14.6 GB free
    (V100_16, torch.float16, "int8"),
    (A100, torch.bfloat16, None),
    (COLAB_CPU, torch.bfloat16, "int8"),  # 12.7 GB of RAM: bf16 does not fit, int8 does
    (LAPTOP_CPU, torch.bfloat16, "int8"), # 14.5 GB of bf16 weights + 1.45 GB headroom > 15 GB free
    (BIG_CPU, torch.bfloat16, None),      # a CPU decodes bf16 (half the bytes of fp32) when it fits
])
def test_choice_for_mistral_7b(info, dtype, quantize):
    choice = choose_settings(M7B, info)
    assert (choice.device, choice.dtype, choice.quantize) == (info.device, dtype, quantize)
    line = choice.describe()
    assert line.startswith("load_pretrained: " + info.device)
    assert str(dtype).removeprefix("torch.") in line
    assert ("int8" in line) == (quantize == "int8")


def test_t4_line_says_why():
    line = choose_settings(M7B, T4).describe()
    assert "Tesla T4, compute capability 7.5, 14.6 GB free" in line
    assert "float16: no native bfloat16 before compute capability 8.0" in line
    assert "int8 weights: float16 needs ~15.9 GB with headroom, int8 ~8.5 GB" in line


def test_explicit_settings_win_and_impossible_fits_fail_early():
    c = choose_settings(M7B, T4, dtype="bfloat16", quantize=None)
    assert (c.dtype, c.quantize) == (torch.bfloat16, None) and "more than is free" in c.describe()
    assert choose_settings(M7B, A100, quantize="int8").quantize == "int8"
    with pytest.raises(MemoryError, match=r"cuda:0 has 6.0 GB free, but the model needs ~8.5 GB even with int8"):
        choose_settings(M7B, SMALL_GPU)
    with pytest.raises(ValueError, match="quantize must be 'auto', None or 'int8', got 'int4'"):
        choose_settings(M7B, T4, quantize="int4")
    with pytest.raises(ValueError, match="unsupported dtype 'fp8'"):
        choose_settings(M7B, T4, dtype="fp8")
    # unknown free memory: trust the request, quantize nothing
    assert choose_settings(M7B, DeviceInfo("cpu")).quantize is None


def test_probe_cpu():
    info = hub.probe_device("cpu")
    assert info.device == "cpu" and (info.free_bytes is None or info.free_bytes > 0)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    model = random_model(tiny_args(n_layers=2), seed=11)
    return model, save_checkpoint(model, tmp_path_factory.mktemp("hub") / "repo", layout="hf")


def _fake_probe(info):
    return lambda device=None: info


def test_load_pretrained_from_a_local_directory(tiny_ckpt, capsys):
    model, path = tiny_ckpt
    loaded = load_pretrained(str(path), probe=_fake_probe(DeviceInfo("cpu", free_bytes=8 * GB)), progress=False)
    line = capsys.readouterr().out.strip()
    assert line.startswith("load_pretrained: cpu (8.0 GB free) · bfloat16: the released weights' dtype")
    assert "no quantization" in line
    assert loaded.load_choice.dtype == torch.bfloat16 and loaded.load_choice.quantize is None
    for (n, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a.to(torch.bfloat16), b), n


def test_load_pretrained_picks_int8_when_short(tiny_ckpt, capsys):
    _, path = tiny_ckpt
    # a device with less room than the float32 weights + 1 GB headroom, but enough for int8 + headroom
    args = load_model(path).args
    full, int8 = hub.estimate_nbytes(args, torch.float32), hub.estimate_nbytes(args, torch.float32, "int8")
    free = 1 * GB + (full + int8) // 2
    model = load_pretrained(str(path), dtype="float32", probe=_fake_probe(DeviceInfo("cpu", free_bytes=free)),
                            progress=False)
    assert model.load_choice.quantize == "int8" and "int8 weights" in capsys.readouterr().out
    assert type(model.layers[0].attention.wq).__name__ == "Int8Linear"


def test_download_uses_only_safetensors_and_never_handles_the_token(tiny_ckpt, monkeypatch, capsys):
    import huggingface_hub

    _, path = tiny_ckpt
    monkeypatch.setenv("HF_TOKEN", SECRET)
    calls = []

    def fake_snapshot_download(**kwargs):
        calls.append(kwargs)
        return str(path)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    model = load_pretrained("someone/tiny-mistral", probe=_fake_probe(DeviceInfo("cpu", free_bytes=8 * GB)),
                            progress=False)
    assert model.args.n_layers == 2
    assert [c["repo_id"] for c in calls] == ["someone/tiny-mistral"] * 2
    assert calls[0]["allow_patterns"] == ["config.json", "params.json"]        # config first: choose, then fetch
    for c in calls:
        assert "token" not in c                                                # huggingface_hub reads HF_TOKEN itself
        assert not any(p.endswith((".bin", ".pt", ".pth", "*")) and "safetensors" not in p
                       for p in c["allow_patterns"])
    out = capsys.readouterr()
    assert SECRET not in out.out + out.err
    assert SECRET not in repr(model.load_choice)


def _hub_error(cls_name):
    from huggingface_hub import errors
    response = SimpleNamespace(headers={}, request=None)
    return getattr(errors, cls_name)(f"401 Client Error (token {SECRET[:3]}...)", response=response)


@pytest.mark.parametrize("cls_name,message", [
    ("GatedRepoError", r"mistralai/Mistral-7B-v0.1 is gated: .*accept its terms.*HF_TOKEN"),
    ("RepositoryNotFoundError", r"mistralai/Mistral-7B-v0.1: repository not found, or not visible without a token"),
])
def test_access_errors_explain_what_to_do(monkeypatch, cls_name, message):
    import huggingface_hub

    monkeypatch.setenv("HF_TOKEN", SECRET)
    err = _hub_error(cls_name)

    def refuse(**kwargs):
        raise err

    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)
    with pytest.raises(HubAccessError, match=message) as info:
        load_pretrained(probe=_fake_probe(T4))
    assert SECRET not in str(info.value)
    assert isinstance(info.value, PermissionError)


def test_missing_huggingface_hub_is_explained(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(ImportError, match="needs huggingface_hub: pip install huggingface_hub"):
        hub.fetch_checkpoint("mistralai/Mistral-7B-v0.1")


def test_local_directory_without_config(tmp_path):
    with pytest.raises(Exception, match="neither layout"):
        load_pretrained(str(tmp_path), probe=_fake_probe(BIG_CPU))


# ---------------------------------------------------------------- issue 12
@pytest.mark.parametrize("args", [M7B, tiny_args(n_layers=2)], ids=["7b", "tiny"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_estimate_nbytes_builds_nothing(args, dtype, monkeypatch):
    """The estimate equals the bytes of the built model, but is computed from the config alone: a
    downloaded config.json claiming 10**7 layers costs no memory before the download is refused."""
    from mistral_nb.model import Transformer
    from mistral_nb.costs import model_nbytes
    from mistral_nb.speed.int8 import quantize_model
    from mistral_nb.checkpoint import empty_model
    model = empty_model(args).to(dtype)
    full = model_nbytes(model)
    assert hub.estimate_nbytes(args, dtype) == full
    assert hub.estimate_nbytes(args, dtype, "int8") == model_nbytes(quantize_model(model))
    built = []
    monkeypatch.setattr(Transformer, "__init__", lambda self, a: built.append(a))
    huge = args.replace(n_layers=10**7)
    assert hub.estimate_nbytes(huge, dtype) > 10**7 * full // (args.n_layers + 2)
    with pytest.raises(MemoryError, match="even with int8"):
        choose_settings(huge, T4)
    assert built == []


@pytest.mark.parametrize("path", ["./checkpoints/mistral-7b", "/no/such/dir", "~/no-such-dir-here",
                                  "models/mistral/v0.1", "my model"])
def test_mistyped_local_path_is_not_sent_to_the_hub(path, monkeypatch):
    import huggingface_hub


    def contacted(**kwargs):
        raise AssertionError(f"the Hub was asked for {kwargs.get('repo_id')!r}")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", contacted)
    with pytest.raises(FileNotFoundError, match=rf"no checkpoint directory at '{re.escape(path)}' \(and it is not a "
                                                r"Hugging Face repository id, which looks like 'owner/name'\)"):
        load_pretrained(path, probe=_fake_probe(BIG_CPU))


def test_a_file_is_not_a_checkpoint_directory(tiny_ckpt):
    _, path = tiny_ckpt
    with pytest.raises(ValueError, match="config.json is a file: pass the checkpoint's directory"):
        load_pretrained(str(path / "config.json"), probe=_fake_probe(BIG_CPU))


def test_cpu_bf16_is_packed_only_where_onednn_can_and_nothing_is_quantized():
    roomy = DeviceInfo("cpu", "CPU", None, int(64 * GB), bf16_pack=True)
    choice = choose_settings(M7B, roomy)
    assert (choice.dtype, choice.quantize, choice.pack) == (torch.bfloat16, None, True)
    assert "packed for oneDNN" in choice.describe()
    assert not choose_settings(M7B, DeviceInfo("cpu", "CPU", None, int(64 * GB))).pack      # no kernel
    assert not choose_settings(M7B, roomy, quantize="int8").pack
    assert not choose_settings(M7B, roomy, dtype=torch.float32).pack
    assert not choose_settings(M7B, DeviceInfo("cuda:0", "NVIDIA L4", (8, 9), int(22 * GB), bf16_pack=True)).pack


@pytest.mark.skipif(not __import__("mistral_nb.speed.cpu_pack", fromlist=["x"]).pack_available(),
                    reason="no oneDNN bf16 kernel on this CPU")
def test_load_pretrained_packs_on_a_cpu_that_can(tiny_ckpt, capsys):
    from mistral_nb.speed.cpu_pack import PackedLinear

    _, path = tiny_ckpt
    info = DeviceInfo("cpu", "CPU", None, 8 * GB, bf16_pack=True)
    loaded = load_pretrained(str(path), probe=_fake_probe(info), progress=False)
    assert loaded.load_choice.pack and "packed for oneDNN" in capsys.readouterr().out
    assert any(isinstance(m, PackedLinear) for m in loaded.modules())
