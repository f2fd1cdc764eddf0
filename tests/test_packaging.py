"""The package as a course hub, Binder or Colab installs it.

Such a place installs the package and what it declares, nothing else (no extras, no
`make`). So every module a chapter imports must come from the standard library, from
``helpers`` or from a distribution reachable from the *core* dependencies; the supported
Pythons must be admitted; no dependency may be pinned to one version (a hub that also
serves other courses could not install it); and the launch buttons of ``_config.yml``
must point at files that exist.
"""
from __future__ import annotations

import ast
import functools
import importlib.metadata as md
import json
import re
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

REPO_ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
CONFIG = yaml.safe_load((REPO_ROOT / "_config.yml").read_text(encoding="utf-8"))
TOC = yaml.safe_load((REPO_ROOT / "_toc.yml").read_text(encoding="utf-8"))
CHAPTERS = sorted((REPO_ROOT / "chapters").glob("*.ipynb"))
SUPPORTED_PYTHONS = ["3.11", "3.12", "3.13"]


def _core_requirements() -> list[Requirement]:
    return [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]


def _all_requirements() -> list[Requirement]:
    reqs = _core_requirements()
    for extra in PYPROJECT["project"].get("optional-dependencies", {}).values():
        reqs += [Requirement(r) for r in extra]
    return reqs


def _reachable_distributions(requirements: list[Requirement]) -> set[str]:
    """Canonical names of the installed distributions the requirements pull in, transitively.

    A requirement's own dependencies are followed with the extras it asks for only, and
    with environment markers evaluated for this interpreter.
    """
    seen: set[str] = set()
    todo = [(r, frozenset(r.extras)) for r in requirements]
    while todo:
        req, extras = todo.pop()
        name = canonicalize_name(req.name)
        key = f"{name}[{','.join(sorted(extras))}]"
        if key in seen:
            continue
        seen.add(key)
        try:
            requires = md.requires(req.name) or []
        except md.PackageNotFoundError:
            continue  # not installed here (e.g. a marker for another platform)
        for line in requires:
            sub = Requirement(line)
            envs = [{"extra": e} for e in extras] or [{"extra": ""}]
            if sub.marker is None or any(sub.marker.evaluate(env) for env in envs):
                todo.append((sub, frozenset(sub.extras)))
    return {key.split("[")[0] for key in seen}


def _imported_modules(source: str) -> set[str]:
    """Top-level modules imported by a code cell (IPython magics and shell lines dropped)."""
    lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
    tree = ast.parse("\n".join(lines))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def _chapter_imports() -> dict[str, set[str]]:
    imports: dict[str, set[str]] = {}
    for path in CHAPTERS:
        nb = json.loads(path.read_text(encoding="utf-8"))
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
                for module in _imported_modules(src):
                    imports.setdefault(module, set()).add(path.name)
    return imports


def _helpers_imports() -> dict[str, set[str]]:
    imports: dict[str, set[str]] = {}
    for path in sorted((REPO_ROOT / "helpers").glob("*.py")):
        for module in _imported_modules(path.read_text(encoding="utf-8")):
            imports.setdefault(module, set()).add(f"helpers/{path.name}")
    return imports


@functools.cache
def _providers() -> dict[str, list[str]]:
    return md.packages_distributions()


def _unprovided(imports: dict[str, set[str]], extra: str | None = None) -> dict[str, list[str]]:
    requirements = _core_requirements()
    if extra:
        requirements += [Requirement(r) for r in PYPROJECT["project"]["optional-dependencies"][extra]]
    reachable = _reachable_distributions(requirements)
    providers = _providers()
    missing = {}
    for module, where in sorted(imports.items()):
        if module in sys.stdlib_module_names or module in ("helpers", "__future__"):
            continue
        dists = {canonicalize_name(d) for d in providers.get(module, [])}
        if not dists & reachable:
            missing[module] = sorted(where)
    return missing


def test_the_walk_finds_what_it_should():
    """The walker itself: direct and transitive dependencies, and not the extras."""
    imports = _chapter_imports()
    assert {"helpers", "torch", "pandas"} <= set(imports)
    reachable = _reachable_distributions(_core_requirements())
    assert {"torch", "myst-nb", "ipython", "nbformat"} <= reachable   # ipython via myst-nb
    assert "jupyter-book" not in reachable and "pytest" not in reachable


def test_every_chapter_import_comes_with_the_core_dependencies():
    missing = _unprovided(_chapter_imports())
    assert not missing, ("modules the chapters import that a plain `pip install` of the package "
                         f"does not bring (add them to [project].dependencies): {missing}")


def test_every_helpers_import_comes_with_the_core_dependencies():
    """helpers.classroom, the teachers' tool, may import what the ``classroom`` extra brings."""
    imports = _helpers_imports()
    teacher = {m: w - {"helpers/classroom.py"} for m, w in imports.items()}
    missing = _unprovided({m: w for m, w in teacher.items() if w})
    assert not missing, f"modules helpers/ imports that the core dependencies do not bring: {missing}"
    classroom = {m: {"helpers/classroom.py"} for m, w in imports.items() if "helpers/classroom.py" in w}
    missing = _unprovided(classroom, extra="classroom")
    assert not missing, f"modules helpers.classroom imports that the classroom extra does not bring: {missing}"
    assert "nbgrader" in classroom and _unprovided({"nbgrader": {"x"}}), "the check can tell core from extra"


@pytest.mark.parametrize("version", SUPPORTED_PYTHONS)
def test_requires_python_admits(version):
    spec = SpecifierSet(PYPROJECT["project"]["requires-python"])
    assert spec.contains(f"{version}.0"), f"requires-python {spec} refuses Python {version}"


def test_the_running_python_is_admitted():
    spec = SpecifierSet(PYPROJECT["project"]["requires-python"])
    assert spec.contains(".".join(map(str, sys.version_info[:3])))


@pytest.mark.parametrize("req", _all_requirements(), ids=str)
def test_no_dependency_is_pinned_to_one_version(req):
    ops = {s.operator for s in req.specifier}
    assert not ops & {"==", "==="}, f"{req} is pinned; give a range (>=lowest tested,<next untested)"
    assert ops, f"{req} has no version range at all"


def test_myst_nb_range_fits_jupyter_book():
    """The core dependency on myst-nb must admit the version jupyter-book 1 installs (~=1.0)."""
    (myst_nb,) = [r for r in _core_requirements() if canonicalize_name(r.name) == "myst-nb"]
    assert myst_nb.specifier.contains(md.version("myst-nb"))
    assert myst_nb.specifier.contains("1.0.0") and not myst_nb.specifier.contains("2.0.0")


# ---- launch buttons ------------------------------------------------------------------

def _toc_files() -> list[str]:
    files = [TOC["root"]]
    for part in TOC.get("parts", []):
        files += [entry["file"] for entry in part["chapters"]]
    return files


def test_repository_settings_are_consistent():
    repo = CONFIG["repository"]
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", repo["url"]), repo["url"]
    assert repo["branch"], "repository.branch must name the branch the launch buttons open"
    book_root = REPO_ROOT / repo.get("path_to_book", "")
    assert (book_root / "_config.yml").is_file() and (book_root / "_toc.yml").is_file()


def test_every_launchable_page_is_a_notebook_that_exists():
    """Binder, Colab and JupyterHub open `<path_to_book>/<page>.ipynb` from the repository."""
    book_root = REPO_ROOT / CONFIG["repository"].get("path_to_book", "")
    chapters = [f for f in _toc_files() if f.startswith("chapters/")]
    assert len(chapters) == len(CHAPTERS)
    for page in chapters:
        assert (book_root / f"{page}.ipynb").is_file(), f"{page}.ipynb: a launch button would open nothing"


def test_binder_builds_the_package_with_jupyterlab():
    buttons = CONFIG["launch_buttons"]
    assert buttons.get("binderhub_url", "").startswith("https://")
    assert buttons.get("notebook_interface") == "jupyterlab"
    binder = REPO_ROOT / "binder"
    reqs = (binder / "requirements.txt").read_text(encoding="utf-8").splitlines()
    lines = [line.split("#")[0].strip() for line in reqs]
    assert any(re.fullmatch(r"-e \.(\[.*\bbook\b.*\])?", line) for line in lines), \
        "binder/requirements.txt must install the repository (editable, so helpers finds data_samples/)"
    runtime = (binder / "runtime.txt").read_text(encoding="utf-8").strip()
    version = runtime.removeprefix("python-")
    assert SpecifierSet(PYPROJECT["project"]["requires-python"]).contains(f"{version}.0"), runtime
    book = [Requirement(r) for r in PYPROJECT["project"]["optional-dependencies"]["book"]]
    assert {"jupyterlab", "jupyterlab-myst"} <= {canonicalize_name(r.name) for r in book}


def test_colab_cells_clone_the_configured_repository():
    """Each chapter's Colab cell clones the repository named in _config.yml."""
    url = CONFIG["repository"]["url"]
    assert CONFIG["launch_buttons"].get("colab_url") == "https://colab.research.google.com"
    for path in CHAPTERS:
        text = path.read_text(encoding="utf-8")
        if "google.colab" in text:
            assert url in text, f"{path.name}: its Colab cell clones another repository than {url}"


def test_jupyterhub_url_is_empty_or_a_hub():
    hub = CONFIG["launch_buttons"].get("jupyterhub_url") or ""
    assert hub == "" or re.fullmatch(r"https?://[^\s/]+(/\S*)?", hub), hub
