"""Does information travel L x (W - 1) tokens through L sliding-window layers, and no further?

Trains tiny Mistral models (``mistral_nb.Transformer``, the same class as the 7B) on the
``KeyRecall`` task for several depths L and windows W, and with full attention, then measures recall
accuracy at every distance d between the key and the question. Records everything in
``experiments/results/receptive_field.json`` and saves two trained models (Mistral layout,
``mistral_nb.save_checkpoint``) for the attention heatmaps of chapter 11.

    python experiments/receptive_field.py                # the full sweep (6 to 10 minutes, one thread)
    python experiments/receptive_field.py --quick        # a smoke test: few steps, nothing recorded

Everything is seeded; on one machine the same command gives the same numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from mistral_nb import ModelArgs, save_checkpoint
from mistral_nb.masks import receptive_field
from mistral_nb.book.results import machine_info
from mistral_nb.training.tasks import KeyRecall, accuracy_by_distance
from mistral_nb.training.loop import seeded_model, train

RESULTS = Path(__file__).parent / "results"

# The two tasks (see mistral_nb/tasks.py): "dense" asks for the key at every position after it
# (distances 1..31); "query" asks only at a final query mark (distances 1..23), so the tokens in
# between are never told to carry the key.
TASKS = {
    "dense": KeyRecall(n_keys=16, n_noise=16, seq_len=40, max_key_pos=8),
    "query": KeyRecall(n_keys=16, n_noise=16, seq_len=24, query=True),
}
# Same shape rules as Mistral 7B (GQA: 4 query heads share 2 key/value heads; SwiGLU; RoPE), tiny.
MODEL = dict(dim=64, head_dim=16, hidden_dim=128, n_heads=4, n_kv_heads=2)
TRAIN = {
    "dense": dict(steps=600, batch_size=32, lr=3e-3, warmup=60, weight_decay=0.01, clip=1.0),
    "query": dict(steps=500, batch_size=64, lr=3e-3, warmup=50, weight_decay=0.01, clip=1.0),
}
# (task, n_layers, window); window None = full causal attention.
RUNS = [("dense", L, W) for W in (4, 8) for L in (1, 2, 3)] + [("dense", L, None) for L in (1, 2)] \
     + [("query", L, 4) for L in (1, 2, 3)] + [("query", 1, None)]
SEEDS = {"dense": (0, 1), "query": (0, 1)}
SAVE = {("dense", 3, 4, 0): "dense_L3_W4", ("query", 3, 4, 0): "query_L3_W4"}   # models kept for ch. 11
EVAL_SEQUENCES = 1024


def run_name(task: str, L: int, W) -> str:
    return f"{task}_L{L}_{'full' if W is None else f'W{W}'}"


def summarize(acc: list, reach, chance: float) -> dict:
    """Where recall stops: the last distance of an unbroken run of accuracy >= 0.9 from d = 1, and the
    mean accuracy within / beyond the theoretical reach."""
    last = 0
    for d, a in enumerate(acc, 1):
        if a < 0.9:
            break
        last = d
    inside = acc if reach is None else acc[:reach]
    beyond = [] if reach is None else acc[reach:]
    out = {"last_recalled": last, "mean_within_reach": round(sum(inside) / len(inside), 4),
           "min_within_reach": round(min(inside), 4)}
    if beyond:
        out.update(mean_beyond_reach=round(sum(beyond) / len(beyond), 4), max_beyond_reach=round(max(beyond), 4),
                   chance=round(chance, 4))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: be polite)")
    p.add_argument("--only", nargs="*", help="run names to run (e.g. dense_L2_W4); default all")
    p.add_argument("--quick", action="store_true", help="20 steps per run, nothing recorded")
    a = p.parse_args()
    record = not (a.quick or a.only)      # only the whole sweep replaces the recorded results
    torch.set_num_threads(a.threads)
    torch.use_deterministic_algorithms(True)

    runs, t_all = [], time.perf_counter()
    for task_name, L, W in RUNS:
        name = run_name(task_name, L, W)
        if a.only and name not in a.only:
            continue
        task, hp = TASKS[task_name], dict(TRAIN[task_name])
        if a.quick:
            hp.update(steps=20, warmup=2)
        reach = None if W is None else receptive_field(L, W)
        for seed in SEEDS[task_name]:
            args = ModelArgs(n_layers=L, sliding_window=W, vocab_size=task.vocab_size, **MODEL)
            model = seeded_model(args, seed)
            t0 = time.perf_counter()
            hist = train(model, task.batches(hp["batch_size"]), hp["steps"], lr=hp["lr"], warmup=hp["warmup"],
                         weight_decay=hp["weight_decay"], clip=hp["clip"], seed=seed, progress=True,
                         desc=f"{name} seed {seed}")
            seconds = time.perf_counter() - t0
            res = accuracy_by_distance(model, task, n_sequences=EVAL_SEQUENCES, seed=1234)
            final = sum(hist.loss[-50:]) / len(hist.loss[-50:])
            run = {"name": name, "task": task_name, "n_layers": L, "window": W, "seed": seed,
                   "reach": reach, "paper_reach": None if W is None else L * W,
                   "n_parameters": model.num_parameters(), "train_seconds": round(seconds, 1),
                   "final_loss": round(final, 4), "loss_floor": round(task.loss_floor(reach), 4),
                   "loss_every_10": [round(x, 4) for x in hist.smoothed(10)],
                   "accuracy": res["accuracy"], "count": res["count"],
                   "summary": summarize(res["accuracy"], reach, task.chance)}
            runs.append(run)
            print(f"{name} seed {seed}: loss {final:.3f} (floor {run['loss_floor']:.3f}), "
                  f"reach L(W-1) = {reach}, recalled up to d = {run['summary']['last_recalled']}, "
                  f"{seconds:.0f} s", flush=True)
            key = (task_name, L, W, seed)
            if key in SAVE and record:
                save_checkpoint(model, RESULTS / SAVE[key])

    if not record:
        print("partial run (--quick or --only): nothing recorded")
        return
    out = {
        "command": "python " + " ".join(["experiments/receptive_field.py"] + sys.argv[1:]),
        "machine": machine_info(),
        "total_seconds": round(time.perf_counter() - t_all, 1),
        "tasks": {k: {**vars(t), "vocab_size": t.vocab_size, "max_distance": t.max_distance, "chance": t.chance}
                  for k, t in TASKS.items()},
        "model": MODEL, "train": TRAIN, "eval_sequences": EVAL_SEQUENCES,
        "saved_models": {v: f"experiments/results/{v}" for v in SAVE.values()},
        "runs": runs,
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "receptive_field.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"recorded {path.relative_to(Path(__file__).parent.parent)}")


if __name__ == "__main__":
    main()
