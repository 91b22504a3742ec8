"""Execute notebooks in place on the CPU, the way they are committed.

    python scripts/run_notebooks.py notebooks/03_rope.ipynb [more.ipynb ...]

Cells tagged ``gpu`` run too: they begin with ``if cuda_or_explain():`` and on a CPU only print why
they do nothing. Widget state is stored so the book can render widgets without a kernel, and each
notebook's wall time is printed (never saved into it). Consecutive pieces of one stream are joined (a
busy machine flushes a cell's print in several pieces), so the committed outputs do not depend on the
load. The exercises' solutions are then saved without output and collapsed for Jupyter and Colab
(``mistral_nb.book.solutions.hide_solutions``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from mistral_nb.book.solutions import hide_solutions


def join_streams(outputs: list) -> list:
    """Consecutive stream outputs of the same name (stdout, stderr) joined into one, in order."""
    joined = []
    for out in outputs:
        if (joined and out.get("output_type") == "stream" and joined[-1].get("output_type") == "stream"
                and joined[-1]["name"] == out["name"]):
            joined[-1]["text"] += out["text"]
        else:
            joined.append(out)
    return joined


def run(path: Path, timeout: int = 600) -> float:
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}},
                            store_widget_state=True, record_timing=False)
    t0 = time.perf_counter()
    client.execute()
    elapsed = time.perf_counter() - t0
    for cell in nb.cells:           # keep the committed notebook free of machine-dependent metadata
        cell.get("metadata", {}).pop("execution", None)
        if cell.cell_type == "code":
            cell.outputs = join_streams(cell.outputs)
    hide_solutions(nb)
    nbformat.write(nb, path)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("PYTHONHASHSEED", "0")
    os.environ.pop("MPLBACKEND", None)   # the kernel's inline backend must draw the figures
    # the same kernel environment as the tests (conftest.py KERNEL_ENV): one intra-op thread
    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    for path in args.notebooks:
        elapsed = run(path)
        print(f"{path}: executed in {elapsed:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
