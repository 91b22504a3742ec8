"""One rank's share of the model: the same blocks on 1/n of the heads, hidden features and vocabulary,
with a collective wherever a rank's partial result must be combined with the others'.

Every cut sits at the *end* of a sublayer: the attention's output projection wo and the
feed-forward's w2 hold only the rank's columns, so what a rank's sublayer returns is a partial sum
of the whole sublayer's output, and one all-reduce adds the ranks' partial sums. Because the
all-reduce belongs to the sublayer and not to the linear layer, wo and w2 stay ordinary linear
layers of the rank's shape: any weight format (float, int8, packed for the CPU) can hold them.
Everything between the cuts is local: a rank computes attention for its own heads from its own
slice of the rolling cache. So each block costs two all-reduces of the (B, S, dim) activations, and
the forward pass one more for the embedding and one all-gather of the logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..attention import Attention
from ..config import ModelArgs
from ..model import FeedForward, Transformer
from .comm import Comm
from .partition import Partition


class ParallelAttention(Attention):
    """The rank's query heads and key/value heads; wo holds the matching columns, so the output is a
    partial sum that the all-reduce completes. (B, S, dim) -> (B, S, dim), identical on every rank."""

    def __init__(self, local_args: ModelArgs, comm: Comm):
        super().__init__(local_args)
        self.comm = comm

    def forward(self, x, cos, sin, mask=None, cache=None):
        return self.comm.all_reduce(super().forward(x, cos, sin, mask, cache))


class ParallelFeedForward(FeedForward):
    """The rank's rows of w1 and w3 and columns of w2: a partial sum, completed by the all-reduce.
    (B, S, dim) -> (B, S, dim)."""

    def __init__(self, local_args: ModelArgs, comm: Comm):
        super().__init__(local_args)
        self.comm = comm

    def forward(self, x):
        return self.comm.all_reduce(super().forward(x))


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


class TensorParallelTransformer(Transformer):
    """One rank's share of a ``Transformer``: the same forward, on 1/n of the heads, hidden features
    and vocabulary, with the collectives above.

    ``args`` are this rank's shapes (``Partition.local_args``: its query and key/value heads, its
    hidden width), so ``RollingBufferCache.for_model`` — hence ``generate`` — works unchanged and
    each rank's cache holds only its own key/value heads. ``full_args`` is the whole model. The
    output head holds the rank's V/n rows; ``logits`` all-gathers them, so every rank has the whole
    (B, S, V) logits and — with greedy decoding or a seed shared by all ranks — samples the same token.
    Build it on the meta device and fill it with ``shard_model`` or ``load_tensor_parallel``.
    """

    def __init__(self, args: ModelArgs, comm: Comm):
        part = Partition(args, comm.world)
        local = part.local_args()
        super().__init__(local)
        self.full_args, self.partition, self.comm = args, part, comm
        self.tok_embeddings = VocabParallelEmbedding(args.vocab_size, args.dim, comm)
        for layer in self.layers:
            layer.attention = ParallelAttention(local, comm)
            layer.feed_forward = ParallelFeedForward(local, comm)
        self.output = nn.Linear(args.dim, part.vocab, bias=False)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """(B, S, dim) -> (B, S, V) float32: the rank's V/n logits, all-gathered."""
        return self.comm.all_gather(self.output(self.norm(h)), dim=-1).float()

    @property
    def rank(self) -> int:
        return self.comm.rank

    def parameter_bytes(self) -> int:
        """Bytes of this rank's parameters and buffers (whatever their format)."""
        return sum(t.numel() * t.element_size() for t in list(self.parameters()) + list(self.buffers()))
