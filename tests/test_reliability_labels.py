"""Reliability: malformed label and metadata files.

Every defect of an official CSV (a missing required column, an unknown
header, a duplicated image id, a label outside 0/1, a NaN target, an unknown
sex or site, ...) raises a ``ValueError`` naming the file, the row (the line
number in the file) and the column, whether the file has LF or CRLF line
endings and a UTF-8 BOM or not. ``python -m helpers`` turns it into one line
on stderr and exit code 2, without a traceback.
"""
from __future__ import annotations

import re

import pytest
from support import GT2019, SIIM_HEADER, SIIM_ROWS, run_cli, write

from helpers import datasets as ds
from helpers.__main__ import main

SIIM_NO_TARGET = SIIM_HEADER.rsplit(",", 1)[0]
HAM_HEADER = "lesion_id,image_id,dx,dx_type,age,sex,localization"

#: case -> (file name, lines, row, column, words of the message)
CASES = {
    "missing column (2019 SCC)": (
        "ISIC_2019_Training_GroundTruth.csv",
        ["image,MEL,NV,BCC,AK,BKL,DF,VASC,UNK", "ISIC_0000001,1,0,0,0,0,0,0,0"],
        1, "SCC", "required column missing"),
    "missing column (2020 target)": (
        "train.csv", [SIIM_NO_TARGET, SIIM_ROWS[0].rsplit(",", 1)[0]],
        1, "target", "required column missing"),
    "unknown header column": (
        "train.csv", [SIIM_HEADER + ",comment", SIIM_ROWS[0] + ",looks fine"],
        1, "comment", "unknown column"),
    "repeated header column": (
        "train.csv", [SIIM_HEADER + ",sex", SIIM_ROWS[0] + ",male"],
        1, "sex", "column name repeated"),
    "duplicated image id": (
        "ISIC_2019_Training_GroundTruth.csv",
        [GT2019, "ISIC_0000001,1,0,0,0,0,0,0,0,0", "ISIC_0000002,0,1,0,0,0,0,0,0,0",
         "ISIC_0000001,0,1,0,0,0,0,0,0,0"],
        4, "image", "duplicated image id 'ISIC_0000001' \\(first on row 2\\)"),
    "label 2 in a one-hot column": (
        "ISIC_2019_Training_GroundTruth.csv",
        [GT2019, "ISIC_0000001,0,1,0,0,0,0,0,0,0", "ISIC_0000002,0,0,2,0,0,0,0,0,0"],
        3, "BCC", "label must be 0 or 1"),
    "target 7": (
        "train.csv", [SIIM_HEADER, SIIM_ROWS[0][:-1] + "7"],
        2, "target", "label must be 0 or 1"),
    "two classes in one row": (
        "ISIC_2019_Training_GroundTruth.csv", [GT2019, "ISIC_0000001,1,1,0,0,0,0,0,0,0"],
        2, "NV", "labels are not one-hot"),
    "no class in a row": (
        "ISIC_2019_Training_GroundTruth.csv", [GT2019, "ISIC_0000001,0,0,0,0,0,0,0,0,0"],
        2, "MEL", "not one-hot.*got 0"),
    "blank target": (
        "train.csv", [SIIM_HEADER, SIIM_ROWS[0], "ISIC_0015719,IP_3075186,male,45.0,torso,nevus,benign,"],
        3, "target", "missing label"),
    "NaN target": (
        "train.csv", [SIIM_HEADER, SIIM_ROWS[0], "ISIC_0015719,IP_3075186,male,45.0,torso,nevus,benign,NaN"],
        3, "target", "not a number"),
    "target disagrees with benign_malignant": (
        "train.csv", [SIIM_HEADER, SIIM_ROWS[0][:-1] + "1"],
        2, "target", "disagrees with benign_malignant"),
    "unknown sex": (
        "train.csv", [SIIM_HEADER, SIIM_ROWS[0].replace(",male,", ",M,")],
        2, "sex", "unknown sex"),
    "unknown site": (
        "train.csv", [SIIM_HEADER, SIIM_ROWS[0], SIIM_ROWS[2].replace("torso", "elbow")],
        3, "anatom_site_general_challenge", "unknown value.*'elbow'"),
    "unknown HAM10000 localization": (
        "HAM10000_metadata.csv", [HAM_HEADER, "HAM_0000118,ISIC_0027419,bkl,histo,80.0,male,elbow"],
        2, "localization", "unknown value"),
    "age that is not a number": (
        "train.csv", [SIIM_HEADER, SIIM_ROWS[0].replace("45.0", "forty")],
        2, "age_approx", "not a number"),
    "mixed 2016 labels": (
        "ISBI2016_ISIC_Part3_Training_GroundTruth.csv", ["ISIC_0000000,benign", "ISIC_0000001,1.0"],
        2, "benign_malignant", "unknown value"),
    "blank line before the bad row": (
        "ISIC_2019_Training_GroundTruth.csv",
        [GT2019, "ISIC_0000001,1,0,0,0,0,0,0,0,0", "", "ISIC_0000002,0,0,0,0,0,0,0,0,7"],
        4, "UNK", "label must be 0 or 1"),
}
SPELLINGS = {"LF": {}, "CRLF+BOM": {"eol": "\r\n", "bom": True},
             "CRLF, no final newline": {"eol": "\r\n", "final": False}}


def _pattern(path, row: int, column: str, words: str) -> str:
    return rf"{re.escape(path.name)}: row {row}, column {re.escape(repr(column))}: .*{words}"


@pytest.mark.parametrize("spelling", sorted(SPELLINGS))
@pytest.mark.parametrize("case", sorted(CASES))
def test_defect_names_file_row_and_column(tmp_path, case, spelling):
    name, lines, row, column, words = CASES[case]
    path = write(tmp_path, name, lines, **SPELLINGS[spelling])
    with pytest.raises(ValueError, match=_pattern(path, row, column, words)):
        ds.read_labels(path)


@pytest.mark.parametrize("case", sorted(CASES))
def test_command_line_prints_one_line_and_exits_2(tmp_path, capsys, case):
    name, lines, row, column, words = CASES[case]
    folder = tmp_path / "download"
    path = write(folder, name, lines)
    code = main(["train", "--data-dir", str(folder), "--out", str(tmp_path / "run"),
                 "--no-progress", "--no-pretrained"])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.count("\n") == 1 and captured.err.startswith("error: ")
    assert re.search(_pattern(path, row, column, words), captured.err), captured.err
    assert "Traceback" not in captured.err + captured.out
    assert not (tmp_path / "run").exists()


def test_a_real_process_exits_2_without_traceback(tmp_path):
    folder = tmp_path / "download"
    name, lines, row, column, words = CASES["target 7"]
    write(folder, name, lines, eol="\r\n", bom=True)
    result = run_cli("train", "--data-dir", str(folder), "--out", str(tmp_path / "run"))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert "train.csv: row 2, column 'target': label must be 0 or 1" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "run").exists()


# moved from test_cli.py
def test_bad_data_dir_exits_2_with_one_line(tmp_path):
    result = run_cli("train", "--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run"))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert "nowhere" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


# moved from test_cli.py (its bad-CSV case is a row of CASES now)
def test_unknown_layout_exits_2(tmp_path, capsys):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "notes.csv").write_text("a,b\n1,2\n")
    assert main(["train", "--data-dir", str(folder), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "not a known download layout" in err


# moved from test_datasets.py
def test_unknown_header_names_file_header_and_formats(tmp_path):
    path = write(tmp_path, "mystery.csv", ["filename,score", "a.jpg,0.3"])
    with pytest.raises(ValueError) as info:
        ds.read_labels(path)
    message = str(info.value)
    assert "mystery.csv: row 1, column 'filename': unknown column" in message
    assert "filename,score" in message
    assert "isic2019_ground_truth" in message and "siim2020_train" in message


# moved from test_datasets.py
def test_empty_file(tmp_path):
    with pytest.raises(ValueError, match=r"empty\.csv: empty file"):
        ds.read_labels(write(tmp_path, "empty.csv", [], final=False))


# moved from test_datasets.py and extended: BOM and CRLF are accepted, not errors
@pytest.mark.parametrize("spelling", sorted(SPELLINGS))
def test_bom_and_crlf_read_like_lf(tmp_path, spelling):
    gt = write(tmp_path / spelling, "gt.csv",
               [GT2019, "ISIC_0000000_downsampled,0.0,1.0,0,0,0,0,0,0,0"], **SPELLINGS[spelling])
    frame = ds.read_labels(gt, tidy=True)
    assert frame["image_id"].tolist() == ["ISIC_0000000"] and frame["label"].tolist() == ["NV"]
    assert frame["source_id"].tolist() == ["ISIC_0000000_downsampled"]
    plain = ds.read_labels(write(tmp_path / "lf", "train.csv", [SIIM_HEADER, *SIIM_ROWS]))
    other = ds.read_labels(write(tmp_path / spelling, "train.csv", [SIIM_HEADER, *SIIM_ROWS],
                                 **SPELLINGS[spelling]))
    assert list(other.columns) == list(plain.columns)   # the BOM does not stick to 'image_name'
    assert other.equals(plain)
