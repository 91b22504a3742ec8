"""Recorded results are found in the checkout, and fetched from the repository elsewhere."""

import io
import json
from pathlib import Path

import pytest

from mistral_nb.book import results

ROOT = Path(__file__).resolve().parent.parent


def test_repository_url_matches_book_config():
    import yaml

    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert results.REPOSITORY == config["repository"]["url"].rstrip("/")
    assert results.BRANCH == config["repository"]["branch"]


def test_local_checkout_is_read():
    data = results.load_recorded("benchmarks/results/kv_cache_bytes.json", start=ROOT / "notebooks")
    assert data["bytes_per_token_7b_bf16"] == 131_072


def test_download_when_not_in_a_checkout(tmp_path, monkeypatch):
    seen = {}

    def fake_urlopen(url, timeout):
        seen["url"] = url
        return io.BytesIO(json.dumps({"ok": 1}).encode())

    monkeypatch.setattr(results, "repository_root", lambda start=None: None)
    monkeypatch.setattr("urllib.request.urlopen", fake_urlopen)
    assert results.load_recorded("benchmarks/results/x.json", start=tmp_path) == {"ok": 1}
    assert seen["url"] == ("https://raw.githubusercontent.com/mistral-nb/mistral-7b-from-scratch/main/"
                           "benchmarks/results/x.json")


def test_clear_error_without_checkout_or_network(tmp_path, monkeypatch):
    def no_network(url, timeout):
        raise OSError("network unreachable")

    monkeypatch.setattr(results, "repository_root", lambda start=None: None)
    monkeypatch.setattr("urllib.request.urlopen", no_network)
    with pytest.raises(FileNotFoundError, match="benchmarks/results/x.json.*network unreachable"):
        results.load_recorded("benchmarks/results/x.json", start=tmp_path)
