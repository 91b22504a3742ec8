"""Tensor parallelism: one Mistral split across n processes (Megatron-style), over torch.distributed.

Every rank holds a slice of every block and all ranks work on every token together
(Shoeybi et al. 2019). One module per concept:

* ``partition`` — which rows or columns of each tensor a rank keeps; the degrees a model allows;
* ``comm``      — the two collectives (all-reduce, all-gather), counted, over torch.distributed or threads;
* ``layers``    — ``TensorParallelTransformer``: the rank's heads, hidden features and vocabulary, with
  the all-reduce at the end of each attention and feed-forward sublayer (the way the book teaches it);
* ``loading``   — a rank's share from a model in memory or from the checkpoint's files, piece by piece;
* ``dtensor``   — the same split with PyTorch's DTensor ``parallelize_module``, as a cross-check;
* ``launcher``  — ``launch``: n CPU processes over gloo (threads where processes cannot run);
* ``check``     — the parity check against the single-process model;
* ``sizes``     — bytes per rank and per token, and the time of a rank's pass against its all-reduces;
* ``cli``       — ``torchrun ... -m mistral_nb.parallel`` for GPUs (NCCL).
"""

from .check import check_parity, random_model, run_all
from .cli import main
from .comm import Comm, DistComm, SingleComm, ThreadComm
from .dtensor import count_collectives, dtensor_plan, parallelize_with_dtensor
from .launcher import launch
from .layers import ParallelAttention, ParallelFeedForward, TensorParallelTransformer, VocabParallelEmbedding
from .loading import load_tensor_parallel, shard_model
from .partition import Partition, check_degree, valid_degrees
from .sizes import (comm_bytes_per_token, memory_per_rank, rank_kv_cache_bytes, rank_parameter_bytes,
                    rank_pass_seconds, rank_weights_read_per_token, ring_all_reduce_bytes)

__all__ = ["Partition", "check_degree", "valid_degrees", "Comm", "SingleComm", "DistComm", "ThreadComm",
           "ParallelAttention", "ParallelFeedForward", "VocabParallelEmbedding", "TensorParallelTransformer",
           "shard_model", "load_tensor_parallel", "dtensor_plan", "parallelize_with_dtensor", "count_collectives",
           "launch", "run_all", "check_parity", "random_model", "comm_bytes_per_token", "ring_all_reduce_bytes",
           "rank_parameter_bytes", "rank_kv_cache_bytes", "rank_weights_read_per_token", "rank_pass_seconds", "memory_per_rank", "main"]
