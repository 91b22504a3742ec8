"""A small, strict reader for the safetensors format, one tensor at a time.

A .safetensors file is: 8 bytes (little-endian u64) = N, then N bytes of JSON header
``{name: {"dtype": "BF16", "shape": [..], "data_offsets": [start, end]}, "__metadata__": {...}}``,
then the raw bytes of every tensor. Reading it ourselves lets the loader check the whole header
before touching any data (so a bad file fails before anything is loaded) and copy each tensor
straight into its final buffer, so peak memory stays near the checkpoint's size.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import torch

from .files import open_regular_file, parse_json

DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
          "U8": torch.uint8, "BOOL": torch.bool}
# Bounds on what a header may ask of the reader. Mistral 7B's header is 26 KB for 291 tensors; the
# safetensors format itself allows 100 MB, which takes seconds and about a gigabyte to parse.
MAX_HEADER_BYTES = 16_000_000
MAX_TENSORS = 100_000


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


def _is_int(x) -> bool:
    """A JSON integer: not a float such as 32.9 or 1e3, not a bool, not a string."""
    return type(x) is int


def read_header(path: str | Path) -> dict[str, TensorInfo]:
    """Parse and check a safetensors header. Returns {tensor name: TensorInfo}; reads no tensor data.

    Every defect raises CheckpointError naming the file (and the tensor): a path that is not a
    regular file, a header over MAX_HEADER_BYTES or with over MAX_TENSORS entries, invalid or
    ambiguous JSON (a key given twice), an entry whose dtype, shape or offsets are not exactly what
    the format prescribes, and data that does not tile the rest of the file.
    """
    path = Path(path)
    with open_regular_file(path, "safetensors file", CheckpointError) as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: not a safetensors file (only {size} bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER_BYTES or 8 + n > size:
            if head[:2] == b"PK" or head[:1] == b"\x80":
                raise CheckpointError(f"{path}: this is a PyTorch pickle/zip file, not safetensors; pickles can "
                                      "run code when loaded and are refused — convert it to safetensors")
            if 8 + n > size:
                raise CheckpointError(f"{path}: not a safetensors file or truncated (header says {n} bytes, "
                                      f"file has {size})")
            raise CheckpointError(f"{path}: the header is {n:,} bytes, more than the {MAX_HEADER_BYTES:,} this "
                                  "reader accepts")
        raw = f.read(n)
    header = parse_json(raw, path, CheckpointError, "corrupt safetensors header")
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header (not a JSON object)")
    if len(header) > MAX_TENSORS + 1:
        raise CheckpointError(f"{path}: the header lists {len(header):,} entries, more than the {MAX_TENSORS:,} "
                              "tensors this reader accepts in one file")
    if not isinstance(header.get("__metadata__", {}), dict):
        raise CheckpointError(f"{path}: corrupt safetensors header (__metadata__ is not a JSON object)")
    data_start, data_size = 8 + n, size - 8 - n
    infos = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        infos[name] = _tensor_info(path, name, entry, data_start, data_size)
    _check_layout(path, infos, data_start, data_size)
    return infos


def _tensor_info(path: Path, name: str, entry, data_start: int, data_size: int) -> TensorInfo:
    """Check one header entry {"dtype": str, "shape": [int >= 0, ...], "data_offsets": [start, end]}."""
    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"{path}: tensor {name!r} has a malformed header entry: {what}")

    if not isinstance(entry, dict):
        raise bad(f"expected a JSON object, got {entry!r:.80}")
    for key in ("dtype", "shape", "data_offsets"):
        if key not in entry:
            raise bad(f"no {key!r} field")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str):
        raise bad(f"dtype must be a string such as 'BF16', got {dtype!r:.80}")
    if dtype not in DTYPES:
        raise CheckpointError(f"{path}: tensor {name!r} has unsupported dtype {dtype!r}; "
                              f"this reader knows {', '.join(DTYPES)}")
    if not isinstance(shape, list) or not all(_is_int(d) for d in shape):
        raise bad(f"shape must be a list of integers, got {shape!r:.80}")
    if any(d < 0 for d in shape):
        raise CheckpointError(f"{path}: tensor {name!r} has a negative dimension in its shape {tuple(shape)}")
    if any(d >= 2 ** 63 for d in shape):      # even with a 0 beside it (no bytes), no tensor can have it
        raise CheckpointError(f"{path}: tensor {name!r} has a dimension of 2**63 or more in its shape "
                              f"{tuple(shape)}: no tensor can be that long")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_int(o) for o in offsets):
        raise bad(f"data_offsets must be a list of two integers [start, end], got {offsets!r:.80}")
    start, end = offsets
    if start < 0 or end < start:
        raise bad(f"data_offsets {offsets} must satisfy 0 <= start <= end")
    numel = 1
    for d in shape:
        numel *= d
    nbytes = numel * torch.empty((), dtype=DTYPES[dtype]).element_size()
    if end - start != nbytes:
        raise CheckpointError(f"{path}: tensor {name!r} of shape {tuple(shape)} {dtype} needs {nbytes} "
                              f"bytes but its offsets span {end - start}")
    if end > data_size:
        raise CheckpointError(f"{path}: truncated — tensor {name!r} ends at byte {end} of the data "
                              f"section, which has only {data_size} bytes")
    return TensorInfo(path, name, DTYPES[dtype], tuple(shape), data_start + start, nbytes)


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


def read_tensor(info: TensorInfo, handle=None, piece: Optional[Tuple[int, int, int]] = None) -> torch.Tensor:
    """Read one tensor, or one piece of it, into a fresh CPU tensor (one copy, no memory map kept alive).

    ``piece`` = (dim, start, stop): only rows (dim 0) or columns (dim 1) [start, stop) of a 1-D or 2-D
    tensor — what a tensor-parallel rank keeps. Rows are one contiguous byte range; columns are one
    short range per row. Exactly the piece's bytes are read.
    """
    shape, offset, stride, count = _piece_layout(info, piece)
    out = torch.empty(shape, dtype=info.dtype)
    if out.numel() == 0:
        return out
    own = handle is None
    f = open_regular_file(info.file, "safetensors file", CheckpointError) if own else handle
    buf, got = memoryview(out.view(-1).view(torch.uint8).numpy()), 0
    want = len(buf)
    run = want // count                            # bytes of one contiguous run
    try:
        for i in range(count):
            f.seek(offset + i * stride)
            got += f.readinto(buf[i * run:(i + 1) * run])
    finally:
        if own:
            f.close()
    if got != want:
        del out, buf   # free the partial buffer now: a traceback would otherwise keep it alive
        what = f"tensor {info.name!r}" + ("" if piece is None else f" (piece {piece})")
        raise CheckpointError(f"{info.file}: truncated while reading {what} ({got} of {want} bytes; "
                              "did the file change after its header was read?)")
    return out


def _piece_layout(info: TensorInfo, piece) -> tuple[list, int, int, int]:
    """(shape of the piece, file offset of its first byte, bytes between runs, number of runs)."""
    if piece is None:
        return list(info.shape), info.start, 0, 1
    dim, start, stop = piece
    shape = list(info.shape)
    if len(shape) not in (1, 2) or dim not in range(len(shape)) or not 0 <= start <= stop <= shape[dim]:
        raise CheckpointError(f"{info.file}: cannot take piece {piece} of tensor {info.name!r} of shape {info.shape}")
    el = torch.empty((), dtype=info.dtype).element_size()
    row_bytes = el * (shape[1] if len(shape) == 2 else 1)
    shape[dim] = stop - start
    if dim == 0:
        return shape, info.start + start * row_bytes, 0, 1
    return shape, info.start + start * el, row_bytes, shape[0]
