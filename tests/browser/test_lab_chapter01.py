"""Chapter 1 in JupyterLab, as a reader runs it: Run > Run All Cells in a real browser.

JupyterLab starts on a free localhost port without a token, in a temporary folder holding
a copy of the chapter (the repository's notebook is never modified); the kernel finds the
data through the installed ``helpers`` package. The test clears the committed outputs,
runs every cell from the Run menu, saves, and checks that no cell ended in an error, that
jupyterlab-myst renders the MyST of the markdown cells, and that the numbers the text states
show as numbers.
"""
from __future__ import annotations

import time

import nbformat
import pytest

from browser_support import wait_for_http

CHAPTER = "chapters/01_skin_disease_and_melanoma.ipynb"
GLUE_SENTENCE = "The ISIC 2019 training set has"
GLUE_KEY = "n_2019"   # glued in chapter 1, stated in that sentence (metadata "glued": n_2019:,)


@pytest.fixture(scope="module")
def lab(jupyterlab):
    """The JupyterLab server (started early by conftest.py) once it answers."""
    url, root, proc = jupyterlab
    wait_for_http(f"{url}/api/status", 180, proc)
    return url, root


def _menu(page, menu: str, command: str) -> None:
    page.locator("#jp-MainMenu .lm-MenuBar-itemLabel").get_by_text(menu, exact=True).click()
    page.click(f'.lm-Menu-item[data-command="{command}"]')


def _wait_for_idle_kernel(page, timeout_s: float) -> None:
    """Wait until the status bar says the kernel is idle, accepting the kernel dialog if asked."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        dialog = page.locator(".jp-Dialog")
        if dialog.count() and "Select Kernel" in dialog.first.inner_text():
            dialog.locator(".jp-mod-accept").first.click()   # the preselected "Python 3 (.venv)"
        if "| Idle" in page.locator("#jp-main-statusbar").inner_text():
            return
        page.wait_for_timeout(500)
    raise TimeoutError(f"the kernel was not idle within {timeout_s:.0f} s")


@pytest.fixture(scope="module")
def ran(lab, browser, screenshots):
    """Open chapter 1, clear its outputs, run all cells, save; return what the page showed."""
    url, root = lab
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(60_000)
    page.goto(f"{url}/lab/tree/{CHAPTER}")
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=120_000)
    _wait_for_idle_kernel(page, 120)
    _menu(page, "Edit", "editmenu:clear-all")
    page.wait_for_function("""() => [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]
        .every(e => !/\\d/.test(e.innerText))""")
    started = time.monotonic()
    _menu(page, "Run", "runmenu:run-all")
    page.wait_for_function("""() => {
        const p = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')].map(e => e.innerText.trim());
        return p.length > 0 && p.every(t => /^\\[\\d+\\]:$/.test(t)); }""", timeout=300_000)
    _wait_for_idle_kernel(page, 60)
    run_s = time.monotonic() - started
    _menu(page, "File", "docmanager:save")
    saved = root / CHAPTER
    nb = None
    for _ in range(60):   # the saved file has every code cell executed
        nb = nbformat.read(saved, as_version=4)
        if all(c.execution_count for c in nb.cells if c.cell_type == "code"):
            break
        page.wait_for_timeout(500)
    markdown = page.locator(".jp-MarkdownCell")
    texts = [markdown.nth(i).locator(".myst, .jp-RenderedMarkdown").first.inner_text()
             for i in range(markdown.count())]
    glue_cell = markdown.filter(has_text=GLUE_SENTENCE).first
    glue_cell.scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    page.screenshot(path=str(screenshots / "lab_chapter01.png"))
    outputs_text = page.locator(".jp-OutputArea").all_inner_texts()
    page.close()
    print(f"\nJupyterLab ran {CHAPTER} in {run_s:.0f} s")
    return {"nb": nb, "markdown": texts, "outputs": outputs_text}


def test_every_cell_ran(ran):
    code = [c for c in ran["nb"].cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))


def test_no_cell_shows_an_error(ran):
    errors = [(i, o.get("ename"), o.get("evalue")) for i, c in enumerate(ran["nb"].cells)
              if c.cell_type == "code" and "raises-exception" not in c.metadata.get("tags", [])
              for o in c.outputs if o.output_type == "error"]
    assert not errors, f"cells with an error output: {errors}"
    shown = [t for t in ran["outputs"] if "Traceback (most recent call last)" in t]
    assert not shown, f"a traceback is shown in the page: {shown[0][:300]}"


def test_jupyterlab_myst_renders_the_markdown(ran):
    text = "\n".join(ran["markdown"])
    assert "Exercise" in text, "the {exercise} directives did not render as exercises"
    raw = [t for t in ("```{", "{exercise}", "{solution}", ":::") if t in text]
    assert not raw, f"MyST source shows as text in JupyterLab: {raw}"


def test_a_stated_number_shows_as_text(ran):
    (value,) = [o["data"]["application/papermill.record/text/plain"] for c in ran["nb"].cells
                if c.cell_type == "code" for o in c.outputs
                if o.get("metadata", {}).get("scrapbook", {}).get("name") == GLUE_KEY]
    expected = f"{int(value):,}"
    (sentence,) = [t for t in ran["markdown"] if GLUE_SENTENCE in t]
    assert expected in sentence, f"the value {expected} does not show: {sentence[:300]}"
    assert GLUE_KEY not in sentence
