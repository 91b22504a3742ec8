"""The same partition with PyTorch's own tensor-parallel API (DTensor, ``parallelize_module``): the
cross-check of the explicit version in ``layers.py``, and the collectives PyTorch issues, counted."""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from typing import Iterator

from ..config import ModelArgs
from ..model import Transformer
from .partition import Partition


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


def dtensor_logits(comm, full: Transformer, tokens, tp_out) -> dict:
    """On every rank of a process group: ``parallelize_with_dtensor`` on a copy of ``full``, its logits
    for ``tokens`` against the explicit version's ``tp_out`` and the single model's, and the collectives
    PyTorch issued. (DTensor works out the sharding of every new operation and shape the first time it
    meets them: seconds per shape on a CPU, which is why it is checked on one forward pass.)"""
    import copy

    import torch.distributed as dist

    from .comm import DistComm

    if not isinstance(comm, DistComm) or not dist.is_initialized():
        return {"skipped": "DTensor needs a torch.distributed process group (not threads)"}
    if Partition(full.args, comm.world).kv_replicas > 1:
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
