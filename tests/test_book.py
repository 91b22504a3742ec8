"""Tests of the Jupyter Book: its table of contents, the notebooks' hygiene, the build, a browser.

* the files listed in _toc.yml exist, and every chapter notebook is listed;
* every notebook installs the package only on Colab, from the repository in _config.yml;
* no notebook or page contains a path of the machine it was run on;
* every notebook is committed with the outputs of one top-to-bottom run, widget state included;
* `jupyter-book build -W -n --keep-going` succeeds without a single warning, and every chapter
  page has its figures and a Colab launch link;
* the book is offline-complete: no page loads a script, style sheet, font or image from the
  network; MathJax and the widget manager are the vendored copies in book/_static, which match
  book/_static/vendor.json (scripts/vendor_js.py);
* the book's published address (GitHub Pages) in README.md and _config.yml is the one derived
  from the repository url;
* every page, opened offline in headless Chromium, shows its text, its images, every formula
  typeset by MathJax, its widgets rendered from their saved state, its Colab link, and no console
  error (scripts/check_book_in_browser.py; skipped when Chromium, chromedriver or selenium is
  not installed), with a full-page screenshot of each page in _build/screenshots/ (or
  $MISTRAL_NB_SCREENSHOTS); and that check fails on a page that breaks each of those rules.

The build goes to a temporary directory (set MISTRAL_NB_BOOK_OUT=DIR to keep it in DIR), so the
test never touches the repository's own _build/html.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

import nbformat  # noqa: E402  (installed by requirements.txt: a missing one must fail, not skip)
import yaml  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
REPO_URL = CONFIG["repository"]["url"].rstrip("/")
BRANCH = CONFIG["repository"].get("branch", "main")
COLAB_URL = CONFIG["launch_buttons"]["colab_url"].rstrip("/")
INSTALL_SPEC = f"git+{REPO_URL}@{BRANCH}"

BROWSER_SCRIPT = ROOT / "scripts" / "check_book_in_browser.py"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
STATIC = ROOT / "book" / "_static"
WIDGET_JS = list(CONFIG["sphinx"]["config"].get("nb_ipywidgets_js", {}))


def require_browser():
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        pytest.skip("headless browser check needs Debian's chromium and chromium-driver "
                    "(apt-get install chromium chromium-driver)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.skip("headless browser check needs the selenium package (pip install selenium)")

WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
IMAGE_MIMES = ("image/png", "image/jpeg", "image/svg+xml", "image/gif")
MACHINE_PATH = re.compile(r"/(?:work|root|home|tmp)/")

REQUIRED_BIB_KEYS = [
    "jiang2023mistral", "shazeer2019mqa", "ainslie2023gqa", "beltagy2020longformer",
    "child2019sparse", "su2021roformer", "zhang2019rmsnorm", "shazeer2020glu",
    "kudo2018sentencepiece", "touvron2023llama2", "vaswani2017attention",
]


# ---------------------------------------------------------------------------------------------
# table of contents


def toc_entries(toc: dict) -> list[str]:
    """All documents of a jb-book toc, in reading order (root first), without suffix."""
    out = [toc["root"]]

    def walk(items):
        for item in items or []:
            if "file" in item:
                out.append(item["file"])
            walk(item.get("sections"))
            walk(item.get("chapters"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return out


def source_of(entry: str) -> Path | None:
    base = ROOT / entry
    for candidate in (base, base.with_suffix(".md"), base.with_suffix(".ipynb")):
        if candidate.is_file():
            return candidate
    return None


ENTRIES = toc_entries(TOC)
NOTEBOOK_ENTRIES = [e for e in ENTRIES if e.startswith("notebooks/")]


def test_toc_entries_exist():
    missing = [e for e in ENTRIES if source_of(e) is None]
    assert not missing, (
        "_toc.yml lists files that do not exist (as .md or .ipynb): " + ", ".join(missing)
    )


def test_every_chapter_notebook_is_in_the_toc():
    listed = {e.removesuffix(".ipynb") for e in ENTRIES}
    unlisted = [
        p.relative_to(ROOT).as_posix()
        for p in sorted((ROOT / "notebooks").glob("*.ipynb"))
        if p.relative_to(ROOT).with_suffix("").as_posix() not in listed
    ]
    assert not unlisted, (
        "notebooks missing from _toc.yml (they would not appear in the book): "
        + ", ".join(unlisted)
    )


def test_bibliography_has_every_paper():
    bib = (ROOT / "book" / "references.bib").read_text(encoding="utf-8")
    keys = re.findall(r"^@\w+\{([^,\s]+),", bib, flags=re.M)
    assert len(keys) == len(set(keys)), "duplicate keys in book/references.bib"
    missing = [k for k in REQUIRED_BIB_KEYS if k not in keys]
    assert not missing, f"book/references.bib lacks {missing}"


# ---------------------------------------------------------------------------------------------
# notebooks


def all_notebooks() -> list[Path]:
    return sorted((ROOT / "notebooks").glob("*.ipynb"))


def notebook_params():
    nbs = all_notebooks()
    if not nbs:
        return [pytest.param(None, marks=pytest.mark.skip(reason="no notebooks in notebooks/ yet"))]
    return [pytest.param(p, id=p.stem) for p in nbs]


def read_nb(path: Path):
    return nbformat.read(str(path), as_version=4)


def code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def tags(cell) -> list[str]:
    t = cell.get("metadata", {}).get("tags", [])
    return list(t) if isinstance(t, list) else []


@pytest.mark.parametrize("path", notebook_params())
def test_first_code_cell_installs_only_on_colab(path):
    cells = code_cells(read_nb(path))
    assert cells, f"{path.name} has no code cell"
    src = cells[0].source
    lines = src.splitlines()
    guard = [i for i, ln in enumerate(lines)
             if re.match(r"""\s*if\s+["']google\.colab["']\s+in\s+sys\.modules\s*:""", ln)]
    assert guard, (
        f"{path.name}: the first code cell must install the package only on Colab:\n"
        f'    import sys\n    if "google.colab" in sys.modules:\n'
        f"        REPO = {REPO_URL!r}  # then pip install git+REPO@{BRANCH} in a subprocess\n"
        f"found:\n{src}"
    )
    assert re.search(r"^\s*import\s+sys\b", src, flags=re.M), f"{path.name}: `import sys` missing"
    indent = len(lines[guard[0]]) - len(lines[guard[0]].lstrip())
    body = []
    for ln in lines[guard[0] + 1:]:
        if ln.strip() and len(ln) - len(ln.lstrip()) <= indent:
            break
        body.append(ln)
    installs = [ln for ln in body if re.search(r"[\"']pip[\"'],\s*[\"']install[\"']", ln)]
    assert installs, f"{path.name}: no `pip install` (a subprocess, so a failure can name the address) inside the Colab guard"
    repo = [ln for ln in body if re.match(r"\s*REPO\s*=", ln)]
    assert repo and f'"{REPO_URL}"' in repo[0], (
        f"{path.name}: the Colab install must name REPO = {REPO_URL!r} (the repository url of _config.yml); "
        f"found: {repo}")
    assert any(f"@{BRANCH}" in ln for ln in installs), f"{path.name}: the Colab install must use @{BRANCH}: {installs}"
    outside = [ln for ln in lines if re.search(r"pip[\"',\s]+install", ln) and ln not in body]
    assert not outside, f"{path.name}: pip install outside the Colab guard: {outside}"


def _urls_in_sources(text: str) -> list[str]:
    return re.findall(r"git\+https?://[^\s\"'#]+", text)


@pytest.mark.parametrize("path", notebook_params())
def test_every_git_install_points_at_the_repository(path):
    nb = read_nb(path)
    urls = [u for c in nb.cells for u in _urls_in_sources(c.source)]
    wrong = [u for u in urls if not u.startswith(INSTALL_SPEC)]
    assert not wrong, f"{path.name}: git installs must use {INSTALL_SPEC}: {wrong}"


def _text_of_outputs(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if "text" in out:
            parts.append(out["text"] if isinstance(out["text"], str) else "".join(out["text"]))
        for mime, value in out.get("data", {}).items():
            if mime in IMAGE_MIMES:
                continue  # base64 can contain anything
            parts.append(value if isinstance(value, str) else json.dumps(value))
        parts.extend(out.get("traceback", []))
    return "\n".join(parts)


def markdown_pages() -> list[Path]:
    return sorted((ROOT / "book").rglob("*.md")) + sorted(ROOT.glob("*.md"))


def test_no_machine_paths_in_pages():
    bad = []
    for page in markdown_pages():
        for n, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            if MACHINE_PATH.search(line):
                bad.append(f"{page.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not bad, "machine paths in pages:\n" + "\n".join(bad)


@pytest.mark.parametrize("path", notebook_params())
def test_no_machine_paths_in_notebook(path):
    nb = read_nb(path)
    bad = []
    for i, cell in enumerate(nb.cells):
        for where, text in (("source", cell.source), ("outputs", _text_of_outputs(cell))):
            for line in text.splitlines():
                if MACHINE_PATH.search(line):
                    bad.append(f"cell {i} {where}: {line.strip()[:200]}")
    assert not bad, f"{path.name} contains machine paths:\n" + "\n".join(bad)


@pytest.mark.parametrize("path", notebook_params())
def test_notebook_is_committed_with_outputs(path):
    nb = read_nb(path)
    not_run, counts = [], []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or not cell.source.strip():
            continue
        if cell.execution_count is None:
            not_run.append(i)
        else:
            counts.append(cell.execution_count)
    assert not not_run, (
        f"{path.name}: code cells {not_run} have no committed output (execution_count is None); "
        "run the notebook top to bottom in a fresh kernel and save it (cells tagged 'gpu' run too: "
        "they start with `if cuda_or_explain():`, which says on a CPU why they do nothing)"
    )
    assert counts == sorted(counts) and len(set(counts)) == len(counts), (
        f"{path.name}: execution counts {counts} are not increasing: restart the kernel and "
        "run all cells top to bottom before saving"
    )
    errors = [i for i, c in enumerate(nb.cells) for o in c.get("outputs", [])
              if o.get("output_type") == "error" and "raises-exception" not in tags(c)
              and "NBVAL_RAISES_EXCEPTION" not in c.source]
    assert not errors, f"{path.name}: cells {errors} were saved with an error"


@pytest.mark.parametrize("path", notebook_params())
def test_notebook_title_and_headings(path):
    nb = read_nb(path)
    first = nb.cells[0] if nb.cells else None
    assert first is not None and first.cell_type == "markdown", (
        f"{path.name}: the first cell must be a markdown cell starting with '# Title'"
    )
    first_line = first.source.lstrip().splitlines()[0] if first.source.strip() else ""
    assert re.match(r"# \S", first_line), (
        f"{path.name}: the first cell must start with a single '# Title' heading, got {first_line!r}"
    )
    numbered = re.match(r"#\s+(?:chapter\s+)?(\d+)\b", first_line, flags=re.I)
    file_number = re.match(r"(\d+)_", path.name)
    if numbered and file_number:
        assert int(numbered.group(1)) == int(file_number.group(1)), (
            f"{path.name}: the title's number {numbered.group(1)} differs from the file's "
            f"{file_number.group(1)}"
        )
    h1 = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "markdown":
            continue
        in_fence = False
        for line in cell.source.splitlines():
            if line.lstrip().startswith(("```", "~~~")):
                in_fence = not in_fence
            elif not in_fence and re.match(r"# \S", line):
                h1.append((i, line))
    assert len(h1) == 1, (
        f"{path.name}: exactly one '# ' heading per chapter (others become separate entries "
        f"of the book's navigation); found {h1}"
    )


@pytest.mark.parametrize("path", notebook_params())
def test_widget_outputs_have_saved_state(path):
    nb = read_nb(path)
    views = [o["data"][WIDGET_VIEW]["model_id"]
             for c in code_cells(nb) for o in c.get("outputs", [])
             if WIDGET_VIEW in o.get("data", {})]
    if not views:
        return
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    missing = [m for m in views if m not in state]
    assert not missing, (
        f"{path.name}: widget outputs without saved widget state {missing}: the rendered book "
        "would show nothing for them. Execute with nbclient/nbconvert (which store widget state "
        "by default) or use 'Save Widget State Automatically' in JupyterLab."
    )


# ---------------------------------------------------------------------------------------------
# the build


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs: list[dict] = []
        self.links: list[str] = []
        self.scripts: list[dict] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a)
        elif tag == "a" and a.get("href"):
            self.links.append(a["href"])
        elif tag == "script":
            self.scripts.append(a)


def parse_html(path: Path) -> _Tags:
    p = _Tags()
    p.feed(path.read_text(encoding="utf-8"))
    return p


JB_MAIN = "import sys; from jupyter_book.cli.main import main; sys.exit(main())"
WARNING_LINE = re.compile(r"(WARNING|ERROR|CRITICAL)\b")


@pytest.fixture(scope="module")
def built_book(tmp_path_factory):
    missing = [e for e in ENTRIES if source_of(e) is None]
    if missing:
        return {"rc": None, "log": "not built: _toc.yml lists missing files " + ", ".join(missing),
                "html": None}
    keep = os.environ.get("MISTRAL_NB_BOOK_OUT")
    out = Path(keep).resolve() if keep else tmp_path_factory.mktemp("book")
    if (out / "_build").exists():
        shutil.rmtree(out / "_build")
    cmd = [sys.executable, "-c", JB_MAIN, "build", str(ROOT), "--path-output", str(out),
           "--all", "-W", "-n", "--keep-going"]
    env = dict(os.environ, PYTHONHASHSEED="0", NO_COLOR="1")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    log = proc.stdout + "\n" + proc.stderr
    return {"rc": proc.returncode, "log": log, "html": out / "_build" / "html"}


def require_html(built_book) -> Path:
    """The built html directory; skips a test that needs it when the book could not be built
    at all (test_book_builds_without_warnings fails then and says why)."""
    html = built_book["html"]
    if html is None or not (html / "index.html").is_file():
        pytest.skip("the book was not built: see test_book_builds_without_warnings")
    return html


def test_book_builds_without_warnings(built_book):
    if built_book["rc"] is None:
        pytest.fail(built_book["log"])
    log = re.sub(r"\x1b\[[0-9;]*m", "", built_book["log"])
    warnings = list(dict.fromkeys(ln for ln in log.splitlines() if WARNING_LINE.search(ln)))
    assert built_book["rc"] == 0 and not warnings, (
        f"jupyter-book build -W -n exited {built_book['rc']} with {len(warnings)} warnings:\n"
        + "\n".join(warnings[:50]) + "\n--- end of log ---\n" + log[-3000:]
    )


def test_pages_exist(built_book):
    html = require_html(built_book)
    missing = [e for e in ENTRIES if not (html / f"{e}.html").is_file()]
    assert not missing, f"pages missing from the build: {missing}"
    assert (html / "index.html").is_file()


@pytest.mark.parametrize("entry", NOTEBOOK_ENTRIES)
def test_chapter_page_has_figures_and_colab_link(built_book, entry):
    html = require_html(built_book)
    page = html / f"{entry}.html"
    if not page.is_file():
        pytest.fail(f"{page.name} was not built (see test_book_builds_without_warnings)")
    tags_ = parse_html(page)

    colab = f"{COLAB_URL}/github/{REPO_URL.split('github.com/')[1]}/blob/{BRANCH}/{entry}.ipynb"
    assert colab in tags_.links, f"{entry}: no Colab launch link {colab}"

    figures = [i for i in tags_.imgs if "_images/" in i.get("src", "")]
    src = source_of(entry)
    nb = read_nb(src)
    n_image_outputs = sum(
        1 for c in code_cells(nb) for o in c.get("outputs", [])
        if any(m in o.get("data", {}) for m in IMAGE_MIMES)
    )
    assert figures, f"{entry}: the chapter page shows no figure (no <img> from _images/)"
    assert len(figures) >= n_image_outputs, (
        f"{entry}: {n_image_outputs} image outputs in the notebook but {len(figures)} on the page"
    )
    for img in figures:
        target = (page.parent / img["src"]).resolve()
        assert target.is_file() and target.stat().st_size > 0, f"{entry}: missing image {img['src']}"

    if nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state"):
        text = page.read_text(encoding="utf-8")
        assert f'type="{WIDGET_STATE}"' in text, f"{entry}: widget state not embedded in the page"
        srcs = [s.get("src", "").split("?")[0] for s in tags_.scripts]
        for js in WIDGET_JS:
            assert any(src.endswith(f"_static/{js}") for src in srcs), (
                f"{entry}: the page has widgets but does not load the vendored _static/{js}: {srcs}"
            )


def test_book_in_browser(built_book):
    require_browser()
    html = require_html(built_book)
    shots = Path(os.environ.get("MISTRAL_NB_SCREENSHOTS") or ROOT / "_build" / "screenshots")
    if shots.exists():
        shutil.rmtree(shots)
    cmd = [sys.executable, str(BROWSER_SCRIPT), "--html", str(html), "--screenshots", str(shots)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    print(proc.stdout[-3000:])
    assert proc.returncode == 0, proc.stdout + "\n" + proc.stderr
    missing = [e for e in ENTRIES if not (shots / (e.replace("/", "__") + ".png")).is_file()]
    assert not missing, f"no screenshot of {missing} in {shots}"
    # the chapters whose notebooks hold widgets (chapter 05's mask explorer) showed them all
    for entry in NOTEBOOK_ENTRIES:
        nb = read_nb(source_of(entry))
        n = sum(1 for c in code_cells(nb) for o in c.get("outputs", []) if WIDGET_VIEW in o.get("data", {}))
        if n:
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(f"ok   {entry}.html")), "")
            assert f"{n} of {n} widget views rendered" in line, (
                f"{entry}: {n} widget views in the notebook; the browser check says: {line!r}")


# ---------------------------------------------------------------------------------------------
# offline-complete, published


def static_config() -> dict:
    return CONFIG["sphinx"]["config"]


def test_vendored_javascript_matches_its_manifest():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import vendor_js
    finally:
        sys.path.pop(0)
    problems = vendor_js.check()
    assert not problems, "book/_static does not match book/_static/vendor.json:\n" + "\n".join(problems)
    manifest = json.loads((STATIC / "vendor.json").read_text(encoding="utf-8"))["packages"]
    assert set(manifest) == {"mathjax", "@jupyter-widgets/html-manager"}
    assert manifest["mathjax"]["version"].split(".")[0] == "3", "Sphinx 7's mathjax extension expects MathJax 3"


def test_config_uses_the_vendored_javascript():
    cfg = static_config()
    assert cfg["html_static_path"] == ["book/_static"]
    manifest = json.loads((STATIC / "vendor.json").read_text(encoding="utf-8"))["packages"]
    vendored = {f for pkg in manifest.values() for f in pkg["files"]}
    assert "://" not in cfg["mathjax_path"] and cfg["mathjax_path"] in vendored, cfg["mathjax_path"]
    assert "jupyter-widgets/embed.js" in WIDGET_JS and all("://" not in js for js in WIDGET_JS)
    for js in WIDGET_JS:
        assert (STATIC / js).is_file(), f"nb_ipywidgets_js names {js}, which is not in book/_static"
    for css in cfg.get("html_css_files", []):
        assert (STATIC / css).is_file(), f"html_css_files names {css}, which is not in book/_static"
    licences = {f for f in vendored if Path(f).name.upper().startswith("LICENSE")}
    assert {"mathjax/LICENSE", "jupyter-widgets/LICENSE"} <= licences


REMOTE = re.compile(r"^(?:https?:)?//", re.I)


class _Assets(HTMLParser):
    """Everything a page loads by itself: scripts, style sheets, icons, images, frames."""

    def __init__(self):
        super().__init__()
        self.loaded: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ("script", "img", "iframe", "source", "audio", "video") and a.get("src"):
            self.loaded.append(a["src"])
        elif tag == "link" and a.get("href") and a.get("rel", "").lower() in (
                "stylesheet", "icon", "preload", "modulepreload", "shortcut icon"):
            self.loaded.append(a["href"])


def test_built_pages_load_nothing_from_the_network(built_book):
    html = require_html(built_book)
    remote = {}
    for page in sorted(html.rglob("*.html")):
        if "_static" in page.parts:
            continue
        parser = _Assets()
        parser.feed(page.read_text(encoding="utf-8"))
        urls = [u for u in parser.loaded if REMOTE.match(u)]
        if urls:
            remote[page.relative_to(html).as_posix()] = urls
    assert not remote, f"pages that load files from the network (the book must work offline): {remote}"
    css = [p for p in (html / "_static").rglob("*.css")]
    remote_css = {p.name: m for p in css
                  for m in re.findall(r"@import\s+url\((?:[\'\"])?(https?://[^)\'\"]+)", p.read_text(errors="replace"))}
    assert not remote_css, f"style sheets that import from the network: {remote_css}"


def pages_url(repository_url: str) -> str:
    """GitHub Pages' address of a project repository: https://OWNER.github.io/REPO/ (owner in
    lower case; a repository named OWNER.github.io is the user site at the root)."""
    owner, repo = repository_url.rstrip("/").removeprefix("https://github.com/").split("/")
    host = f"{owner.lower()}.github.io"
    return f"https://{host}/" if repo.lower() == host else f"https://{host}/{repo}/"


def test_pages_url_derivation():
    assert pages_url("https://github.com/Mistral-NB/mistral-7b-from-scratch") == \
        "https://mistral-nb.github.io/mistral-7b-from-scratch/"
    assert pages_url("https://github.com/someone/someone.github.io") == "https://someone.github.io/"


def test_published_address_is_the_repositorys_pages_url():
    url = pages_url(REPO_URL)
    assert CONFIG["html"].get("baseurl") == url, (
        f"_config.yml html.baseurl should be {url} (GitHub Pages of {REPO_URL})")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert url in readme, f"README.md should give the book's address {url}"
    others = {}
    for f in [ROOT / "README.md", ROOT / "_config.yml", *markdown_pages(), *(ROOT / ".github").rglob("*.yml")]:
        found = {u.rstrip(".") for u in re.findall(r"https?://[\w.-]+\.github\.io\b[\w./-]*", f.read_text(encoding="utf-8"))}   # a sentence may end right after an address
        if found - {url}:
            others[f.relative_to(ROOT).as_posix()] = sorted(found - {url})
    assert not others, f"other GitHub Pages addresses than {url}: {others}"


# ---------------------------------------------------------------------------------------------
# the browser check itself fails on what it should catch


BROKEN_INTRO = r"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>broken</title>
<script>window.MathJax = {options: {processHtmlClass: "math", ignoreHtmlClass: "document"}};</script>
<script defer src="../_static/mathjax/tex-chtml-full.js"></script>
<script src="https://cdn.example.invalid/library.js"></script>
</head><body><main><article class="bd-article document"><h1>A broken page</h1>
<p>Long enough text for the checker. {filler}</p>
<p>A good formula <span class="math notranslate nohighlight">\(a^2 + b^2\)</span>,
an unknown macro <span class="math notranslate nohighlight">\(\notamacro{x}\)</span>, and</p>
<div class="math notranslate nohighlight">\[ x^ \]</div>
<p>raw TeX left over (outside the .math elements MathJax is told to process, as in the book):
$$y = \alpha$$</p>
<img src="missing.png" alt="a missing figure">
<script>console.error("an error of the page")</script>
</article></main></body></html>"""

BROKEN_CHAPTER = r"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>chapter</title></head>
<body><main><article class="bd-article"><h1>01 · A chapter</h1><p>{filler}</p>
<a href="https://colab.research.google.com/github/{repo}/blob/{branch}/notebooks/02_other.ipynb">Colab</a>
<script type="application/vnd.jupyter.widget-state+json">{state}</script>
<script type="application/vnd.jupyter.widget-view+json">{{"version_major": 2, "version_minor": 0, "model_id": "m1"}}</script>
</article></main></body></html>"""


def test_browser_check_fails_on_broken_pages(tmp_path):
    require_browser()
    html = tmp_path / "html"
    (html / "book").mkdir(parents=True)
    (html / "notebooks").mkdir()
    shutil.copytree(STATIC / "mathjax", html / "_static" / "mathjax")
    filler = "words " * 60
    (html / "index.html").write_text("<html><body><h1>index</h1></body></html>")
    (html / "book" / "intro.html").write_text(BROKEN_INTRO.replace("{filler}", filler))
    state = {"version_major": 2, "version_minor": 0, "state": {"m1": {
        "model_name": "IntSliderModel", "model_module": "@jupyter-widgets/controls",
        "model_module_version": "2.0.0", "state": {"value": 7, "description": "w"}}}}
    owner_repo = REPO_URL.removeprefix("https://github.com/")
    (html / "notebooks" / "01_tokenizer.html").write_text(BROKEN_CHAPTER.format(
        filler=filler, repo=owner_repo, branch=BRANCH, state=json.dumps(state)))
    toc = tmp_path / "_toc.yml"
    toc.write_text("format: jb-book\nroot: book/intro\nchapters:\n  - file: notebooks/01_tokenizer\n")
    proc = subprocess.run([sys.executable, str(BROWSER_SCRIPT), "--html", str(html), "--toc", str(toc),
                           "--widget-wait", "3", "--timeout", "20"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    expected = {
        "a request leaving the machine": "requested from the network (the book must work offline): https://cdn.example.invalid/library.js",
        "an unknown macro": r"MathJax could not typeset (error or unknown macro): \notamacro{x}",
        "a TeX error": "MathJax error: Missing superscript or subscript argument",
        "raw TeX": "raw TeX in the page's text: ...",
        "a missing image": "image did not load:",
        "a missing local file": "local request failed: /book/missing.png -> HTTP 404",
        "a console error": "an error of the page",
        "the wrong Colab link": "Colab launch link should be https://colab.research.google.com/github/"
                                f"{owner_repo}/blob/{BRANCH}/notebooks/01_tokenizer.ipynb",
        "a widget that did not render": "0 of 1 widget views rendered",
        "a slider not showing its saved value": 'slider "w" does not show its saved value 7',
    }
    missed = [what for what, text in expected.items() if text not in out]
    assert not missed, f"the browser check did not report {missed}:\n{out}"
    assert "FAIL book/intro.html" in out and "FAIL notebooks/01_tokenizer.html" in out
    good = "formula not typeset by MathJax: \\(a^2 + b^2\\)"
    assert good not in out, f"the good formula was reported:\n{out}"
