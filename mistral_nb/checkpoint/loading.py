"""Loading: check a checkpoint from its headers, then stream it tensor by tensor into a meta model.

``plan_checkpoint`` compares every tensor's name and shape with the config from the headers alone —
and before anything is built, so a 100-byte config claiming 10**7 layers is refused against the
checkpoint's real tensors instead of filling memory. ``load_model`` then builds the model on the meta
device (no memory), reads each tensor straight into its target device and dtype and assigns it — no
second copy of the model is ever made. Every tensor is checked for NaN/Inf as it arrives (in chunks,
so the check needs no copy of the tensor), and again after a conversion that could overflow (bfloat16
values beyond float16's range). With ``quantize="int8"`` (or an int4 mode) each linear weight is quantized
as soon as it arrives on the device, so the full-precision model never exists there either.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterator, Optional

import torch
from torch import nn

from ..config import ModelArgs
from ..model import Transformer
from ..rope import hf_to_mistral_qk
from ..speed.cpu_pack import PackedLinear, check_pack, pack_model
from ..speed.formats import LinearFormat
from ..speed.int4 import INT4_MODES, quantize_model_int4
from ..speed.int8 import quantize_model
from .files import as_path, open_regular_file
from .safetensors_file import CheckpointError, TensorInfo, read_header, read_tensor
from .layout import HF_INDEX, weight_files_and_map, detect_layout, read_args
from .names import (TENSORS_OUTSIDE_LAYERS, TENSORS_PER_LAYER, is_q_or_k, expected_shapes, hf_to_mistral_name,
                    mistral_to_hf_name, qk_heads)

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
DTYPE_NAMES = {"float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
               "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
               "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float64": torch.float64}
QUANTIZE_MODES = (None, "int8", *INT4_MODES)
FINITE_CHECK_ELEMENTS = 1 << 22     # elements per chunk of the NaN/Inf check (4 MB of temporaries)


def resolve_dtype(dtype) -> torch.dtype:
    """A floating-point torch dtype from a dtype or a name ('float16', 'bf16', ...); ValueError otherwise."""
    if isinstance(dtype, str):
        key = dtype.lower().removeprefix("torch.")
        if key in DTYPE_NAMES:
            return DTYPE_NAMES[key]
    elif isinstance(dtype, torch.dtype) and dtype in FLOAT_DTYPES:
        return dtype
    raise ValueError(f"unsupported dtype {dtype!r}: choose one of {', '.join(map(str, FLOAT_DTYPES))} "
                     f"(or a name: {', '.join(DTYPE_NAMES)})")


def resolve_device(device) -> torch.device:
    """A torch.device that exists on this machine; ValueError naming the device otherwise."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as e:
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
    elif dev.type != "cpu":          # mps, xpu, ...: ask the backend for an empty tensor
        try:
            torch.empty(0, device=dev)
        except Exception as e:      # NotImplementedError, AssertionError ("not compiled with"), RuntimeError
            reason = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
            raise ValueError(f"device {device!r} is not available on this machine ({reason})") from None
    return dev


# ---------------------------------------------------------------- the empty model
def empty_model(args: ModelArgs) -> Transformer:
    """``Transformer(args)`` on the meta device: every parameter has a shape and a dtype, no storage.

    (Building on meta is fast because ``Transformer`` skips the embedding's random init there.)"""
    with torch.device("meta"):
        return Transformer(args)


# ---------------------------------------------------------------- NaN / Inf
def first_non_finite(t: torch.Tensor) -> Optional[tuple]:
    """Index of the first NaN or ±Inf of a floating-point tensor, or None if every value is finite.

    One ``aminmax`` pass decides (NaN propagates to both ends, ±Inf shows at one): no temporary the
    size of the tensor, about as fast as reading it. Only when it finds something is the culprit
    located, ``FINITE_CHECK_ELEMENTS`` at a time (the boolean temporaries stay small)."""
    if not t.dtype.is_floating_point or t.numel() == 0:
        return None
    flat = t.reshape(-1)
    if bool(torch.isfinite(torch.stack(torch.aminmax(flat))).all()):
        return None
    for s in range(0, flat.numel(), FINITE_CHECK_ELEMENTS):
        bad = ~torch.isfinite(flat[s:s + FINITE_CHECK_ELEMENTS])
        if bool(bad.any()):
            i, index = s + int(bad.nonzero()[0]), []
            for size in reversed(t.shape):
                i, r = divmod(i, size)
                index.append(r)
            return tuple(reversed(index))
    return None


def check_finite(t: torch.Tensor, info: TensorInfo, piece: str = "") -> None:
    """CheckpointError naming the file and tensor (and ``piece``, a note on which part was read) if
    ``t`` (as read from the checkpoint) holds NaN/Inf."""
    where = first_non_finite(t)
    if where is not None:
        raise CheckpointError(f"{info.file}: tensor {info.name!r}{piece} holds {t[where].item()} at index {where}: "
                              "the checkpoint is corrupt (one non-finite weight turns every output into NaN)")


def _check_converted(model: nn.Module, name: str, info: TensorInfo, dtype: torch.dtype) -> None:
    """After converting to ``dtype``: values beyond its range became inf (e.g. bfloat16 -> float16).
    Checked only for conversions to a narrower range (never for bfloat16 -> float32, say)."""
    module_name, _, leaf = name.rpartition(".")
    module = model.get_submodule(module_name) if module_name else model
    if isinstance(module, PackedLinear) or torch.finfo(dtype).max >= torch.finfo(info.dtype).max:
        return                        # a wider range (packing checks its own conversion to bf16)
    placed = module.float_weight() if isinstance(module, LinearFormat) else module._parameters[leaf]
    if first_non_finite(placed) is None:
        return
    largest = read_tensor(info).abs().max().item()
    wider = [str(d).removeprefix("torch.") for d in (torch.bfloat16, torch.float32, torch.float64)
             if torch.finfo(d).max > largest]
    raise CheckpointError(f"{info.file}: tensor {info.name!r} has values too large for {dtype} (largest "
                          f"magnitude {largest:.4g}; {dtype} ends at {torch.finfo(dtype).max:.4g}), which would "
                          f"become inf — load it as {' or '.join(wider[:2])}")


# ---------------------------------------------------------------- planning (headers only)
def _skippable(layout: str, name: str) -> bool:
    return layout == "hf" and name.endswith("rotary_emb.inv_freq")   # a buffer old transformers saved


def plan_checkpoint(path: str | Path, args: Optional[ModelArgs] = None,
                    layout: Optional[str] = None) -> tuple[str, ModelArgs, Dict[str, TensorInfo]]:
    """Check a checkpoint against its config from the headers alone.

    Returns (layout, args, {internal name: TensorInfo}). Raises CheckpointError naming the file and
    tensor for a missing, unexpected or wrongly shaped tensor, before any weight is read and before
    any model is built. ``layout`` chooses between two checkpoints in one directory (see detect_layout).
    """
    path = as_path(path, "checkpoint path")
    layout = detect_layout(path, layout)
    args = args or read_args(path, layout)
    files, weight_map = weight_files_and_map(path, layout)
    headers = [(file, read_header(file)) for file in files]
    n_found = sum(not _skippable(layout, name) for _, header in headers for name in header)
    if args.n_layers > n_found:     # bound the config by the files before computing what it expects
        raise CheckpointError(f"{path}: the config asks for {args.n_layers} layers, but the checkpoint holds only "
                              f"{n_found} tensors ({TENSORS_PER_LAYER} per layer + {TENSORS_OUTSIDE_LAYERS} "
                              "are needed)")
    expected = expected_shapes(args)
    found: Dict[str, TensorInfo] = {}
    for file, header in headers:
        for name, info in header.items():
            if weight_map is not None and weight_map.get(name) != file.name:
                raise CheckpointError(f"{file}: holds tensor {name!r}, but {path / HF_INDEX} "
                                      f"puts it in {weight_map.get(name, 'no shard')!r}")
            internal = hf_to_mistral_name(name) if layout == "hf" else name
            if internal is None or internal not in expected:
                if _skippable(layout, name):
                    continue
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
            raise CheckpointError(f"{path / HF_INDEX}: tensor {absent[0]!r} is listed in "
                                  f"shard {weight_map[absent[0]]!r}, which does not contain it")
    missing = [k for k in expected if k not in found]
    if missing:
        shown = [mistral_to_hf_name(k) if layout == "hf" else k for k in missing]
        raise CheckpointError(f"{path}: checkpoint is missing {len(missing)} tensor(s) the config needs, "
                              f"e.g. {shown[:3]}")
    return layout, args, found


# ---------------------------------------------------------------- loading
def iter_checkpoint(path: str | Path, dtype: Optional[torch.dtype] = None,
                    layout: Optional[str] = None) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (internal name, tensor in Mistral layout) one at a time, on the CPU, each checked for NaN/Inf."""
    layout, args, plan = plan_checkpoint(path, layout=layout)
    for name, info in plan.items():
        t = read_tensor(info)
        check_finite(t, info)
        if dtype is not None:
            t = t.to(dtype)
        if layout == "hf" and is_q_or_k(name):
            t = hf_to_mistral_qk(t, qk_heads(name, args))
        yield name, t


def set_tensor(model: nn.Module, name: str, value: torch.Tensor, dtype: Optional[torch.dtype] = None) -> None:
    """Put ``value`` into the (meta) model under ``name``: a frozen parameter, or into the weight format
    of a ``LinearFormat`` layer (quantized to int8, packed for the CPU, ...) from the checkpoint's precision."""
    module_name, _, leaf = name.rpartition(".")
    module = model.get_submodule(module_name) if module_name else model
    if isinstance(module, LinearFormat) and leaf == "weight":
        module.set_weight(value, dtype if not isinstance(module, PackedLinear) else None)
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


def _check_complete(model: nn.Module, path) -> None:
    """A guard against half-loaded models (plan_checkpoint already makes it impossible)."""
    still_meta = [n for n, x in list(model.named_parameters()) + list(model.named_buffers()) if x.is_meta]
    if still_meta:
        raise CheckpointError(f"{path}: parameters left unloaded: {still_meta[:3]}")


def check_load_options(device, dtype, quantize, pack) -> tuple[torch.dtype, torch.device]:
    """Validate ``load_model``'s options before any file is read: (dtype, device), or a clear error."""
    dtype = resolve_dtype(dtype)
    if quantize not in QUANTIZE_MODES:
        raise ValueError(f"quantize must be one of {QUANTIZE_MODES}, got {quantize!r}")
    device = resolve_device(device)
    if not isinstance(pack, bool):
        raise TypeError(f"pack must be True or False, got {pack!r}")
    if pack:
        check_pack(device, dtype, quantize)
    return dtype, device


def prepare_formats(model: nn.Module, quantize: Optional[str], pack: bool) -> nn.Module:
    """Give the (meta) model the linear layers the weights will be loaded into: int8, int4, packed or float."""
    if quantize == "int8":
        quantize_model(model)
    elif quantize in INT4_MODES:
        quantize_model_int4(model, *INT4_MODES[quantize])
    if pack:
        pack_model(model)
    return model


def load_model(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | str = torch.float32,
               progress: Optional[bool] = None, quantize: Optional[str] = None,
               layout: Optional[str] = None, pack: bool = False) -> Transformer:
    """Load a checkpoint directory (Hugging Face or Mistral layout) into a ``Transformer``.

    The model is built on the meta device, every tensor name and shape is checked from the headers,
    then each tensor is read, moved to ``device``, checked for NaN/Inf, converted (dtype, q/k RoPE
    layout) and assigned, one at a time: peak memory is the model plus one tensor.
    ``dtype``: float32 / float16 / bfloat16 / float64 (or their names).
    ``quantize``: None, or ``"int8"`` to store the blocks' linear weights as int8 with one scale per
    output channel (see ``speed/int8.py``), or ``"int4"``, ``"int4_zp"``, ``"int4_g128"``, ``"int4_g128_zp"``
    for group-wise int4 (groups of 32 or 128, symmetric or with zero points: ``speed/int4.py``); each
    weight is quantized on ``device`` as soon as it arrives.
    ``progress``: tqdm bar per tensor, showing the shard being read (default: checkpoints over 1 GB).
    ``layout``: None (detect), or 'hf' / 'mistral' to choose when a directory holds both.
    ``pack``: on a CPU in bfloat16, store every linear weight packed for oneDNN's matrix kernel
    (``speed/cpu_pack.py``: faster decoding).
    Raises FileNotFoundError / CheckpointError / ConfigError / ValueError with the file, tensor, field or
    value named; on any error no model is returned and the tensors already loaded are released.
    """
    dtype, device = check_load_options(device, dtype, quantize, pack)
    layout, args, plan = plan_checkpoint(path, layout=layout)
    model = prepare_formats(empty_model(args), quantize, pack)
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
                handles[info.file] = open_regular_file(info.file, "safetensors file", CheckpointError)
                bar.set_postfix_str(f"shard {len(handles)}/{n_files}: {info.file.name}", refresh=False)
            t = read_tensor(info, handles[info.file])       # CPU, checkpoint dtype: one tensor at a time
            t = t.to(device)                                # then the copy on the target device
            check_finite(t, info)                           # NaN/Inf in the file, named
            if layout == "hf" and is_q_or_k(name):
                t = hf_to_mistral_qk(t, qk_heads(name, args))
            set_tensor(model, name, t, dtype)               # converted to dtype (or int8) where it lies
            t = None
            _check_converted(model, name, info, dtype)      # e.g. bfloat16 beyond float16's range
            bar.update(info.nbytes)
        _check_complete(model, path)
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
