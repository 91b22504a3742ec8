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
import math
import os
import platform
import threading
from pathlib import Path
from typing import Optional

REPOSITORY = "https://github.com/mistral-nb/mistral-7b-from-scratch"   # same as _config.yml (a test checks)
BRANCH = "main"
RAW_BASE_ENV = "MISTRAL_NB_RAW_BASE"


# the vector extensions that decide which CPU kernels run (/proc/cpuinfo flag names)
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")


def cpu_model() -> dict:
    """The CPU's model name and which of ``CPU_FLAGS`` it has (Linux's /proc/cpuinfo; elsewhere the
    model from ``platform`` and no flags), with the vector width PyTorch dispatches its kernels for."""
    import torch

    info = {"model": platform.processor() or platform.machine(), "flags": [],
            "torch_capability": torch.backends.cpu.get_cpu_capability()}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    fields = {k.strip(): v.strip() for k, v in (ln.split(":", 1) for ln in text.splitlines() if ":" in ln)}
    flags = set(fields.get("flags", "").split())
    info.update(model=fields.get("model name", info["model"]), flags=[f for f in CPU_FLAGS if f in flags])
    if "cpu family" in fields:                  # x86: a virtual machine may show only "AMD EPYC"; these tell the generation
        info.update(family=fields["cpu family"], model_number=fields.get("model"))
    return info


def machine_info() -> dict:
    """What a recorded number was measured on: date, Python, torch, CPU cores and threads, processor,
    the CPU's model and vector extensions, RAM and, where there is one, the GPU (every benchmark and
    experiment records this)."""
    import torch

    info = {"date": datetime.date.today().isoformat(), "python": platform.python_version(),
            "torch": torch.__version__, "cpu_cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "processor": platform.processor() or platform.machine(), "cpu": cpu_model()}
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


MAX_DOWNLOAD_BYTES = 512_000_000        # the largest recorded file is ~43 MB
MANIFEST = Path(__file__).with_name("recorded_files.json")
RECORDED_DIRS = ("benchmarks/results", "experiments/results", "experiments/corpus", "experiments/corpus_v2")
RECORDED_SUFFIXES = (".json", ".safetensors", ".xz", ".txt", ".csv", ".npz")


def manifest_of(root: Path) -> dict:
    """{relpath: {"bytes": n, "sha256": hex}} of the recorded data files under ``root``'s RECORDED_DIRS
    (what ``scripts/recorded_manifest.py`` writes to ``book/recorded_files.json``)."""
    out = {}
    for folder in RECORDED_DIRS:
        for f in sorted((Path(root) / folder).rglob("*")):
            if f.is_file() and f.suffix in RECORDED_SUFFIXES and "__pycache__" not in f.parts:
                data = f.read_bytes()
                out[f.relative_to(root).as_posix()] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    return out


def recorded_manifest() -> dict:
    """{relpath: {"bytes": n, "sha256": hex}} of every recorded file of the repository at the commit this
    package was built from (``book/recorded_files.json``, written by ``scripts/recorded_manifest.py``)."""
    from ..checkpoint.files import parse_json, read_regular_file

    if not MANIFEST.is_file():
        return {}
    return parse_json(read_regular_file(MANIFEST, 16_000_000, "manifest of recorded files"), MANIFEST, ValueError)


def _check_relpath(where: str, relpath) -> str:
    """A path inside the repository, such as 'benchmarks/results/x.json' (never absolute, never '..')."""
    if not isinstance(relpath, str):
        raise TypeError(f"{where}: relpath must be a str such as 'benchmarks/results/cpu_7b.json', got {relpath!r}")
    if not relpath.strip() or Path(relpath).is_absolute() or ".." in Path(relpath).parts or "\\" in relpath:
        raise ValueError(f"{where}: relpath must lie inside the repository (relative, no '..'), got {relpath!r}")
    return relpath


def _check_timeout(where: str, timeout) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf:
        raise ValueError(f"{where}: timeout must be a number of seconds > 0 (the whole download's deadline), "
                         f"got {timeout!r}")
    return float(timeout)


def _fetch(url: str, timeout: float) -> bytes:
    """The body of ``url``, all of it within ``timeout`` seconds in total (a server that accepts and never
    answers, or trickles a byte at a time, is given up at the deadline; a per-read timeout would wait
    forever on the trickle). The size is checked against the Content-Length the server announced."""
    import urllib.request

    from ..checkpoint.files import call_with_deadline

    stop, received = threading.Event(), [0]

    def download() -> bytes:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            length = getattr(response, "headers", {}).get("Content-Length")
            chunks = []
            while not stop.is_set() and (chunk := response.read1(1 << 16)):
                chunks.append(chunk)
                received[0] += len(chunk)
                if received[0] > MAX_DOWNLOAD_BYTES:
                    raise ValueError(f"more than the {MAX_DOWNLOAD_BYTES:,} bytes a recorded file may have")
            data = b"".join(chunks)
            if length is not None and length.isdigit() and len(data) != int(length):
                raise ValueError(f"received {len(data):,} of the {int(length):,} bytes the server announced: "
                                 "the download was cut short")
            return data

    try:
        return call_with_deadline(download, timeout, url, stop)
    except TimeoutError:
        raise TimeoutError(f"no complete answer within {timeout:g} s ({received[0]:,} bytes received)") from None


def _verified(relpath: str, data: bytes) -> bytes:
    """``data`` if it is the file the manifest lists under ``relpath`` (size and SHA-256); files the
    manifest does not list (newer than this package) are taken as the server sent them."""
    expected = recorded_manifest().get(relpath)
    if expected is None:
        return data
    digest = hashlib.sha256(data).hexdigest()
    if len(data) != expected["bytes"] or digest != expected["sha256"]:
        raise ValueError(f"the download is {len(data):,} bytes with SHA-256 {digest[:16]}..., but this package's "
                         f"manifest lists {expected['bytes']:,} bytes with SHA-256 {expected['sha256'][:16]}...: "
                         "a truncated or changed file (reinstall the package if the repository has moved on)")
    return data


def _cached(relpath: str, cached: Path) -> bool:
    """A cached copy is served only if it is a regular file of the size the manifest lists (when listed)."""
    if not cached.is_file():
        return False
    expected = recorded_manifest().get(relpath)
    return expected is None or cached.stat().st_size == expected["bytes"]


def _not_found(kind: str, relpath: str, root: Optional[Path], url: str, e: Exception) -> FileNotFoundError:
    where = f"{root / relpath}" if root else "no local checkout"
    return FileNotFoundError(f"recorded {kind} {relpath!r} not found: {where}; download from {url} "
                             f"failed ({type(e).__name__}: {e})")


def recorded_path(relpath: str, start: Optional[Path] = None, timeout: float = 60.0) -> Path:
    """A local path to a recorded file of the repository (a model, a corpus, a JSON result).

    The local checkout first; otherwise the file is downloaded once from the repository into
    ``cache_dir()``, within ``timeout`` seconds in all, checked against the Content-Length and against
    the size and SHA-256 that this package's manifest lists for it, then written to a temporary name
    and renamed, so a broken or truncated download leaves nothing behind and is never served later.
    Raises FileNotFoundError naming the file and both places looked at when neither has it.
    """
    relpath, timeout = _check_relpath("recorded_path", relpath), _check_timeout("recorded_path", timeout)
    root = repository_root(start)
    if root is not None and (root / relpath).is_file():
        return root / relpath
    cached = cache_dir() / relpath
    if _cached(relpath, cached):
        return cached
    url = raw_url(relpath)
    try:
        data = _verified(relpath, _fetch(url, timeout))
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(cached.name + ".part")
        try:
            tmp.write_bytes(data)
            tmp.replace(cached)
        finally:
            tmp.unlink(missing_ok=True)
        return cached
    except Exception as e:  # no network, 404, a deadline passed, a truncated file
        raise _not_found("file", relpath, root, url, e) from None


def recorded_checkpoint(reldir: str, start: Optional[Path] = None, timeout: float = 60.0) -> Path:
    """The directory of a model recorded in Mistral's layout (``params.json`` + ``consolidated.safetensors``),
    for ``load_model``: from the local checkout, or both files downloaded as ``recorded_path`` does."""
    files = [recorded_path(f"{reldir.rstrip('/')}/{name}", start, timeout)
             for name in ("params.json", "consolidated.safetensors")]
    return files[0].parent


def load_recorded(relpath: str, start: Optional[Path] = None, timeout: float = 30.0) -> dict:
    """Read a recorded result such as ``"benchmarks/results/banded_vs_dense.json"``.

    Local checkout first; otherwise download it from the repository (within ``timeout`` seconds in all,
    checked as ``recorded_path`` checks). Raises FileNotFoundError naming the file and both places
    looked at when neither has it, and ValueError naming the file when it is not JSON.
    """
    from ..checkpoint.files import MAX_JSON_BYTES, parse_json, read_regular_file

    relpath, timeout = _check_relpath("load_recorded", relpath), _check_timeout("load_recorded", timeout)
    root = repository_root(start)
    if root is not None and (root / relpath).is_file():
        path = root / relpath
        return parse_json(read_regular_file(path, MAX_JSON_BYTES, "recorded result"), path, ValueError,
                          "not a recorded result (not valid JSON)")
    url = raw_url(relpath)
    try:
        data = _verified(relpath, _fetch(url, timeout))
    except Exception as e:  # no network, 404, a deadline passed, a truncated file
        raise _not_found("result", relpath, root, url, e) from None
    return parse_json(data, url, ValueError, "not a recorded result (not valid JSON)")
