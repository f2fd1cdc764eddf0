"""Numbers in a chapter's prose, tied to the cells that compute them.

A chapter's text states its numbers as plain text, so that they read the same in the built
book, JupyterLab, Colab and GitHub. Each number a markdown cell states from an output is
listed, in order of appearance, in that cell's metadata (``"glued": ["ch09_auc", ...]``, a key
may carry a format: ``"n_2019:,"``); the code cell that computes it calls ``glue(key, value)``.
``check_chapter`` (the last cell before a chapter's exercises) fails when a re-run gives a
value its prose does not state; ``mismatches`` does the same on a notebook's stored outputs.
"""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

__all__ = ["glue", "check_chapter", "mismatches", "still_stated", "stored_values", "render"]

RECORD = "application/papermill.record/text/plain"
_values: dict[str, object] = {}  # what this kernel glued, for check_chapter


def glue(key: str, value) -> None:
    """Keep ``value`` under ``key`` for the prose check and store it in the cell's output.

    Introduced in chapter 1 (skin disease and melanoma).
    """
    from myst_nb import glue as myst_glue

    _values[key] = value
    myst_glue(key, value, display=False)


def render(value, spec: str = "") -> str:
    """``value`` as the prose writes it: formatted with ``spec``, strings as they are."""
    if isinstance(value, str) and spec:
        value = ast.literal_eval(value)
    return format(value, spec) if spec else str(value)


def stored_values(nb: dict) -> dict[str, object]:
    """The values a notebook's stored outputs glued, by key (for check_chapter and the tests)."""
    found = {}
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            text = out.get("data", {}).get(RECORD)
            if text is None:
                continue
            text = "".join(text)
            key = out["metadata"]["scrapbook"]["name"]
            try:
                found[key] = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                found[key] = re.sub(r"^np\.\w+\((.*)\)$", r"\1", text)
    return found


def _stated(text: str, literal: str, start: int) -> int:
    """Where ``literal`` next stands in ``text`` as a whole token, from ``start``; -1 if never."""
    pattern = r"(?<![\w.])" + re.escape(literal) + r"(?![\w]|\.\d)"
    match = re.compile(pattern).search(text, start)
    return match.end() if match else -1


def _walk(cell: dict, values: dict[str, object], skip: frozenset = frozenset()):
    """Each (entry, literal, where, text before) of a markdown cell's ``glued`` list: where its
    value next stands after the previous one (-1: not stated; literal None: never glued)."""
    text, at = "".join(cell["source"]), 0
    for entry in cell.get("metadata", {}).get("glued", []):
        key, _, spec = entry.partition(":")
        if key in skip:
            continue
        if key not in values:
            yield entry, None, -1, ""
            continue
        literal = render(values[key], spec)
        found = _stated(text, literal, at)
        yield entry, literal, found, text[max(0, at - 40):at]
        at = max(at, found)


def mismatches(nb: dict, values: dict[str, object], skip: frozenset = frozenset()) -> list[str]:
    """One line per number a markdown cell states that differs from ``values`` (or is absent).

    Keys in ``skip`` are not checked.
    """
    problems = []
    for index, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "markdown":
            continue
        for entry, literal, found, before in _walk(cell, values, skip):
            key = entry.partition(":")[0]
            if literal is None:
                problems.append(f"cell {index}: {key} is stated but no cell glued it")
            elif found < 0:
                problems.append(f"cell {index}: {key} is {literal!r}, which the text does not "
                                f"state (in order) after {before!r}")
    return problems


def still_stated(cell: dict, values: dict[str, object]) -> list[str]:
    """The entries of a markdown cell's ``glued`` list that its text states (for the student
    edition, whose cells lose their solutions)."""
    return [entry for entry, _, found, _ in _walk(cell, values) if found >= 0]


def check_chapter(name: str, values: dict | None = None) -> None:
    """Fail unless every number the prose of chapter ``name`` states equals what this run glued.

    ``values`` replaces what this kernel glued (for the tests).

    Introduced in chapter 1 (skin disease and melanoma).
    """
    path = Path(name)
    if not path.is_file():
        from helpers import REPO_ROOT

        path = REPO_ROOT / "chapters" / name
    nb = json.loads(path.read_text(encoding="utf-8"))
    values = _values if values is None else values
    here = next(i for i, c in enumerate(nb["cells"]) if "prose-check" in c["metadata"].get("tags", []))
    # what the exercises glue, after this cell: stored, or stated by their text
    later = set(stored_values({"cells": nb["cells"][here:]}))
    later |= {k.partition(":")[0] for c in nb["cells"][here:] for k in c["metadata"].get("glued", [])}
    problems = mismatches(nb, values, frozenset(later - set(values)))
    if problems:
        raise AssertionError(f"{path.name}: the prose disagrees with this run:\n" + "\n".join(problems))
    print(f"prose check: {sum(len(c.get('metadata', {}).get('glued', [])) for c in nb['cells'])} "
          "stated numbers agree with this run")
