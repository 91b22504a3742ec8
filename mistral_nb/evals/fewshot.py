"""Few-shot prompts as lm-evaluation-harness builds them ("5-shot MMLU", "25-shot ARC").

A k-shot prompt is the task's description, then k solved examples, then the item itself:

    description + q_1 + target_delimiter + a_1 + fewshot_delimiter + ... + q_k + ... + a_k
                + fewshot_delimiter + q

with lm-eval's defaults ``target_delimiter = " "`` and ``fewshot_delimiter = "\\n\\n"`` (the
description is prepended as it is, so it carries its own trailing newline if it wants one). The
examples are drawn by lm-eval's ``ContextSampler``: one ``random.Random(seed)`` per task (seed 1234
by default, ``fewshot_random_seed``), ``sample(pool, k)`` for each item *in order*, so item 7's
examples depend on the draws for items 0 to 6. When the examples come from the same split as the
items, k + 1 are drawn and the item itself is removed.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Optional, Sequence

from ..training.checks import as_count

__all__ = ["DEFAULT_FEWSHOT_SEED", "FewshotSampler", "fewshot_context", "fewshot_contexts"]

DEFAULT_FEWSHOT_SEED = 1234      # lm-eval's simple_evaluate(fewshot_random_seed=1234)


class FewshotSampler:
    """Draws few-shot examples from ``pool`` like lm-eval's ``ContextSampler``."""

    def __init__(self, pool: Sequence[Any], seed: Optional[int] = DEFAULT_FEWSHOT_SEED):
        self.pool, self.rnd = list(pool), random.Random(seed)

    def sample(self, k: int, item: Any = None) -> list:
        """k examples; if ``item`` is given (examples from the items' own split), never the item itself."""
        k = as_count("FewshotSampler.sample", "k", k, low=0)
        if k == 0:
            return []
        if k + (item is not None) > len(self.pool):
            raise ValueError(f"FewshotSampler.sample: {k} examples asked from a pool of {len(self.pool)}")
        if item is None:
            return self.rnd.sample(self.pool, k)
        drawn = [x for x in self.rnd.sample(self.pool, k + 1) if x != item][:k]
        if len(drawn) < k:                 # the pool held copies of the item: draw again without any of them
            drawn = self.rnd.sample([x for x in self.pool if x != item], k)
        return drawn


def _field(doc: dict, spec: Any) -> Any:
    """A document's field named by ``spec``, or ``spec`` itself (a literal) when no field has that name,
    or what a callable ``spec`` returns for the document."""
    if callable(spec):
        return spec(doc)
    return doc[spec] if isinstance(spec, str) and spec in doc else spec


def _target_text(doc: dict, doc_to_target: Any, doc_to_choice: Any) -> str:
    target = _field(doc, doc_to_target)
    if doc_to_choice is not None and isinstance(target, int):
        return _field(doc, doc_to_choice)[target]
    return target[0] if isinstance(target, list) else str(target)


def fewshot_context(doc: dict, examples: Sequence[dict], doc_to_text: Any, doc_to_target: Any,
                    doc_to_choice: Any = None, description: str = "", target_delimiter: str = " ",
                    fewshot_delimiter: str = "\n\n") -> str:
    """The prompt of ``doc`` after the solved ``examples`` (module docstring). ``doc_to_text`` and
    ``doc_to_target`` name fields (or are functions of a document); with ``doc_to_choice``, an int
    target is the index of the right choice."""
    parts = [description or ""]
    for ex in examples:
        parts += [_field(ex, doc_to_text), target_delimiter, _target_text(ex, doc_to_target, doc_to_choice),
                  fewshot_delimiter]
    parts.append(_field(doc, doc_to_text))
    return "".join(parts)


def fewshot_contexts(docs: Sequence[dict], pool: Sequence[dict], k: int, doc_to_text: Any, doc_to_target: Any,
                     doc_to_choice: Any = None, description: str = "", target_delimiter: str = " ",
                     fewshot_delimiter: str = "\n\n", seed: Optional[int] = DEFAULT_FEWSHOT_SEED,
                     same_split: bool = False, sampler: Optional[Callable] = None) -> list[str]:
    """The k-shot prompt of every document, the examples drawn in document order from one sampler as
    lm-eval does; ``same_split``: the pool is the documents' own split (each item is left out)."""
    draw = sampler or FewshotSampler(pool, seed)
    return [fewshot_context(doc, draw.sample(k, doc if same_split else None), doc_to_text, doc_to_target,
                            doc_to_choice, description, target_delimiter, fewshot_delimiter) for doc in docs]
