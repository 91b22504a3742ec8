"""On a GPU: batch-1 decode of a 7B-sized model with random bf16 weights, and 16k prefill attention.

1. copy bandwidth: best of 10 device-to-device copies of 1 GiB (read + write bytes per second);
2. decode tokens/s, eager and with the compiled decode step (``generate(compile=...)``), and the
   bytes each token reads (weights + the KV cache it attends to) per second, against 1.;
3. one attention call at S = 16,384, W = 4,096 (32 query heads, 8 KV heads, head_dim 128), banded vs
   dense masked, and a whole 16k-token forward of the model with each path.

Random weights give the same work as the real ones (only the values differ). Times are wall times
of calls synchronised with the GPU before and after (``common.timed``); medians of ``--repeats``
interleaved runs after one warm-up.

    python benchmarks/gpu_decode.py                       # on a CUDA machine: records results/gpu_decode.json
    python benchmarks/gpu_decode.py --tiny --device cpu --no-compile --no-record   # smoke test of the script
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import interleaved_medians, record, timed  # noqa: E402

import mistral_nb.model as model_module  # noqa: E402
from mistral_nb import ModelArgs, Transformer, generate  # noqa: E402
from mistral_nb.checkpoint import empty_model  # noqa: E402
from mistral_nb.attention import additive_mask, attention_sdpa, banded_attention  # noqa: E402
from mistral_nb.costs import kv_cache_bytes  # noqa: E402
from mistral_nb.masks import sliding_window_mask  # noqa: E402
from mistral_nb.costs import weights_read_per_token  # noqa: E402


def medians(fns: dict, device, repeats: int) -> dict:
    """{name: median seconds} of interleaved, GPU-synchronised runs (one warm-up call each)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    return {name: r["median_s"] for name, r in interleaved_medians(fns, repeats, sync=sync).items()}


def random_model(args: ModelArgs, device, dtype) -> Transformer:
    """A model with random weights built straight on ``device`` (meta first: no CPU copy)."""
    model = empty_model(args).to(dtype).to_empty(device=device).eval()
    g = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02, generator=g)
    return model


def copy_gb_per_s(device, nbytes: int) -> float:
    x = torch.empty(nbytes, dtype=torch.uint8, device=device)
    y = torch.empty_like(x)
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    best = min(timed(lambda: y.copy_(x), sync) for _ in range(10))
    return 2 * nbytes / best / 1e9                                            # read + write


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="a tiny config (to check the script itself)")
    p.add_argument("--prompt", type=int, default=512)
    p.add_argument("--new", type=int, default=128)
    p.add_argument("--seq", type=int, default=16384, help="length of the prefill comparison")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--mode", default="reduce-overhead", help="torch.compile mode of the decode step")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--no-record", action="store_true")
    a = p.parse_args()
    device, dtype = torch.device(a.device), torch.bfloat16
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_decode.py: no CUDA device (run with --device cpu --tiny to check the script)")
    args = ModelArgs.tiny(sliding_window=64) if a.tiny else ModelArgs.mistral_7b()
    seq = min(a.seq, 8 * args.sliding_window) if a.tiny else a.seq
    out = {"config": {k: v for k, v in vars(a).items() if k != "no_record"}, "dtype": "bfloat16"}

    out["copy_gb_per_s"] = round(copy_gb_per_s(device, (1 << 30) if not a.tiny else (1 << 24)), 1)
    print(f"copy bandwidth (read + write): {out['copy_gb_per_s']} GB/s")

    model = random_model(args, device, dtype)
    prompt = [torch.randint(3, args.vocab_size, (a.prompt,)).tolist()]
    # decode time = generating new + 1 tokens minus generating 1 (the prefill and the first sample)
    variants = {"eager": False} if a.no_compile else {"eager": False, "compiled": a.mode}
    decode = {}
    for name, compile in variants.items():
        if compile:
            generate(model, prompt, max_new_tokens=4, compile=compile)      # compiles (not timed)
        t = medians({"long": lambda: generate(model, prompt, max_new_tokens=a.new + 1, compile=compile),
                     "short": lambda: generate(model, prompt, max_new_tokens=1, compile=compile)}, device, a.repeats)
        tps = a.new / (t["long"] - t["short"])
        kv = kv_cache_bytes(args, a.prompt + a.new // 2)                    # the cache a middle token attends to
        read = weights_read_per_token(args, 2) + kv
        decode[name] = {"tokens_per_s": round(tps, 1), "bytes_per_token": read,
                        "read_gb_per_s": round(tps * read / 1e9, 1)}
        print(f"decode {name:9s}: {tps:7.1f} tokens/s, {tps * read / 1e9:7.1f} GB/s of weights + KV read")
    out["decode"] = decode

    H, K, D, W = args.n_heads, args.n_kv_heads, args.head_dim, args.sliding_window
    g = torch.Generator(device=device).manual_seed(1)
    q = torch.randn(1, H, seq, D, device=device, dtype=dtype, generator=g)
    k, v = (torch.randn(1, K, seq, D, device=device, dtype=dtype, generator=g) for _ in range(2))
    bias = additive_mask(sliding_window_mask(seq, W, device=device), dtype)
    with torch.inference_mode():
        dense_out, banded_out = attention_sdpa(q, k, v, bias), banded_attention(q, k, v, W)
        err = ((dense_out.float() - banded_out.float()).norm() / dense_out.float().norm()).item()
        assert err < 1e-2, f"banded differs from dense at S={seq}: relative error {err:.2e} (bf16)"
        t = medians({"dense": lambda: attention_sdpa(q, k, v, bias),
                     "banded": lambda: banded_attention(q, k, v, W)}, device, a.repeats)
        t_dense, t_banded = t["dense"], t["banded"]
    out["attention"] = {"seq_len": seq, "window": W, "dense_s": t_dense, "banded_s": t_banded,
                        "speedup": round(t_dense / t_banded, 2)}
    print(f"attention S={seq}, W={W}: dense {t_dense * 1e3:.1f} ms, banded {t_banded * 1e3:.1f} ms, "
          f"{t_dense / t_banded:.2f}x")
    del q, k, v, bias, dense_out, banded_out

    tokens = torch.randint(3, args.vocab_size, (1, seq), device=device)
    use_banded = model_module.use_banded
    with torch.inference_mode():
        t_banded = medians({"banded": lambda: model(tokens, last_only=True)}, device, a.repeats)["banded"]
        model_module.use_banded = lambda S, window: False                  # force the dense masked path
        try:
            t_dense = medians({"dense": lambda: model(tokens, last_only=True)}, device, a.repeats)["dense"]
        finally:
            model_module.use_banded = use_banded
    out["prefill"] = {"seq_len": seq, "dense_s": t_dense, "banded_s": t_banded, "speedup": round(t_dense / t_banded, 2)}
    print(f"prefill of {seq} tokens: dense {t_dense:.3f} s, banded {t_banded:.3f} s, {t_dense / t_banded:.2f}x")
    if device.type == "cuda":
        out["peak_gpu_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
    if not a.no_record:
        record("gpu_decode", out)


if __name__ == "__main__":
    main()
