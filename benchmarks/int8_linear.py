"""One linear layer of Mistral 7B on the CPU: int8 weights vs bf16/float32, and F.linear vs matmul.

For the weight shapes of a 7B block (w1/w3: 14336 x 4096, w2: 4096 x 14336, wq/wo: 4096 x 4096) and
1 to 128 rows (tokens), interleaved medians in one process of:

* ``int8_kernel``   torch._weight_int8pack_mm (``quant.int8_kernel_matmul``): reads the int8 matrix, scales inside;
* ``int8_cast``     ``quant.cast_matmul``: the int8 matrix cast into a reused buffer of the activation
                    dtype, F.linear, then the scales;
* ``dense_linear``  F.linear with the weight stored in the activation dtype (bf16 or float32);
* ``dense_matmul``  x @ W.T, the same product written as a matmul.

From the times it derives, per activation dtype, the largest row count at which the int8 kernel
still beats cast-and-multiply on every shape (``quant.INT8_KERNEL_MAX_ROWS`` is set from it), and the
ratio F.linear / matmul.

    python benchmarks/int8_linear.py              # ~3 minutes on 2 cores; records results/int8_linear.json
    python benchmarks/int8_linear.py --quick      # one small shape, nothing recorded
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))
from common import interleaved_medians, record  # noqa: E402

from mistral_nb.speed.int8 import cast_matmul, int8_kernel_matmul, quantize_int8  # noqa: E402

SHAPES = {"w1/w3 14336x4096": (14336, 4096), "w2 4096x14336": (4096, 14336), "wq/wo 4096x4096": (4096, 4096)}
ROWS = [1, 2, 4, 8, 16, 32, 128]
DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--quick", action="store_true")
    a = p.parse_args()
    shapes = {"small 512x256": (512, 256)} if a.quick else SHAPES
    rows_list = [1, 16] if a.quick else ROWS
    torch.manual_seed(0)
    table = []
    for shape_name, (n_out, n_in) in shapes.items():
        w = torch.randn(n_out, n_in) * 0.02
        q, scale = quantize_int8(w)
        for dname, dt in DTYPES.items():
            wd, s = w.to(dt), scale.to(dt)
            for rows in rows_list:
                x = torch.randn(rows, n_in).to(dt)
                fns = {"int8_kernel": lambda: int8_kernel_matmul(x, q, s),
                       "int8_cast": lambda: cast_matmul(x, q, s),
                       "dense_linear": lambda: F.linear(x, wd),
                       "dense_matmul": lambda: x @ wd.T}
                res = interleaved_medians(fns, a.repeats if rows <= 32 else max(3, a.repeats // 2))
                row = {"shape": shape_name, "dtype": dname, "rows": rows,
                       **{k: round(v["median_s"] * 1e3, 3) for k, v in res.items()}}
                row["weight_gb_per_s_int8_kernel"] = round(n_out * n_in / (row["int8_kernel"] / 1e3) / 1e9, 1)
                row["weight_gb_per_s_dense"] = round(n_out * n_in * wd.element_size() / (row["dense_matmul"] / 1e3) / 1e9, 1)
                table.append(row)
                print({k: v for k, v in row.items()}, flush=True)
        del w, q, wd
    crossover = {}
    for dname in DTYPES:
        ok = [r for r in rows_list if all(t["int8_kernel"] < t["int8_cast"] for t in table
                                          if t["dtype"] == dname and t["rows"] == r)]
        best = 0
        for r in rows_list:                      # the unbroken run from 1 row up
            if r not in ok:
                break
            best = r
        crossover[dname] = best
    ratios = {dname: round(sum(t["dense_linear"] / t["dense_matmul"] for t in table if t["dtype"] == dname)
                           / sum(1 for t in table if t["dtype"] == dname), 3) for dname in DTYPES}
    print("int8 kernel faster up to rows:", crossover, "| mean F.linear / matmul time:", ratios)
    if not a.quick:
        record("int8_linear", {"table_ms": table, "int8_kernel_max_rows": crossover,
                               "mean_linear_over_matmul": ratios, "repeats": a.repeats,
                               "note": "interleaved medians in one process; ms per call; GB/s counts weight bytes"})


if __name__ == "__main__":
    main()
