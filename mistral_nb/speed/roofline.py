"""Where a forward pass's work meets a machine: the roofline.

``costs.forward_cost`` counts a pass's FLOPs and the bytes it moves; their ratio is the pass's
**arithmetic intensity**. A machine that
does ``peak_flops`` per second and moves ``bandwidth`` bytes per second cannot run the pass faster
than max(FLOPs / peak, bytes / bandwidth): below the **ridge point** peak / bandwidth (FLOP per
byte) a pass is memory-bound, above it compute-bound (Williams et al., 2009).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import ModelArgs
from ..costs import matmul_params


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
