"""Tests for helpers/datasets.py: official formats, layouts, combine, DermaMNIST.

Malformed label files (ValueError naming file, row and column; exit code 2 on
the command line) are tested at the end of this file, image ids and
symlinks that escape the data folder in test_reliability_paths.py, generated
spellings of every official format in test_datasets_properties.py.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from support import (
    GT2019,
    SIIM_HEADER,
    SIIM_ROWS,
    make_2020,
    run_cli,
    secret_image,
    touch_images,
    write,
)

from helpers import datasets as ds
from helpers.__main__ import main

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared" / "datasets"
GROUND_TRUTH = SHARED / "challenge-ground-truth"
UDA1 = SHARED / "isic-archive-uda1"
SAMPLES = REPO_ROOT / "data_samples"


def real(name: str) -> Path:
    path = GROUND_TRUTH / name
    if not path.is_file():
        pytest.skip(f"{path} absent (real ISIC files live in ../shared/datasets)")
    return path


# --------------------------------------------------------------------------
# Real official files: published counts
# --------------------------------------------------------------------------

def test_real_2020_counts():
    frame = ds.read_labels(real("ISIC_2020_Training_GroundTruth.csv"), tidy=True)
    assert len(frame) == 33_126
    assert int(frame["target"].sum()) == 584
    assert frame["patient_id"].nunique() == 2_056
    assert frame.loc[frame["target"] == 1, "patient_id"].nunique() == 428
    assert (frame["label"] == "MEL").sum() == 584
    assert set(frame["anatom_site"].dropna()) <= set(ds.SITES)
    assert frame["age_approx"].dtype == np.float64 and frame["age_approx"].isna().any()


def test_real_2019_counts_and_downsampled_ids():
    raw = ds.read_labels(real("ISIC_2019_Training_GroundTruth.csv"))
    assert raw.attrs["format"] == "isic2019_ground_truth" and str(raw["MEL"].dtype) == "Int8"
    frame = ds.to_tidy(raw)
    counts = frame["label"].value_counts().reindex(list(ds.LABELS), fill_value=0).to_dict()
    assert counts == {"NV": 12_875, "MEL": 4_522, "BCC": 3_323, "BKL": 2_624, "AK": 867,
                      "SCC": 628, "VASC": 253, "DF": 239, "UNK": 0}
    down = frame["source_id"].str.endswith("_downsampled")
    assert down.sum() == 2_074
    assert not frame["image_id"].str.contains("_downsampled").any()
    assert (frame.loc[down, "image_id"] + "_downsampled").equals(frame.loc[down, "source_id"])
    assert frame["image_id"].is_unique


def test_real_2019_layout_merges_metadata_and_warns_once(tmp_path):
    root = tmp_path / "isic-2019"
    root.mkdir()
    for name in ("ISIC_2019_Training_GroundTruth.csv", "ISIC_2019_Training_Metadata.csv"):
        (root / name).symlink_to(real(name))
    with pytest.warns(ds.MissingImagesWarning) as record:
        frame = ds.load_dataset(root)
    assert len(record) == 1 and "25,331 of 25,331" in str(record[0].message)
    assert len(frame) == 25_331 and frame["path"].isna().all()
    assert frame["lesion_id"].str.startswith("HAM_").sum() == 10_015
    assert set(frame["anatom_site"].dropna()) <= set(ds.SITES)
    torso = frame["anatom_site_original"].isin(["anterior torso", "posterior torso",
                                                "lateral torso"])
    assert (frame.loc[torso, "anatom_site"] == "torso").all() and torso.sum() > 0
    with pytest.raises(ValueError, match="not found"):
        ds.load_dataset(root, strict=True)


def test_real_2018_counts():
    frame = ds.read_labels(real("ISIC2018_Task3_Training_GroundTruth.csv"), tidy=True)
    assert frame["label"].value_counts().to_dict() == {
        "NV": 6_705, "MEL": 1_113, "BKL": 1_099, "BCC": 514, "AK": 327, "VASC": 142, "DF": 115}
    assert (frame["dataset"] == "isic2018").all() and (frame["split"] == "train").all()


def test_real_2017_counts():
    frame = ds.read_labels(real("ISIC-2017_Training_Part3_GroundTruth.csv"), tidy=True)
    assert len(frame) == 2_000
    assert frame["label"].value_counts().to_dict() == {"NV": 1_372, "MEL": 374, "BKL": 254}
    assert int(frame["target"].sum()) == 374


def test_real_uda1_archive_loads_with_every_image():
    if not (UDA1 / "metadata.csv").is_file():
        pytest.skip(f"{UDA1} absent (real ISIC images live in ../shared/datasets)")
    assert ds.detect_layout(UDA1) == "isic-archive"
    with warnings.catch_warnings():
        warnings.simplefilter("error", ds.MissingImagesWarning)
        frame = ds.load_dataset(UDA1, strict=True)
    assert len(frame) == 311 and int(frame["target"].sum()) == 103
    assert frame["target"].notna().all()
    assert (frame["label"] == "MEL").sum() == 103 and (frame["label"] == "NV").sum() == 206
    assert all(Path(p).is_file() for p in frame["path"])
    assert list(frame.columns) == list(ds.TIDY_COLUMNS)


# --------------------------------------------------------------------------
# Every official format, from small files written here
# --------------------------------------------------------------------------

@pytest.mark.parametrize("eol,final", [("\n", True), ("\r\n", True), ("\r\n", False),
                                       ("\n", False)])
def test_isic2016_training_and_test_without_header(tmp_path, eol, final):
    train = write(tmp_path, "ISBI2016_ISIC_Part3_Training_GroundTruth.csv",
                  ["ISIC_0000000,benign", "ISIC_0000002,malignant"], eol=eol, final=final)
    test = write(tmp_path, "ISBI2016_ISIC_Part3_Test_GroundTruth.csv",
                 ["ISIC_0000003,0.0", "ISIC_0000004,1.0"], eol=eol, final=final)
    a = ds.read_labels(train, tidy=True)
    assert a["target"].tolist() == [0, 1] and a["label"].isna().tolist() == [True, False]
    assert a["label"].iloc[1] == "MEL" and (a["split"] == "train").all()
    b = ds.read_labels(test, tidy=True)
    assert ds.read_labels(test).attrs["format"] == "isic2016_test"
    assert b["target"].tolist() == [0, 1] and (b["split"] == "test").all()
    assert b["image_id"].tolist() == ["ISIC_0000003", "ISIC_0000004"]


def test_isic2017_splits_from_file_names_and_metadata_unknown(tmp_path):
    rows = ["image_id,melanoma,seborrheic_keratosis", "ISIC_0001769,0.0,0.0",
            "ISIC_0001852,1.0,0.0", "ISIC_0001871,0.0,1.0"]
    val = ds.read_labels(write(tmp_path, "ISIC-2017_Validation_Part3_GroundTruth.csv", rows,
                               eol="\r\n"), tidy=True)
    test = ds.read_labels(write(tmp_path, "ISIC-2017_Test_v2_Part3_GroundTruth.csv", rows),
                          tidy=True)
    assert (val["split"] == "val").all() and (test["split"] == "test").all()
    assert val["label"].tolist() == ["NV", "MEL", "BKL"]
    assert val["diagnosis"].tolist() == ["nevus", "melanoma", "seborrheic keratosis"]
    meta = ds.read_labels(write(tmp_path, "ISIC-2017_Validation_Data_metadata.csv", [
        "image_id,age_approximate,sex", "ISIC_0001769,unknown,unknown", "ISIC_0001852,55,female",
        "ISIC_0001871,,"]))
    assert meta.attrs["format"] == "isic2017_metadata"
    assert meta["sex"].isna().tolist() == [True, False, True]
    assert meta["age_approximate"].isna().tolist() == [True, False, True]


def test_isic2018_test_ground_truth_lf_equals_crlf(tmp_path):
    rows = ["image,MEL,NV,BCC,AKIEC,BKL,DF,VASC", "ISIC_0034524,0.0,1.0,0.0,0.0,0.0,0.0,0.0",
            "ISIC_0034525,0.0,0.0,0.0,1.0,0.0,0.0,0.0"]
    lf = ds.read_labels(write(tmp_path / "a", "ISIC2018_Task3_Test_GroundTruth.csv", rows),
                        tidy=True)
    crlf = ds.read_labels(write(tmp_path / "b", "ISIC2018_Task3_Test_GroundTruth.csv", rows,
                                eol="\r\n", final=False), tidy=True)
    pd.testing.assert_frame_equal(lf, crlf)
    assert lf["label"].tolist() == ["NV", "AK"] and (lf["split"] == "test").all()


def test_ham10000_with_and_without_dataset_column(tmp_path):
    header = "lesion_id,image_id,dx,dx_type,age,sex,localization"
    rows = ["HAM_0000118,ISIC_0027419,bkl,histo,80.0,male,scalp",
            "HAM_0002730,ISIC_0026769,mel,histo,,unknown,unknown",
            "HAM_0001466,ISIC_0031633,akiec,histo,75.0,female,acral"]
    plain = ds.read_labels(write(tmp_path, "a/HAM10000_metadata.csv", [header, *rows]), tidy=True)
    extra = ds.read_labels(write(tmp_path, "b/HAM10000_metadata.csv",
                                 [header + ",dataset"] + [r + ",vidir_modern" for r in rows]),
                           tidy=True)
    pd.testing.assert_frame_equal(plain, extra)
    assert plain["label"].tolist() == ["BKL", "MEL", "AK"]
    assert plain["anatom_site"].tolist()[0::2] == ["head/neck", "palms/soles"]
    assert plain["anatom_site_original"].iloc[0] == "scalp"
    assert pd.isna(plain["sex"].iloc[1]) and pd.isna(plain["anatom_site"].iloc[1])
    assert np.isnan(plain["age_approx"].iloc[1]) and plain["target"].tolist() == [0, 1, 0]
    assert (plain["dataset"] == "ham10000").all()


def test_siim2020_train_csv_equals_v1_ground_truth(tmp_path):
    kaggle = ds.read_labels(write(tmp_path, "train.csv", [SIIM_HEADER, *SIIM_ROWS]), tidy=True)
    v1_rows = [r.replace("45.0", "45").replace("50.0", "50") for r in SIIM_ROWS]
    v1 = ds.read_labels(write(tmp_path, "ISIC_2020_Training_GroundTruth.csv",
                              [SIIM_HEADER, *v1_rows], eol="\r\n", final=False), tidy=True)
    pd.testing.assert_frame_equal(kaggle, v1)
    assert kaggle["age_approx"].tolist()[0::2] == [45.0, 50.0]
    assert kaggle["label"].tolist()[1:] == ["NV", "MEL"] and pd.isna(kaggle["label"].iloc[0])
    assert pd.isna(kaggle["diagnosis"].iloc[0]) and kaggle["target"].tolist() == [0, 0, 1]


def test_siim2020_v2_test_submission_and_duplicates(tmp_path):
    v2 = ds.read_labels(write(tmp_path, "ISIC_2020_Training_GroundTruth_v2.csv", [
        "image_name,patient_id,lesion_id,sex,age_approx,anatom_site_general_challenge,diagnosis,"
        "benign_malignant,target",
        "ISIC_2637011,IP_7279968,IL_7972535,male,45,head/neck,unknown,benign,0"], eol="\r\n"),
        tidy=True)
    assert v2["lesion_id"].tolist() == ["IL_7972535"] and v2["patient_id"].iloc[0] == "IP_7279968"
    test = ds.read_labels(write(tmp_path, "test.csv", [
        "image_name,patient_id,sex,age_approx,anatom_site_general_challenge",
        "ISIC_0052060,IP_3579794,male,70.0,"]), tidy=True)
    assert test["split"].tolist() == ["test"] and test["target"].isna().all()
    sub = ds.read_labels(write(tmp_path, "sample_submission.csv",
                               ["image_name,target", "ISIC_0052060,0"]))
    assert sub.attrs["format"] == "siim2020_submission"
    assert ds.to_tidy(sub)["target"].isna().all()  # a prediction is not a label
    dup = ds.read_labels(write(tmp_path, "ISIC_2020_Training_Duplicates.csv",
                               ["image_name_1,image_name_2", "ISIC_0000001,ISIC_0000002"]))
    assert dup.attrs["format"] == "siim2020_duplicates"
    with pytest.raises(ValueError, match="pairs"):
        ds.to_tidy(dup)


def test_isic2019_test_metadata(tmp_path):
    frame = ds.read_labels(write(tmp_path, "ISIC_2019_Test_Metadata.csv", [
        "image,age_approx,anatom_site_general,sex", "ISIC_0034321,60.0,posterior torso,male",
        "ISIC_0034322,,,"], eol="\r\n"), tidy=True)
    assert frame["split"].tolist() == ["test", "test"]
    assert frame["anatom_site"].iloc[0] == "torso" and frame["label"].isna().all()


ARCHIVE_HEADER = ("isic_id,attribution,copyright_license,age_approx,anatom_site_general,"
                  "diagnosis_1,diagnosis_2,diagnosis_3,diagnosis_4,diagnosis_5,"
                  "diagnosis_confirm_type,image_type,lesion_id,melanocytic,patient_id,pixels_x,"
                  "pixels_y,sex")


def test_isic_archive_today_diagnosis_hierarchy(tmp_path):
    rows = [
        'ISIC_9000001,"Hospital A, Spain",CC-BY,55,anterior torso,Malignant,Malignant melanocytic '
        "proliferations (Melanoma),Melanoma Invasive,,,histopathology,dermoscopic,IL_0000001,True,"
        "IP_0000001,1024,768,female",
        "ISIC_9000002,Anonymous,CC-0,40,head/neck,Benign,Benign melanocytic proliferations,Nevus,,,"
        ",dermoscopic,IL_0000002,True,IP_0000001,1024,768,female",
        "ISIC_9000003,Anonymous,CC-0,,,Malignant,Malignant adnexal epithelial proliferations - "
        "Follicular,Basal cell carcinoma,,,,dermoscopic,,False,,600,450,",
        "ISIC_9000004,Anonymous,CC-0,,,Benign,,,,,,dermoscopic,,,,600,450,",
        "ISIC_9000005,Anonymous,CC-0,,,Benign,Cysts,,,,,dermoscopic,,,,600,450,male",
        "ISIC_9000006,Anonymous,CC-0,,,,,,,,,dermoscopic,,,,600,450,male",
    ]
    raw = ds.read_labels(write(tmp_path, "metadata.csv", [ARCHIVE_HEADER, *rows]))
    assert raw.attrs["format"] == "isic_archive"
    assert str(raw["melanocytic"].dtype) == "boolean" and str(raw["pixels_x"].dtype) == "Int64"
    frame = ds.to_tidy(raw)
    assert frame["label"].tolist()[:3] == ["MEL", "NV", "BCC"]
    assert pd.isna(frame["label"].iloc[3]) and frame["label"].iloc[4] == "UNK"
    assert frame["target"].tolist()[:5] == [1, 0, 0, 0, 0] and pd.isna(frame["target"].iloc[5])
    assert frame["diagnosis"].tolist()[:2] == ["melanoma invasive", "nevus"]
    assert frame["anatom_site"].tolist()[:2] == ["torso", "head/neck"]
    assert frame["patient_id"].iloc[0] == "IP_0000001"


def test_isic_archive_legacy(tmp_path):
    frame = ds.read_labels(write(tmp_path, "metadata.csv", [
        "isic_id,attribution,copyright_license,age_approx,sex,benign_malignant,diagnosis,"
        "diagnosis_confirm_type,melanocytic,image_type,pixels_x,pixels_y",
        "ISIC_0000000,Anonymous,CC-0,55,female,benign,nevus,,True,dermoscopic,1022,767",
        "ISIC_0000002,Anonymous,CC-0,60,female,malignant,melanoma,histopathology,True,"
        "dermoscopic,1022,767",
        "ISIC_0000257,Anonymous,CC-0,15,male,benign,,,,dermoscopic,1022,767"]), tidy=True)
    assert frame["target"].tolist() == [0, 1, 0]
    assert frame["label"].tolist()[:2] == ["NV", "MEL"] and pd.isna(frame["label"].iloc[2])


# --------------------------------------------------------------------------
# Layouts
# --------------------------------------------------------------------------

def make_2018(root: Path, with_images: bool = True) -> Path:
    header = "image,MEL,NV,BCC,AKIEC,BKL,DF,VASC"
    write(root, "ISIC2018_Task3_Training_GroundTruth/ISIC2018_Task3_Training_GroundTruth.csv",
          [header, "ISIC_0024306,0.0,1.0,0.0,0.0,0.0,0.0,0.0",
           "ISIC_0024307,1.0,0.0,0.0,0.0,0.0,0.0,0.0"], eol="\r\n")
    write(root, "ISIC2018_Task3_Validation_GroundTruth/ISIC2018_Task3_Validation_GroundTruth.csv",
          [header, "ISIC_0034321,0.0,1.0,0.0,0.0,0.0,0.0,0.0"], eol="\r\n")
    write(root, "ISIC2018_Task3_Test_GroundTruth.csv",
          [header, "ISIC_0034524,0.0,0.0,0.0,0.0,0.0,0.0,1.0"])
    write(root, "HAM10000_metadata.csv", [
        "lesion_id,image_id,dx,dx_type,age,sex,localization,dataset",
        "HAM_0000118,ISIC_0024306,nv,follow_up,45.0,male,back,vidir_molemax",
        "HAM_0000119,ISIC_0024307,mel,histo,70.0,female,face,vidir_modern"])
    if with_images:
        touch_images(root / "ISIC2018_Task3_Training_Input", ["ISIC_0024306", "ISIC_0024307"])
        touch_images(root / "ISIC2018_Task3_Validation_Input", ["ISIC_0034321"])
        touch_images(root / "ISIC2018_Task3_Test_Input", ["ISIC_0034524"])
    return root


def make_2019(root: Path) -> Path:
    write(root, "ISIC_2019_Training_GroundTruth.csv", [
        GT2019, "ISIC_0024306,0.0,1.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0",
        "ISIC_0000002_downsampled,1.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0"], eol="\r\n")
    write(root, "ISIC_2019_Training_Metadata.csv", [
        "image,age_approx,anatom_site_general,lesion_id,sex",
        "ISIC_0024306,45.0,posterior torso,HAM_0000118,male",
        "ISIC_0000002_downsampled,60.0,,,"], eol="\r\n")
    write(root, "ISIC_2019_Test_Metadata.csv", ["image,age_approx,anatom_site_general,sex",
                                                "ISIC_0034321,50.0,head/neck,female"])
    touch_images(root / "ISIC_2019_Training_Input", ["ISIC_0024306", "ISIC_0000002_downsampled"])
    touch_images(root / "ISIC_2019_Test_Input", ["ISIC_0034321"])
    return root


def make_2017(root: Path) -> Path:
    for word, ids in (("Training", ["ISIC_0000002", "ISIC_0000004"]),
                      ("Validation", ["ISIC_0001769"]), ("Test_v2", ["ISIC_0012086"])):
        write(root, f"ISIC-2017_{word}_Part3_GroundTruth.csv",
              ["image_id,melanoma,seborrheic_keratosis", *[f"{i},1.0,0.0" for i in ids]],
              eol="\r\n")
        write(root, f"ISIC-2017_{word}_Data/ISIC-2017_{word}_Data_metadata.csv",
              ["image_id,age_approximate,sex", *[f"{i},60,female" for i in ids]])
        touch_images(root / f"ISIC-2017_{word}_Data", ids)
        touch_images(root / f"ISIC-2017_{word}_Data", [f"{i}_superpixels" for i in ids], ".png")
    return root


def make_2016(root: Path) -> Path:
    write(root, "ISBI2016_ISIC_Part3_Training_GroundTruth.csv",
          ["ISIC_0000002,malignant", "ISIC_0000009,benign"])
    write(root, "ISBI2016_ISIC_Part3_Test_GroundTruth.csv", ["ISIC_0000003,0.0"])
    touch_images(root / "ISBI2016_ISIC_Part3_Training_Data", ["ISIC_0000002", "ISIC_0000009"])
    touch_images(root / "ISBI2016_ISIC_Part3_Test_Data", ["ISIC_0000003"])
    return root


def test_load_isic_2018_merges_ham_metadata(tmp_path):
    frame = ds.load_dataset(make_2018(tmp_path / "x"), strict=True)
    assert ds.detect_layout(tmp_path / "x") == "isic-2018-task3"
    assert frame["split"].tolist() == ["train", "train", "val", "test"]
    assert (frame["dataset"] == "isic2018").all() and frame["path"].notna().all()
    assert frame["lesion_id"].tolist()[:2] == ["HAM_0000118", "HAM_0000119"]
    assert frame["anatom_site"].tolist()[:2] == ["torso", "head/neck"]
    assert frame["age_approx"].tolist()[:2] == [45.0, 70.0]
    assert frame["label"].tolist() == ["NV", "MEL", "NV", "VASC"]


def test_load_ham10000_only(tmp_path):
    root = tmp_path / "ham"
    write(root, "HAM10000_metadata.csv", [
        "lesion_id,image_id,dx,dx_type,age,sex,localization",
        "HAM_0000118,ISIC_0027419,bkl,histo,80.0,male,scalp",
        "HAM_0000118,ISIC_0025030,bkl,histo,80.0,male,scalp"])
    touch_images(root / "HAM10000_images_part_1", ["ISIC_0027419"])
    touch_images(root / "HAM10000_images_part_2", ["ISIC_0025030"])
    assert ds.detect_layout(root) == "ham10000"
    frame = ds.load_dataset(root, strict=True)
    assert (frame["dataset"] == "ham10000").all() and frame["path"].str.contains("part_2").sum() == 1


def test_load_isic_2019_2017_2016(tmp_path):
    f19 = ds.load_dataset(make_2019(tmp_path / "a"), strict=True)
    assert f19["image_id"].tolist() == ["ISIC_0024306", "ISIC_0000002", "ISIC_0034321"]
    assert f19["path"].iloc[1].endswith("ISIC_0000002_downsampled.jpg")
    assert f19["split"].tolist() == ["train", "train", "test"]
    assert f19["anatom_site_original"].iloc[0] == "posterior torso"
    f17 = ds.load_dataset(make_2017(tmp_path / "b"), strict=True)
    assert f17["split"].tolist() == ["train", "train", "val", "test"]
    assert (f17["sex"] == "female").all() and f17["path"].str.endswith(".jpg").all()
    f16 = ds.load_dataset(make_2016(tmp_path / "c"), strict=True)
    assert f16["split"].tolist() == ["train", "train", "test"]
    assert f16["target"].tolist() == [1, 0, 0]


def test_load_siim_2020_prefers_train_csv_and_takes_v2_lesions(tmp_path):
    root = make_2020(tmp_path / "siim")
    assert ds.detect_layout(root) == "siim-isic-2020"
    frame = ds.load_dataset(root, strict=True)
    assert frame["split"].tolist() == ["train", "train", "train", "test"]
    assert frame["age_approx"].iloc[0] == 45.0  # from train.csv
    assert frame["lesion_id"].tolist()[:3] == ["IL_0000001", "IL_0000001", "IL_0000002"]
    assert frame["path"].iloc[2].endswith(".dcm") and frame["path"].iloc[0].endswith(".jpg")


def test_missing_images_one_warning_with_count_and_examples(tmp_path):
    root = make_2018(tmp_path / "x", with_images=False)
    touch_images(root / "ISIC2018_Task3_Training_Input", ["ISIC_0024306"])
    with pytest.warns(ds.MissingImagesWarning) as record:
        frame = ds.load_dataset(root)
    assert len(record) == 1
    message = str(record[0].message)
    assert "3 of 4" in message and "ISIC_0024307" in message
    assert frame["path"].isna().sum() == 3
    with pytest.raises(ValueError, match="3 of 4"):
        ds.load_dataset(root, strict=True)


def test_unknown_layout_and_load_all(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a known download layout"):
        ds.load_dataset(tmp_path / "empty")
    make_2016(tmp_path / "isic-2016")
    make_2018(tmp_path / "isic-2018-task3")
    frames = ds.load_all(tmp_path, strict=True)
    assert list(frames) == ["isic-2016", "isic-2018-task3"]
    assert set(frames["isic-2016"]["dataset"]) == {"isic2016"}


# --------------------------------------------------------------------------
# combine
# --------------------------------------------------------------------------

def test_combine_keeps_most_specific_source_and_fills_metadata(tmp_path):
    f18 = ds.load_dataset(make_2018(tmp_path / "a"), strict=True)
    f19 = ds.load_dataset(make_2019(tmp_path / "b"), strict=True)
    f17 = ds.load_dataset(make_2017(tmp_path / "c"), strict=True)
    f16 = ds.load_dataset(make_2016(tmp_path / "d"), strict=True)
    both = ds.combine([f16, f17, f18, f19])
    assert both["image_id"].is_unique
    assert list(both.columns) == [*ds.TIDY_COLUMNS, "duplicate"]
    rows = both.set_index("image_id")
    # ISIC_0000002: 2016, 2017 and (as _downsampled) 2019 -> the 2019 row
    assert rows.loc["ISIC_0000002", "dataset"] == "isic2019"
    assert rows.loc["ISIC_0000002", "source_id"] == "ISIC_0000002_downsampled"
    assert rows.loc["ISIC_0000002", "age_approx"] == 60.0  # the 2019 row's own value
    assert rows.loc["ISIC_0000002", "sex"] == "female"  # 2019 blank: filled from 2017
    # ISIC_0024306: 2018 (with HAM metadata) and 2019 -> 2019, metadata kept
    assert rows.loc["ISIC_0024306", "dataset"] == "isic2019"
    assert rows.loc["ISIC_0024306", "lesion_id"] == "HAM_0000118"
    # ISIC_0034321: 2018 val (labelled) and 2019 test (unlabelled): the 2019 row wins
    assert rows.loc["ISIC_0034321", "dataset"] == "isic2019"
    assert rows.loc["ISIC_0000009", "dataset"] == "isic2016"
    assert len(both) == len(set(pd.concat([f16, f17, f18, f19])["image_id"]))
    assert not both["duplicate"].any()


def test_combine_marks_siim_duplicates_from_v2_and_pairs(tmp_path):
    f20 = ds.load_dataset(make_2020(tmp_path / "siim"), strict=True)
    out = ds.combine([f20])
    assert out["duplicate"].tolist() == [False, True, False, False]
    write(tmp_path, "dups.csv", ["image_name_1,image_name_2", "ISIC_0052212,ISIC_0052060"])
    out = ds.combine([f20], duplicates=tmp_path / "dups.csv")
    assert out["duplicate"].tolist() == [False, True, False, True]
    write(tmp_path / "siim", "ISIC_2020_Training_Duplicates.csv",
          ["image_name_1,image_name_2", "ISIC_2637011,ISIC_0052212"])
    out = ds.combine([ds.load_dataset(tmp_path / "siim")])
    assert out["duplicate"].tolist() == [False, True, True, False]
    assert out["duplicate"].dtype == "boolean"


# --------------------------------------------------------------------------
# DermaMNIST
# --------------------------------------------------------------------------

def make_npz(path: Path, labels_train=(4, 5, 0)) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, labels in (("train", labels_train), ("val", (6,)), ("test", (1, 2))):
        arrays[f"{split}_images"] = rng.integers(0, 255, (len(labels), 28, 28, 3), dtype=np.uint8)
        arrays[f"{split}_labels"] = np.array(labels, dtype=np.uint8).reshape(-1, 1)
    np.savez(path, **arrays)
    return path


def test_read_dermamnist(tmp_path):
    data = ds.read_dermamnist(make_npz(tmp_path / "dermamnist.npz"))
    assert set(data) == {"train", "val", "test"}
    images, labels = data["train"]
    assert images.shape == (3, 28, 28, 3) and images.dtype == np.uint8
    assert labels.tolist() == [4, 5, 0] and labels.ndim == 1
    assert [ds.DERMAMNIST_LABELS[i] for i in labels] == ["MEL", "NV", "AK"]
    with pytest.raises(ValueError, match="row 2, column train_labels: class 7"):
        ds.read_dermamnist(make_npz(tmp_path / "bad.npz", labels_train=(4, 7)))
    np.savez(tmp_path / "short.npz", train_images=np.zeros((1, 28, 28, 3), np.uint8))
    with pytest.raises(ValueError, match="missing arrays"):
        ds.read_dermamnist(tmp_path / "short.npz")


# --------------------------------------------------------------------------
# data_samples/ (written by `python -m tools.samples`)
# --------------------------------------------------------------------------

EXPECTED_SAMPLES = {
    "siim-isic-2020": ({"siim-isic-2020"}, {"train", "test"}),
    "isic-2019": ({"isic2019"}, {"train", "test"}),
    "isic-2018-task3": ({"isic2018"}, {"train", "val", "test"}),
    "isic-2017": ({"isic2017"}, {"train", "val", "test"}),
    "isic-2016": ({"isic2016"}, {"train", "test"}),
    "isic-archive": ({"isic-archive"}, {"train"}),
    "isic-2024": ({"isic2024"}, {"train", "test"}),
}


@pytest.mark.parametrize("layout", sorted(EXPECTED_SAMPLES))
def test_data_samples_layouts_load_without_missing_images(layout):
    folder = SAMPLES / layout
    if not folder.is_dir() or not any(folder.iterdir()):
        pytest.skip(f"data_samples/{layout} absent (run `python -m tools.samples`)")
    assert ds.detect_layout(folder) == layout
    frame = ds.load_dataset(folder, strict=True)  # strict: a missing image raises
    datasets, splits = EXPECTED_SAMPLES[layout]
    assert set(frame["dataset"]) == datasets and set(frame["split"]) == splits
    assert frame["path"].notna().all() and frame["image_id"].is_unique
    kept = ds.ISIC2024_FEATURES if layout == "isic-2024" else []
    assert list(frame.columns) == [*ds.TIDY_COLUMNS, *kept]


def test_data_samples_combine_drops_cross_challenge_copies():
    if not SAMPLES.is_dir() or not any(p.is_dir() for p in SAMPLES.iterdir()):
        pytest.skip("data_samples/ absent (run `python -m tools.samples`)")
    frames = ds.load_all(SAMPLES, strict=True)
    assert set(EXPECTED_SAMPLES) <= set(frames)
    everything = pd.concat(list(frames.values()), ignore_index=True)
    both = ds.combine(frames.values())
    assert len(both) == everything["image_id"].nunique() < len(everything)
    ham_train = frames["isic-2018-task3"].query("split == 'train'")["image_id"]
    kept = both.set_index("image_id").loc[ham_train, "dataset"]
    assert (kept == "isic2019").all()  # 2019 re-labelled the HAM10000 images with 9 classes
    assert both["duplicate"].sum() > 0


# --------------------------------------------------------------------------
# Headers: every known format is recognised, anything else is refused
# --------------------------------------------------------------------------

#: The ISIC 2024 (SLICE-3D) Kaggle files: test-metadata.csv's header and a row of the public
#: file (CC-BY, FNQH Cairns); train-metadata.csv adds ``target`` and the train-only columns.
TEST_2024 = (
    "isic_id,patient_id,age_approx,sex,anatom_site_general,clin_size_long_diam_mm,image_type,"
    "tbp_tile_type,tbp_lv_A,tbp_lv_Aext,tbp_lv_B,tbp_lv_Bext,tbp_lv_C,tbp_lv_Cext,tbp_lv_H,"
    "tbp_lv_Hext,tbp_lv_L,tbp_lv_Lext,tbp_lv_areaMM2,tbp_lv_area_perim_ratio,"
    "tbp_lv_color_std_mean,tbp_lv_deltaA,tbp_lv_deltaB,tbp_lv_deltaL,tbp_lv_deltaLB,"
    "tbp_lv_deltaLBnorm,tbp_lv_eccentricity,tbp_lv_location,tbp_lv_location_simple,"
    "tbp_lv_minorAxisMM,tbp_lv_nevi_confidence,tbp_lv_norm_border,tbp_lv_norm_color,"
    "tbp_lv_perimeterMM,tbp_lv_radial_color_std_max,tbp_lv_stdL,tbp_lv_stdLExt,tbp_lv_symm_2axis,"
    "tbp_lv_symm_2axis_angle,tbp_lv_x,tbp_lv_y,tbp_lv_z,attribution,copyright_license")
ROW_2024 = (
    "ISIC_0015740,IP_7142616,65.0,male,posterior torso,3.16,TBP tile: close-up,3D: XP,24.25384,"
    "19.93738,30.46368,28.38424,38.9395,34.68666,51.47473,54.91541,35.81945,41.35864,3.39651,"
    "19.4644,0.2512358,4.316465,2.079433,-5.539191,6.041092,5.446997,0.8947765,"
    "Torso Back Top Third,Torso Back,1.520786,8.052259e-13,3.968912,0.7217392,8.130868,0.2307418,"
    "1.080308,2.705857,0.3660714,110,-84.29282,1303.978,-28.57605,FNQH Cairns,CC-BY")
TRAIN_ONLY_2024 = ("lesion_id,iddx_full,iddx_1,iddx_2,iddx_3,iddx_4,iddx_5,mel_mitotic_index,"
                   "mel_thick_mm,tbp_lv_dnn_lesion_confidence")
TRAIN_2024 = TEST_2024.replace("isic_id,", "isic_id,target,", 1) + "," + TRAIN_ONLY_2024


def train_2024_row(isic_id: str, target: int, iddx: str = "Benign", extra: str = "") -> str:
    """A train-metadata.csv row: the public test row's measurements, the given label."""
    levels = (iddx.split("::") + [""] * 5)[:5]
    rest = f"{extra or ''},{iddx},{','.join(levels)},,,97.5"
    return ROW_2024.replace("ISIC_0015740,", f"{isic_id},{target},", 1) + "," + rest


GT2017 = "image_id,melanoma,seborrheic_keratosis"
#: format -> (file name, lines, tidy dataset, tidy split): one file of every known format.
KNOWN = {
    "isic2016_train": ("ISBI2016_ISIC_Part3_Training_GroundTruth.csv", ["ISIC_0000000,benign"],
                       "isic2016", "train"),
    "isic2016_test": ("ISBI2016_ISIC_Part3_Test_GroundTruth.csv", ["ISIC_0000003,1.0"],
                      "isic2016", "test"),
    "isic2017_ground_truth": ("ISIC-2017_Validation_Part3_GroundTruth.csv",
                              [GT2017, "ISIC_0001769,0.0,0.0"], "isic2017", "val"),
    "isic2017_metadata": ("ISIC-2017_Test_v2_Data_metadata.csv",
                          ["image_id,age_approximate,sex", "ISIC_0012086,unknown,female"],
                          "isic2017", "test"),
    "isic2018_task3_ground_truth": ("ISIC2018_Task3_Training_GroundTruth.csv",
                                    ["image,MEL,NV,BCC,AKIEC,BKL,DF,VASC",
                                     "ISIC_0024306,0.0,1.0,0.0,0.0,0.0,0.0,0.0"], "isic2018", "train"),
    "isic2018_task3_lesion_groupings": ("ISIC2018_Task3_Training_LesionGroupings.csv",
                                        ["image,lesion_id,diagnosis_confirm_type",
                                         "ISIC_0024306,HAM_0000550,histopathology"],
                                        "isic2018", "train"),
    "ham10000_metadata": ("HAM10000_metadata.csv",
                          ["lesion_id,image_id,dx,dx_type,age,sex,localization",
                           "HAM_0000118,ISIC_0027419,bkl,histo,80.0,male,scalp"], "ham10000", "train"),
    "isic2019_ground_truth": ("ISIC_2019_Training_GroundTruth.csv",
                              [GT2019, "ISIC_0000000,0.0,1.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0"],
                              "isic2019", "train"),
    "isic2019_metadata": ("ISIC_2019_Training_Metadata.csv",
                          ["image,age_approx,anatom_site_general,lesion_id,sex",
                           "ISIC_0000000,55.0,anterior torso,,female"], "isic2019", "train"),
    "isic2019_test_metadata": ("ISIC_2019_Test_Metadata.csv",
                               ["image,age_approx,anatom_site_general,sex",
                                "ISIC_0034321,60.0,posterior torso,male"], "isic2019", "test"),
    "siim2020_train": ("train.csv", [SIIM_HEADER, *SIIM_ROWS], "siim-isic-2020", "train"),
    "siim2020_ground_truth_v2": ("ISIC_2020_Training_GroundTruth_v2.csv", [
        "image_name,patient_id,lesion_id,sex,age_approx,anatom_site_general_challenge,diagnosis,"
        "benign_malignant,target", "ISIC_2637011,IP_7279968,IL_7972535,male,45,head/neck,unknown,"
        "benign,0"], "siim-isic-2020", "train"),
    "siim2020_test": ("test.csv", [SIIM_HEADER.rsplit(",", 3)[0],
                                   "ISIC_0052060,IP_3579794,male,70.0,"], "siim-isic-2020", "test"),
    "siim2020_submission": ("sample_submission.csv", ["image_name,target", "ISIC_0052060,0"],
                            "siim-isic-2020", "test"),
    "siim2020_duplicates": ("ISIC_2020_Training_Duplicates.csv",
                            ["image_name_1,image_name_2", "ISIC_0000001,ISIC_0000002"], None, None),
    "isic_archive_legacy": ("metadata.csv", [
        "isic_id,attribution,copyright_license,benign_malignant,diagnosis",
        "ISIC_0000000,Anonymous,CC-0,benign,nevus"], "isic-archive", "train"),
    "isic_archive": ("metadata.csv", [ARCHIVE_HEADER.replace(",patient_id", ""),
                                      "ISIC_9000004,Anonymous,CC-0,,,Benign,,,,,,dermoscopic,,,600,450,"],
                     "isic-archive", "train"),
    "isic2024_train": ("train-metadata.csv", [TRAIN_2024, train_2024_row("ISIC_0015670", 0)],
                       "isic2024", "train"),
    "isic2024_test": ("test-metadata.csv", [TEST_2024, ROW_2024], "isic2024", "test"),
    "isic2024_submission": ("sample_submission.csv", ["isic_id,target", "ISIC_0015657,0.3"],
                            "isic2024", "test"),
}


def test_the_table_covers_every_known_format():
    assert set(KNOWN) == {f.name for f in ds.FORMATS}


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_every_known_header_is_recognised(tmp_path, name):
    file_name, lines, dataset, split = KNOWN[name]
    path = write(tmp_path, file_name, lines)
    assert ds.detect_format(path).name == name
    raw = ds.read_labels(path)
    assert raw.attrs["format"] == name and len(raw) == len(lines) - ds.detect_format(path).header
    if dataset is not None:
        frame = ds.to_tidy(raw)
        assert set(frame["dataset"]) == {dataset} and set(frame["split"]) == {split}


#: Files that share a column with a known format but are none of them: refused, not guessed.
UNKNOWN = {
    "MILK10k supplement": ("MILK10k_Training_Supplement.csv",
                           ["isic_id,diagnosis_full,diagnosis_confirm_type",
                            "ISIC_0000001,Melanoma Invasive,histopathology"]),
    "isic_id and a score": ("predictions.csv", ["isic_id,target,fold", "ISIC_0000001,0.2,1"]),
    "isic_id alone": ("ids.csv", ["isic_id", "ISIC_0000001"]),
    "archive columns without attribution": ("metadata.csv", ["isic_id,diagnosis",
                                                             "ISIC_0000001,nevus"]),
}


@pytest.mark.parametrize("case", sorted(UNKNOWN))
def test_unrecognised_files_are_refused_naming_file_and_header(tmp_path, case):
    file_name, lines = UNKNOWN[case]
    path = write(tmp_path, file_name, lines)
    with pytest.raises(ValueError, match=rf"{file_name}: .*header {lines[0]!r}"):
        ds.read_labels(path)


def test_isic2019_metadata_with_a_gender_column(tmp_path):
    """The common public copy of ISIC_2019_Training_Metadata.csv heads its sex column 'gender'."""
    root = make_2019(tmp_path / "isic-2019")
    meta = root / "ISIC_2019_Training_Metadata.csv"
    meta.write_bytes(meta.read_bytes().replace(b",sex\r\n", b",gender\r\n"))
    raw = ds.read_labels(meta)
    assert raw.attrs["format"] == "isic2019_metadata" and "sex" in raw and "gender" not in raw
    frame = ds.load_dataset(root)
    assert frame.set_index("image_id").loc["ISIC_0024306", "sex"] == "male"


# --------------------------------------------------------------------------
# ISIC 2024 (SLICE-3D)
# --------------------------------------------------------------------------

MELANOMA_2024 = ("Malignant::Malignant melanocytic proliferations (Melanoma)::Melanoma Invasive")


def test_isic2024_train_metadata_tidy(tmp_path):
    path = write(tmp_path, "train-metadata.csv", [
        TRAIN_2024, train_2024_row("ISIC_0015670", 0),
        train_2024_row("ISIC_0015845", 1, MELANOMA_2024, "IL_0000001"),
        train_2024_row("ISIC_0015864", 0, "Benign::Benign melanocytic proliferations::Nevus",
                       "IL_0000002")])
    frame = ds.read_labels(path, tidy=True)
    assert list(frame.columns[: len(ds.TIDY_COLUMNS)]) == list(ds.TIDY_COLUMNS)
    assert frame["target"].tolist() == [0, 1, 0] and set(frame["dataset"]) == {"isic2024"}
    assert pd.isna(frame["label"].iloc[0]) and frame["label"].tolist()[1:] == ["MEL", "NV"]
    assert frame["diagnosis"].tolist() == ["benign", "melanoma invasive", "nevus"]
    assert frame["patient_id"].tolist() == ["IP_7142616"] * 3
    assert frame["anatom_site"].iloc[0] == "torso" and frame["age_approx"].iloc[0] == 65.0
    assert frame["lesion_id"].tolist()[1:] == ["IL_0000001", "IL_0000002"]
    kept = [c for c in frame.columns if c not in ds.TIDY_COLUMNS]
    assert kept == ds.ISIC2024_FEATURES and "tbp_lv_dnn_lesion_confidence" in kept
    assert frame["tbp_lv_areaMM2"].dtype == np.float64 and frame["tbp_lv_areaMM2"].iloc[0] == 3.39651
    assert frame["tbp_lv_location_simple"].iloc[0] == "Torso Back"


def test_isic2024_test_metadata_and_submission(tmp_path):
    frame = ds.read_labels(write(tmp_path, "test-metadata.csv", [TEST_2024, ROW_2024]), tidy=True)
    assert frame[["dataset", "split"]].iloc[0].tolist() == ["isic2024", "test"]
    assert frame["target"].isna().all() and frame["clin_size_long_diam_mm"].iloc[0] == 3.16
    sub = ds.read_labels(write(tmp_path, "sample_submission.csv",
                               ["isic_id,target", "ISIC_0015657,0.3", "ISIC_0015729,0.3"]), tidy=True)
    assert sub["target"].isna().all() and sub["split"].tolist() == ["test", "test"]


def test_isic2024_file_missing_a_column_is_refused_by_name(tmp_path):
    header = TEST_2024.replace(",tbp_lv_deltaLB,", ",")
    row = ROW_2024.replace(",6.041092,", ",")
    with pytest.raises(ValueError, match=r"row 1, column 'tbp_lv_deltaLB': required column missing"
                                         r".*isic2024_test"):
        ds.read_labels(write(tmp_path, "test-metadata.csv", [header, row]))


def test_isic2024_bad_value_names_row_and_column(tmp_path):
    bad = train_2024_row("ISIC_0015670", 0).replace(",3.39651,", ",big,")
    with pytest.raises(ValueError, match=r"row 2, column 'tbp_lv_areaMM2': not a number"):
        ds.read_labels(write(tmp_path, "train-metadata.csv", [TRAIN_2024, bad]))


def make_2024(root: Path, jpeg_folder: bool = False) -> Path:
    """A small ISIC 2024 download: metadata, sample submission, JPEG bytes in HDF5 files."""
    import io as _io

    import h5py
    from PIL import Image

    write(root, "train-metadata.csv", [TRAIN_2024, train_2024_row("ISIC_0015670", 0),
                                       train_2024_row("ISIC_0015845", 1, MELANOMA_2024, "IL_1")])
    write(root, "test-metadata.csv", [TEST_2024, ROW_2024])
    write(root, "sample_submission.csv", ["isic_id,target", "ISIC_0015740,0.3"])
    for split, ids in (("train", ["ISIC_0015670", "ISIC_0015845"]), ("test", ["ISIC_0015740"])):
        with h5py.File(root / f"{split}-image.hdf5", "w") as store:
            for n, isic_id in enumerate(ids):
                buf = _io.BytesIO()
                Image.new("RGB", (20 + n, 30), (200, 120, 90)).save(buf, "JPEG")
                store.create_dataset(isic_id, data=np.void(buf.getvalue()))
                if jpeg_folder and split == "train":
                    (root / "train-image" / "image").mkdir(parents=True, exist_ok=True)
                    (root / "train-image" / "image" / f"{isic_id}.jpg").write_bytes(buf.getvalue())
    return root


@pytest.mark.parametrize("jpeg_folder", [False, True])
def test_load_isic_2024_reads_images_from_hdf5_or_the_jpeg_folder(tmp_path, jpeg_folder):
    from helpers.io import read_image

    root = make_2024(tmp_path / "isic-2024", jpeg_folder)
    assert ds.detect_layout(root) == "isic-2024"
    frame = ds.load_dataset(root, strict=True)
    assert frame["split"].tolist() == ["train", "train", "test"]
    assert frame["target"].tolist()[:2] == [0, 1] and pd.isna(frame["target"].iloc[2])
    assert list(frame.columns) == [*ds.TIDY_COLUMNS, *ds.ISIC2024_FEATURES]
    assert frame["tbp_lv_dnn_lesion_confidence"].tolist()[:2] == [97.5, 97.5]
    assert np.isnan(frame["tbp_lv_dnn_lesion_confidence"].iloc[2])  # a train-only column
    expected = (["train-image/image/ISIC_0015670.jpg", "train-image/image/ISIC_0015845.jpg"]
                if jpeg_folder else ["train-image.hdf5/ISIC_0015670", "train-image.hdf5/ISIC_0015845"])
    assert [str(Path(p).relative_to(root)) for p in frame["path"]] == [
        *expected, "test-image.hdf5/ISIC_0015740"]
    assert [read_image(p).shape for p in frame["path"]] == [(30, 20, 3), (30, 21, 3), (30, 20, 3)]


def test_load_isic_2024_missing_image_and_unreadable_store(tmp_path):
    root = make_2024(tmp_path / "isic-2024")
    (root / "test-image.hdf5").unlink()
    with pytest.warns(ds.MissingImagesWarning, match="1 of 3 images of layout isic-2024"):
        frame = ds.load_isic_2024(root)
    assert frame["path"].isna().tolist() == [False, False, True]
    (root / "train-image.hdf5").write_bytes(b"not HDF5")
    with pytest.raises(ValueError, match=r"train-image\.hdf5: not a readable HDF5 file"):
        ds.load_isic_2024(root)


# ==========================================================================================
# Reliability: malformed label and metadata files.
#
# Every defect of an official CSV (a missing required column, an unknown
# header, a duplicated image id, a label outside 0/1, a NaN target, an unknown
# sex or site, ...) raises a ``ValueError`` naming the file, the row (the line
# number in the file) and the column, whether the file has LF or CRLF line
# endings and a UTF-8 BOM or not. ``python -m helpers`` turns it into one line
# on stderr and exit code 2, without a traceback.
# ==========================================================================================
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


# ==========================================================================================
# Reliability: image names and paths never reach outside the data folder.
#
# * An image id in a label file is a plain file name: ``../../etc/passwd``, an
#   absolute path, a Windows path or ``..`` is refused by ``read_labels`` with a
#   ``ValueError`` naming the file, row, column and value (and so by every
#   ``load_*`` function and the command line).
# * An image file of a download folder that resolves outside the folder (a
#   symlink to a file or folder elsewhere) is refused by ``load_dataset``; a
#   symlink that stays inside, or a data root that is itself a symlink, is fine.
# ==========================================================================================
ESCAPES = ["../../etc/passwd", "/etc/passwd", "..", ".", "jpeg/../../../secret",
           "..\\..\\windows\\win.ini", "C:ISIC_0000001", "~root", "sub/ISIC_0000001"]


@pytest.mark.parametrize("value", ESCAPES)
def test_image_ids_with_path_parts_are_refused(tmp_path, value):
    path = write(tmp_path, "train.csv", [
        SIIM_HEADER, "ISIC_2637011,IP_7279968,male,45.0,head/neck,unknown,benign,0",
        f'"{value}",IP_3075186,,,,nevus,benign,0'])
    pattern = rf"train\.csv: row 3, column 'image_name': image id is not a plain file name.*{re.escape(repr(value))}"
    with pytest.raises(ValueError, match=pattern):
        ds.read_labels(path)


@pytest.mark.parametrize("file_name,header", [
    ("ISIC_2019_Training_GroundTruth.csv", "image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK"),
    ("metadata.csv", "isic_id,attribution,copyright_license,benign_malignant,diagnosis"),
    ("ISIC-2017_Training_Part3_GroundTruth.csv", "image_id,melanoma,seborrheic_keratosis"),
])
def test_every_id_column_is_checked(tmp_path, file_name, header):
    cells = {"image": "../../etc/passwd", "isic_id": "/etc/passwd", "image_id": "../x"}
    first = header.split(",")[0]
    rest = {"image": "1,0,0,0,0,0,0,0,0", "isic_id": "Anonymous,CC-0,benign,nevus",
            "image_id": "0,0"}[first]
    path = write(tmp_path, file_name, [header, f"{cells[first]},{rest}"])
    with pytest.raises(ValueError, match=rf"row 2, column '{first}': image id is not a plain"):
        ds.read_labels(path)


def test_load_dataset_and_the_command_line_refuse_an_escaping_id(tmp_path, capsys):
    root = make_2020(tmp_path / "siim")
    train = (root / "train.csv").read_text().replace("ISIC_0015719", "../../../etc/passwd")
    (root / "train.csv").write_text(train)
    with pytest.raises(ValueError, match=r"train\.csv: row 3, column 'image_name'.*etc/passwd"):
        ds.load_dataset(root)
    assert main(["train", "--data-dir", str(root), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "row 3, column 'image_name'" in err and "Traceback" not in err


def test_a_symlinked_image_pointing_outside_is_refused(tmp_path, capsys):
    root = make_2020(tmp_path / "siim")
    secret = secret_image(tmp_path / "elsewhere")
    link = root / "jpeg" / "train" / "ISIC_2637011.jpg"
    link.unlink()
    link.symlink_to(secret)
    with pytest.raises(ValueError, match=r"ISIC_2637011\.jpg: image 'ISIC_2637011' resolves to "
                                         r".*elsewhere/secret\.jpg, outside the data folder"):
        ds.load_dataset(root)
    assert main(["train", "--data-dir", str(root), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "outside the data folder" in err


def test_a_symlinked_folder_pointing_outside_is_refused(tmp_path):
    root = make_2020(tmp_path / "siim")
    outside = tmp_path / "elsewhere" / "test"
    outside.mkdir(parents=True)
    (root / "jpeg" / "test" / "ISIC_0052060.jpg").rename(outside / "ISIC_0052060.jpg")
    (root / "jpeg" / "test").rmdir()
    (root / "jpeg" / "test").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ValueError, match=r"image 'ISIC_0052060' resolves to .*outside the data folder"):
        ds.load_dataset(root)


def test_symlinks_inside_the_folder_and_a_symlinked_root_are_fine(tmp_path):
    root = make_2020(tmp_path / "siim")
    spare = root / "spare"
    spare.mkdir()
    link = root / "jpeg" / "train" / "ISIC_2637011.jpg"
    link.rename(spare / "ISIC_2637011.jpg")
    link.symlink_to(spare / "ISIC_2637011.jpg")           # points inside the folder: allowed
    alias = tmp_path / "alias"
    alias.symlink_to(root, target_is_directory=True)      # the whole download linked: allowed
    for folder in (root, alias):
        frame = ds.load_dataset(folder, strict=True)
        assert frame["path"].notna().all() and len(frame) == 4




# --------------------------------------------------------------------------
# The real folders added to data_samples/: SIIM-ISIC 2020 images, ISIC 2017 masks
# --------------------------------------------------------------------------

SUBSET_2020 = SAMPLES / "siim-isic-2020-subset"
MASKS_2017 = SAMPLES / "isic-2017" / "ISIC-2017_Training_Part1_GroundTruth"


def test_real_2020_subset_counts_and_patients():
    frame = ds.load_dataset(SUBSET_2020, strict=True)
    assert ds.detect_layout(SUBSET_2020) == "siim-isic-2020"
    assert len(frame) == 1144 and int(frame["target"].sum()) == 584
    per_patient = frame.groupby("patient_id").size()
    assert len(per_patient) == 777
    assert (per_patient >= 2).sum() == 254 and per_patient[per_patient >= 2].sum() == 621
    both = frame.groupby("patient_id")["target"].agg(["min", "max"])
    assert ((both["min"] == 0) & (both["max"] == 1)).sum() == 81
    assert {Image.open(p).size for p in frame["path"]} == {(256, 256)}


def test_real_2020_subset_rows_are_the_official_ones():
    """train.csv: the official rows of these images, byte for byte (CRLF, integer ages)."""
    official = SHARED / "challenge-ground-truth" / "ISIC_2020_Training_GroundTruth.csv"
    if not official.is_file():
        pytest.skip(f"{official} absent: the official 2020 ground truth is read from ../shared")
    ours = (SUBSET_2020 / "train.csv").read_bytes().split(b"\r\n")
    theirs = set(official.read_bytes().split(b"\r\n")[1:])
    assert ours[0].startswith(b"image_name,patient_id,")
    assert all(line in theirs for line in ours[1:] if line)


def test_real_2020_subset_keeps_its_licence_and_attribution():
    text = (SUBSET_2020 / "licenses" / "CC-BY-NC-4.0.txt").read_text(encoding="utf-8")
    for needed in ("CC BY-NC 4.0", "Rotemberg", "doi:10.1038/s41597-021-00815-z", "Changes:"):
        assert needed in text
    readme = (SAMPLES / "README.md").read_text(encoding="utf-8")
    row = next(line for line in readme.splitlines() if "`siim-isic-2020-subset/`" in line)
    assert "CC BY-NC 4.0" in row and "non-commercial" in row


def test_expert_masks_cover_the_2017_training_images_and_overlay_them():
    masks = ds.read_masks(MASKS_2017)
    train = ds.load_dataset(SAMPLES / "isic-2017", strict=True).query("split == 'train'")
    assert len(masks) == 2000 and set(masks["image_id"]) == set(train["image_id"])
    paths = train.set_index("image_id")["path"]
    for image_id, mask in zip(masks["image_id"], masks["mask"]):
        with Image.open(mask) as m, Image.open(paths[image_id]) as im:
            assert m.size == im.size and m.mode == "L", image_id
    values = {v for mask in masks["mask"][::50] for v in np.unique(np.asarray(Image.open(mask)))}
    assert values == {0, 255}
    assert masks["original_width"].min() > 256  # the originals are camera-size photographs
    assert (MASKS_2017.parent / "licenses" / "CC-0.txt").is_file()


def test_read_masks_refuses_a_stray_file(tmp_path):
    Image.new("L", (4, 4)).save(tmp_path / "ISIC_0000000_segmentation.png")
    assert ds.read_masks(tmp_path)["image_id"].tolist() == ["ISIC_0000000"]
    Image.new("L", (4, 4)).save(tmp_path / "lesion.png")
    with pytest.raises(ValueError, match=r"lesion\.png: not named ISIC_"):
        ds.read_masks(tmp_path)
    with pytest.raises(ValueError, match="not a folder"):
        ds.read_masks(tmp_path / "absent")
