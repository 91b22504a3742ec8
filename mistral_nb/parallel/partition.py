"""The partition: which rows or columns of every tensor each of n ranks keeps (Megatron-style).

With n ranks, rank r keeps (weights are stored (out, in), as nn.Linear does):

    wq, wk, wv  the rows of its query heads / key-value heads    "column-parallel": no communication
    wo          the matching columns                             "row-parallel":  partial sums -> all-reduce
    w1, w3      rows [r F/n, (r+1) F/n) of the hidden features   column-parallel
    w2          the matching columns                             row-parallel:    all-reduce
    tok_embeddings  rows [r V/n, (r+1) V/n) of the vocabulary    looks up its own ids, zeros -> all-reduce
    output      the same rows of the output head                 its V/n logits -> all-gather
    norms       replicated (4,096 numbers each)

Grouped-query attention caps the degree: K key/value heads can be divided among at most K ranks.
Beyond that (n a multiple of K) each key/value head is *replicated* on n/K ranks, as vLLM does.
Degrees that do not divide the heads (or the hidden width, or the vocabulary) are refused with an
error that names the number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch

from ..config import ModelArgs

Slice = Tuple[int, int, int]      # (dim, start, stop)


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

    def slice(self, name: str, rank: int) -> Optional[Slice]:
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


def slice_numel(shape: tuple, sl: Optional[Slice]) -> int:
    """Elements of the piece ``sl`` of a tensor of ``shape`` (all of it for None)."""
    if sl is None:
        return math.prod(shape)
    dim, start, stop = sl
    return math.prod(shape) // shape[dim] * (stop - start)
