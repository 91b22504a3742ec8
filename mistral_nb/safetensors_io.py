"""A small, strict reader for the safetensors format, one tensor at a time.

A .safetensors file is: 8 bytes (little-endian u64) = N, then N bytes of JSON header
``{name: {"dtype": "BF16", "shape": [..], "data_offsets": [start, end]}, "__metadata__": {...}}``,
then the raw bytes of every tensor. Reading it ourselves lets the loader check the whole header
before touching any data (so a bad file fails before anything is loaded) and copy each tensor
straight into its final buffer, so peak memory stays near the checkpoint's size.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
          "U8": torch.uint8, "BOOL": torch.bool}
MAX_HEADER_BYTES = 100_000_000


class CheckpointError(ValueError):
    """A checkpoint file or directory is missing, corrupt, or does not match the model's config."""


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives in a safetensors file."""
    file: Path
    name: str
    dtype: torch.dtype
    shape: tuple
    start: int      # absolute byte offset in the file
    nbytes: int


def read_header(path: str | Path) -> dict[str, TensorInfo]:
    """Parse and check a safetensors header. Returns {tensor name: TensorInfo}; reads no tensor data."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"safetensors file not found: {path}")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: not a safetensors file (only {size} bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER_BYTES or 8 + n > size:
            if head[:2] == b"PK" or head[:1] == b"\x80":
                raise CheckpointError(f"{path}: this is a PyTorch pickle/zip file, not safetensors; pickles can "
                                      "run code when loaded and are refused — convert it to safetensors")
            raise CheckpointError(f"{path}: not a safetensors file or truncated (header says {n} bytes, "
                                  f"file has {size})")
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{path}: corrupt safetensors header ({e})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header (not a JSON object)")
    data_start, data_size = 8 + n, size - 8 - n
    infos = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict) or "dtype" not in entry:
            raise CheckpointError(f"{path}: tensor {name!r} has a malformed header entry {entry!r}")
        if entry["dtype"] not in DTYPES:
            raise CheckpointError(f"{path}: tensor {name!r} has unsupported dtype {entry['dtype']!r}; "
                                  f"this reader knows {', '.join(DTYPES)}")
        try:
            dtype = DTYPES[entry["dtype"]]
            shape = tuple(int(d) for d in entry["shape"])
            start, end = (int(o) for o in entry["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: tensor {name!r} has a malformed header entry {entry!r}") from None
        if any(d < 0 for d in shape):
            raise CheckpointError(f"{path}: tensor {name!r} has a negative dimension in its shape {shape}")
        numel = 1
        for d in shape:
            numel *= d
        nbytes = numel * torch.empty((), dtype=dtype).element_size()
        if end - start != nbytes or start < 0:
            raise CheckpointError(f"{path}: tensor {name!r} of shape {shape} {entry['dtype']} needs {nbytes} "
                                  f"bytes but its offsets span {end - start}")
        if end > data_size:
            raise CheckpointError(f"{path}: truncated — tensor {name!r} ends at byte {end} of the data "
                                  f"section, which has only {data_size} bytes")
        infos[name] = TensorInfo(path, name, dtype, shape, data_start + start, nbytes)
    _check_layout(path, infos, data_start, data_size)
    return infos


def _check_layout(path: Path, infos: dict[str, TensorInfo], data_start: int, data_size: int) -> None:
    """The tensors must tile the data section exactly, as the format requires: no overlap, no gap."""
    pos = 0
    for info in sorted(infos.values(), key=lambda i: (i.start, i.nbytes)):
        start = info.start - data_start
        if start < pos:
            raise CheckpointError(f"{path}: corrupt — tensor {info.name!r} starts at byte {start} of the data "
                                  f"section, inside the previous tensor (which ends at {pos})")
        if start > pos:
            raise CheckpointError(f"{path}: corrupt — {start - pos} unclaimed bytes before tensor {info.name!r} "
                                  f"(data offsets must be contiguous)")
        pos = start + info.nbytes
    if pos != data_size:
        raise CheckpointError(f"{path}: corrupt — the header accounts for {pos} bytes of data but the file "
                              f"has {data_size} after the header")


def read_tensor(info: TensorInfo, handle=None) -> torch.Tensor:
    """Read one tensor into a fresh CPU tensor (one copy, no memory map kept alive)."""
    out = torch.empty(info.shape, dtype=info.dtype)
    if info.nbytes == 0:
        return out
    own = handle is None
    f = open(info.file, "rb") if own else handle
    try:
        f.seek(info.start)
        got = f.readinto(memoryview(out.view(-1).view(torch.uint8).numpy()))
    finally:
        if own:
            f.close()
    if got != info.nbytes:
        del out   # free the partial buffer now: a traceback would otherwise keep it alive
        raise CheckpointError(f"{info.file}: truncated while reading tensor {info.name!r} "
                              f"({got} of {info.nbytes} bytes; did the file change after its header was read?)")
    return out
