"""Which files form a checkpoint: detect the layout, refuse ambiguous directories, find the shards.

    Hugging Face: config.json + model.safetensors
                  config.json + model.safetensors.index.json + model-0000i-of-0000n.safetensors
    Mistral:      params.json + consolidated.safetensors

A directory holding two complete checkpoints (both layouts, or an unsharded ``model.safetensors``
next to a sharded index) is refused with the conflicting files named: loading one of them silently
is how stale weights get used. Only regular files are read (symlinks are followed: a Hugging Face
snapshot links into its blob store); a name that is a directory, FIFO or device is reported as such.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Dict, Optional

from ..config import ModelArgs
from .files import MAX_JSON_BYTES, as_path, describe_kind, parse_json, read_regular_file
from .safetensors_file import CheckpointError
from .names import check_layout

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
HF_CONFIG, HF_WEIGHTS, HF_INDEX = "config.json", "model.safetensors", "model.safetensors.index.json"
MISTRAL_CONFIG, MISTRAL_WEIGHTS = "params.json", "consolidated.safetensors"
CHECKPOINT_FILES = (HF_CONFIG, HF_WEIGHTS, HF_INDEX, MISTRAL_CONFIG, MISTRAL_WEIGHTS)
SHARD_NAME = re.compile(r"model-\d+-of-\d+\.safetensors")
LAYOUT_NAMES = {"hf": "Hugging Face", "mistral": "Mistral"}


def checkpoint_files_in(path: Path) -> Dict[str, int]:
    """{name: st_mode} of the files in ``path`` that belong to a checkpoint of either layout (shards too)."""
    found = {}
    for entry in os.scandir(path):
        if entry.name in CHECKPOINT_FILES or SHARD_NAME.fullmatch(entry.name):
            try:
                found[entry.name] = os.stat(entry.path).st_mode          # follows symlinks
            except OSError as e:
                raise CheckpointError(f"{entry.path}: cannot be read ({e.strerror or e}; a broken symlink?)") from None
    return found


def _present(path: Path) -> set:
    """The checkpoint file names present in ``path``, each checked to be a regular file."""
    found = checkpoint_files_in(path)
    for name, mode in found.items():
        if not stat.S_ISREG(mode):
            raise CheckpointError(f"{path / name}: not a regular file (it is {describe_kind(mode)})")
    return set(found)


def _layout_files(present: set, layout: str) -> list:
    if layout == "mistral":
        return [n for n in (MISTRAL_CONFIG, MISTRAL_WEIGHTS) if n in present]
    return [n for n in (HF_CONFIG, HF_WEIGHTS, HF_INDEX) if n in present]


def detect_layout(path: str | Path, layout: Optional[str] = None) -> str:
    """'hf' or 'mistral' for a checkpoint directory; a clear error for anything else.

    ``layout``: None to detect; 'hf' or 'mistral' to choose one of two checkpoints in one directory.
    """
    path = as_path(path, "checkpoint path")
    if layout is not None:
        check_layout(layout)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint path does not exist: {path}")
    if path.is_file() and path.name.endswith(PICKLE_SUFFIXES):
        raise CheckpointError(f"{path}: a pickle checkpoint; pickles can run arbitrary code when loaded and are "
                              "refused — use a directory with safetensors files")
    if not path.is_dir():
        raise CheckpointError(f"{path}: expected a checkpoint directory (config.json + model*.safetensors, "
                              "or params.json + consolidated.safetensors), got a file")
    present = _present(path)
    complete = {"hf": HF_CONFIG in present and (HF_WEIGHTS in present or HF_INDEX in present),
                "mistral": MISTRAL_CONFIG in present and MISTRAL_WEIGHTS in present}
    if layout is None and all(complete.values()):
        raise CheckpointError(
            f"{path}: holds two checkpoints, a Hugging Face one ({', '.join(_layout_files(present, 'hf'))}) and "
            f"a Mistral one ({', '.join(_layout_files(present, 'mistral'))}); loading either could pick stale "
            "weights — delete the one you do not want, or choose with layout='hf' or layout='mistral'")
    chosen = layout or next((k for k, v in complete.items() if v), None)
    if chosen is not None and complete[chosen]:
        if chosen == "hf" and HF_WEIGHTS in present and HF_INDEX in present:
            raise CheckpointError(
                f"{path}: holds both an unsharded {HF_WEIGHTS} and a sharded index {HF_INDEX}; one of them is "
                "left over from an older checkpoint — delete it")
        return chosen
    names = sorted(p.name for p in path.iterdir())
    pickles = [n for n in names if n.endswith(PICKLE_SUFFIXES)]
    if pickles and layout is None:
        raise CheckpointError(f"{path}: only pickle checkpoints found ({', '.join(pickles[:3])}); pickles can run "
                              "arbitrary code when loaded and are refused — use the safetensors files")
    if layout is not None:
        needs = ("config.json + model.safetensors (or model.safetensors.index.json + shards)" if layout == "hf"
                 else "params.json + consolidated.safetensors")
        raise CheckpointError(f"{path}: no {LAYOUT_NAMES[layout]} checkpoint here (it needs {needs}); found: "
                              f"{', '.join(names) or 'an empty directory'}")
    raise CheckpointError(
        f"{path}: neither layout found. Expected config.json + model.safetensors (or "
        f"model.safetensors.index.json + shards) [Hugging Face], or params.json + consolidated.safetensors "
        f"[Mistral]; found: {', '.join(names) or 'an empty directory'}")


def read_args(path: str | Path, layout: Optional[str] = None) -> ModelArgs:
    """The ModelArgs of a checkpoint directory in either layout."""
    path = as_path(path, "checkpoint path")
    layout = detect_layout(path, layout)
    if layout == "hf":
        return ModelArgs.from_hf_config(path / HF_CONFIG)
    return ModelArgs.from_params_json(path / MISTRAL_CONFIG)


def weight_files(path: Path, layout: str) -> list[Path]:
    """The safetensors files holding the weights, checking that a sharded index names real files."""
    return weight_files_and_map(Path(path), layout)[0]


def _read_index(index_file: Path) -> Dict[str, str]:
    """The weight_map {tensor name: shard file name} of a sharded index, strictly checked."""
    data = read_regular_file(index_file, MAX_JSON_BYTES, "safetensors index", CheckpointError)
    index = parse_json(data, index_file, CheckpointError, "not a valid safetensors index")
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(f"{index_file}: not a valid safetensors index (expected an object with a "
                              "'weight_map' from tensor names to shard file names)")
    if not weight_map:
        raise CheckpointError(f"{index_file}: the index's weight_map is empty")
    return weight_map


def weight_files_and_map(path: Path, layout: str) -> tuple[list[Path], Optional[Dict[str, str]]]:
    """(files, the index's weight_map {tensor name: shard file name} or None when not sharded)."""
    if layout == "mistral":
        return [path / MISTRAL_WEIGHTS], None
    index_file = path / HF_INDEX
    if not index_file.exists():
        return [path / HF_WEIGHTS], None
    weight_map = _read_index(index_file)
    shards = sorted(set(weight_map.values()))
    for shard in shards:
        if Path(shard).name != shard or shard in (".", ".."):
            raise CheckpointError(f"{index_file} names shard {shard!r}: expected a file name inside the "
                                  "checkpoint directory")
        if not (path / shard).exists():
            users = [n for n, s in weight_map.items() if s == shard]
            raise CheckpointError(f"{index_file} names shard {shard!r} (for {users[0]!r} and {len(users) - 1} "
                                  f"more tensors), but {path / shard} does not exist")
    return [path / s for s in shards], weight_map
