"""Memory bandwidth of this machine as PyTorch sees it: a plain copy, and a float32 matrix-vector
product (what batch-1 decode does with every weight matrix).

    python benchmarks/cpu_bandwidth.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import record  # noqa: E402


def best_of(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mb", type=int, default=256, help="size of the copied buffer")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--no-record", action="store_true")
    a = p.parse_args()
    src = torch.ones(a.mb * 2**20 // 4)
    dst = torch.empty_like(src)
    copy_s = best_of(lambda: dst.copy_(src), a.repeats)
    copy_gbs = 2 * src.numel() * 4 / copy_s / 1e9          # read + write
    rows = {}
    for shape in [(32000, 512), (1792, 512), (512, 1792), (14336, 4096)]:
        w = torch.randn(*shape)
        x = torch.randn(1, shape[1])
        s = best_of(lambda: x @ w.T, a.repeats)
        rows[f"{shape[0]}x{shape[1]}"] = round(w.numel() * 4 / s / 1e9, 2)
        del w
    print(f"copy: {copy_gbs:.1f} GB/s (read + write); float32 GEMV weight-read GB/s: {rows}")
    if not a.no_record:
        record("cpu_bandwidth", {"copy_gb_per_s": round(copy_gbs, 2), "gemv_weight_read_gb_per_s": rows,
                                 "note": "best of repeats; GEMV GB/s counts the weight matrix bytes only"})


if __name__ == "__main__":
    main()
