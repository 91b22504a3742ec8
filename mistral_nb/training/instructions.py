"""Instructions whose answers are computed from real text, and exact-match scoring of a model's answers.

Instruction tuning needs (instruction, answer) pairs. Writing answers by hand would put our words in
the model's mouth; here every answer is computed from a sentence or a section of corpus v2
(``corpus.load_documents(split, corpus="v2")``), so it is right by construction:

* ``repeat``: repeat a sentence exactly;
* ``last_word``: give the last word of a sentence;
* ``reverse``: write the words of a short sentence in reverse order;
* ``order``: say which of two sentences of one document comes first in it (A or B);
* ``title``: give the title (the heading line) of a documentation section shown with its heading.

The split follows the corpus's: training instructions come from training documents, held-out ones
from validation documents (and a held-out prompt that also occurs among the training prompts is
dropped). For preference training each instruction also carries a computed *wrong* answer: the
sentence without its last word, the first word instead of the last, the words in their original
order, the other letter, another section's title.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Optional, Sequence

__all__ = ["TASKS", "Instruction", "sentences", "sections", "make_instructions", "instruction_split",
           "conversation", "answers", "exact_match"]

TASKS = ("repeat", "last_word", "reverse", "order", "title")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_PLAIN = re.compile(r"[A-Za-z][A-Za-z ,'\-]*\.")            # letters, spaces, commas, apostrophes, hyphens


@dataclass(frozen=True)
class Instruction:
    """A prompt, its computed answer, a computed wrong answer, the task and the source document."""
    task: str
    prompt: str
    answer: str
    wrong: str
    doc: int


def sentences(doc: str, min_words: int = 5, max_words: int = 14) -> list[str]:
    """The plain sentences of a document (letters and simple punctuation only, ending with '.'),
    of ``min_words`` to ``max_words`` words, in document order."""
    out = []
    for para in doc.split("\n\n"):
        for s in _SENTENCE_END.split(para.strip()):
            if min_words <= len(s.split()) <= max_words and _PLAIN.fullmatch(s) and s[0].isupper():
                out.append(s)
    return out


def sections(doc: str) -> list[tuple[str, str]]:
    """(title, first sentence of the body) of the document's sections: a short line of 1-8 words
    without final punctuation, followed by a paragraph of at least 12 words ending with '.'."""
    paras = [p.strip() for p in doc.split("\n\n")]
    out = []
    for title, body in zip(paras, paras[1:]):
        if (1 <= len(title.split()) <= 8 and title[0].isupper() and title[-1] not in ".:;,?!)"
                and "\n" not in title and len(body.split()) >= 12 and body.endswith(".")):
            out.append((title, _SENTENCE_END.split(body)[0]))
    return out


def _candidates(task: str, doc_index: int, doc: str, rng: random.Random, titles: list[str]) -> list[Instruction]:
    """Every instruction of ``task`` that one document yields."""
    out = []
    if task == "title":
        for title, first in sections(doc):
            other = next((t for t in (rng.choice(titles) for _ in range(8)) if t != title), None)
            if other is None:
                continue
            out.append(Instruction(task, f"What is the title of this section?\n\n{title}\n\n{first}", title, other, doc_index))
        return out
    sents = sentences(doc)
    if task == "order":
        for i in range(0, len(sents) - 1, 2):
            first, second = sents[i], rng.choice(sents[i + 1:])
            if first == second:
                continue
            swap = rng.random() < 0.5
            a, b = (second, first) if swap else (first, second)
            answer = "B" if swap else "A"
            out.append(Instruction(task, f"Which of these two sentences comes first in the text? A: {a} B: {b}",
                                   answer, "A" if swap else "B", doc_index))
        return out
    for s in sents:
        words = s[:-1].split()
        if task == "repeat":
            out.append(Instruction(task, f"Repeat this sentence: {s}", s, " ".join(words[:-1]) + ".", doc_index))
        elif task == "last_word":
            last, first = words[-1].strip(",'-"), words[0].strip(",'-")
            if last and first and last != first:
                out.append(Instruction(task, f"What is the last word of this sentence? {s}", last, first, doc_index))
        elif task == "reverse" and len(words) <= 8 and "," not in s:
            text = " ".join(words)
            out.append(Instruction(task, f"Write these words in reverse order: {text}", " ".join(reversed(words)),
                                   text, doc_index))
    return out


def make_instructions(docs: Sequence[str], per_task: int, seed: int = 0,
                      tasks: Sequence[str] = TASKS) -> list[Instruction]:
    """Up to ``per_task`` instructions of each task from ``docs``, drawn at random (``seed``), the
    tasks interleaved."""
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"make_instructions: unknown task {unknown[0]!r}; the tasks are {TASKS}")
    if isinstance(per_task, bool) or not isinstance(per_task, int) or per_task < 1:
        raise ValueError(f"make_instructions: per_task must be an int >= 1, got {per_task!r}")
    rng = random.Random(seed)
    titles = [t for d in docs for t, _ in sections(d)]
    chosen = []
    for task in tasks:
        pool = [c for i, d in enumerate(docs) for c in _candidates(task, i, d, rng, titles)]
        rng.shuffle(pool)
        chosen.append(pool[:per_task])
    return [ins for group in zip(*chosen) for ins in group] + \
        [ins for group in chosen for ins in group[min(map(len, chosen)):]]


def instruction_split(split: str, per_task: int, seed: int = 0, exclude: Optional[Sequence[Instruction]] = None,
                      limit_docs: Optional[int] = None) -> list[Instruction]:
    """Instructions from corpus v2's ``split`` ('train' or 'val') documents; prompts that occur in
    ``exclude`` (e.g. the training instructions) are dropped."""
    from .corpus import load_documents

    if split not in ("train", "val"):
        raise ValueError(f"instruction_split: split must be 'train' or 'val', got {split!r}")
    found = make_instructions(load_documents(split, limit=limit_docs, corpus="v2"), per_task, seed)
    seen = {ins.prompt for ins in exclude or ()}
    return [ins for ins in found if ins.prompt not in seen]


def conversation(ins: Instruction, answer: Optional[str] = None) -> list[dict]:
    """The instruction as a chat: the user's prompt, and the answer (default: the right one)."""
    return [{"role": "user", "content": ins.prompt}, {"role": "assistant", "content": answer or ins.answer}]


def answers(model, tokenizer, prompts: Sequence[str], max_new_tokens: int = 48, batch_size: int = 16) -> list[str]:
    """The model's greedy answers to ``prompts``, each asked 0-shot in the chat format, read up to
    its ``</s>`` (or ``max_new_tokens``)."""
    from ..generate import generate

    ids = [tokenizer.encode_chat([{"role": "user", "content": p}]) for p in prompts]
    out = []
    for i in range(0, len(ids), batch_size):
        new = generate(model, ids[i:i + batch_size], max_new_tokens=max_new_tokens, eos_id=tokenizer.eos_id,
                       progress=False)
        out += [tokenizer.decode(n) for n in new]
    return out


def exact_match(model, tokenizer, instructions: Sequence[Instruction], max_new_tokens: int = 48,
                batch_size: int = 16) -> dict:
    """Share of answers equal to the computed answer (surrounding spaces ignored), overall and per
    task, with the answers themselves."""
    got = answers(model, tokenizer, [ins.prompt for ins in instructions], max_new_tokens, batch_size)
    hits = [g.strip() == ins.answer for g, ins in zip(got, instructions)]
    per_task = {}
    for task in TASKS:
        mine = [h for h, ins in zip(hits, instructions) if ins.task == task]
        if mine:
            per_task[task] = sum(mine) / len(mine)
    return {"overall": sum(hits) / len(hits), "per_task": per_task, "answers": got}
