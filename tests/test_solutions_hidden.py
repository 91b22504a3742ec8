"""The exercises' solutions are out of sight in Jupyter and on Colab too, not only in the HTML book,
and nbval still runs them (their asserts and their ``check`` must pass, their output is not stored)."""

from __future__ import annotations

import copy
from pathlib import Path

import nbformat
import pytest

from mistral_nb.book.solutions import TITLE, hide_solutions, is_solution, solution_problems

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _cell(source, tags=("hide-cell",), outputs=None):
    return nbformat.v4.new_code_cell(source, metadata={"tags": list(tags)}, execution_count=3,
                                     outputs=outputs or [nbformat.v4.new_output("stream", text="42\n")])


def test_hide_solutions_strips_the_answer_and_collapses_the_cell():
    nb = nbformat.v4.new_notebook(cells=[
        _cell('x = 6 * 7\ncheck("01.1", x)'),                       # a solution
        _cell('check("01.1", None)', tags=()),                      # the learner's cell: stays as it is
        _cell("print(42)"),                                          # hidden, but no check: not a solution
    ])
    before = copy.deepcopy(nb)
    assert solution_problems(nb) and solution_problems(nb)[0].startswith("cell 0: has committed output")
    assert hide_solutions(nb) == 1
    sol = nb.cells[0]
    assert sol.outputs == [] and sol.execution_count == 3
    assert sol.source == f'{TITLE}\nx = 6 * 7\ncheck("01.1", x)'
    assert sol.metadata["tags"] == ["hide-cell", "nbval-ignore-output"]
    assert sol.metadata["jupyter"] == {"source_hidden": True, "outputs_hidden": True}
    assert sol.metadata["cellView"] == "form"
    assert nb.cells[1:] == before.cells[1:]
    assert solution_problems(nb) == []
    again = copy.deepcopy(nb)
    assert hide_solutions(again) == 1 and again == nb                # idempotent


def test_a_half_hidden_solution_is_reported():
    nb = nbformat.v4.new_notebook(cells=[_cell('check("01.1", 1)')])
    hide_solutions(nb)
    del nb.cells[0].metadata["cellView"]
    assert solution_problems(nb) == [f"cell 0: is not collapsed for Colab (cellView 'form' and a first line {TITLE!r})"]


def test_bad_input_is_named():
    with pytest.raises(TypeError, match="nb must be a notebook"):
        hide_solutions({"cells": "not a list"})
    with pytest.raises(TypeError, match="a cell must be a mapping"):
        is_solution("check(1)")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_solution_is_hidden_in_jupyter_and_colab(path):
    nb = nbformat.read(str(path), as_version=4)
    solutions = [c for c in nb.cells if is_solution(c)]
    assert solutions, f"{path.name}: no solution cell (a code cell tagged hide-cell that calls check)"
    problems = solution_problems(nb)
    assert not problems, (f"{path.name}: solutions visible outside the HTML book:\n  " + "\n  ".join(problems)
                          + f"\nrun: python -m mistral_nb.book.solutions notebooks/{path.name}")
