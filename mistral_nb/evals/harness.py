"""Run a benchmark task without lm-eval: read its lm-eval YAML and jsonl files, build the requests,
score them, and compute the task's metrics.

The tasks of ``experiments/eval_tasks/`` are lm-eval task files (``lm_eval --include_path``), so the
same files run through lm-eval's own evaluator and through this one; ``tests/test_evals_lm_eval.py``
checks that both give the same numbers. Only the part of lm-eval's task format those files use is
read: ``output_type`` (multiple_choice, loglikelihood, loglikelihood_rolling, generate_until),
``doc_to_text`` / ``doc_to_target`` / ``doc_to_choice`` naming fields of a document (or ``""``),
``description``, ``target_delimiter``, ``fewshot_delimiter``, ``num_fewshot``, ``generation_kwargs``,
``metric_list`` (its exact_match options), the splits, and ``dataset_kwargs.data_files`` (jsonl files
next to the YAML). Anything else (Jinja templates, filters, groups) is refused by name.

A scorer is anything with lm-eval's three request methods on plain arguments:
``loglikelihood(pairs)``, ``loglikelihood_rolling(texts)``, ``generate_until(contexts, gen_kwargs)``
(``evals.scoring.Scorer`` for a model, ``evals.baselines.NgramScorer`` for the n-gram baselines).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from . import metrics as M
from .fewshot import DEFAULT_FEWSHOT_SEED, fewshot_contexts

__all__ = ["OUTPUT_TYPES", "BOOK_TASKS", "Task", "read_task", "read_book_task", "read_jsonl", "evaluate"]

BOOK_TASKS = "experiments/eval_tasks"        # the book's task files (built by build_tasks.py there)

OUTPUT_TYPES = ("multiple_choice", "loglikelihood", "loglikelihood_rolling", "generate_until")
_KNOWN = {"task", "output_type", "custom_dataset", "dataset_path", "dataset_kwargs", "test_split", "training_split",
          "validation_split", "fewshot_split", "doc_to_text", "doc_to_target", "doc_to_choice", "description",
          "target_delimiter", "fewshot_delimiter", "num_fewshot", "generation_kwargs", "metric_list", "metadata",
          "should_decontaminate", "doc_to_decontamination_query"}


@dataclass
class Task:
    """One task: its documents, few-shot pool and prompt format (the fields of lm-eval's TaskConfig)."""
    name: str
    output_type: str
    docs: list
    fewshot_docs: list
    doc_to_text: Any
    doc_to_target: Any
    doc_to_choice: Any = None
    description: str = ""
    target_delimiter: str = " "
    fewshot_delimiter: str = "\n\n"
    num_fewshot: int = 0
    generation_kwargs: dict = field(default_factory=dict)
    metric_list: list = field(default_factory=list)
    metadata: dict = field(default_factory=dict)
    same_split: bool = False
    data_files: dict = field(default_factory=dict)


def read_jsonl(path) -> list[dict]:
    path = Path(path)
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not a JSON line ({e})") from None
    return rows


def _yaml(path: Path) -> dict:
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))   # lm-eval's hook
    try:
        cfg = yaml.load(path.read_text(encoding="utf-8"), Loader=Loader)
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not a YAML task file ({e})") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: a task file must be a YAML mapping, got {type(cfg).__name__}")
    return cfg


def _check_config(path: Path, cfg: dict) -> None:
    unknown = sorted(set(cfg) - _KNOWN)
    if unknown:
        raise ValueError(f"{path}: fields this reader does not support: {unknown} (use lm-eval for those)")
    if cfg.get("output_type") not in OUTPUT_TYPES:
        raise ValueError(f"{path}: output_type must be one of {OUTPUT_TYPES}, got {cfg.get('output_type')!r}")
    for key in ("doc_to_text", "doc_to_target", "doc_to_choice", "description"):
        if "{{" in str(cfg.get(key, "")):
            raise ValueError(f"{path}: {key} is a Jinja template ({cfg[key]!r}); this reader takes field names only")


def read_task(path) -> Task:
    """The task of an lm-eval YAML file whose documents are jsonl files next to it."""
    path = Path(path)
    cfg = _yaml(path)
    _check_config(path, cfg)
    files = (cfg.get("dataset_kwargs") or {}).get("data_files") or {}
    test = cfg.get("test_split") or cfg.get("validation_split")
    shots = cfg.get("fewshot_split") or cfg.get("training_split") or test
    if test not in files:
        raise ValueError(f"{path}: dataset_kwargs.data_files names no file for the test split {test!r}")
    docs = read_jsonl(path.parent / files[test])
    pool = read_jsonl(path.parent / files[shots]) if shots in files and shots != test else docs
    return Task(name=cfg.get("task", path.stem), output_type=cfg["output_type"], docs=docs, fewshot_docs=pool,
                doc_to_text=cfg.get("doc_to_text", ""), doc_to_target=cfg.get("doc_to_target"),
                doc_to_choice=cfg.get("doc_to_choice"), description=cfg.get("description") or "",
                target_delimiter=cfg.get("target_delimiter", " "), fewshot_delimiter=cfg.get("fewshot_delimiter", "\n\n"),
                num_fewshot=cfg.get("num_fewshot") or 0, generation_kwargs=dict(cfg.get("generation_kwargs") or {}),
                metric_list=list(cfg.get("metric_list") or []), metadata=dict(cfg.get("metadata") or {}),
                same_split=shots == test, data_files=dict(files))


def read_book_task(name: str) -> Task:
    """One of the book's tasks (e.g. ``"mnb_cloze"``) from the checkout, or fetched with its jsonl files
    from the repository (``book.results.recorded_path``), as on Colab."""
    from ..book.results import recorded_path

    path = recorded_path(f"{BOOK_TASKS}/{name}.yaml")
    for file in sorted(set(((_yaml(path).get("dataset_kwargs") or {}).get("data_files") or {}).values())):
        recorded_path(f"{BOOK_TASKS}/{file}")
    return read_task(path)


def _value(doc: dict, spec: Any) -> Any:
    return doc[spec] if isinstance(spec, str) and spec in doc else spec


def _contexts(task: Task, docs: list, num_fewshot: int, seed: Optional[int], **prompt) -> list[str]:
    fmt = dict(description=task.description, target_delimiter=task.target_delimiter,
               fewshot_delimiter=task.fewshot_delimiter)
    fmt.update(prompt)
    return fewshot_contexts(docs, task.fewshot_docs, num_fewshot, task.doc_to_text, task.doc_to_target,
                            task.doc_to_choice, seed=seed, same_split=task.same_split, **fmt)


def _multiple_choice(scorer, task: Task, docs: list, contexts: list[str], delimiter: str) -> dict:
    choices = [list(_value(d, task.doc_to_choice)) for d in docs]
    pairs = [(ctx, delimiter + c) for ctx, cs in zip(contexts, choices) for c in cs]
    lls = [ll for ll, _ in scorer.loglikelihood(pairs)]
    items, i = [], 0
    for doc, cs in zip(docs, choices):
        items.append((lls[i:i + len(cs)], cs, int(_value(doc, task.doc_to_target))))
        i += len(cs)
    out = M.multiple_choice(items)
    out["lls"] = [it[0] for it in items]
    return out


def _loglikelihood(scorer, task: Task, docs: list, contexts: list[str]) -> dict:
    res = scorer.loglikelihood([(c, _value(d, task.doc_to_target)) for c, d in zip(contexts, docs)])
    lls, acc = [r[0] for r in res], [float(r[1]) for r in res]
    return {"n": len(docs), **M.summarize("acc", acc), "perplexity": M.perplexity(lls),
            "perplexity_ci95": M.bootstrap_interval(M.perplexity, lls), "lls": lls}


def _rolling(scorer, task: Task, docs: list) -> dict:
    texts = [_value(d, task.doc_to_target) for d in docs]
    lls = scorer.loglikelihood_rolling(texts)
    out = {"n": len(docs), **M.rolling_metrics(lls, texts), "lls": lls}
    out["bits_per_byte_ci95"] = M.bootstrap_interval(
        lambda pairs: M.rolling_metrics([p[0] for p in pairs], [p[1] for p in pairs])["bits_per_byte"],
        list(zip(lls, texts)))
    return out


def _generate(scorer, task: Task, docs: list, contexts: list[str], seed: Optional[int]) -> dict:
    outputs = scorer.generate_until(contexts, task.generation_kwargs, seed=seed)
    refs = [str(_value(d, task.doc_to_target)) for d in docs]
    opts = next((m for m in task.metric_list if m.get("metric") == "exact_match"), {})
    em = M.exact_match(outputs, refs, **{k: v for k, v in opts.items()
                                          if k in ("ignore_case", "ignore_punctuation", "ignore_numbers",
                                                   "regexes_to_ignore")})
    return {"n": len(docs), **M.summarize("exact_match", em), "outputs": outputs}


def evaluate(scorer, task: Task, num_fewshot: Optional[int] = None, limit: Optional[int] = None,
             seed: Optional[int] = DEFAULT_FEWSHOT_SEED, generation_seed: Optional[int] = None, **prompt) -> dict:
    """The task's metrics (with standard errors and 95 % intervals) and the per-item results.

    num_fewshot: None takes the task's own; limit: the first ``limit`` documents (lm-eval's
    ``limit``); seed: the few-shot sampler's; ``prompt``: overrides of description, target_delimiter or
    fewshot_delimiter (to measure what the prompt format does)."""
    k = task.num_fewshot if num_fewshot is None else num_fewshot
    docs = task.docs[:limit] if limit is not None else task.docs
    if task.output_type == "loglikelihood_rolling":
        if k:
            raise ValueError(f"{task.name}: a rolling perplexity task takes no few-shot examples, got {k}")
        out = _rolling(scorer, task, docs)
    else:
        contexts = _contexts(task, docs, k, seed, **prompt)
        if task.output_type == "multiple_choice":
            out = _multiple_choice(scorer, task, docs, contexts, prompt.get("target_delimiter", task.target_delimiter))
        elif task.output_type == "loglikelihood":
            out = _loglikelihood(scorer, task, docs, contexts)
        else:
            out = _generate(scorer, task, docs, contexts, generation_seed)
        out["contexts"] = contexts
    return {"task": task.name, "output_type": task.output_type, "num_fewshot": k, **out}
