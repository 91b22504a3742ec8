"""Prefill and generation time of mistral_nb against transformers' MistralForCausalLM (SDPA).

Same random checkpoint (written by transformers, loaded by mistral_nb), same process, interleaved
runs, median of several. Ratio < 1 means mistral_nb is faster. Generation is timed both eager, then
with each side's compiled path — mistral_nb's compiled decode step (``generate(compile=True)``) and
transformers' static cache + ``compile_config`` — so that each side is also shown at its best.

    python benchmarks/vs_transformers.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import interleaved_medians, record  # noqa: E402

from mistral_nb import ModelArgs, RollingBufferCache, generate, load_model  # noqa: E402
from mistral_nb.generate import compiled_decoder, prefill  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--window", type=int, default=256)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--prefill", type=int, default=1024)
    p.add_argument("--prompt", type=int, default=64)
    p.add_argument("--new", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-record", action="store_true")
    a = p.parse_args()

    import transformers
    from transformers import CompileConfig, MistralConfig, MistralForCausalLM
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()

    args = ModelArgs(dim=a.dim, n_layers=a.layers, head_dim=a.dim // a.heads, hidden_dim=int(a.dim * 3.5),
                     n_heads=a.heads, n_kv_heads=a.kv_heads, vocab_size=a.vocab, sliding_window=a.window)
    torch.manual_seed(0)
    cfg = MistralConfig(vocab_size=args.vocab_size, hidden_size=args.dim, intermediate_size=args.hidden_dim,
                        num_hidden_layers=args.n_layers, num_attention_heads=args.n_heads,
                        num_key_value_heads=args.n_kv_heads, head_dim=args.head_dim,
                        sliding_window=args.sliding_window, rms_norm_eps=args.norm_eps,
                        max_position_embeddings=8192, tie_word_embeddings=False)
    hf = MistralForCausalLM(cfg).eval()
    hf.config._attn_implementation = "sdpa"
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        ours = load_model(d)

    long_prompt = torch.randint(3, args.vocab_size, (1, a.prefill))
    prompt = torch.randint(3, args.vocab_size, (1, a.prompt))

    @torch.inference_mode()
    def hf_prefill():
        hf(long_prompt, use_cache=False)

    @torch.inference_mode()
    def ours_prefill():
        ours(long_prompt)

    @torch.inference_mode()
    def hf_generate():
        hf.generate(prompt, max_new_tokens=a.new, min_new_tokens=a.new, do_sample=False,
                    pad_token_id=0, eos_token_id=None)

    def ours_generate():
        generate(ours, [prompt[0].tolist()], max_new_tokens=a.new, progress=False)

    def ours_generate_compiled():
        generate(ours, [prompt[0].tolist()], max_new_tokens=a.new, progress=False, compile=True)

    hf_compile = CompileConfig(dynamic=False)
    hf_compile._compile_all_devices = True      # transformers compiles only on accelerators unless told

    @torch.inference_mode()
    def hf_generate_compiled():
        hf.generate(prompt, max_new_tokens=a.new, min_new_tokens=a.new, do_sample=False, pad_token_id=0,
                    eos_token_id=None, cache_implementation="static", compile_config=hf_compile)

    # correctness first: the two must compute the same function before their speed means anything
    # (random weights at this width give near-tied logits, so compare logits, not greedy tokens)
    with torch.inference_mode():
        ref, got = hf(long_prompt).logits, ours(long_prompt)
    err = ((got - ref).norm() / ref.norm()).item()
    assert err < 1e-4, f"logits differ: relative error {err:.2e}"
    # ... and the compiled decode step computes the eager step's function (its first call compiles)
    with torch.inference_mode():
        cache = RollingBufferCache.for_model(ours, 1)
        prefill(ours, prompt, torch.arange(a.prompt)[None], cache)
        step = prompt[:, -1:]
        ref = ours(step, cache=copy.deepcopy(cache))
        got = compiled_decoder(ours)(step, cache=copy.deepcopy(cache), check=False)
    err = ((got - ref).norm() / ref.norm()).item()
    assert err < 1e-4, f"compiled decode step differs from eager: relative error {err:.2e}"

    res = interleaved_medians({"hf_prefill": hf_prefill, "ours_prefill": ours_prefill,
                               "hf_generate": hf_generate, "ours_generate": ours_generate,
                               "ours_generate_compiled": ours_generate_compiled,
                               "hf_generate_compiled": hf_generate_compiled}, a.repeats)
    med = {k: v["median_s"] for k, v in res.items()}
    summary = {
        "config": {k: v for k, v in vars(a).items() if k not in ("no_record",)},
        "transformers": transformers.__version__,
        "timings": res,
        "prefill_ratio": round(med["ours_prefill"] / med["hf_prefill"], 3),
        "generate_ratio": round(med["ours_generate"] / med["hf_generate"], 3),
        "generate_ratio_compiled": round(med["ours_generate_compiled"] / med["hf_generate"], 3),
        "generate_ratio_compiled_vs_hf_compiled": round(med["ours_generate_compiled"] / med["hf_generate_compiled"], 3),
        "hf_compiled_vs_hf_eager": round(med["hf_generate_compiled"] / med["hf_generate"], 3),
        "decode_tokens_per_s": {k.removesuffix("_generate").replace("_generate_", " "): round(a.new / v, 1)
                                for k, v in med.items() if "generate" in k},
    }
    for k, v in summary.items():
        if k not in ("config", "timings"):
            print(f"{k}: {v}")
    if not a.no_record:
        record("vs_transformers", summary)


if __name__ == "__main__":
    main()
