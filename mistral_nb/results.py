"""Recorded benchmark and experiment results, wherever the notebook runs.

In a clone of the repository the JSON files are read from ``benchmarks/results/`` and
``experiments/results/``; where the package was installed on its own (Colab), they are fetched
from the repository on GitHub, so the chapters that plot recorded measurements work there too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

REPOSITORY = "https://github.com/mistral-nb/mistral-7b-from-scratch"   # same as _config.yml (a test checks)
BRANCH = "main"


def repository_root(start: Optional[Path] = None) -> Optional[Path]:
    """The checkout holding ``benchmarks/results``: searched upwards from ``start`` (default: the
    working directory), then from this package's own location (editable installs)."""
    starts = [Path(start) if start else Path.cwd(), Path(__file__).resolve().parent]
    for s in starts:
        for base in (s, *s.parents):
            if (base / "benchmarks" / "results").is_dir():
                return base
    return None


def raw_url(relpath: str) -> str:
    """Where GitHub serves a file of the repository as plain text."""
    owner_repo = REPOSITORY.removeprefix("https://github.com/")
    return f"https://raw.githubusercontent.com/{owner_repo}/{BRANCH}/{relpath}"


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
