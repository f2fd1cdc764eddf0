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


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("\u200b", "")).strip()


@pytest.fixture(scope="module")
def lab_text(jupyterlab, browser, screenshots):
    url, _root, proc = jupyterlab
    wait_for_http(f"{url}/api/status", 180, proc)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(60_000)
    page.goto(f"{url}/lab/tree/{CHAPTER}")
    page.wait_for_selector(".jp-NotebookPanel .jp-MarkdownCell .jp-RenderedMarkdown, "
                           ".jp-NotebookPanel .jp-MarkdownCell .myst", timeout=120_000)
    page.wait_for_timeout(3000)
    dialog = page.locator(".jp-Dialog")
    if dialog.count():
        dialog.locator(".jp-mod-accept").first.click()
    texts = page.evaluate("""() => [...document.querySelectorAll('.jp-MarkdownCell')]
        .map(c => (c.querySelector('.myst, .jp-RenderedMarkdown') || c).innerText)""")
    page.screenshot(path=str(screenshots / "lab_chapter09.png"))
    page.close()
    return [_flat(t) for t in texts]


@pytest.fixture(scope="module")
def html_text(browser, book_url):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{book_url}/{CHAPTER.replace('.ipynb', '.html')}")
    text = page.evaluate("() => document.querySelector('article').innerText")
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
        phrase = literal + re.split(r"[(\[]", shown[at:at + 30])[0]  # citations render apart
        assert phrase in html_text, f"JupyterLab reads {phrase!r}, which the book does not"


def test_exercises_carry_the_same_numbers(lab_text, html_text):
    in_lab = re.findall(r"Exercise (9\.\d+)", " ".join(lab_text))
    in_book = re.findall(r"Exercise (9\.\d+)", html_text)
    assert in_lab and sorted(set(in_lab)) == sorted(set(in_book))
    assert not re.search(r"Exercise \d+\b(?!\.)", " ".join(lab_text).replace("Exercise 9.", ""))


def test_the_book_page_is_built_from_this_chapter():
    assert (HTML / CHAPTER.replace(".ipynb", ".html")).is_file()
