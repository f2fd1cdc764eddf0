"""tools/reader.py: the reader edition in notebooks/ is plain Markdown, and up to date."""
from __future__ import annotations

import re

import nbformat
import pytest
from nbconvert import HTMLExporter

from helpers import REPO_ROOT
from tools import reader

CHAPTERS = sorted((REPO_ROOT / "chapters").glob("[0-9][0-9]_*.ipynb"))
EDITION = REPO_ROOT / "notebooks"
MYST = ["{cite", "{exercise", "{solution", "{admonition", "```{", ":::", ":label:", ":class:",
        "{term}", "{ref}", "{glue", ":enumerator:"]
LABELS = {"codella2018": ("Codella et al.", "2018"), "kittler2002": ("Kittler and Pehamberger", "2002")}


def test_citations_become_author_year():
    text = "as shown {cite}`codella2018`; {cite:t}`kittler2002` found {cite}`codella2018,kittler2002`."
    assert reader.plain_markdown(text, LABELS, {}) == (
        "as shown (Codella et al. 2018); Kittler and Pehamberger (2002) found "
        "(Codella et al. 2018; Kittler and Pehamberger 2002).")


def test_exercises_and_solutions_become_quotes_and_details():
    text = ("```{exercise}\n:label: ch09-ex3\n:enumerator: 9.3\n(5 points) Do it, as in "
            "{ref}`the section <sec>`.\n```\n\n```{solution} ch09-ex3\n:class: dropdown\nDone.\n```")
    out = reader.plain_markdown(text, LABELS, {"ch09-ex3": "9.3"})
    assert out.startswith("> **Exercise 9.3**\n>\n> (5 points) Do it, as in the section.")
    assert "<details><summary>Solution to Exercise 9.3</summary>\n\nDone.\n\n</details>" in out
    assert not any(token in out for token in MYST)


def test_admonitions_become_quotes():
    out = reader.plain_markdown(":::{admonition} Real data\nCC-0 images.\n:::", LABELS, {})
    assert out == "> **Real data**\n>\n> CC-0 images."


def test_an_unknown_citation_is_refused(tmp_path):
    with pytest.raises(KeyError):
        reader.plain_markdown("{cite}`nobody1999`", LABELS, {})


def test_the_reader_edition_is_up_to_date():
    labels = reader.citation_labels(REPO_ROOT / "references.bib")
    stale = []
    for path in CHAPTERS:
        fresh = reader.reader_edition(nbformat.read(path, as_version=4), labels)
        committed = EDITION / path.name
        if not committed.is_file() or nbformat.read(committed, as_version=4) != fresh:
            stale.append(path.name)
    assert not stale, f"notebooks/ is out of date for {stale}: run `make reader`"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_plain_rendering_shows_no_myst(path):
    """As Colab and GitHub see the file: nbconvert's HTML of the markdown, no MyST left."""
    nb = nbformat.read(EDITION / path.name, as_version=4)
    nb.cells = [c for c in nb.cells if c.cell_type == "markdown"]
    body, _ = HTMLExporter(template_name="basic").from_notebook_node(nb)
    text = re.sub(r"<[^>]+>", " ", body)
    found = [token for token in MYST if token in text]
    assert not found, f"MyST shows as text: {found}"
    assert "Exercise " in text and "(" in text
