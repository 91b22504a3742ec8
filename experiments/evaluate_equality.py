"""lm-eval's own HFLM against MistralLM on every task of experiments/eval_tasks (``evaluate.py equality``).

The model of chapter 12 (experiments/results/english_v2_swa) runs twice through
``lm_eval.simple_evaluate``: as transformers' MistralForCausalLM under lm-eval's ``HFLM`` (Mistral's
tokenizer through transformers' ``MistralCommonBackend``), and as ``mistral_nb.Transformer`` under
``MistralLM``. Recorded in ``experiments/results/evals_equality.json``: per task and shot count, the
number of requests, the largest absolute and relative difference of their log-likelihoods (for
generation: how many generated strings differ), and both runs' metrics.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from mistral_nb import Tokenizer, load_model  # noqa: E402
from mistral_nb.book.results import machine_info  # noqa: E402

MODEL, MAX_LENGTH, LIMIT, BATCH = "english_v2_swa", 512, 60, 8
DISCRETE = ("acc", "acc_norm", "exact_match")
RUNS = [("mnb_next_sentence", 0), ("mnb_next_sentence", 3), ("mnb_sentence_order", 0), ("mnb_sentence_order", 3),
        ("mnb_cloze", 0), ("mnb_cloze", 3), ("mnb_cloze_gen", 0), ("mnb_cloze_gen", 3), ("mnb_val_rolling", 0)]


def _responses(out, task):
    return [r[0] for s in sorted(out["samples"][task], key=lambda s: s["doc_id"]) for r in s["resps"]]


def compare(a, b, task) -> dict:
    ra, rb = _responses(a, task), _responses(b, task)
    row = {"requests": len(ra)}
    if isinstance(ra[0], str):                                        # generated text
        row["different_generations"] = sum(x != y for x, y in zip(ra, rb))
    else:
        pairs = [(x[0], y[0]) if isinstance(x, (list, tuple)) else (x, y) for x, y in zip(ra, rb)]
        row["max_abs_ll_difference"] = max(abs(float(x) - float(y)) for x, y in pairs)
        row["max_rel_ll_difference"] = max(abs(float(x) - float(y)) / max(abs(float(x)), 1e-12) for x, y in pairs)
        row["greedy_flags_differ"] = sum(bool(x[1]) != bool(y[1]) for x, y in zip(ra, rb) if isinstance(x, (list, tuple)))
    metric = lambda out: {k.split(",")[0]: float(v) for k, v in out["results"][task].items()  # noqa: E731
                          if k.endswith(",none") and "stderr" not in k}
    row["hflm"], row["mistral_lm"] = ma, mb = metric(a), metric(b)
    row["counts_identical"] = all(ma[m] == mb[m] for m in ma if m in DISCRETE)          # acc, acc_norm, exact_match
    row["max_rel_metric_difference"] = max(abs(ma[m] - mb[m]) / max(abs(ma[m]), 1e-12) for m in ma)
    return row


def record_equality(quick: bool, threads: int) -> None:
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from mistral_nb.evals import MistralLM
    from mistral_nb.evals.lm_eval_model import save_for_hflm

    limit = 4 if quick else LIMIT
    model = load_model(HERE / "results" / MODEL)
    tm = TaskManager(include_path=str(HERE / "eval_tasks"), include_defaults=False)
    rows, t0 = {}, time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        hf = HFLM(pretrained=str(save_for_hflm(model, Path(tmp) / "hf")), device="cpu", dtype="float32",
                  batch_size=BATCH, max_length=MAX_LENGTH)
        ours = MistralLM(model, Tokenizer.mistral_v1(), batch_size=BATCH, max_length=MAX_LENGTH)
        for task, k in RUNS:
            outs = [lm_eval.simple_evaluate(model=lm, tasks=[task], limit=limit, num_fewshot=k, task_manager=tm,
                                            bootstrap_iters=0, log_samples=True) for lm in (hf, ours)]
            rows[f"{task} {k}-shot"] = compare(*outs, task)
            print(task, k, {m: v for m, v in rows[f"{task} {k}-shot"].items() if m not in ("hflm", "mistral_lm")},
                  flush=True)
    lls = [r["max_abs_ll_difference"] for r in rows.values() if "max_abs_ll_difference" in r]
    record = {"command": f"python experiments/evaluate.py equality --threads {threads}", "machine": machine_info(),
              "lm_eval": lm_eval.__version__, "model": f"experiments/results/{MODEL}", "max_length": MAX_LENGTH,
              "items_per_task": limit, "runs": rows, "max_abs_ll_difference": max(lls),
              "max_rel_ll_difference": max(r["max_rel_ll_difference"] for r in rows.values() if "max_rel_ll_difference" in r),
              "accuracies_identical": all(r["counts_identical"] for r in rows.values()),
              "max_rel_metric_difference": max(r["max_rel_metric_difference"] for r in rows.values()),
              "seconds": round(time.perf_counter() - t0, 1)}
    print(json.dumps({k: v for k, v in record.items() if k not in ("runs", "machine")}))
    if quick:
        print("quick run: nothing recorded")
        return
    path = HERE / "results" / "evals_equality.json"
    path.write_text(json.dumps(record, indent=1, default=float) + "\n")
    print(f"recorded {path.relative_to(HERE.parent)}")
    assert torch.get_num_threads() == threads
