"""The Colab path: fetch the real checkpoint and pick device, dtype and int8 to fit the machine.

    model = load_pretrained()            # mistralai/Mistral-7B-v0.1 on whatever this machine has

prints one line saying what it chose and why, e.g. on a free Colab T4::

    load_pretrained: cuda:0 (Tesla T4, compute capability 7.5, 14.6 GB free) · float16: no native
    bfloat16 before compute capability 8.0 · int8 weights: float16 needs ~15.9 GB with headroom, int8 ~8.5 GB

Access: the repository may require accepting its terms on huggingface.co and a token. The token is
read by huggingface_hub itself from ``HF_TOKEN`` (or ``HUGGING_FACE_HUB_TOKEN``, or Colab's secrets);
this module never reads, prints or stores it. Only safetensors files, the config and the tokenizer
model are downloaded — never the pickle (.bin) copies some repositories also carry.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch

from ..config import ModelArgs
from ..costs import dtype_bytes, weights_nbytes
from ..model import Transformer
from ..speed.cpu_pack import pack_available
from .layout import read_args
from .loading import load_model, resolve_device, resolve_dtype

__all__ = ["cuda_or_explain", "load_pretrained", "choose_settings", "probe_device", "DeviceInfo", "LoadChoice", "fetch_checkpoint",
           "HubAccessError", "estimate_nbytes"]

DEFAULT_REPO = "mistralai/Mistral-7B-v0.1"
CONFIG_PATTERNS = ["config.json", "params.json"]
HF_PATTERNS = ["config.json", "model.safetensors", "model-*.safetensors", "model.safetensors.index.json",
               "tokenizer.model"]
MISTRAL_PATTERNS = ["params.json", "consolidated.safetensors", "tokenizer.model"]
GB = 1e9


def cuda_or_explain() -> bool:
    """True when a CUDA GPU is present. Otherwise print why the cell that asked does nothing and
    return False: the book's GPU cells start with ``if cuda_or_explain():``, so a CPU run (and the
    rendered book) shows a sentence instead of an empty cell."""
    if torch.cuda.is_available():
        return True
    print("No CUDA GPU in this run, so this cell does nothing (the book's outputs come from a CPU). "
          "On Colab: Runtime -> Change runtime type -> GPU, then run it again.")
    return False


class HubAccessError(PermissionError):
    """The Hub refused the download: the repository is gated, private, misspelled, or no token was given."""


@dataclass
class DeviceInfo:
    """What the chooser needs to know about a device (filled by ``probe_device``, or by hand in tests)."""
    device: str                                   # 'cpu' or 'cuda:N'
    name: str = ""                                # e.g. 'Tesla T4'
    capability: Optional[tuple] = None            # CUDA compute capability, e.g. (7, 5)
    free_bytes: Optional[int] = None              # free memory on the device (host RAM for the CPU)
    total_bytes: Optional[int] = None
    bf16_pack: bool = False                       # CPU: oneDNN can pack bf16 weights (cpu_pack.pack_available)


@dataclass
class LoadChoice:
    """The settings ``load_pretrained`` uses, with the reason for each."""
    device: str
    dtype: torch.dtype
    quantize: Optional[str]
    reasons: list = field(default_factory=list)
    info: Optional[DeviceInfo] = None
    pack: bool = False                            # bf16 weights packed for the CPU kernel (speed/cpu_pack.py)

    def describe(self) -> str:
        return "load_pretrained: " + " · ".join(self.reasons)


def available_ram() -> Optional[int]:
    """MemAvailable from /proc/meminfo (Linux, incl. Colab), else None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def probe_device(device: Optional[str | torch.device] = None) -> DeviceInfo:
    """Inspect ``device`` (default: the first GPU if any, else the CPU)."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = resolve_device(device)
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        free, total = torch.cuda.mem_get_info(index)
        return DeviceInfo(f"cuda:{index}", torch.cuda.get_device_name(index),
                          tuple(torch.cuda.get_device_capability(index)), int(free), int(total))
    if dev.type == "cpu":
        return DeviceInfo("cpu", "CPU", None, available_ram(), None, bf16_pack=pack_available())
    return DeviceInfo(str(dev), dev.type)


def estimate_nbytes(args: ModelArgs, dtype: torch.dtype, quantize: Optional[str] = None) -> int:
    """Bytes of the weights of ``Transformer(args)`` in ``dtype`` (int8 linears with ``quantize='int8'``),
    from the config alone (``costs.weights_nbytes``): nothing is built, so a downloaded config.json
    that claims 10**7 layers costs no memory here."""
    return weights_nbytes(args, dtype_bytes(resolve_dtype(dtype)), quantize)


def _headroom(weights: int) -> int:
    """Room for activations, the KV cache and the allocator on top of the weights: 10 %, at least 1 GB."""
    return max(int(0.1 * weights), int(1 * GB))


def _default_dtype(info: DeviceInfo) -> tuple[torch.dtype, str]:
    """The dtype for a device when none is asked for, and why."""
    if info.device.startswith("cuda"):
        if info.capability is not None and tuple(info.capability) >= (8, 0):
            return torch.bfloat16, "bfloat16: native on compute capability >= 8.0, the dtype the weights were released in"
        return torch.float16, "float16: no native bfloat16 before compute capability 8.0"
    # Decoding is memory-bound: each token reads every weight once, so fewer bytes per weight is
    # more tokens per second. bfloat16 halves float32's bytes and is the dtype of the released
    # weights; when even bfloat16 does not fit, 'auto' falls back to int8.
    return torch.bfloat16, ("bfloat16: the released weights' dtype, half the bytes of float32 "
                            "(decoding on a CPU is limited by reading the weights)")


def _choose_quantize(args: ModelArgs, info: DeviceInfo, dtype: torch.dtype, quantize) -> tuple[Optional[str], str]:
    """int8 or not, and why: 'auto' takes int8 only when the weights in ``dtype`` would not fit."""
    free = info.free_bytes
    full, int8 = estimate_nbytes(args, dtype), estimate_nbytes(args, dtype, "int8")
    need_full, need_int8 = full + _headroom(full), int8 + _headroom(int8)
    fits_full = free is None or need_full <= free
    if quantize == "int8":
        return "int8", f"int8 weights: as requested (~{need_int8 / GB:.1f} GB with headroom)"
    if quantize is None:
        return None, (f"no quantization: as requested (~{need_full / GB:.1f} GB with headroom"
                      + ("" if fits_full else ", more than is free") + ")")
    if fits_full:
        return None, f"no quantization: {_name(dtype)} weights need ~{need_full / GB:.1f} GB with headroom"
    if free is None or need_int8 <= free:
        return "int8", (f"int8 weights: {_name(dtype)} needs ~{need_full / GB:.1f} GB with headroom, "
                        f"int8 ~{need_int8 / GB:.1f} GB")
    raise MemoryError(f"{info.device} has {free / GB:.1f} GB free, but the model needs ~{need_int8 / GB:.1f} GB "
                      f"even with int8 weights (~{need_full / GB:.1f} GB in {_name(dtype)}); free memory "
                      "(restart the runtime) or pick a bigger GPU")


def choose_settings(args: ModelArgs, info: DeviceInfo, dtype=None, quantize="auto") -> LoadChoice:
    """Pick dtype and quantization for ``args`` on the device described by ``info``.

    dtype (when not given): CUDA with compute capability >= 8.0 (A100, L4, H100) -> bfloat16, the
    dtype of the released weights; older GPUs (T4 = 7.5, V100 = 7.0) have no native bfloat16 ->
    float16; the CPU -> bfloat16 (decoding reads every weight per token: half float32's bytes).
    quantize='auto': int8 when the weights in that dtype plus headroom (10 %, >= 1 GB) exceed the free
    memory and int8 fits; an error (before any download) when even int8 does not fit. An explicit
    ``quantize=None`` or ``'int8'`` is used as given. On a CPU whose ``info.bf16_pack`` says oneDNN
    can, bfloat16 weights that are not quantized are also packed for its kernel (``speed/cpu_pack.py``).
    """
    if quantize not in ("auto", None, "int8"):
        raise ValueError(f"quantize must be 'auto', None or 'int8', got {quantize!r}")
    dev = info.device
    facts = [info.name] if info.name and dev != "cpu" else []
    if info.capability is not None:
        facts.append(f"compute capability {info.capability[0]}.{info.capability[1]}")
    if info.free_bytes is not None:
        facts.append(f"{info.free_bytes / GB:.1f} GB free")
    reasons = [dev + (f" ({', '.join(facts)})" if facts else "")]
    if dtype is not None:
        dtype = resolve_dtype(dtype)
        reasons.append(f"{_name(dtype)}: as requested")
    else:
        dtype, why = _default_dtype(info)
        reasons.append(why)
    quantize, why = _choose_quantize(args, info, dtype, quantize)
    reasons.append(why)
    pack = dev == "cpu" and dtype == torch.bfloat16 and quantize is None and info.bf16_pack
    if pack:
        reasons.append("bf16 weights packed for oneDNN's CPU kernel (faster decoding; load_model(..., pack=True))")
    return LoadChoice(dev, dtype, quantize, reasons, info, pack)


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _hub():
    try:
        import huggingface_hub
    except ImportError:
        raise ImportError("downloading from the Hugging Face Hub needs huggingface_hub: "
                          "pip install huggingface_hub (or pass a local checkpoint directory)") from None
    return huggingface_hub


def _check_seconds(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise ValueError(f"{name} must be a number of seconds > 0 (a total deadline), got {value!r}")
    return float(value)


def _snapshot(hub, seconds: float, **kwargs) -> Path:
    """``hub.snapshot_download(**kwargs)`` within ``seconds`` in all (huggingface_hub's own requests for the
    file list have no timeout: a Hub that accepts the connection and never answers would hold it forever).
    When the deadline passes, a copy already in huggingface_hub's cache is used, as it does itself when
    offline; otherwise TimeoutError. The late call is left to end in its background thread."""
    from .files import call_with_deadline

    try:
        from huggingface_hub.constants import ENDPOINT as endpoint      # HF_ENDPOINT, or huggingface.co
    except ImportError:  # pragma: no cover - a stand-in module in tests
        endpoint = "the Hugging Face Hub"
    try:
        return Path(call_with_deadline(lambda: hub.snapshot_download(**kwargs), seconds,
                                       f"{kwargs['repo_id']} from {endpoint}"))
    except TimeoutError as late:
        try:
            path = Path(hub.snapshot_download(**kwargs, local_files_only=True))
        except Exception:
            raise TimeoutError(f"{late}; nothing of it is in huggingface_hub's cache. Check the connection "
                               "(and HF_ENDPOINT), or pass a larger timeout") from None
        print(f"fetch_checkpoint: {late}; using the copy in huggingface_hub's cache", flush=True)
        return path


def fetch_checkpoint(repo_id: str = DEFAULT_REPO, local_dir: Optional[str | Path] = None,
                     revision: Optional[str] = None, patterns: Optional[list] = None,
                     timeout: float = 3600.0) -> Path:
    """Download the files matching ``patterns`` (default: the safetensors checkpoint) and return the directory.

    ``repo_id`` may also be a local checkpoint directory, returned as is. ``timeout``: seconds for the
    whole download (each of its two tries); past it, a copy in huggingface_hub's cache is used, or
    TimeoutError says what did not answer. The token comes from the environment through
    huggingface_hub's own lookup; it is never passed, printed or stored here.
    """
    local = _local_directory(repo_id)
    if local is not None:
        return local
    timeout = _check_seconds("fetch_checkpoint: timeout", timeout)
    hub = _hub()
    try:
        from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError
    except ImportError:  # pragma: no cover - huggingface_hub < 0.20
        from huggingface_hub.utils import GatedRepoError, RepositoryNotFoundError

    def download(allow):
        return _snapshot(hub, timeout, repo_id=repo_id, revision=revision, local_dir=local_dir, allow_patterns=allow)

    try:
        if patterns is not None:
            return download(patterns)
        path = download(HF_PATTERNS)
        if not (path / "config.json").is_file():        # a repository in Mistral's own layout
            path = download(MISTRAL_PATTERNS)
        return path
    except GatedRepoError:
        raise HubAccessError(
            f"{repo_id} is gated: open https://huggingface.co/{repo_id} while logged in, accept its terms, then "
            "make a token with read access available as the environment variable HF_TOKEN (on Colab: the key "
            "icon 'Secrets', name HF_TOKEN, notebook access on) and run again") from None
    except RepositoryNotFoundError:
        raise HubAccessError(
            f"{repo_id}: repository not found, or not visible without a token — check the name, and set HF_TOKEN "
            f"if it is private or gated (there is no local directory {repo_id!r} either)") from None


# What huggingface_hub accepts as a repository id: 'name' or 'owner/name' of [A-Za-z0-9_.-], no '--' or '..'.
_REPO_ID = re.compile(r"(?!.*(--|\.\.))[A-Za-z0-9_][\w.-]{0,95}(/[A-Za-z0-9_][\w.-]{0,95})?")


def _local_directory(repo_id) -> Optional[Path]:
    """The directory ``repo_id`` names on this machine, or None if it is a repository id to download.

    Something that cannot be a repository id ('./ckpt', '/data/mistral', 'a/b/c', '~/x') but is not a
    directory raises FileNotFoundError here, instead of reaching the Hub as a malformed id."""
    if not isinstance(repo_id, (str, os.PathLike)):
        raise TypeError(f"repo_id must be a Hugging Face repository id or a directory, got {type(repo_id).__name__}")
    if not str(repo_id).strip():
        raise ValueError(f"repo_id is empty ({repo_id!r}): pass a Hugging Face repository id such as "
                         f"{DEFAULT_REPO!r}, or a checkpoint directory ('.' for the current one)")
    path = Path(repo_id).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ValueError(f"{repo_id} is a file: pass the checkpoint's directory (or a Hugging Face repository id)")
    if isinstance(repo_id, os.PathLike) or not _REPO_ID.fullmatch(repo_id):
        raise FileNotFoundError(f"no checkpoint directory at {str(repo_id)!r} (and it is not a Hugging Face "
                                "repository id, which looks like 'owner/name')")
    return None


def load_pretrained(repo_id: str = DEFAULT_REPO, device: Optional[str | torch.device] = None, dtype=None,
                    quantize: Optional[str] = "auto", local_dir: Optional[str | Path] = None,
                    revision: Optional[str] = None, progress: Optional[bool] = True,
                    verbose: bool = True, probe: Callable[..., DeviceInfo] = probe_device,
                    timeout: float = 60.0, download_timeout: Optional[float] = None) -> Transformer:
    """Fetch (or open) a checkpoint, choose device/dtype/int8 for this machine, say so, and load it.

    repo_id: a Hugging Face repository id or a local checkpoint directory (either layout).
    device: default the first GPU, else the CPU. dtype: default bfloat16 on GPUs with native support,
    float16 on older GPUs (T4), bfloat16 on the CPU, with its weights packed for oneDNN where the CPU
    supports it (``speed/cpu_pack.py``). quantize: 'auto'
    (int8 when the weights would not fit), None or 'int8'. The choice is printed (``verbose``) and kept as
    ``model.load_choice``. Weights stream tensor by tensor onto the device (see ``load_model``).
    timeout: seconds the Hub gets to list the repository and send the config; download_timeout: seconds
    for the weights in all (default: ``timeout`` plus one second per MB of the weights in bfloat16, about
    4 hours for the 7B: a floor of 1 MB/s). Past a deadline a copy in huggingface_hub's cache is used,
    or TimeoutError says what did not answer.
    """
    timeout = _check_seconds("load_pretrained: timeout", timeout)
    if download_timeout is not None:
        download_timeout = _check_seconds("load_pretrained: download_timeout", download_timeout)
    if not callable(probe):
        raise TypeError(f"load_pretrained: probe must be a function device -> DeviceInfo, got {type(probe).__name__}")
    info = probe(device)
    if not isinstance(info, DeviceInfo):
        raise TypeError(f"load_pretrained: probe returned {type(info).__name__}, not a DeviceInfo")
    config_dir = fetch_checkpoint(repo_id, local_dir, revision, patterns=CONFIG_PATTERNS, timeout=timeout)
    args = read_args_any(config_dir)
    choice = choose_settings(args, info, dtype=dtype, quantize=quantize)      # fails before a big download
    if verbose:
        print(choice.describe(), flush=True)
    if download_timeout is None:
        download_timeout = timeout + estimate_nbytes(args, torch.bfloat16) / 1e6
    path = fetch_checkpoint(repo_id, local_dir, revision, timeout=download_timeout)
    model = load_model(path, device=choice.device, dtype=choice.dtype, quantize=choice.quantize, progress=progress,
                       pack=choice.pack)
    model.load_choice = choice
    return model


def read_args_any(path: Path) -> ModelArgs:
    """ModelArgs from a directory that has at least config.json or params.json (weights not needed yet)."""
    if (path / "config.json").is_file():
        return ModelArgs.from_hf_config(path / "config.json")
    if (path / "params.json").is_file():
        return ModelArgs.from_params_json(path / "params.json")
    return read_args(path)   # raises the loader's clear error for a directory with neither
