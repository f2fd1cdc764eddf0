"""Property tests (hypothesis) of helpers/datasets.py for the ISIC 2024 (SLICE-3D) files.

As tests/test_reliability_properties.py does for the older formats: hypothesis draws a small
table of valid rows of train-metadata.csv, test-metadata.csv or sample_submission.csv and
writes it twice, canonically (official column order, LF, final newline) and as a variant
(columns shuffled, CRLF, no final newline, a BOM, quoted cells); both must read to the same
tidy frame, with the drawn ids, targets and measurements.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from isic_metadata.diagnosis_hierarchical import DiagnosisEnum

from helpers import datasets as ds

FORMATS = {f.name: f for f in ds.FORMATS}
PATHS = ["Benign", *(e.value for e in DiagnosisEnum if 1 <= e.value.count(":") <= 2)]
NUMBER = st.sampled_from([None, 0.0, 3.39651, -84.29282, 1303.978, 8.052259e-13, 110.0])
TEXT = st.sampled_from([None, "Torso Back", "Torso Back Top Third", "3D: XP", "Left Arm - Upper",
                        "Hospital A, Spain", "CC-BY"])


def _cell(value) -> str:
    return "" if value is None else str(value)


def _render(columns: list[str], rows: list[dict], quote: bool, eol: str, final: bool,
            bom: bool) -> bytes:
    def cell(value) -> str:
        text = _cell(value)
        return f'"{text}"' if quote or "," in text else text
    lines = [",".join(columns)] + [",".join(cell(r[c]) for c in columns) for r in rows]
    return (b"\xef\xbb\xbf" if bom else b"") + (eol.join(lines) + (eol if final else "")).encode()


@st.composite
def rows_2024(draw, name: str) -> list[dict]:
    fmt = FORMATS[name]
    ids = draw(st.lists(st.integers(0, 9_999_999), min_size=1, max_size=5, unique=True))
    rows = []
    for n in ids:
        path = draw(st.sampled_from(PATHS)).split(":")
        row = {}
        for column in fmt.columns:
            kind = fmt.kinds.get(column, "str")
            row[column] = (f"ISIC_{n:07d}" if column == "isic_id" else
                           draw(st.sampled_from([0, 1])) if kind == "onehot" else
                           draw(st.sampled_from([0.0, 0.3, 1.0])) if column == "target" else
                           draw(st.sampled_from(["male", "female", None])) if kind == "sex" else
                           draw(st.sampled_from([*ds.GENERAL_SITES, None])) if kind.startswith("vocab:site")
                           else draw(NUMBER) if kind == "float" else draw(TEXT))
        if "iddx_1" in row:  # a consistent diagnosis path
            row.update({f"iddx_{i + 1}": (path + [None] * 5)[i] for i in range(5)},
                       iddx_full="::".join(path))
        rows.append(row)
    return rows


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["isic2024_train", "isic2024_test", "isic2024_submission"]), st.data())
def test_isic2024_files_read_the_same_however_written(name, data):
    rows = data.draw(rows_2024(name))
    columns = list(FORMATS[name].columns)
    shuffled = data.draw(st.permutations(columns))
    variant = _render(shuffled, rows, data.draw(st.booleans()), data.draw(st.sampled_from(["\n", "\r\n"])),
                      data.draw(st.booleans()), data.draw(st.booleans()))
    file_name = {"isic2024_train": "train-metadata.csv", "isic2024_test": "test-metadata.csv",
                 "isic2024_submission": "sample_submission.csv"}[name]
    with tempfile.TemporaryDirectory() as tmp:
        a, b = Path(tmp, "a", file_name), Path(tmp, "b", file_name)
        a.parent.mkdir()
        b.parent.mkdir()
        a.write_bytes(_render(columns, rows, False, "\n", True, False))
        b.write_bytes(variant)
        canonical, other = ds.read_labels(a, tidy=True), ds.read_labels(b, tidy=True)
    pd.testing.assert_frame_equal(canonical, other)
    assert canonical["source_id"].tolist() == [r["isic_id"] for r in rows]
    assert set(canonical["dataset"]) == {"isic2024"}
    if name == "isic2024_train":
        assert canonical["target"].tolist() == [r["target"] for r in rows]
        melanoma = [r["iddx_2"] == "Malignant melanocytic proliferations (Melanoma)" for r in rows]
        assert canonical["label"].eq("MEL").fillna(False).tolist() == melanoma
    else:
        assert canonical["target"].isna().all()  # test rows: unknown; a submission: a prediction
    for column in (c for c in ds.ISIC2024_FEATURES if c in columns and FORMATS[name].kinds.get(c) == "float"):
        expected = np.array([np.nan if r[column] is None else r[column] for r in rows], float)
        np.testing.assert_array_equal(canonical[column].to_numpy(), expected)
