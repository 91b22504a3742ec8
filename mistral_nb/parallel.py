"""Tensor parallelism: one Mistral split across n processes (Megatron-style), over torch.distributed.

Every rank holds a slice of every block and all ranks work on every token together
(Shoeybi et al. 2019). With n ranks, rank r keeps (weights are stored (out, in), as nn.Linear does):

    wq, wk, wv  the rows of its query heads / key-value heads    "column-parallel": no communication
    wo          the matching columns                             "row-parallel":  partial sums -> all-reduce
    w1, w3      rows [r F/n, (r+1) F/n) of the hidden features   column-parallel
    w2          the matching columns                             row-parallel:    all-reduce
    tok_embeddings  rows [r V/n, (r+1) V/n) of the vocabulary    looks up its own ids, zeros -> all-reduce
    output      the same rows of the output head                 its V/n logits -> all-gather
    norms       replicated (4,096 numbers each)

so each block costs two all-reduces of the (B, S, dim) activations, and the forward pass one more
for the embedding and one all-gather of the logits. Everything between the cuts is local: a rank
computes attention for its own heads from its own slice of the rolling cache.

Grouped-query attention caps the degree: K key/value heads can be divided among at most K ranks.
Beyond that (n a multiple of K) each key/value head is *replicated* on n/K ranks — each of them
holds the same wk/wv rows and caches the same keys, for its own query heads — as vLLM does; the
weights and the cache then stop shrinking for those matrices. Degrees that do not divide the heads
(or the hidden width, or the vocabulary) are refused with an error that names the number.

The collectives are written out (``Comm.all_reduce`` in ``RowParallelLinear``), so the book can show
where they sit and count the bytes; ``parallelize_with_dtensor`` expresses the same partition with
PyTorch's own tensor-parallel API (DTensor, ``parallelize_module``), and the tests check that both
compute the same logits with the same collectives.

Running it: ``launch(fn, n)`` starts n CPU processes over gloo (or, where processes cannot be
started, runs the ranks as threads of this process); ``python -m mistral_nb.parallel`` is the
``torchrun`` entry point for GPUs (NCCL). ``load_tensor_parallel`` reads only the rank's slices from
the safetensors files of either layout.
"""

from __future__ import annotations

import argparse
import math
import os
import pickle
import shutil
import tempfile
import threading
import time
import traceback
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .cache import kv_cache_bytes
from .config import ModelArgs
from .model import Transformer
from .rope import hf_to_mistral_qk
from .safetensors_io import CheckpointError, TensorInfo
from .weights import _is_q_or_k, empty_model, first_non_finite, plan_checkpoint, resolve_device, resolve_dtype

__all__ = ["Partition", "check_degree", "valid_degrees", "Comm", "SingleComm", "DistComm", "ThreadComm", "RowParallelLinear",
           "VocabParallelEmbedding", "ParallelOutput", "TensorParallelTransformer", "shard_model",
           "load_tensor_parallel", "read_slice", "dtensor_plan", "parallelize_with_dtensor",
           "count_collectives", "launch", "run_all", "check_parity", "comm_bytes_per_token", "ring_all_reduce_bytes",
           "rank_parameter_bytes", "rank_kv_cache_bytes", "rank_weights_read_per_token", "memory_per_rank",
           "paged_block_table", "paged_kv_tokens", "param_shapes", "random_model", "main"]


# ================================================================ the partition
def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _degree_problem(args: ModelArgs, world: int) -> Optional[str]:
    """Why ``world`` ranks cannot share a model of ``args`` (None when they can)."""
    H, K = args.n_heads, args.n_kv_heads
    if world > H:
        return (f"tensor-parallel degree {world} > n_heads {H}: a rank must hold at least one whole query "
                "head (a head's softmax cannot be split)")
    if H % world:
        return (f"tensor-parallel degree {world} does not divide n_heads {H}: every rank must hold the same "
                "number of whole query heads")
    if world <= K and K % world:
        return (f"tensor-parallel degree {world} does not divide n_kv_heads {K}: every rank must hold the same "
                "number of whole key/value heads")
    if world > K and world % K:
        return (f"tensor-parallel degree {world} > n_kv_heads {K} must be a multiple of {K}, so that every "
                "key/value head is replicated on the same number of ranks")
    for field, what in (("hidden_dim", "feed-forward"), ("vocab_size", "embedding and output")):
        value = getattr(args, field)
        if value % world:
            return (f"tensor-parallel degree {world} does not divide {field} {value}: the {what} rows are "
                    "split evenly among the ranks")
    return None


def valid_degrees(args: ModelArgs) -> list[int]:
    """Every tensor-parallel degree a model of ``args`` can be split into (beyond n_kv_heads: replicated
    key/value heads)."""
    return [d for d in range(1, args.n_heads + 1) if _degree_problem(args, d) is None]


def check_degree(args: ModelArgs, world: int) -> None:
    """Raise ValueError, naming the field and the degrees that would work, unless ``world`` ranks can
    share ``args``: whole query heads per rank, whole (or replicated) key/value heads, and an even
    split of the hidden width and the vocabulary."""
    if isinstance(world, bool) or not isinstance(world, int) or world < 1:
        raise ValueError(f"tensor-parallel degree must be an int >= 1, got {world!r}")
    problem = _degree_problem(args, world)
    if problem:
        raise ValueError(f"{problem}; possible degrees for this model: {valid_degrees(args)}")


@dataclass(frozen=True)
class Partition:
    """How ``world`` ranks share a model of ``args``: who keeps which rows or columns of each tensor."""

    args: ModelArgs
    world: int

    def __post_init__(self):
        check_degree(self.args, self.world)

    @property
    def heads(self) -> int:
        """Query heads per rank."""
        return self.args.n_heads // self.world

    @property
    def kv_replicas(self) -> int:
        """On how many ranks each key/value head lives: 1 up to n_kv_heads ranks, then world / n_kv_heads."""
        return max(1, self.world // self.args.n_kv_heads)

    @property
    def kv_heads(self) -> int:
        """Key/value heads per rank (1 once they are replicated)."""
        return max(1, self.args.n_kv_heads // self.world)

    @property
    def hidden(self) -> int:
        """Feed-forward hidden features per rank."""
        return self.args.hidden_dim // self.world

    @property
    def vocab(self) -> int:
        """Vocabulary rows (of the embedding and of the output head) per rank."""
        return self.args.vocab_size // self.world

    def local_args(self) -> ModelArgs:
        """The shapes one rank computes with: its heads, key/value heads and hidden width (the vocabulary
        stays whole: token ids are checked against all of it)."""
        return self.args.replace(n_heads=self.heads, n_kv_heads=self.kv_heads, hidden_dim=self.hidden)

    def kv_group(self, rank: int) -> int:
        """Which block of ``kv_heads`` key/value heads rank ``rank`` holds."""
        return rank // self.kv_replicas

    def slice(self, name: str, rank: int) -> Optional[Tuple[int, int, int]]:
        """(dim, start, stop) of tensor ``name`` that rank ``rank`` keeps; None = the whole tensor (norms)."""
        if not 0 <= rank < self.world:
            raise ValueError(f"rank {rank} is outside [0, {self.world})")
        hd = self.args.head_dim
        if name in ("tok_embeddings.weight", "output.weight"):
            return 0, rank * self.vocab, (rank + 1) * self.vocab
        if name.endswith("norm.weight"):
            return None
        leaf = name.split(".")[-2]                # layers.3.attention.wq.weight -> wq
        rows_q = (rank * self.heads * hd, (rank + 1) * self.heads * hd)
        g = self.kv_group(rank)
        rows_kv = (g * self.kv_heads * hd, (g + 1) * self.kv_heads * hd)
        rows_f = (rank * self.hidden, (rank + 1) * self.hidden)
        table = {"wq": (0, *rows_q), "wk": (0, *rows_kv), "wv": (0, *rows_kv), "wo": (1, *rows_q),
                 "w1": (0, *rows_f), "w3": (0, *rows_f), "w2": (1, *rows_f)}
        if leaf not in table:
            raise KeyError(f"no tensor-parallel rule for parameter {name!r}")
        return table[leaf]

    def take(self, name: str, full: torch.Tensor, rank: int) -> torch.Tensor:
        """Rank ``rank``'s piece of the whole tensor ``full`` (a view)."""
        sl = self.slice(name, rank)
        if sl is None:
            return full
        dim, start, stop = sl
        return full.narrow(dim, start, stop - start)


def param_shapes(args: ModelArgs) -> Tuple[Tuple[str, tuple], ...]:
    """(name, shape) of every parameter, from a model on the meta device (no memory)."""
    return _param_shapes_of(tuple(sorted(args.to_dict().items())))


@lru_cache(maxsize=16)
def _param_shapes_of(key: tuple) -> Tuple[Tuple[str, tuple], ...]:
    return tuple((k, tuple(v.shape)) for k, v in empty_model(ModelArgs(**dict(key))).state_dict().items())


def _slice_numel(shape: tuple, sl: Optional[Tuple[int, int, int]]) -> int:
    if sl is None:
        return math.prod(shape)
    dim, start, stop = sl
    return math.prod(shape) // shape[dim] * (stop - start)


# ================================================================ communication
class Comm:
    """The two collectives tensor parallelism needs, counted.

    ``all_reduce(x)``: every rank ends with the elementwise sum of all ranks' ``x`` (in place);
    ``all_gather(x, dim)``: every rank ends with all ranks' ``x`` concatenated along ``dim``.
    ``counts`` records, per collective, the number of calls and the bytes this rank handed to them
    (its whole ``x`` for an all-reduce, its own piece for an all-gather). Nothing is communicated
    (or counted) when there is a single rank.
    """

    rank: int = 0
    world: int = 1

    def __init__(self):
        self.reset_counts()

    def reset_counts(self) -> None:
        self.calls: Counter = Counter()
        self.bytes: Counter = Counter()

    @property
    def counts(self) -> Dict[str, Dict[str, int]]:
        return {op: {"calls": self.calls[op], "bytes": self.bytes[op]} for op in sorted(self.calls)}

    def _count(self, op: str, x: torch.Tensor) -> None:
        self.calls[op] += 1
        self.bytes[op] += x.numel() * x.element_size()

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        if self.world == 1:
            return x
        self._count("all_reduce", x)
        return self._all_reduce(x)

    def all_gather(self, x: torch.Tensor, dim: int = -1) -> torch.Tensor:
        if self.world == 1:
            return x
        self._count("all_gather", x)
        return torch.cat(self._all_gather(x.contiguous()), dim=dim)

    def _all_reduce(self, x):  # pragma: no cover - abstract
        raise NotImplementedError

    def _all_gather(self, x) -> List[torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError


class SingleComm(Comm):
    """One rank, no communication: ``TensorParallelTransformer`` with it is the whole model."""


class DistComm(Comm):
    """Collectives of a ``torch.distributed`` process group (gloo on CPUs, NCCL on GPUs)."""

    def __init__(self, group=None):
        import torch.distributed as dist

        if not dist.is_initialized():
            raise RuntimeError("torch.distributed is not initialised: call init_process_group first "
                               "(torchrun, or mistral_nb.parallel.launch, does it for you)")
        self.group = group
        self.rank, self.world = dist.get_rank(group), dist.get_world_size(group)
        super().__init__()

    def _all_reduce(self, x):
        import torch.distributed as dist

        dist.all_reduce(x, group=self.group)
        return x

    def _all_gather(self, x):
        import torch.distributed as dist

        parts = [torch.empty_like(x) for _ in range(self.world)]
        dist.all_gather(parts, x, group=self.group)
        return parts


class _ThreadHub:
    """What the threads of one in-process run share: a barrier and one slot per rank."""

    def __init__(self, world: int, timeout: float):
        self.world, self.timeout = world, timeout
        self.barrier = threading.Barrier(world)
        self.slots: List[Optional[torch.Tensor]] = [None] * world

    def exchange(self, rank: int, x: torch.Tensor) -> List[torch.Tensor]:
        self.slots[rank] = x
        self.barrier.wait(self.timeout)
        parts = list(self.slots)
        self.barrier.wait(self.timeout)          # nobody overwrites a slot before all have read them
        return parts


class ThreadComm(Comm):
    """Collectives between threads of one process — the fallback where processes cannot be spawned.

    Every rank adds the pieces in rank order, so all ranks get bit-identical sums. Same counting as
    ``DistComm``.
    """

    def __init__(self, hub: _ThreadHub, rank: int):
        self.hub, self.rank, self.world = hub, rank, hub.world
        super().__init__()

    def _all_reduce(self, x):
        parts = self.hub.exchange(self.rank, x.clone())
        total = parts[0].clone()
        for p in parts[1:]:
            total += p
        return x.copy_(total)

    def _all_gather(self, x):
        return self.hub.exchange(self.rank, x.clone())


# ================================================================ the split layers
class RowParallelLinear(nn.Linear):
    """A linear layer whose input features are split among the ranks (wo, w2).

    The rank holds columns [c0, c1) of W (dim_out, in/n) and receives the matching slice of x, so
    x_r @ W_r^T is a *partial* sum of the product; the all-reduce adds the ranks' partial sums.
    (B, S, in/n) -> (B, S, out), identical on every rank.
    """

    def __init__(self, in_features: int, out_features: int, comm: Comm):
        super().__init__(in_features, out_features, bias=False)
        self.comm = comm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.comm.all_reduce(F.linear(x, self.weight))


class VocabParallelEmbedding(nn.Module):
    """The embedding table split by vocabulary rows: rank r holds ids [r V/n, (r+1) V/n).

    Each rank looks up the ids it holds, writes zeros for the others, and the all-reduce fills in
    every row from the rank that has it. tokens (B, S) -> (B, S, dim).
    """

    def __init__(self, vocab_size: int, dim: int, comm: Comm):
        super().__init__()
        self.comm = comm
        self.per_rank = vocab_size // comm.world
        self.first = comm.rank * self.per_rank
        self.weight = nn.Parameter(torch.empty(self.per_rank, dim), requires_grad=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        local = tokens - self.first
        mine = (local >= 0) & (local < self.per_rank)                        # (B, S)
        out = F.embedding(local.clamp(0, self.per_rank - 1), self.weight)    # (B, S, dim)
        return self.comm.all_reduce(out.masked_fill(~mine[..., None], 0))


class ParallelOutput(nn.Module):
    """The output head split by vocabulary rows: each rank computes V/n logits, the all-gather joins
    them. (B, S, dim) -> (B, S, V), identical on every rank (so every rank samples the same token)."""

    def __init__(self, dim: int, vocab_size: int, comm: Comm):
        super().__init__()
        self.comm = comm
        self.weight = nn.Parameter(torch.empty(vocab_size // comm.world, dim), requires_grad=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.comm.all_gather(F.linear(h, self.weight), dim=-1)


class TensorParallelTransformer(Transformer):
    """One rank's share of a ``Transformer``: the same forward, on 1/n of the heads, hidden features
    and vocabulary, with the collectives above in place of the embedding, wo, w2 and the output head.

    ``args`` are this rank's shapes (``Partition.local_args``: its query and key/value heads, its
    hidden width), so attention and ``RollingBufferCache.for_model`` — hence ``generate`` — work
    unchanged and each rank's cache holds only its own key/value heads. ``full_args`` is the model.
    Build it on the meta device and fill it with ``shard_model`` or ``load_tensor_parallel``.
    """

    def __init__(self, args: ModelArgs, comm: Comm):
        part = Partition(args, comm.world)
        super().__init__(part.local_args())
        self.full_args, self.partition, self.comm = args, part, comm
        self.tok_embeddings = VocabParallelEmbedding(args.vocab_size, args.dim, comm)
        for layer in self.layers:
            layer.attention.wo = RowParallelLinear(part.heads * args.head_dim, args.dim, comm)
            layer.feed_forward.w2 = RowParallelLinear(part.hidden, args.dim, comm)
        self.output = ParallelOutput(args.dim, args.vocab_size, comm)

    @property
    def rank(self) -> int:
        return self.comm.rank

    def parameter_bytes(self) -> int:
        """Bytes of this rank's parameters."""
        return sum(p.numel() * p.element_size() for p in self.parameters())


def _set_param(model: nn.Module, name: str, value: torch.Tensor) -> None:
    module_name, _, leaf = name.rpartition(".")
    module = model.get_submodule(module_name) if module_name else model
    module._parameters[leaf] = nn.Parameter(value.contiguous(), requires_grad=False)


def _empty_tp(args: ModelArgs, comm: Comm) -> TensorParallelTransformer:
    with torch.device("meta"):
        return TensorParallelTransformer(args, comm)


def shard_model(model: Transformer, comm: Comm) -> TensorParallelTransformer:
    """This rank's share of an in-memory ``model`` (copies of its slices; same dtype and device).

    Convenient for small models; for real checkpoints use ``load_tensor_parallel``, which never
    holds more than the rank's share."""
    tp = _empty_tp(model.args, comm)
    part = tp.partition
    for name, full in model.state_dict().items():
        _set_param(tp, name, part.take(name, full, comm.rank).clone())
    return tp.eval()


# ================================================================ loading slices
def read_slice(info: TensorInfo, sl: Optional[Tuple[int, int, int]], handle=None) -> Tuple[torch.Tensor, int]:
    """Read only ``sl`` = (dim, start, stop) of a 1-D or 2-D tensor from its safetensors file.

    Rows [start, stop) are one contiguous byte range; columns [start, stop) are one short range per
    row. Returns (tensor in the file's dtype, bytes read), the bytes being exactly the slice's.
    """
    if sl is None:
        sl = (0, 0, info.shape[0])
    dim, start, stop = sl
    shape = list(info.shape)
    if len(shape) not in (1, 2) or dim >= len(shape) or not 0 <= start <= stop <= shape[dim]:
        raise CheckpointError(f"{info.file}: cannot take slice {sl} of tensor {info.name!r} of shape {info.shape}")
    el = torch.empty((), dtype=info.dtype).element_size()
    row_bytes = el * (shape[1] if len(shape) == 2 else 1)
    shape[dim] = stop - start
    out = torch.empty(shape, dtype=info.dtype)
    if out.numel() == 0:
        return out, 0
    buf = out.view(-1).view(torch.uint8).numpy()
    own = handle is None
    f = open(info.file, "rb") if own else handle
    got = 0
    try:
        if dim == 0:
            f.seek(info.start + start * row_bytes)
            got = f.readinto(memoryview(buf))
        else:                                   # columns: a piece of every row
            piece = (stop - start) * el
            view = memoryview(buf)
            for i in range(shape[0]):
                f.seek(info.start + i * row_bytes + start * el)
                got += f.readinto(view[i * piece:(i + 1) * piece])
    finally:
        if own:
            f.close()
    if got != out.numel() * el:
        raise CheckpointError(f"{info.file}: truncated while reading slice {sl} of tensor {info.name!r} "
                              f"({got} of {out.numel() * el} bytes)")
    return out, got


def load_tensor_parallel(path: str | Path, comm: Comm, device: str | torch.device = "cpu",
                         dtype: torch.dtype | str = torch.float32) -> TensorParallelTransformer:
    """This rank's share of a checkpoint directory (Hugging Face or Mistral layout), read slice by slice.

    The headers are checked as ``load_model`` checks them (``plan_checkpoint``); then, for every
    tensor, only the rows or columns this rank keeps are read from the file, moved to ``device``,
    converted (dtype; Hugging Face q/k rows to Mistral's RoPE pairing, per head, on the slice) and
    assigned; a NaN or Inf in a slice, or a value the target dtype cannot hold, raises CheckpointError.
    A rank's memory is its share of the weights plus one slice. The bytes read from the files are
    recorded in ``model.bytes_read``.
    """
    dtype = resolve_dtype(dtype)
    device = resolve_device(device)
    layout, args, plan = plan_checkpoint(path)
    model = _empty_tp(args, comm)
    part = model.partition
    handles: dict = {}
    bytes_read = 0
    try:
        for name, info in sorted(plan.items(), key=lambda item: (str(item[1].file), item[1].start)):
            if info.file not in handles:
                handles[info.file] = open(info.file, "rb")
            sl = part.slice(name, comm.rank)
            t, n = read_slice(info, sl, handles[info.file])
            bytes_read += n
            where = first_non_finite(t)
            if where is not None:
                raise CheckpointError(f"{info.file}: tensor {info.name!r} holds {t[where].item()} at index {where} "
                                      f"of the slice {sl} rank {comm.rank} reads: the checkpoint is corrupt")
            t = t.to(device)
            if layout == "hf" and _is_q_or_k(name):
                t = hf_to_mistral_qk(t, part.heads if name.endswith("wq.weight") else part.kv_heads)
            converted = t.to(dtype)
            if converted.dtype != t.dtype and first_non_finite(converted) is not None:
                raise CheckpointError(f"{info.file}: tensor {info.name!r} has values too large for {dtype} "
                                      f"(largest magnitude {t.abs().max().item():.4g}): load it in a wider dtype")
            _set_param(model, name, converted)
    finally:
        for fh in handles.values():
            fh.close()
    model.bytes_read = bytes_read
    return model.eval()


# ================================================================ the same with PyTorch's DTensor
def dtensor_plan(args: ModelArgs) -> dict:
    """The partition of this module as a ``parallelize_module`` plan (PyTorch's tensor-parallel API).

    ``ColwiseParallel`` shards an nn.Linear's weight by rows (output features) and leaves the output
    sharded; ``RowwiseParallel`` shards it by columns and all-reduces the partial outputs. On the
    embedding, ``RowwiseParallel`` shards the vocabulary rows (and all-reduces the lookups); on the
    output head, ``ColwiseParallel(output_layouts=Replicate())`` all-gathers the logits.
    """
    from torch.distributed.tensor import Replicate
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel

    plan = {"tok_embeddings": RowwiseParallel(input_layouts=Replicate()),
            "output": ColwiseParallel(output_layouts=Replicate())}
    for i in range(args.n_layers):
        for name in ("attention.wq", "attention.wk", "attention.wv", "feed_forward.w1", "feed_forward.w3"):
            plan[f"layers.{i}.{name}"] = ColwiseParallel()
        for name in ("attention.wo", "feed_forward.w2"):
            plan[f"layers.{i}.{name}"] = RowwiseParallel()
    return plan


def parallelize_with_dtensor(model: Transformer, mesh) -> Transformer:
    """Shard a whole ``model`` in place with ``parallelize_module(model, mesh, dtensor_plan(...))``.

    Its weights become DTensors (each rank keeps its slice, taken from the full weights every rank
    holds before the call); the attention modules and ``model.args`` are given the rank's head counts,
    as with ``TensorParallelTransformer``. A 1-D plan shards wk/wv by rows and so cannot replicate
    key/value heads: degrees beyond n_kv_heads are refused.
    """
    from torch.distributed.tensor.parallel import parallelize_module

    part = Partition(model.args, mesh.size())
    if part.kv_replicas > 1:
        raise ValueError(f"parallelize_with_dtensor: degree {part.world} > n_kv_heads {model.args.n_kv_heads} "
                         "would need replicated key/value heads, which a row-sharded wk/wv cannot express; "
                         "use TensorParallelTransformer (shard_model / load_tensor_parallel)")
    parallelize_module(model, mesh, dtensor_plan(model.args))
    for layer in model.layers:
        layer.attention.n_heads, layer.attention.n_kv_heads = part.heads, part.kv_heads
    model.args = part.local_args()
    return model


_COLLECTIVES = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "broadcast")


@contextmanager
def count_collectives() -> Iterator[Counter]:
    """Count the collectives PyTorch itself issues (DTensor's functional collectives), at dispatch.

    Yields a Counter with ``calls[op]`` and ``bytes[op]`` keys (op: 'all_reduce', 'all_gather'):
    the bytes of the tensor each call was handed on this rank, as ``Comm.counts`` records them.
    """
    from torch.utils._python_dispatch import TorchDispatchMode

    counter: Counter = Counter()
    names = {"all_reduce": "all_reduce", "all_reduce_": "all_reduce",
             "all_gather_into_tensor": "all_gather", "all_gather_into_tensor_out": "all_gather"}

    class _Mode(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            ns, name = getattr(func, "namespace", ""), func.overloadpacket.__name__
            if ns in ("_c10d_functional", "c10d_functional") and name.startswith(_COLLECTIVES):
                op = names.get(name, name)          # any other collective is counted under its own name
                x = args[0]
                counter[f"calls[{op}]"] += 1
                counter[f"bytes[{op}]"] += x.numel() * x.element_size()
            return func(*args, **(kwargs or {}))

    with _Mode():
        yield counter


# ================================================================ running n ranks
def _free_threads() -> None:
    torch.set_num_threads(1)        # n processes on a few cores: one thread each


def _process_main(fn, rank, world, store, conn, args, kwargs, timeout):
    _free_threads()
    import torch.distributed as dist

    try:
        dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world,
                                timeout=timedelta(seconds=timeout))
    except BaseException:
        conn.send(("init-error", traceback.format_exc()))
        return
    try:
        result = fn(DistComm(), *args, **kwargs)
        conn.send(("ok", pickle.dumps(result)))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        conn.close()
        return                                    # the parent stops the other ranks
    conn.close()
    try:
        # A rank that is done must not close its connections while another is still setting its own
        # up (gloo then fails with "Connection closed by peer"): wait for all, then leave together.
        dist.barrier()
        dist.destroy_process_group()
    except Exception:  # pragma: no cover - best effort at exit
        pass


class _StartupError(RuntimeError):
    """The processes or their process group could not be set up (as opposed to fn failing)."""


def _mp_context():
    """Fresh processes that do not inherit this one's threads: a fork server that has imported torch
    once (each rank then starts in a fraction of a second), or plain spawn where there is none."""
    import multiprocessing as mp

    try:
        ctx = mp.get_context("forkserver")
    except ValueError:                       # e.g. Windows
        return mp.get_context("spawn")
    ctx.set_forkserver_preload(["torch", "torch.distributed", __name__])
    return ctx


def _run_processes(fn, world, args, kwargs, timeout):
    import multiprocessing as mp
    from multiprocessing.connection import wait

    ctx = _mp_context()
    tmp = tempfile.mkdtemp(prefix="mistral_nb_tp_")
    procs, readers = [], {}
    try:
        try:
            for rank in range(world):
                reader, writer = ctx.Pipe(duplex=False)
                p = ctx.Process(target=_process_main, args=(fn, rank, world, os.path.join(tmp, "store"), writer,
                                                            args, kwargs, timeout), daemon=True)
                p.start()
                writer.close()                      # the child holds the only writing end
                procs.append(p)
                readers[reader] = rank
        except (OSError, RuntimeError, ValueError) as e:
            raise _StartupError(f"could not start {world} processes: {e!r}") from e
        results: dict = {}
        deadline = time.monotonic() + timeout
        while len(results) < world:
            left = deadline - time.monotonic()
            if left <= 0:
                waiting = sorted(set(range(world)) - set(results))
                raise TimeoutError(f"tensor-parallel run on {world} processes: ranks {waiting} did not finish "
                                   f"within {timeout:g} s; all ranks were terminated")
            for reader in wait([r for r, rank in readers.items() if rank not in results], timeout=left):
                rank = readers[reader]
                try:
                    status, payload = reader.recv()
                except EOFError:
                    procs[rank].join(1)
                    raise RuntimeError(f"tensor-parallel run: rank {rank} of {world} exited (code "
                                       f"{procs[rank].exitcode}) without a result; all ranks were terminated") from None
                if status == "init-error":
                    raise _StartupError(f"rank {rank} could not join the gloo process group:\n{payload}")
                if status == "error":
                    raise RuntimeError(f"tensor-parallel run: rank {rank} of {world} failed:\n{payload}")
                results[rank] = pickle.loads(payload)
        for p in procs:                             # let them exit on their own (their cleanup runs)
            p.join(max(1.0, deadline - time.monotonic()))
        return [results[r] for r in range(world)]
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(5)
            if p.is_alive():       # pragma: no cover - a process that ignores SIGTERM
                p.kill()
                p.join(5)
        for reader in readers:
            reader.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _run_threads(fn, world, args, kwargs, timeout):
    hub = _ThreadHub(world, timeout)
    results: list = [None] * world
    errors: list = [None] * world

    def body(rank):
        try:
            results[rank] = fn(ThreadComm(hub, rank), *args, **kwargs)
        except BaseException:
            errors[rank] = traceback.format_exc()
            hub.barrier.abort()                 # wake the other ranks instead of leaving them waiting

    threads = [threading.Thread(target=body, args=(r,), daemon=True) for r in range(world)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    if any(t.is_alive() for t in threads):
        hub.barrier.abort()
        raise TimeoutError(f"tensor-parallel run on {world} threads did not finish within {timeout:g} s")
    failed = [r for r, e in enumerate(errors) if e is not None and "BrokenBarrierError" not in e.splitlines()[-1]]
    failed = failed or [r for r, e in enumerate(errors) if e is not None]
    if failed:
        raise RuntimeError(f"tensor-parallel run: rank {failed[0]} of {world} failed:\n{errors[failed[0]]}")
    return results


def launch(fn: Callable, world: int, args: Sequence = (), kwargs: Optional[dict] = None,
           timeout: float = 120.0, mode: str = "auto") -> Tuple[list, str]:
    """Run ``fn(comm, *args, **kwargs)`` on ``world`` ranks; return ([rank 0's result, ...], how).

    mode ``"processes"``: start ``world`` CPU processes joined in a gloo process group (``fn`` and its
    arguments must be picklable: a function of an importable module). ``"threads"``: run the ranks as
    threads of this process with ``ThreadComm``. ``"auto"``: processes, or threads when the
    processes or their process group cannot be set up (``how`` says which ran).
    Bounded: after ``timeout`` seconds every rank is stopped and TimeoutError raised; when a rank
    fails, the others are stopped and RuntimeError carries the rank's traceback.
    """
    if mode not in ("auto", "processes", "threads"):
        raise ValueError(f"mode must be 'auto', 'processes' or 'threads', got {mode!r}")
    if isinstance(world, bool) or not isinstance(world, int) or world < 1:
        raise ValueError(f"world must be an int >= 1, got {world!r}")
    kwargs = kwargs or {}
    if mode != "threads":
        try:
            return _run_processes(fn, world, args, kwargs, timeout), "processes"
        except _StartupError:
            if mode == "processes":
                raise
    return _run_threads(fn, world, args, kwargs, timeout), "threads"


# ================================================================ the checks (tests and chapter 13)
def run_all(comm: Comm, calls: Sequence[Tuple[Callable, Sequence, dict]]) -> list:
    """Run several rank functions one after another in the same ranks: [fn(comm, *args, **kwargs), ...].
    (One ``launch`` pays the start-up of the processes once.)"""
    return [fn(comm, *args, **kwargs) for fn, args, kwargs in calls]


_RNG_LOCK = threading.Lock()     # ranks run as threads share torch's global generator


def random_model(args: ModelArgs, seed: int) -> Transformer:
    """A random model with its norms perturbed away from 1 (so a wrong norm would show); the same on
    every rank, whether the ranks are processes or threads."""
    with _RNG_LOCK:
        torch.manual_seed(seed)
        model = Transformer(args)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("norm.weight"):
                    p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def _models(comm: Comm, source) -> Tuple[Transformer, TensorParallelTransformer, str]:
    from .weights import load_model

    if isinstance(source, dict):
        full = random_model(ModelArgs(**source["args"]), source.get("seed", 0))
        return full, shard_model(full, comm), "random"
    full = load_model(source)
    return full, load_tensor_parallel(source, comm), "checkpoint"


@torch.inference_mode()
def check_parity(comm: Comm, source, prompts: Sequence[Sequence[int]], max_new_tokens: int = 8,
                 seq_len: int = 24, dtensor: bool = False) -> dict:
    """Run on every rank: this rank's share against the single-process model of the same weights.

    ``source``: a checkpoint directory (read with ``load_tensor_parallel`` / ``load_model``) or
    ``{"args": ModelArgs.to_dict(), "seed": s}`` for a random model. Reports the largest logit
    differences of a whole-sequence forward of ``seq_len`` tokens, both greedy continuations of
    ``prompts``, the collectives of one prefill and of one decode step, and this rank's parameter
    and cache sizes. With ``dtensor`` (a process group is needed, and degree <= n_kv_heads), also the
    whole-sequence logits and collectives of ``parallelize_with_dtensor`` on a copy of the full model.
    (DTensor works out the sharding of every new operation and shape the first time it meets them:
    seconds per shape on a CPU, which is why it is checked on one forward pass.)
    """
    full, tp, kind = _models(comm, source)
    args = full.args
    gen = torch.Generator().manual_seed(1234)
    tokens = torch.randint(0, args.vocab_size, (2, seq_len), generator=gen)
    ref = full(tokens)
    comm.reset_counts()
    out = tp(tokens)
    whole_seq = comm.counts
    diff = (out - ref).abs()
    report = {"kind": kind, "rank": comm.rank, "world": comm.world,
              "max_abs": diff.max().item(), "max_ref": ref.abs().max().item(),
              "rel": ((out - ref).norm() / ref.norm()).item(), "bitwise_equal": bool(torch.equal(out, ref)),
              "whole_sequence": whole_seq}
    from .cache import RollingBufferCache
    from .generate import generate, left_pad, prefill

    report["tokens_single"] = generate(full, prompts, max_new_tokens=max_new_tokens)
    comm.reset_counts()
    report["tokens_tp"] = generate(tp, prompts, max_new_tokens=max_new_tokens)
    report["generate_counts"] = comm.counts
    # the first prompt alone (batch 1): its chunked prefill, then one decode step
    cache = RollingBufferCache.for_model(tp, 1)
    prompt, positions = left_pad([prompts[0]])
    comm.reset_counts()
    prefill(tp, prompt, positions, cache)
    report["prefill"] = {"tokens": prompt.shape[1], **comm.counts}
    comm.reset_counts()
    tp(prompt[:, -1:], cache=cache)
    report["decode"] = comm.counts
    report["cache_k_shape"] = tuple(cache.k.shape)
    report["param_bytes"] = tp.parameter_bytes()
    report["param_bytes_expected"] = rank_parameter_bytes(args, comm.world, next(tp.parameters()).element_size())
    report["bytes_read"] = getattr(tp, "bytes_read", None)
    report["kv_heads"], report["kv_group"] = tp.partition.kv_heads, tp.partition.kv_group(comm.rank)
    if dtensor:
        report["dtensor"] = _check_dtensor(comm, full, tp, tokens, out)
    return report


def _check_dtensor(comm, full, tp, tokens, tp_out) -> dict:
    import copy

    import torch.distributed as dist

    if not isinstance(comm, DistComm) or not dist.is_initialized():
        return {"skipped": "DTensor needs a torch.distributed process group (not threads)"}
    if tp.partition.kv_replicas > 1:
        return {"skipped": f"degree {comm.world} > n_kv_heads {full.args.n_kv_heads}: not expressible as a 1-D plan"}
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh("cpu", (comm.world,))
    dt = parallelize_with_dtensor(copy.deepcopy(full), mesh)
    with count_collectives() as counted:
        out = dt(tokens)
    ops = sorted(k[len("calls["):-1] for k in counted if k.startswith("calls["))
    return {"max_abs_vs_explicit": (out - tp_out).abs().max().item(),
            "max_abs_vs_single": (out - full(tokens)).abs().max().item(),
            "whole_sequence": {op: {"calls": counted[f"calls[{op}]"], "bytes": counted[f"bytes[{op}]"]} for op in ops}}


# ================================================================ sizes: communication and memory
def comm_bytes_per_token(args: ModelArgs, world: int, bytes_per_value: int = 2) -> Dict[str, int]:
    """Bytes a rank hands to collectives per token of a forward pass (the payload, not the wire).

    Each block all-reduces its attention output and its feed-forward output: 2 x dim values per
    token; the embedding adds one more all-reduce, and the output head all-gathers the rank's V/n
    logits of every position whose logits are computed (the last one when decoding).
    """
    check_degree(args, world)
    if world == 1:
        return {"all-reduce per layer": 0, "all-reduce": 0, "all-gather (logits)": 0}
    per_layer = 2 * args.dim * bytes_per_value
    return {"all-reduce per layer": per_layer,
            "all-reduce": (2 * args.n_layers + 1) * args.dim * bytes_per_value,
            "all-gather (logits)": args.vocab_size // world * bytes_per_value}


def ring_all_reduce_bytes(payload: int, world: int) -> float:
    """Bytes each rank sends (and receives) in a ring all-reduce of ``payload`` bytes:
    a reduce-scatter and an all-gather, each passing n - 1 pieces of payload / n around the ring."""
    return 2 * (world - 1) / world * payload


def rank_parameter_bytes(args: ModelArgs, world: int, bytes_per_value: int = 2, kind: str = "all") -> int:
    """Bytes of one rank's parameters (the same on every rank).

    kind ``"all"``, or ``"split"`` (the tensors cut among the ranks — wk/wv included, at their
    per-rank size, even where their heads are replicated), or ``"replicated"`` (the norms, copied whole).
    """
    part = Partition(args, world)
    total = 0
    for name, shape in param_shapes(args):
        sl = part.slice(name, 0)
        if kind == "all" or (kind == "split") == (sl is not None):
            total += _slice_numel(shape, sl)
    return total * bytes_per_value


def rank_kv_cache_bytes(args: ModelArgs, world: int, seq_len: int, bytes_per_value: int = 2,
                        batch_size: int = 1) -> int:
    """Bytes of one rank's rolling cache: its key/value heads only."""
    return kv_cache_bytes(Partition(args, world).local_args(), seq_len, bytes_per_value, batch_size=batch_size)


def rank_weights_read_per_token(args: ModelArgs, world: int, bytes_per_value: int = 2) -> int:
    """Bytes of weights one rank reads per decode step (batch 1): all its slices, except that of its
    embedding rows it reads at most the one of the token fed in."""
    part = Partition(args, world)
    own = rank_parameter_bytes(args, world, bytes_per_value)
    return own - (part.vocab - 1) * args.dim * bytes_per_value


def memory_per_rank(args: ModelArgs, worlds: Sequence[int], seq_len: Optional[int] = None,
                    bytes_per_value: int = 2, batch_size: int = 1) -> List[dict]:
    """One row per degree: bytes of weights and of the rolling cache per rank (``seq_len`` tokens of
    ``batch_size`` sequences; default: one full window), and the per-token communication."""
    seq_len = seq_len or args.sliding_window or 4096
    rows = []
    for n in worlds:
        part = Partition(args, n)
        weights = rank_parameter_bytes(args, n, bytes_per_value)
        cache = rank_kv_cache_bytes(args, n, seq_len, bytes_per_value, batch_size)
        rows.append({"ranks": n, "q heads": part.heads, "kv heads": part.kv_heads, "kv replicas": part.kv_replicas,
                     "weights": weights, "kv cache": cache, "total": weights + cache,
                     "weights read per token": rank_weights_read_per_token(args, n, bytes_per_value),
                     "all-reduce per token": comm_bytes_per_token(args, n, bytes_per_value)["all-reduce"]})
    return rows


# ================================================================ serving: paged KV cache vs rolling buffer
def paged_block_table(n_tokens: int, block_size: int = 16, window: Optional[int] = None) -> List[Optional[int]]:
    """The block table of one sequence after ``n_tokens`` tokens, paged-attention style.

    Physical blocks of ``block_size`` token slots come from a shared pool (here: ids 0, 1, 2, ... in
    order, freed ids reused first-in first-out). A new block is taken when the sequence's last one is
    full. With a sliding ``window``, once the next token can no longer see the first
    max(0, n - window + 1) tokens, every block holding only such tokens is returned to the pool and
    its entry becomes None (vLLM's sliding-window manager writes a shared "null block" there).
    Token p lives in slot p mod block_size of physical block ``table[p // block_size]``.
    """
    from collections import deque

    if block_size < 1 or n_tokens < 0:
        raise ValueError(f"need block_size >= 1 and n_tokens >= 0, got {block_size}, {n_tokens}")
    table: List[Optional[int]] = []
    free: deque = deque()
    next_id, first_live = 0, 0
    for p in range(n_tokens):
        if p // block_size >= len(table):                 # the last block is full: take one from the pool
            if free:
                table.append(free.popleft())
            else:
                table.append(next_id)
                next_id += 1
        if window is not None:                           # blocks the next token can no longer see
            skipped = max(0, (p + 1) - window + 1)
            while first_live < skipped // block_size:
                free.append(table[first_live])
                table[first_live] = None
                first_live += 1
    return table


def paged_kv_tokens(n_tokens: int, block_size: int = 16, window: Optional[int] = None) -> int:
    """Token slots a sequence holds in a paged cache after ``n_tokens`` tokens: the live entries of
    ``paged_block_table`` times the block size, in closed form — every block up to the last token,
    less the blocks entirely before the first position the next token sees."""
    blocks = -(-n_tokens // block_size)
    if window is not None:
        blocks -= max(0, n_tokens - window + 1) // block_size
    return block_size * blocks


# ================================================================ torchrun entry point
def main(argv: Optional[Sequence[str]] = None) -> None:
    """``torchrun --nproc-per-node N -m mistral_nb.parallel CHECKPOINT --prompt TEXT``.

    Every process loads its share of the checkpoint (NCCL and one GPU per process when CUDA is
    available, else gloo on the CPU), all of them generate together, and rank 0 prints the result
    and what each rank held and communicated.
    """
    import torch.distributed as dist

    from .generate import generate

    p = argparse.ArgumentParser(prog="torchrun --nproc-per-node N -m mistral_nb.parallel",
                                description="Greedy or sampled generation with tensor parallelism.")
    p.add_argument("checkpoint", help="checkpoint directory (Hugging Face or Mistral layout)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="text, encoded with Mistral 7B v0.1's tokenizer (BOS added)")
    src.add_argument("--tokens", help="comma-separated token ids, e.g. 1,415,5565")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--dtype", default=None, help="default: bfloat16 on GPUs, float32 on CPUs")
    opts = p.parse_args(argv)
    missing = [v for v in ("RANK", "WORLD_SIZE", "LOCAL_RANK") if v not in os.environ]
    if missing:
        p.error(f"environment variables {missing} are not set: start this module with torchrun, e.g. "
                "torchrun --nproc-per-node 2 -m mistral_nb.parallel CHECKPOINT --prompt 'Hello'")
    local_rank = int(os.environ["LOCAL_RANK"])
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank)
    else:
        _free_threads()
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        comm = DistComm()
        device = f"cuda:{local_rank}" if cuda else "cpu"
        dtype = opts.dtype or ("bfloat16" if cuda else "float32")
        model = load_tensor_parallel(opts.checkpoint, comm, device=device, dtype=dtype)
        if opts.tokens:
            ids, tok = [int(t) for t in opts.tokens.split(",")], None
        else:
            from .tokenizer import Tokenizer

            tok = Tokenizer.mistral_v1()
            ids = tok.encode(opts.prompt, bos=True)
        comm.reset_counts()
        new = generate(model, [ids], max_new_tokens=opts.max_new_tokens, temperature=opts.temperature,
                       top_p=opts.top_p, seed=opts.seed)[0]
        sizes = [None] * comm.world
        dist.all_gather_object(sizes, (model.parameter_bytes(), model.bytes_read))
        if comm.rank == 0:
            print(f"ranks: {comm.world} ({dist.get_backend()}, {device.split(':')[0]}), dtype {dtype}")
            for r, (held, read) in enumerate(sizes):
                print(f"rank {r}: {held:,} bytes of weights held, {read:,} bytes read from the checkpoint")
            fed = len(ids) + max(0, len(new) - 1)        # the prompt, then each new token but the last
            counts = comm.counts
            if "all_reduce" in counts:
                c = counts["all_reduce"]
                print(f"all-reduce: {c['calls']} calls, {c['bytes']:,} bytes from rank 0 = {c['bytes'] // fed:,} "
                      f"per token fed to the model ({fed} tokens)")
            if "all_gather" in counts:
                c = counts["all_gather"]
                print(f"all-gather: {c['calls']} calls, {c['bytes']:,} bytes from rank 0 = {c['bytes'] // c['calls']:,} "
                      "per row of logits")
            print("tokens:", ",".join(map(str, new)))
            if tok is not None:
                print("text:", repr(tok.decode(new)))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
