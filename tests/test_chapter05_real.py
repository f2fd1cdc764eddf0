"""Chapter 5 (exploring metadata) on the REAL SIIM-ISIC 2020 ground truth.

The committed notebook analyses the official ``ISIC_2020_Training_GroundTruth.csv``
shipped in ``data_samples/challenge-ground-truth``. These tests read its stored
outputs: the summary counts must equal the published ones (Rotemberg et al. 2021)
and the diagnosis table must account for every row of the file. A last test
reruns the chapter with papermill on the SYNTHETIC sample folder (``GT_CSV = None``).
"""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from helpers import datasets as ds

REPO_ROOT = Path(__file__).resolve().parents[1]
CHAPTER = REPO_ROOT / "chapters" / "05_exploring_metadata.ipynb"
REAL_CSV = REPO_ROOT / "data_samples" / "challenge-ground-truth" / "ISIC_2020_Training_GroundTruth.csv"
PUBLISHED = {"images": 33126, "melanoma": 584, "patients": 2056, "patients with melanoma": 428}
SUMMARY_CELL = "summary-counts"
DIAGNOSIS_CELL = "ch05-10"


def stdout(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.output_type == "stream")


def cell(nb, cell_id: str):
    cells = [c for c in nb.cells if c.get("id") == cell_id]
    assert len(cells) == 1, f"expected one cell with id {cell_id!r}"
    return cells[0]


def printed_counts(nb) -> dict[str, str]:
    """``{key: value}`` from the ``key: value`` lines of the chapter's summary cell."""
    summary = cell(nb, SUMMARY_CELL)
    assert summary.source.startswith("# NBVAL_CHECK_OUTPUT")
    return dict(re.findall(r"^([a-z ]+): (\S+)$", stdout(summary), flags=re.M))


def diagnosis_table(nb) -> dict[str, int]:
    """``{diagnosis: images}`` parsed from the text of the table the diagnosis cell displays."""
    outputs = [o for o in cell(nb, DIAGNOSIS_CELL).outputs if o.output_type == "execute_result"]
    assert len(outputs) == 1, "the diagnosis cell must display one table"
    text = outputs[0]["data"]["text/plain"]
    rows = re.findall(r"^(\S.*?)\s+(\d+)\s+[\d.]+$", text, flags=re.M)
    return {name: int(n) for name, n in rows}


@pytest.fixture(scope="module")
def committed():
    return nbformat.read(CHAPTER, as_version=4)


def test_committed_chapter_prints_the_published_counts(committed):
    counts = printed_counts(committed)
    assert {k: int(counts[k]) for k in PUBLISHED} == PUBLISHED
    assert float(counts["median images per patient"]) == 12
    assert counts["melanoma fraction"] == "1.76%"


def test_committed_diagnosis_table_accounts_for_every_row(committed):
    table = diagnosis_table(committed)
    n_rows = len(ds.read_labels(REAL_CSV))
    assert n_rows == PUBLISHED["images"]
    assert sum(table.values()) == n_rows
    # the rare diagnoses a table aligned to another table's rows would drop
    assert {"seborrheic keratosis": 135, "lentigo nos": 44, "lichenoid keratosis": 37,
            "solar lentigo": 7, "cafe-au-lait macule": 1,
            "atypical melanocytic proliferation": 1}.items() <= table.items()
    assert table["melanoma"] == PUBLISHED["melanoma"]


def test_committed_chapter_reads_only_shipped_files(committed):
    text = "\n".join(c.source for c in committed.cells)
    outputs = "\n".join(stdout(c) for c in committed.cells if c.cell_type == "code")
    assert "../shared" not in text and "shared/datasets" not in text
    assert "/work" not in outputs and str(REPO_ROOT) not in outputs
    assert "real, 33,126 training rows, no images" in outputs


def test_chapter_runs_on_the_synthetic_sample(tmp_path):
    """The chapter's code on the synthetic sample; the hidden cells that check the text's
    verdicts and numbers describe the real data, so they are left out of this run."""
    papermill = pytest.importorskip("papermill")
    source = nbformat.read(CHAPTER, as_version=4)
    source.cells = [c for c in source.cells if not c.source.startswith("# The text says")
                    and "prose-check" not in c.metadata.get("tags", [])]
    code_only = tmp_path / CHAPTER.name
    nbformat.write(source, code_only)
    nb = papermill.execute_notebook(
        str(code_only), str(tmp_path / "05_synthetic.ipynb"), parameters={"GT_CSV": None},
        cwd=str(CHAPTER.parent), kernel_name="python3", progress_bar=False)
    counts = printed_counts(nb)
    # data_samples/README.md: 300 training images of 40 patients, 32 with a melanoma
    assert {k: int(counts[k]) for k in ("images", "patients", "patients with melanoma")} == {
        "images": 300, "patients": 40, "patients with melanoma": 32}
    assert float(counts["melanoma fraction"].rstrip("%")) > 10  # raised on purpose
    everything = "\n".join(stdout(c) for c in nb.cells if c.cell_type == "code")
    assert "SYNTHETIC, 300 training rows, with images" in everything
    assert sum(diagnosis_table(nb).values()) == 300
