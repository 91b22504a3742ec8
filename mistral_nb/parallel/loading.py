"""Filling one rank's share: from a model in memory (``shard_model``) or from a checkpoint directory,
reading only the rank's rows or columns of every tensor (``load_tensor_parallel``).

Both go through the same ``fill_rank``: the partition says which piece of each tensor the rank keeps,
and ``checkpoint.loading.set_tensor`` puts it into the meta model — so a rank's model can hold its
linear weights in any format the single-process loader knows (float, int8, packed for the CPU).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional, Tuple

import torch

from ..checkpoint.files import open_regular_file
from ..checkpoint.loading import (check_finite, check_load_options, first_non_finite, plan_checkpoint,
                                  prepare_formats, set_tensor)
from ..checkpoint.names import is_q_or_k
from ..checkpoint.safetensors_file import CheckpointError, read_tensor
from ..config import ModelArgs
from ..model import Transformer
from ..rope import hf_to_mistral_qk
from .comm import Comm
from .layers import TensorParallelTransformer


def empty_rank_model(args: ModelArgs, comm: Comm) -> TensorParallelTransformer:
    """This rank's ``TensorParallelTransformer`` on the meta device (shapes, no storage)."""
    if not isinstance(args, ModelArgs):
        raise TypeError(f"expected the ModelArgs of the whole model, got {type(args).__name__}")
    if not isinstance(comm, Comm):
        raise TypeError(f"comm must be a Comm (the rank's ThreadComm, DistComm or SingleComm), got {type(comm).__name__}")
    with torch.device("meta"):
        return TensorParallelTransformer(args, comm)


def fill_rank(model: TensorParallelTransformer, pieces: Iterable[Tuple[str, torch.Tensor]],
              dtype: Optional[torch.dtype] = None) -> TensorParallelTransformer:
    """Assign every (name, the rank's piece of that tensor) to the meta ``model``; returns it in eval mode."""
    for name, piece in pieces:
        set_tensor(model, name, piece.contiguous(), dtype)
    return model.eval()


def shard_model(model: Transformer, comm: Comm) -> TensorParallelTransformer:
    """This rank's share of an in-memory float ``model`` (copies of its slices; same dtype and device).

    Convenient for small models; for real checkpoints use ``load_tensor_parallel``, which never
    holds more than the rank's share."""
    if not isinstance(model, Transformer) or isinstance(model, TensorParallelTransformer):
        raise TypeError(f"shard_model expects a whole Transformer, got {type(model).__name__}")
    tp = empty_rank_model(model.args, comm)
    part = tp.partition
    return fill_rank(tp, ((name, part.take(name, full, comm.rank).clone()) for name, full in model.state_dict().items()))


def load_tensor_parallel(path: str | Path, comm: Comm, device: str | torch.device = "cpu",
                         dtype: torch.dtype | str = torch.float32,
                         quantize: Optional[str] = None) -> TensorParallelTransformer:
    """This rank's share of a checkpoint directory (Hugging Face or Mistral layout), read piece by piece.

    The headers are checked as ``load_model`` checks them (``plan_checkpoint``); then, for every
    tensor, only the rows or columns this rank keeps are read from the file, checked for NaN/Inf,
    moved to ``device``, converted (Hugging Face q/k rows to Mistral's RoPE pairing, per head, on the
    piece; dtype, or int8 with ``quantize="int8"``) and assigned. A rank's memory is its share of the
    weights plus one piece. The bytes read from the files are recorded in ``model.bytes_read``.
    """
    dtype, device = check_load_options(device, dtype, quantize, pack=False)
    layout, args, plan = plan_checkpoint(path)
    model = prepare_formats(empty_rank_model(args, comm), quantize, pack=False)
    part = model.partition
    handles: dict = {}
    bytes_read = 0

    def pieces():
        nonlocal bytes_read
        for name, info in sorted(plan.items(), key=lambda item: (str(item[1].file), item[1].start)):
            if info.file not in handles:
                handles[info.file] = open_regular_file(info.file, "safetensors file", CheckpointError)
            sl = part.slice(name, comm.rank)
            t = read_tensor(info, handles[info.file], sl)
            bytes_read += t.numel() * t.element_size()
            check_finite(t, info, f" (the piece {sl} rank {comm.rank} reads)")
            t = t.to(device)
            if layout == "hf" and is_q_or_k(name):
                t = hf_to_mistral_qk(t, part.heads if name.endswith("wq.weight") else part.kv_heads)
            converted = t.to(dtype)
            if converted.dtype != t.dtype and first_non_finite(converted) is not None:
                raise CheckpointError(f"{info.file}: tensor {info.name!r} has values too large for {dtype} "
                                      f"(largest magnitude {t.abs().max().item():.4g}): load it in a wider dtype")
            yield name, t

    try:
        fill_rank(model, pieces(), dtype)
    finally:
        for fh in handles.values():
            fh.close()
    model.bytes_read = bytes_read
    return model
