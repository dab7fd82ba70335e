"""A real browser for the page tests: Debian's Chromium driven by Playwright (no
browser download), WebGL2 on SwiftShader. Skipped, saying why, when either is missing.

    from browser import browser, open_page      # noqa: F401 (the fixture)
"""

from __future__ import annotations

import shutil

import pytest

CHROMIUM_ARGS = ["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]


@pytest.fixture(scope="module")
def browser():
    playwright_api = pytest.importorskip("playwright.sync_api",
                                         reason="playwright is not installed")
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.skip("no Chromium on PATH (Debian: apt-get install chromium)")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def open_page(browser, path: str, **context):
    """(page, console errors, requested URLs) of the file at `path`, once the page has
    set `window.t4aReady`."""
    page = browser.new_page(**context)
    errors, requests = [], []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    page.goto("file://" + path)
    page.wait_for_function("window.t4aReady === true", timeout=60_000)
    return page, errors, requests
