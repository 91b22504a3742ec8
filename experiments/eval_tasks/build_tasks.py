"""Build the evaluation tasks of chapter 14 from held-out text: the validation documents of corpus v2.

    python experiments/eval_tasks/build_tasks.py          # writes the jsonl and YAML files next to this script

Nothing is written by hand: every item is cut out of a validation document of
``experiments/corpus_v2`` (``mistral_nb.training.corpus.load_documents("val", corpus="v2")``), text
that the models trained on corpus v2 never saw (corpus v1's training split shares some documents with
it: ``experiments/evaluate.py`` measures that contamination for ``english_swa``). The documents are split (seeded) into *test documents*,
from which the items are made, and *few-shot documents*, from which the solved examples of k-shot
prompts are made, so an example never comes from the document of the item it precedes.

Sentences are the pieces of a paragraph between sentence ends (. ! ? followed by a space and a
capital letter), kept when they look like prose: 30 to 220 characters, a capital first, mostly
letters and spaces.

* ``mnb_next_sentence`` (multiple choice, HellaSwag-style; chance 25 %): two consecutive sentences,
  then which of four sentences comes next: the true one, or one of three sentences of similar
  length (among the 40 closest in length) from *other* documents.
* ``mnb_sentence_order`` (multiple choice; chance 50 %): after one sentence, which order of the next
  two is the original: "A B" or "B A". Both choices have the same characters, so acc = acc_norm.
* ``mnb_cloze`` (loglikelihood, LAMBADA-style): one to three consecutive sentences whose last word is
  removed; ``acc`` is the share where the greedy continuation is exactly that word. The word has at
  least 4 letters and occurs earlier in the passage (as most LAMBADA targets do), so reading the
  context pays. Chance is about 0: the word must be picked from 32,000 tokens, often several.
* ``mnb_cloze_gen`` (generate_until, exact match): the same passages; the model generates until a
  space or punctuation, and the text must equal the word.
* ``mnb_val_rolling`` (loglikelihood_rolling): the first 4,000 characters (whole paragraphs) of
  test documents: word and byte perplexity, bits per byte.
"""

from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from mistral_nb.training.corpus import document_sources, load_documents  # noqa: E402

SEED = 14
FEWSHOT_SHARE = 0.2                     # of the validation documents, for few-shot examples only
N_ITEMS = {"next_sentence": 500, "sentence_order": 500, "cloze": 500, "rolling": 100}
N_FEWSHOT_ITEMS = 60
MAX_PER_DOCUMENT = 3                    # items per document and task, so no long document dominates
ROLLING_CHARS = 4000
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
STOPS = [" ", "\n", ".", ",", ";", ":", "!", "?"]


def is_prose(s: str) -> bool:
    """A sentence worth asking about: 30-220 characters, a capital letter first, a full stop (or ! ?)
    last, at least 85 % letters and spaces, and none of the marks of code, paths or addresses."""
    if not 30 <= len(s) <= 220 or not s[0].isupper() or s[-1] not in ".!?":
        return False
    if any(m in s for m in ("http", "www.", "::", "()", "=", "{", "}", "<", ">", "/", "\\", "_", "#", "$", "|")):
        return False
    return sum(c.isalpha() or c == " " for c in s) >= 0.85 * len(s)


def runs(doc: str) -> list[list[str]]:
    """The runs of consecutive prose sentences of each paragraph (a non-prose sentence breaks a run)."""
    out = []
    for para in doc.split("\n\n"):
        run = []
        for s in SENTENCE_END.split(para.strip()):
            if is_prose(s):
                run.append(s)
            else:
                if run:
                    out.append(run)
                run = []
        if run:
            out.append(run)
    return out


def split_documents(n: int, rnd: random.Random) -> tuple[list[int], list[int]]:
    order = list(range(n))
    rnd.shuffle(order)
    k = round(FEWSHOT_SHARE * n)
    return sorted(order[k:]), sorted(order[:k])


def pick(candidates: list[dict], n: int, rnd: random.Random) -> list[dict]:
    """n candidates at random, at most MAX_PER_DOCUMENT from one document, in random order (so that the
    first m items of a task are a random sample of it, whatever its sources' order)."""
    rnd.shuffle(candidates)
    taken, per_doc = [], {}
    for c in candidates:
        if per_doc.get(c["doc"], 0) < MAX_PER_DOCUMENT:
            taken.append(c)
            per_doc[c["doc"]] = per_doc.get(c["doc"], 0) + 1
        if len(taken) == n:
            break
    if len(taken) < n:
        raise SystemExit(f"only {len(taken)} items could be made, {n} wanted")
    return taken


def next_sentence_items(docs, ids, n, rnd) -> list[dict]:
    sentences = [(len(s), d, s) for d in ids for run in runs(docs[d]) for s in run]
    sentences.sort()
    lengths = [s[0] for s in sentences]
    cands = [{"doc": d, "at": (r, i), "context": run[i - 2] + " " + run[i - 1], "ending": run[i]}
             for d in ids for r, run in enumerate(runs(docs[d])) for i in range(2, len(run))]
    items = pick(cands, n, rnd)
    import bisect

    for it in items:
        j = bisect.bisect_left(lengths, len(it["ending"]))
        near = [s for s in sentences[max(0, j - 40):j + 40] if s[1] != it["doc"] and s[2] != it["ending"]]
        near.sort(key=lambda s: abs(s[0] - len(it["ending"])))
        distractors = rnd.sample([s[2] for s in near[:40]], 3)
        choices = distractors + [it["ending"]]
        rnd.shuffle(choices)
        it.update(choices=choices, label=choices.index(it["ending"]))
    return items


def sentence_order_items(docs, ids, n, rnd) -> list[dict]:
    cands = [{"doc": d, "at": (r, i), "context": run[i - 1], "a": run[i], "b": run[i + 1]}
             for d in ids for r, run in enumerate(runs(docs[d])) for i in range(1, len(run) - 1)]
    items = pick(cands, n, rnd)
    for it in items:
        right, wrong = it["a"] + " " + it["b"], it["b"] + " " + it["a"]
        choices = [right, wrong] if rnd.random() < 0.5 else [wrong, right]
        it.update(choices=choices, label=choices.index(right))
    return items


def cloze_items(docs, ids, n, rnd) -> list[dict]:
    cands = []
    for d in ids:
        for r, run in enumerate(runs(docs[d])):
            for i in range(len(run)):
                for start in range(max(0, i - 2), i + 1):
                    passage = " ".join(run[start:i + 1])[:-1]                  # without the final . ! ?
                    head, _, word = passage.rpartition(" ")
                    if 100 <= len(passage) <= 400 and word.isalpha() and len(word) >= 4 \
                            and re.search(rf"\b{re.escape(word)}\b", head, re.IGNORECASE):
                        cands.append({"doc": d, "at": (r, i), "context": head, "target": " " + word, "answer": word})
                        break
    return pick(cands, n, rnd)


def rolling_items(docs, ids, n, rnd) -> list[dict]:
    chosen = sorted(rnd.sample(ids, n))
    items = []
    for d in chosen:
        text = ""
        for para in docs[d].split("\n\n"):
            if text and len(text) + 2 + len(para) > ROLLING_CHARS:
                break
            text = f"{text}\n\n{para}" if text else para[:ROLLING_CHARS]
        items.append({"doc": d, "at": 0, "text": text})
    return items


FIELDS = {"next_sentence": ("context", "choices", "label"), "sentence_order": ("context", "choices", "label"),
          "cloze": ("context", "target", "answer"), "rolling": ("text",)}

COMMON = """custom_dataset: !function loader.load
dataset_kwargs:
  data_files:
    test: {name}.jsonl{train}
test_split: test
"""
FEWSHOT = """
    train: {name}_fewshot.jsonl"""
MULTIPLE_CHOICE = """output_type: multiple_choice
training_split: train
fewshot_split: train
doc_to_text: context
doc_to_target: label
doc_to_choice: choices
metric_list:
  - metric: acc
  - metric: acc_norm
metadata:
  version: 1.0
  chance: {chance}
"""
YAML = {
    "mnb_next_sentence": ("next_sentence", MULTIPLE_CHOICE.replace("{chance}", "0.25")),
    "mnb_sentence_order": ("sentence_order", MULTIPLE_CHOICE.replace("{chance}", "0.5")),
    "mnb_cloze": ("cloze", """output_type: loglikelihood
training_split: train
fewshot_split: train
doc_to_text: context
doc_to_target: target
target_delimiter: ""
metric_list:
  - metric: perplexity
  - metric: acc
metadata:
  version: 1.0
  chance: 0.0
"""),
    "mnb_cloze_gen": ("cloze", """output_type: generate_until
training_split: train
fewshot_split: train
doc_to_text: context
doc_to_target: answer
generation_kwargs:
  until: {stops}
  max_gen_toks: 8
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
  chance: 0.0
"""),
    "mnb_val_rolling": ("rolling", """output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: text
metric_list:
  - metric: word_perplexity
  - metric: byte_perplexity
  - metric: bits_per_byte
metadata:
  version: 1.0
"""),
}


def rows(items: list[dict], kind: str, sources: list[str], prefix: str) -> list[dict]:
    return [{"id": f"{prefix}{i}", "doc": it["doc"], "source": sources[it["doc"]], **{k: it[k] for k in FIELDS[kind]}}
            for i, it in enumerate(items)]


def write_jsonl(path: Path, rows_: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows_), encoding="utf-8")


def main() -> None:
    docs, sources = load_documents("val", corpus="v2"), document_sources("val", corpus="v2")
    rnd = random.Random(SEED)
    test_ids, shot_ids = split_documents(len(docs), rnd)
    makers = {"next_sentence": next_sentence_items, "sentence_order": sentence_order_items, "cloze": cloze_items}
    for kind, make in makers.items():
        write_jsonl(HERE / f"{kind}.jsonl", rows(make(docs, test_ids, N_ITEMS[kind], rnd), kind, sources, "t"))
        write_jsonl(HERE / f"{kind}_fewshot.jsonl", rows(make(docs, shot_ids, N_FEWSHOT_ITEMS, rnd), kind, sources, "f"))
    write_jsonl(HERE / "rolling.jsonl", rows(rolling_items(docs, test_ids, N_ITEMS["rolling"], rnd), "rolling",
                                             sources, "t"))
    for task, (name, body) in YAML.items():
        train = "" if name == "rolling" else FEWSHOT.format(name=name)
        text = f"# Written by build_tasks.py (seed {SEED}); run with lm_eval --include_path experiments/eval_tasks\n" \
               f"task: {task}\n" + COMMON.format(name=name, train=train) + body.format(stops=json.dumps(STOPS))
        (HERE / f"{task}.yaml").write_text(text, encoding="utf-8")
    for path in sorted(HERE.glob("*.jsonl")):
        print(f"{path.name}: {sum(1 for _ in path.open(encoding='utf-8'))} items")


if __name__ == "__main__":
    main()
