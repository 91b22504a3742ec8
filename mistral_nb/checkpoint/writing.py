"""Writing: ``save_checkpoint`` and ``convert_checkpoint``, each replacing its target atomically.

Every file is first written into a temporary directory next to the target (same filesystem), then
moved into place. A new target directory appears in one rename. Into an existing directory the files
move one by one, config files out first and in last, and the files of any older checkpoint there
(the other layout, a stale index, shards of another count) are removed on the way: the directory
is the old checkpoint, then briefly none (no config), then the new one — never a mix that loads.
A failure while writing (a full disk, a bad argument) leaves the target as it was.

Layers in another weight format (``speed.formats``) are saved as the float matrix they multiply by:
int8 weights *dequantized* (weight = q * scale, in the scales' dtype or ``dtype``), packed bf16
weights unpacked. The result is a standard checkpoint that loads here and in transformers; loading
it again with ``quantize="int8"`` gives back the same int8 weights.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import stat
from pathlib import Path
from typing import Callable, Dict, Optional

import torch

from ..config import ModelArgs
from ..speed.formats import LinearFormat
from .files import as_path, describe_kind
from .layout import HF_CONFIG, HF_INDEX, HF_WEIGHTS, MISTRAL_CONFIG, MISTRAL_WEIGHTS, checkpoint_files_in
from .loading import iter_checkpoint, plan_checkpoint, resolve_dtype
from .names import check_layout, expected_shapes, state_dict_for_layout


def _model_state(model, dtype: Optional[torch.dtype]) -> Dict[str, torch.Tensor]:
    """The model's tensors by internal name, on the CPU, in ``dtype``; other weight formats as float matrices."""
    args = getattr(model, "args", None)
    if not isinstance(args, ModelArgs) or not hasattr(model, "state_dict"):
        raise TypeError(f"save_checkpoint expects a Transformer, got {type(model).__name__}")
    expected = expected_shapes(args)
    formats = {name: m for name, m in model.named_modules() if isinstance(m, LinearFormat)}
    state = {}
    float_weights = {f"{module}.weight": layer for module, layer in formats.items()}
    plain = [(n, t) for n, t in model.state_dict().items() if n.rpartition(".")[0] not in formats]
    for name, t in plain + list(float_weights.items()):      # a format's own tensors (int8 scales, int4
        if name in float_weights:                            # nibbles) become the one float matrix
            t = t.float_weight(dtype)
        elif dtype is not None:
            t = t.to(dtype)
        if t.is_meta:
            raise ValueError(f"tensor {name!r} is on the meta device (an empty model): load or initialise the "
                             "weights before saving")
        if name not in expected or tuple(t.shape) != expected[name]:
            raise ValueError(f"tensor {name!r} of shape {tuple(t.shape)} does not fit model.args (which "
                             f"gives {expected.get(name, 'no such tensor')})")
        state[name] = t.detach().cpu()
    return state


def _write_files(directory: Path, tensors: Dict[str, torch.Tensor], args: ModelArgs, layout: str,
                 max_shard_bytes: Optional[int] = None, config_extra: Optional[dict] = None) -> list:
    """Write a checkpoint into ``directory`` (empty); return the file names, weights first, config last."""
    from safetensors.torch import save_file

    if layout == "mistral":
        save_file(tensors, str(directory / MISTRAL_WEIGHTS))
        (directory / MISTRAL_CONFIG).write_text(json.dumps(args.to_params_json(), indent=2))
        return [MISTRAL_WEIGHTS, MISTRAL_CONFIG]
    names = []
    if not max_shard_bytes:
        save_file(tensors, str(directory / HF_WEIGHTS), metadata={"format": "pt"})
        names.append(HF_WEIGHTS)
    else:
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
            save_file(shard, str(directory / fname), metadata={"format": "pt"})
            weight_map.update({k: fname for k in shard})
            names.append(fname)
        total = sum(v.numel() * v.element_size() for v in tensors.values())
        (directory / HF_INDEX).write_text(
            json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
        names.append(HF_INDEX)
    config = {**args.to_hf_config(), **(config_extra or {})}
    (directory / HF_CONFIG).write_text(json.dumps(config, indent=2))
    return names + [HF_CONFIG]


def _check_target(path: Path) -> None:
    """Refuse, before writing anything, a target that is a file or holds a checkpoint name that is no file."""
    if path.exists() and not path.is_dir():
        raise ValueError(f"cannot write a checkpoint to {path}: it exists and is not a directory")
    if path.is_dir():
        for name, mode in checkpoint_files_in(path).items():
            if not stat.S_ISREG(mode):
                raise ValueError(f"cannot replace {path / name}: it is not a regular file "
                                 f"(it is {describe_kind(mode)})")


def _publish(staged: Path, path: Path, names: list) -> None:
    """Move the files ``names`` (config last) from ``staged`` into ``path``, replacing any older checkpoint."""
    if not path.exists():
        os.rename(staged, path)                        # a new directory appears complete, in one step
        return
    old = checkpoint_files_in(path)
    configs = (HF_CONFIG, MISTRAL_CONFIG)
    for name in [n for n in configs if n in old] + [n for n in old if n not in configs and n not in names]:
        (path / name).unlink()                         # configs first: the directory stops being loadable
    for name in names:                                  # weights, then index, then config: loadable again
        os.replace(staged / name, path / name)


def _new_directory(parent: Path, prefix: str, suffix: str) -> Path:
    """A fresh directory in ``parent``, with the permissions the umask gives (mkdtemp's are 0o700)."""
    for _ in range(100):
        candidate = parent / f"{prefix}{secrets.token_hex(4)}{suffix}"
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary directory in {parent}")


def _write_atomically(path: Path, write: Callable[[Path], list]) -> Path:
    """Run ``write(temporary directory)`` next to ``path``, then publish what it wrote at ``path``."""
    _check_target(path)
    parent = (path.resolve() if path.exists() else path).parent       # same filesystem as the target
    parent.mkdir(parents=True, exist_ok=True)
    staged = _new_directory(parent, f".{path.name}.", ".partial")
    try:
        _publish(staged, path, write(staged))
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return path


def save_checkpoint(model, path: str | Path, layout: str = "mistral", dtype: Optional[torch.dtype] = None,
                    max_shard_bytes: Optional[int] = None, quant: Optional[str] = None) -> Path:
    """Write ``model`` as a checkpoint directory in ``layout`` ('mistral' or 'hf', optionally sharded),
    or, with ``layout='gguf'``, as the GGUF file ``path`` for llama.cpp (``quant``: 'F32', 'F16'
    (default), 'BF16', 'Q8_0', 'Q4_0'; see ``checkpoint/gguf.py``, whose ``save_gguf`` has more options).

    ``dtype``: convert on the way (default: as the model holds them). ``max_shard_bytes``: split the
    Hugging Face layout into shards of at most this size (one tensor may exceed it), with an index.
    Replaces any checkpoint already at ``path`` atomically (see the module docstring); an int8 or int4
    model is saved dequantized. Raises ValueError / TypeError for bad arguments before anything is written.
    """
    if layout == "gguf":
        from .gguf import save_gguf

        if dtype is not None or max_shard_bytes is not None:
            raise ValueError("layout='gguf' takes quant=..., not dtype or max_shard_bytes")
        return save_gguf(model, path, quant=quant or "F16")
    if quant is not None:
        raise ValueError(f"quant applies to layout='gguf' only (got layout={layout!r}, quant={quant!r})")
    if not isinstance(layout, str) or layout not in ("hf", "mistral"):
        raise ValueError(f"layout must be 'hf', 'mistral' or 'gguf', got {layout!r}")
    dtype = resolve_dtype(dtype) if dtype is not None else None
    if max_shard_bytes is not None:
        if isinstance(max_shard_bytes, bool) or not isinstance(max_shard_bytes, int) or max_shard_bytes <= 0:
            raise ValueError(f"max_shard_bytes must be a positive int or None, got {max_shard_bytes!r}")
        if layout != "hf":
            raise ValueError("max_shard_bytes applies to the Hugging Face layout (layout='hf'); Mistral's layout "
                             "is one consolidated.safetensors")
    path = as_path(path, "save_checkpoint: path")
    _check_target(path)
    tensors = state_dict_for_layout(_model_state(model, dtype), model.args, layout)
    extra = {"torch_dtype": str(next(iter(tensors.values())).dtype).removeprefix("torch.")} if layout == "hf" else None
    return _write_atomically(path, lambda d: _write_files(d, tensors, model.args, layout, max_shard_bytes, extra))


def convert_checkpoint(src: str | Path, dst: str | Path, layout: str) -> Path:
    """Rewrite checkpoint ``src`` (either layout) in ``layout`` at ``dst``, tensor by tensor on the CPU.

    ``dst`` must be another directory than ``src`` (converting in place would leave both layouts side
    by side); it is replaced atomically like ``save_checkpoint``'s target.
    """
    layout = check_layout(layout)
    src, dst = Path(src), Path(dst)
    if src.exists() and dst.exists() and os.path.samefile(src, dst):
        raise ValueError(f"convert_checkpoint: src and dst are the same directory ({src}); write the converted "
                         "checkpoint to another directory (two layouts in one directory are refused when loading)")
    _check_target(dst)
    _, args, _ = plan_checkpoint(src)                  # headers only: a bad source fails before any read
    tensors = state_dict_for_layout(dict(iter_checkpoint(src)), args, layout)
    return _write_atomically(dst, lambda d: _write_files(d, tensors, args, layout))
