"""Train a small Mistral on English prose, and record what it learned (chapter 12).

    python experiments/train_english.py train swa     # the main model: sliding window 64 (~1 hour)
    python experiments/train_english.py train full    # its twin: full attention, same budget
    python experiments/train_english.py analyze       # baselines, samples, heads, windows, int8
    python experiments/train_english.py all           # the three in a row
    python experiments/train_english.py train swa --quick   # smoke test: a few steps, nothing recorded

Both models are ``mistral_nb.Transformer`` (the same class as Mistral 7B) with Mistral's tokenizer,
trained on ``experiments/corpus`` (train split only) with ``mistral_nb.training.loop.train``. A run writes
its training state to ``experiments/.runs/`` every 100 steps and resumes from it when started
again with the same settings. Recorded (committed):

* ``experiments/results/english_swa/``: the trained main model in Mistral's layout (bf16);
* ``experiments/results/english_train_{swa,full}.json``: loss curves, validation losses, timings;
* ``experiments/results/english.json``: baselines, perplexities, samples, head scores, the window
  experiments, cache and int8 checks, with the command, machine, date and torch version.
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
from mistral_nb.training.corpus import TokenStream, load_documents  # noqa: E402
from mistral_nb.book.results import machine_info  # noqa: E402
from mistral_nb.training.loop import next_token_loss, seeded_model, train  # noqa: E402

RESULTS = HERE / "results"
RUNS = HERE / ".runs"

# Mistral 7B's shape rules, small: GQA (8 query heads share 2 key/value heads), head_dim 32,
# SwiGLU at 3.5 x dim, RMSNorm, RoPE theta 1e4, untied output head, Mistral's 32,000-id vocabulary,
# and a sliding window (64) much shorter than the training context (512).
MODEL = dict(dim=256, n_layers=6, head_dim=32, hidden_dim=896, n_heads=8, n_kv_heads=2,
             vocab_size=32000, norm_eps=1e-5, rope_theta=10000.0)
WINDOWS = {"swa": 64, "full": None}
SEQ_LEN = 512
TRAIN = dict(steps=1200, batch_size=8, lr=2e-3, warmup=60, weight_decay=0.1, clip=1.0,
             betas=(0.9, 0.95), min_lr_ratio=0.1, seed=0, autocast=True)
EVAL_EVERY, EVAL_WINDOWS = 100, 48          # validation loss during training: 48 x 512 tokens
CHECKPOINT_EVERY = 100


def model_args(name: str) -> ModelArgs:
    return ModelArgs(**MODEL, sliding_window=WINDOWS[name])


def streams(tok: Tokenizer) -> tuple[TokenStream, TokenStream]:
    return (TokenStream.from_documents(load_documents("train"), tok),
            TokenStream.from_documents(load_documents("val"), tok))


@torch.no_grad()
def mean_loss(model, windows: torch.Tensor, bos: int, batch_size: int = 8) -> float:
    """Mean next-token loss (nats) over (n, S + 1) windows, ``<s>`` targets unscored."""
    total, count = 0.0, 0
    for i in range(0, len(windows), batch_size):
        w = windows[i:i + batch_size]
        per = next_token_loss(model, w, ignore_ids=(bos,), reduction="none")     # (b, S)
        scored = (w[:, 1:] != bos)
        total += float(per.sum())
        count += int(scored.sum())
    return total / count


def run_training(name: str, quick: bool) -> None:
    tok = Tokenizer.mistral_v1()
    train_stream, val_stream = streams(tok)
    hp = dict(TRAIN)
    if quick:
        hp.update(steps=6, warmup=2)
    args = model_args(name)
    model = seeded_model(args, seed=hp["seed"])
    val_windows = val_stream.windows(SEQ_LEN, max_windows=EVAL_WINDOWS if not quick else 2)
    ckpt = RUNS / f"english_{name}{'_quick' if quick else ''}.pt"
    t0 = time.perf_counter()
    history = train(model, train_stream.batches(hp.pop("batch_size"), SEQ_LEN), hp.pop("steps"), **hp,
                    progress=True, desc=f"english {name}", eval_fn=lambda m: mean_loss(m, val_windows, tok.bos_id),
                    eval_every=EVAL_EVERY if not quick else 3, checkpoint=ckpt, checkpoint_every=CHECKPOINT_EVERY,
                    resume=not quick)
    wall = time.perf_counter() - t0
    print(f"{name}: {history.tokens[-1]:,} tokens in {history.seconds[-1]:.0f} s of steps "
          f"({history.tokens[-1] / history.seconds[-1]:,.0f} tokens/s); val loss {history.val_loss[-1]:.3f} "
          f"(perplexity {math.exp(history.val_loss[-1]):.1f})", flush=True)
    # bf16 weights: what the chapter loads (the analysis measures exactly these weights)
    save_checkpoint(model, RUNS / f"english_{name}{'_quick' if quick else ''}_model", dtype=torch.bfloat16)
    if quick:
        print("quick run: nothing recorded")
        return
    if name == "swa":
        save_checkpoint(model, RESULTS / "english_swa", dtype=torch.bfloat16)
    record = {
        "command": f"python experiments/train_english.py train {name}",
        "machine": machine_info(), "model": {**MODEL, "sliding_window": WINDOWS[name]}, "seq_len": SEQ_LEN,
        "train": {**TRAIN, "betas": list(TRAIN["betas"])}, "eval_every": EVAL_EVERY, "eval_windows": EVAL_WINDOWS,
        "train_tokens_in_corpus": len(train_stream), "val_tokens_in_corpus": len(val_stream),
        "n_parameters": model.num_parameters(),
        "tokens_trained": history.tokens[-1], "step_seconds": round(history.seconds[-1], 1),
        "wall_seconds_this_invocation": round(wall, 1),
        "tokens_per_second": round(history.tokens[-1] / history.seconds[-1], 1),
        "loss_every_10": [round(x, 4) for x in history.smoothed(10)],
        "lr_every_10": [round(x, 6) for x in history.lr[::10]],
        "seconds_every_10": history.seconds[9::10],
        "val_step": history.val_step, "val_loss": [round(x, 4) for x in history.val_loss],
    }
    (RESULTS / f"english_train_{name}.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"recorded experiments/results/english_train_{name}.json")


# ----------------------------------------------------------------------------- analysis
SAMPLE_PROMPTS = [        # ordinary present-day sentences, written for this experiment (not in the corpus)
    "The weather was cold, so we",
    "My favourite thing about the city is",
    "Python is a programming language that",
]
CONTEXTS = [1, 2, 4, 8, 16, 32, 48, 63, 64, 96, 128, 192, 256, 320, 378, 448]
N_CONTEXT_TARGETS, N_CONTEXT_WINDOWS = 64, 128
INDUCTION_LENGTH, INDUCTION_SEQUENCES = 30, 64
HEAD_TEXT_LEN, HEAD_TEXTS = 64, 32          # <s> + 63 tokens from the start of validation documents
DISTANCE_LEN, DISTANCE_WINDOWS = 192, 32
CACHE_PROMPT, CACHE_NEW = 20, 300


def _r(x, n=4):
    return [round(float(v), n) for v in x] if hasattr(x, "__len__") else round(float(x), n)


def analyze(quick: bool) -> None:
    import copy

    from mistral_nb import generate, load_model
    from mistral_nb.evals.language import cached_logits, loss_by_context, per_token_losses
    from mistral_nb.evals.heads import (attention_by_distance, first_token_scores, induction_scores,
                                        previous_token_scores, repeated_random_tokens, top_heads)
    from mistral_nb.evals.ngram import BigramLM, UnigramLM, uniform_loss
    from mistral_nb.speed.int8 import quantize_model
    from mistral_nb.evals.heads import attention_maps

    t_all = time.perf_counter()
    tok = Tokenizer.mistral_v1()
    train_stream, val_stream = streams(tok)
    bos = tok.bos_id
    windows = val_stream.windows(SEQ_LEN, max_windows=8 if quick else None)      # (n, 513)
    n_scored = windows.shape[0] * SEQ_LEN + 1
    out = {"command": "python experiments/train_english.py analyze", "machine": machine_info(),
           "val_windows": int(windows.shape[0]), "seq_len": SEQ_LEN}

    # 1. baselines on exactly the targets the models are scored on
    scored_ids = val_stream.ids[:n_scored]
    uni = UnigramLM(tok.vocab_size, ignore_ids=(bos,)).fit(train_stream.ids)
    bi = BigramLM(tok.vocab_size, ignore_ids=(bos,)).fit(train_stream.ids)
    losses = {"uniform": uniform_loss(tok.vocab_size), "unigram": uni.loss(scored_ids), "bigram": bi.loss(scored_ids)}
    print("baselines:", {k: round(math.exp(v), 1) for k, v in losses.items()}, flush=True)

    models = {name: load_model(RUNS / f"english_{name}{'_quick' if quick else ''}_model") for name in ("swa", "full")}
    if not quick:
        committed = load_model(RESULTS / "english_swa")
        if not all(torch.equal(a, b) for a, b in zip(committed.state_dict().values(), models["swa"].state_dict().values())):
            raise RuntimeError("the committed model differs from the run's: retrain or copy it again")
    by_position = {}
    for name, model in models.items():
        loss, keep = per_token_losses(model, windows, ignore_ids=(bos,))
        losses[name] = float(loss[keep].double().mean())
        by_position[name] = (loss * keep).double().sum(0) / keep.sum(0)
        print(f"{name}: val loss {losses[name]:.4f}, perplexity {math.exp(losses[name]):.1f}", flush=True)
    out["loss_nats"] = {k: round(v, 4) for k, v in losses.items()}
    out["perplexity"] = {k: round(math.exp(v), 2) for k, v in losses.items()}
    out["ratio_to_bigram"] = {k: round(math.exp(losses[k] - losses["bigram"]), 4) for k in ("swa", "full")}
    out["scored_targets"] = int((scored_ids[1:] != bos).sum())

    # 4. sliding window vs full attention: loss by position, loss by context length
    out["loss_by_position"] = {k: _r(v) for k, v in by_position.items()}
    ctx_windows = windows[:N_CONTEXT_WINDOWS if not quick else 4]
    contexts = [c for c in CONTEXTS if c + N_CONTEXT_TARGETS - 1 <= SEQ_LEN]
    out["loss_by_context"] = {"contexts": contexts, "n_targets": N_CONTEXT_TARGETS,
                              "n_windows": int(ctx_windows.shape[0])}
    for name, model in models.items():
        out["loss_by_context"][name] = _r(loss_by_context(model, ctx_windows, contexts, N_CONTEXT_TARGETS,
                                                          ignore_ids=(bos,)))
        print(f"{name} loss by context:", dict(zip(contexts, out["loss_by_context"][name])), flush=True)

    swa = models["swa"]
    # 2. samples: greedy and top-p, from held-out prompts (validation documents) and new sentences
    val_docs = load_documents("val")
    prompts = SAMPLE_PROMPTS + [" ".join(d.split()[:8]) for d in (val_docs[0], val_docs[-12], val_docs[-1])]
    samples = []
    for text in prompts:
        ids = tok.encode(text, bos=True)
        row = {"prompt": text, "greedy": tok.decode(generate(swa, [ids], max_new_tokens=48)[0])}
        row["top_p"] = [tok.decode(generate(swa, [ids], max_new_tokens=48, temperature=0.8, top_p=0.9, seed=s)[0])
                        for s in range(3)]
        samples.append(row)
        print(f"{text!r} -> {row['greedy']!r}", flush=True)
    out["samples"] = {"max_new_tokens": 48, "temperature": 0.8, "top_p": 0.9, "seeds": [0, 1, 2], "rows": samples}

    # 3. heads: previous-token, first-token (<s>), induction; attention by distance
    starts = [ids for ids in (tok.encode(d, bos=True)[:HEAD_TEXT_LEN] for d in val_docs) if len(ids) == HEAD_TEXT_LEN]
    texts = torch.tensor(starts[:HEAD_TEXTS])
    maps = attention_maps(swa, texts)                                            # (L, B, H, S, S)
    prev, first = previous_token_scores(maps), first_token_scores(maps, min_query=8)
    gen = torch.Generator().manual_seed(0)
    rep = repeated_random_tokens(INDUCTION_SEQUENCES, INDUCTION_LENGTH, 1000, tok.vocab_size, bos, gen)
    ind = induction_scores(attention_maps(swa, rep), INDUCTION_LENGTH)
    rep_loss, _ = per_token_losses(swa, rep)
    first_copy = float(rep_loss[:, 1:INDUCTION_LENGTH].mean())                  # targets 2 .. L (random)
    second_copy = float(rep_loss[:, INDUCTION_LENGTH + 1:].mean())              # targets L+2 .. 2L (repeats)
    dist_windows = val_stream.windows(DISTANCE_LEN, max_windows=DISTANCE_WINDOWS)[:, :-1]
    W = WINDOWS["swa"]
    by_dist = attention_by_distance(attention_maps(swa, dist_windows), W - 1)    # (L, H, W)
    layer_dist = by_dist.mean(1)                                                 # (L, W)
    bands = {"d=0 (itself)": (0, 0), "d=1-7": (1, 7), "d=8-55 (far inside)": (8, 55), "d=56-63 (edge)": (56, 63)}
    out["heads"] = {
        "previous_token": [_r(r) for r in prev], "first_token": [_r(r) for r in first],
        "induction": [_r(r) for r in ind],
        "top_previous_token": top_heads(prev), "top_first_token": top_heads(first), "top_induction": top_heads(ind),
        "texts": {"n": int(texts.shape[0]), "length": HEAD_TEXT_LEN, "first_token_min_query": 8},
        "induction_test": {"length": INDUCTION_LENGTH, "sequences": INDUCTION_SEQUENCES, "id_range": [1000, tok.vocab_size],
                           "loss_first_copy": round(first_copy, 4), "loss_second_copy": round(second_copy, 4)},
        "attention_by_distance": {"per_layer": [_r(r) for r in layer_dist], "windows": DISTANCE_WINDOWS,
                                  "length": DISTANCE_LEN, "min_query": W - 1},
        "distance_bands": {k: _r(layer_dist[:, a:b + 1].sum(1)) for k, (a, b) in bands.items()},
    }
    print("top heads:", out["heads"]["top_previous_token"], out["heads"]["top_induction"], out["heads"]["top_first_token"])
    print(f"repeated random tokens: loss {first_copy:.2f} (first copy) -> {second_copy:.2f} (second copy)", flush=True)

    # 5a. far past the window: the rolling cache (W slots) gives the logits of a full recomputation
    ids = tok.encode(SAMPLE_PROMPTS[0], bos=True)
    ids = ids + generate(swa, [ids], max_new_tokens=CACHE_NEW)[0]
    seq = torch.tensor(ids)
    cached = cached_logits(swa, seq, len(tok.encode(SAMPLE_PROMPTS[0], bos=True)))
    full = swa(seq[None])[0, len(tok.encode(SAMPLE_PROMPTS[0], bos=True)) - 1:]
    out["rolling_cache"] = {"tokens": len(ids), "window": W, "cache_slots": W,
                            "max_abs_logit_diff": float(f"{(cached - full).abs().max():.3g}"),
                            "max_logit": round(float(full.abs().max()), 2),
                            "argmax_agree": round(float((cached.argmax(-1) == full.argmax(-1)).float().mean()), 4)}
    print("rolling cache:", out["rolling_cache"], flush=True)

    # 5b. int8 weights on this trained model
    q = quantize_model(copy.deepcopy(swa))
    qloss, qkeep = per_token_losses(q, ctx_windows, ignore_ids=(bos,))
    floss, _ = per_token_losses(swa, ctx_windows, ignore_ids=(bos,))
    agree, count = 0, 0
    with torch.no_grad():
        for i in range(0, len(ctx_windows), 8):
            w = ctx_windows[i:i + 8, :-1]
            agree += int((q(w).argmax(-1) == swa(w).argmax(-1)).sum())
            count += w.numel()
    greedy_same = sum(generate(q, [tok.encode(p, bos=True)], max_new_tokens=48)[0] ==
                      generate(swa, [tok.encode(p, bos=True)], max_new_tokens=48)[0] for p in prompts)
    out["int8"] = {"windows": int(ctx_windows.shape[0]),
                   "perplexity_float": round(math.exp(float(floss[qkeep].double().mean())), 3),
                   "perplexity_int8": round(math.exp(float(qloss[qkeep].double().mean())), 3),
                   "top1_agreement": round(agree / count, 4), "greedy_identical": f"{greedy_same}/{len(prompts)}"}
    print("int8:", out["int8"], flush=True)
    out["analysis_seconds"] = round(time.perf_counter() - t_all, 1)
    if quick:
        print("quick run: nothing recorded")
        return
    (RESULTS / "english.json").write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    print("recorded experiments/results/english.json")


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Cost: each model about 55 minutes of training on 2 cores, about 2 GB of RAM, and a 250 MB "
               "training state in experiments/.runs/ (disk; not committed); analyze about 10 minutes. "
               "train swa overwrites the committed experiments/results/english_swa/ and "
               "english_train_swa.json (train full: english_train_full.json); analyze overwrites "
               "experiments/results/english.json.")
    p.add_argument("stage", choices=["train", "analyze", "all"])
    p.add_argument("model", nargs="?", choices=sorted(WINDOWS), help="with 'train': which model (default: both)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch CPU threads (default: all cores)")
    p.add_argument("--quick", action="store_true", help="a few steps, nothing recorded")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.stage in ("train", "all"):
        for name in ([a.model] if a.model else ["swa", "full"]):
            run_training(name, a.quick)
    if a.stage in ("analyze", "all"):
        analyze(a.quick)


if __name__ == "__main__":
    main()
