"""HellaSwag and ARC from their Hugging Face datasets, prompted as lm-eval's task files prompt them.

The paper's 81.3 % on HellaSwag and 80.0 % on ARC-Easy are multiple-choice accuracies. To set the
real Mistral 7B against them (chapter 14's GPU cell), each item becomes a context and its choices
exactly as lm-eval's ``hellaswag`` and ``arc_easy`` tasks build them:

* **HellaSwag** (``lm_eval/tasks/hellaswag``; dataset ``Rowan/hellaswag``, validation split): the
  context is ``activity_label + ": " + ctx_a + " " + ctx_b.capitalize()``, the four choices are the
  ``endings``, each cleaned of the WikiHow artefacts (`` [title]`` becomes ``". "``, other
  ``[...]`` tags are dropped, double spaces halved, ends stripped); gold = ``int(label)``.
* **ARC** (``lm_eval/tasks/arc``; dataset ``allenai/ai2_arc``, config ``ARC-Easy`` or
  ``ARC-Challenge``, test split): context ``"Question: " + question + "\\nAnswer:"``, choices
  ``choices["text"]``, gold = the position of ``answerKey`` in ``choices["label"]``.

Each choice is scored after a space (lm-eval's ``target_delimiter``), 0-shot. A ``dataset`` is any
sequence of rows (dicts with the fields above): a ``datasets.Dataset`` or a plain list.
"""

from __future__ import annotations

import re
from typing import Iterable, Optional

from . import metrics as M
from .scoring import DEFAULT_MAX_LENGTH, loglikelihood

__all__ = ["PAPER", "hellaswag_preprocess", "hellaswag_item", "arc_item", "items_of", "score_items", "score_dataset",
           "paper_comparison"]

PAPER = {"hellaswag": 0.813, "arc_easy": 0.800, "arc_challenge": 0.555}     # Jiang et al. 2023, table 2


def hellaswag_preprocess(text: str) -> str:
    """lm-eval's HellaSwag text clean-up (``tasks/hellaswag/utils.py: preprocess``)."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def hellaswag_item(row: dict) -> tuple[str, list[str], int]:
    ctx = row["ctx_a"] + " " + row["ctx_b"].capitalize()
    return (hellaswag_preprocess(row["activity_label"] + ": " + ctx),
            [hellaswag_preprocess(e) for e in row["endings"]], int(row["label"]))


def arc_item(row: dict) -> tuple[str, list[str], int]:
    labels = list(row["choices"]["label"])
    if row["answerKey"] not in labels:
        raise ValueError(f"ARC row {row.get('id', '?')}: answerKey {row['answerKey']!r} is not one of {labels}")
    return f"Question: {row['question']}\nAnswer:", list(row["choices"]["text"]), labels.index(row["answerKey"])


_ITEM = {"hellaswag": hellaswag_item, "arc_easy": arc_item, "arc_challenge": arc_item}


def items_of(dataset: Iterable[dict], task: str, limit: Optional[int] = None) -> list[tuple[str, list[str], int]]:
    """(context, choices, gold) of the first ``limit`` rows of ``dataset`` for ``task``."""
    if task not in _ITEM:
        raise ValueError(f"items_of: task must be one of {sorted(_ITEM)}, got {task!r}")
    out = []
    for row in dataset:
        if limit is not None and len(out) >= limit:
            break
        try:
            out.append(_ITEM[task](row))
        except (KeyError, TypeError) as e:
            raise ValueError(f"items_of: a row of the {task} dataset lacks a field ({type(e).__name__}: {e})") from None
    if not out:
        raise ValueError(f"items_of: the {task} dataset has no rows")
    return out


def score_items(model, tokenizer, items, batch_size: int = 8, max_length: int = DEFAULT_MAX_LENGTH,
                progress: bool = False) -> dict:
    """acc and acc_norm (with standard errors and 95 % intervals) of (context, choices, gold) items."""
    pairs = [(ctx, " " + c) for ctx, choices, _ in items for c in choices]
    lls = [ll for ll, _ in loglikelihood(model, tokenizer, pairs, batch_size, max_length, progress)]
    scored, i = [], 0
    for _, choices, gold in items:
        scored.append((lls[i:i + len(choices)], choices, gold))
        i += len(choices)
    return M.multiple_choice(scored)


def score_dataset(model, tokenizer, dataset, task: str, limit: Optional[int] = None, batch_size: int = 8,
                  max_length: int = DEFAULT_MAX_LENGTH, progress: bool = False) -> dict:
    """Score the first ``limit`` rows of a HellaSwag or ARC dataset; ``paper``: the paper's accuracy."""
    out = score_items(model, tokenizer, items_of(dataset, task, limit), batch_size, max_length, progress)
    return {"task": task, "paper": PAPER[task], **out}


def paper_comparison(model, tokenizer, datasets: dict, limit: Optional[int] = 300, batch_size: int = 8,
                     max_length: int = DEFAULT_MAX_LENGTH, progress: bool = True) -> list[str]:
    """Score each {task: dataset} (chapter 14's GPU cell) and return one line per task: acc and acc_norm
    with their 95 % intervals on ``limit`` items, against the paper's accuracy."""
    lines = []
    for task, dataset in datasets.items():
        r = score_dataset(model, tokenizer, dataset, task, limit, batch_size, max_length, progress)
        (a0, a1), (n0, n1) = r["acc_ci95"], r["acc_norm_ci95"]
        lines.append(f"{task}: {r['n']} items, acc {r['acc']:.3f} [{a0:.3f}, {a1:.3f}], acc_norm {r['acc_norm']:.3f} "
                     f"[{n0:.3f}, {n1:.3f}]; the paper: {r['paper']:.3f} (all items)")
    return lines
