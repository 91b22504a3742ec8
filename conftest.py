"""Repository-wide pytest configuration.

What it does for notebooks run with ``pytest --nbval``:

* A code cell tagged ``gpu`` (cell metadata ``"tags": ["gpu"]``) is skipped when
  ``torch.cuda.is_available()`` is false. The skip mark is added at collection time, so pytest
  never calls the cell's ``runtest``: the cell's source is never sent to the kernel. With CUDA
  the cell runs and must not raise, but its output is not compared (as with
  ``# NBVAL_IGNORE_OUTPUT``): the committed outputs come from a CPU run.
* The kernel nbval starts for each notebook gets a fixed environment: matplotlib's inline
  backend (an ``MPLBACKEND=Agg`` inherited from a CI shell would otherwise suppress every figure
  and print a warning into the compared output) and a fixed ``PYTHONHASHSEED``. The variables are
  set only while nbval starts a kernel and are restored right after, so plain ``pytest tests/``
  runs in an unchanged environment.

* Defaults for nbval's own options, so that the README's plain ``pytest --nbval`` does the
  right thing from any working directory: ``--nbval-sanitize-with tests/sanitize.cfg``
  (absolute path) and ``--nbval-current-env`` (run notebooks with this interpreter, not
  whatever a "python3" kernelspec on the machine points to). Options given on the command
  line or in addopts win.

Without ``--nbval`` nothing here has any effect.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import pytest

GPU_TAG = "gpu"
SANITIZE_CFG = Path(__file__).resolve().parent / "tests" / "sanitize.cfg"

# Environment of the notebook kernels (read by the kernel process when it starts).
KERNEL_ENV = {
    # ipykernel only picks its inline backend when MPLBACKEND is unset; set it explicitly.
    "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    "PYTHONHASHSEED": "0",
    # Python >= 3.11 + debugpy: silences the "frozen modules" warning at kernel start.
    "PYDEVD_DISABLE_FILE_VALIDATION": "1",
    # One intra-op thread: the notebooks use small tensors, where thread hand-offs cost more than they
    # save (100x slower on a busy 2-core machine), and the committed outputs were computed the same way.
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


def _nbval_cell_class():
    try:
        from nbval.plugin import IPyNbCell
    except ImportError:  # nbval not installed: no notebook items can exist
        return None
    return IPyNbCell


def _cell_tags(item) -> list[str]:
    tags = item.cell.get("metadata", {}).get("tags", [])
    return list(tags) if isinstance(tags, list) else []


_cuda_available: bool | None = None


def cuda_available() -> bool:
    """``torch.cuda.is_available()``, imported lazily and computed once."""
    global _cuda_available
    if _cuda_available is None:
        try:
            import torch
        except ImportError:
            _cuda_available = False
        else:
            _cuda_available = bool(torch.cuda.is_available())
    return _cuda_available


@pytest.hookimpl(trylast=True)  # after nbval has resolved its deprecated option aliases
def pytest_configure(config):
    opt = config.option
    if not (getattr(opt, "nbval", False) or getattr(opt, "nbval_lax", False)):
        return
    if getattr(opt, "nbval_sanitize_with", "unset") is None and SANITIZE_CFG.is_file():
        opt.nbval_sanitize_with = str(SANITIZE_CFG)
    if not getattr(opt, "nbval_kernel_name", None) and hasattr(opt, "nbval_current_env"):
        opt.nbval_current_env = True


def pytest_collection_modifyitems(config, items):
    cell_cls = _nbval_cell_class()
    if cell_cls is None:
        return
    gpu_cells = [it for it in items if isinstance(it, cell_cls) and GPU_TAG in _cell_tags(it)]
    if not gpu_cells:
        return
    if cuda_available():
        # The committed outputs come from a CPU run, where these cells did not run: on a GPU
        # they must run without error, but their output (a device name, real-weight text,
        # timings) cannot be compared with anything.
        for item in gpu_cells:
            item.options["check"] = False
        return
    skip = pytest.mark.skip(reason="notebook cell tagged 'gpu': torch.cuda.is_available() is False")
    for item in gpu_cells:
        item.add_marker(skip)


@contextmanager
def _temporary_environ(values: dict[str, str]):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    # nbval starts a notebook's kernel in IPyNbFile.setup(), which pytest calls while setting
    # up the notebook's first cell that is not skipped: that is inside this hook.
    cell_cls = _nbval_cell_class()
    if cell_cls is not None and isinstance(item, cell_cls):
        with _temporary_environ(KERNEL_ENV):
            yield
    else:
        yield
