"""helpers.prose, and the chapters' prose against their stored outputs.

Every number a chapter's text states from an output is plain text tied to its glue key
(``glued`` in the markdown cell's metadata); these tests check those ties on the committed
notebooks, and that every other number in the prose is a cited, structural or declared one.
Each chapter's own ``check_chapter`` cell does the same against a fresh run under nbval.
"""
from __future__ import annotations

import copy
import json
import re

import pytest

from helpers import REPO_ROOT, prose

CHAPTERS = sorted((REPO_ROOT / "chapters").glob("[0-9][0-9]_*.ipynb"))


def _load(path):
    return json.loads(path.read_text(encoding="utf-8"))


def test_render_formats_numbers_and_keeps_strings():
    assert prose.render(2000, ",") == "2,000"
    assert prose.render("0.8271", ".2f") == "0.83"
    assert prose.render("95.7%") == "95.7%"


def test_stored_values_read_myst_nb_records():
    nb = {"cells": [{"cell_type": "code", "outputs": [
        {"data": {prose.RECORD: "'95.7%'"}, "metadata": {"scrapbook": {"name": "a"}}},
        {"data": {prose.RECORD: "np.float64(0.25)"}, "metadata": {"scrapbook": {"name": "b"}}},
        {"data": {prose.RECORD: "117"}, "metadata": {"scrapbook": {"name": "c"}}}]}]}
    assert prose.stored_values(nb) == {"a": "95.7%", "b": "0.25", "c": 117}


def _cell(text, glued):
    return {"cell_type": "markdown", "metadata": {"glued": glued}, "source": text}


def test_mismatches_finds_each_stated_number_in_order():
    nb = {"cells": [_cell("found 95.7% of 117 melanomas", ["sens", "n"])]}
    assert prose.mismatches(nb, {"sens": "95.7%", "n": 117}) == []
    swapped = {"cells": [_cell("117 melanomas, 95.7% found", ["sens", "n"])]}
    assert len(prose.mismatches(swapped, {"sens": "95.7%", "n": 117})) == 1


def test_mismatches_needs_whole_tokens():
    nb = {"cells": [_cell("an AUC of 0.827 and 3.5 points", ["auc", "k"])]}
    # "0.82" is inside "0.827" and "3" inside "3.5": neither is stated
    assert len(prose.mismatches(nb, {"auc": "0.82", "k": 3})) == 2


def test_mismatches_reports_a_key_nothing_glued():
    nb = {"cells": [_cell("an AUC of 0.827", ["auc"])]}
    assert "no cell glued it" in prose.mismatches(nb, {})[0]


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_prose_states_the_stored_outputs(path):
    nb = _load(path)
    assert prose.mismatches(nb, prose.stored_values(nb)) == []


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_no_glue_role_is_left_for_a_reader_to_see(path):
    text = "".join("".join(c["source"]) for c in _load(path)["cells"] if c["cell_type"] == "markdown")
    assert "{glue" not in text


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_each_chapter_checks_its_prose_before_its_exercises(path):
    cells = _load(path)["cells"]
    checks = [i for i, c in enumerate(cells) if "prose-check" in c["metadata"].get("tags", [])]
    assert len(checks) == 1, "one check_chapter cell"
    assert f'check_chapter("{path.name}")' in "".join(cells[checks[0]]["source"])
    first_exercise = next(i for i, c in enumerate(cells) if "{exercise}" in "".join(c["source"]))
    assert checks[0] < first_exercise


def test_a_changed_number_in_the_text_fails():
    """The deliberate change: chapter 9 §9.4 states the test sensitivity; edit it by hand."""
    path = REPO_ROOT / "chapters" / "09_evaluating_melanoma_detection.ipynb"
    nb = _load(path)
    values = prose.stored_values(nb)
    stated = prose.render(values["ch09_test_sens"])
    edited = copy.deepcopy(nb)
    cell = next(c for c in edited["cells"] if "ch09_test_sens" in c["metadata"].get("glued", []))
    cell["source"] = "".join(cell["source"]).replace(stated, "99.9%", 1)
    problems = prose.mismatches(edited, values)
    assert problems and "ch09_test_sens" in problems[0]


def test_a_changed_output_fails_the_chapter_check():
    """The same tie seen from the kernel: a re-run that glues another value fails check_chapter."""
    path = REPO_ROOT / "chapters" / "09_evaluating_melanoma_detection.ipynb"
    values = prose.stored_values(_load(path))
    prose.check_chapter(path.name, values)
    with pytest.raises(AssertionError, match="ch09_test_sens"):
        prose.check_chapter(path.name, {**values, "ch09_test_sens": "90.0%"})


# -- every other number in the prose -------------------------------------------------------
# A number in a chapter's text is (1) stated from an output (glued), (2) in a sentence that
# cites its source, (3) structural (a year, a section, chapter or exercise number, points), or
# (4) declared in the cell's metadata under "fixed" (a definition or a worked toy example).
STRIP = [r"(?m)^#+\s+[\d.]+", r"```.*?```", r"`[^`]*`", r"\$\$.*?\$\$", r"\$[^$]*\$", r"\]\([^)]*\)", r"<[^>]+>",
         r"https?://\S+", r"\bCC[- ]BY(?:-NC)?(?:-SA)?(?:-ND)?\s+\d\.\d\b", r"\bCC-?0\b"]  # licence names
NUMBER = re.compile(r"(?<![\w.])[-+−]?\d(?:[\d,]*\d)?(?:\.\d+)?(?![\w])")
SIZE = re.compile(r"\d+\s*[×x]\s*\d+")  # an image size, 256 × 256: a fact of the data
STRUCTURAL = re.compile(
    r"(?:chapters?|sections?|§|exercises?|Exercise|part|Part|Task|task|cell|step|figure|"
    r"table|ISIC|ISBI|Lite|v|\(|points?|level|stage)\s*$", re.IGNORECASE)


def unexplained_numbers(cell: dict, values: dict) -> list[str]:
    """The numbers of a markdown cell that are neither glued, cited, structural nor declared."""
    text = "".join(cell["source"])
    if "{exercise}" in text or "{solution}" in text:
        text = re.sub(r"```\{(exercise|solution)\}.*?```", " ", text, flags=re.S)
    meta = cell.get("metadata", {})
    covered = {prose.render(values[k.partition(":")[0]], k.partition(":")[2])
               for k in meta.get("glued", []) if k.partition(":")[0] in values}
    covered |= set(meta.get("fixed", []))
    # whole numbers only: "0" is not covered by a stated "4,010"
    covered_tokens = {m.group().lstrip("+-−") for c in covered for m in NUMBER.finditer(str(c))}
    for pattern in STRIP + [SIZE.pattern]:
        text = re.sub(pattern, " ", text, flags=re.S)
    found = []
    for sentence in re.split(r"(?<=[.;:!?])\s+(?=[A-Z(*])|\n\n|\n- ", text):
        if "{cite" in sentence or "Time and hardware" in sentence:  # the time has its own test
            continue
        for match in NUMBER.finditer(sentence):
            token = match.group().lstrip("+-−")
            before = sentence[:match.start()]
            plain = token.replace(",", "")
            if (token in covered_tokens or STRUCTURAL.search(before)
                    or (plain.isdigit() and 1900 <= int(plain) <= 2030)
                    or re.match(r"\d+(\.\d+)+\s", sentence[match.start():] + " ")
                    and re.match(r"#+ ", sentence)):
                continue
            found.append(token)
    return found


def test_unexplained_numbers_are_found():
    cell = {"source": "Of 600 images, 117 are melanomas (chapter 9) since 2017.",
            "metadata": {"glued": ["n"]}}
    assert unexplained_numbers(cell, {"n": 600}) == ["117"]
    cell["metadata"]["fixed"] = ["117"]
    assert unexplained_numbers(cell, {"n": 600}) == []
    assert unexplained_numbers({"source": "an AUC of 0.874 {cite}`x`.", "metadata": {}}, {}) == []
    licences = {"source": "CC BY-NC 4.0, unlike CC-0 or CC0, with 12 images.", "metadata": {}}
    assert unexplained_numbers(licences, {}) == ["12"]


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_every_number_in_the_prose_is_accounted_for(path):
    nb = _load(path)
    values = prose.stored_values(nb)
    left = {i: unexplained_numbers(c, values) for i, c in enumerate(nb["cells"])
            if c["cell_type"] == "markdown"}
    left = {i: found for i, found in left.items() if found}
    assert not left, f"numbers neither glued, cited nor declared, by cell: {left}"
