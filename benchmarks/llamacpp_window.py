"""Where llama.cpp computes Mistral v0.1's function and where it does not: logits of a GGUF export.

A random small Mistral (4 layers, dim 256, GQA 8/2, window 64, Mistral's 32,000-token vocabulary)
is exported with ``save_gguf`` and run by llama.cpp (llama-cpp-python, float32 KV cache), on 4
sequences of 256 random tokens after BOS. For each band of positions (0-63, 64-127, 128-191, 192-255):

* llama.cpp (F32 file) against this package's model (window 64): max |logit difference|, argmax agreement;
* the same against this package's model with the window removed (``sliding_window=None``, full
  causal attention): the function llama.cpp computes;
* the BF16, Q8_0 and Q4_0 files against this package's full-attention model holding the same
  rounded weights (llama.cpp also rounds the activations of Q8_0 / Q4_0 products to 8 bits).

And the mask itself: ``book.conventions.dependence_mask`` on a one-layer model (S = 12, W = 3),
which chapter 05 reads when llama-cpp-python is not installed.

    LLAMA_CPP_PYTHON=/path/to/llama-venv/bin/python python benchmarks/llamacpp_window.py
    # records results/llamacpp_window.json; a minute on 2 cores
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))
from common import record  # noqa: E402

from mistral_nb import ModelArgs, Transformer  # noqa: E402
from mistral_nb.book.conventions import _llamacpp_mask_computed, keys_per_query  # noqa: E402
from mistral_nb.checkpoint.gguf import save_gguf  # noqa: E402
from mistral_nb.checkpoint.gguf_blocks import encode, dequantize_q4_0, dequantize_q8_0  # noqa: E402
from mistral_nb.checkpoint.llamacpp import PYTHON_ENV, llamacpp_available, llamacpp_logits, llamacpp_version  # noqa: E402

ARGS = ModelArgs(dim=256, n_layers=4, head_dim=32, hidden_dim=768, n_heads=8, n_kv_heads=2, vocab_size=32000,
                 norm_eps=1e-5, rope_theta=10000.0, sliding_window=64)


def random_model(args: ModelArgs, seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    model = Transformer(args).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.add_(0.1 * torch.randn_like(p))
            elif p.dim() == 2 and not name.startswith("tok_"):
                p.normal_(0, 0.08)                  # larger than init: logits spread over several nats
    return model


def rounded_copy(model: Transformer, quant: str, args: ModelArgs) -> Transformer:
    """``model`` without its window, every block matrix replaced by what the ``quant`` GGUF file holds."""
    full = Transformer(ModelArgs(**{**vars(args), "sliding_window": None})).eval()
    full.load_state_dict(model.state_dict())
    with torch.no_grad():
        for name, p in full.named_parameters():
            if p.dim() != 2:
                continue
            kind = quant if (name.startswith("layers.") or quant in ("F32", "BF16")) else "F16"
            if kind in ("BF16", "F16"):
                p.copy_(p.to(torch.bfloat16 if kind == "BF16" else torch.float16).float())
            elif kind != "F32":
                data = encode(p, kind).view(p.shape[0], -1)
                p.copy_((dequantize_q8_0 if kind == "Q8_0" else dequantize_q4_0)(data, p.shape[1]))
    return full


def bands(a: torch.Tensor, b: torch.Tensor, width: int) -> list:
    """Per band of ``width`` positions: max |a - b| and the fraction of equal argmaxes, (B, S, V) each."""
    out = []
    for start in range(0, a.shape[1], width):
        x, y = a[:, start:start + width], b[:, start:start + width]
        out.append({"positions": f"{start}-{start + x.shape[1] - 1}", "max_abs_diff": float(f"{(x - y).abs().max():.3g}"),
                    "argmax_agreement": round(float((x.argmax(-1) == y.argmax(-1)).float().mean()), 4)})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--python", help=f"interpreter with llama_cpp (default: this one, or ${PYTHON_ENV})")
    p.add_argument("--no-record", action="store_true")
    a = p.parse_args()
    if not llamacpp_available(a.python):
        sys.exit(f"llamacpp_window: llama_cpp is not importable; pass --python or set ${PYTHON_ENV}")
    torch.set_num_threads(2)
    model = random_model(ARGS)
    W = ARGS.sliding_window
    tokens = torch.randint(3, ARGS.vocab_size, (4, 4 * W), generator=torch.Generator().manual_seed(1))
    tokens[:, 0] = 1
    with torch.no_grad():
        ours = model(tokens)
        full = rounded_copy(model, "F32", ARGS)(tokens)
    result = {"model": {k: v for k, v in vars(ARGS).items()}, "sequences": tokens.shape[0], "seq_len": tokens.shape[1],
              "kv_cache": "f32"}
    with tempfile.TemporaryDirectory() as tmp:
        files = {q: save_gguf(model, Path(tmp) / f"small_{q}.gguf", quant=q) for q in ("F32", "BF16", "Q8_0", "Q4_0")}
        llama = {q: llamacpp_logits(f, tokens, python=a.python) for q, f in files.items()}
    result["llamacpp_vs_ours_windowed"] = bands(llama["F32"], ours, W)
    result["llamacpp_vs_ours_full_attention"] = bands(llama["F32"], full, W)
    result["quantized_vs_ours_full_attention_same_weights"] = {}
    for q in ("BF16", "Q8_0", "Q4_0"):
        with torch.no_grad():
            same = rounded_copy(model, q, ARGS)(tokens)
        result["quantized_vs_ours_full_attention_same_weights"][q] = bands(llama[q], same, W)
    mask = _llamacpp_mask_computed(12, 3, a.python)
    result["mask"] = {"seq_len": 12, "window": 3, "keys_per_query": keys_per_query(mask),
                      "rows": mask.int().tolist(), "method": "book.conventions.dependence_mask, one layer"}
    result["llama_cpp_python"] = llamacpp_version(a.python)
    for key in ("llamacpp_vs_ours_windowed", "llamacpp_vs_ours_full_attention"):
        print(key, result[key])
    print("quantized:", result["quantized_vs_ours_full_attention_same_weights"])
    print("llama.cpp keys per query (W = 3):", result["mask"]["keys_per_query"])
    if not a.no_record:
        record("llamacpp_window", result)


if __name__ == "__main__":
    main()
