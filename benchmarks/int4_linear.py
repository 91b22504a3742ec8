"""One linear layer of Mistral 7B on the CPU: int4 weights (PyTorch's int4 kernel, or dequantize and
multiply) against int8 and bf16.

For the weight shapes of a 7B block (w1/w3: 14336 x 4096, w2: 4096 x 14336, wq/wo: 4096 x 4096) and
1 to 128 rows (tokens), interleaved medians in one process of:

* ``int4_kernel``   ``torch._weight_int4pack_mm_for_cpu`` (``Int4Linear`` for a few rows), group 32;
* ``int4_dequant``  the packed int4 matrix dequantized into a reused buffer, then a matrix product
                    (``Int4Linear`` for many rows);
* ``int8_kernel``   ``torch._weight_int8pack_mm`` (``Int8Linear``'s decode path);
* ``dense_matmul``  ``x @ W.T`` with the weight in the activation dtype.

From the times it derives, per activation dtype, the largest row count at which the int4 kernel
still beats dequantize-and-multiply on every shape (``speed.int4.INT4_KERNEL_MAX_ROWS`` is set from it).

    python benchmarks/int4_linear.py              # a few minutes on 2 cores; records results/int4_linear.json
    python benchmarks/int4_linear.py --quick      # one small shape, nothing recorded
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))
from common import interleaved_medians, record  # noqa: E402

from mistral_nb.speed import int4pack  # noqa: E402
from mistral_nb.speed.int4 import Int4Linear  # noqa: E402
from mistral_nb.speed.int8 import int8_kernel_matmul, quantize_int8  # noqa: E402

SHAPES = {"w1/w3 14336x4096": (14336, 4096), "w2 4096x14336": (4096, 14336), "wq/wo 4096x4096": (4096, 4096)}
ROWS = [1, 2, 4, 8, 16, 32, 64, 128]
DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


def layer_of(w: torch.Tensor, dtype: torch.dtype) -> Int4Linear:
    linear = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
    linear.weight.data = w
    layer = Int4Linear.from_linear(linear, group_size=32, symmetric=True)
    layer.scales_and_zeros = layer.scales_and_zeros.to(dtype)
    return layer


def crossover(table: list, rows_list: list, dname: str) -> int:
    """The largest row count of the unbroken run from 1 row up where the kernel wins on every shape."""
    best = 0
    for r in rows_list:
        if not all(t["int4_kernel"] < t["int4_dequant"] for t in table if t["dtype"] == dname and t["rows"] == r):
            break
        best = r
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--quick", action="store_true")
    a = p.parse_args()
    if int4pack.kernel_layout() is None:
        sys.exit("int4_linear: this PyTorch build has no int4 CPU kernel (torch._weight_int4pack_mm_for_cpu)")
    shapes = {"small 512x256": (512, 256)} if a.quick else SHAPES
    rows_list = [1, 16, 64] if a.quick else ROWS
    torch.manual_seed(0)
    table = []
    for shape_name, (n_out, n_in) in shapes.items():
        w = torch.randn(n_out, n_in) * 0.02
        q8, s8 = quantize_int8(w)
        for dname, dt in DTYPES.items():
            layer, wd, s = layer_of(w, dt), w.to(dt), s8.to(dt)
            for rows in rows_list:
                x = torch.randn(rows, n_in).to(dt)
                fns = {"int4_kernel": lambda: torch.ops.aten._weight_int4pack_mm_for_cpu(
                           x, layer.qweight, 32, layer.scales_and_zeros),
                       "int4_dequant": lambda: layer._dequantized_matmul(x),
                       "int8_kernel": lambda: int8_kernel_matmul(x, q8, s),
                       "dense_matmul": lambda: x @ wd.T}
                res = interleaved_medians(fns, a.repeats if rows <= 32 else max(3, a.repeats // 2))
                row = {"shape": shape_name, "dtype": dname, "rows": rows,
                       **{k: round(v["median_s"] * 1e3, 3) for k, v in res.items()}}
                int4_bytes = layer.qweight.numel() + layer.scales_and_zeros.numel() * layer.scales_and_zeros.element_size()
                row["weight_gb_per_s_int4_kernel"] = round(int4_bytes / (row["int4_kernel"] / 1e3) / 1e9, 1)
                table.append(row)
                print(row, flush=True)
            del layer, wd
        del w, q8
    best = {dname: crossover(table, rows_list, dname) for dname in DTYPES}
    print("int4 kernel faster up to rows:", best)
    if not a.quick:
        record("int4_linear", {"table_ms": table, "int4_kernel_max_rows": best, "repeats": a.repeats,
                               "kernel_layout": vars(int4pack.kernel_layout()),
                               "note": "interleaved medians in one process; ms per call; int4 group 32 symmetric; "
                                       "GB/s counts the int4 bytes and the bf16/fp32 scales and zeros"})


if __name__ == "__main__":
    main()
