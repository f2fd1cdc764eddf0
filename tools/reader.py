"""The reader edition: the chapters with their MyST turned into plain Markdown.

Colab and GitHub show a notebook's Markdown as CommonMark: MyST roles and directives would
show as raw text there. ``python -m tools.reader notebooks/`` (``make reader``) writes each
chapter to ``notebooks/`` with citations as "(Codella et al. 2018)", exercises as quoted
blocks titled "Exercise 9.3", solutions in a ``<details>`` block, admonitions as quotes and
cross-references as their text. Code cells and outputs are copied unchanged. The book's
Colab button opens these copies.
"""
from __future__ import annotations

import argparse
import copy
import re
import sys
from pathlib import Path

import nbformat
from pybtex.database import parse_file

from helpers import REPO_ROOT
from helpers.prose import RECORD

FENCE = re.compile(r"^(`{3,}|:{3,})\{([\w-]+)\}[ \t]*(.*)$")
ROLE = re.compile(r"\{([\w:-]+)\}`([^`]*)`")


def citation_labels(bib: Path) -> dict[str, tuple[str, str]]:
    """Each reference key's (authors as cited, year): "Codella et al.", "2018"."""
    labels = {}
    for key, entry in parse_file(str(bib)).entries.items():
        people = entry.persons.get("author") or entry.persons.get("editor") or []
        names = [" ".join(p.last_names) or " ".join(p.first_names) for p in people]
        who = (names[0] if len(names) == 1 else f"{names[0]} and {names[1]}" if len(names) == 2
               else f"{names[0]} et al." if names else entry.fields.get("title", key))
        labels[key] = (re.sub(r"[{}\\]", "", who), entry.fields.get("year", "n.d."))
    return labels


def _role(match, labels, exercises) -> str:
    name, text = match.groups()
    if name.startswith("cite"):
        cited = [labels[k.strip()] for k in text.split(",")]
        if name == "cite:t":
            return "; ".join(f"{who} ({year})" for who, year in cited)
        return "(" + "; ".join(f"{who} {year}" for who, year in cited) + ")"
    if name == "math":
        return f"${text}$"
    shown = re.match(r"(.*?)\s*<([^>]+)>$", text, re.S)
    if name in ("ref", "numref") and not shown and text in exercises:
        return f"Exercise {exercises[text]}"
    return shown.group(1) if shown else text


def _options(lines: list[str]) -> tuple[dict, list[str]]:
    options = {}
    while lines and re.match(r"^:[\w-]+:", lines[0]):
        key, _, value = lines.pop(0)[1:].partition(":")
        options[key] = value.strip()
    while lines and not lines[0].strip():
        lines.pop(0)
    return options, lines


def _quote(title: str, body: list[str]) -> list[str]:
    return [f"> **{title}**", ">"] + [f"> {line}".rstrip() for line in body]


def _directive(name, arg, body, exercises) -> list[str]:
    options, body = _options(body)
    if name == "exercise":
        number = options.get("enumerator", "")
        return _quote(f"Exercise {number}".strip() + (f" ({arg})" if arg else ""), body)
    if name == "solution":
        number = exercises.get(arg.strip(), "")
        return [f"<details><summary>Solution to Exercise {number}</summary>", ""] + body + [
            "", "</details>"]
    title = arg if name == "admonition" else name.capitalize()
    return _quote(title, body)


def plain_markdown(text: str, labels: dict, exercises: dict) -> str:
    """One markdown cell's MyST as CommonMark (directives, roles, targets, comments)."""
    out, lines = [], text.split("\n")
    while lines:
        line = lines.pop(0)
        fence = FENCE.match(line)
        if re.match(r"^\([\w.-]+\)=\s*$", line) or line.startswith("%"):
            continue
        if not fence:
            out.append(line)
            continue
        marker, name, arg = fence.groups()
        body = []
        while lines and lines[0].strip() != marker:
            body.append(lines.pop(0))
        if lines:
            lines.pop(0)
        inner = plain_markdown("\n".join(body), labels, exercises).split("\n")
        out += _directive(name, arg.strip(), inner, exercises)
    return ROLE.sub(lambda m: _role(m, labels, exercises), "\n".join(out))


def exercise_numbers(nb) -> dict[str, str]:
    """Each exercise label of a notebook with its ``:enumerator:``."""
    found = {}
    for cell in nb.cells:
        for label, number in re.findall(r":label:\s*(\S+)\s*\n:enumerator:\s*(\S+)", cell.source):
            found[label] = number
    return found


def reader_edition(nb, labels: dict):
    """A copy of notebook ``nb`` whose markdown is plain CommonMark."""
    nb = copy.deepcopy(nb)
    exercises = exercise_numbers(nb)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = plain_markdown(cell.source, labels, exercises)
            for key in ("glued", "fixed"):
                cell.metadata.pop(key, None)
        else:  # the glued values' records: the text states them, nothing shows them
            cell.outputs = [o for o in cell.outputs if RECORD not in o.get("data", {})]
    return nb


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for the reader edition (notebooks/)")
    args = parser.parse_args(argv)
    labels = citation_labels(REPO_ROOT / "references.bib")
    args.out.mkdir(parents=True, exist_ok=True)
    for path in sorted((REPO_ROOT / "chapters").glob("[0-9][0-9]_*.ipynb")):
        try:
            nb = reader_edition(nbformat.read(path, as_version=4), labels)
        except KeyError as missing:
            print(f"{path.name}: no reference {missing} in references.bib", file=sys.stderr)
            return 2
        nbformat.write(nb, args.out / path.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
