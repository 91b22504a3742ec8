"""Recorded benchmark and experiment results, wherever the notebook runs.

In a clone of the repository the JSON files are read from ``benchmarks/results/`` and
``experiments/results/``; where the package was installed on its own (Colab), they are fetched
from the repository on GitHub, so the chapters that plot recorded measurements work there too.

``$MISTRAL_NB_RAW_BASE`` replaces GitHub's raw-file address of the repository's main branch
(``https://raw.githubusercontent.com/OWNER/REPO/main``) with another base URL under which the
repository's files lie, e.g. a local HTTP server over a clone: the Colab rehearsal test
(tests/test_colab_rehearsal.py) runs every chapter that way, with no internet. Files fetched
from such a base are cached apart from GitHub's (see ``cache_dir``).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
from pathlib import Path
from typing import Optional

REPOSITORY = "https://github.com/mistral-nb/mistral-7b-from-scratch"   # same as _config.yml (a test checks)
BRANCH = "main"
RAW_BASE_ENV = "MISTRAL_NB_RAW_BASE"


def machine_info() -> dict:
    """What a recorded number was measured on: date, Python, torch, CPU cores and threads, processor,
    RAM and, where there is one, the GPU (every benchmark and experiment records this)."""
    import torch

    info = {"date": datetime.date.today().isoformat(), "python": platform.python_version(),
            "torch": torch.__version__, "cpu_cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "processor": platform.processor() or platform.machine()}
    try:
        info["ram_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1)
    except (ValueError, OSError):
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def repository_root(start: Optional[Path] = None) -> Optional[Path]:
    """The checkout holding ``benchmarks/results``: searched upwards from ``start`` (default: the
    working directory), then from this package's own location (editable installs)."""
    starts = [Path(start) if start else Path.cwd(), Path(__file__).resolve().parent]
    for s in starts:
        for base in (s, *s.parents):
            if (base / "benchmarks" / "results").is_dir():
                return base
    return None


def _raw_base_override() -> Optional[str]:
    value = os.environ.get(RAW_BASE_ENV, "").strip().rstrip("/")
    return value or None


def raw_base() -> str:
    """The URL under which the repository's files lie as plain text: GitHub's raw address of the
    main branch, or ``$MISTRAL_NB_RAW_BASE`` when it is set (no trailing slash either way)."""
    override = _raw_base_override()
    if override:
        return override
    owner_repo = REPOSITORY.removeprefix("https://github.com/")
    return f"https://raw.githubusercontent.com/{owner_repo}/{BRANCH}"


def raw_url(relpath: str) -> str:
    """Where a file of the repository is served as plain text (see ``raw_base``)."""
    return f"{raw_base()}/{relpath.lstrip('/')}"


def cache_dir() -> Path:
    """Where files fetched from the repository are kept (``$MISTRAL_NB_CACHE`` or ~/.cache/mistral_nb).

    Files fetched from a ``$MISTRAL_NB_RAW_BASE`` go to a subdirectory named after that base
    (``raw-`` and 12 hex digits of its sha256), so they never stand in for GitHub's files later.
    """
    base = Path(os.environ.get("MISTRAL_NB_CACHE", Path.home() / ".cache" / "mistral_nb"))
    override = _raw_base_override()
    if override:
        return base / f"raw-{hashlib.sha256(override.encode()).hexdigest()[:12]}"
    return base


def recorded_path(relpath: str, start: Optional[Path] = None, timeout: float = 60.0) -> Path:
    """A local path to a recorded file of the repository (a model, a corpus, a JSON result).

    The local checkout first; otherwise the file is downloaded once from the repository into
    ``cache_dir()`` (written to a temporary name, then renamed, so a broken download leaves nothing).
    Raises FileNotFoundError naming the file and both places looked at when neither has it.
    """
    root = repository_root(start)
    if root is not None and (root / relpath).is_file():
        return root / relpath
    cached = cache_dir() / relpath
    if cached.is_file():
        return cached
    url = raw_url(relpath)
    try:
        from urllib.request import urlopen

        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(cached.name + ".part")
        with urlopen(url, timeout=timeout) as response, open(tmp, "wb") as f:
            while chunk := response.read(1 << 20):
                f.write(chunk)
        tmp.replace(cached)
        return cached
    except Exception as e:  # no network, 404
        where = f"{root / relpath}" if root else "no local checkout"
        raise FileNotFoundError(f"recorded file {relpath!r} not found: {where}; download from {url} "
                                f"failed ({type(e).__name__}: {e})") from None


def recorded_checkpoint(reldir: str, start: Optional[Path] = None, timeout: float = 60.0) -> Path:
    """The directory of a model recorded in Mistral's layout (``params.json`` + ``consolidated.safetensors``),
    for ``load_model``: from the local checkout, or both files downloaded as ``recorded_path`` does."""
    files = [recorded_path(f"{reldir.rstrip('/')}/{name}", start, timeout)
             for name in ("params.json", "consolidated.safetensors")]
    return files[0].parent


def load_recorded(relpath: str, start: Optional[Path] = None, timeout: float = 30.0) -> dict:
    """Read a recorded result such as ``"benchmarks/results/banded_vs_dense.json"``.

    Local checkout first; otherwise download it from the repository. Raises FileNotFoundError naming
    the file and both places looked at when neither has it.
    """
    root = repository_root(start)
    if root is not None and (root / relpath).is_file():
        return json.loads((root / relpath).read_text(encoding="utf-8"))
    url = raw_url(relpath)
    try:
        from urllib.request import urlopen

        with urlopen(url, timeout=timeout) as response:
            return json.loads(response.read().decode("utf-8"))
    except Exception as e:  # no network, 404, not JSON
        where = f"{root / relpath}" if root else "no local checkout"
        raise FileNotFoundError(f"recorded result {relpath!r} not found: {where}; download from {url} "
                                f"failed ({type(e).__name__}: {e})") from None
