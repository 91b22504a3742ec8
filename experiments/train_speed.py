"""What makes training faster on this CPU: dtype, torch.compile, threads and batch shape, measured.

    python experiments/train_speed.py                 # every configuration, ~15 minutes on 2 cores
    python experiments/train_speed.py --quick         # 2 steps each, nothing recorded (a smoke test)

Each configuration runs in a fresh process (so one compilation or allocator state cannot help the
next), trains the model of ``experiments/train_english_v2.py`` on random token ids for a few warm-up
steps and then times ``--steps`` optimizer steps of ``mistral_nb.training.loop.train``; the figure is
tokens per second over the timed steps. The configurations are interleaved over two rounds and the
median of the rounds is kept. Recorded in ``experiments/results/train_speed.json`` (overwritten; the
committed file is the run the specimen's settings were chosen from). Nothing else should run meanwhile.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

# (name, autocast, compile, threads, batch_size, seq_len): tokens per step stay 4,096
CONFIGS = [
    ("fp32 eager, 2 threads, 8 x 512", False, False, 2, 8, 512),
    ("bf16 autocast eager, 2 threads, 8 x 512", True, False, 2, 8, 512),
    ("fp32 compiled, 2 threads, 8 x 512", False, True, 2, 8, 512),
    ("bf16 autocast compiled, 2 threads, 8 x 512", True, True, 2, 8, 512),
    ("bf16 autocast eager, 1 thread, 8 x 512", True, False, 1, 8, 512),
    ("bf16 autocast eager, 2 threads, 16 x 256", True, False, 2, 16, 256),
    ("bf16 autocast eager, 2 threads, 4 x 1024", True, False, 2, 4, 1024),
    ("bf16 autocast eager, 2 threads, 16 x 512", True, False, 2, 16, 512),
]


def one(autocast: bool, compile: bool, threads: int, batch_size: int, seq_len: int, steps: int, warmup: int) -> dict:
    """Run in a child process: time ``steps`` training steps after ``warmup`` untimed ones."""
    import torch

    from experiments.train_english_v2 import model_args
    from mistral_nb.training.loop import seeded_model, shift_targets, train

    torch.set_num_threads(threads)
    model = seeded_model(model_args("swa"), seed=0)
    vocab = model.args.vocab_size

    def batches(gen):
        return shift_targets(torch.randint(3, vocab, (batch_size, seq_len + 1), generator=gen))

    kw = dict(lr=1e-3, warmup=1, progress=False, autocast=autocast, compile=compile)
    t0 = time.perf_counter()
    h = train(model, batches, warmup + steps, **kw)
    wall = time.perf_counter() - t0
    timed = h.seconds[-1] - h.seconds[warmup - 1]
    tokens = h.tokens[-1] - h.tokens[warmup - 1]
    return {"tokens_per_s": round(tokens / timed, 1), "step_s": round(timed / steps, 3),
            "first_steps_s": round(h.seconds[warmup - 1], 1), "wall_s": round(wall, 1),
            "loss_first": round(h.loss[0], 3), "loss_last": round(h.loss[-1], 3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                epilog="Writes experiments/results/train_speed.json (overwrites it) unless --quick.")
    p.add_argument("--steps", type=int, default=8, help="timed steps per configuration (default 8)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first, incl. compilation (default 3)")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds (default 2)")
    p.add_argument("--quick", action="store_true", help="2 steps, 1 round, 2 configurations; nothing recorded")
    p.add_argument("--_one", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a._one:
        print(json.dumps(one(*json.loads(a._one))))
        return
    configs = CONFIGS[:2] if a.quick else CONFIGS
    steps, warmup, rounds = (2, 1, 1) if a.quick else (a.steps, a.warmup, a.rounds)
    runs: dict = {c[0]: [] for c in configs}
    for r in range(rounds):
        for name, *cfg in configs:
            arg = json.dumps(cfg + [steps, warmup])
            out = subprocess.run([sys.executable, __file__, "--_one", arg], capture_output=True, text=True,
                                 cwd=HERE.parent, timeout=1800)
            if out.returncode != 0:
                raise SystemExit(f"{name} failed:\n{out.stderr[-3000:]}")
            res = json.loads(out.stdout.strip().splitlines()[-1])
            runs[name].append(res)
            print(f"round {r + 1}: {name}: {res['tokens_per_s']:,.0f} tokens/s", flush=True)
    summary = {name: statistics.median(x["tokens_per_s"] for x in rs) for name, rs in runs.items()}
    best = max(summary, key=summary.get)
    print(f"fastest: {best} ({summary[best]:,.0f} tokens/s)")
    if a.quick:
        return
    from experiments.train_english_v2 import MODEL
    from mistral_nb.book.results import machine_info

    record = {"command": "python experiments/train_speed.py", "machine": machine_info(), "model": MODEL,
              "steps_timed": steps, "warmup_steps": warmup, "rounds": rounds,
              "configs": [dict(zip(("name", "autocast", "compile", "threads", "batch_size", "seq_len"), c)) for c in configs],
              "runs": runs, "median_tokens_per_s": summary, "fastest": best}
    (HERE / "results" / "train_speed.json").write_text(json.dumps(record, indent=1) + "\n")
    print("recorded experiments/results/train_speed.json")


if __name__ == "__main__":
    main()
