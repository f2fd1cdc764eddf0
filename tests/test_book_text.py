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
    assert cell.source.startswith("# Colab only"), f"{path.name}: the first code cell is not the Colab cell"
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



# -- fit to the page, and the time each chapter says it takes ---------------------------------
WIDTH = 88   # columns of code and of printed output that fit the book's content column


def _long_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if len(line) > WIDTH]


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_code_and_printed_output_fit_88_columns(path):
    nb = nbformat.read(path, as_version=4)
    code = [line for c in nb.cells if c.cell_type == "code" for line in _long_lines(c.source)]
    printed = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            text = out.get("text", "") if out.output_type == "stream" else (
                "" if "text/html" in data or "image/png" in data or "image/jpeg" in data
                else data.get("text/plain", ""))
            printed += _long_lines(str(text))
    assert not code, f"{len(code)} code lines over {WIDTH} columns: {code[:3]}"
    assert not printed, f"{len(printed)} output lines over {WIDTH} columns: {printed[:3]}"


def _recorded_minutes(nb) -> float:
    import datetime as dt

    seconds = 0.0
    for cell in nb.cells:
        stamps = cell.metadata.get("execution", {})
        if "iopub.execute_input" in stamps and "shell.execute_reply" in stamps:
            start, end = (dt.datetime.fromisoformat(stamps[k].replace("Z", "+00:00"))
                          for k in ("iopub.execute_input", "shell.execute_reply"))
            seconds += (end - start).total_seconds()
    return seconds / 60


def _stated_minutes(text: str) -> float:
    """The minutes a "Time and hardware" sentence states: "under a minute", "about 3 minutes"."""
    sentence = re.search(r"Time and hardware[.:*]*\s*(.{0,80})", text, re.S).group(1)
    if re.search(r"under a minute", sentence, re.I):
        return 0.5
    found = re.search(r"about (\d+(?:\.\d+)?) minutes?", sentence, re.I)
    assert found, f"the time is not stated as 'about N minutes' or 'under a minute': {sentence!r}"
    return float(found.group(1))


def test_stated_minutes_reads_the_phrase():
    assert _stated_minutes("**Time and hardware:** about 7 minutes on a laptop CPU") == 7
    assert _stated_minutes("**Time and hardware:** under a minute on a laptop") == 0.5


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_the_stated_time_matches_the_recorded_run(path):
    """The intro's time agrees, within a factor 1.5, with the committed run's cell times."""
    nb = nbformat.read(path, as_version=4)
    recorded = _recorded_minutes(nb)
    stated = _stated_minutes("\n".join(c.source for c in nb.cells if c.cell_type == "markdown"))
    if stated == 0.5:
        assert recorded < 1.0, f"'under a minute', but the recorded run took {recorded:.1f} min"
    else:
        assert stated / 1.5 <= max(recorded, 0.5) <= stated * 1.5, (
            f"states about {stated:g} minutes, the recorded run took {recorded:.1f}")
