"""Chapter 9 read in JupyterLab says what the built book says.

The chapter is opened (not run) in JupyterLab with jupyterlab-myst. For every markdown cell
that states numbers from outputs, each stated value must show in JupyterLab, and the words
around it must read the same in JupyterLab as on the book's HTML page. The exercises carry
the same numbers ("Exercise 9.3") in both.
"""
from __future__ import annotations

import json
import re

import pytest

from browser_support import HTML, REPO_ROOT, wait_for_http
from helpers import prose

CHAPTER = "chapters/09_evaluating_melanoma_detection.ipynb"


# jupyterlab-myst does not resolve {cite} roles (jupyterlab-myst issue #127): it shows the
# bare key where the book shows "[Rotemberg et al., 2021]". The comparison stops at either.
CITE_KEYS = re.findall(r"@\w+\{([^,\s]+),", (REPO_ROOT / "references.bib").read_text(encoding="utf-8"))


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("\u200b", "")).strip()


@pytest.fixture(scope="module")
def lab_text(jupyterlab, browser, screenshots):
    url, _root, proc = jupyterlab
    wait_for_http(f"{url}/api/status", 180, proc)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(60_000)
    # A workspace of its own: the lab's default one may still hold chapter 1 from another test,
    # whose hidden panel would answer the selectors below.
    page.goto(f"{url}/lab/workspaces/chapter09/tree/{CHAPTER}?reset")
    # Wait until some markdown cell shows rendered text (the first one in the DOM may be a
    # cell JupyterLab keeps hidden or not yet laid out).
    page.wait_for_function("""() => [...document.querySelectorAll(
        '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-MarkdownCell :is(.myst, .jp-RenderedMarkdown)')]
        .some(e => e.innerText.trim().length > 0)""", timeout=120_000)
    page.wait_for_timeout(3000)
    dialog = page.locator(".jp-Dialog")
    if dialog.count():
        dialog.locator(".jp-mod-accept").first.click()
    # Solutions are folded (<details>): open them, a reader who clicks reads them too.
    page.evaluate("() => document.querySelectorAll('details').forEach(d => { d.open = true; })")
    page.wait_for_timeout(500)
    texts = page.evaluate("""() => [...document.querySelectorAll(
        '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-MarkdownCell')]
        .map(c => (c.querySelector('.myst, .jp-RenderedMarkdown') || c).innerText)""")
    page.screenshot(path=str(screenshots / "lab_chapter09.png"))
    page.close()
    return [_flat(t) for t in texts]


@pytest.fixture(scope="module")
def html_text(browser, book_url):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{book_url}/{CHAPTER.replace('.ipynb', '.html')}")
    # textContent: folded solutions included, as in JupyterLab with its <details> opened
    text = page.evaluate("() => document.querySelector('article').textContent")
    page.close()
    return _flat(text)


def _stated_cells():
    nb = json.loads((REPO_ROOT / CHAPTER).read_text(encoding="utf-8"))
    values = prose.stored_values(nb)
    markdown = [c for c in nb["cells"] if c["cell_type"] == "markdown"]
    for index, cell in enumerate(markdown):
        literals = [prose.render(values[k.partition(":")[0]], k.partition(":")[2])
                    for k in cell["metadata"].get("glued", [])]
        if literals:
            yield index, literals


STATED = list(_stated_cells())


def test_chapter_9_states_numbers():
    assert len(STATED) >= 10


@pytest.mark.parametrize("index,literals", STATED, ids=[f"md{i}" for i, _ in STATED])
def test_lab_shows_the_numbers_the_book_shows(lab_text, html_text, index, literals):
    shown = lab_text[index]
    for literal in literals:
        assert literal in shown, f"{literal!r} does not show in JupyterLab: {shown[:300]}"
        # the words that follow the number read the same in the book
        at = shown.index(literal) + len(literal)
        after = re.split(r"[(\[]|" + "|".join(map(re.escape, CITE_KEYS)), shown[at:at + 30])[0]
        phrase = literal + after.rstrip()  # citations render apart
        assert phrase in html_text, f"JupyterLab reads {phrase!r}, which the book does not"


def test_exercises_carry_the_same_numbers(lab_text, html_text):
    in_lab = re.findall(r"Exercise (9\.\d+)", " ".join(lab_text))
    in_book = re.findall(r"Exercise (9\.\d+)", html_text)
    assert in_lab and sorted(set(in_lab)) == sorted(set(in_book))
    assert not re.search(r"Exercise \d+\b(?!\.)", " ".join(lab_text).replace("Exercise 9.", ""))


def test_the_book_page_is_built_from_this_chapter():
    assert (HTML / CHAPTER.replace(".ipynb", ".html")).is_file()
