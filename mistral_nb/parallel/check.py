"""The parity check (tests and chapter 13): a rank's share against the single-process model.

``check_parity`` runs on every rank (through ``launch``): the whole-sequence logits, greedy
continuations, the collectives of one prefill and one decode step, and the rank's sizes against
the formulas of ``sizes.py``; with ``dtensor=True`` also PyTorch's DTensor version of the same split.
"""

from __future__ import annotations

import threading
from typing import Callable, Sequence, Tuple

import torch

from ..cache import RollingBufferCache
from ..checkpoint import load_model
from ..config import ModelArgs
from ..generate import generate, left_pad, prefill
from ..model import Transformer
from .comm import Comm
from .dtensor import dtensor_logits
from .layers import TensorParallelTransformer
from .loading import load_tensor_parallel, shard_model
from .sizes import rank_parameter_bytes


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
        report["dtensor"] = dtensor_logits(comm, full, tokens, out)
    return report
