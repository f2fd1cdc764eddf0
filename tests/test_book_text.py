"""The book as a reader gets it: chapters read only what ships, and speak of melanoma detection.

A reader's clone has ``data_samples/`` and ``runs/`` but no folder beside the repository, so
no chapter may read one (tests and benchmarks may). And the pages talk about the subject and
their own measurements, not about how they were written.
"""
from __future__ import annotations

import re

import nbformat
import pytest

from helpers import REPO_ROOT

CHAPTERS = sorted((REPO_ROOT / "chapters").glob("*.ipynb"))
PAGES = [REPO_ROOT / "intro.md", REPO_ROOT / "README.md", *sorted((REPO_ROOT / "appendix").glob("*.md")),
         REPO_ROOT / "benchmarks" / "RESULTS.md", REPO_ROOT / "data_samples" / "README.md"]
OUTSIDE = re.compile(r"\.\./shared|\bshared/datasets|REPO_ROOT\.parent|/work/")
ABOUT_THE_MAKING = re.compile(r"\bfrom the issue\b|\bthe issue\b|\bthis session\b|\bsessions that wrote\b|"
                              r"\bwas lent\b|\blent to\b|\bno GPU was lent\b", re.IGNORECASE)


def _chapter_text(path) -> str:
    nb = nbformat.read(path, as_version=4)
    parts = []
    for cell in nb.cells:
        parts.append(cell.source)
        for out in cell.get("outputs", []):
            parts.append(str(out.get("text", "")))
            parts.extend(str(v) for k, v in out.get("data", {}).items() if k.startswith("text/"))
    return "\n".join(parts)


def test_there_are_twelve_chapters():
    assert len(CHAPTERS) == 12


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapters_read_only_what_ships(path):
    found = OUTSIDE.findall(_chapter_text(path))
    assert not found, f"{path.name} refers to data outside the repository: {sorted(set(found))}"


@pytest.mark.parametrize("path", CHAPTERS + PAGES, ids=lambda p: p.name)
def test_pages_speak_of_the_subject_not_of_their_making(path):
    text = _chapter_text(path) if path.suffix == ".ipynb" else path.read_text(encoding="utf-8")
    found = ABOUT_THE_MAKING.findall(text)
    assert not found, f"{path.name}: {sorted(set(found))}"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_each_chapter_says_which_data_is_real(path):
    nb = nbformat.read(path, as_version=4)
    opening = "\n".join(c.source for c in nb.cells[:4] if c.cell_type == "markdown").lower()
    assert "real" in opening, f"{path.name}: the opening does not say which data is real"
