"""The book as a reader gets it: chapters read only what ships, and speak of melanoma detection.

A reader's clone has ``data_samples/`` and ``runs/`` but no folder beside the repository, so
no chapter may read one (tests and benchmarks may). And the pages talk about the subject and
their own measurements, not about how they were written.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

import nbformat
import pytest

from helpers import REPO_ROOT

CHAPTERS = sorted((REPO_ROOT / "chapters").glob("*.ipynb"))
# Every tracked text file of the project but this one (it holds the patterns).
PAGES = [REPO_ROOT / name for name in subprocess.run(
    ["git", "ls-files", "*.md", "*.py", "*.sh", "*.yml", "*.toml", "*.txt", "*.cfg", "Makefile", ".ci/*"],
    cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout.split()
    if not name.endswith("test_book_text.py")]
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


@pytest.mark.parametrize("path", CHAPTERS + PAGES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_pages_speak_of_the_subject_not_of_their_making(path):
    text = _chapter_text(path) if path.suffix == ".ipynb" else path.read_text(encoding="utf-8")
    found = ABOUT_THE_MAKING.findall(text)
    assert not found, f"{path.name}: {sorted(set(found))}"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_each_chapter_says_which_data_is_real(path):
    nb = nbformat.read(path, as_version=4)
    opening = "\n".join(c.source for c in nb.cells[:4] if c.cell_type == "markdown").lower()
    assert "real" in opening, f"{path.name}: the opening does not say which data is real"


def _first_code_cell(path):
    return next(c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_the_colab_cell_does_nothing_here(path, monkeypatch):
    cell = _first_code_cell(path)
    assert cell.source.startswith("# Google Colab only"), f"{path.name}: the first code cell is not the Colab cell"
    assert cell.source == _first_code_cell(CHAPTERS[0]).source, f"{path.name}: the Colab cell differs from chapter 1's"
    assert "remove-cell" in cell.metadata.get("tags", [])
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(os, "chdir", lambda *a: calls.append(a))
    sys_path = list(sys.path)
    exec(compile(cell.source, path.name, "exec"), {})
    assert calls == [] and sys.path == sys_path


def test_on_colab_the_cell_clones_installs_and_moves_into_the_book(monkeypatch):
    import types

    import yaml

    cell = _first_code_cell(CHAPTERS[0])
    calls = []
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setattr(subprocess, "run", lambda cmd, **k: calls.append(cmd))
    monkeypatch.setattr(os, "chdir", lambda d: calls.append(["cd", d]))
    monkeypatch.setattr(os.path, "isdir", lambda d: False)
    monkeypatch.setattr(sys, "path", list(sys.path))
    namespace = {}
    exec(compile(cell.source, "colab", "exec"), namespace)
    book = namespace["BOOK"]
    url = yaml.safe_load((REPO_ROOT / "_config.yml").read_text(encoding="utf-8"))["repository"]["url"]
    assert calls[0][:2] == ["git", "clone"] and url in calls[0] and calls[0][-1] == book
    assert calls[1][1:] == ["-m", "pip", "install", "-q", "-e", book]
    assert calls[2] == ["cd", f"{book}/chapters"] and sys.path[0] == book


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_stored_outputs_hold_no_progress_bar_fragments(path):
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            text = str(out.get("text", ""))
            assert out.get("name") != "stderr" or not text.strip(), f"{path.name} cell {i}: stderr output {text[:80]!r}"
            assert "\r" not in text and "it/s]" not in text, f"{path.name} cell {i}: a progress bar {text[:80]!r}"

