"""Where the time of a prefill and of a decode step goes: the share of the weight matrix products.

Same configuration as vs_transformers.py. PyTorch's profiler over a 1,024-token forward and over
decode steps through the rolling cache; records each operator's share of self CPU time.

    python benchmarks/profile_share.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).parent))
from common import record  # noqa: E402

from mistral_nb import ModelArgs, RollingBufferCache, Transformer  # noqa: E402


def shares(run) -> dict:
    """{operator: share of self CPU time} for the top operators of ``run()``."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:6]
    return {e.key: round(e.self_cpu_time_total / total, 3) for e in top}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prefill", type=int, default=1024)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--no-record", action="store_true")
    a = p.parse_args()
    args = ModelArgs(dim=512, n_layers=8, head_dim=64, hidden_dim=1792, n_heads=8, n_kv_heads=2,
                     vocab_size=32000, sliding_window=256)
    torch.manual_seed(0)
    model = Transformer(args).eval()
    prompt = torch.randint(0, args.vocab_size, (1, a.prefill))
    cache = RollingBufferCache.for_model(model, 1)
    token = torch.tensor([[5]])
    with torch.inference_mode():
        model(prompt)                                               # warm-up
        model(prompt[:, :64], cache=cache)
        prefill = shares(lambda: model(prompt))

        def decode():
            for _ in range(a.steps):
                model(token, cache=cache, check=False)

        decode_shares = shares(decode)
    print("prefill:", prefill)
    print("decode: ", decode_shares)
    if not a.no_record:
        record("profile_share", {"config": args.to_dict(), "prefill_tokens": a.prefill, "decode_steps": a.steps,
                                 "prefill_self_cpu_share": prefill, "decode_self_cpu_share": decode_shares})


if __name__ == "__main__":
    main()
