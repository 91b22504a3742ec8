"""Keep the exercises' solutions out of sight wherever a chapter is opened.

A solution is a code cell tagged ``hide-cell`` that calls ``check(...)``. The HTML book folds such a
cell behind a toggle (Jupyter Book reads the tag), but Jupyter and Colab ignore that tag and would
print a committed answer right under the question. ``hide_solutions`` therefore makes each solution

* carry no committed output (its execution count stays, so the notebook still reads as one run);
* tagged ``nbval-ignore-output``: ``pytest --nbval`` still runs it, so its asserts and its ``check``
  still have to pass, but it has no stored output to compare;
* collapsed in JupyterLab and Notebook 7 (``metadata.jupyter.source_hidden`` / ``outputs_hidden``);
* collapsed on Colab (``metadata.cellView = "form"`` with a first line ``# @title Solution``, which
  Colab shows in place of the code until it is double-clicked).

``scripts/run_notebooks.py`` applies it after every execution; it is idempotent.

    python -m mistral_nb.book.solutions notebooks/09_performance.ipynb [...]   # without re-running
"""

from __future__ import annotations

import re
import sys
from typing import Any, List, Mapping

__all__ = ["SOLUTION_TAG", "TITLE", "is_solution", "hide_solutions", "solution_problems"]

SOLUTION_TAG = "hide-cell"
NBVAL_TAG = "nbval-ignore-output"
TITLE = "# @title Solution"
_CHECK_CALL = re.compile(r"^\s*check\(", re.M)


def _source(cell: Mapping[str, Any]) -> str:
    s = cell.get("source", "")
    return s if isinstance(s, str) else "".join(s)


def _tags(cell: Mapping[str, Any]) -> List[str]:
    t = cell.get("metadata", {}).get("tags", [])
    return list(t) if isinstance(t, list) else []


def is_solution(cell: Mapping[str, Any]) -> bool:
    """A code cell tagged ``hide-cell`` whose code calls ``check(`` at the start of a line."""
    if not isinstance(cell, Mapping):
        raise TypeError(f"is_solution: a cell must be a mapping (a notebook cell), got {type(cell).__name__}")
    return cell.get("cell_type") == "code" and SOLUTION_TAG in _tags(cell) and bool(_CHECK_CALL.search(_source(cell)))


def hide_solutions(nb: Mapping[str, Any]) -> int:
    """Hide every solution cell of ``nb`` (a notebook as nbformat or json reads it) in place.

    Returns the number of solution cells. Idempotent: a second call changes nothing."""
    if not isinstance(nb, Mapping) or not isinstance(nb.get("cells"), list):
        raise TypeError("hide_solutions: nb must be a notebook (a mapping with a list of 'cells')")
    n = 0
    for cell in nb["cells"]:
        if not is_solution(cell):
            continue
        n += 1
        src = _source(cell)
        if not src.startswith(TITLE + "\n"):
            src = f"{TITLE}\n{src}"
        cell["source"] = src
        cell["outputs"] = []
        meta = cell.setdefault("metadata", {})
        tags = _tags(cell)
        if NBVAL_TAG not in tags:
            tags.append(NBVAL_TAG)
        meta["tags"] = tags
        meta["cellView"] = "form"
        jupyter = dict(meta.get("jupyter", {}))
        jupyter.update(source_hidden=True, outputs_hidden=True)
        meta["jupyter"] = jupyter
    return n


def solution_problems(nb: Mapping[str, Any]) -> List[str]:
    """What keeps a solution of ``nb`` visible in Jupyter or Colab, one line per cell ('' list: none)."""
    problems = []
    for i, cell in enumerate(nb["cells"]):
        if not is_solution(cell):
            continue
        meta, wrong = cell.get("metadata", {}), []
        if cell.get("outputs"):
            wrong.append("has committed output")
        if NBVAL_TAG not in _tags(cell):
            wrong.append(f"lacks the tag {NBVAL_TAG!r}")
        if meta.get("jupyter", {}).get("source_hidden") is not True or meta.get("jupyter", {}).get("outputs_hidden") is not True:
            wrong.append("is not collapsed for Jupyter (metadata.jupyter.source_hidden / outputs_hidden)")
        if meta.get("cellView") != "form" or not _source(cell).startswith(TITLE + "\n"):
            wrong.append(f"is not collapsed for Colab (cellView 'form' and a first line {TITLE!r})")
        if wrong:
            problems.append(f"cell {i}: " + ", ".join(wrong))
    return problems


def main(paths: List[str]) -> None:
    import nbformat

    if not paths:
        raise SystemExit("usage: python -m mistral_nb.book.solutions NOTEBOOK.ipynb [...]")
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        n = hide_solutions(nb)
        nbformat.write(nb, path)
        print(f"{path}: {n} solution cells hidden")


if __name__ == "__main__":
    main(sys.argv[1:])
