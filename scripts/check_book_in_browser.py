#!/usr/bin/env python
"""Open every page of the built book in headless Chromium and check what a reader would see.

    jupyter-book build .
    python scripts/check_book_in_browser.py                      # checks _build/html
    python scripts/check_book_in_browser.py --screenshots shots  # and writes shots/<page>.png

The book's html directory is served on 127.0.0.1 (a random free port, Python's http.server in a
thread). Each page listed in _toc.yml is opened in Debian's Chromium, driven by selenium through
/usr/bin/chromedriver, so nothing is downloaded. A page passes when

* it loads, with no request to the local server failing (a missing image, css or js file);
* every <img> has loaded (`complete && naturalWidth > 0`), after scrolling the page once so
  lazily loaded images are fetched too;
* its main text is not blank (at least --min-chars characters) and it has a title heading;
* no uncaught JavaScript exception is raised by the book's own scripts (resources that fail
  to load from a CDN, when the machine is offline, are not counted).

Widgets: a page with saved ipywidgets state loads @jupyter-widgets/html-manager from a CDN. The
script reports how many widgets rendered; with --require-widgets (on a machine that can reach
the CDN) a page whose widgets did not render fails.

Needs: apt-get install chromium chromium-driver; pip install selenium pyyaml.
Exit status 0 when every page passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import functools
import http.server
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
    "--window-size=1280,900",
]

PAGE_STATE_JS = r"""
const main = document.querySelector('main #main-content, article.bd-article, article, main')
          || document.body;
const imgs = Array.from(document.images).map(i => ({
    src: i.currentSrc || i.src, complete: i.complete, width: i.naturalWidth,
    visible: !!(i.offsetWidth || i.offsetHeight || i.getClientRects().length)}));
const h1 = main.querySelector('h1') || document.querySelector('h1');
return {
    title: document.title,
    ready: document.readyState,
    text: (main.innerText || '').trim().length,
    h1: h1 ? h1.innerText.trim() : '',
    imgs: imgs,
    widgetViews: document.querySelectorAll(
        'script[type="application/vnd.jupyter.widget-view+json"]').length,
    widgetsRendered: document.querySelectorAll('.jupyter-widgets, .widget-inline-hbox, '
        + '.widget-slider, .widget-vbox, .widget-hbox, .widget-output').length,
    height: Math.max(document.body.scrollHeight, document.documentElement.scrollHeight),
};
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


def toc_pages(toc_path: Path) -> list[str]:
    import yaml

    toc = yaml.safe_load(toc_path.read_text(encoding="utf-8"))
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


def make_driver(user_data_dir: str, timeout: float):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROME_FLAGS + [f"--user-data-dir={user_data_dir}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
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
        time.sleep(0.05)
    driver.execute_script("window.scrollTo(0, 0);")


def full_page_screenshot(driver, path: Path, max_height: int = 40000):
    import base64

    width = driver.execute_script("return document.documentElement.scrollWidth")
    height = min(driver.execute_script("return document.documentElement.scrollHeight"), max_height)
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png",
        "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
    })
    path.write_bytes(base64.b64decode(shot["data"]))


def check_page(driver, base: str, page: str, args, failures_log) -> list[str]:
    problems: list[str] = []
    url = f"{base}/{page}.html"
    n_failures_before = len(failures_log)
    try:
        driver.get(url)
    except Exception as exc:  # page load timeout: report and go on
        problems.append(f"did not finish loading in {args.timeout:.0f}s ({type(exc).__name__})")
    wait_for(driver, "return document.readyState === 'complete'", args.timeout)
    scroll_through(driver)
    wait_for(driver, "return Array.from(document.images).every(i => i.complete)", args.timeout)
    if args.widget_wait:
        wait_for(driver, "return document.querySelectorAll('.jupyter-widgets').length > 0",
                 args.widget_wait)
    state = driver.execute_script(PAGE_STATE_JS)

    for img in state["imgs"]:
        host = urlsplit(img["src"]).hostname
        if not img["complete"] or img["width"] == 0:
            where = "" if host == "127.0.0.1" else " (not served by the book: remote image?)"
            problems.append(f"image did not load: {img['src']}{where}")
    if state["text"] < args.min_chars:
        problems.append(f"main text is almost empty ({state['text']} characters)")
    if not state["h1"]:
        problems.append("no <h1> title")
    local_failures = failures_log[n_failures_before:]
    for path, status in local_failures:
        problems.append(f"local request failed: {path} -> HTTP {status}")

    widgets = ""
    if state["widgetViews"]:
        widgets = f", widgets {state['widgetsRendered']} elements for {state['widgetViews']} views"
        if args.require_widgets and state["widgetsRendered"] == 0:
            problems.append("widgets did not render (is the html-manager CDN reachable?)")

    if args.screenshots:
        out = Path(args.screenshots) / (page.replace("/", "__") + ".png")
        out.parent.mkdir(parents=True, exist_ok=True)
        full_page_screenshot(driver, out)

    console = []
    for entry in driver.get_log("browser"):
        message = entry["message"]
        # an uncaught exception in the book's own scripts; failed local requests are caught by
        # the server log, and console.error() messages of the theme are not failures
        local_error = (entry["level"] == "SEVERE" and message.startswith(base)
                       and "Uncaught" in message)
        if local_error and not args.allow_console_errors:
            problems.append(f"JavaScript error: {message[:300]}")
        elif args.verbose:
            console.append(f"     console {entry['level']}: {message[:300]}")

    status = "ok  " if not problems else "FAIL"
    print(f"{status} {page}.html: {state['text']} chars, {len(state['imgs'])} images{widgets}"
          f" - {state['h1'][:60]!r}")
    for line in [f"     - {p}" for p in problems] + console:
        print(line)
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--html", type=Path, default=ROOT / "_build" / "html",
                        help="the built book (default: _build/html)")
    parser.add_argument("--toc", type=Path, default=ROOT / "_toc.yml")
    parser.add_argument("--pages", nargs="*", help="pages to check (default: all of _toc.yml)")
    parser.add_argument("--screenshots", metavar="DIR", help="write a full-page PNG per page")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per page load")
    parser.add_argument("--min-chars", type=int, default=200)
    parser.add_argument("--require-widgets", action="store_true",
                        help="fail a page whose saved widgets do not render (needs the CDN)")
    parser.add_argument("--widget-wait", type=float, default=0.0,
                        help="seconds to wait for widgets to render on each page")
    parser.add_argument("--allow-console-errors", action="store_true",
                        help="do not fail on JavaScript errors raised by the book's own pages")
    parser.add_argument("-v", "--verbose", action="store_true", help="print console messages")
    args = parser.parse_args(argv)

    if args.require_widgets and not args.widget_wait:
        args.widget_wait = 10.0
    html = args.html.resolve()
    if not (html / "index.html").is_file():
        print(f"no built book at {html} (run `jupyter-book build .` first)", file=sys.stderr)
        return 1
    for exe in (CHROMIUM, CHROMEDRIVER):
        if not Path(exe).exists():
            print(f"{exe} missing: apt-get install chromium chromium-driver", file=sys.stderr)
            return 1

    pages = args.pages or toc_pages(args.toc)
    server, failures_log = serve(html)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    profile = tempfile.mkdtemp(prefix="book-chromium-")
    driver = None
    bad = 0
    try:
        driver = make_driver(profile, args.timeout)
        for page in pages:
            if not (html / f"{page}.html").is_file():
                print(f"FAIL {page}.html: not in the build")
                bad += 1
                continue
            bad += bool(check_page(driver, base, page, args, failures_log))
    finally:
        if driver is not None:
            driver.quit()
        server.shutdown()
        server.server_close()
        shutil.rmtree(profile, ignore_errors=True)
    print(f"{len(pages) - bad} of {len(pages)} pages passed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
