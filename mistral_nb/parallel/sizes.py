"""Sizes under tensor parallelism, from the configuration alone: what one rank holds, reads per token
and hands to the collectives. Built on ``costs`` and on the partition's slices of every tensor."""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

from ..checkpoint.names import expected_shapes
from ..config import ModelArgs
from ..costs import Cost, decode_cost, kv_cache_bytes, weights_read_per_token
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


def rank_pass_seconds(args: ModelArgs, world: int, tokens: int, machine, link_bandwidth: float,
                      bytes_per_value: int = 2) -> Dict[str, float]:
    """Least times of one forward pass over ``tokens`` tokens (a batch of that many sequences decoding
    one token each, with an empty cache) on one rank of ``world``: ``"compute"`` on ``machine``'s
    roofline (a ``speed.roofline.Machine``; the rank does 1/world of the FLOPs and reads its own
    weights, ``rank_weights_read_per_token``, plus 1/world of the rest), and ``"all-reduce"``, the
    ring all-reduces of ``2 L + 1`` vectors per token over a link of ``link_bandwidth`` bytes/s per
    direction. Both are lower bounds: a collective also has a start-up latency, which this leaves out,
    and so is the logits' all-gather (V/n values of one position per sequence)."""
    if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 1:
        raise ValueError(f"tokens must be an int >= 1, got {tokens!r}")
    if not link_bandwidth > 0:
        raise ValueError(f"link_bandwidth must be > 0 bytes/s, got {link_bandwidth!r}")
    whole = decode_cost(args, batch=tokens, bytes_per_value=bytes_per_value)
    rest = whole.bytes - weights_read_per_token(args, bytes_per_value)       # embedding rows, cache writes
    rank = Cost(whole.flops / world, rank_weights_read_per_token(args, world, bytes_per_value) + rest / world, tokens)
    payload = comm_bytes_per_token(args, world, bytes_per_value)["all-reduce"]
    return {"compute": rank.seconds(machine),
            "all-reduce": tokens * ring_all_reduce_bytes(payload, world) / link_bandwidth}
