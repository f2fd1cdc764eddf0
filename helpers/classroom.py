"""Teach with the book: release student notebooks, build a student edition, grade submissions.

The chapters are the *source* (instructor) version of every assignment. Their
exercises follow two conventions:

* in markdown, sphinx-exercise blocks ``{exercise}`` with ``:label: chNN-exK``
  and ``{solution} chNN-exK`` (the student edition drops the solutions);
* in code, a cell tagged ``exercise-solution`` whose answer sits between
  ``### BEGIN SOLUTION`` and ``### END SOLUTION``, followed by a cell tagged
  ``exercise-check`` whose asserts grade it; the part of the check between
  ``### BEGIN HIDDEN TESTS`` and ``### END HIDDEN TESTS`` is kept from students.
  A ``# points: N`` line in a check cell makes it worth N points (default 1).

These are nbgrader's markers, and the cell metadata written here is nbgrader's
schema version 3, so the same chapters also work with ``nbgrader
generate_assignment`` (see :func:`nbgrader_source`).

Command line (bad input: one line on stderr, exit status 2)::

    python -m helpers.classroom release SRC OUT           # student notebooks
    python -m helpers.classroom grade SUBMISSIONS OUT.csv [--source chapters] [--timeout 60]
    python -m helpers.classroom student-book OUT_DIR [--book .] [--repository-url URL]
    python -m helpers.classroom nbgrader-source SRC OUT   # for nbgrader generate_assignment

Grading runs the students' code: run it in a container or a throwaway account.
The kernel gets a ``sitecustomize`` that refuses network connections other
than to the local machine (a guard against accidents, not a sandbox).
"""
from __future__ import annotations

import argparse
import copy
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import nbformat
import pandas as pd
from tqdm.std import tqdm

from helpers import REPO_ROOT

__all__ = [
    "SOLUTION_TAG",
    "CHECK_TAG",
    "exercise_labels",
    "solution_targets",
    "strip_solution_directives",
    "annotate",
    "release_notebook",
    "release",
    "nbgrader_source",
    "student_book",
    "grade",
    "main",
]

SOLUTION_TAG = "exercise-solution"
CHECK_TAG = "exercise-check"
#: nbgrader's stubs (ClearSolutions.code_stub["python"] and .text_stub).
CODE_STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")
TEXT_STUB = ("YOUR ANSWER HERE",)
CSV_COLUMNS = ["student", "notebook", "check", "points", "max_points", "error"]

_BEGIN_SOLUTION = re.compile(r"^\s*(?:#+|<!--)?\s*BEGIN SOLUTION\b")
_END_SOLUTION = re.compile(r"^\s*(?:#+|<!--)?\s*END SOLUTION\b")
_BEGIN_HIDDEN = re.compile(r"^\s*#+\s*BEGIN HIDDEN TESTS\b")
_END_HIDDEN = re.compile(r"^\s*#+\s*END HIDDEN TESTS\b")
_POINTS = re.compile(r"^\s*#\s*points\s*[:=]\s*(\d+(?:\.\d+)?)\s*$", re.IGNORECASE | re.MULTILINE)
_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,}|:{3,})\s*(?P<info>.*?)\s*$")
_DIRECTIVE = re.compile(r"^\{(?P<name>[^}\s]+)\}\s*(?P<args>.*)$")
_OPTION = re.compile(r"^\s*:(?P<key>[\w-]+):\s*(?P<value>.*?)\s*$")
_GLUE_ROLE = re.compile(r"\{glue(?::[\w-]*)?\}`(?P<key>[^`]+)`")
_GLUE_DIRECTIVE = re.compile(r"^\s*(?:`{3,}|:{3,})\{glue(?::[\w-]*)?\}\s+(?P<key>\S+)", re.MULTILINE)
_BAD_ID_CHARS = re.compile(r"[^A-Za-z0-9_-]+")


# --------------------------------------------------------------------- markdown
@dataclass
class _Block:
    """A fenced block in MyST markdown: a directive (``{name}``) or a literal code block."""

    start: int            # index of the opening line
    end: int              # index of the closing line (len(lines) - 1 when unclosed)
    name: str | None      # directive name, None for a literal block
    args: str
    body: list[str] = field(default_factory=list)


def _blocks(lines: list[str]) -> list[_Block]:
    """The top-level fenced blocks of ``lines`` (CommonMark rule: a fence closes at the
    first line made only of the same character, at least as many times)."""
    out, i = [], 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        char, length = m["fence"][0], len(m["fence"])
        if char == "`" and "`" in m["info"]:  # ``` inside the info string: inline code, not a fence
            i += 1
            continue
        j = i + 1
        closing = re.compile(rf"^\s*{re.escape(char)}{{{length},}}\s*$")
        while j < len(lines) and not closing.match(lines[j]):
            j += 1
        d = _DIRECTIVE.match(m["info"])
        out.append(_Block(i, min(j, len(lines) - 1), d["name"] if d else None,
                          d["args"] if d else "", lines[i + 1:j]))
        i = j + 1
    return out


def _walk(lines: list[str]) -> Iterable[_Block]:
    """Every directive block in ``lines``, nested ones included (literal blocks are opaque)."""
    for b in _blocks(lines):
        if b.name is not None:
            yield b
            yield from _walk(b.body)


def _options(body: list[str]) -> dict[str, str]:
    """A directive's options, written ``:key: value`` or as a ``---`` YAML front block."""
    opts: dict[str, str] = {}
    if body and body[0].strip() == "---":
        for line in body[1:]:
            if line.strip() == "---":
                break
            key, _, value = line.partition(":")
            opts[key.strip()] = value.strip()
        return opts
    for line in body:
        m = _OPTION.match(line)
        if not m:
            break
        opts[m["key"]] = m["value"]
    return opts


def exercise_labels(markdown: str) -> list[str]:
    """The ``:label:`` of every ``{exercise}`` (or ``{exercise-start}``) block in ``markdown``.

    Introduced in the appendix (instructor guide).
    """
    return [_options(b.body).get("label", "") for b in _walk(markdown.splitlines())
            if b.name in ("exercise", "exercise-start")]


def solution_targets(markdown: str) -> list[str]:
    """The exercise label named by every ``{solution}`` (or ``{solution-start}``) block.

    Introduced in the appendix (instructor guide).
    """
    return [b.args.split()[0] if b.args.split() else ""
            for b in _walk(markdown.splitlines()) if b.name in ("solution", "solution-start")]


def strip_solution_directives(markdown: str) -> str:
    """Remove every ``{solution}`` block (and ``{solution-start}`` ... ``{solution-end}``)
    from MyST markdown, leaving exercises, literal code blocks and other text as they are.

    Introduced in the appendix (instructor guide).
    """
    lines = markdown.splitlines()
    keep = [True] * len(lines)

    def visit(offset: int, part: list[str]) -> None:
        gate_start: int | None = None
        for b in _blocks(part):
            if b.name == "solution":
                keep[offset + b.start: offset + b.end + 1] = [False] * (b.end - b.start + 1)
            elif b.name == "solution-start":
                gate_start = offset + b.start
            elif b.name == "solution-end" and gate_start is not None:
                keep[gate_start: offset + b.end + 1] = [False] * (offset + b.end + 1 - gate_start)
                gate_start = None
            elif b.name is not None:
                visit(offset + b.start + 1, b.body)
        if gate_start is not None:  # a solution-start without its end: drop to the end
            keep[gate_start: offset + len(part)] = [False] * (offset + len(part) - gate_start)

    visit(0, lines)
    kept = [line for line, k in zip(lines, keep) if k]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip("\n")
    return text + ("\n" if markdown.endswith("\n") and text else "")


def _glue_keys(markdown: str) -> set[str]:
    """Keys of this page's glued values shown by ``{glue:...}`` roles and directives."""
    keys = {m["key"].split(":")[0].strip() for m in _GLUE_ROLE.finditer(markdown)}
    keys |= {m["key"] for m in _GLUE_DIRECTIVE.finditer(markdown)}
    return {k for k in keys if "::" not in k}  # "doc::key" points at another page


# --------------------------------------------------------------------- cells
def _replace_regions(source: str, begin: re.Pattern, end: re.Pattern,
                     stub: Sequence[str], where: str) -> tuple[str, int]:
    """Replace each region between a ``begin`` and an ``end`` line by ``stub`` (indented
    like the begin line); return the new source and the number of regions."""
    out: list[str] = []
    inside, n = False, 0
    for line in source.split("\n"):
        if begin.match(line):
            if inside:
                raise ValueError(f"{where}: nested '{line.strip()}'")
            inside, n = True, n + 1
            indent = re.match(r"\s*", line).group(0)
            out.extend(indent + s for s in stub)
        elif end.match(line):
            if not inside:
                raise ValueError(f"{where}: '{line.strip()}' without its BEGIN line")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{where}: BEGIN marker without its END line")
    return "\n".join(out), n


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
    """Return a copy of ``nb`` whose exercise cells carry nbgrader (schema 3) metadata.

    Solution cells get ``solution=True, grade=False``; check cells get ``grade=True,
    locked=True`` and their points; markdown cells with BEGIN/END SOLUTION regions are
    nbgrader's "manually graded answers". Grade ids come from the exercise label
    above the cell (``ch01-ex2-solution``, ``ch01-ex2-check``); ids already in the
    source's metadata are kept. ``name`` (the file) is used in error messages.

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
        # check the markers now, so that a broken cell is reported with its place
        where = f"{name}: cell {i}"
        _replace_regions(cell.source, _BEGIN_SOLUTION, _END_SOLUTION, (), where)
        _replace_regions(cell.source, _BEGIN_HIDDEN, _END_HIDDEN, (), where)
    return nb


def _clear(cell) -> None:
    if cell.cell_type == "code":
        cell.outputs = []
        cell.execution_count = None
    cell.metadata.pop("execution", None)


def release_notebook(nb: nbformat.NotebookNode, name: str = "notebook",
                     keep_outputs: bool = False) -> nbformat.NotebookNode:
    """The student version of a source notebook.

    Solution regions become ``# YOUR CODE HERE`` / ``raise NotImplementedError()``
    (indented like the BEGIN line; code before and after the markers stays), markdown
    solution regions become ``YOUR ANSWER HERE``, hidden tests are removed (visible
    asserts stay), ``{solution}`` blocks are dropped (and markdown cells left empty by
    that), and exercise cells carry nbgrader metadata (see :func:`annotate`). Outputs
    and execution counts are cleared, except with ``keep_outputs=True``, which keeps the
    outputs of cells that are neither solutions nor checks (for the student edition).

    Introduced in the appendix (instructor guide).
    """
    nb = annotate(nb, name)
    cells = []
    for i, cell in enumerate(nb.cells):
        where, role = f"{name}: cell {i}", cell_role(cell)
        if cell.cell_type == "markdown":
            cell.source = strip_solution_directives(cell.source)
            if role == "solution":
                cell.source, _ = _replace_regions(cell.source, _BEGIN_SOLUTION, _END_SOLUTION, TEXT_STUB, where)
            if not cell.source.strip():
                continue
        elif role == "solution":
            cell.source, n = _replace_regions(cell.source, _BEGIN_SOLUTION, _END_SOLUTION, CODE_STUB, where)
            if n == 0:  # a tagged cell without markers is all solution (as in nbgrader)
                cell.source = "\n".join(CODE_STUB)
        elif role == "check":
            cell.source, _ = _replace_regions(cell.source, _BEGIN_HIDDEN, _END_HIDDEN, (), where)
            cell.source = cell.source.rstrip("\n")
        if not keep_outputs or role is not None:
            _clear(cell)
        cells.append(cell)
    nb.cells = cells
    return nb


def _notebooks(src: Path) -> list[Path]:
    if src.is_file() and src.suffix == ".ipynb":
        return [src]
    if not src.is_dir():
        raise ValueError(f"{src}: no such notebook or folder")
    found = sorted(p for p in src.glob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
    if not found:
        raise ValueError(f"{src}: holds no .ipynb notebook")
    return found


def _read(path: Path) -> nbformat.NotebookNode:
    try:
        return nbformat.read(path, as_version=4)
    except Exception as exc:  # nbformat raises several kinds for a broken file
        raise ValueError(f"{path}: not a readable notebook ({type(exc).__name__}: {exc})".split("\n")[0]) from exc


def _write_all(src_dir: os.PathLike | str, out_dir: os.PathLike | str, make) -> list[Path]:
    src, out = Path(src_dir), Path(out_dir)
    paths = _notebooks(src)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in paths:
        nb = make(_read(path), path.name)
        target = out / path.name
        if target.resolve() == path.resolve():
            raise ValueError(f"{target}: would overwrite its own source")
        nbformat.write(nb, target)
        written.append(target)
    return written


def release(src_dir: os.PathLike | str, out_dir: os.PathLike | str) -> list[Path]:
    """Write the student version (:func:`release_notebook`) of every notebook in ``src_dir``
    (a folder, or one ``.ipynb``) into ``out_dir``; return the written paths.

    Introduced in the appendix (instructor guide).
    """
    return _write_all(src_dir, out_dir, lambda nb, name: release_notebook(nb, name))


def nbgrader_source(src_dir: os.PathLike | str, out_dir: os.PathLike | str) -> list[Path]:
    """Write the notebooks of ``src_dir`` as nbgrader *source* notebooks into ``out_dir``:
    solutions and hidden tests kept (``nbgrader generate_assignment`` removes them),
    nbgrader metadata added, ``{solution}`` blocks dropped from markdown (nbgrader does
    not know them), outputs cleared.

    Introduced in the appendix (instructor guide).
    """
    def make(nb, name):
        nb = annotate(nb, name)
        cells = []
        for cell in nb.cells:
            if cell.cell_type == "markdown":
                cell.source = strip_solution_directives(cell.source)
                if not cell.source.strip():
                    continue
            _clear(cell)
            cells.append(cell)
        nb.cells = cells
        return nb

    return _write_all(src_dir, out_dir, make)


# --------------------------------------------------------------------- student book
_STUDENT_HEADER = "# Student edition, written by `python -m helpers.classroom student-book`.\n"
# Left out of the student edition (it keeps helpers/ and data_samples/, so that it runs).
_BOOK_SKIP = {".git", ".venv", "_build", "tests", "benchmarks", ".ci",
              ".pytest_cache", ".hypothesis", "runs", "cache", "__pycache__", ".ipynb_checkpoints"}


def _glued(nb) -> set[str]:
    return {o.get("metadata", {}).get("scrapbook", {}).get("name")
            for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])} - {None}


def student_book(out_dir: os.PathLike | str, book_dir: os.PathLike | str = REPO_ROOT,
                 repository_url: str | None = None) -> Path:
    """Copy the book in ``book_dir`` to ``out_dir`` as its student edition and return
    ``out_dir``; build it with ``jupyter-book build OUT_DIR -W --keep-going``.

    Every notebook is released (:func:`release_notebook`) but keeps the committed outputs
    of its ordinary cells, so figures and glued numbers still show; every ``{solution}``
    block is dropped from notebooks and ``.md`` pages. The copied ``_config.yml`` turns
    notebook execution off (released exercises would raise ``NotImplementedError``),
    sets sphinx-exercise's ``hide_solutions`` and, if given, the repository URL behind
    the launch buttons (point it at a repository that holds the student edition).
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
        released = release_notebook(nb, path.relative_to(out).as_posix(), keep_outputs=True)
        shown = set().union(*(_glue_keys(c.source) for c in released.cells if c.cell_type == "markdown"))
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


# --------------------------------------------------------------------- grading
_GUARD = '''\
"""Written by helpers.classroom.grade: no network while student code runs."""
import socket as _socket

import ipaddress as _ipaddress


def _refuse(address):
    if not isinstance(address, tuple):  # Unix sockets
        return
    host = str(address[0])
    if host in ("localhost", ""):
        return
    try:
        if _ipaddress.ip_address(host.split("%")[0]).is_loopback:
            return
    except ValueError:  # a host name
        pass
    raise OSError(f"network access is disabled while grading (tried {host})")


_connect, _connect_ex = _socket.socket.connect, _socket.socket.connect_ex
_getaddrinfo = _socket.getaddrinfo


def connect(self, address):
    _refuse(address)
    return _connect(self, address)


def connect_ex(self, address):
    _refuse(address)
    return _connect_ex(self, address)


def getaddrinfo(host, *args, **kwargs):
    name = host.decode() if isinstance(host, bytes) else host
    if name:
        _refuse((str(name), 0))
    return _getaddrinfo(host, *args, **kwargs)


_socket.socket.connect, _socket.socket.connect_ex, _socket.getaddrinfo = connect, connect_ex, getaddrinfo
'''


@dataclass
class _Check:
    grade_id: str
    cell: nbformat.NotebookNode
    max_points: float | int
    anchor: str | None  # grade id of the solution cell it follows in the source


def _source_plan(source: nbformat.NotebookNode) -> tuple[list[str], list[_Check]]:
    """Solution ids and check cells (with the solution each one follows) of an annotated source."""
    solutions, checks, anchor = [], [], None
    for cell in source.cells:
        meta = cell.metadata.get("nbgrader", {})
        role = cell_role(cell)
        if role == "solution" and cell.cell_type == "code":
            anchor = meta["grade_id"]
            solutions.append(anchor)
        elif role == "check":
            checks.append(_Check(meta["grade_id"], cell, meta["points"], anchor))
    return solutions, checks


def _compose(student: nbformat.NotebookNode, source: nbformat.NotebookNode) -> tuple[nbformat.NotebookNode, dict[int, str]]:
    """The submission with every check cell replaced by the source's full one.

    Checks go after the student's cell holding the same solution (matched by grade
    id, else by position among tagged solution cells); checks whose solution cell
    cannot be found go at the end. Returns the notebook and {cell index: check id}.
    """
    solutions, checks = _source_plan(source)
    check_ids = {c.grade_id for c in checks}
    kept, where = [], {}
    untagged_pos = 0
    claimed: set[str] = set()
    for cell in student.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {}) or {}
        gid = meta.get("grade_id")
        if cell.cell_type == "code" and (gid in check_ids or CHECK_TAG in _tags(cell) or meta.get("grade")):
            continue  # the source's checks replace whatever the student left
        kept.append(cell)
        if cell.cell_type != "code":
            continue
        if gid in solutions:
            where[gid] = len(kept) - 1
            claimed.add(gid)
        elif not gid and SOLUTION_TAG in _tags(cell):
            if untagged_pos < len(solutions):
                pid = solutions[untagged_pos]
                if pid not in claimed:
                    where[pid] = len(kept) - 1
            untagged_pos += 1
    after: dict[int, list[_Check]] = {}
    tail: list[_Check] = []
    for check in checks:
        if check.anchor is not None and check.anchor in where:
            after.setdefault(where[check.anchor], []).append(check)
        else:
            tail.append(check)
    nb = copy.deepcopy(student)
    cells, index = [], {}
    for i, cell in enumerate(kept):
        cells.append(copy.deepcopy(cell))
        for check in after.get(i, []):
            index[len(cells)] = check.grade_id
            cells.append(copy.deepcopy(check.cell))
    for check in tail:
        index[len(cells)] = check.grade_id
        cells.append(copy.deepcopy(check.cell))
    for cell in cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nb.cells = cells
    return nb, index


def _describe(error) -> str:
    """One line from an error output: ``ename: evalue``."""
    name, value = error.get("ename", "Error"), str(error.get("evalue", "")).strip()
    return (f"{name}: {value}" if value else name).split("\n")[0][:300]


def _run(nb: nbformat.NotebookNode, index: dict[int, str], cwd: Path, timeout: int,
         env: dict[str, str]) -> dict[str, str | None]:
    """Execute ``nb``; return {check id: None if it passed, else why not}."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    result: dict[str, str | None] = {}
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                            interrupt_on_timeout=False, shutdown_kernel="immediate",
                            record_timing=False, resources={"metadata": {"path": str(cwd)}})
    stopped: str | None = None
    earlier: str | None = None  # the last error outside the checks, reported with the next failing check
    try:
        with client.setup_kernel(env=env, stderr=subprocess.DEVNULL):
            for i, cell in enumerate(nb.cells):
                if cell.cell_type != "code":
                    continue
                try:
                    client.execute_cell(cell, i)
                except CellTimeoutError:
                    stopped = f"not run: cell {i} ran past the {timeout} s timeout"
                    if i in index:
                        result[index[i]] = f"TimeoutError: ran past the {timeout} s timeout"
                    break
                except DeadKernelError:
                    stopped = f"not run: the kernel died in cell {i}"
                    if i in index:
                        result[index[i]] = "DeadKernelError: the kernel died"
                    break
                errors = [o for o in cell.outputs if o.get("output_type") == "error"]
                why = _describe(errors[0]) if errors else None
                if i not in index:
                    earlier = why or earlier
                    continue
                if why and earlier:
                    why = f"{why} (after an error above it: {earlier})"
                result[index[i]], earlier = why, None
    except (CellTimeoutError, DeadKernelError, RuntimeError) as exc:  # kernel start or shutdown
        stopped = stopped or f"not run: {type(exc).__name__}: {exc}".split("\n")[0][:300]
    for gid in index.values():
        result.setdefault(gid, stopped or "not run")
    return result


def _kernel_env(guard_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(guard_dir), env.get("PYTHONPATH", "")) if p)
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy"):
        env[var] = "http://127.0.0.1:9"  # nothing listens on the discard port
    env.update(no_proxy="", NO_PROXY="", MPLBACKEND="Agg", HELPERS_GRADING="1")
    return env


def grade(submissions_dir: os.PathLike | str, out_csv: os.PathLike | str,
          source_dir: os.PathLike | str = "chapters", timeout: int = 60) -> pd.DataFrame:
    """Grade ``SUBMISSIONS/<student>/<notebook>.ipynb`` against the source notebooks.

    For each submission the check cells are taken from the source notebook of the
    same name (hidden tests included), so deleted, edited or moved check cells do
    not matter; the notebook then runs top to bottom in a fresh ``python3`` kernel
    (working folder ``source_dir``, network refused, ``timeout`` seconds per cell).
    A check earns its points when its cell runs without error. A cell that runs past
    the timeout stops that notebook: it and the checks after it get 0. Notebooks a
    student did not hand in get 0 on every check; files without a source are
    skipped with a notice. Writes and returns one row per student, notebook and check
    with columns ``student, notebook, check, points, max_points, error``.

    Introduced in the appendix (instructor guide).
    """
    subs, src = Path(submissions_dir), Path(source_dir)
    if not src.is_absolute() and not src.exists() and (REPO_ROOT / src).exists():
        src = REPO_ROOT / src
    if not subs.is_dir():
        raise ValueError(f"{subs}: no such submissions folder")
    if not src.is_dir():
        raise ValueError(f"{src}: no such source folder")
    if timeout <= 0:
        raise ValueError(f"timeout must be positive, got {timeout}")
    students = sorted(p for p in subs.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not students:
        raise ValueError(f"{subs}: holds no student folder (expected SUBMISSIONS/<student>/<notebook>.ipynb)")
    names = sorted({p.name for s in students for p in s.glob("*.ipynb")})
    sources = {n: src / n for n in names if (src / n).is_file()}
    for n in names:
        if n not in sources:
            print(f"notice: {n} has no source notebook in {src.name}/; skipped", file=sys.stderr)
    plans = {}
    for n, path in sources.items():
        source = annotate(_read(path), n)
        checks = _source_plan(source)[1]
        if checks:  # a notebook without code exercises has nothing to grade
            plans[n] = (source, checks)
    rows = []
    with tempfile.TemporaryDirectory(prefix="classroom-") as tmp:
        (Path(tmp) / "sitecustomize.py").write_text(_GUARD, encoding="utf-8")
        env = _kernel_env(Path(tmp))
        bar = tqdm(total=len(students) * len(plans), desc="grading", unit="notebook", disable=None)
        for student in students:
            for n, (source, checks) in plans.items():
                bar.update()
                path = student / n
                if not path.is_file():
                    outcome = {c.grade_id: "missing: no such notebook handed in" for c in checks}
                else:
                    try:
                        submission = nbformat.read(path, as_version=4)
                    except Exception as exc:
                        why = f"unreadable notebook: {type(exc).__name__}".split("\n")[0]
                        outcome = {c.grade_id: why for c in checks}
                    else:
                        nb, index = _compose(submission, source)
                        outcome = _run(nb, index, src.resolve(), timeout, env)
                for c in checks:
                    error = outcome.get(c.grade_id, "not run")
                    rows.append({"student": student.name, "notebook": Path(n).stem, "check": c.grade_id,
                                 "points": c.max_points if error is None else 0,
                                 "max_points": c.max_points, "error": error or ""})
        bar.close()
    df = pd.DataFrame(rows, columns=CSV_COLUMNS)
    out = Path(out_csv)
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    return df


# --------------------------------------------------------------------- CLI
def main(argv: Sequence[str] | None = None) -> int:
    """``python -m helpers.classroom release|grade|student-book|nbgrader-source ...``.

    Introduced in the appendix (instructor guide).
    """
    parser = argparse.ArgumentParser(prog="python -m helpers.classroom", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("release", help="write student notebooks (solutions and hidden tests removed)")
    p.add_argument("src", help="source notebook or folder (e.g. chapters)")
    p.add_argument("out", help="folder for the student notebooks")
    p = sub.add_parser("grade", help="grade SUBMISSIONS/<student>/<notebook>.ipynb into a CSV")
    p.add_argument("submissions")
    p.add_argument("out_csv")
    p.add_argument("--source", default="chapters", help="folder of the source notebooks (default: chapters)")
    p.add_argument("--timeout", type=int, default=60, help="seconds per cell (default: 60)")
    p = sub.add_parser("student-book", help="copy the book as its student edition")
    p.add_argument("out_dir")
    p.add_argument("--book", default=str(REPO_ROOT), help="the book's folder (default: this repository)")
    p.add_argument("--repository-url", default=None, help="repository behind the launch buttons")
    p = sub.add_parser("nbgrader-source", help="write nbgrader source notebooks")
    p.add_argument("src")
    p.add_argument("out")
    args = parser.parse_args(argv)
    try:
        if args.command == "release":
            paths = release(args.src, args.out)
            print(f"released {len(paths)} notebook(s) into {args.out}")
        elif args.command == "grade":
            df = grade(args.submissions, args.out_csv, args.source, args.timeout)
            total = df.groupby("student")[["points", "max_points"]].sum()
            print(f"graded {len(total)} student(s), {len(df)} check(s) into {args.out_csv}")
        elif args.command == "student-book":
            out = student_book(args.out_dir, args.book, args.repository_url)
            print(f"student edition in {out}; build: jupyter-book build {args.out_dir} -W --keep-going")
        else:
            paths = nbgrader_source(args.src, args.out)
            print(f"wrote {len(paths)} nbgrader source notebook(s) into {args.out}")
    except (ValueError, OSError) as exc:
        print(f"error: {exc}".split("\n")[0], file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
