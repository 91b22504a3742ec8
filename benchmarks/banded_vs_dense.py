"""Sliding-window attention at long lengths: banded (O(S x W)) vs dense masked (O(S^2)).

One attention call of one layer, B=1, GQA heads, head_dim 128, W=4096 by default. Times are
interleaved medians in this process; peak memory of each (method, length) is measured in a fresh
subprocess (ru_maxrss above the process's baseline). Outputs are checked equal first.

    python benchmarks/banded_vs_dense.py [--lengths 4096 8192 16384 32768] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import PeakRSS, interleaved_medians, record  # noqa: E402

from mistral_nb.attention import additive_mask, attention_sdpa, banded_attention  # noqa: E402
from mistral_nb.masks import sliding_window_mask  # noqa: E402


def make_qkv(S, heads, kv_heads, head_dim, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(1, heads, S, head_dim, generator=g)
    k = torch.randn(1, kv_heads, S, head_dim, generator=g)
    v = torch.randn(1, kv_heads, S, head_dim, generator=g)
    return q, k, v


def run_once(method, S, W, heads, kv_heads, head_dim):
    """Used in a fresh subprocess: one call (mask included), then print the peak RSS increase in bytes."""
    q, k, v = make_qkv(S, heads, kv_heads, head_dim)
    with torch.inference_mode(), PeakRSS() as mem:
        if method == "dense":
            attention_sdpa(q, k, v, additive_mask(sliding_window_mask(S, W), q.dtype))
        else:
            banded_attention(q, k, v, W)
    print(json.dumps({"peak_increase_bytes": mem.peak_increase}))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[4096, 8192, 16384, 32768])
    p.add_argument("--window", type=int, default=4096)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-record", action="store_true")
    p.add_argument("--_once", nargs=2, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a._once:
        run_once(a._once[0], int(a._once[1]), a.window, a.heads, a.kv_heads, a.head_dim)
        return

    rows = []
    for S in a.lengths:
        q, k, v = make_qkv(S, a.heads, a.kv_heads, a.head_dim)
        bias = additive_mask(sliding_window_mask(S, a.window), q.dtype)   # built once per forward, shared by layers
        with torch.inference_mode():
            dense_out, banded_out = attention_sdpa(q, k, v, bias), banded_attention(q, k, v, a.window)
        err = ((dense_out - banded_out).norm() / dense_out.norm()).item()
        assert err < 1e-5, f"S={S}: banded differs from dense (relative error {err:.2e})"
        del dense_out, banded_out

        def dense():
            with torch.inference_mode():
                attention_sdpa(q, k, v, bias)

        def banded():
            with torch.inference_mode():
                banded_attention(q, k, v, a.window)

        t = interleaved_medians({"dense": dense, "banded": banded}, a.repeats, warmup=0)
        mem = {}
        for method in ("dense", "banded"):
            cmd = [sys.executable, __file__, "--_once", method, str(S), "--window", str(a.window),
                   "--heads", str(a.heads), "--kv-heads", str(a.kv_heads), "--head-dim", str(a.head_dim)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            mem[method] = json.loads(out)["peak_increase_bytes"]
        row = {"seq_len": S, "dense_s": round(t["dense"]["median_s"], 4), "banded_s": round(t["banded"]["median_s"], 4),
               "speedup": round(t["dense"]["median_s"] / t["banded"]["median_s"], 2),
               "dense_peak_mb": round(mem["dense"] / 1e6, 1), "banded_peak_mb": round(mem["banded"] / 1e6, 1),
               "rel_err": float(f"{err:.1e}")}
        print(row, flush=True)
        rows.append(row)
        del bias
    if not a.no_record:
        record("banded_vs_dense", {"config": {k: v for k, v in vars(a).items() if not k.startswith("_") and k != "no_record"},
                                   "rows": rows})


if __name__ == "__main__":
    main()
