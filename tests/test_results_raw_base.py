"""``$MISTRAL_NB_RAW_BASE``: recorded files fetched from another base URL than GitHub's.

The Colab rehearsal (tests/test_colab_rehearsal.py) serves a clone of the repository on
127.0.0.1 and points the package at it with this variable. Here: the default is GitHub's raw
address, the variable replaces it for ``raw_url``, ``load_recorded`` and ``recorded_path``, and
files fetched from it are cached apart from GitHub's, end to end through a real local server.
"""

from __future__ import annotations

import functools
import http.server
import json
import threading
from pathlib import Path

import pytest

from mistral_nb.book import results

GITHUB_RAW = "https://raw.githubusercontent.com/mistral-nb/mistral-7b-from-scratch/main"


@pytest.fixture
def served(tmp_path):
    """A local HTTP server over a fake checkout; yields (base URL, list of requested paths)."""
    root = tmp_path / "checkout"
    (root / "benchmarks" / "results").mkdir(parents=True)
    (root / "benchmarks" / "results" / "x.json").write_text(json.dumps({"ok": 1}))
    (root / "experiments" / "results" / "m").mkdir(parents=True)
    (root / "experiments" / "results" / "m" / "params.json").write_text('{"dim": 8}')
    seen: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            seen.append(self.path)
            super().do_GET()

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def no_checkout(monkeypatch, tmp_path):
    monkeypatch.setattr(results, "repository_root", lambda start=None: None)
    monkeypatch.setenv("MISTRAL_NB_CACHE", str(tmp_path / "cache"))


def test_default_is_github(monkeypatch):
    monkeypatch.delenv(results.RAW_BASE_ENV, raising=False)
    assert results.raw_base() == GITHUB_RAW
    assert results.raw_url("benchmarks/results/x.json") == f"{GITHUB_RAW}/benchmarks/results/x.json"
    monkeypatch.setenv(results.RAW_BASE_ENV, "   ")          # blank counts as unset
    assert results.raw_base() == GITHUB_RAW


def test_override_replaces_the_base(monkeypatch):
    monkeypatch.setenv(results.RAW_BASE_ENV, "http://127.0.0.1:8123/clone/")
    assert results.raw_base() == "http://127.0.0.1:8123/clone"
    assert results.raw_url("benchmarks/results/x.json") == "http://127.0.0.1:8123/clone/benchmarks/results/x.json"


def test_cache_of_an_override_is_kept_apart(monkeypatch, tmp_path):
    monkeypatch.setenv("MISTRAL_NB_CACHE", str(tmp_path))
    monkeypatch.delenv(results.RAW_BASE_ENV, raising=False)
    assert results.cache_dir() == tmp_path
    monkeypatch.setenv(results.RAW_BASE_ENV, "http://127.0.0.1:1")
    one = results.cache_dir()
    monkeypatch.setenv(results.RAW_BASE_ENV, "http://127.0.0.1:2/")
    two = results.cache_dir()
    assert one.parent == tmp_path and two.parent == tmp_path
    assert one.name.startswith("raw-") and one != two


def test_load_recorded_reads_from_the_override(served, no_checkout, monkeypatch):
    base, seen = served
    monkeypatch.setenv(results.RAW_BASE_ENV, base)
    assert results.load_recorded("benchmarks/results/x.json") == {"ok": 1}
    assert seen == ["/benchmarks/results/x.json"]


def test_recorded_path_downloads_once_into_the_override_cache(served, no_checkout, monkeypatch):
    base, seen = served
    monkeypatch.setenv(results.RAW_BASE_ENV, base)
    path = results.recorded_path("experiments/results/m/params.json")
    assert path == results.cache_dir() / "experiments/results/m/params.json"
    assert json.loads(path.read_text()) == {"dim": 8}
    assert results.recorded_path("experiments/results/m/params.json") == path   # from the cache now
    assert seen == ["/experiments/results/m/params.json"]
    assert not list(Path(results.cache_dir()).rglob("*.part"))


def test_missing_file_names_the_override(served, no_checkout, monkeypatch):
    base, _ = served
    monkeypatch.setenv(results.RAW_BASE_ENV, base)
    with pytest.raises(FileNotFoundError, match=r"127\.0\.0\.1.*benchmarks/results/nope\.json.*404"):
        results.recorded_path("benchmarks/results/nope.json")
    assert not (results.cache_dir() / "benchmarks/results/nope.json").exists()


def test_recorded_checkpoint_fetches_both_files_of_the_mistral_layout(served, no_checkout, monkeypatch):
    """On Colab a recorded model needs its params.json as well as its weights (chapters 04, 11, 12)."""
    base, seen = served
    monkeypatch.setenv(results.RAW_BASE_ENV, base)
    (Path(results.cache_dir()) / "experiments/results/m").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"consolidated\.safetensors.*404"):
        results.recorded_checkpoint("experiments/results/m")            # the server has no weights
    assert seen == ["/experiments/results/m/params.json", "/experiments/results/m/consolidated.safetensors"]


def test_recorded_checkpoint_returns_the_directory(served, no_checkout, monkeypatch, tmp_path):
    base, _ = served
    monkeypatch.setenv(results.RAW_BASE_ENV, base)
    where = Path(results.cache_dir()) / "experiments/results/m"
    where.mkdir(parents=True)
    (where / "consolidated.safetensors").write_bytes(b"cached")
    assert results.recorded_checkpoint("experiments/results/m/") == where
    assert (where / "params.json").is_file()
