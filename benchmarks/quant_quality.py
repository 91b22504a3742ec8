"""How much int8 and int4 weights change a model's predictions, measured the way llama.cpp reports it.

For each weight format, against the unquantized model on the same tokens (``evals.agreement``, the
statistics of ``llama-perplexity --kl-divergence``): the perplexity ratio PPL(Q)/PPL(base), the mean
KL divergence of the next-token distributions, and the fraction of tokens whose most likely next token
is the same ("same top p"), each with its standard error. Activations are float32 everywhere, so the
differences are the weights' alone (one row runs the unquantized model in bf16, for scale).

* ``english``: the model trained on English (``experiments/results/english_swa``, bf16 weights) on
  held-out windows of 512 tokens; int8 and int4 (group 32 / 128, symmetric / zero point) with the
  output head in float and quantized; GPTQ int4 (calibrated on training windows); ggml's Q8_0 and
  Q4_0 rounding; and, when llama-cpp-python is available, llama.cpp itself on GGUF exports (which
  attends over the whole context: the model's window of 64 is not applied there).
* ``layer_7b``: one block of Mistral 7B's exact shapes (dim 4096, 14336, 32/8 heads) with the real
  vocabulary and random weights (std 0.02, as benchmarks/cpu_7b.py), on random tokens; also the
  relative error of the block's output.

    python benchmarks/quant_quality.py                     # ~20 min on 2 cores; records results/quant_quality.json
    python benchmarks/quant_quality.py --model experiments/results/english_v2_swa --corpus v2 --key english_v2
    python benchmarks/quant_quality.py --quick --no-record # a smoke run
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from common import RESULTS, command, machine  # noqa: E402

from mistral_nb import ModelArgs, Tokenizer, Transformer, load_model  # noqa: E402
from mistral_nb.checkpoint.gguf_blocks import dequantize_q4_0, dequantize_q8_0, encode  # noqa: E402
from mistral_nb.evals.agreement import Agreement  # noqa: E402
from mistral_nb.speed.gptq import quantize_model_gptq  # noqa: E402
from mistral_nb.speed.int4 import quantize_model_int4  # noqa: E402
from mistral_nb.speed.int8 import quantize_model  # noqa: E402

INT4 = {"int4 g32 symmetric": (32, True), "int4 g32 zero point": (32, False),
        "int4 g128 symmetric": (128, True), "int4 g128 zero point": (128, False)}


def ggml_rounded(model: Transformer, kind: str) -> Transformer:
    """The blocks' linear weights replaced by what a ``kind`` (Q8_0 / Q4_0) GGUF file holds."""
    out = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in out.named_parameters():
            if name.startswith("layers.") and p.dim() == 2:
                data = encode(p, kind).view(p.shape[0], -1)
                p.copy_((dequantize_q8_0 if kind == "Q8_0" else dequantize_q4_0)(data, p.shape[1]))
    return out


def variants(model: Transformer, calibration, gptq: bool):
    """(name, builder) pairs; builders return the quantized copy, or raise ValueError if the shapes do not allow it."""
    yield "bf16 activations (no quantization)", lambda: copy.deepcopy(model).to(torch.bfloat16)
    yield "int8, head float", lambda: quantize_model(copy.deepcopy(model))
    yield "int8, head int8", lambda: quantize_model(copy.deepcopy(model), skip=())
    for name, (g, sym) in INT4.items():
        yield f"{name}, head float", lambda g=g, sym=sym: quantize_model_int4(copy.deepcopy(model), g, sym)
        yield f"{name}, head int4", lambda g=g, sym=sym: quantize_model_int4(copy.deepcopy(model), g, sym, skip=())
    if gptq:
        for name, (g, sym) in INT4.items():
            yield f"GPTQ {name}, head float", lambda g=g, sym=sym: quantize_model_gptq(
                copy.deepcopy(model), calibration, g, sym)
    yield "ggml Q8_0 rounding, head float", lambda: ggml_rounded(model, "Q8_0")
    yield "ggml Q4_0 rounding, head float", lambda: ggml_rounded(model, "Q4_0")


def evaluate(base: Transformer, builders, inputs: torch.Tensor, targets: torch.Tensor, keep: torch.Tensor,
             batch: int, extra=None, one_at_a_time: bool = False, probe=None) -> dict:
    """{name: Agreement summary} of every variant against ``base`` over the (n, S) inputs.

    All variants at once, batch by batch (small models: the base's logits are computed once per
    batch); or, ``one_at_a_time``, each variant built, scored against the base's logits of every
    batch (kept in memory) and freed before the next (large models); ``probe(model)``, if given, adds
    its value under "probe" to each variant's result (one-at-a-time only)."""
    results, stats = {}, {}
    builders = list(builders) + [(name, None) for name in (extra or {})]

    def build(name, make):
        try:
            return make().eval() if make else (extra[name])
        except ValueError as e:
            results[name] = {"not_applicable": str(e)}
            print(f"{name}: not applicable ({e})", flush=True)
            return None

    batches = [(inputs[b:b + batch], targets[b:b + batch], keep[b:b + batch]) for b in range(0, inputs.shape[0], batch)]
    with torch.no_grad():
        if one_at_a_time:
            refs = [base(x) for x, _, _ in batches]
            for name, make in builders:
                m = build(name, make)
                if m is not None:
                    stats[name] = Agreement()
                    for ref, (x, t, k) in zip(refs, batches):
                        stats[name].add(ref, m(x).float(), t, k)
                    if probe is not None:
                        results[name] = {"probe": probe(m)}
                del m
        else:
            models = {name: m for name, make in builders if (m := build(name, make)) is not None}
            stats = {name: Agreement() for name in models}
            for i, (x, t, k) in enumerate(batches):
                ref = base(x)
                for name, m in models.items():
                    stats[name].add(ref, m(x).float(), t, k)
                print(f"  batch {i + 1}/{len(batches)}", flush=True)
    for name, st in stats.items():
        results[name] = {**st.summary(), **results.get(name, {})}
        print(f"{name}: {results[name]}", flush=True)
    return results


def llamacpp_rows(model: Transformer, tmp: Path, python) -> dict:
    """{name: fn(inputs) -> llama.cpp logits} for F32, Q8_0 and Q4_0 GGUF exports of ``model``."""
    from mistral_nb.checkpoint.gguf import save_gguf
    from mistral_nb.checkpoint.llamacpp import llamacpp_logits

    rows = {}
    for quant in ("F32", "Q8_0", "Q4_0"):
        path = save_gguf(model, tmp / f"model_{quant}.gguf", quant=quant)
        rows[f"llama.cpp {quant} GGUF (whole-context attention)"] = (
            lambda x, path=path: llamacpp_logits(path, x, python=python))
    return rows


def english(a) -> dict:
    from mistral_nb.training.corpus import TokenStream, load_documents

    tok = Tokenizer.mistral_v1()
    model = load_model(HERE.parent / a.model).eval()                   # bf16 weights, held as float32
    val = TokenStream.from_documents(load_documents("val", corpus=a.corpus), tok)
    train = TokenStream.from_documents(load_documents("train", corpus=a.corpus)[:400], tok)
    windows = val.windows(a.seq_len, max_windows=a.windows)
    calibration = train.windows(a.seq_len, max_windows=a.calibration)[:, :-1]
    inputs, targets = windows[:, :-1], windows[:, 1:]
    keep = targets != tok.bos_id
    out = {"model": a.model, "corpus": a.corpus, "windows": int(windows.shape[0]), "seq_len": a.seq_len,
           "calibration_windows": int(calibration.shape[0]), "activations": "float32",
           "sliding_window": model.args.sliding_window}
    extra = {}
    import tempfile

    from mistral_nb.checkpoint.llamacpp import llamacpp_available, llamacpp_version

    with tempfile.TemporaryDirectory() as tmp:
        if llamacpp_available(a.llama_python):
            extra = llamacpp_rows(model, Path(tmp), a.llama_python)
            out["llama_cpp_python"] = llamacpp_version(a.llama_python)
        out["configs"] = evaluate(model, variants(model, calibration, not a.no_gptq), inputs, targets, keep,
                                  a.batch, extra)
    return out


def layer_7b(a) -> dict:
    args = ModelArgs(**{**vars(ModelArgs.mistral_7b()), "n_layers": 1})
    torch.manual_seed(0)
    with torch.device("meta"):
        model = Transformer(args)
    model = model.to_empty(device="cpu").eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.ones_like(p) if name.endswith("norm.weight") else torch.randn(p.shape, generator=gen) * 0.02)
            p.copy_(p.to(torch.bfloat16).float())                      # the benchmark's bf16 weights
    tokens = torch.randint(3, 32000, (a.layer_sequences, 65), generator=gen)
    tokens[:, 0] = 1
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    out = {"model": "ModelArgs.mistral_7b() with n_layers=1, random weights (std 0.02, bf16), random tokens",
           "sequences": int(tokens.shape[0]), "seq_len": int(inputs.shape[1]), "activations": "float32"}
    builders = [(n, b) for n, b in variants(model, None, False) if not n.startswith("bf16")]
    with torch.no_grad():
        h_ref = _block_output(model, inputs)
        update = (h_ref - model.tok_embeddings(inputs)).norm()

    def block_error(q):          # ||h_q - h|| / ||h - x||: the error relative to what the block adds
        return round(float((_block_output(q, inputs) - h_ref).norm() / update), 5)

    out["configs"] = evaluate(model, builders, inputs, targets, torch.ones_like(targets, dtype=torch.bool), 1,
                              one_at_a_time=True, probe=block_error)
    out["probe"] = "relative error of the block's update (its output minus its input) against the float block's"
    return out


def _block_output(model: Transformer, inputs: torch.Tensor) -> torch.Tensor:
    seen = {}
    handle = model.layers[0].register_forward_hook(lambda m, args, o: seen.update(h=o))
    try:
        model(inputs)
    finally:
        handle.remove()
    return seen["h"].float()


def gptq_verdicts(configs: dict) -> dict:
    """For each int4 variant: does GPTQ lower the mean KLD by more than twice the combined standard error?"""
    out = {}
    for name in INT4:
        rtn, gptq = configs.get(f"{name}, head float", {}), configs.get(f"GPTQ {name}, head float", {})
        if "mean_kld" in rtn and "mean_kld" in gptq:
            margin = 2 * (rtn["mean_kld_err"] ** 2 + gptq["mean_kld_err"] ** 2) ** 0.5
            out[name] = {"kld_round_to_nearest": rtn["mean_kld"], "kld_gptq": gptq["mean_kld"],
                         "helps": gptq["mean_kld"] < rtn["mean_kld"] - margin}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="experiments/results/english_swa")
    p.add_argument("--corpus", default="v1")
    p.add_argument("--key", default="english", help="the result's key in quant_quality.json (others are kept)")
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--windows", type=int, default=64, help="held-out windows scored")
    p.add_argument("--calibration", type=int, default=32, help="training windows GPTQ is calibrated on")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--layer-sequences", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-gptq", action="store_true")
    p.add_argument("--no-layer", action="store_true", help="skip the 7B-shaped layer")
    p.add_argument("--llama-python", help="interpreter with llama_cpp (default: $LLAMA_CPP_PYTHON)")
    p.add_argument("--quick", action="store_true", help="4 windows of 128 tokens, 1 sequence for the layer")
    p.add_argument("--no-record", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.quick:
        a.windows, a.seq_len, a.calibration, a.layer_sequences = 4, 128, 4, 1
    path = RESULTS / "quant_quality.json"
    result = json.loads(path.read_text()) if path.is_file() and not a.quick else {}
    result[a.key] = {"command": command(), "machine": machine(), **english(a)}
    result[a.key]["gptq_helps"] = gptq_verdicts(result[a.key]["configs"])
    if not a.no_layer:
        result["layer_7b"] = {"command": command(), "machine": machine(), **layer_7b(a)}
    if a.no_record:
        print("nothing recorded")
        return
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"recorded {path.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
