"""Exercises a teacher can grade: every exercise states its points; automatic checks carry
theirs (``# points: N`` on a check cell's first line) and written answers a rubric whose items
add up; the stated total is the sum of the two.
"""
from __future__ import annotations

import re

import nbformat
import pytest

from helpers import REPO_ROOT

CHAPTERS = sorted((REPO_ROOT / "chapters").glob("*.ipynb"))

BLOCK = re.compile(r"(`{3,})\{(exercise|solution)\}([^\n]*)\n(.*?)\n\1(?!`)", re.DOTALL)
RUBRIC = re.compile(r"\*\*Rubric \((\d+) points?\)\.\*\*\n((?:[ \t]*- .*(?:\n|$)(?:[ \t]+[^-\s].*(?:\n|$))*)+)")


def _exercises(path) -> dict:
    """Each exercise's stated points, its check cells' points and its rubric's, by label."""
    found, current = {}, None
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type == "code" and "exercise-check" in cell.metadata.get("tags", []):
            first = cell.source.splitlines()[0] if cell.source else ""
            m = re.fullmatch(r"# points: (\d+)", first.strip())
            assert current and m, f"{path.name}: a check cell after {current} lacks a first line '# points: N'"
            found[current]["checks"] += int(m.group(1))
            continue
        if cell.cell_type != "markdown":
            continue
        for _, kind, arg, body in BLOCK.findall(cell.source):
            if kind == "exercise":
                current = re.search(r":label:\s*(\S+)", body).group(1)
                text = "\n".join(line for line in body.splitlines() if not line.startswith(":")).strip()
                stated = re.match(r"\((\d+) points?\)", text)
                found[current] = {"stated": int(stated.group(1)) if stated else None, "checks": 0, "rubric": None}
            else:
                label = arg.strip()
                rubric = RUBRIC.search(body)
                if label in found and rubric:
                    items = re.findall(r"^[ \t]*- \((\d+) points?\)", rubric.group(2), re.MULTILINE)
                    assert sum(map(int, items)) == int(rubric.group(1)), f"{path.name} {label}: rubric items do not add up"
                    found[label]["rubric"] = int(rubric.group(1))
    return found


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_every_exercise_has_points_and_written_ones_a_rubric(path):
    exercises = _exercises(path)
    assert len(exercises) >= 3, f"{path.name}: {len(exercises)} exercises"
    for label, e in exercises.items():
        assert e["stated"], f"{path.name} {label}: no '(N points)' at the start of the exercise"
        assert e["checks"] or e["rubric"], f"{path.name} {label}: neither graded checks nor a rubric"
        assert e["stated"] == e["checks"] + (e["rubric"] or 0), f"{path.name} {label}: {e}"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_solutions_and_hidden_tests_sit_in_cells_tagged_for_them(path):
    """The student edition removes solutions and hidden tests by these tags: an untagged cell would leak them."""
    for i, cell in enumerate(nbformat.read(path, as_version=4).cells):
        tags = cell.metadata.get("tags", [])
        if cell.cell_type == "code" and "### BEGIN HIDDEN TESTS" in cell.source:
            assert "exercise-check" in tags, f"{path.name} cell {i}: hidden tests in a cell not tagged exercise-check"
        if cell.cell_type == "code" and "### BEGIN SOLUTION" in cell.source:
            assert "exercise-solution" in tags, f"{path.name} cell {i}: a solution in a cell not tagged exercise-solution"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_exercises_are_numbered_per_chapter_in_order(path):
    """``:enumerator: 9.3`` (what JupyterLab shows) is the chapter and the exercise's place in
    it (what the book shows, _ext/book_extras.py); the text refers to it as "Exercise 9.3"."""
    chapter = int(path.name[:2])
    text = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells
                     if c.cell_type == "markdown")
    stated = re.findall(r"```\{exercise\}[^\n]*\n:label:[^\n]*\n:enumerator: (\S+)", text)
    labels = re.findall(r"```\{exercise\}", text)
    assert len(stated) == len(labels), "every exercise states ':enumerator:' after its label"
    assert stated == [f"{chapter}.{k}" for k in range(1, len(stated) + 1)]
    prose = re.sub(r"```\{(exercise|solution)\}.*?```", "", text, flags=re.S)
    wrong = [m for m in re.findall(r"[Ee]xercises? (\d+(?:\.\d+)?)", prose)
             if "." not in m or int(m.split(".")[0]) > 12]
    assert not wrong, f"exercise references not written 'Exercise N.K': {wrong}"
