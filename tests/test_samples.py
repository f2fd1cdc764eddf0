"""Tests of tools/samples.py and of the committed data_samples/ it generates."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from test_datasets import TEST_2024, TRAIN_2024

from helpers import REPO_ROOT
from helpers import datasets as ds
from helpers import vocab
from helpers import io as hio
from tools import samples as gen

SAMPLES = REPO_ROOT / "data_samples"
N_FRESH = 3  # images regenerated per folder (the CSV files are always complete)


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> Path:
    """data_samples regenerated with the default seed, images capped per folder."""
    out = tmp_path_factory.mktemp("samples")
    gen.write_samples(out, seed=0, max_images=N_FRESH)
    return out


def _files(root: Path, suffixes: tuple[str, ...]) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file() and p.suffix in suffixes)


# --------------------------------------------------------------------------- committed samples
def test_committed_csv_and_txt_equal_fresh_ones(fresh):
    committed = [p for p in _files(SAMPLES, (".csv", ".txt")) if p.parts[0] in gen.FOLDERS]
    assert committed == _files(fresh, (".csv", ".txt"))
    assert len(committed) >= 19
    for rel in committed:
        assert (SAMPLES / rel).read_bytes() == (fresh / rel).read_bytes(), rel


def _expected_images() -> dict[str, list[str]]:
    """Image folder -> image ids, from the committed tables."""
    s20, s19 = SAMPLES / "siim-isic-2020", SAMPLES / "isic-2019"
    s18, s16 = SAMPLES / "isic-2018-task3", SAMPLES / "isic-2016"
    out = {
        "siim-isic-2020/jpeg/train": pd.read_csv(s20 / "train.csv").image_name.tolist(),
        "siim-isic-2020/jpeg/test": pd.read_csv(s20 / "test.csv").image_name.tolist(),
        "isic-2019/ISIC_2019_Training_Input": pd.read_csv(s19 / "ISIC_2019_Training_GroundTruth.csv").image.tolist(),
        "isic-2019/ISIC_2019_Test_Input": pd.read_csv(s19 / "ISIC_2019_Test_Metadata.csv").image.tolist(),
        "isic-2018-task3/ISIC2018_Task3_Training_Input": pd.read_csv(
            s18 / "ISIC2018_Task3_Training_GroundTruth/ISIC2018_Task3_Training_GroundTruth.csv").image.tolist(),
        "isic-2018-task3/ISIC2018_Task3_Validation_Input": pd.read_csv(
            s18 / "ISIC2018_Task3_Validation_GroundTruth/ISIC2018_Task3_Validation_GroundTruth.csv").image.tolist(),
        "isic-2018-task3/ISIC2018_Task3_Test_Input": pd.read_csv(
            s18 / "ISIC2018_Task3_Test_GroundTruth.csv").image.tolist(),
        "isic-archive": pd.read_csv(SAMPLES / "isic-archive/metadata.csv").isic_id.tolist(),
        "isic-2024/train-image/image": pd.read_csv(SAMPLES / "isic-2024/train-metadata.csv").isic_id.tolist(),
    }
    for name in ("Training", "Test"):
        out[f"isic-2016/ISBI2016_ISIC_Part3_{name}_Data"] = pd.read_csv(
            s16 / f"ISBI2016_ISIC_Part3_{name}_GroundTruth.csv", header=None)[0].tolist()
    return out


def test_committed_images_match_tables_and_fresh_pixels(fresh):
    for folder, ids in _expected_images().items():
        on_disk = sorted(p.stem for p in (SAMPLES / folder).glob("*.jpg"))
        assert on_disk == sorted(ids), folder
        regenerated = sorted((fresh / folder).glob("*.jpg"))
        assert len(regenerated) == min(N_FRESH, len(ids)), folder
        for path in regenerated:
            new = np.asarray(Image.open(path).convert("RGB"), dtype=float)
            old = np.asarray(Image.open(SAMPLES / folder / path.name).convert("RGB"), dtype=float)
            assert new.shape == old.shape, path.name
            assert abs(new.mean() - old.mean()) < 1.0 and np.abs(new - old).mean() < 2.0, path.name
        size = {Image.open(p).size for p in (SAMPLES / folder).glob("*.jpg")}
        crop = (gen.CROP_2024, gen.CROP_2024)
        assert size <= ({crop} if folder.startswith("isic-2024") else {(256, 256), (192, 192)}), folder


def test_total_size_within_budget():
    sizes = {p: p.stat().st_size for p in SAMPLES.rglob("*") if p.is_file()}
    synthetic = sum(n for p, n in sizes.items() if p.relative_to(SAMPLES).parts[0] in gen.FOLDERS)
    assert synthetic < 30 * 2**20
    assert sum(sizes.values()) <= 90 * 10**6          # real and synthetic data together


def test_generator_leaves_the_real_folders_alone(tmp_path):
    """``make samples`` rewrites only its own folders: the real data beside them survives."""
    (tmp_path / gen.MARKER).write_text("ours\n")
    for name in ("isic-2017", "challenge-ground-truth", "isic-archive-uda1", "siim-isic-2020-subset"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "keep.csv").write_text("real\n")
    gen.write_samples(tmp_path, max_images=1)
    assert all((tmp_path / n / "keep.csv").read_text() == "real\n"
               for n in ("isic-2017", "challenge-ground-truth", "isic-archive-uda1", "siim-isic-2020-subset"))
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == sorted(
        list(gen.FOLDERS) + ["challenge-ground-truth", "isic-2017", "isic-archive-uda1", "siim-isic-2020-subset"])


# --------------------------------------------------------------------------- official layouts
HEADERS = {
    "siim-isic-2020/train.csv": ("image_name,patient_id,sex,age_approx,anatom_site_general_challenge,diagnosis,"
                                 "benign_malignant,target", "\n"),
    "siim-isic-2020/test.csv": ("image_name,patient_id,sex,age_approx,anatom_site_general_challenge", "\n"),
    "siim-isic-2020/sample_submission.csv": ("image_name,target", "\n"),
    "siim-isic-2020/ISIC_2020_Training_GroundTruth.csv": (
        "image_name,patient_id,sex,age_approx,anatom_site_general_challenge,diagnosis,benign_malignant,target", "\r\n"),
    "siim-isic-2020/ISIC_2020_Training_GroundTruth_v2.csv": (
        "image_name,patient_id,lesion_id,sex,age_approx,anatom_site_general_challenge,diagnosis,benign_malignant,"
        "target", "\r\n"),
    "siim-isic-2020/ISIC_2020_Training_Duplicates.csv": ("image_name_1,image_name_2", None),
    "isic-2019/ISIC_2019_Training_GroundTruth.csv": ("image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK", "\r\n"),
    "isic-2019/ISIC_2019_Training_Metadata.csv": ("image,age_approx,anatom_site_general,lesion_id,sex", "\r\n"),
    "isic-2019/ISIC_2019_Test_Metadata.csv": ("image,age_approx,anatom_site_general,sex", None),
    "isic-2018-task3/ISIC2018_Task3_Training_GroundTruth/ISIC2018_Task3_Training_GroundTruth.csv": (
        "image,MEL,NV,BCC,AKIEC,BKL,DF,VASC", "\r\n"),
    "isic-2018-task3/ISIC2018_Task3_Validation_GroundTruth/ISIC2018_Task3_Validation_GroundTruth.csv": (
        "image,MEL,NV,BCC,AKIEC,BKL,DF,VASC", "\r\n"),
    "isic-2018-task3/ISIC2018_Task3_Test_GroundTruth.csv": ("image,MEL,NV,BCC,AKIEC,BKL,DF,VASC", "\n"),
    "isic-2018-task3/ISIC2018_Task3_Training_LesionGroupings.csv": ("image,lesion_id,diagnosis_confirm_type", None),
    "isic-2018-task3/HAM10000_metadata.csv": ("lesion_id,image_id,dx,dx_type,age,sex,localization,dataset", "\n"),
    "isic-2017/ISIC-2017_Training_Part3_GroundTruth.csv": ("image_id,melanoma,seborrheic_keratosis", "\r\n"),
    "isic-2017/ISIC-2017_Validation_Part3_GroundTruth.csv": ("image_id,melanoma,seborrheic_keratosis", "\r\n"),
    "isic-2017/ISIC-2017_Test_v2_Part3_GroundTruth.csv": ("image_id,melanoma,seborrheic_keratosis", "\r\n"),
    "isic-2017/ISIC-2017_Training_Data/ISIC-2017_Training_Data_metadata.csv": ("image_id,age_approximate,sex", None),
    "isic-2017/ISIC-2017_Validation_Data/ISIC-2017_Validation_Data_metadata.csv": (
        "image_id,age_approximate,sex", None),
    "isic-2017/ISIC-2017_Test_v2_Data/ISIC-2017_Test_v2_Data_metadata.csv": ("image_id,age_approximate,sex", None),
    "isic-2024/train-metadata.csv": (TRAIN_2024, "\n"),
    "isic-2024/test-metadata.csv": (TEST_2024, "\n"),
    "isic-2024/sample_submission.csv": ("isic_id,target", "\n"),
    "isic-archive/metadata.csv": (
        "isic_id,attribution,copyright_license,age_approx,anatom_site_general,diagnosis_1,diagnosis_2,diagnosis_3,"
        "diagnosis_4,diagnosis_5,diagnosis_confirm_type,image_type,lesion_id,melanocytic,patient_id,pixels_x,"
        "pixels_y,sex", None),
}


@pytest.mark.parametrize("rel", sorted(HEADERS))
def test_official_header_and_line_endings(rel):
    header, eol = HEADERS[rel]
    raw = (SAMPLES / rel).read_bytes().decode("utf-8")
    first = raw.split("\n", 1)[0].rstrip("\r")
    assert first == header
    if eol == "\r\n":
        assert raw.count("\r\n") == raw.count("\n") >= 2
    elif eol == "\n":
        assert "\r" not in raw
    assert len(pd.read_csv(SAMPLES / rel)) >= 1


def test_2020_value_formats():
    kaggle = (SAMPLES / "siim-isic-2020/train.csv").read_bytes()
    v1 = (SAMPLES / "siim-isic-2020/ISIC_2020_Training_GroundTruth.csv").read_bytes()
    assert kaggle.endswith(b"\n") and not v1.endswith(b"\n")  # v1: CRLF, no final newline
    assert re.search(rb",(male|female),\d+\.0,", kaggle) and not re.search(rb",\d+\.0,", v1)
    assert re.search(rb",(male|female),\d+,", v1)
    train = pd.read_csv(SAMPLES / "siim-isic-2020/train.csv")
    assert train.sex.isna().any() and train.age_approx.isna().any() and train.anatom_site_general_challenge.isna().any()
    assert set(train.sex.dropna()) <= {"male", "female"}
    assert set(train.anatom_site_general_challenge.dropna()) <= set(vocab.TFREC_SITES)
    assert set(train.diagnosis) <= set(vocab.TFREC_DIAGNOSES)
    assert ((train.target == 1) == (train.benign_malignant == "malignant")).all()
    assert ((train.target == 1) == (train.diagnosis == "melanoma")).all()
    assert train.image_name.str.fullmatch(r"ISIC_\d{7}").all() and train.patient_id.str.fullmatch(r"IP_\d{7}").all()
    assert 0.15 < train.target.mean() < 0.25  # raised on purpose (real: 1.76 %)
    per_patient = train.groupby("patient_id").target.agg(["sum", "size"])
    assert (per_patient["sum"] <= per_patient["size"] / 2).all()  # melanoma stays the exception per patient
    v2 = pd.read_csv(SAMPLES / "siim-isic-2020/ISIC_2020_Training_GroundTruth_v2.csv")
    dups = pd.read_csv(SAMPLES / "siim-isic-2020/ISIC_2020_Training_Duplicates.csv")
    lesion = v2.set_index("image_name").lesion_id
    assert len(dups) >= 1 and (lesion[dups.image_name_1].values == lesion[dups.image_name_2].values).all()
    assert v2.lesion_id.nunique() == len(v2) - len(dups)
    sub = pd.read_csv(SAMPLES / "siim-isic-2020/sample_submission.csv")
    test = pd.read_csv(SAMPLES / "siim-isic-2020/test.csv")
    assert sub.image_name.tolist() == test.image_name.tolist() and (sub.target == 0).all()
    assert not set(test.patient_id) & set(train.patient_id)


def test_other_value_formats():
    g19 = (SAMPLES / "isic-2019/ISIC_2019_Training_GroundTruth.csv").read_text()
    assert ",1.0," in g19 and ",0.0" in g19
    ham = pd.read_csv(SAMPLES / "isic-2018-task3/HAM10000_metadata.csv")
    assert set(ham.dx) == {"akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"}
    assert set(ham.dx_type) <= {"histo", "follow_up", "consensus", "confocal"} and ham.age.isna().any()
    assert ham.lesion_id.duplicated().any()  # some lesions have several images
    t16 = (SAMPLES / "isic-2016/ISBI2016_ISIC_Part3_Training_GroundTruth.csv").read_text().splitlines()
    s16 = (SAMPLES / "isic-2016/ISBI2016_ISIC_Part3_Test_GroundTruth.csv").read_text().splitlines()
    assert all(re.fullmatch(r"ISIC_\d{7},(benign|malignant)", line) for line in t16)
    assert all(re.fullmatch(r"ISIC_\d{7},(0\.0|1\.0)", line) for line in s16)
    archive = pd.read_csv(SAMPLES / "isic-archive/metadata.csv")
    assert set(archive.diagnosis_1) <= {"Benign", "Malignant", "Indeterminate"}
    assert (SAMPLES / "isic-archive/licenses/CC-0.txt").is_file()
    assert (SAMPLES / "isic-archive/attribution.txt").read_text().startswith("Synthetic")


def _real_2017_ids() -> set[str]:
    return set(pd.read_csv(SAMPLES / "isic-2017/ISIC-2017_Training_Part3_GroundTruth.csv").image_id)


def test_ids_overlap_only_where_the_real_data_do():
    ids = {folder: {i.removesuffix("_downsampled") for i in v} for folder, v in _expected_images().items()}
    in19 = ids.pop("isic-2019/ISIC_2019_Training_Input")
    assert ids["isic-2018-task3/ISIC2018_Task3_Training_Input"] <= in19
    assert any(i.endswith("_downsampled") for i in _expected_images()["isic-2019/ISIC_2019_Training_Input"])
    others = set()
    for folder in sorted(ids):
        assert not ids[folder] & others, folder
        others |= ids[folder]
    reused = in19 & _real_2017_ids()              # real ISIC 2017 training ids, as in the real 2019 data
    assert len(reused) == gen.SIZES["2017_train"] and not reused & others
    assert len(in19 - others - reused) == gen.SIZES["2019_bcn"]


def test_2019_rows_of_2017_images_are_the_real_rows():
    """The 2019 sample's rows for real 2017 ids hold the values of the real 2019 files."""
    real = REPO_ROOT / "data_samples" / "challenge-ground-truth"
    for name in ("ISIC_2019_Training_GroundTruth.csv", "ISIC_2019_Training_Metadata.csv"):
        truth = pd.read_csv(real / name, dtype=str, keep_default_na=False).set_index("image")
        sample = pd.read_csv(SAMPLES / "isic-2019" / name, dtype=str, keep_default_na=False)
        mine = sample[sample.image.str.removesuffix("_downsampled").isin(_real_2017_ids())].set_index("image")
        assert len(mine) == gen.SIZES["2017_train"]
        if name.endswith("GroundTruth.csv"):   # the real copy writes 0/1, the official file 0.0/1.0
            mine, truth = mine.astype(float), truth.astype(float)
        pd.testing.assert_frame_equal(mine, truth.loc[mine.index], check_names=False)


def test_2019_labels_agree_with_2018_and_2017():
    g19 = pd.read_csv(SAMPLES / "isic-2019/ISIC_2019_Training_GroundTruth.csv")
    g19["image"] = g19.image.str.removesuffix("_downsampled")
    g19 = g19.set_index("image")
    g18 = pd.read_csv(SAMPLES / "isic-2018-task3/ISIC2018_Task3_Training_GroundTruth/"
                      "ISIC2018_Task3_Training_GroundTruth.csv").set_index("image")
    for col in ("MEL", "NV", "BCC", "BKL", "DF", "VASC"):
        assert (g19.loc[g18.index, col] == g18[col]).all(), col
    assert (g19.loc[g18.index, ["AK", "SCC"]].sum(axis=1) == g18.AKIEC).all()
    g17 = pd.read_csv(SAMPLES / "isic-2017/ISIC-2017_Training_Part3_GroundTruth.csv").set_index("image_id")
    both = g19.index.intersection(g17.index)
    assert len(both) == gen.SIZES["2017_train"]
    assert (g19.loc[both, "MEL"] == g17.loc[both, "melanoma"]).all()
    assert (g19.loc[both, "BKL"] == g17.loc[both, "seborrheic_keratosis"]).all()


def test_2020_melanoma_is_the_ugly_duckling():
    """Distance from the patient's own typical lesion separates melanoma better than from everyone's."""
    from skimage.filters import threshold_otsu
    from sklearn.metrics import roc_auc_score

    train = pd.read_csv(SAMPLES / "siim-isic-2020/train.csv")
    feats = []
    for name in train.image_name:
        img = np.asarray(Image.open(SAMPLES / f"siim-isic-2020/jpeg/train/{name}.jpg"), dtype=float)[40:216, 40:216]
        grey = img.mean(2)
        lesion = grey < threshold_otsu(grey)
        feats.append(np.r_[img[lesion].mean(0), img[lesion].std(0), lesion.mean()])
    z = np.array(feats)
    z = (z - z.mean(0)) / z.std(0)
    y = train.target.to_numpy()
    global_score = np.linalg.norm(z - np.median(z[y == 0], axis=0), axis=1)
    patient_score = np.zeros(len(z))
    for idx in train.groupby("patient_id").indices.values():
        patient_score[idx] = np.linalg.norm(z[idx] - np.median(z[idx], axis=0), axis=1)
    auc_global, auc_patient = roc_auc_score(y, global_score), roc_auc_score(y, patient_score)
    assert 0.6 < auc_global < 0.99 and 0.6 < auc_patient < 0.99  # informative, not trivial
    assert auc_patient > auc_global + 0.03


# --------------------------------------------------------------------------- DICOM and TFRecord
def test_dicom_files():
    import pydicom

    train = pd.read_csv(SAMPLES / "siim-isic-2020/train.csv").set_index("image_name")
    files = sorted((SAMPLES / "siim-isic-2020/train").glob("*.dcm"))
    assert sorted(p.stem for p in files) == sorted(train.index)
    assert len(list((SAMPLES / "siim-isic-2020/test").glob("*.dcm"))) == gen.SIZES["2020_test"]
    for path in files[:25]:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        row = train.loc[path.stem]
        assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"
        assert ds.PhotometricInterpretation == "YBR_FULL_422"
        assert ds.PatientID == row.patient_id
        assert ds.PatientSex == ({"male": "M", "female": "F"}.get(row.sex, ""))
        assert ds.PatientAge == ("" if pd.isna(row.age_approx) else f"{int(row.age_approx):03d}Y")
        site = row.anatom_site_general_challenge
        assert ds.BodyPartExamined == ("" if pd.isna(site) else site.upper())


def test_tfrecord_names_and_counts():
    from tfrecord.reader import tfrecord_loader

    folder = SAMPLES / "siim-isic-2020/tfrecords"
    names = {"train": [], "test": []}
    for path in sorted(folder.glob("*.tfrec")):
        m = re.fullmatch(r"(train|test)(\d\d)-(\d+)\.tfrec", path.name)
        assert m, path.name
        records = list(tfrecord_loader(str(path), None, ["image_name", "target", "sex"]))
        assert len(records) == int(m.group(3)), path.name
        names[m.group(1)] += [bytes(r["image_name"]).decode() for r in records]
        if m.group(1) == "test":
            assert all(int(r["target"][0]) == -1 for r in records)
    train = pd.read_csv(SAMPLES / "siim-isic-2020/train.csv")
    assert sorted(names["train"]) == sorted(train.image_name)
    assert sorted(names["test"]) == sorted(pd.read_csv(SAMPLES / "siim-isic-2020/test.csv").image_name)


# --------------------------------------------------------------------------- command line
def test_cli_bad_argument_is_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        gen.main(["out", "--seed", "abc"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--seed" in err


def test_refuses_to_overwrite_foreign_folder(tmp_path, capsys):
    (tmp_path / "isic-2019").mkdir()
    (tmp_path / "isic-2019" / "mine.jpg").write_bytes(b"real data")
    assert gen.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "refusing to overwrite" in err
    assert (tmp_path / "isic-2019" / "mine.jpg").read_bytes() == b"real data"


def test_readme_says_synthetic_and_its_numbers_are_current():
    text = " ".join((SAMPLES / "README.md").read_text().split())
    assert "synthetic" in text.lower() and "ISIC_DATA_DIR" in text and "python -m tools.samples" in text
    train = pd.read_csv(SAMPLES / "siim-isic-2020/train.csv")
    test = pd.read_csv(SAMPLES / "siim-isic-2020/test.csv")
    per_patient = train.groupby("patient_id").size()
    n_mel_patients = train.groupby("patient_id").target.max().sum()
    dups = pd.read_csv(SAMPLES / "siim-isic-2020/ISIC_2020_Training_Duplicates.csv")
    ham = pd.read_csv(SAMPLES / "isic-2018-task3/HAM10000_metadata.csv")
    g19 = pd.read_csv(SAMPLES / "isic-2019/ISIC_2019_Training_GroundTruth.csv")
    for claim in (f"{len(train)} training images of {train.patient_id.nunique()} patients ({len(dups)} duplicate pairs)",
                  f"{len(test)} test images of {test.patient_id.nunique()} patients",
                  f"{n_mel_patients} of the {train.patient_id.nunique()} patients have one",
                  f"Patients have {per_patient.min()}–{per_patient.max()} images",
                  f"about {round(100 * train.target.mean())} % of the training images",
                  f"{len(ham)} training images of {ham.lesion_id.nunique()} lesions",
                  f"{len(g19)} training images"):
        assert claim in text, claim


def test_2024_sample_is_small_synthetic_and_rare():
    folder = SAMPLES / "isic-2024"
    assert sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) < 1.5 * 2**20
    train = pd.read_csv(folder / "train-metadata.csv")
    lesions = train.groupby("patient_id").size()
    assert len(lesions) == gen.SIZES["2024_patients"] and lesions.between(*gen.SIZES["2024_lesions"]).all()
    assert 0 < train.target.mean() < 0.05 and train.groupby("patient_id").target.sum().max() == 1
    assert (train.attribution == "Synthetic (helpers.synthetic)").all()  # marked in every row
    assert train.iddx_1[train.target == 1].eq("Malignant").all()
    assert train.iddx_full[train.target == 0].str.startswith("Benign").all()
    assert train.isic_id.is_monotonic_increasing and train.isic_id.str.fullmatch(r"ISIC_\d{7}").all()
    test = pd.read_csv(folder / "test-metadata.csv")
    sub = pd.read_csv(folder / "sample_submission.csv")
    assert len(test) == gen.SIZES["2024_test"] and sub.isic_id.tolist() == test.isic_id.tolist()
    assert not set(test.patient_id) & set(train.patient_id)
    # the same JPEG bytes in the HDF5 file and in the train-image/image/ folder
    import h5py

    with h5py.File(folder / "train-image.hdf5") as store:
        assert sorted(store) == sorted(train.isic_id)
        first = train.isic_id.iloc[0]
        assert store[first][()].tobytes() == (folder / "train-image/image" / f"{first}.jpg").read_bytes()
    with h5py.File(folder / "test-image.hdf5") as store:
        assert sorted(store) == sorted(test.isic_id)


def test_2024_fresh_hdf5_images_equal_committed(fresh):
    for name in ("train-image.hdf5", "test-image.hdf5"):
        keys = hio.hdf5_keys(fresh / "isic-2024" / name)
        assert len(keys) == min(N_FRESH, len(hio.hdf5_keys(SAMPLES / "isic-2024" / name)))
        for key in keys:
            new = hio.read_hdf5_image(fresh / "isic-2024" / name, key).astype(float)
            old = hio.read_hdf5_image(SAMPLES / "isic-2024" / name, key).astype(float)
            assert np.abs(new - old).mean() < 2.0, key


def test_2024_melanoma_is_the_ugly_duckling_of_its_patient():
    """Raw values overlap across patients; relative to the patient's own lesions they separate."""
    from helpers.metrics import roc_auc

    frame = ds.load_dataset(SAMPLES / "isic-2024").query("split == 'train'")
    y = frame["target"].to_numpy()
    for column in gen.UGLY_DUCKLING_2024:
        own = frame.groupby("patient_id")[column]
        z = (frame[column] - own.transform("mean")) / own.transform("std")
        assert roc_auc(y, z) > 0.95 and roc_auc(y, z) > roc_auc(y, frame[column]) + 0.05, column
    assert roc_auc(y, frame["tbp_lv_norm_border"]) < 0.7  # a measurement without the signal
