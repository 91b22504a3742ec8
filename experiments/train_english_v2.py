"""Train the book's specimen: a small Mistral on a broad mix of modern English (corpus v2), and record it.

    python experiments/train_english_v2.py train swa     # the specimen: sliding window 64, ~45 min on 2 cores
    python experiments/train_english_v2.py train full    # its twin: full attention, the same batches and budget
    python experiments/train_english_v2.py analyze       # baselines on two held-out sets, samples, heads (~30 min)
    python experiments/train_english_v2.py compare       # the specimen against its full-attention twin
    python experiments/train_english_v2.py train swa --quick   # smoke test: a few steps, nothing recorded

Cost: the recorded run of ``swa`` took 44 minutes of training steps (2,791 tokens/s) on 2 threads of an AMD EPYC
with AVX-512 BF16, after about 90 s of compiling; on 1 thread expect about twice that, and on a CPU without bfloat16
instructions (AVX2 only) days (see the warning it prints). RAM about 4 GB while training. Disk: the
committed model is 47 MB (bf16); the training state in experiments/.runs/ (not committed) about
300 MB per model. A run resumes from its training state when started again with the same settings.
``train`` overwrites the committed results of its model (``experiments/results/english_v2_{swa,full}``
and ``english_v2_train_*.json``); ``analyze`` overwrites ``experiments/results/english_v2.json``, ``compare``
``experiments/results/english_v2_window_vs_full.json``.

The model is ``mistral_nb.Transformer`` (the class of Mistral 7B) with Mistral's tokenizer, trained
on ``experiments/corpus_v2`` (train split only) with ``mistral_nb.training.loop.train``, with the
settings ``experiments/train_speed.py`` measured fastest here (bf16 autocast).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from mistral_nb import ModelArgs, Tokenizer, save_checkpoint  # noqa: E402
from mistral_nb.book.results import machine_info  # noqa: E402
from mistral_nb.training.corpus import TokenStream, load_documents  # noqa: E402
from mistral_nb.training.loop import next_token_loss, seeded_model, train  # noqa: E402

RESULTS = HERE / "results"
RUNS = HERE / ".runs"
CORPUS = "v2"

# Mistral 7B's shape rules, small: GQA with 4 query heads per key/value head (8 and 2; 7B: 32 and 8),
# SwiGLU at 3.5 x dim, RMSNorm, RoPE theta 1e4, an untied output head, Mistral's 32,000-id vocabulary,
# and a sliding window (64) much shorter than the training context (512); 8 layers reach 8 x 63 = 504
# tokens back.
MODEL = dict(dim=256, n_layers=8, head_dim=32, hidden_dim=896, n_heads=8, n_kv_heads=2,
             vocab_size=32000, norm_eps=1e-5, rope_theta=10000.0)
WINDOWS = {"swa": 64, "full": None}
SEQ_LEN = 512
TRAIN = dict(steps=1800, batch_size=8, lr=2e-3, warmup=80, weight_decay=0.1, clip=1.0,
             betas=(0.9, 0.95), min_lr_ratio=0.1, seed=0, autocast=True)
COMPILE = True                              # bf16 autocast + torch.compile: fastest in train_speed.json
EVAL_EVERY, EVAL_WINDOWS = 250, 48          # validation loss during training: 48 x 512 tokens
CHECKPOINT_EVERY = 100


def model_args(name: str) -> ModelArgs:
    return ModelArgs(**MODEL, sliding_window=WINDOWS[name])


def model_dir(name: str, quick: bool = False) -> Path:
    """Where a trained model is saved: the committed results, or (quick runs) experiments/.runs/."""
    return RUNS / f"english_v2_{name}_quick_model" if quick else RESULTS / f"english_v2_{name}"


def stream(split: str, tok: Tokenizer) -> TokenStream:
    return TokenStream.from_documents(load_documents(split, corpus=CORPUS), tok)


@torch.no_grad()
def mean_loss(model, windows: torch.Tensor, bos: int, batch_size: int = 8) -> float:
    """Mean next-token loss (nats) over (n, S + 1) windows, ``<s>`` targets unscored."""
    total, count = 0.0, 0
    for i in range(0, len(windows), batch_size):
        w = windows[i:i + batch_size]
        per = next_token_loss(model, w, ignore_ids=(bos,), reduction="none")     # (b, S)
        total += float(per.sum())
        count += int((w[:, 1:] != bos).sum())
    return total / count


def bf16_is_native() -> bool:
    """Whether this CPU has bfloat16 instructions (AVX-512 BF16 or AMX): without them bf16 autocast is emulated."""
    flags = machine_info().get("cpu", {}).get("flags", [])
    return "avx512_bf16" in flags or "amx_bf16" in flags


def run_training(name: str, quick: bool) -> None:
    if TRAIN["autocast"] and not bf16_is_native():
        print("warning: this CPU has no bfloat16 instructions (AVX-512 BF16 or AMX), so bf16 autocast is emulated: "
              "on such a CPU (AVX2 only) one step took about 200 s (20 tokens/s) against 4 s with AVX-512 BF16; "
              "the run will take days, not hours", flush=True)
    tok = Tokenizer.mistral_v1()
    train_stream, val_stream = stream("train", tok), stream("val", tok)
    hp = dict(TRAIN)
    if quick:
        hp.update(steps=6, warmup=2)
    model = seeded_model(model_args(name), seed=hp["seed"])
    val_windows = val_stream.windows(SEQ_LEN, max_windows=EVAL_WINDOWS if not quick else 2)
    suffix = "_quick" if quick else ""
    ckpt = RUNS / f"english_v2_{name}{suffix}.pt"
    t0 = time.perf_counter()
    history = train(model, train_stream.batches(hp.pop("batch_size"), SEQ_LEN), hp.pop("steps"), **hp,
                    progress=True, desc=f"english v2 {name}", eval_fn=lambda m: mean_loss(m, val_windows, tok.bos_id),
                    eval_every=EVAL_EVERY if not quick else 3, checkpoint=ckpt, checkpoint_every=CHECKPOINT_EVERY,
                    resume=not quick, compile=COMPILE)
    wall = time.perf_counter() - t0
    print(f"{name}: {history.tokens[-1]:,} tokens in {history.seconds[-1]:.0f} s of steps "
          f"({history.tokens[-1] / history.seconds[-1]:,.0f} tokens/s); val loss {history.val_loss[-1]:.3f} "
          f"(perplexity {math.exp(history.val_loss[-1]):.1f})", flush=True)
    save_checkpoint(model, model_dir(name, quick), dtype=torch.bfloat16)
    if quick:
        print(f"quick run: nothing recorded (the model is in {model_dir(name, quick)})")
        return
    record = {
        "command": f"python experiments/train_english_v2.py train {name} --threads {torch.get_num_threads()}",
        "machine": machine_info(), "model": {**MODEL, "sliding_window": WINDOWS[name]}, "seq_len": SEQ_LEN,
        "corpus": CORPUS, "train": {**TRAIN, "betas": list(TRAIN["betas"])}, "compile": COMPILE, "threads": torch.get_num_threads(),
        "eval_every": EVAL_EVERY, "eval_windows": EVAL_WINDOWS,
        "train_tokens_in_corpus": len(train_stream), "val_tokens_in_corpus": len(val_stream),
        "n_parameters": model.num_parameters(),
        "tokens_trained": history.tokens[-1], "passes_over_train": round(history.tokens[-1] / len(train_stream), 3),
        "step_seconds": round(history.seconds[-1], 1), "wall_seconds_last_invocation": round(wall, 1),
        "tokens_per_second": round(history.tokens[-1] / history.seconds[-1], 1),
        "loss_every_10": [round(x, 4) for x in history.smoothed(10)],
        "lr_every_10": [round(x, 6) for x in history.lr[::10]],
        "seconds_every_10": history.seconds[9::10],
        "val_step": history.val_step, "val_loss": [round(x, 4) for x in history.val_loss],
    }
    (RESULTS / f"english_v2_train_{name}.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"recorded experiments/results/english_v2_train_{name}.json")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 2)[2])
    p.add_argument("stage", choices=["train", "analyze", "compare"])
    p.add_argument("model", nargs="?", choices=sorted(WINDOWS), default="swa", help="with 'train': which model (default swa)")
    p.add_argument("--threads", type=int, default=os.cpu_count(),
                   help="torch CPU threads (default: all cores; the recorded runs used 1, on a core of their own)")
    p.add_argument("--quick", action="store_true", help="a few steps, nothing recorded")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.stage == "train":
        run_training(a.model, a.quick)
    elif a.stage == "compare":
        from experiments.english_v2_analysis import compare

        compare(a.quick)
    else:
        from experiments.english_v2_analysis import analyze

        analyze(a.quick)


if __name__ == "__main__":
    main()
