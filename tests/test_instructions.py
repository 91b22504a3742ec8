"""Instructions computed from real text (mistral_nb.training.instructions): answers right by
construction, wrong answers wrong, the split by document, and exact-match scoring."""

import pytest

from mistral_nb.training import instructions as ins_mod
from mistral_nb.training.instructions import (TASKS, Instruction, conversation, exact_match, make_instructions,
                                              sections, sentences)

DOC_A = ("Getting Started\n\nThis guide shows how to install the program on a new machine today.\n\n"
         "The installer asks three questions. Each answer can be changed later. Press the green button to begin.\n\n"
         "Advanced Options\n\nExperts may skip the questions and write the configuration file by hand instead.")
DOC_B = "The cache keeps recent keys only. Older keys are overwritten in place. This keeps the memory bounded."


def test_sentences_and_sections_are_read_from_the_text():
    assert sentences(DOC_B) == ["The cache keeps recent keys only.", "Older keys are overwritten in place.",
                                "This keeps the memory bounded."]
    assert sections(DOC_A) == [("Getting Started", "This guide shows how to install the program on a new machine today."),
                               ("Advanced Options", "Experts may skip the questions and write the configuration file by hand instead.")]


def test_every_answer_is_computed_from_its_prompt_and_every_wrong_answer_differs():
    found = make_instructions([DOC_A, DOC_B], per_task=50, seed=0)
    assert {i.task for i in found} == set(TASKS)
    for i in found:
        assert i.answer != i.wrong
        text = i.prompt.split("? " if i.task == "last_word" else ": ", 1)[-1]
        if i.task == "repeat":
            assert i.prompt == f"Repeat this sentence: {i.answer}" and i.wrong == i.answer.rsplit(" ", 1)[0] + "."
        elif i.task == "last_word":
            assert text.rstrip(".").split()[-1] == i.answer and text.split()[0] == i.wrong
        elif i.task == "reverse":
            assert i.answer.split() == text.split()[::-1] and i.wrong == text
        elif i.task == "order":
            a, b = text.split(" B: ")
            a = a.split("A: ", 1)[1] if a.startswith("A: ") else a
            doc = DOC_A if a in DOC_A else DOC_B
            assert (i.answer == "A") == (doc.index(a) < doc.index(b)) and {i.answer, i.wrong} == {"A", "B"}
        else:
            assert i.prompt.split("\n\n")[1] == i.answer and i.wrong in ("Getting Started", "Advanced Options")


def test_the_same_seed_gives_the_same_instructions_and_tasks_interleave():
    one, two = make_instructions([DOC_A, DOC_B], 3, seed=4), make_instructions([DOC_A, DOC_B], 3, seed=4)
    assert one == two and [i.task for i in one[:5]] == list(TASKS)
    with pytest.raises(ValueError, match="unknown task 'sum'"):
        make_instructions([DOC_B], 1, tasks=("sum",))


def test_held_out_instructions_come_from_validation_documents_only():
    from mistral_nb.training.corpus import load_documents
    from mistral_nb.training.instructions import instruction_split

    train = instruction_split("train", 5, limit_docs=40)
    val = instruction_split("val", 5, limit_docs=40, exclude=train)
    train_docs, val_docs = load_documents("train", limit=40, corpus="v2"), load_documents("val", limit=40, corpus="v2")
    assert {i.task for i in val} == set(TASKS)
    for i in val:
        assert i.answer in val_docs[i.doc] or i.task in ("reverse", "order")
    assert all(i.answer in train_docs[i.doc] or i.task in ("reverse", "order") for i in train)
    assert not {i.prompt for i in train} & {i.prompt for i in val}


def test_exact_match_scores_answers_per_task(monkeypatch):
    items = [Instruction("repeat", "Repeat this sentence: A b.", "A b.", "A.", 0),
             Instruction("order", "Which ...", "A", "B", 0), Instruction("order", "Which ...", "B", "A", 1)]
    monkeypatch.setattr(ins_mod, "answers", lambda model, tok, prompts, *a: [" A b. ", "A", "A"])
    scores = exact_match(None, None, items)
    assert scores["per_task"] == {"repeat": 1.0, "order": 0.5} and scores["overall"] == 2 / 3
    assert conversation(items[0])[1] == {"role": "assistant", "content": "A b."}
