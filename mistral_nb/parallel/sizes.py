"""Sizes under tensor parallelism, from the configuration alone: what one rank holds, reads per token
and hands to the collectives. Built on ``costs`` and on the partition's slices of every tensor."""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

from ..checkpoint.names import expected_shapes
from ..config import ModelArgs
from ..costs import kv_cache_bytes
from .partition import Partition, check_degree, slice_numel


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
    if kind not in ("all", "split", "replicated"):
        raise ValueError(f"kind must be 'all', 'split' or 'replicated', got {kind!r}")
    for name, shape in expected_shapes(args).items():
        sl = part.slice(name, 0)
        if kind == "all" or (kind == "split") == (sl is not None):
            total += slice_numel(shape, sl)
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
