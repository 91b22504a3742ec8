"""The command line: ``torchrun --nproc-per-node N -m mistral_nb.parallel CHECKPOINT --prompt TEXT``
generates with tensor parallelism, one process per GPU (NCCL) or per CPU share (gloo)."""

from __future__ import annotations

import argparse
import os
from typing import Optional, Sequence

import torch

from ..generate import generate
from .comm import DistComm
from .launcher import free_threads
from .loading import load_tensor_parallel


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="torchrun --nproc-per-node N -m mistral_nb.parallel",
                                description="Greedy or sampled generation with tensor parallelism.")
    p.add_argument("checkpoint", help="checkpoint directory (Hugging Face or Mistral layout)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="text, encoded with Mistral 7B v0.1's tokenizer (BOS added)")
    src.add_argument("--tokens", help="comma-separated token ids, e.g. 1,415,5565")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None,
                   help="sampling seed; when sampling without one, rank 0 draws a seed and shares it, "
                        "so that every rank samples the same tokens")
    p.add_argument("--dtype", default=None, help="default: bfloat16 on GPUs, float32 on CPUs")
    opts = p.parse_args(argv)
    missing = [v for v in ("RANK", "WORLD_SIZE", "LOCAL_RANK") if v not in os.environ]
    if missing:
        p.error(f"environment variables {missing} are not set: start this module with torchrun, e.g. "
                "torchrun --nproc-per-node 2 -m mistral_nb.parallel CHECKPOINT --prompt 'Hello'")
    return opts


def shared_seed(seed: Optional[int]) -> int:
    """The sampling seed every rank uses: ``seed``, or one drawn by rank 0 and broadcast. Ranks that
    sampled with different generators would pick different tokens and their caches would diverge."""
    import torch.distributed as dist

    if seed is not None:
        return seed
    box = [int(torch.randint(0, 2**31 - 1, ()).item())]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def report(comm: DistComm, model, ids: list, new: list, device: str, dtype: str, tok) -> None:
    """Rank 0 prints what each rank held and read, the collectives per token, and the tokens."""
    import torch.distributed as dist

    sizes = [None] * comm.world
    dist.all_gather_object(sizes, (model.parameter_bytes(), model.bytes_read))
    if comm.rank != 0:
        return
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


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Every process loads its share of the checkpoint (NCCL and one GPU per process when CUDA is
    available, else gloo on the CPU), all of them generate together with one shared seed, and rank 0
    prints the result and what each rank held and communicated."""
    import torch.distributed as dist

    opts = parse_args(argv)
    local_rank = int(os.environ["LOCAL_RANK"])
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank)
    else:
        free_threads()
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        comm = DistComm()
        device = f"cuda:{local_rank}" if cuda else "cpu"
        dtype = opts.dtype or ("bfloat16" if cuda else "float32")
        model = load_tensor_parallel(opts.checkpoint, comm, device=device, dtype=dtype)
        tok = None
        if opts.tokens:
            ids = [int(t) for t in opts.tokens.split(",")]
        else:
            from ..tokenizer import Tokenizer

            tok = Tokenizer.mistral_v1()
            ids = tok.encode(opts.prompt, bos=True)
        seed = shared_seed(opts.seed) if opts.temperature > 0 else opts.seed
        comm.reset_counts()
        new = generate(model, [ids], max_new_tokens=opts.max_new_tokens, temperature=opts.temperature,
                       top_p=opts.top_p, seed=seed)[0]
        report(comm, model, ids, new, device, dtype, tok)
    finally:
        dist.destroy_process_group()
