"""Teach with the book: nbgrader assignments from the chapters, grading, a student edition.

The chapters are the instructor (source) version of every assignment and already carry
nbgrader's markers: ``### BEGIN/END SOLUTION`` in cells tagged ``exercise-solution``,
asserts (and ``### BEGIN/END HIDDEN TESTS``) in the cells tagged ``exercise-check`` after
them, ``# points: N`` per check; written exercises are sphinx-exercise ``{exercise}`` and
``{solution}`` blocks. Releasing, autograding, feedback and scores are nbgrader's own
commands (the ``classroom`` extra); the student edition of the book is assembled here from
nbgrader's preprocessors, since no library does that for Jupyter Book::

    python -m helpers.classroom assignments COURSE_DIR [--chapters 1 4 ...]
    python -m helpers.classroom grade COURSE_DIR [--out scores.csv] [--force]
    python -m helpers.classroom student-book OUT_DIR [--book .] [--repository-url URL]

Bad input: one line on stderr, exit status 2; nbgrader failing or missing: exit status 1.
Grading runs the students' code with your permissions: use a container or a throwaway account.
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterable, Sequence

import nbformat
import pandas as pd
from markdown_it import MarkdownIt
from mdit_py_plugins.colon_fence import colon_fence_plugin

from helpers import REPO_ROOT
from helpers.prose import still_stated, stored_values

__all__ = ["SOLUTION_TAG", "CHECK_TAG", "exercise_labels", "solution_targets", "strip_solution_directives",
           "cell_role", "annotate", "nbgrader_source", "assignments", "grade", "student_book", "main"]

SOLUTION_TAG = "exercise-solution"
CHECK_TAG = "exercise-check"
_BEGIN_SOLUTION = re.compile(r"^\s*(?:#+|<!--)?\s*BEGIN SOLUTION\b")
_BEGIN_HIDDEN = re.compile(r"^\s*#+\s*BEGIN HIDDEN TESTS\b")
_RUBRIC = re.compile(r"\*\*Rubric \((\d+(?:\.\d+)?) points?\)\.?\*\*")
_POINTS = re.compile(r"^\s*#\s*points\s*[:=]\s*(\d+(?:\.\d+)?)\s*$", re.IGNORECASE | re.MULTILINE)
_DIRECTIVE = re.compile(r"^\{(?P<name>[^}\s]+)\}\s*(?P<args>.*)$")
_OPTION = re.compile(r"^\s*:(?P<key>[\w-]+):\s*(?P<value>.*?)\s*$")
_BAD_ID_CHARS = re.compile(r"[^A-Za-z0-9_-]+")
_MARKDOWN = MarkdownIt("commonmark").use(colon_fence_plugin)  # MyST fences: ``` and :::


def _directives(markdown: str, offset: int = 0) -> Iterable[tuple[str, str, str, int, int]]:
    """(name, arguments, body, first line, line after the end) of every MyST directive in
    ``markdown``, nested ones included, as markdown-it parses the fences (literal code blocks
    stay opaque)."""
    for token in _MARKDOWN.parse(markdown):
        m = _DIRECTIVE.match(token.info) if token.type in ("fence", "colon_fence") else None
        if m:
            start, end = offset + token.map[0], offset + token.map[1]
            yield m["name"], m["args"], token.content, start, end
            yield from _directives(token.content, start + 1)


def _options(body: str) -> dict[str, str]:
    """A directive's options, written ``:key: value`` or as a ``---`` YAML front block."""
    lines, opts = body.splitlines(), {}
    if lines and lines[0].strip() == "---":
        for line in lines[1:]:
            if line.strip() == "---":
                break
            key, _, value = line.partition(":")
            opts[key.strip()] = value.strip()
        return opts
    for line in lines:
        m = _OPTION.match(line)
        if not m:
            break
        opts[m["key"]] = m["value"]
    return opts


def exercise_labels(markdown: str) -> list[str]:
    """The ``:label:`` of every ``{exercise}`` (or ``{exercise-start}``) block in ``markdown``.

    Introduced in the appendix (instructor guide).
    """
    return [_options(body).get("label", "") for name, _, body, _, _ in _directives(markdown)
            if name in ("exercise", "exercise-start")]


def solution_targets(markdown: str) -> list[str]:
    """The exercise label named by every ``{solution}`` (or ``{solution-start}``) block.

    Introduced in the appendix (instructor guide).
    """
    return [(args.split() or [""])[0] for name, args, _, _, _ in _directives(markdown)
            if name in ("solution", "solution-start")]


def strip_solution_directives(markdown: str) -> str:
    """Remove every ``{solution}`` block (and ``{solution-start}`` ... ``{solution-end}``)
    from MyST markdown, leaving exercises, literal code blocks and other text as they are.

    Introduced in the appendix (instructor guide).
    """
    lines = markdown.splitlines()
    keep = [True] * len(lines)
    gate = None
    for name, _, _, start, end in _directives(markdown):
        if name == "solution" or (name == "solution-end" and gate is not None):
            first = start if name == "solution" else gate
            keep[first:end] = [False] * (end - first)
            gate = None
        elif name == "solution-start":
            gate = start
    if gate is not None:  # a solution-start without its end: drop to the end
        keep[gate:] = [False] * (len(lines) - gate)
    kept = [line for line, k in zip(lines, keep) if k]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip("\n")
    return text + ("\n" if markdown.endswith("\n") and text else "")


def _release(nb: nbformat.NotebookNode, name: str) -> nbformat.NotebookNode:
    """``nb`` (with nbgrader metadata) as nbgrader releases it, outputs aside: solution regions
    replaced by nbgrader's stubs, hidden tests removed. Broken markers raise ValueError."""
    _require_nbgrader()
    from nbgrader.preprocessors import ClearHiddenTests, ClearSolutions

    quiet = logging.getLogger(__name__)  # the error is raised in one line; no cell dump on stderr
    quiet.setLevel(logging.CRITICAL)
    nb = copy.deepcopy(nb)
    for i, cell in enumerate(nb.cells):
        one = nbformat.v4.new_notebook(cells=[cell], metadata=nb.metadata)
        try:
            for step in (ClearSolutions(log=quiet), ClearHiddenTests(log=quiet)):
                step.preprocess(one, {})
        except RuntimeError as exc:
            raise ValueError(f"{name}: cell {i}: {exc}") from None
        if "nbgrader" in cell.metadata:
            cell.source = cell.source.rstrip("\n")  # no blank tail where hidden tests were
    return nb


def _require_nbgrader() -> None:
    if importlib.util.find_spec("nbgrader") is None:
        raise RuntimeError('nbgrader is not installed: pip install -e ".[classroom]"')


def _tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def cell_role(cell) -> str | None:
    """'solution', 'check' or None for a source cell."""
    meta = cell.get("metadata", {}).get("nbgrader", {})
    src = cell.get("source", "")
    lines = src.split("\n")
    if cell.cell_type == "code":
        if SOLUTION_TAG in _tags(cell) or meta.get("solution") or any(_BEGIN_SOLUTION.match(s) for s in lines):
            return "solution"
        if CHECK_TAG in _tags(cell) or meta.get("grade") or any(_BEGIN_HIDDEN.match(s) for s in lines):
            return "check"
    elif cell.cell_type == "markdown" and any(_BEGIN_SOLUTION.match(s) for s in lines):
        return "solution"
    return None


def _points(cell) -> float | int:
    meta = cell.get("metadata", {}).get("nbgrader", {})
    if "points" in meta:
        return meta["points"]
    m = _POINTS.search(cell.get("source", ""))
    if not m:
        return 1
    value = float(m[1])
    return int(value) if value.is_integer() else value


def annotate(nb: nbformat.NotebookNode, name: str = "notebook") -> nbformat.NotebookNode:
    """A copy of ``nb`` whose exercise cells carry nbgrader (schema 3) metadata.

    Grade ids come from the exercise label above the cell (``ch01-ex2-solution``,
    ``ch01-ex2-check``); points from a ``# points: N`` line; markdown answers between
    BEGIN/END SOLUTION are graded by hand. ``name`` (the file) goes into error messages.

    Introduced in the appendix (instructor guide).
    """
    nb = copy.deepcopy(nb)
    stem = _BAD_ID_CHARS.sub("-", Path(name).stem) or "nb"
    label, used = f"{stem}-ex", set()
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            labels = [x for x in exercise_labels(cell.source) if x]
            if labels:
                label = _BAD_ID_CHARS.sub("-", labels[-1])
        role = cell_role(cell)
        if role is None:
            continue
        old = cell.metadata.get("nbgrader", {})
        grade_id = old.get("grade_id") or f"{label}-{role}"
        base, k = grade_id, 2
        while grade_id in used:
            grade_id, k = f"{base}-{k}", k + 1
        used.add(grade_id)
        if cell.cell_type == "markdown":
            meta = {"grade": True, "solution": True, "locked": False, "points": _points(cell)}
        elif role == "solution":
            meta = {"grade": False, "solution": True, "locked": False}
        else:
            meta = {"grade": True, "solution": False, "locked": True, "points": _points(cell)}
        meta.update(grade_id=grade_id, schema_version=3)
        cell.metadata["nbgrader"] = meta
    _release(nb, name)  # check the markers now, so that a broken cell is reported with its place
    return nb


def _clear(cell) -> None:
    if cell.cell_type == "code":
        cell.outputs = []
        cell.execution_count = None
    cell.metadata.pop("execution", None)


def _read(path: Path) -> nbformat.NotebookNode:
    try:
        return nbformat.read(path, as_version=4)
    except Exception as exc:  # nbformat raises several kinds for a broken file
        raise ValueError(f"{path}: not a readable notebook ({type(exc).__name__}: {exc})".split("\n")[0]) from exc


def nbgrader_source(nb: nbformat.NotebookNode, name: str = "notebook") -> nbformat.NotebookNode:
    """The chapter as an nbgrader source notebook: metadata added (:func:`annotate`), solutions
    and hidden tests kept for ``generate_assignment`` to remove, ``{solution}`` prose dropped
    (nbgrader would hand it out), outputs cleared. Every exercise whose solution carries a
    rubric ("**Rubric (N points).**") gets a manually graded answer cell of N points, holding
    the model answer for the grader, which the release replaces by "YOUR ANSWER HERE".

    Introduced in the appendix (instructor guide).
    """
    return _without_solution_prose(annotate(_with_answer_cells(nb), name), clear_all=True)


def _with_answer_cells(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of ``nb`` with a written-answer cell for each exercise graded by a rubric: before
    the cell that holds its ``{solution}``, or after it when the exercise is in the same cell."""
    nb, cells = copy.deepcopy(nb), []
    numbers = {}
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            cells.append(cell)
            continue
        directives = list(_directives(cell.source))
        for name, _, body, _, _ in directives:
            if name == "exercise":
                opts = _options(body)
                numbers[opts.get("label", "")] = opts.get("enumerator", "")
        after = []
        for name, args, body, _, _ in directives:
            rubric = _RUBRIC.search(body) if name == "solution" else None
            if rubric is None:
                continue
            label = (args.split() or [""])[0]
            answer = "\n".join(line for line in body.splitlines() if not _OPTION.match(line))
            points = float(rubric[1])
            new = nbformat.v4.new_markdown_cell(
                f"**Your answer to Exercise {numbers.get(label) or label}** (graded by hand,"
                f" {rubric[1]} points):\n\n<!-- BEGIN SOLUTION -->\n{answer.strip()}\n"
                "<!-- END SOLUTION -->\n",
                metadata={"nbgrader": {"grade_id": f"{_BAD_ID_CHARS.sub('-', label)}-answer",
                                       "points": int(points) if points.is_integer() else points}})
            (after if label in exercise_labels(cell.source) else cells).append(new)
        cells += [cell, *after]
    nb.cells = cells
    return nb


def _without_solution_prose(nb: nbformat.NotebookNode, clear_all: bool) -> nbformat.NotebookNode:
    """``nb`` without ``{solution}`` blocks (markdown cells left empty go, and the numbers a
    cell no longer states leave its ``glued`` list), outputs cleared in every cell or, unless
    ``clear_all``, in the exercise cells only."""
    values, cells = stored_values(nb), []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = strip_solution_directives(cell.source)
            if not cell.source.strip():
                continue
            if cell.metadata.get("glued"):
                cell.metadata["glued"] = still_stated(cell, values)
        if clear_all or "nbgrader" in cell.metadata:
            _clear(cell)
        cells.append(cell)
    nb.cells = cells
    return nb


_CONFIG = '''\
# nbgrader's settings for this course, written once by `python -m helpers.classroom assignments`.
c = get_config()  # noqa: F821 (nbgrader defines get_config)
c.CourseDirectory.course_id = "melanoma-detection"
c.Execute.timeout = 600  # seconds per cell: nbgrader's 30 is too short for image features on a CPU
'''
_LOG = "nbgrader.log"


def _chapters(chapters_dir: Path, wanted: Sequence[str] | None) -> list[Path]:
    """The chapters ``wanted`` names, in that order (all of ``chapters_dir`` if none)."""
    if not chapters_dir.is_dir():
        raise ValueError(f"{chapters_dir}: no such chapters folder")
    found = sorted(chapters_dir.glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise ValueError(f"{chapters_dir}: holds no chapter notebook (NN_name.ipynb)")
    keys = {k: p for p in found
            for k in (p.name, p.stem, p.name[:2], str(int(p.name[:2])), _assignment_id(p))}
    picked: list[Path] = []
    for w in wanted or [p.name for p in found]:
        path = keys.get(Path(w.strip()).name)
        if path is None:
            raise ValueError(f"unknown chapter '{w}': give a number such as 4 or a name such as {found[0].stem}")
        if path not in picked:
            picked.append(path)
    return picked


def _assignment_id(chapter: Path) -> str:
    """nbgrader's assignment for a chapter: ``ch04`` for ``04_image_formats.ipynb``."""
    return f"ch{chapter.name[:2]}"


def _nbgrader(course: Path, *args: str) -> subprocess.CompletedProcess:
    """Run this Python's ``nbgrader ARGS`` in the course folder, logging to COURSE/nbgrader.log."""
    _require_nbgrader()
    env = dict(os.environ)  # nbgrader runs the `alembic` command that sits beside this Python
    env["PATH"] = os.pathsep.join(p for p in (str(Path(sys.executable).parent), env.get("PATH")) if p)
    done = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, env=env,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL)
    with open(course / _LOG, "a", encoding="utf-8") as log:
        log.write(f"$ nbgrader {' '.join(args)}\n{done.stdout}{done.stderr}\n")
    return done


def _failure(done: subprocess.CompletedProcess, course: Path) -> str:
    """One line on a failed nbgrader run: the command, its error and where its log is."""
    lines = [line.strip() for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    raised = [line for line in lines if re.match(r"[\w.]*(Error|Exception)\b.*:", line)]
    why = (raised[-1:] or [line for line in lines if "[ERROR]" in line][:1] or lines[-1:] or ["no output"])[0]
    students = sorted(set(re.findall(r"for student '([^']+)'", done.stdout + done.stderr)))
    whose = f" for {', '.join(students)}" if students else ""
    return (f"nbgrader {' '.join(done.args[3:])} failed{whose} (exit status {done.returncode}): "
            f"{why[:300]} (log: {course / _LOG})")


def _run_or_raise(course: Path, *args: str) -> None:
    done = _nbgrader(course, *args)
    if done.returncode:
        raise RuntimeError(_failure(done, course))


def assignments(course_dir: os.PathLike | str, chapters: Sequence[str] | None = None,
                chapters_dir: os.PathLike | str = REPO_ROOT / "chapters") -> list[str]:
    """Lay out an nbgrader course in ``course_dir`` from the chapters and release them.

    Writes ``nbgrader_config.py`` (once; edit it freely) and each chapter's
    :func:`nbgrader_source` as ``source/chNN/NN_name.ipynb``, then runs ``nbgrader
    generate_assignment``: student notebooks in ``release/chNN/``, points in ``gradebook.db``.
    ``chapters``: ``4``, ``04``, ``ch04`` or ``04_image_formats`` (default: all). Returns the
    assignment names.

    Introduced in the appendix (instructor guide).
    """
    course = Path(course_dir)
    paths = _chapters(Path(chapters_dir), chapters)
    if course.exists() and not course.is_dir():
        raise ValueError(f"{course}: not a folder")
    course.mkdir(parents=True, exist_ok=True)
    if not (course / "nbgrader_config.py").exists():
        (course / "nbgrader_config.py").write_text(_CONFIG, encoding="utf-8")
    names = []
    for path in paths:
        names.append(_assignment_id(path))
        (course / "source" / names[-1]).mkdir(parents=True, exist_ok=True)
        nbformat.write(nbgrader_source(_read(path), path.name), course / "source" / names[-1] / path.name)
    every = sorted(p.name for p in (course / "source").iterdir() if p.is_dir() and not p.name.startswith("."))
    # one nbgrader run for the whole course when it holds only these (nbgrader starts slowly)
    for pattern in ["*"] if every == sorted(names) else names:
        _run_or_raise(course, "generate_assignment", pattern, "--force")
    return names


def grade(course_dir: os.PathLike | str, out_csv: os.PathLike | str | None = None,
          force: bool = False) -> pd.DataFrame:
    """Autograde ``COURSE/submitted/<student>/chNN/``, write feedback, export and return the scores.

    Runs ``nbgrader autograde`` (fresh kernel, hidden tests restored, a time limit per cell),
    ``generate_feedback`` (``COURSE/feedback/``) and ``export`` to ``out_csv`` (default
    ``COURSE/scores.csv``, nbgrader's columns). Graded submissions are skipped unless changed
    or ``force``; one nbgrader cannot grade is reported in a notice and scores 0.

    Introduced in the appendix (instructor guide).
    """
    course = Path(course_dir)
    if not course.is_dir():
        raise ValueError(f"{course}: no such course folder")
    if not (course / "nbgrader_config.py").is_file():
        raise ValueError(f"{course}: not a course folder (no nbgrader_config.py); run the assignments command first")
    handed_in = sorted({p.name for p in course.glob("submitted/*/*") if p.is_dir()})
    for name in handed_in:
        if not (course / "source" / name).is_dir():
            print(f"notice: submitted/*/{name} is not an assignment of this course; skipped", file=sys.stderr)
    handed_in = [name for name in handed_in if (course / "source" / name).is_dir()]
    if not handed_in:
        raise ValueError(f"{course / 'submitted'}: holds no submitted/<student>/<assignment>/ folder")
    again = ["--force"] if force else []
    for name in handed_in:
        done = _nbgrader(course, "autograde", name, *again)
        if done.returncode:
            print(f"notice: {_failure(done, course)}", file=sys.stderr)
    _run_or_raise(course, "generate_feedback", "*", *again)
    out = Path(out_csv) if out_csv is not None else course / "scores.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    _run_or_raise(course, "export", f"--to={out.resolve()}")
    return pd.read_csv(out)


_STUDENT_HEADER = "# Student edition, written by `python -m helpers.classroom student-book`.\n"
# Left out of the student edition (it keeps helpers/ and data_samples/, so that it runs);
# notebooks/ is the reader edition, solutions included.
_BOOK_SKIP = {".git", ".venv", "_build", "tests", "benchmarks", ".ci", "notebooks",
              ".pytest_cache", ".hypothesis", "runs", "cache", "__pycache__", ".ipynb_checkpoints"}


def _student_notebook(nb: nbformat.NotebookNode, name: str) -> nbformat.NotebookNode:
    """A chapter as the student edition shows it: released by nbgrader's own preprocessors
    (:func:`_release`), ``{solution}`` blocks removed, outputs cleared in exercise cells only,
    so that every other cell keeps its committed figures and glued numbers."""
    return _without_solution_prose(_release(annotate(nb, name), name), clear_all=False)


def _glued(nb) -> set[str]:
    return {o.get("metadata", {}).get("scrapbook", {}).get("name")
            for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])} - {None}


def student_book(out_dir: os.PathLike | str, book_dir: os.PathLike | str = REPO_ROOT,
                 repository_url: str | None = None) -> Path:
    """Copy the book to ``out_dir`` as its student edition; build it with ``jupyter-book build``.

    Notebooks lose solutions and hidden tests but keep the outputs of ordinary cells;
    ``{solution}`` blocks go from notebooks and pages; the copied ``_config.yml`` turns
    execution off, hides solutions and may point the launch buttons at ``repository_url``.
    Raises ValueError if visible prose shows a value glued only by a solution cell.

    Introduced in the appendix (instructor guide).
    """
    import yaml

    book, out = Path(book_dir).resolve(), Path(out_dir).resolve()
    config = book / "_config.yml"
    if not config.is_file() or not (book / "_toc.yml").is_file():
        raise ValueError(f"{book}: not a Jupyter Book (no _config.yml and _toc.yml)")
    if out == book or out in book.parents:
        raise ValueError(f"{out}: the student edition cannot replace or contain the book")
    if book in out.parents and not out.relative_to(book).parts[0].startswith("_build"):
        raise ValueError(f"{out}: write the student edition outside the book or under _build/")
    if out.exists() and any(out.iterdir()):
        marker = out / "_config.yml"
        if not (marker.is_file() and marker.read_text(encoding="utf-8").startswith(_STUDENT_HEADER)):
            raise ValueError(f"{out}: exists and is not a student edition; give an empty or new folder")
        shutil.rmtree(out)

    def ignore(folder: str, names: list[str]) -> set[str]:
        skip = {n for n in names if n in _BOOK_SKIP or n.endswith(".egg-info")}
        if Path(folder).resolve() == book:
            skip |= {n for n in names if n.startswith("_build")}
        return skip

    shutil.copytree(book, out, ignore=ignore, dirs_exist_ok=True)
    for path in sorted(out.rglob("*.ipynb")):
        nb = _read(path)
        released = _student_notebook(nb, path.relative_to(out).as_posix())
        shown = {k.partition(":")[0] for c in released.cells if c.cell_type == "markdown"
                 for k in c.metadata.get("glued", [])}
        missing = sorted(shown - _glued(released))
        hidden = [k for k in missing if k in _glued(nb)]
        if hidden:
            raise ValueError(f"{path.relative_to(out)}: visible text shows glued value "
                             f"'{hidden[0]}' that only an exercise cell computes")
        nbformat.write(released, path)
    for path in sorted(out.rglob("*.md")):
        text = path.read_text(encoding="utf-8")
        if solution_targets(text):
            path.write_text(strip_solution_directives(text), encoding="utf-8")
    cfg = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    cfg["title"] = f"{cfg.get('title', 'Book')} (student edition)"
    cfg.setdefault("execute", {})["execute_notebooks"] = "off"
    cfg.setdefault("sphinx", {}).setdefault("config", {})["hide_solutions"] = True
    if repository_url:
        cfg.setdefault("repository", {})["url"] = repository_url
    (out / "_config.yml").write_text(
        _STUDENT_HEADER + yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m helpers.classroom assignments|grade|student-book ...``.

    Introduced in the appendix (instructor guide).
    """
    parser = argparse.ArgumentParser(prog="python -m helpers.classroom", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("assignments", help="lay out an nbgrader course from the chapters and release them")
    p.add_argument("course_dir")
    p.add_argument("--chapters", nargs="+", default=None, help="numbers or names (default: every chapter)")
    p = sub.add_parser("grade", help="autograde COURSE_DIR/submitted/, write feedback, export the scores")
    p.add_argument("course_dir")
    p.add_argument("--out", default=None, help="the scores CSV (default: COURSE_DIR/scores.csv)")
    p.add_argument("--force", action="store_true", help="grade again what was graded before")
    p = sub.add_parser("student-book", help="copy the book as its student edition")
    p.add_argument("out_dir")
    p.add_argument("--book", default=str(REPO_ROOT), help="the book's folder (default: this repository)")
    p.add_argument("--repository-url", default=None, help="repository behind the launch buttons")
    args = parser.parse_args(argv)
    try:
        if args.command == "assignments":
            names = assignments(args.course_dir, args.chapters)
            print(f"released {', '.join(names)} into {Path(args.course_dir) / 'release'}")
        elif args.command == "grade":
            scores = grade(args.course_dir, args.out, args.force)
            print(f"{len(scores)} score(s) of {scores['student_id'].nunique()} student(s) in "
                  f"{args.out or Path(args.course_dir) / 'scores.csv'}; feedback in {Path(args.course_dir) / 'feedback'}")
        else:
            out = student_book(args.out_dir, args.book, args.repository_url)
            print(f"student edition in {out}; build: jupyter-book build {args.out_dir} -W --keep-going")
    except (ValueError, OSError) as exc:
        print(f"error: {exc}".split("\n")[0], file=sys.stderr)
        return 2
    except RuntimeError as exc:
        print(f"error: {exc}".split("\n")[0], file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
