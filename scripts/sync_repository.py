"""Derive every address of the book from the one configured place, ``_config.yml``'s ``repository``.

    python scripts/sync_repository.py            # rewrite the derived places
    python scripts/sync_repository.py --check    # exit 1 and list what differs (tests/test_book.py runs it)

From ``repository.url`` (``https://github.com/OWNER/REPO``) and ``repository.branch`` follow:
``html.baseurl`` in _config.yml (GitHub Pages of the repository: https://owner.github.io/REPO/), the
package's ``mistral_nb/book/results.py`` (where recorded results are downloaded from on Colab), the
first cell of every notebook (the Colab install, which fails with a message naming the address it
tried), the same cell in CONTRIBUTING.md, and the addresses README.md gives.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parent.parent

INSTALL_CELL = '''import sys
if "google.colab" in sys.modules:  # on Colab only: install this book's package from its repository
    import subprocess
    REPO = "{url}"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", f"mistral-nb @ git+{{REPO}}@{branch}"],
                         capture_output=True, text=True)
    if pip.returncode != 0:
        raise RuntimeError(f"could not install the book's package from {{REPO}} (branch {branch}): check that "
                           f"this repository exists and is public\\n{{pip.stderr[-1500:]}}")'''


def config() -> tuple[str, str]:
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    url = cfg["repository"]["url"].rstrip("/")
    if not re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", url):
        sys.exit(f"_config.yml: repository.url must be https://github.com/OWNER/REPO, got {url!r}")
    return url, cfg["repository"].get("branch", "main")


def pages_url(url: str) -> str:
    """GitHub Pages' address of a project repository: https://owner.github.io/REPO/ (a repository named
    OWNER.github.io is the user site at the root)."""
    owner, repo = url.removeprefix("https://github.com/").split("/")
    host = f"{owner.lower()}.github.io"
    return f"https://{host}/" if repo.lower() == host else f"https://{host}/{repo}/"


def install_cell(url: str, branch: str) -> str:
    return INSTALL_CELL.format(url=url, branch=branch)


def _sub(text: str, pattern: str, repl: str, where: str, problems: list) -> str:
    new, n = re.subn(pattern, repl, text, flags=re.M)
    if n == 0:
        problems.append(f"{where}: no line matches {pattern!r}")
    return new


def derived_files(url: str, branch: str, problems: list) -> dict[Path, str]:
    """{path: the text it should have} for every derived text file."""
    out = {}
    p = ROOT / "_config.yml"
    out[p] = _sub(p.read_text(encoding="utf-8"), r"^(  baseurl: ).*$", rf"\g<1>{pages_url(url)}", p.name, problems)
    p = ROOT / "mistral_nb/book/results.py"
    text = _sub(p.read_text(encoding="utf-8"), r'^REPOSITORY = "[^"]*"', f'REPOSITORY = "{url}"', p.name, problems)
    out[p] = _sub(text, r'^BRANCH = "[^"]*"', f'BRANCH = "{branch}"', p.name, problems)
    p = ROOT / "README.md"
    text = _sub(p.read_text(encoding="utf-8"), r"https://[\w.-]+\.github\.io/(?:[\w-][\w.-]*/)?", pages_url(url), p.name, problems)
    owner_repo = url.removeprefix("https://github.com/")
    out[p] = re.sub(r"(colab\.research\.google\.com/github/)[\w.-]+/[\w.-]+/blob/[\w.-]+/",
                    rf"\g<1>{owner_repo}/blob/{branch}/", text)
    p = ROOT / "CONTRIBUTING.md"
    text = p.read_text(encoding="utf-8")
    block = re.search(r"(   ```python\n)(.*?)(\n   ```)", text, flags=re.S)
    if block is None:
        problems.append("CONTRIBUTING.md: no indented ```python block with the install cell")
    else:
        cell = "\n".join("   " + ln if ln else ln for ln in install_cell(url, branch).splitlines())
        text = text[:block.start(2)] + cell + text[block.end(2):]
    out[p] = text
    return out


def notebooks() -> list[Path]:
    return sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 listing what differs")
    a = ap.parse_args()
    url, branch = config()
    problems: list = []
    stale = []
    for path, text in derived_files(url, branch, problems).items():
        if path.read_text(encoding="utf-8") != text:
            stale.append(path.relative_to(ROOT).as_posix())
            if not a.check:
                path.write_text(text, encoding="utf-8")
    cell = install_cell(url, branch)
    for path in notebooks():
        nb = nbformat.read(path, as_version=4)
        first = next((c for c in nb.cells if c.cell_type == "code"), None)
        if first is None or first.source != cell:
            stale.append(path.relative_to(ROOT).as_posix())
            if not a.check and first is not None:
                first.source = cell
                first.outputs, first.execution_count = [], 1   # it runs first in a fresh kernel (no output off Colab)
                nbformat.write(nb, path)
    if problems:
        sys.exit("sync_repository: " + "; ".join(problems))
    if a.check and stale:
        sys.exit(f"sync_repository: not derived from _config.yml's repository ({url}, {branch}): {stale}; "
                 "run python scripts/sync_repository.py")
    print(("up to date" if not stale else f"rewrote {len(stale)} files") + f" for {url} ({branch})")


if __name__ == "__main__":
    main()
