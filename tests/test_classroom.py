"""Tests for helpers/classroom.py: the chapters' exercise markup, the nbgrader course laid out
from them and graded by the real nbgrader, and the student edition of the book.

Grading a real chapter executes it twice (the instructor's copy and a blank released copy),
so only the fastest chapters whose committed run times add up to CLASSROOM_BUDGET_S seconds
(default 45; the fastest chapter is always graded) are graded; CLASSROOM_FULL=1 grades all.
"""
from __future__ import annotations

import copy
import datetime as dt
import os
import re
import shutil
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
SECRETS = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS", "{solution}")


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


def hand_in(course: Path, student: str, assignment: str, nb) -> None:
    """Put a notebook where nbgrader looks for submissions."""
    folder = course / "submitted" / student / assignment
    folder.mkdir(parents=True, exist_ok=True)
    name = nb.name if isinstance(nb, Path) else "01_tiny.ipynb"
    if isinstance(nb, Path):
        shutil.copy(nb, folder / name)
    else:
        nbformat.write(nb, folder / name)


def errors_in(notebook: Path) -> list[str]:
    """``ename: evalue`` of every error output of an (autograded) notebook, for messages."""
    if not notebook.is_file():
        return [f"{notebook.name} was not autograded (see nbgrader.log)"]
    nb = nbformat.read(notebook, as_version=4)
    return [f"{o.ename}: {o.evalue}"[:200] for c in nb.cells if c.cell_type == "code"
            for o in c.outputs if o.output_type == "error"]


# ------------------------------------------------------------------ exercise markup


def test_annotate_writes_nbgrader_metadata_and_reports_broken_markers():
    nb = classroom.annotate(tiny_source(), "tiny.ipynb")
    meta = {c.metadata["nbgrader"]["grade_id"]: c.metadata["nbgrader"] for c in nb.cells
            if "nbgrader" in c.metadata}
    solution = {"grade": False, "solution": True, "locked": False, "schema_version": 3}
    check = {"grade": True, "solution": False, "locked": True, "schema_version": 3}
    assert meta == {
        "tiny-ex1-solution": {**solution, "grade_id": "tiny-ex1-solution"},
        "tiny-ex1-check": {**check, "points": 1, "grade_id": "tiny-ex1-check"},
        "tiny-ex2-solution": {**solution, "grade_id": "tiny-ex2-solution"},
        "tiny-ex2-check": {**check, "points": 2, "grade_id": "tiny-ex2-check"},
        "tiny-ex3-solution": {**solution, "grade_id": "tiny-ex3-solution"},
        "tiny-ex3-check": {**check, "points": 1, "grade_id": "tiny-ex3-check"},
    }
    for m in meta.values():
        jsonschema.validate(m, NBGRADER_V3)
    broken = tiny_source()
    broken.cells[3].source = "### BEGIN SOLUTION\nanswer = 42"
    with pytest.raises(ValueError, match=r"broken.ipynb: cell 3: no end solution statement found"):
        classroom.annotate(broken, "broken.ipynb")


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


def test_nbgrader_source_keeps_solutions_and_drops_solution_prose():
    nb = classroom.nbgrader_source(tiny_source(), "tiny.ipynb")
    text = nbformat.writes(nb)
    assert "answer = 6 * 7" in text and "assert answer == 42" in text
    assert "SECRET-PROSE" not in text and "{solution}" not in text
    assert all(c.outputs == [] and c.execution_count is None for c in nb.cells if c.cell_type == "code")
    assert len(nb.cells) == len(tiny_source().cells) - 1  # the solution-only markdown cell is gone


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapter_exercises_are_marked_up(path):
    nb = nbformat.read(path, as_version=4)
    md = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    labels = classroom.exercise_labels(md)
    assert len(labels) >= 3, f"{path.name}: {len(labels)} exercises"
    assert len(set(labels)) == len(labels) and all(labels)
    # a solution is a {solution} block, or for a code exercise its exercise-solution cell
    annotated = classroom.annotate(nb, path.name)
    coded = {c.metadata["nbgrader"]["grade_id"].removesuffix("-solution") for c in annotated.cells
             if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("solution")}
    missing = sorted(set(labels) - set(classroom.solution_targets(md)) - coded)
    assert not missing, f"{path.name}: no {{solution}} block or solution cell for {missing}"
    roles = [classroom.cell_role(c) for c in nb.cells]
    for i, role in enumerate(roles):  # every solution cell is followed by its check
        if role == "solution" and nb.cells[i].cell_type == "code":
            assert roles[i + 1] == "check", f"{path.name}: cell {i + 1} should be an exercise-check cell"
    for cell in annotated.cells:
        if "nbgrader" in cell.metadata:
            jsonschema.validate(cell.metadata["nbgrader"], NBGRADER_V3)


def _stated_points(nb) -> dict[str, float]:
    """Each exercise's points as its text states them: "(N points)" after the options."""
    out = {}
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for m in re.finditer(r"```\{exercise\}\n:label: (\S+)\n(?::enumerator: \S+\n)?\n?\((\d+) points?\)",
                                 cell.source):
                out[m[1]] = float(m[2])
    return out


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_written_answers_are_manually_graded_cells(path):
    """Every exercise's points are its autograded checks plus its hand-graded written answer."""
    nb = nbformat.read(path, as_version=4)
    source = classroom.nbgrader_source(nb, path.name)
    got: dict[str, float] = {}
    for cell in source.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("grade"):
            jsonschema.validate(meta, NBGRADER_V3)
            label = re.sub(r"-(check|answer)(-\d+)?$", "", meta["grade_id"])
            got[label] = got.get(label, 0) + meta["points"]
            if cell.cell_type == "markdown":  # nbgrader's "manually graded answer"
                assert meta["solution"] and not meta["locked"], meta["grade_id"]
                assert "<!-- BEGIN SOLUTION -->" in cell.source and "Rubric" in cell.source
    assert got == _stated_points(nb), f"{path.name}: points by exercise differ from the text"


def test_chapter_9_written_answers_carry_their_rubric_points():
    path = REPO_ROOT / "chapters" / "09_evaluating_melanoma_detection.ipynb"
    source = classroom.nbgrader_source(nbformat.read(path, as_version=4), path.name)
    answers = {c.metadata["nbgrader"]["grade_id"]: c.metadata["nbgrader"]["points"] for c in source.cells
               if c.cell_type == "markdown" and c.metadata.get("nbgrader", {}).get("grade")}
    assert answers == {"ch09-ex1-answer": 6, "ch09-ex3-answer": 2, "ch09-ex4-answer": 5, "ch09-ex5-answer": 3}
    from nbgrader.preprocessors import ClearSolutions  # what nbgrader's release does to them

    released, _ = ClearSolutions().preprocess(copy.deepcopy(source), {})
    stubs = [c.source for c in released.cells if c.metadata.get("nbgrader", {}).get("grade_id") in answers]
    assert len(stubs) == 4 and all("YOUR ANSWER HERE" in s and "Rubric" not in s for s in stubs)


# ------------------------------------------------------------------ nbgrader, on a tiny chapter


def test_tiny_course_released_and_graded_by_nbgrader(tmp_path, capsys):
    chapters, course = tmp_path / "chapters", tmp_path / "course"
    chapters.mkdir()
    nbformat.write(tiny_source(), chapters / "01_tiny.ipynb")
    assert classroom.assignments(course, chapters_dir=chapters) == ["ch01"]
    assert (course / "nbgrader_config.py").is_file() and (course / "gradebook.db").is_file()
    released = nbformat.read(course / "release" / "ch01" / "01_tiny.ipynb", as_version=4)
    text = nbformat.writes(released)
    for secret in ("6 * 7", "return 2 * x", "math.sqrt(BASE)", "answer == 42", "double(21)", "SECRET-PROSE",
                   *SECRETS):
        assert secret not in text, secret
    codes = [c for c in released.cells if c.cell_type == "code"]
    assert codes[1].source == "# YOUR CODE HERE\nraise NotImplementedError()\nprint(answer)"
    assert 'def double(x):\n    """Twice x."""\n    # YOUR CODE HERE\n    raise NotImplementedError()' in codes[3].source
    assert codes[2].source.strip() == "assert isinstance(answer, int)"  # visible assert kept

    hand_in(course, "instructor", "ch01", course / "source" / "ch01" / "01_tiny.ipynb")
    hand_in(course, "blank", "ch01", released)
    half = copy.deepcopy(released)
    set_solution(half, "tiny-ex1-solution", "answer = 41  # passes the visible assert only")
    set_solution(half, "tiny-ex2-solution", "return x + x")
    set_solution(half, "tiny-ex3-solution", "root = BASE / 2")
    for cell in half.cells:  # emptying a check cell changes nothing: nbgrader restores it
        if cell.metadata.get("nbgrader", {}).get("grade_id") == "tiny-ex1-check":
            cell.source = "pass"
    hand_in(course, "half", "ch01", half)
    crash = copy.deepcopy(released)
    set_solution(crash, "tiny-ex1-solution", "answer = 42")
    set_solution(crash, "tiny-ex2-solution", "import os\n    os._exit(1)")  # check 2 kills the kernel
    hand_in(course, "crash", "ch01", crash)
    capsys.readouterr()

    scores = classroom.grade(course, tmp_path / "scores.csv")
    notice = capsys.readouterr().err
    assert "notice: nbgrader autograde ch01 failed for crash " in notice and "Kernel died" in notice, notice
    assert pd.read_csv(tmp_path / "scores.csv").shape == scores.shape
    assert sorted(scores.student_id) == ["blank", "crash", "half", "instructor"]
    assert (scores.assignment == "ch01").all() and (scores.max_score == 4).all()
    got = scores.set_index("student_id").score.to_dict()
    assert got == {"instructor": 4, "blank": 0, "half": 2, "crash": 0}, \
        {s: errors_in(course / "autograded" / s / "ch01" / "01_tiny.ipynb") for s in got}
    assert (course / "feedback" / "half" / "ch01" / "01_tiny.html").is_file()


def test_cli_bad_input_exits_2(tmp_path, capsys):
    cases = [(["grade", str(tmp_path / "nope")], "nope"),
             (["grade", str(tmp_path)], "nbgrader_config.py"),
             (["assignments", str(tmp_path / "course"), "--chapters", "1", "99"], "'99'"),
             (["student-book", str(REPO_ROOT)], str(REPO_ROOT))]
    for argv, named in cases:
        capsys.readouterr()
        assert classroom.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and named in err, (argv, err)
    assert not (tmp_path / "course").exists()  # the unknown chapter stopped it before writing


# ------------------------------------------------------------------ nbgrader, on the real chapters


def _recorded_runtime(nb) -> float | None:
    """Seconds the committed run spent in the chapter's cells after its set-up cell (the cell
    after ``parameters``, whose first imports take as long as the disk cache makes them)."""
    cells = [c for c in nb.cells if c.cell_type == "code"]
    params = [i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", [])]
    total = 0.0
    for cell in cells[params[0] + 2:] if params else cells:
        stamps = cell.metadata.get("execution", {})
        try:
            start = dt.datetime.fromisoformat(stamps["iopub.execute_input"].replace("Z", "+00:00"))
            end = dt.datetime.fromisoformat(stamps["shell.execute_reply"].replace("Z", "+00:00"))
        except (KeyError, ValueError):
            return None
        total += (end - start).total_seconds()
    return total


def _grading_budget() -> dict[Path, str | None]:
    """Which chapters to grade for real: the fastest (by its committed run time) and the next
    fastest while the total stays within CLASSROOM_BUDGET_S seconds (default 45); all with
    CLASSROOM_FULL=1. Maps each chapter to None (grade it) or the reason to skip it."""
    budget, full = float(os.environ.get("CLASSROOM_BUDGET_S", 45)), os.environ.get("CLASSROOM_FULL") == "1"
    times = {p: _recorded_runtime(nbformat.read(p, as_version=4)) for p in CHAPTERS}
    plan, total = {}, 0.0
    for p in sorted(CHAPTERS, key=lambda q: (times[q] is None, times[q] or 0.0)):
        t = times[p]
        if full or not plan or (t is not None and total + t <= budget):
            plan[p], total = None, total + (t or 0.0)
        else:
            plan[p] = (f"{p.name} (committed run {t:.0f} s)" if t is not None else f"{p.name} (no run times)") + \
                f" is outside the grading budget of {budget:.0f} s; set CLASSROOM_FULL=1 to grade every chapter"
    return plan


GRADING_PLAN = _grading_budget()


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    """An nbgrader course of every chapter, laid out by the command line."""
    root = tmp_path_factory.mktemp("classroom") / "course"
    assert classroom.main(["assignments", str(root)]) == 0
    return root


@pytest.fixture(scope="module")
def scores(course) -> pd.DataFrame:
    """Two submissions of every chapter in the grading plan, graded by nbgrader: the instructor's
    source notebook and the released notebook as a student who did nothing hands it in."""
    for path in CHAPTERS:
        if GRADING_PLAN[path] is None:
            name = f"ch{path.name[:2]}"
            hand_in(course, "instructor", name, course / "source" / name / path.name)
            hand_in(course, "blank", name, course / "release" / name / path.name)
    assert classroom.main(["grade", str(course), "--out", str(course / "exported" / "scores.csv")]) == 0
    return pd.read_csv(course / "exported" / "scores.csv")


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_released_chapter_holds_no_solution(path, course):
    name = f"ch{path.name[:2]}"
    released = nbformat.read(course / "release" / name / path.name, as_version=4)
    text = "\n".join(c.source for c in released.cells)
    for secret in SECRETS:
        assert secret not in text, f"{path.name}: '{secret}' in the released notebook"
    source = nbformat.read(path, as_version=4)
    released_lines = {line.strip() for line in text.split("\n")}
    leaked = [line for line in solution_lines(source) - other_lines(source) if line in released_lines]
    assert not leaked, f"{path.name}: solution lines survive the release: {leaked[:3]}"
    graded = [c.metadata["nbgrader"] for c in released.cells
              if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("grade")]
    stated = [int(m) for c in source.cells if "exercise-check" in c.metadata.get("tags", [])
              for m in re.findall(r"^# points: (\d+)", c.source, re.MULTILINE)]
    assert sorted(g["points"] for g in graded) == sorted(stated) and all(g["locked"] for g in graded)
    stubs = sum(c.source.count("raise NotImplementedError()") for c in released.cells)
    assert stubs == sum(classroom.cell_role(c) == "solution" for c in source.cells)
    assert all(c.outputs == [] for c in released.cells if c.cell_type == "code")


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapter_grades_instructor_full_and_blank_zero(path, course, scores):
    """The chapter's source, handed in, gets every point; its released copy, handed in
    unchanged, gets none (no check passes without the solution)."""
    if GRADING_PLAN[path]:
        pytest.skip(GRADING_PLAN[path])
    name = f"ch{path.name[:2]}"
    mine = scores[scores.assignment == name].set_index("student_id")
    why = {s: errors_in(course / "autograded" / s / name / path.name) for s in ("instructor", "blank")}
    released = nbformat.read(course / "release" / name / path.name, as_version=4)
    by_hand = sum(c.metadata["nbgrader"]["points"] for c in released.cells
                  if c.cell_type == "markdown" and c.metadata.get("nbgrader", {}).get("grade"))
    assert mine.loc["instructor", "max_score"] > by_hand  # the written answers await the grader
    assert mine.loc["instructor", "score"] == mine.loc["instructor", "max_score"] - by_hand, why["instructor"]
    assert mine.loc["blank", "score"] == 0, why["blank"]


def test_scores_csv_has_one_row_per_student_and_assignment(scores):
    assert {"assignment", "student_id", "score", "max_score"} <= set(scores.columns)
    assert len(scores) == 2 * len(CHAPTERS)
    assert not scores.duplicated(["assignment", "student_id"]).any()
    assert set(scores.assignment) == {f"ch{p.name[:2]}" for p in CHAPTERS}
    assert (scores.max_score > 0).all() and (scores.score <= scores.max_score).all()


# ------------------------------------------------------------------ the student edition


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
        text = "\n".join(c.source for c in nb.cells)
        assert not any(s in text for s in SECRETS), path.name
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
