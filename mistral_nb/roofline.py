"""Counting the work of a forward pass: FLOPs, bytes moved, and where they meet a machine's roofline.

A forward pass over ``tokens`` new tokens of ``batch`` sequences does, per token, about two
floating-point operations for every weight it multiplies by (a multiply and an add: "2N"), plus
the attention scores and the weighted sum of values (four per query-key pair per head channel).
It must also read every weight once per pass (whatever the batch), and the cached keys and values
of every sequence. The ratio FLOPs / bytes is the pass's **arithmetic intensity**. A machine that
does ``peak_flops`` per second and moves ``bandwidth`` bytes per second cannot run the pass faster
than max(FLOPs / peak, bytes / bandwidth): below the **ridge point** peak / bandwidth (FLOP per
byte) a pass is memory-bound, above it compute-bound (Williams et al., 2009).

Activations, which stay small next to the weights at these sizes, are not counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .config import ModelArgs
from .model import parameter_counts


@dataclass(frozen=True)
class Machine:
    """A roofline: ``peak_flops`` (FLOP/s) and ``bandwidth`` (bytes/s), with where they come from."""
    name: str
    peak_flops: float
    bandwidth: float
    source: str = ""

    @property
    def ridge(self) -> float:
        """The arithmetic intensity (FLOP per byte) at which memory and compute take equally long."""
        return self.peak_flops / self.bandwidth

    def attainable(self, intensity: float) -> float:
        """The most FLOP/s a pass of this intensity can reach: min(peak, intensity x bandwidth)."""
        return min(self.peak_flops, intensity * self.bandwidth)


# NVIDIA H100 Tensor Core GPU datasheet, SXM5 column: BF16 Tensor Core 1,979 TFLOPS *with sparsity*
# (dense is half of it) and 3.35 TB/s of HBM3 bandwidth.
H100_SXM_BF16 = Machine("H100 SXM, bf16", 1979e12 / 2, 3.35e12,
                        "NVIDIA H100 datasheet: 1,979 TFLOPS bf16 with sparsity (989.5 dense), 3.35 TB/s")


def cpu_machine(bandwidth: dict, vs_transformers: dict, profile: dict) -> Machine:
    """This project's CPU as recorded by ``benchmarks/``, in float32.

    bandwidth: ``cpu_bandwidth.json``: the memory roof is the rate PyTorch's float32 matrix-vector
    product streams the largest recorded matrix (14336 x 4096, a 7B-sized weight).
    vs_transformers, profile: ``vs_transformers.json`` and ``profile_share.json``: the compute roof
    is the rate of the weight matrix products in the recorded 1,024-token prefill (their FLOPs over
    the share of the prefill's time the profiler puts in ``aten::mm``). That is a rate the machine
    was seen to reach, so a lower bound on its peak.
    """
    gemv = bandwidth["gemv_weight_read_gb_per_s"]
    largest = max(gemv, key=lambda shape: int(shape.split("x")[0]) * int(shape.split("x")[1]))  # "14336x4096"
    cfg = vs_transformers["config"]
    args = ModelArgs(dim=cfg["dim"], n_layers=cfg["layers"], head_dim=cfg["dim"] // cfg["heads"],
                     hidden_dim=profile["config"]["hidden_dim"], n_heads=cfg["heads"],
                     n_kv_heads=cfg["kv_heads"], vocab_size=cfg["vocab"], sliding_window=cfg["window"])
    mm_flops = 2 * matmul_params(args) * cfg["prefill"]
    mm_seconds = vs_transformers["timings"]["ours_prefill"]["median_s"] * profile["prefill_self_cpu_share"]["aten::mm"]
    return Machine(f"this CPU ({bandwidth['machine']['cpu_cores']} cores), float32", mm_flops / mm_seconds,
                   gemv[largest] * 1e9,
                   f"benchmarks/results: float32 GEMV of a {largest} matrix {gemv[largest]} GB/s; "
                   f"matrix products of the recorded {cfg['prefill']}-token prefill")


def matmul_params(args: ModelArgs) -> int:
    """Parameters a token is multiplied by: every weight matrix of the blocks and the output head.
    (The embedding table is looked up, not multiplied; the norm gains are element-wise.)"""
    c = parameter_counts(args)
    return c["feed-forward (SwiGLU)"] + c["attention (wq wk wv wo)"] + c["output head"]


def kv_bytes_per_token(args: ModelArgs, bytes_per_value: int = 2) -> int:
    """Bytes of keys and values one token adds to the cache: layers x 2 x kv heads x head_dim x bytes."""
    return args.n_layers * 2 * args.n_kv_heads * args.head_dim * bytes_per_value


def keys_seen(args: ModelArgs, past: int, tokens: int) -> int:
    """Query-key pairs of ``tokens`` new tokens at positions past .. past + tokens - 1, each seeing
    the min(position + 1, W) most recent positions, itself included."""
    W = args.sliding_window
    total = 0
    for p in range(past, past + tokens):
        total += p + 1 if W is None else min(p + 1, W)
    return total


@dataclass(frozen=True)
class Cost:
    """The work of one forward pass: FLOPs and bytes read or written from memory."""
    flops: float
    bytes: float
    tokens: int = 1          # new tokens the pass produces logits for (all sequences together)

    @property
    def intensity(self) -> float:
        """Arithmetic intensity, FLOP per byte."""
        return self.flops / self.bytes

    def seconds(self, machine: Machine) -> float:
        """The least time ``machine`` needs: the larger of compute time and memory time."""
        return max(self.flops / machine.peak_flops, self.bytes / machine.bandwidth)

    def bound(self, machine: Machine) -> str:
        """'memory' below the machine's ridge point, 'compute' above it."""
        return "memory" if self.intensity < machine.ridge else "compute"

    def tokens_per_second(self, machine: Machine) -> float:
        """The ceiling on tokens per second this pass allows on ``machine``."""
        return self.tokens / self.seconds(machine)


def forward_cost(args: ModelArgs, tokens: int, batch: int = 1, past: int = 0,
                 bytes_per_value: int = 2) -> Cost:
    """FLOPs and bytes of one forward pass over ``tokens`` new tokens in each of ``batch`` sequences
    that already hold ``past`` tokens in a rolling cache.

    FLOPs: 2 x matmul_params per token (the "2N" rule) plus 4 x layers x heads x head_dim per
    query-key pair (scores and weighted values). Bytes: every weight once (one embedding row per
    token instead of the table), the cached keys and values every sequence attends to (at most W
    positions), and the new tokens' keys and values written to the cache.
    """
    n = tokens * batch
    attn = 4 * args.n_layers * args.n_heads * args.head_dim * keys_seen(args, past, tokens) * batch
    flops = 2 * matmul_params(args) * n + attn
    weights = (matmul_params(args) + (2 * args.n_layers + 1) * args.dim + n * args.dim) * bytes_per_value
    cached = past if args.sliding_window is None else min(past, args.sliding_window)
    kv = batch * (cached + tokens) * kv_bytes_per_token(args, bytes_per_value)
    return Cost(float(flops), float(weights + kv), tokens=n)


def decode_cost(args: ModelArgs, batch: int = 1, context: int = 0, bytes_per_value: int = 2) -> Cost:
    """One decode step: one new token for each of ``batch`` sequences with ``context`` tokens so far."""
    return forward_cost(args, 1, batch=batch, past=context, bytes_per_value=bytes_per_value)


def prefill_cost(args: ModelArgs, seq_len: int, batch: int = 1, bytes_per_value: int = 2,
                 chunk: Optional[int] = None) -> Cost:
    """A prompt of ``seq_len`` tokens prefilled in chunks of ``chunk`` (default W) tokens: the sum
    of the passes (each chunk reads the weights again)."""
    chunk = chunk or args.sliding_window or seq_len
    flops = nbytes = 0.0
    for c0 in range(0, seq_len, chunk):
        c = forward_cost(args, min(chunk, seq_len - c0), batch=batch, past=c0, bytes_per_value=bytes_per_value)
        flops, nbytes = flops + c.flops, nbytes + c.bytes
    return Cost(flops, nbytes, tokens=seq_len * batch)
