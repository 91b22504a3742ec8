"""Where a forward pass's work meets a machine: the roofline.

``costs.forward_cost`` counts a pass's FLOPs and the bytes it moves; their ratio is the pass's
**arithmetic intensity**. A machine that
does ``peak_flops`` per second and moves ``bandwidth`` bytes per second cannot run the pass faster
than max(FLOPs / peak, bytes / bandwidth): below the **ridge point** peak / bandwidth (FLOP per
byte) a pass is memory-bound, above it compute-bound (Williams et al., 2009).
"""

from __future__ import annotations

from dataclasses import dataclass


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


@dataclass(frozen=True)
class Link:
    """A link between two devices: ``bandwidth`` in bytes/s in each direction (a ring all-reduce sends
    and receives at the same time, so its time is the bytes sent over this figure)."""
    name: str
    bandwidth: float
    source: str = ""


# The same datasheet: NVLink 900 GB/s and PCIe Gen5 128 GB/s, both counting the two directions together.
NVLINK_H100 = Link("NVLink (H100 SXM)", 900e9 / 2, "NVIDIA H100 datasheet: NVLink 900 GB/s, both directions")
PCIE5_X16 = Link("PCIe 5.0 x16", 128e9 / 2, "NVIDIA H100 datasheet: PCIe Gen5 128 GB/s, both directions")


CPU_DTYPES = ("float32", "bf16")


def cpu_machine(gemm_peak: dict, dtype: str = "float32") -> Machine:
    """This book's CPU as ``benchmarks/cpu_gemm_peak.py`` measured it, on its own (no model run).

    gemm_peak: ``cpu_gemm_peak.json``. The compute roof is ``peak_gflop_per_s[dtype]``, the best rate
    large matrix products reached in that dtype (float32: MKL's SGEMM; bf16: oneDNN's kernel for
    AVX512-BF16); a rate the machine was seen to reach, so a lower bound on its true peak. The memory
    roof is ``read_gb_per_s``, the rate a read-only sum over 1 GB reached (the median over fresh
    processes): the same for both dtypes, since bytes are bytes.
    """
    if dtype not in CPU_DTYPES:
        raise ValueError(f"dtype must be one of {CPU_DTYPES}, got {dtype!r}")
    missing = [k for k in ("peak_gflop_per_s", "read_gb_per_s", "machine") if k not in gemm_peak]
    if missing or dtype not in gemm_peak.get("peak_gflop_per_s", {}):
        raise ValueError(f"not a cpu_gemm_peak.json record: missing {missing or [f'peak_gflop_per_s.{dtype}']}")
    peak = gemm_peak["peak_gflop_per_s"][dtype] * 1e9
    cpu = gemm_peak.get("cpu", {}).get("model") or "CPU"
    return Machine(f"this CPU ({gemm_peak['machine']['cpu_cores']} cores), {dtype}", peak,
                   gemm_peak["read_gb_per_s"] * 1e9,
                   f"benchmarks/results/cpu_gemm_peak.json: {cpu}, best {dtype} matrix product "
                   f"{gemm_peak['peak_gflop_per_s'][dtype]} GFLOP/s, read {gemm_peak['read_gb_per_s']} GB/s")
