"""The two collectives tensor parallelism needs, counted, in two backends.

``DistComm`` uses a ``torch.distributed`` process group (gloo on CPUs, NCCL on GPUs); ``ThreadComm``
exchanges tensors between threads of one process, the fallback where processes cannot be started.
Both count the calls and bytes, so the book can compare them with the formulas of ``sizes.py``.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Dict, List, Optional

import torch


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


class ThreadHub:
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

    def __init__(self, hub: ThreadHub, rank: int):
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
