"""This CPU's two roofs, measured apart from any model: the peak FLOP/s of large matrix products in
float32 and in bf16, and the memory read bandwidth; with the CPU model, its vector extensions and the
kernels PyTorch dispatches to.

* compute: ``x @ w.T`` (what ``nn.Linear`` does) for a few large shapes, in float32 (MKL's SGEMM) and in
  bf16 (oneDNN), and bf16 through oneDNN's packed weight (``mistral_nb.speed.cpu_pack``, the
  ``pack=True`` path); each is the best of ``--repeats`` timed calls after one warm-up. The peak of
  a dtype is the best rate any shape and path reached: a rate the machine was seen to reach, so a lower
  bound on what its arithmetic units could do.
* memory: the read-only sum of a 1 GB float32 buffer (``cpu_7b.bandwidth``, the same method as
  ``benchmarks/cpu_7b.py``), each time in a fresh process (one process's rate varies between
  processes on this virtual machine; it is steady within one), the median over ``--processes``.
* kernels: one small product of each dtype in a child process run with ``ONEDNN_VERBOSE=1`` and
  ``MKL_VERBOSE=1``; the implementation names oneDNN and MKL print are recorded (for bf16 on a CPU
  with AVX512-BF16 and no AMX, oneDNN's ``brg_matmul:avx512_core_bf16``).

    python benchmarks/cpu_gemm_peak.py             # a quiet machine: records results/cpu_gemm_peak.json
    python benchmarks/cpu_gemm_peak.py --quick --no-record    # small shapes, a smoke run (tests)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import record  # noqa: E402
from cpu_bandwidth import best_of  # noqa: E402  (the shortest of repeated calls, after a warm-up)

# (tokens, in features, out features): prefills of 1,024 and 128 tokens (benchmarks/cpu_7b.py's prompt)
# through w1 of Mistral 7B, and two squares
SHAPES = [(1024, 4096, 14336), (128, 4096, 14336), (4096, 4096, 4096), (2048, 4096, 4096)]
QUICK_SHAPES = [(64, 256, 512)]
# the vector extensions that decide which kernels run (lscpu / /proc/cpuinfo flag names)
EXTENSIONS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx512_fp16", "amx_tile", "amx_bf16",
              "amx_int8")


def cpu_description() -> dict:
    """The CPU's model name and which of ``EXTENSIONS`` it has, from /proc/cpuinfo (Linux)."""
    info = {"model": None, "has": [], "lacks": list(EXTENSIONS)}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    info.update(model=fields.get("model name"), family=fields.get("cpu family"), model_number=fields.get("model"),
                has=[e for e in EXTENSIONS if e in flags], lacks=[e for e in EXTENSIONS if e not in flags])
    info["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    return info


def packed_product(x: torch.Tensor, w: torch.Tensor):
    """``x @ w.T`` in bf16 through oneDNN's packed weight (``PackedLinear``), or None where unavailable."""
    from mistral_nb.speed.cpu_pack import PackedLinear, pack_available

    if not pack_available():
        return None
    layer = PackedLinear(w.shape[1], w.shape[0])
    layer.set_weight(w)
    return lambda: layer(x)


def gemm_rates(shapes, repeats: int) -> list:
    """GFLOP/s of every shape in float32, bf16 and packed bf16 (2 x tokens x in x out FLOPs per call)."""
    rows = []
    for m, k, n in shapes:
        torch.manual_seed(0)
        x, w = torch.randn(m, k), torch.randn(n, k)
        xb, wb = x.bfloat16(), w.bfloat16()
        paths = {"float32": lambda: x @ w.T, "bf16": lambda: xb @ wb.T, "bf16 packed": packed_product(xb, wb)}
        flops = 2 * m * k * n
        for path, fn in paths.items():
            if fn is None:
                continue
            s = best_of(fn, repeats)
            rows.append({"shape": [m, k, n], "path": path, "dtype": "float32" if path == "float32" else "bf16",
                         "best_s": round(s, 5), "gflop_per_s": round(flops / s / 1e9, 1)})
            print(f"{m} x {k} -> {n}, {path:11s}: {flops / s / 1e9:7.1f} GFLOP/s", flush=True)
        del x, w, xb, wb, paths
    return rows


KERNEL_PROBE = """
import torch
a, b = torch.randn(256, 512), torch.randn(512, 512)
print("PROBE float32", flush=True); a @ b.T
print("PROBE bf16", flush=True); a.bfloat16() @ b.bfloat16().T
"""


def kernels() -> dict:
    """The implementations oneDNN and MKL report for one float32 and one bf16 product (verbose mode)."""
    env = dict(os.environ, ONEDNN_VERBOSE="1", MKL_VERBOSE="1", OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", KERNEL_PROBE], capture_output=True, text=True, env=env,
                         timeout=120).stdout
    found, current = {"float32": [], "bf16": []}, None
    for line in out.splitlines():
        if line.startswith("PROBE "):
            current = line.split()[1]
        elif current and line.startswith("MKL_VERBOSE") and "GEMM" in line:
            found[current].append("MKL " + line.split()[1].split("(")[0])
        elif current and line.startswith("onednn_verbose") and ",exec," in line:
            parts = line.split(",")
            found[current].append(f"oneDNN {parts[parts.index('exec') + 2]} {parts[parts.index('exec') + 3]}")
        elif line.startswith("onednn_verbose") and ",isa:" in line:
            found["onednn_isa"] = line.split("isa:", 1)[1]
    return found


def read_bandwidths(processes: int, gb: float) -> list:
    """The read rate (GB/s, best of 5 sums) of a ``gb`` GB buffer, each in a fresh process."""
    code = (f"import sys, json; sys.path.insert(0, {str(HERE)!r}); from cpu_7b import bandwidth; "
            f"print(json.dumps(bandwidth({gb})))")
    rates = []
    for _ in range(processes):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
        rates.append(json.loads(done.stdout.strip().splitlines()[-1])["read_gb_per_s"])
        print(f"read bandwidth: {rates[-1]:.1f} GB/s", flush=True)
    return rates


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="Cost: about 2 minutes on 2 cores and 2 GB of RAM; overwrites the committed "
               "benchmarks/results/cpu_gemm_peak.json (not with --quick or --no-record). Nothing else should run "
               "meanwhile: a busy machine lowers every rate.")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per shape and path (the best counts)")
    p.add_argument("--processes", type=int, default=5, help="fresh processes measuring the read bandwidth")
    p.add_argument("--quick", action="store_true", help="small shapes, 0.05 GB buffers: a smoke run")
    p.add_argument("--no-record", action="store_true")
    a = p.parse_args()
    cpu = cpu_description()
    print("CPU:", cpu, flush=True)
    found = kernels()
    print("kernels:", found, flush=True)
    rows = gemm_rates(QUICK_SHAPES if a.quick else SHAPES, a.repeats)
    reads = read_bandwidths(a.processes, 0.05 if a.quick else 1.0)
    peak = {d: max(r["gflop_per_s"] for r in rows if r["dtype"] == d) for d in ("float32", "bf16")}
    result = {"cpu": cpu, "kernels": found, "threads": torch.get_num_threads(), "gemm": rows,
              "peak_gflop_per_s": peak, "bf16_over_float32": round(peak["bf16"] / peak["float32"], 2),
              "read_gb_per_s_by_process": reads, "read_gb_per_s": round(statistics.median(reads), 2),
              "note": "peak = best rate of any shape and path (best of repeats); read = median over fresh "
                      "processes of the best of 5 sums over 1 GB"}
    print(json.dumps({k: result[k] for k in ("peak_gflop_per_s", "bf16_over_float32", "read_gb_per_s")}))
    if a.quick or a.no_record:
        print("nothing recorded")
    else:
        record("cpu_gemm_peak", result)


if __name__ == "__main__":
    main()
