"""The rendered book in a real browser: figures load, no raw MyST, toggles open, search works,
nothing overflows the page and nothing is fetched from the network.

Every chapter page and every appendix page is opened in headless Chromium from a local
server, at a laptop's width (1280 px). Requests to other hosts are refused by the test itself
(the book must read well offline) and recorded: a page that makes any fails.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from urllib.parse import urlparse

import pytest

from browser_support import HTML, is_local

PAGES = sorted(str(p.relative_to(HTML)) for p in [*HTML.glob("chapters/*.html"), *HTML.glob("appendix/*.html")])
RAW_MYST = ["{glue", "{exercise", "{solution", ":::", "```{"]
# Console errors that are harmless here, each with the reason. Anything else fails the page.
HARMLESS_EXTERNAL = [
    # A resource of another host (Thebe, Binder, fonts) that
    # this test refuses to fetch: the pages' text, figures and toggles are all local. Only
    # ignored when the message comes from another host or a request was refused.
    re.compile(r"Failed to load resource: net::ERR_(FAILED|BLOCKED_BY_CLIENT|NAME_NOT_RESOLVED|"
               r"INTERNET_DISCONNECTED|CONNECTION_REFUSED)"),
]
HARMLESS_THEME = [
    # jupyter-book 1 writes sphinx-thebe's inline settings script twice into every page; the
    # second `const` declaration throws and the first one stands. Thebe (live code in the page)
    # is not switched on in _config.yml, so nothing reads them.
    re.compile(r"Identifier 'THEBE_JS_URL' has already been declared"),
    # pydata-sphinx-theme with no stored light/dark choice and no default_mode: it logs this
    # and follows the browser's setting ("auto"), which is what a first visit should do.
    re.compile(r"^Got invalid theme mode: \. Resetting to auto\.$"),
]


WIDTH = 1280
# Code and output blocks wider than the content column (they would need a horizontal scroll);
# each named by the start of its text.
OVERFLOWING = """() => [...document.querySelectorAll(
        'div.cell_output pre, div.cell_output table, div.cell_output .output, div.cell_input pre')]
    .filter(e => e.scrollWidth > e.clientWidth + 1)
    .map(e => e.tagName + ': ' + e.innerText.slice(0, 80).replace(/\\s+/g, ' '))"""


@dataclass
class Visit:
    images: list[dict] = field(default_factory=list)
    raw_text: str = ""
    toggles: list[dict] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    overflowing: list[str] = field(default_factory=list)
    formulas: int = 0   # math elements Sphinx wrote into the page
    typeset: int = 0    # of them, how many MathJax turned into rendered formulas


def _route_local_only(route, blocked: list[str]):
    if is_local(route.request.url):
        route.continue_()
    else:
        blocked.append(route.request.url)
        route.abort()


@pytest.fixture(scope="module")
def visit(browser, book_url, screenshots):
    """Open a page once, screenshot it, and record what the tests check."""
    context = browser.new_context(viewport={"width": WIDTH, "height": 900})
    cache: dict[str, Visit] = {}

    def _visit(page_path: str) -> Visit:
        if page_path in cache:
            return cache[page_path]
        result, blocked = Visit(), []
        page = context.new_page()
        page.route("**/*", lambda route: _route_local_only(route, blocked))

        def on_console(msg):
            if msg.type == "error":
                where = msg.location.get("url", "") if msg.location else ""
                text = f"{msg.text} ({where})" if where else msg.text
                external = where and not is_local(where)
                if any(p.search(msg.text) for p in HARMLESS_EXTERNAL) and (external or blocked):
                    result.ignored.append(text)
                elif any(p.search(msg.text) for p in HARMLESS_THEME):
                    result.ignored.append(text)
                else:
                    result.console_errors.append(text)

        page.on("console", on_console)
        def on_pageerror(exc):
            text = f"uncaught: {exc}"
            (result.ignored if any(p.search(str(exc)) for p in HARMLESS_THEME)
             else result.console_errors).append(text)

        page.on("pageerror", on_pageerror)
        page.goto(f"{book_url}/{page_path}", wait_until="load")
        # Images below the fold may be lazy: ask for all of them, then wait until each settled.
        page.evaluate("() => document.querySelectorAll('img').forEach(i => { i.loading = 'eager'; })")
        page.wait_for_function("() => [...document.images].every(i => i.complete)", timeout=30_000)
        result.overflowing = page.evaluate(OVERFLOWING)
        result.formulas = page.locator("article .math").count()
        if result.formulas:
            page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise"
                                   " && MathJax.startup.promise.then(() => true)", timeout=30_000)
            result.typeset = page.locator("article .math mjx-container").count()
        result.images = page.evaluate(
            "() => [...document.images].map(i => ({src: i.currentSrc || i.src, width: i.naturalWidth}))")
        # The article's text with code blocks removed (they may show MyST on purpose), hidden
        # parts (closed toggles) included.
        result.raw_text = page.evaluate("""() => {
            const main = (document.querySelector('article') || document.body).cloneNode(true);
            main.querySelectorAll('pre, code, script, style').forEach(e => e.remove());
            return main.textContent; }""")
        name = page_path.replace("/", "_").removesuffix(".html")
        # JPEG: a chapter is 15,000-20,000 px tall, and PNG takes twice as long to write.
        page.screenshot(path=str(screenshots / f"{name}.jpg"), full_page=True, type="jpeg", quality=70)
        result.toggles = _click_toggles(page)
        result.blocked = list(blocked)
        page.close()
        cache[page_path] = result
        return result

    yield _visit
    for page_path, result in cache.items():
        if result.ignored:
            print(f"\n{page_path}: {len(result.ignored)} ignored (closed network):",
                  *sorted(set(result.ignored))[:8], sep="\n  ")
    context.close()


def _click_toggles(page) -> list[dict]:
    """Click every dropdown solution and the first hidden-code toggle; did its body appear?"""
    out = []
    toggles = page.locator(".admonition.dropdown.toggle")
    for i in range(toggles.count()):
        item = toggles.nth(i)
        body = item.locator(":scope > :not(.admonition-title)").first
        before = body.is_visible()
        item.locator(":scope > .admonition-title").click()
        body.wait_for(state="visible", timeout=5_000) if not before else None
        out.append({"kind": "dropdown", "id": item.get_attribute("id"), "hidden_before": not before,
                    "visible_after": body.is_visible()})
    details = page.locator("details.hide")
    for i in range(min(details.count(), 1)):
        item = details.nth(i)
        body = item.locator(":scope > :not(summary)").first
        before = body.is_visible()
        item.locator(":scope > summary").click()
        out.append({"kind": "details", "id": item.get_attribute("class"), "hidden_before": not before,
                    "visible_after": body.is_visible()})
    return out


def test_there_are_pages_to_check():
    assert sum(p.startswith("chapters/") for p in PAGES) == 12
    assert any(p.startswith("appendix/") for p in PAGES)


@pytest.mark.parametrize("page_path", PAGES)
def test_every_image_loads(visit, page_path):
    result = visit(page_path)
    broken = [i["src"] for i in result.images if i["width"] == 0 and is_local(i["src"])]
    assert not broken, f"images that did not load: {broken}"
    if page_path.startswith("chapters/"):
        figures = [i for i in result.images if "/_images/" in i["src"]]
        assert figures, "a chapter page without a single figure"


@pytest.mark.parametrize("page_path", PAGES)
def test_no_raw_myst_in_the_text(visit, page_path):
    text = visit(page_path).raw_text
    found = {token: text[max(0, text.find(token) - 60):text.find(token) + 60].strip()
             for token in RAW_MYST if token in text}
    assert not found, f"MyST source shows as text: {found}"


@pytest.mark.parametrize("page_path", PAGES)
def test_toggles_open_when_clicked(visit, page_path):
    toggles = visit(page_path).toggles
    if page_path.startswith("chapters/"):
        assert any(t["kind"] == "dropdown" for t in toggles), "no dropdown solution on a chapter page"
    bad = [t for t in toggles if not (t["hidden_before"] and t["visible_after"])]
    assert not bad, f"toggles that were open before the click or stayed closed after it: {bad}"


@pytest.mark.parametrize("page_path", PAGES)
def test_no_console_errors(visit, page_path):
    errors = visit(page_path).console_errors
    assert not errors, f"console errors: {errors}"


def test_formulas_are_typeset(visit):
    """MathJax is served with the book: every formula renders offline, on every page."""
    counts = {p: (visit(p).formulas, visit(p).typeset) for p in PAGES}
    assert sum(f for f, _ in counts.values()) > 0, "no page has a formula: is this test stale?"
    untypeset = {p: c for p, c in counts.items() if c[0] != c[1]}
    assert not untypeset, f"pages with formulas MathJax did not render (found, typeset): {untypeset}"


@pytest.mark.parametrize("page_path", PAGES)
def test_no_network_request(visit, page_path):
    blocked = visit(page_path).blocked
    assert not blocked, f"requests to other hosts (the book must work offline): {blocked[:5]}"


@pytest.mark.parametrize("page_path", PAGES)
def test_no_block_overflows_the_page(visit, page_path):
    wide = visit(page_path).overflowing
    assert not wide, f"{len(wide)} code or output blocks wider than the column: {wide[:5]}"


@functools.cache
def _chapter9() -> str:
    (name,) = [p for p in PAGES if p.startswith("chapters/09_")]
    return name


def test_search_finds_chapter_9(browser, book_url, screenshots):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    blocked: list[str] = []
    page.route("**/*", lambda route: _route_local_only(route, blocked))
    page.goto(f"{book_url}/search.html?q=calibration")
    page.wait_for_selector("#search-results ul.search li a", timeout=60_000)
    hrefs = page.eval_on_selector_all("#search-results ul.search li a", "els => els.map(e => e.href)")
    page.screenshot(path=str(screenshots / "search_calibration.png"), full_page=False)
    page.close()
    assert any(urlparse(h).path.endswith(_chapter9()) for h in hrefs), hrefs
