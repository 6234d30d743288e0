"""Open every page of the built site in headless Chromium and report what is broken.

Not run in CI (it needs Chromium). Build the site first, then::

    apt-get install -y chromium chromium-driver
    pip install selenium
    python docs/check_site.py            # or --html DIR --screenshots DIR

The site is served on localhost; every ``.html`` page is loaded in headless Chromium
(through Debian's ``chromedriver``, no download) and the script reports, per page:

- console errors (JavaScript errors, failed requests the browser logged);
- broken internal links: ``href`` to a local file that does not exist, or to an anchor
  (``page.html#id``) that the target page does not define;
- missing images: ``<img>`` whose file is absent or that the browser could not decode
  (``naturalWidth == 0`` once loaded).

Screenshots of the front page and of one gallery example go to ``docs/_build/screenshots/``.
Exits with status 1 when anything is broken.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import sys
import threading
from pathlib import Path
from urllib.parse import unquote, urldefrag, urljoin, urlparse

DOCS = Path(__file__).resolve().parent
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--window-size=1280,1000",
)
# JavaScript collecting what the checks need from a loaded page.
PAGE_FACTS = """
return {
  links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
  ids: Array.from(document.querySelectorAll('[id]')).map(e => e.id)
       .concat(Array.from(document.querySelectorAll('a[name]')).map(e => e.name)),
  images: Array.from(document.images).map(i => ({src: i.currentSrc || i.src,
                                                 ok: i.complete && i.naturalWidth > 0})),
};
"""


def _serve(root: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


def _driver():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))


def check(html: Path, screenshots: Path) -> dict:
    pages = sorted(p.relative_to(html).as_posix() for p in html.rglob("*.html"))
    pages = [p for p in pages if not p.startswith(("_static/", "_sources/", "_modules/"))]
    server, base = _serve(html)
    driver = _driver()
    problems = {"console errors": [], "broken links": [], "missing images": []}
    ids_of: dict[str, set[str]] = {}
    anchors: list[tuple[str, str, str]] = []  # (page, target page, fragment)
    try:
        for page in pages:
            driver.get(base + page)
            facts = driver.execute_script(PAGE_FACTS)
            ids_of[page] = set(facts["ids"])
            for entry in driver.get_log("browser"):
                if entry["level"] in ("SEVERE", "ERROR"):
                    problems["console errors"].append(f"{page}: {entry['message']}")
            for image in facts["images"]:
                if not image["ok"]:
                    problems["missing images"].append(f"{page}: {image['src']}")
            for href in facts["links"]:
                url, fragment = urldefrag(href)
                if not url.startswith(base):
                    continue  # external: not checked (no network)
                target = unquote(urlparse(url).path).lstrip("/") or "index.html"
                if target.endswith("/"):
                    target += "index.html"
                if not (html / target).exists():
                    problems["broken links"].append(f"{page}: {href}")
                elif fragment and target.endswith(".html"):
                    anchors.append((page, target, fragment))
        for page, target, fragment in anchors:
            if target in ids_of and fragment not in ids_of[target]:
                # the browser's list can miss ids on a slow load: read the file itself
                text = (html / target).read_text(encoding="utf-8", errors="replace")
                if f'id="{fragment}"' in text or f'name="{fragment}"' in text:
                    continue
                problems["broken links"].append(f"{page}: {target}#{fragment}")
        screenshots.mkdir(parents=True, exist_ok=True)
        gallery = next((p for p in pages if p.startswith("auto_examples/plot_")), None)
        for name, page in [("front_page", "index.html"), ("gallery_example", gallery)]:
            if page is None:
                continue
            driver.get(urljoin(base, page))
            height = driver.execute_script("return document.body.scrollHeight")
            driver.set_window_size(1280, min(max(height, 800), 4000))
            driver.save_screenshot(str(screenshots / f"{name}.png"))
            driver.set_window_size(1280, 1000)
    finally:
        driver.quit()
        server.shutdown()
    problems["pages"] = pages
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--html", type=Path, default=DOCS / "_build" / "html")
    parser.add_argument("--screenshots", type=Path, default=DOCS / "_build" / "screenshots")
    args = parser.parse_args(argv)
    if not (args.html / "index.html").exists():
        print(f"no site at {args.html}: build it first", file=sys.stderr)
        return 2
    result = check(args.html, args.screenshots)
    print(f"pages checked: {len(result['pages'])}")
    failed = False
    for kind in ("console errors", "broken links", "missing images"):
        found = sorted(set(result[kind]))
        print(f"{kind}: {len(found)}")
        for line in found:
            print(f"  {line}")
        failed |= bool(found)
    print(f"screenshots: {args.screenshots}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
