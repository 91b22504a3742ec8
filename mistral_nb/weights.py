"""Checkpoints in both layouts: read, validate, convert, stream into a model; and write.

Hugging Face layout: ``config.json`` + ``model.safetensors`` (or shards ``model-0000i-of-0000n.safetensors``
listed in ``model.safetensors.index.json``); names like ``model.layers.0.self_attn.q_proj.weight``;
q/k rows in the rotate-half RoPE layout.
Mistral layout: ``params.json`` + ``consolidated.safetensors``; names like ``layers.0.attention.wq.weight``
(this package's own names); q/k rows in the interleaved RoPE layout.

``load_model`` builds the model on the meta device (no memory), checks every tensor's name and shape
against the config from the headers alone, then reads tensors one at a time straight into their
target device and dtype and assigns them — no second copy of the model is ever made. With
``quantize="int8"`` each linear weight is quantized as soon as it arrives on the device, so the
full-precision model never exists there either. Pickle checkpoints (.bin/.pt/.pth) are refused: loading
a pickle can run arbitrary code.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Dict, Iterator, Optional

import torch
from torch import nn

from .config import ModelArgs
from .model import Transformer
from .quant import Int8Linear, quantize_model
from .rope import hf_to_mistral_qk, mistral_to_hf_qk
from .safetensors_io import CheckpointError, TensorInfo, read_header, read_tensor

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
DTYPE_NAMES = {"float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
               "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
               "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float64": torch.float64}
QUANTIZE_MODES = (None, "int8")


def resolve_dtype(dtype) -> torch.dtype:
    """A floating-point torch dtype from a dtype or a name ('float16', 'bf16', ...); ValueError otherwise."""
    if isinstance(dtype, str):
        key = dtype.lower().removeprefix("torch.")
        if key in DTYPE_NAMES:
            return DTYPE_NAMES[key]
    elif dtype in FLOAT_DTYPES:
        return dtype
    raise ValueError(f"unsupported dtype {dtype!r}: choose one of {', '.join(map(str, FLOAT_DTYPES))} "
                     f"(or a name: {', '.join(DTYPE_NAMES)})")


def resolve_device(device) -> torch.device:
    """A torch.device that exists on this machine; ValueError naming the device otherwise."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"unknown device {device!r}: expected e.g. 'cpu', 'cuda' or 'cuda:0' ({e})") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but torch.cuda.is_available() is False "
                             "(on Colab: Runtime > Change runtime type > GPU)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    elif dev.type == "meta":
        raise ValueError("device 'meta' holds no data: load onto 'cpu' or 'cuda' (build a Transformer under "
                         "torch.device('meta') to get an empty model)")
    return dev

# ---------------------------------------------------------------- names
_HF_LAYER = {
    "self_attn.q_proj": "attention.wq", "self_attn.k_proj": "attention.wk",
    "self_attn.v_proj": "attention.wv", "self_attn.o_proj": "attention.wo",
    "mlp.gate_proj": "feed_forward.w1", "mlp.down_proj": "feed_forward.w2", "mlp.up_proj": "feed_forward.w3",
    "input_layernorm": "attention_norm", "post_attention_layernorm": "ffn_norm",
}
_HF_TOP = {"model.embed_tokens.weight": "tok_embeddings.weight", "model.norm.weight": "norm.weight",
           "lm_head.weight": "output.weight"}
_MISTRAL_LAYER = {v: k for k, v in _HF_LAYER.items()}
_MISTRAL_TOP = {v: k for k, v in _HF_TOP.items()}


def hf_to_mistral_name(name: str) -> Optional[str]:
    """'model.layers.3.mlp.up_proj.weight' -> 'layers.3.feed_forward.w3.weight' (None if unknown)."""
    if name in _HF_TOP:
        return _HF_TOP[name]
    m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)\.weight", name)
    if m and m.group(2) in _HF_LAYER:
        return f"layers.{m.group(1)}.{_HF_LAYER[m.group(2)]}.weight"
    return None


def mistral_to_hf_name(name: str) -> str:
    """Inverse of ``hf_to_mistral_name``."""
    if name in _MISTRAL_TOP:
        return _MISTRAL_TOP[name]
    m = re.fullmatch(r"layers\.(\d+)\.(.+)\.weight", name)
    if not m or m.group(2) not in _MISTRAL_LAYER:
        raise KeyError(f"no Hugging Face name for {name!r}")
    return f"model.layers.{m.group(1)}.{_MISTRAL_LAYER[m.group(2)]}.weight"


def _is_q_or_k(name: str) -> bool:
    return name.endswith(("attention.wq.weight", "attention.wk.weight"))


# ---------------------------------------------------------------- layout detection
def detect_layout(path: str | Path) -> str:
    """'hf' or 'mistral' for a checkpoint directory; a clear error for anything else."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint path does not exist: {path}")
    if path.is_file() and path.name.endswith(PICKLE_SUFFIXES):
        raise CheckpointError(f"{path}: a pickle checkpoint; pickles can run arbitrary code when loaded and are "
                              "refused — use a directory with safetensors files")
    if not path.is_dir():
        raise CheckpointError(f"{path}: expected a checkpoint directory (config.json + model*.safetensors, "
                              "or params.json + consolidated.safetensors), got a file")
    names = {p.name for p in path.iterdir()}
    has_hf_weights = "model.safetensors" in names or "model.safetensors.index.json" in names
    if "config.json" in names and has_hf_weights:
        return "hf"
    if "params.json" in names and "consolidated.safetensors" in names:
        return "mistral"
    pickles = sorted(n for n in names if n.endswith(PICKLE_SUFFIXES))
    if pickles:
        raise CheckpointError(f"{path}: only pickle checkpoints found ({', '.join(pickles[:3])}); pickles can run "
                              "arbitrary code when loaded and are refused — use the safetensors files")
    raise CheckpointError(
        f"{path}: neither layout found. Expected config.json + model.safetensors (or "
        f"model.safetensors.index.json + shards) [Hugging Face], or params.json + consolidated.safetensors "
        f"[Mistral]; found: {', '.join(sorted(names)) or 'an empty directory'}")


def read_args(path: str | Path) -> ModelArgs:
    """The ModelArgs of a checkpoint directory in either layout."""
    path = Path(path)
    layout = detect_layout(path)
    if layout == "hf":
        return ModelArgs.from_hf_config(path / "config.json")
    return ModelArgs.from_params_json(path / "params.json")


def weight_files(path: Path, layout: str) -> list[Path]:
    """The safetensors files holding the weights, checking that a sharded index names real files."""
    return _weight_files(path, layout)[0]


def _weight_files(path: Path, layout: str) -> tuple[list[Path], Optional[Dict[str, str]]]:
    """(files, the index's weight_map {tensor name: shard file name} or None when not sharded)."""
    if layout == "mistral":
        return [path / "consolidated.safetensors"], None
    if (path / "model.safetensors").is_file() and not (path / "model.safetensors.index.json").is_file():
        return [path / "model.safetensors"], None
    index_file = path / "model.safetensors.index.json"
    try:
        index = json.loads(index_file.read_text(encoding="utf-8"))
        weight_map = index["weight_map"]
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise TypeError("weight_map must map tensor names to shard file names")
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{index_file}: not a valid safetensors index ({e!r})") from None
    if not weight_map:
        raise CheckpointError(f"{index_file}: the index's weight_map is empty")
    shards = sorted(set(weight_map.values()))
    for shard in shards:
        if Path(shard).name != shard or shard in (".", ".."):
            raise CheckpointError(f"{index_file} names shard {shard!r}: expected a file name inside the "
                                  "checkpoint directory")
        if not (path / shard).is_file():
            users = [n for n, s in weight_map.items() if s == shard]
            raise CheckpointError(f"{index_file} names shard {shard!r} (for {users[0]!r} and {len(users) - 1} "
                                  f"more tensors), but {path / shard} does not exist")
    return [path / s for s in shards], weight_map


# ---------------------------------------------------------------- the empty model
def empty_model(args: ModelArgs) -> Transformer:
    """``Transformer(args)`` on the meta device: every parameter has a shape and a dtype, no storage.

    (Building on meta is fast because ``Transformer`` skips the embedding's random init there.)"""
    with torch.device("meta"):
        return Transformer(args)


# ---------------------------------------------------------------- planning (headers only)
def plan_checkpoint(path: str | Path, args: Optional[ModelArgs] = None) -> tuple[str, ModelArgs, Dict[str, TensorInfo]]:
    """Check a checkpoint against its config from the headers alone.

    Returns (layout, args, {internal name: TensorInfo}). Raises CheckpointError naming the file and
    tensor for a missing, unexpected or wrongly shaped tensor, before any weight is read.
    """
    path = Path(path)
    layout = detect_layout(path)
    args = args or read_args(path)
    expected = {k: tuple(v.shape) for k, v in empty_model(args).state_dict().items()}
    found: Dict[str, TensorInfo] = {}
    files, weight_map = _weight_files(path, layout)
    for file in files:
        for name, info in read_header(file).items():
            if weight_map is not None and weight_map.get(name) != file.name:
                raise CheckpointError(f"{file}: holds tensor {name!r}, but {path / 'model.safetensors.index.json'} "
                                      f"puts it in {weight_map.get(name, 'no shard')!r}")
            internal = hf_to_mistral_name(name) if layout == "hf" else name
            if internal is None or internal not in expected:
                if layout == "hf" and name.endswith("rotary_emb.inv_freq"):
                    continue   # a buffer some old transformers versions saved; recomputed here
                raise CheckpointError(f"{file}: unexpected tensor {name!r}: the model "
                                      f"({args.n_layers} layers) has no such parameter")
            if internal in found:
                raise CheckpointError(f"{file}: tensor {name!r} appears twice (also in {found[internal].file.name})")
            if info.shape != expected[internal]:
                raise CheckpointError(f"{file}: tensor {name!r} has shape {info.shape} but the config "
                                      f"expects {expected[internal]}")
            if info.dtype not in FLOAT_DTYPES:
                raise CheckpointError(f"{file}: tensor {name!r} has dtype {info.dtype}; weights must be one of "
                                      f"{', '.join(map(str, FLOAT_DTYPES))}")
            found[internal] = info
    if weight_map is not None:
        seen = {info.name for info in found.values()}
        absent = [n for n in weight_map if n not in seen and not n.endswith("rotary_emb.inv_freq")]
        if absent:
            raise CheckpointError(f"{path / 'model.safetensors.index.json'}: tensor {absent[0]!r} is listed in "
                                  f"shard {weight_map[absent[0]]!r}, which does not contain it")
    missing = [k for k in expected if k not in found]
    if missing:
        shown = [mistral_to_hf_name(k) if layout == "hf" else k for k in missing]
        raise CheckpointError(f"{path}: checkpoint is missing {len(missing)} tensor(s) the config needs, "
                              f"e.g. {shown[:3]}")
    return layout, args, found


# ---------------------------------------------------------------- loading
def iter_checkpoint(path: str | Path, dtype: Optional[torch.dtype] = None) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (internal name, tensor in Mistral layout) one at a time, on the CPU."""
    layout, args, plan = plan_checkpoint(path)
    for name, info in plan.items():
        t = read_tensor(info)
        if dtype is not None:
            t = t.to(dtype)
        if layout == "hf" and _is_q_or_k(name):
            heads = args.n_heads if name.endswith("wq.weight") else args.n_kv_heads
            t = hf_to_mistral_qk(t, heads)
        yield name, t


def _set_tensor(model: nn.Module, name: str, value: torch.Tensor, dtype: Optional[torch.dtype] = None) -> None:
    """Put ``value`` into the (meta) model under ``name``: a frozen parameter, or quantized into an Int8Linear."""
    module_name, _, leaf = name.rpartition(".")
    module = model.get_submodule(module_name) if module_name else model
    if isinstance(module, Int8Linear) and leaf == "weight":
        module.set_weight(value, dtype)          # quantized from the checkpoint's own precision
    else:
        value = value.to(dtype) if dtype is not None else value
        module._parameters[leaf] = nn.Parameter(value.contiguous(), requires_grad=False)


def _release(model: nn.Module) -> None:
    """Drop every tensor a failed load already placed, so nothing half-filled keeps memory alive."""
    for module in model.modules():
        for store in (module._parameters, module._buffers):
            for key, t in store.items():
                if t is not None and not t.is_meta:
                    store[key] = (nn.Parameter(torch.empty_like(t, device="meta"), requires_grad=False)
                                  if isinstance(t, nn.Parameter) else torch.empty_like(t, device="meta"))


def load_model(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | str = torch.float32,
               progress: Optional[bool] = None, quantize: Optional[str] = None) -> Transformer:
    """Load a checkpoint directory (Hugging Face or Mistral layout) into a ``Transformer``.

    The model is built on the meta device, every tensor name and shape is checked from the headers,
    then each tensor is read, moved to ``device``, converted (dtype, q/k RoPE layout) and assigned,
    one at a time: peak memory is the model plus one tensor.
    ``dtype``: float32 / float16 / bfloat16 / float64 (or their names).
    ``quantize``: None, or ``"int8"`` to store the blocks' linear weights as int8 with one scale per
    output channel (see ``quant.py``); each weight is quantized on ``device`` as soon as it arrives.
    ``progress``: tqdm bar per tensor, showing the shard being read (default: checkpoints over 1 GB).
    Raises FileNotFoundError / CheckpointError / ConfigError / ValueError with the file, tensor, field or
    value named; on any error no model is returned and the tensors already loaded are released.
    """
    dtype = resolve_dtype(dtype)
    if quantize not in QUANTIZE_MODES:
        raise ValueError(f"quantize must be one of {QUANTIZE_MODES}, got {quantize!r}")
    device = resolve_device(device)
    layout, args, plan = plan_checkpoint(path)
    model = empty_model(args)
    if quantize == "int8":
        quantize_model(model)
    order = sorted(plan.items(), key=lambda item: (str(item[1].file), item[1].start))   # sequential reads
    total = sum(i.nbytes for i in plan.values())
    n_files = len({i.file for i in plan.values()})
    show = progress if progress is not None else total > 1e9
    from tqdm.auto import tqdm
    bar = tqdm(total=total, unit="B", unit_scale=True, desc=f"loading {Path(path).name}", disable=not show)
    handles: dict = {}
    t = None
    try:
        for name, info in order:
            if info.file not in handles:
                handles[info.file] = open(info.file, "rb")
                bar.set_postfix_str(f"shard {len(handles)}/{n_files}: {info.file.name}", refresh=False)
            t = read_tensor(info, handles[info.file])       # CPU, checkpoint dtype: one tensor at a time
            t = t.to(device)                                # then the copy on the target device
            if layout == "hf" and _is_q_or_k(name):
                heads = args.n_heads if name.endswith("wq.weight") else args.n_kv_heads
                t = hf_to_mistral_qk(t, heads)
            _set_tensor(model, name, t, dtype)              # converted to dtype (or int8) where it lies
            t = None
            bar.update(info.nbytes)
        still_meta = [n for n, x in list(model.named_parameters()) + list(model.named_buffers()) if x.is_meta]
        if still_meta:   # cannot happen after plan_checkpoint; kept as a guard against half-loaded models
            raise CheckpointError(f"{path}: parameters left unloaded: {still_meta[:3]}")
    except BaseException:
        t = None
        _release(model)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        raise
    finally:
        bar.close()
        for fh in handles.values():
            fh.close()
    return model.eval()


# ---------------------------------------------------------------- writing
def state_dict_for_layout(state: Dict[str, torch.Tensor], args: ModelArgs, layout: str) -> Dict[str, torch.Tensor]:
    """Convert a state dict in this package's (Mistral) naming and layout to ``layout`` ('hf' or 'mistral')."""
    if layout == "mistral":
        return {k: v.contiguous() for k, v in state.items()}
    if layout != "hf":
        raise ValueError(f"layout must be 'hf' or 'mistral', got {layout!r}")
    out = {}
    for k, v in state.items():
        if _is_q_or_k(k):
            v = mistral_to_hf_qk(v, args.n_heads if k.endswith("wq.weight") else args.n_kv_heads)
        out[mistral_to_hf_name(k)] = v.contiguous()
    return out


def save_checkpoint(model: Transformer, path: str | Path, layout: str = "mistral",
                    dtype: Optional[torch.dtype] = None, max_shard_bytes: Optional[int] = None) -> Path:
    """Write ``model`` as a checkpoint directory in ``layout`` ('mistral' or 'hf', optionally sharded)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: (v.to(dtype) if dtype else v).detach().cpu() for k, v in model.state_dict().items()}
    tensors = state_dict_for_layout(state, model.args, layout)
    if layout == "mistral":
        (path / "params.json").write_text(json.dumps(model.args.to_params_json(), indent=2))
        save_file(tensors, str(path / "consolidated.safetensors"))
        return path
    config = model.args.to_hf_config()
    config["torch_dtype"] = str(next(iter(tensors.values())).dtype).replace("torch.", "")
    (path / "config.json").write_text(json.dumps(config, indent=2))
    if not max_shard_bytes:
        save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
        return path
    shards, current, size = [], {}, 0
    for k, v in tensors.items():
        nbytes = v.numel() * v.element_size()
        if current and size + nbytes > max_shard_bytes:
            shards.append(current)
            current, size = {}, 0
        current[k] = v
        size += nbytes
    shards.append(current)
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(path / fname), metadata={"format": "pt"})
        weight_map.update({k: fname for k in shard})
    total = sum(v.numel() * v.element_size() for v in tensors.values())
    (path / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    return path


def convert_checkpoint(src: str | Path, dst: str | Path, layout: str) -> Path:
    """Rewrite checkpoint ``src`` (either layout) in ``layout`` at ``dst``, tensor by tensor on the CPU."""
    from safetensors.torch import save_file

    src_layout, args, _ = plan_checkpoint(src)
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    tensors = state_dict_for_layout(dict(iter_checkpoint(src)), args, layout)
    if layout == "mistral":
        (dst / "params.json").write_text(json.dumps(args.to_params_json(), indent=2))
        save_file(tensors, str(dst / "consolidated.safetensors"))
    else:
        (dst / "config.json").write_text(json.dumps(args.to_hf_config(), indent=2))
        save_file(tensors, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst
