"""Chapter 5 (exploring metadata) on the REAL SIIM-ISIC 2020 ground truth.

The committed notebook runs on the synthetic samples (nbval checks it). Here
papermill reruns it with ``GT_CSV`` pointing at the official
``ISIC_2020_Training_GroundTruth.csv`` in ``../shared/datasets`` and the counts
its summary cell prints must equal the published ones (Rotemberg et al. 2021).
"""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
CHAPTER = REPO_ROOT / "chapters" / "05_exploring_metadata.ipynb"
REAL_CSV = (REPO_ROOT.parent / "shared" / "datasets" / "challenge-ground-truth"
            / "ISIC_2020_Training_GroundTruth.csv")
PUBLISHED = {"images": 33126, "melanoma": 584, "patients": 2056, "patients with melanoma": 428}
SUMMARY_CELL = "summary-counts"


def stdout(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.output_type == "stream")


def printed_counts(nb) -> dict[str, str]:
    """``{key: value}`` from the ``key: value`` lines of the chapter's summary cell."""
    cells = [c for c in nb.cells if c.get("id") == SUMMARY_CELL]
    assert len(cells) == 1, f"expected one cell with id {SUMMARY_CELL!r}"
    assert cells[0].source.startswith("# NBVAL_CHECK_OUTPUT")
    return dict(re.findall(r"^([a-z ]+): (\S+)$", stdout(cells[0]), flags=re.M))


def test_committed_chapter_prints_the_sample_counts():
    """The stored outputs (synthetic samples) show the counts of data_samples/README.md."""
    counts = printed_counts(nbformat.read(CHAPTER, as_version=4))
    assert {k: int(counts[k]) for k in ("images", "patients", "patients with melanoma")} == {
        "images": 300, "patients": 40, "patients with melanoma": 32}
    # the samples raise the melanoma fraction far above the real 1.76 %
    assert float(counts["melanoma fraction"].rstrip("%")) > 10


def test_chapter_reproduces_published_counts_on_real_file(tmp_path):
    if not REAL_CSV.is_file():
        pytest.skip(f"{REAL_CSV} absent (real ISIC files live in ../shared/datasets)")
    papermill = pytest.importorskip("papermill")
    nb = papermill.execute_notebook(
        str(CHAPTER), str(tmp_path / "05_real.ipynb"), parameters={"GT_CSV": str(REAL_CSV)},
        cwd=str(CHAPTER.parent), kernel_name="python3", progress_bar=False)
    counts = printed_counts(nb)
    assert {k: int(counts[k]) for k in PUBLISHED} == PUBLISHED
    assert float(counts["median images per patient"]) == 12
    assert counts["melanoma fraction"] == "1.76%"
    everything = "\n".join(stdout(c) for c in nb.cells if c.cell_type == "code")
    assert "(real, 33126 training rows, no images)" in everything
    assert "no images: GT_CSV is a label file only" in everything
    assert "/work" not in everything and str(REPO_ROOT) not in everything
