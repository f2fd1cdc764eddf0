"""Tests for helpers/classroom.py: release, student edition, grading, and the real chapters.

Grading a real chapter executes it twice (as the teacher's and as a blank student
submission), so only the fastest chapters whose committed run times add up to
CLASSROOM_BUDGET_S seconds (default 45) are graded; CLASSROOM_FULL=1 grades all.
"""
from __future__ import annotations

import copy
import datetime as dt
import os
import re
from pathlib import Path

import jsonschema
import nbformat
import pandas as pd
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from helpers import REPO_ROOT, classroom

CHAPTERS = sorted((REPO_ROOT / "chapters").glob("[0-9][0-9]_*.ipynb"))

# nbgrader's cell metadata schema, version 3 (nbgrader/nbgraderformat/v3.json, nbgrader 0.9).
NBGRADER_V3 = {
    "type": "object",
    "properties": {
        "schema_version": {"type": "integer", "minimum": 3, "maximum": 3},
        "grade": {"type": "boolean"}, "locked": {"type": "boolean"},
        "solution": {"type": "boolean"}, "task": {"type": "boolean"},
        "grade_id": {"type": "string", "pattern": "^[a-zA-Z0-9_\\-]*$"},
        "points": {"type": "number", "minimum": 0},
        "checksum": {"type": "string", "minLength": 32, "maxLength": 32},
        "cell_type": {"type": "string", "enum": ["raw", "code", "markdown"]},
    },
    "required": ["schema_version", "grade", "locked", "solution"],
    "additionalProperties": False,
}


def tagged(source: str, tag: str):
    cell = new_code_cell(source)
    cell.metadata["tags"] = [tag]
    return cell


def tiny_source() -> nbformat.NotebookNode:
    """Three code exercises worth 1, 2 and 1 points, with visible and hidden checks."""
    cells = [
        new_markdown_cell("# Tiny chapter\n\nA fixture."),
        new_code_cell("import math\nBASE = 10"),
        new_markdown_cell("## Exercises\n\n```{exercise}\n:label: tiny-ex1\nSet `answer` to six times seven.\n```\n\n"
                          "```{solution} tiny-ex1\n:class: dropdown\nSECRET-PROSE: multiply.\n```\n"),
        tagged("### BEGIN SOLUTION\nanswer = 6 * 7\n### END SOLUTION\nprint(answer)", "exercise-solution"),
        tagged("assert isinstance(answer, int)\n### BEGIN HIDDEN TESTS\nassert answer == 42\n"
               "### END HIDDEN TESTS", "exercise-check"),
        new_markdown_cell("```{exercise}\n:label: tiny-ex2\nWrite `double(x)`.\n```"),
        tagged('def double(x):\n    """Twice x."""\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION\n',
               "exercise-solution"),
        tagged("# points: 2\nassert double(1) == 2\n### BEGIN HIDDEN TESTS\nassert double(21) == 42\n"
               "assert double(-3) == -6\n### END HIDDEN TESTS", "exercise-check"),
        new_markdown_cell("```{solution} tiny-ex2\n:class: dropdown\nSECRET-PROSE: add x to itself.\n```\n\n"
                          "```{exercise}\n:label: tiny-ex3\nSet `root` to the square root of `BASE`.\n```"),
        tagged("### BEGIN SOLUTION\nroot = math.sqrt(BASE)\n### END SOLUTION", "exercise-solution"),
        tagged("assert abs(root ** 2 - BASE) < 1e-9", "exercise-check"),
        new_markdown_cell("```{solution} tiny-ex3\n:class: dropdown\nSECRET-PROSE: sqrt.\n```"),
    ]
    cells[3].outputs = [new_output("stream", name="stdout", text="42\n")]
    cells[3].execution_count = 3
    return new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                              "language": "python"}})


def solution_lines(nb) -> set[str]:
    """Non-trivial lines between BEGIN and END SOLUTION / HIDDEN TESTS in ``nb``."""
    found, inside = set(), False
    for cell in nb.cells:
        for line in cell.source.split("\n"):
            if re.search(r"BEGIN (SOLUTION|HIDDEN TESTS)", line):
                inside = True
            elif re.search(r"END (SOLUTION|HIDDEN TESTS)", line):
                inside = False
            elif inside and len(line.strip()) >= 8:
                found.add(line.strip())
    return found


def other_lines(nb) -> set[str]:
    """Lines of ``nb`` outside the solution and hidden-test regions."""
    keep, inside = set(), False
    for cell in nb.cells:
        for line in cell.source.split("\n"):
            if re.search(r"BEGIN (SOLUTION|HIDDEN TESTS)", line):
                inside = True
            elif re.search(r"END (SOLUTION|HIDDEN TESTS)", line):
                inside = False
            elif not inside:
                keep.add(line.strip())
    return keep


def set_solution(nb, grade_id: str, code: str) -> None:
    """Put a student's answer into the released cell ``grade_id``."""
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == grade_id:
            source = re.sub(r"^[ \t]*# YOUR CODE HERE\n", "", cell.source, flags=re.MULTILINE)
            cell.source = source.replace("raise NotImplementedError()", code)
            return
    raise KeyError(grade_id)


# ------------------------------------------------------------------ release


def test_release_strips_solutions_hidden_tests_and_outputs(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    nbformat.write(tiny_source(), src / "tiny.ipynb")
    [out] = classroom.release(src, tmp_path / "student")
    nb = nbformat.read(out, as_version=4)
    text = out.read_text()
    for secret in ("6 * 7", "return 2 * x", "math.sqrt(BASE)", "answer == 42", "double(21)", "SECRET-PROSE",
                   "{solution}", "BEGIN SOLUTION", "HIDDEN TESTS"):
        assert secret not in text, secret
    codes = [c for c in nb.cells if c.cell_type == "code"]
    assert codes[1].source == "# YOUR CODE HERE\nraise NotImplementedError()\nprint(answer)"
    assert codes[3].source == ('def double(x):\n    """Twice x."""\n    # YOUR CODE HERE\n'
                               '    raise NotImplementedError()\n')
    assert codes[2].source == "assert isinstance(answer, int)"  # visible assert kept
    assert "assert double(1) == 2" in codes[4].source
    assert all(c.outputs == [] and c.execution_count is None for c in codes)
    assert all("{exercise}" in c.source for c in nb.cells if c.cell_type == "markdown" and "label" in c.source)
    assert len(nb.cells) == len(tiny_source().cells) - 1  # the solution-only markdown cell is gone
    meta = {c.metadata["nbgrader"]["grade_id"]: c.metadata["nbgrader"] for c in nb.cells
            if "nbgrader" in c.metadata}
    assert meta == {
        "tiny-ex1-solution": {"grade": False, "solution": True, "locked": False,
                              "grade_id": "tiny-ex1-solution", "schema_version": 3},
        "tiny-ex1-check": {"grade": True, "solution": False, "locked": True, "points": 1,
                           "grade_id": "tiny-ex1-check", "schema_version": 3},
        "tiny-ex2-solution": {"grade": False, "solution": True, "locked": False,
                              "grade_id": "tiny-ex2-solution", "schema_version": 3},
        "tiny-ex2-check": {"grade": True, "solution": False, "locked": True, "points": 2,
                           "grade_id": "tiny-ex2-check", "schema_version": 3},
        "tiny-ex3-solution": {"grade": False, "solution": True, "locked": False,
                              "grade_id": "tiny-ex3-solution", "schema_version": 3},
        "tiny-ex3-check": {"grade": True, "solution": False, "locked": True, "points": 1,
                           "grade_id": "tiny-ex3-check", "schema_version": 3},
    }
    for m in meta.values():
        jsonschema.validate(m, NBGRADER_V3)
    nbformat.validate(nb)


def test_release_markdown_answer_region_and_bad_markers(tmp_path):
    nb = tiny_source()
    nb.cells.append(new_markdown_cell("Explain.\n\n### BEGIN SOLUTION\nBecause SECRET.\n### END SOLUTION"))
    out = classroom.release_notebook(nb, "tiny.ipynb")
    last = out.cells[-1]
    assert last.source == "Explain.\n\nYOUR ANSWER HERE"
    assert last.metadata["nbgrader"]["grade"] and last.metadata["nbgrader"]["solution"]  # nbgrader's rule
    broken = tiny_source()
    broken.cells[3].source = "### BEGIN SOLUTION\nanswer = 42"
    with pytest.raises(ValueError, match=r"broken.ipynb: cell 3: BEGIN marker without its END"):
        classroom.release_notebook(broken, "broken.ipynb")


def test_strip_solution_directives_respects_fences():
    text = ("Intro\n\n````{solution} a\n:class: dropdown\n```python\nx = 1\n```\nSECRET\n````\n\n"
            "```markdown\n```{solution} shown-as-code\n```\n\n"
            ":::{solution} b\nSECRET too\n:::\n\n"
            "```{solution-start} c\n```\nSECRET gated\n```{solution-end}\n```\nOutro\n")
    out = classroom.strip_solution_directives(text)
    assert "SECRET" not in out
    assert out.startswith("Intro") and out.endswith("Outro\n")
    assert "```{solution} shown-as-code" in out  # inside a literal code block: left alone
    assert classroom.solution_targets(text) == ["a", "b", "c"]


def test_nbgrader_source_keeps_solutions_and_drops_solution_prose(tmp_path):
    [out] = classroom.nbgrader_source(_write(tmp_path, tiny_source()), tmp_path / "nbg")
    text = out.read_text()
    assert "answer = 6 * 7" in text and "assert answer == 42" in text
    assert "SECRET-PROSE" not in text and '"outputs": []' in text


def _write(tmp_path: Path, nb, name: str = "tiny.ipynb") -> Path:
    path = tmp_path / name
    nbformat.write(nb, path)
    return path


# ------------------------------------------------------------------ grade


def test_grade_full_zero_partial_crash_loop_reordered(tmp_path):
    src = tmp_path / "chapters"
    src.mkdir()
    source = tiny_source()
    _write(src, source)
    released = classroom.release_notebook(source, "tiny.ipynb")
    subs = tmp_path / "subs"

    def hand_in(student: str, nb) -> None:
        (subs / student).mkdir(parents=True)
        if isinstance(nb, str):
            (subs / student / "tiny.ipynb").write_text(nb)
        else:
            nbformat.write(nb, subs / student / "tiny.ipynb")

    hand_in("teacher", source)  # the source itself: tags, no nbgrader metadata
    hand_in("blank", released)
    half = copy.deepcopy(released)
    set_solution(half, "tiny-ex1-solution", "answer = 41  # passes the visible assert only")
    set_solution(half, "tiny-ex2-solution", "return x + x")
    set_solution(half, "tiny-ex3-solution",
                 'import socket\nsocket.create_connection(("93.184.215.14", 80), timeout=3)\nroot = BASE ** .5')
    for cell in half.cells:  # tampering with a check cell changes nothing
        if cell.metadata.get("nbgrader", {}).get("grade_id") == "tiny-ex1-check":
            cell.source = "pass"
    hand_in("half", half)
    crash = copy.deepcopy(released)
    set_solution(crash, "tiny-ex1-solution", "answer = 42")
    set_solution(crash, "tiny-ex2-solution", "import os\n    os._exit(1)")  # check 2 kills the kernel
    hand_in("crash", crash)
    loop = copy.deepcopy(released)
    set_solution(loop, "tiny-ex1-solution", "answer = 42")
    set_solution(loop, "tiny-ex2-solution", "while True:\n        pass")
    set_solution(loop, "tiny-ex3-solution", "root = math.sqrt(BASE)")
    hand_in("loop", loop)
    moved = copy.deepcopy(released)
    set_solution(moved, "tiny-ex1-solution", "answer = 42")
    set_solution(moved, "tiny-ex2-solution", "return 2 * x")
    set_solution(moved, "tiny-ex3-solution", "root = math.sqrt(BASE)")
    cells = [c for c in moved.cells if c.cell_type == "code" and not c.metadata.get("nbgrader", {}).get("grade")]
    moved.cells = [cells[0], cells[3], cells[2], cells[1]]  # checks and prose deleted, exercises reordered
    hand_in("moved", moved)
    hand_in("garbled", "{not json")
    (subs / "absent").mkdir()

    df = classroom.grade(subs, tmp_path / "grades.csv", source_dir=src, timeout=5)
    assert list(df.columns) == ["student", "notebook", "check", "points", "max_points", "error"]
    assert pd.read_csv(tmp_path / "grades.csv").shape == df.shape == (8 * 3, 6)
    assert set(df["notebook"]) == {"tiny"}
    assert (df.groupby("student")["max_points"].sum() == 4).all()
    pts = df.pivot(index="student", columns="check", values="points")
    assert pts.loc["teacher"].tolist() == [1, 2, 1]
    assert pts.loc["moved"].tolist() == [1, 2, 1]
    assert pts.loc["blank"].tolist() == [0, 0, 0]
    assert pts.loc["half"].tolist() == [0, 2, 0]  # the restored hidden test catches 41
    assert pts.loc["crash"].tolist() == [1, 0, 0]
    assert pts.loc["loop"].tolist() == [1, 0, 0]  # cells after the timeout are not run
    assert pts.loc["garbled"].sum() == pts.loc["absent"].sum() == 0
    err = df.set_index(["student", "check"])["error"]
    assert err["teacher"].eq("").all()
    assert err["half", "tiny-ex1-check"].startswith("AssertionError")
    assert "network access is disabled while grading" in err["half", "tiny-ex3-check"]
    assert "NotImplementedError" in err["blank", "tiny-ex1-check"] or "NameError" in err["blank", "tiny-ex1-check"]
    assert "died" in err["crash", "tiny-ex2-check"]
    assert "timeout" in err["loop", "tiny-ex2-check"] and "timeout" in err["loop", "tiny-ex3-check"]
    assert err["absent", "tiny-ex1-check"].startswith("missing")
    assert err["garbled", "tiny-ex1-check"].startswith("unreadable")


def test_cli_bad_input_exits_2(tmp_path, capsys):
    assert classroom.main(["grade", str(tmp_path / "nope"), str(tmp_path / "g.csv")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope" in err
    assert classroom.main(["release", str(tmp_path), str(tmp_path / "out")]) == 2  # no notebooks
    assert classroom.main(["student-book", str(REPO_ROOT)]) == 2  # would overwrite the book


def test_student_book_copy(tmp_path):
    if not CHAPTERS:
        pytest.skip("no chapters yet")
    out = classroom.student_book(tmp_path / "student")
    import yaml

    cfg = yaml.safe_load((out / "_config.yml").read_text())
    assert cfg["execute"]["execute_notebooks"] == "off"
    assert cfg["sphinx"]["config"]["hide_solutions"] is True
    assert (out / "_toc.yml").is_file() and (out / "references.bib").is_file()
    assert not (out / ".venv").exists() and not (out / "tests").exists()
    for path in CHAPTERS:
        nb = nbformat.read(out / "chapters" / path.name, as_version=4)
        assert not any(classroom.solution_targets(c.source) for c in nb.cells if c.cell_type == "markdown")
        graded = [c for c in nb.cells if "nbgrader" in c.metadata]
        assert all(c.outputs == [] for c in graded if c.cell_type == "code")
        # ordinary cells keep their committed outputs (figures, glued numbers)
        source = {c.source: c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"}
        ordinary = [c for c in nb.cells if c.cell_type == "code" and "nbgrader" not in c.metadata]
        assert ordinary and all(c.outputs == source[c.source].outputs for c in ordinary)
    with pytest.raises(ValueError, match="not a student edition"):
        (tmp_path / "other").mkdir()
        (tmp_path / "other" / "keep.txt").write_text("x")
        classroom.student_book(tmp_path / "other")


# ------------------------------------------------------------------ the real chapters


def _recorded_runtime(nb) -> float | None:
    stamps = [c.metadata.get("execution", {}) for c in nb.cells if c.cell_type == "code"]
    try:
        start = dt.datetime.fromisoformat(stamps[0]["iopub.execute_input"].replace("Z", "+00:00"))
        end = dt.datetime.fromisoformat(stamps[-1]["shell.execute_reply"].replace("Z", "+00:00"))
    except (IndexError, KeyError, ValueError):
        return None
    return (end - start).total_seconds()


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapter_exercises_and_release(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    md = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    labels = classroom.exercise_labels(md)
    assert len(labels) >= 3, f"{path.name}: {len(labels)} exercises"
    assert len(set(labels)) == len(labels) and all(labels)
    # a solution is a {solution} block, or for a code exercise its exercise-solution cell
    coded = {c.metadata["nbgrader"]["grade_id"].removesuffix("-solution")
             for c in classroom.annotate(nb, path.name).cells
             if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("solution")}
    missing = sorted(set(labels) - set(classroom.solution_targets(md)) - coded)
    assert not missing, f"{path.name}: no {{solution}} block or solution cell for {missing}"
    roles = [classroom.cell_role(c) for c in nb.cells]
    for i, role in enumerate(roles):  # every solution cell is followed by its check
        if role == "solution" and nb.cells[i].cell_type == "code":
            assert roles[i + 1] == "check", f"{path.name}: cell {i + 1} should be an exercise-check cell"
    released = classroom.release_notebook(nb, path.name)
    secret = solution_lines(nb) - other_lines(nb)
    text = "\n".join(c.source for c in released.cells)
    leaked = [line for line in secret if line in text]
    assert not leaked, f"{path.name}: solution lines survive the release: {leaked[:3]}"
    assert "{solution}" not in text and "BEGIN SOLUTION" not in text and "HIDDEN TESTS" not in text
    for cell in released.cells:
        if "nbgrader" in cell.metadata:
            jsonschema.validate(cell.metadata["nbgrader"], NBGRADER_V3)
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


def _grading_budget() -> dict[Path, str | None]:
    """Which chapters to grade for real: fastest first (by their committed run time) while
    the total stays within CLASSROOM_BUDGET_S seconds (default 45); all with CLASSROOM_FULL=1.
    Maps each chapter to None (grade it) or the reason to skip it."""
    budget, full = float(os.environ.get("CLASSROOM_BUDGET_S", 45)), os.environ.get("CLASSROOM_FULL") == "1"
    times = {p: _recorded_runtime(nbformat.read(p, as_version=4)) for p in CHAPTERS}
    plan, total = {}, 0.0
    for p in sorted(CHAPTERS, key=lambda q: (times[q] is None, times[q] or 0.0)):
        t = times[p]
        if full or (t is not None and total + t <= budget):
            plan[p], total = None, total + (t or 0.0)
        else:
            plan[p] = (f"{p.name} (committed run {t:.0f} s)" if t is not None else f"{p.name} (no run times)") + \
                f" is outside the grading budget of {budget:.0f} s; set CLASSROOM_FULL=1 to grade every chapter"
    return plan


GRADING_PLAN = _grading_budget()


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapter_grades_teacher_full_and_blank_zero(path, tmp_path):
    """The chapter itself, handed in as a submission, gets every point; its released
    version gets none (no check passes without the solution)."""
    if GRADING_PLAN[path]:
        pytest.skip(GRADING_PLAN[path])
    nb = nbformat.read(path, as_version=4)
    for student, version in (("teacher", nb), ("blank", classroom.release_notebook(nb, path.name))):
        (tmp_path / student).mkdir()
        nbformat.write(version, tmp_path / student / path.name)
    df = classroom.grade(tmp_path, tmp_path / "grades.csv", source_dir=path.parent, timeout=600)
    teacher, blank = df[df.student == "teacher"], df[df.student == "blank"]
    assert len(teacher) >= 1
    assert (teacher.points == teacher.max_points).all(), teacher[teacher.error != ""].to_dict("records")
    assert (blank.points == 0).all(), blank[blank.points > 0].to_dict("records")
