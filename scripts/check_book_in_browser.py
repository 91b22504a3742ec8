#!/usr/bin/env python
"""Open every page of the built book in headless Chromium, offline, and check what a reader sees.

    jupyter-book build .
    python scripts/check_book_in_browser.py                      # checks _build/html
    python scripts/check_book_in_browser.py --screenshots shots  # and writes shots/<page>.png

The book's html directory is served on 127.0.0.1 (a random free port, Python's http.server in a
thread). Each page listed in _toc.yml is opened in Debian's Chromium, driven by selenium through
/usr/bin/chromedriver, so nothing is downloaded. The browser resolves no host name but
127.0.0.1 (`--host-resolver-rules`), so the page is seen as on a machine with no network, and
every request it makes is recorded. A page passes when

* it loads, no request to the local server fails (a missing image, css, js or font file), and
  it requests nothing from any other host (the book must be offline-complete: MathJax and the
  widget manager are vendored into its static files, see scripts/vendor_js.py);
* every formula is typeset: every `.math` element Sphinx wrote holds a MathJax container, MathJax
  reports no error (no `mjx-merror` node, no `merror` or unknown-macro red text in any typeset
  formula), and no raw TeX delimiter (`\\(`, `\\[`, `$$`, `\\begin{`) is left in the page's text
  outside code;
* every <img> has loaded (`complete && naturalWidth > 0`), after scrolling the page once so
  lazily loaded images are fetched too;
* every saved widget view rendered from the page's saved widget state: each view has its widget
  area, each slider shows its saved value and label, each HTML widget its saved text, each
  Output widget its saved images;
* a chapter page (a notebook) has the Colab launch link of exactly its own notebook, built from
  _config.yml's repository url, branch and launch_buttons.colab_url;
* its main text is not blank (at least --min-chars characters) and it has a title heading;
* the browser console has no error (level SEVERE) at all.

Needs: apt-get install chromium chromium-driver; pip install selenium pyyaml.
Exit status 0 when every page passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import base64
import functools
import http.server
import json
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

CHROME_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-features=Translate,OptimizationHints,MediaRouter",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
    "--window-size=1280,900",
]
# No name resolves except the local server's: the page sees the machine as offline.
OFFLINE_FLAG = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"

# Raw TeX that MathJax should have replaced. Checked in the text of the page outside code.
RAW_TEX_JS = r"/\\\(|\\\)|\\\[|\\\]|\$\$|\\begin\{|\\end\{|\$\\[A-Za-z]/"

PAGE_STATE_JS = r"""
const main = document.querySelector('main #main-content, article.bd-article, article, main')
          || document.body;
const imgs = Array.from(document.images).map(i => ({
    src: i.currentSrc || i.src, complete: i.complete, width: i.naturalWidth,
    visible: !!(i.offsetWidth || i.offsetHeight || i.getClientRects().length)}));
const h1 = main.querySelector('h1') || document.querySelector('h1');

// --- formulas
const mathEls = Array.from(document.querySelectorAll('.math'));
const untypeset = mathEls.filter(e => !e.querySelector('mjx-container'))
                         .map(e => e.textContent.trim().slice(0, 80));
const merrors = Array.from(document.querySelectorAll('mjx-merror'))
    .map(e => (e.getAttribute('data-mjx-error') || e.textContent).slice(0, 120));
let mathjax = null;
if (window.MathJax && MathJax.startup && MathJax.startup.document) {
    const items = Array.from(MathJax.startup.document.math || []);
    const bad = [];
    for (const item of items) {
        let mml = '';
        try { mml = MathJax.startup.toMML(item.root); } catch (e) { mml = '<merror>' + e + '</merror>'; }
        if (/<merror|mathcolor="red"/.test(mml)) bad.push(String(item.math).slice(0, 120));
    }
    mathjax = {version: MathJax.version, items: items.length, bad: bad};
}
const SKIP = new Set(['PRE', 'CODE', 'SCRIPT', 'STYLE', 'TEXTAREA', 'NOSCRIPT', 'TEMPLATE',
                      'MJX-CONTAINER', 'MJX-ASSISTIVE-MML']);
const rawTex = [];
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT, {
    acceptNode(node) {
        for (let e = node.parentElement; e; e = e.parentElement) {
            if (SKIP.has(e.tagName) || e.classList.contains('highlight')) return NodeFilter.FILTER_REJECT;
        }
        return NodeFilter.FILTER_ACCEPT;
    }});
const RAW = RAW_TEX;
for (let n = walker.nextNode(); n && rawTex.length < 5; n = walker.nextNode()) {
    const m = RAW.exec(n.textContent);
    if (m) {
        const at = Math.max(0, m.index - 40);
        rawTex.push(n.textContent.slice(at, m.index + 40).replace(/\s+/g, ' '));
    }
}

// --- widgets, checked against the saved state embedded in the page
const stateTag = document.querySelector('script[type="application/vnd.jupyter.widget-state+json"]');
let saved = {};
try { saved = stateTag ? JSON.parse(stateTag.textContent).state || {} : {}; } catch (e) { saved = {}; }
const views = Array.from(document.querySelectorAll(
    'script[type="application/vnd.jupyter.widget-view+json"]'));
const areas = views.map(v => v.previousElementSibling)
    .filter(p => p && p.classList.contains('widget-subarea'));
const renderedViews = areas.filter(a => a.querySelector('.jupyter-widgets')
                                        && a.getBoundingClientRect().height > 20).length;
const widgetText = areas.map(a => a.innerText).join('\n');
const widgetProblems = [];
const norm = s => String(s).replace(/\s+/g, ' ').trim();
const sliders = Array.from(document.querySelectorAll('.widget-subarea .widget-slider'))
    .map(s => ({label: norm((s.querySelector('.widget-label') || {}).innerText || ''),
                readout: norm((s.querySelector('.widget-readout') || {}).innerText || '')}));
for (const [id, m] of Object.entries(saved)) {
    const s = m.state || {};
    if (/SliderModel$/.test(m.model_name) && !/Range/.test(m.model_name)) {
        const ok = sliders.some(x => x.label === norm(s.description) && x.readout === norm(s.value));
        if (!ok) widgetProblems.push(`slider "${s.description}" does not show its saved value ${s.value}`
                                     + ` (rendered: ${JSON.stringify(sliders)})`);
    } else if (m.model_name === 'HTMLModel' || m.model_name === 'LabelModel') {
        const probe = document.createElement('div'); probe.innerHTML = s.value || '';
        const text = norm(probe.textContent);
        if (text && !norm(widgetText).includes(text))
            widgetProblems.push(`${m.model_name} text not shown: ${text.slice(0, 80)}`);
    } else if (m.model_name === 'OutputModel') {
        const want = (s.outputs || []).filter(o => o.data && Object.keys(o.data).some(
            k => k.startsWith('image/'))).length;
        const got = Array.from(document.querySelectorAll('.widget-subarea .widget-output img'))
            .filter(i => i.complete && i.naturalWidth > 0).length;
        if (got < want) widgetProblems.push(`Output widget shows ${got} of its ${want} saved images`);
    }
}

return {
    title: document.title,
    ready: document.readyState,
    text: (main.innerText || '').trim().length,
    h1: h1 ? h1.innerText.trim() : '',
    imgs: imgs,
    mathEls: mathEls.length, untypeset: untypeset, merrors: merrors, mathjax: mathjax,
    rawTex: rawTex,
    widgetViews: views.length, widgetState: Object.keys(saved).length,
    renderedViews: renderedViews, widgetProblems: widgetProblems,
    links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
    height: Math.max(document.body.scrollHeight, document.documentElement.scrollHeight),
};
""".replace("const RAW = RAW_TEX;", f"const RAW = {RAW_TEX_JS};")

WAIT_MATHJAX_JS = """
const done = arguments[arguments.length - 1];
if (!(window.MathJax && MathJax.startup && MathJax.startup.promise)) { done('absent'); }
else { MathJax.startup.promise.then(() => done('ok'), e => done('error: ' + e)); }
"""

WIDGETS_DONE_JS = """
const views = document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]');
return Array.from(views).every(v => v.previousElementSibling
    && v.previousElementSibling.classList.contains('widget-subarea')
    && v.previousElementSibling.querySelector('.jupyter-widgets'))
    && Array.from(document.querySelectorAll('.widget-output img')).every(i => i.complete);
"""


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the html directory quietly, remembering every request that failed."""

    failures: list[tuple[str, int]]

    def log_message(self, fmt, *args):  # no stderr noise
        pass

    def log_request(self, code="-", size="-"):
        try:
            status = int(code)
        except (TypeError, ValueError):
            status = 0
        if status >= 400 and not self.path.endswith("favicon.ico"):
            self.failures.append((self.path, status))


def serve(directory: Path):
    failures: list[tuple[str, int]] = []
    handler = functools.partial(
        type("Handler", (_Handler,), {"failures": failures}), directory=str(directory)
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, failures


def load_yaml(path: Path):
    import yaml

    return yaml.safe_load(path.read_text(encoding="utf-8"))


def toc_pages(toc_path: Path) -> list[str]:
    toc = load_yaml(toc_path)
    pages = [toc["root"]]

    def walk(items):
        for item in items or []:
            if "file" in item:
                pages.append(item["file"])
            walk(item.get("sections"))
            walk(item.get("chapters"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return [p.removesuffix(".md").removesuffix(".ipynb") for p in pages]


def colab_link(config: dict, page: str) -> str:
    """The launch link the book must show on the page of notebook ``page`` (no suffix)."""
    repo = config["repository"]
    owner_repo = repo["url"].rstrip("/").removeprefix("https://github.com/")
    book_path = (repo.get("path_to_book") or "").strip("/")
    nb_path = f"{book_path}/{page}.ipynb" if book_path else f"{page}.ipynb"
    colab = config["launch_buttons"]["colab_url"].rstrip("/")
    return f"{colab}/github/{owner_repo}/blob/{repo.get('branch', 'main')}/{nb_path}"


def make_driver(user_data_dir: str, timeout: float, offline: bool = True):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    flags = CHROME_FLAGS + [f"--user-data-dir={user_data_dir}"] + ([OFFLINE_FLAG] if offline else [])
    for flag in flags:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(timeout)
    driver.set_script_timeout(timeout)
    return driver


def wait_for(driver, predicate_js: str, timeout: float, poll: float = 0.2) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if driver.execute_script(predicate_js):
            return True
        time.sleep(poll)
    return False


def scroll_through(driver):
    """Scroll to the bottom in viewport steps (fetches lazy images), then back to the top."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    step = driver.execute_script("return window.innerHeight") or 800
    for y in range(0, int(height) + int(step), int(step)):
        driver.execute_script("window.scrollTo(0, arguments[0]);", y)
        time.sleep(0.03)
    driver.execute_script("window.scrollTo(0, 0);")


def full_page_screenshot(driver, path: Path, width: int = 1280, max_height: int = 30000):
    """The whole page as one PNG, laid out as in a ``width`` px wide window.

    The window is made as tall as the page (CDP device metrics), so the theme lays the page out
    once, as a reader's window of that width would, and no part is captured twice (Chromium's
    `captureBeyondViewport` alone shifts this theme's layout sideways).
    """
    height = min(int(driver.execute_script("return document.documentElement.scrollHeight")),
                 max_height)
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
    try:
        time.sleep(0.3)   # let the theme react to the resize
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    path.write_bytes(base64.b64decode(shot["data"]))


def requested_urls(driver) -> list[str]:
    """URLs the page requested since the last call (from Chromium's performance log)."""
    urls = []
    for entry in driver.get_log("performance"):
        try:
            msg = json.loads(entry["message"])["message"]
        except (KeyError, ValueError):
            continue
        if msg.get("method") == "Network.requestWillBeSent":
            urls.append(msg["params"]["request"]["url"])
    return urls


def check_page(driver, base: str, page: str, args, failures_log, config) -> list[str]:
    problems: list[str] = []
    url = f"{base}/{page}.html"
    n_failures_before = len(failures_log)
    driver.get_log("performance")   # drop what earlier pages left
    try:
        driver.get(url)
    except Exception as exc:  # page load timeout: report and go on
        problems.append(f"did not finish loading in {args.timeout:.0f}s ({type(exc).__name__})")
    wait_for(driver, "return document.readyState === 'complete'", args.timeout)
    scroll_through(driver)
    mathjax = driver.execute_async_script(WAIT_MATHJAX_JS)
    if mathjax.startswith("error"):
        problems.append(f"MathJax failed: {mathjax}")
    if not wait_for(driver, WIDGETS_DONE_JS, args.widget_wait):
        problems.append(f"widgets not rendered after {args.widget_wait:.0f}s")
    wait_for(driver, "return Array.from(document.images).every(i => i.complete)", args.timeout)
    state = driver.execute_script(PAGE_STATE_JS)

    # requests: nothing outside the book, nothing missing from it
    for u in dict.fromkeys(requested_urls(driver)):
        parts = urlsplit(u)
        if parts.scheme in ("http", "https", "ws", "wss") and parts.hostname != "127.0.0.1":
            problems.append(f"requested from the network (the book must work offline): {u[:160]}")
    for path, status in failures_log[n_failures_before:]:
        problems.append(f"local request failed: {path} -> HTTP {status}")

    # formulas
    if state["mathEls"] and state["mathjax"] is None:
        problems.append(f"{state['mathEls']} formulas but MathJax did not load")
    for tex in state["untypeset"][:5]:
        problems.append(f"formula not typeset by MathJax: {tex}")
    for err in state["merrors"][:5]:
        problems.append(f"MathJax error: {err}")
    for tex in (state["mathjax"] or {}).get("bad", [])[:5]:
        problems.append(f"MathJax could not typeset (error or unknown macro): {tex}")
    for snippet in state["rawTex"]:
        problems.append(f"raw TeX in the page's text: ...{snippet}...")

    # images
    for img in state["imgs"]:
        if not img["complete"] or img["width"] == 0:
            host = urlsplit(img["src"]).hostname
            where = "" if host == "127.0.0.1" else " (not served by the book: remote image?)"
            problems.append(f"image did not load: {img['src'][:160]}{where}")

    # widgets
    if state["widgetViews"]:
        if not state["widgetState"]:
            problems.append(f"{state['widgetViews']} widget views but no saved widget state")
        if state["renderedViews"] < state["widgetViews"]:
            problems.append(f"{state['renderedViews']} of {state['widgetViews']} widget views rendered")
        problems.extend(state["widgetProblems"])

    # the Colab launch link of this very notebook
    if (ROOT / f"{page}.ipynb").is_file():
        want = colab_link(config, page)
        colab_links = sorted({h for h in state["links"]
                              if h.startswith(config["launch_buttons"]["colab_url"].rstrip("/"))})
        if colab_links != [want]:
            problems.append(f"Colab launch link should be {want}; the page has {colab_links}")

    if state["text"] < args.min_chars:
        problems.append(f"main text is almost empty ({state['text']} characters)")
    if not state["h1"]:
        problems.append("no <h1> title")

    if args.screenshots:
        out = Path(args.screenshots) / (page.replace("/", "__") + ".png")
        out.parent.mkdir(parents=True, exist_ok=True)
        full_page_screenshot(driver, out)

    console = []
    for entry in driver.get_log("browser"):
        message = entry["message"]
        # Chromium asks every site for /favicon.ico by itself; the book has none, and on GitHub
        # Pages that address is the site's root, outside the book
        favicon = "/favicon.ico - Failed to load resource" in message
        if entry["level"] == "SEVERE" and not favicon and not args.allow_console_errors:
            problems.append(f"console error: {message[:300]}")
        elif args.verbose:
            console.append(f"     console {entry['level']}: {message[:300]}")

    status = "ok  " if not problems else "FAIL"
    mj = state["mathjax"]
    formulas = f", {state['mathEls']} formulas ({mj['items']} typeset)" if mj else ""
    widgets = (f", {state['renderedViews']} of {state['widgetViews']} widget views rendered"
               if state["widgetViews"] else "")
    print(f"{status} {page}.html: {state['text']} chars, {len(state['imgs'])} images{formulas}"
          f"{widgets} - {state['h1'][:60]!r}")
    for line in [f"     - {p}" for p in problems] + console:
        print(line)
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--html", type=Path, default=ROOT / "_build" / "html",
                        help="the built book (default: _build/html)")
    parser.add_argument("--toc", type=Path, default=ROOT / "_toc.yml")
    parser.add_argument("--config", type=Path, default=ROOT / "_config.yml")
    parser.add_argument("--pages", nargs="*", help="pages to check (default: all of _toc.yml)")
    parser.add_argument("--screenshots", metavar="DIR", help="write a full-page PNG per page")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per page load")
    parser.add_argument("--widget-wait", type=float, default=15.0,
                        help="seconds to wait for a page's saved widgets to render")
    parser.add_argument("--min-chars", type=int, default=200)
    parser.add_argument("--online", action="store_true",
                        help="let the browser reach the network (requests leaving the machine "
                             "still fail the check)")
    parser.add_argument("--allow-console-errors", action="store_true",
                        help="do not fail on errors in the browser console")
    parser.add_argument("-v", "--verbose", action="store_true", help="print console messages")
    args = parser.parse_args(argv)

    html = args.html.resolve()
    if not (html / "index.html").is_file():
        print(f"no built book at {html} (run `jupyter-book build .` first)", file=sys.stderr)
        return 1
    for exe in (CHROMIUM, CHROMEDRIVER):
        if not Path(exe).exists():
            print(f"{exe} missing: apt-get install chromium chromium-driver", file=sys.stderr)
            return 1

    config = load_yaml(args.config)
    pages = args.pages or toc_pages(args.toc)
    server, failures_log = serve(html)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    profile = tempfile.mkdtemp(prefix="book-chromium-")
    driver = None
    bad = 0
    start = time.monotonic()
    try:
        driver = make_driver(profile, args.timeout, offline=not args.online)
        for page in pages:
            if not (html / f"{page}.html").is_file():
                print(f"FAIL {page}.html: not in the build")
                bad += 1
                continue
            bad += bool(check_page(driver, base, page, args, failures_log, config))
    finally:
        if driver is not None:
            driver.quit()
        server.shutdown()
        server.server_close()
        shutil.rmtree(profile, ignore_errors=True)
    where = f"; screenshots in {args.screenshots}" if args.screenshots else ""
    print(f"{len(pages) - bad} of {len(pages)} pages passed in {time.monotonic() - start:.0f} s{where}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
