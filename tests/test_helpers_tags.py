"""Every helper's "Introduced in chapter N" tag names the chapter whose code first calls it.

A reader who meets ``helpers.fit`` in a chapter and opens its docstring should find the chapter
that teaches it. The tags are checked against the chapters' code cells, so they cannot drift:
a chapter "uses" a helper when its code names it through the package (``helpers.seed_everything``),
through a module or its alias (``metrics.roc_auc``, ``D.patient_folds``) or imports it by name
(``from helpers.train import fit``). A helper no chapter calls carries no chapter tag, and a
public helper that nothing calls (no chapter, helper, command, test, benchmark or tool) should not exist.
"""
from __future__ import annotations

import ast
import re
from functools import cache

import nbformat
import pytest

from helpers import REPO_ROOT

MODULES = sorted(p for p in (REPO_ROOT / "helpers").glob("*.py"))
CHAPTERS = sorted((REPO_ROOT / "chapters").glob("*.ipynb"))
TAG = re.compile(r"Introduced in chapter (\d+)\b")


def public_definitions():
    """(module, name, docstring) of every public top-level function and class of ``helpers``."""
    for path in MODULES:
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                yield path.stem, node.name, ast.get_docstring(node) or ""


@cache
def chapter_code(path) -> str:
    nb = nbformat.read(path, as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    # "from m import (\n a,\n b,\n)", as ruff formats a long import, on one line
    return re.sub(r"import \(([^)]*)\)", lambda m: "import " + " ".join(m.group(1).split()).rstrip(","),
                  code)


def uses(code: str, module: str, name: str) -> bool:
    """Does this code call ``helpers.<module>.<name>`` (by any of the import forms above)?"""
    prefixes = [f"helpers.{module}."]
    if module == "__init__":
        prefixes = ["helpers."]
    for match in re.finditer(r"^\s*from helpers import (.+)$", code, re.M):
        for item in match.group(1).split(","):
            parts = item.split(" as ")
            if parts[0].strip() == module:
                prefixes.append(f"{parts[-1].strip()}.")
    if any(re.search(rf"(?<![\w.]){re.escape(p)}{name}\b", code) for p in prefixes):
        return True
    source = "helpers" if module == "__init__" else rf"helpers\.{module}"
    return any(re.search(rf"\b{name}\b", m.group(1))
               for m in re.finditer(rf"^\s*from {source} import (.+)$", code, re.M))


def first_chapter(module: str, name: str) -> int | None:
    used = [int(p.name[:2]) for p in CHAPTERS if uses(chapter_code(p), module, name)]
    return used[0] if used else None


DEFINITIONS = list(public_definitions())


@pytest.mark.parametrize("module,name,doc", DEFINITIONS, ids=[f"{m}.{n}" for m, n, _ in DEFINITIONS])
def test_tag_names_the_chapter_that_first_calls_it(module, name, doc):
    tag = TAG.search(doc)
    first = first_chapter(module, name)
    if first is None:
        assert tag is None, f"helpers.{module}.{name} says chapter {tag.group(1)}, but no chapter calls it"
    else:
        assert tag is not None, f"helpers.{module}.{name} is first called in chapter {first}: say so"
        assert int(tag.group(1)) == first, (
            f"helpers.{module}.{name} says chapter {tag.group(1)}, but chapter {first} calls it first")


def referenced_names(path) -> set[str]:
    """Names a Python file refers to in code (not in strings such as ``__all__``)."""
    tree = ast.parse(path.read_text())
    return ({n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
            | {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
            | {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names})


@cache
def callers() -> dict[str, set[str]]:
    """name -> where it is referred to: chapters' code, helper modules, tests, benchmarks, tools."""
    where: dict[str, set[str]] = {}
    for folder in ("helpers", "tests", "benchmarks", "tools"):
        for path in (REPO_ROOT / folder).rglob("*.py"):
            if path.name != "test_helpers_tags.py":
                for name in referenced_names(path):
                    where.setdefault(name, set()).add(str(path.relative_to(REPO_ROOT)))
    for path in CHAPTERS:
        for name in set(re.findall(r"\b\w+\b", chapter_code(path))):
            where.setdefault(name, set()).add(path.name)
    return where


@pytest.mark.parametrize("module,name,doc", DEFINITIONS, ids=[f"{m}.{n}" for m, n, _ in DEFINITIONS])
def test_every_public_helper_is_called_somewhere(module, name, doc):
    assert callers().get(name), f"helpers.{module}.{name} is public but nothing calls it: delete it or make it private"


def private_imports(path, code: str) -> list[str]:
    """``from helpers.m import _x`` and ``m._x`` where ``m`` is a helpers module: a private name
    used outside its module."""
    tree = ast.parse(code)
    modules = {p.stem for p in MODULES}
    aliases, found = {"helpers"}, []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("helpers"):
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"from {node.module} import {alias.name}")
                if node.module == "helpers" and alias.name in modules:
                    aliases.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            aliases |= {a.asname or a.name for a in node.names if a.name.startswith("helpers")}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                and isinstance(node.value, (ast.Name, ast.Attribute))
                and ast.unparse(node.value).split(".")[0] in aliases):
            found.append(ast.unparse(node))
    return [f"{path}: {f}" for f in found]


def test_no_private_name_is_used_outside_its_module():
    found = []
    for folder in ("helpers", "tests", "benchmarks", "tools"):
        for path in (REPO_ROOT / folder).rglob("*.py"):
            found += private_imports(path.relative_to(REPO_ROOT), path.read_text())
    for path in CHAPTERS:
        nb = nbformat.read(path, as_version=4)
        for i, cell in enumerate(nb.cells):
            if cell.cell_type == "code" and not cell.source.lstrip().startswith(("%", "!")):
                try:
                    found += private_imports(f"{path.name} cell {i}", cell.source)
                except SyntaxError:   # a cell with IPython magics further down
                    pass
    assert not found, "\n".join(found)


def helpers_imports(path) -> set[str]:
    """The helpers modules ``path`` imports, at module level or inside functions."""
    modules = {p.stem for p in MODULES}
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("helpers"):
            parts = node.module.split(".")
            found |= {parts[1]} if len(parts) > 1 else {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("helpers.")}
    return found


def test_no_import_cycle_between_helpers_modules():
    graph = {path.stem: helpers_imports(path) for path in MODULES}
    assert "io" in graph["data"] and "data" in graph["fastpath"], "the walk finds imports"

    def cycle_from(start: str, path: list[str]) -> list[str] | None:
        for nxt in sorted(graph.get(path[-1], ())):
            if nxt == start:
                return path + [nxt]
            if nxt not in path and (found := cycle_from(start, path + [nxt])):
                return found
        return None

    cycles = [c for m in graph if (c := cycle_from(m, [m]))]
    assert not cycles, "import cycle: " + " -> ".join(cycles[0])
