"""A newcomer's path: the README's commands as written, the Colab install cell, the configured address."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_the_install_block_makes_a_venv_and_takes_pytorch_from_its_cpu_index():
    install = _blocks("bash")[0]
    lines = [ln.split("#")[0].strip() for ln in install.splitlines()]
    assert lines[0].startswith("python3 -m venv .venv")
    assert "pip install torch --index-url https://download.pytorch.org/whl/cpu" in lines
    assert "pip install -r requirements.txt && jupyter-book build ." in lines       # what .ci/run runs
    assert "torch==2.13.0" not in install           # a local wheel of this machine, not a public command
    contributing = (ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8")
    assert "https://download.pytorch.org/whl/cpu" in contributing and "pip install torch==2.13.0" not in contributing


def test_jupyterlab_is_installed_by_the_requirements():
    """The README and setup.md say `jupyter lab notebooks/`: the command must exist after the install."""
    assert re.search(r"^jupyterlab\b", (ROOT / "requirements.txt").read_text(), flags=re.M)
    exe = Path(sys.executable).parent / "jupyter-lab"
    assert exe.exists() or shutil.which("jupyter-lab"), "jupyter-lab is not installed"
    assert "jupyter lab notebooks/" in README


def test_the_readme_snippet_prints_the_same_every_run(tmp_path):
    snippet = _blocks("python")[0]
    runs = [subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, capture_output=True, text=True,
                           timeout=300) for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr[-2000:]
    assert runs[0].stdout == runs[1].stdout and "->" in runs[0].stdout
    text = runs[0].stdout.splitlines()[-1]
    assert text.startswith("'The sliding window")


def test_the_torchrun_command_is_in_the_readme():
    assert "torchrun --nproc-per-node 2 -m mistral_nb.parallel" in README


def test_every_address_is_derived_from_the_configured_repository():
    done = subprocess.run([sys.executable, "scripts/sync_repository.py", "--check"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr + done.stdout
    assert "published from `main` by `.github/workflows/pages.yml`" in README


def test_sync_repository_rewrites_every_derived_place(tmp_path):
    """Another repository in _config.yml: the script rewrites the baseurl, the package's address, the
    README, CONTRIBUTING.md and every notebook's install cell, and --check then passes."""
    copy = tmp_path / "repo"
    for rel in ("_config.yml", "README.md", "CONTRIBUTING.md", "mistral_nb/book/results.py", "scripts/sync_repository.py"):
        (copy / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, copy / rel)
    shutil.copytree(ROOT / "notebooks", copy / "notebooks", ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    cfg = copy / "_config.yml"
    cfg.write_text(cfg.read_text().replace("https://github.com/mistral-nb/mistral-7b-from-scratch",
                                           "https://github.com/Someone/llm-book"))
    script = [sys.executable, str(copy / "scripts/sync_repository.py")]
    assert subprocess.run(script + ["--check"], capture_output=True, text=True).returncode == 1
    assert subprocess.run(script, capture_output=True, text=True).returncode == 0
    assert subprocess.run(script + ["--check"], capture_output=True, text=True).returncode == 0
    assert "baseurl: https://someone.github.io/llm-book/" in cfg.read_text()
    assert 'REPOSITORY = "https://github.com/Someone/llm-book"' in (copy / "mistral_nb/book/results.py").read_text()
    readme = (copy / "README.md").read_text()
    assert "https://someone.github.io/llm-book/" in readme and "mistral-nb.github.io" not in readme
    assert "colab.research.google.com/github/Someone/llm-book/blob/main/" in readme
    first = next(c for c in nbformat.read(copy / "notebooks/01_tokenizer.ipynb", as_version=4).cells
                 if c.cell_type == "code")
    assert 'REPO = "https://github.com/Someone/llm-book"' in first.source


@pytest.mark.parametrize("path", sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")), ids=lambda p: p.stem)
def test_the_colab_install_cell_names_the_address_it_tried_when_it_fails(path, monkeypatch):
    first = next(c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")

    class Failed:
        returncode, stderr = 1, "fatal: repository not found"

    calls = []
    monkeypatch.setitem(sys.modules, "google.colab", type(sys)("google.colab"))
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: calls.append(cmd) or Failed())
    with pytest.raises(RuntimeError, match=r"(?s)could not install the book's package from "
                                           r"https://github.com/[\w.-]+/[\w.-]+ \(branch main\).*repository not found"):
        exec(compile(first.source, path.name, "exec"), {})
    assert calls and calls[0][1:4] == ["-m", "pip", "install"]
