"""KV-cache bytes: multi-head vs grouped-query, full vs rolling buffer.

Computed for Mistral 7B's config (bf16) at 4k/8k/16k/32k tokens, and measured on a small config by
running a real model and adding up the bytes of the cache tensors it allocated.

    python benchmarks/kv_cache_bytes.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import record  # noqa: E402

from mistral_nb import ModelArgs, RollingBufferCache, Transformer  # noqa: E402
from mistral_nb.costs import kv_cache_bytes  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[4096, 8192, 16384, 32768])
    p.add_argument("--no-record", action="store_true")
    a = p.parse_args()

    gqa = ModelArgs.mistral_7b()
    mha = gqa.replace(n_kv_heads=gqa.n_heads)
    computed = []
    for n in a.lengths:
        computed.append({"tokens": n,
                         "mha_full_gb": kv_cache_bytes(mha, n, rolling=False) / 1e9,
                         "gqa_full_gb": kv_cache_bytes(gqa, n, rolling=False) / 1e9,
                         "gqa_rolling_gb": kv_cache_bytes(gqa, n, rolling=True) / 1e9})
        computed[-1]["rolling_saving"] = round(computed[-1]["gqa_full_gb"] / computed[-1]["gqa_rolling_gb"], 3)
        print(computed[-1])

    # measured: a small model, W = 64; a "full" cache is a rolling cache with a window as long as the sequence
    small = ModelArgs(dim=64, n_layers=4, head_dim=16, hidden_dim=128, n_heads=4, n_kv_heads=1, vocab_size=128,
                      sliding_window=64)
    torch.manual_seed(0)
    model = Transformer(small).eval()
    measured = []
    for n in (64, 128, 256, 512):
        tokens = torch.randint(0, small.vocab_size, (1, n))
        rolling = RollingBufferCache.for_model(model, 1)
        full = RollingBufferCache.for_model(model, 1, window=n)
        with torch.inference_mode():
            for s in range(0, n, 64):
                out_r = model(tokens[:, s:s + 64], cache=rolling)
            out_f = model(tokens, cache=full)
        assert torch.allclose(out_r[:, -1], out_f[:, -1], atol=1e-4)   # same function, less memory
        measured.append({"tokens": n, "rolling_bytes": rolling.nbytes(), "full_bytes": full.nbytes(),
                         "predicted_rolling": kv_cache_bytes(small, n, bytes_per_value=4),
                         "predicted_full": kv_cache_bytes(small, n, bytes_per_value=4, rolling=False)})
        print(measured[-1])
        assert measured[-1]["rolling_bytes"] == measured[-1]["predicted_rolling"]
        assert measured[-1]["full_bytes"] == measured[-1]["predicted_full"]
    if not a.no_record:
        record("kv_cache_bytes", {"bytes_per_token_7b_bf16": kv_cache_bytes(gqa, 1),
                                  "bytes_per_token_mha_bf16": kv_cache_bytes(mha, 1),
                                  "computed_7b_bf16": computed, "measured_small_fp32": measured,
                                  "small_config": small.to_dict()})


if __name__ == "__main__":
    main()
