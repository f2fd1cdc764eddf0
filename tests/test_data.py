"""Tests of helpers/data.py: transforms, dataset, imbalance, folds.

Bad images skipped during an epoch are tested in test_reliability_images.py,
property tests of patient_folds live in test_datasets_properties.py.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from support import BAD_ROWS, lesion, secret_image

from helpers import REPO_ROOT
from helpers import data as D
from helpers.io import read_image

UDA1 = REPO_ROOT / "data_samples" / "isic-archive-uda1"
GT2020 = REPO_ROOT / "data_samples" / "challenge-ground-truth" / "ISIC_2020_Training_GroundTruth.csv"
ISIC2017 = REPO_ROOT / "data_samples" / "isic-2017"


BAD = BAD_ROWS   # rows of the image_frame fixture (conftest.py): 3 corrupt, 6 missing


# --------------------------------------------------------------------------- transforms
def test_train_transforms_shape_dtype_and_normalisation():
    img = torch.from_numpy(lesion(80, 100, 0)).permute(2, 0, 1).contiguous()
    torch.manual_seed(0)
    out = D.train_transforms(64)(img)
    assert type(out) is torch.Tensor and out.shape == (3, 64, 64) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    # ImageNet normalisation: a pixel of value v in channel c becomes (v/255 - mean_c) / std_c.
    grey = torch.full((3, 80, 100), 128, dtype=torch.uint8)
    ev = D.eval_transforms(32)(grey)
    expected = (128 / 255 - torch.tensor(D.IMAGENET_MEAN)) / torch.tensor(D.IMAGENET_STD)
    assert torch.allclose(ev.mean((1, 2)), expected, atol=1e-5)
    # to_display undoes the normalisation.
    assert np.abs(D.to_display(ev).astype(int) - 128).max() <= 1
    # Also accepts an (H, W, 3) array and a PIL image.
    assert D.eval_transforms(32)(lesion(40, 60, 1)).shape == (3, 32, 32)
    assert D.train_transforms(32, rotation="rot90")(Image.fromarray(lesion(40, 60, 1))).shape == (3, 32, 32)


def test_eval_transform_is_deterministic_and_train_is_not():
    img = torch.from_numpy(lesion(90, 120, 2)).permute(2, 0, 1).contiguous()
    ev = D.eval_transforms(48)
    assert torch.equal(ev(img), ev(img))
    # Centre crop of the short-side resize: the dark blob sits in the middle.
    out = ev(img)
    assert out[:, 20:28, 20:28].mean() < out[:, :4, :4].mean()
    tr = D.train_transforms(48)
    torch.manual_seed(0)
    a = tr(img)
    b = tr(img)
    assert not torch.equal(a, b)


def test_random_hair_draws_dark_pixels():
    img = torch.full((3, 96, 96), 200, dtype=torch.uint8)
    torch.manual_seed(0)
    out = D.RandomHair(p=1.0, n_hairs=(3, 3))(img)
    changed = (out != img).any(0)
    assert out.dtype == torch.uint8 and out.shape == img.shape
    assert 0.005 < changed.float().mean() < 0.5  # thin curves, not a wash
    assert (out[:, changed].float() < 200).all()  # hairs are darker than the skin
    assert torch.equal(D.RandomHair(p=0.0)(img), img)
    # Float images stay float and in range; masks pass through untouched.
    f = D.RandomHair(p=1.0)(img.float() / 255)
    assert f.dtype == torch.float32 and 0 <= f.min() and f.max() <= 1
    from torchvision import tv_tensors
    mask = tv_tensors.Mask(torch.ones(1, 96, 96, dtype=torch.uint8))
    assert torch.equal(D.RandomHair(p=1.0)(mask), mask)


def test_random_vignette_darkens_corners_not_centre():
    img = torch.full((3, 100, 100), 180, dtype=torch.uint8)
    for seed in range(5):
        torch.manual_seed(seed)
        out = D.RandomVignette(p=1.0)(img)
        for corner in (out[:, :6, :6], out[:, :6, -6:], out[:, -6:, :6], out[:, -6:, -6:]):
            assert corner.float().mean() < 60
        assert torch.equal(out[:, 35:65, 35:65], img[:, 35:65, 35:65])


def test_shades_of_gray_removes_a_colour_cast():
    rng = np.random.default_rng(0)
    scene = rng.uniform(60, 160, size=(64, 64, 1)) * np.ones(3)
    cast = np.clip(scene * (1.0, 0.75, 0.55), 0, 255).astype(np.uint8)
    means = cast.reshape(-1, 3).mean(0)
    assert means.max() - means.min() > 30
    fixed = D.shades_of_gray(cast)
    assert isinstance(fixed, np.ndarray) and fixed.dtype == np.uint8 and fixed.shape == cast.shape
    fixed_means = fixed.reshape(-1, 3).mean(0)
    assert fixed_means.max() - fixed_means.min() < 2.0
    # Tensor version (batched too) agrees; a grey image is left (nearly) unchanged.
    t = torch.from_numpy(cast).permute(2, 0, 1)
    assert torch.equal(D.shades_of_gray(t[None])[0], torch.from_numpy(fixed).permute(2, 0, 1))
    grey = torch.full((3, 8, 8), 100, dtype=torch.uint8)
    assert torch.equal(D.shades_of_gray(grey), grey)
    out = D.ShadesOfGray()(t)
    assert torch.equal(out, torch.from_numpy(fixed).permute(2, 0, 1))


# --------------------------------------------------------------------------- reading and dataset
def test_read_image_tensor(tmp_path, image_frame):
    img = D.read_image_tensor(image_frame.path[0])
    assert img.dtype == torch.uint8 and img.shape == (3, 40, 50)
    assert torch.equal(img, torch.from_numpy(read_image(image_frame.path[0]).copy()).permute(2, 0, 1))
    p16 = tmp_path / "g16.png"
    Image.fromarray((np.arange(40 * 30, dtype=np.uint16).reshape(30, 40) * 50)).save(p16)
    g = D.read_image_tensor(p16)  # 16-bit PNG: the Pillow fallback scales it to uint8
    assert g.dtype == torch.uint8 and g.shape == (3, 30, 40)
    for i in BAD:
        with pytest.raises(ValueError, match=Path(image_frame.path[i]).name):
            D.read_image_tensor(image_frame.path[i])


def test_label_mapping(image_frame):
    frame = image_frame.copy()
    frame.loc[7, "label"] = pd.NA
    lab = D.encode_targets(frame, "label")
    assert lab.dtype == np.int64
    assert lab.tolist() == [0, 1, 2, -1, 7, 1, 0, -1]  # UNK and missing: -1
    assert D.encode_targets(frame, "label9").tolist() == [0, 1, 2, 8, 7, 1, 0, -1]
    t = D.encode_targets(frame.assign(target=pd.array([1, 0, None, 0, 0, 0, 1, 0], dtype="Int8")), "target")
    assert t.dtype == np.float32 and t[0] == 1 and np.isnan(t[2])
    ds = D.LesionDataset(frame.iloc[[0, 4]], target="label")
    assert ds[1]["target"].dtype == torch.long and int(ds[1]["target"]) == 7 and ds[1]["index"] == 1
    with pytest.raises(ValueError, match="row 1, column 'label'"):
        D.encode_targets(frame.assign(label=["MEL", "XYZ", *["NV"] * 6]), "label")
    assert tuple(D.CLASSES_2019) == ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC")


def test_encode_meta_shapes_and_missing_flags(image_frame):
    m, names = D.encode_meta(image_frame)
    assert m.dtype == np.float32 and m.shape == (8, len(names)) == (8, 12)
    assert names[:5] == ["age", "age_missing", "sex_female", "sex_male", "sex_missing"]
    assert names[5:] == ["site_head_neck", "site_upper_extremity", "site_lower_extremity", "site_torso",
                         "site_palms_soles", "site_oral_genital", "site_missing"]
    col = {n: m[:, i] for i, n in enumerate(names)}
    mean_age = np.nanmean(image_frame.age_approx)
    assert col["age"][0] == pytest.approx(45 / 90) and col["age"][1] == pytest.approx(mean_age / 90)
    assert col["age_missing"].tolist() == [0, 1, 0, 0, 0, 1, 0, 0]
    assert col["sex_missing"].tolist() == [0, 0, 1, 0, 0, 1, 0, 0]  # None and "unknown"
    assert col["site_missing"].tolist() == [0, 0, 1, 0, 0, 0, 0, 0]
    # One-hot: each block sums to one per row.
    assert np.all(m[:, 2:5].sum(1) == 1) and np.all(m[:, 5:].sum(1) == 1)
    # Column order does not depend on which values occur; the age mean can be given.
    m2, names2 = D.encode_meta(image_frame.iloc[:1], age_mean=60.0)
    assert names2 == names and m2.shape == (1, 12)
    m3, _ = D.encode_meta(image_frame.iloc[[1]], age_mean=60.0)
    assert m3[0, 0] == pytest.approx(60 / 90)


# --------------------------------------------------------------------------- class imbalance
def test_weighted_sampler_balances_classes():
    targets = np.array([0.0] * 90 + [1.0] * 10 + [np.nan] * 5)
    sampler = D.weighted_sampler(targets, num_samples=20000, generator=torch.Generator().manual_seed(0))
    drawn = np.array(list(sampler))
    assert len(drawn) == 20000
    assert not np.isin(drawn, np.arange(100, 105)).any()  # unknown targets never drawn
    assert abs(targets[drawn].mean() - 0.5) < 0.02
    multi = np.repeat([0, 1, 2, -1], [70, 25, 5, 10])
    drawn = np.array(list(D.weighted_sampler(multi, 30000, torch.Generator().manual_seed(1))))
    share = np.bincount(multi[drawn], minlength=3) / len(drawn)
    assert np.allclose(share, 1 / 3, atol=0.02)


def test_pos_weight():
    w = D.pos_weight(torch.tensor([0.0] * 90 + [1.0] * 10 + [float("nan")]))
    assert w.shape == (1,) and w.dtype == torch.float32 and w.item() == pytest.approx(9.0)
    with pytest.raises(ValueError):
        D.pos_weight([0, 0, 0])


def test_focal_loss():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, generator=g) * 3
    y = (torch.rand(64, generator=g) < 0.3).float()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
    assert D.FocalLoss(alpha=None, gamma=0)(logits, y).item() == pytest.approx(bce.item(), rel=1e-6)
    assert D.FocalLoss(alpha=None, gamma=0)(logits[:, None], y).item() == pytest.approx(bce.item(), rel=1e-6)
    # Focusing: easy examples (confident and right) lose almost all their weight.
    easy = D.FocalLoss(alpha=None, gamma=2, reduction="none")(torch.tensor([6.0, -6.0]), torch.tensor([1.0, 0.0]))
    hard = D.FocalLoss(alpha=None, gamma=2, reduction="none")(torch.tensor([-2.0]), torch.tensor([1.0]))
    assert easy.max() < 1e-6 < hard.item()
    a = D.FocalLoss(alpha=0.25, gamma=0, reduction="none")(torch.tensor([0.0, 0.0]), torch.tensor([1.0, 0.0]))
    assert a[1] / a[0] == pytest.approx(3.0)
    # Multi-class: gamma 0 is cross-entropy, -1 targets are ignored; gradients flow.
    lg = torch.randn(10, 8, generator=g, requires_grad=True)
    t = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, -1, 1])
    ce = torch.nn.functional.cross_entropy(lg, t, ignore_index=-1)
    fl = D.FocalLoss(alpha=None, gamma=0)(lg, t)
    assert fl.item() == pytest.approx(ce.item(), rel=1e-6)
    D.FocalLoss(alpha=[1.0] * 8, gamma=2)(lg, t).backward()
    assert lg.grad is not None and lg.grad[8].abs().sum() == 0


# --------------------------------------------------------------------------- folds and splits
def _patients_frame(n_patients: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        n = int(rng.choice([1, 2, 5, 20, 60], p=[0.3, 0.3, 0.2, 0.15, 0.05]))
        mel_patient = rng.random() < 0.2
        for j in range(n):
            rows.append({"image_id": f"ISIC_{len(rows):07d}", "patient_id": f"IP_{p:07d}",
                         "target": int(mel_patient and j == 0)})
    frame = pd.DataFrame(rows)
    # A few rows without a patient id (each its own patient).
    frame.loc[frame.sample(20, random_state=0).index, "patient_id"] = None
    return frame


def _check_folds(frame: pd.DataFrame, folds: pd.Series, k: int, rate_tol: float, size_tol: float) -> None:
    assert folds.index.equals(frame.index) and sorted(folds.unique()) == list(range(k))
    g = frame.assign(fold=folds.to_numpy())
    with_pid = g[g.patient_id.notna()]
    assert (with_pid.groupby("patient_id").fold.nunique() == 1).all()  # no patient in two folds
    rate = g.groupby("fold").target.mean()
    assert (rate - g.target.mean()).abs().max() < rate_tol
    per_patient = with_pid.groupby("patient_id").agg(fold=("fold", "first"), n=("fold", "size"))
    sizes = per_patient.groupby("fold").n.mean()
    assert sizes.max() / sizes.min() < 1 + size_tol  # images per patient balanced
    assert g.groupby("fold").size().max() / g.groupby("fold").size().min() < 1 + size_tol


def test_patient_folds_synthetic():
    frame = _patients_frame()
    folds = D.patient_folds(frame, k=5, seed=0)
    _check_folds(frame, folds, 5, rate_tol=0.012, size_tol=0.25)
    assert folds.equals(D.patient_folds(frame, k=5, seed=0))
    assert not folds.equals(D.patient_folds(frame, k=5, seed=1))
    # Without a patient_id column every image is its own patient.
    only = D.patient_folds(frame.drop(columns="patient_id"), k=4)
    assert only.value_counts().max() - only.value_counts().min() <= 1


def test_patient_folds_on_the_real_2020_ground_truth():
    if not GT2020.is_file():
        pytest.skip("data_samples/challenge-ground-truth absent")
    frame = pd.read_csv(GT2020).rename(columns={"image_name": "image_id"})
    folds = D.patient_folds(frame, k=5, seed=0)
    _check_folds(frame, folds, 5, rate_tol=0.002, size_tol=0.02)
    mel_patients = frame.assign(fold=folds).groupby("patient_id").agg(f=("fold", "first"), m=("target", "max"))
    per_fold = mel_patients.groupby("f").m.sum()
    assert per_fold.sum() == 428 and per_fold.max() - per_fold.min() <= 2


def test_label_folds_are_stratified_by_label():
    rng = np.random.default_rng(0)
    labels = np.repeat(["NV", "MEL", "BKL"], [300, 80, 50])
    frame = pd.DataFrame({"image_id": [f"ISIC_{i:07d}" for i in range(len(labels))],
                          "label": rng.permutation(labels)}, index=np.arange(len(labels)) + 100)
    folds = D.label_folds(frame, k=5, seed=0)
    assert folds.index.equals(frame.index) and sorted(folds.unique()) == [0, 1, 2, 3, 4]
    counts = pd.crosstab(folds, frame["label"])
    assert (counts.max() - counts.min()).max() <= 1  # each class split evenly over the folds
    assert folds.equals(D.label_folds(frame, k=5, seed=0))
    assert not folds.equals(D.label_folds(frame, k=5, seed=1))
    with pytest.raises(ValueError, match="fewer than 5 folds"):
        D.label_folds(frame.head(10).assign(label=["A"] * 9 + ["B"]), k=5)
    with pytest.raises(ValueError, match="row 2"):
        D.label_folds(frame.assign(label=frame["label"].where(np.arange(len(frame)) != 2)), k=5)


def test_label_folds_on_the_real_2017_training_labels():
    from helpers.datasets import load_dataset

    if not ISIC2017.is_dir():
        pytest.skip("data_samples/isic-2017 absent")
    train = load_dataset(ISIC2017).query("split == 'train'")
    folds = D.label_folds(train, k=5, seed=0)
    counts = pd.crosstab(folds, train["label"])
    assert counts.sum().to_dict() == {"BKL": 254, "MEL": 374, "NV": 1372}
    assert (counts.max() - counts.min()).max() <= 1


def test_holdout_split_is_stratified():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"image_id": [f"ISIC_{i:07d}" for i in range(500)],
                          "target": (rng.random(500) < 0.1).astype(int)})
    split = D.holdout_split(frame, 0.2, seed=0)
    assert split.name == "split" and set(split) == {"train", "val"}
    assert (split == "val").sum() == 100
    rates = frame.groupby(split.to_numpy()).target.mean()
    assert abs(rates["val"] - rates["train"]) < 0.01
    grouped = _patients_frame()
    s = D.holdout_split(grouped, 0.2, seed=0)
    both = grouped.assign(s=s.to_numpy()).dropna(subset=["patient_id"]).groupby("patient_id").s.nunique()
    assert (both == 1).all()
    assert 0.12 < (s == "val").mean() < 0.28
    rates = grouped.groupby(s.to_numpy()).target.mean()
    assert abs(rates["val"] - rates["train"]) < 0.02


# ==========================================================================================
# Reliability: ``LesionDataset(frame, root=...)`` refuses a ``path`` column value that
# resolves outside ``root``.
# ==========================================================================================
ROOT_ESCAPES = {"parent": "../../etc/passwd", "absolute": "/etc/passwd",
                "symlink": "link.jpg"}


@pytest.mark.parametrize("kind", sorted(ROOT_ESCAPES))
def test_lesion_dataset_with_a_root_refuses_paths_outside_it(tmp_path, kind):
    root = tmp_path / "data"
    root.mkdir()
    for i in range(2):
        Image.fromarray(lesion(16, 16, i)).save(root / f"ISIC_{i:07d}.jpg")
    (root / "link.jpg").symlink_to(secret_image(tmp_path / "elsewhere"))
    value = ROOT_ESCAPES[kind]
    frame = pd.DataFrame({"path": ["ISIC_0000000.jpg", str(root / "ISIC_0000001.jpg"), value],
                          "target": [0, 1, 0]})
    with pytest.raises(ValueError, match=rf"row 2, column 'path': {re.escape(repr(value))} lies "
                                         r"outside the data folder"):
        D.LesionDataset(frame, D.eval_transforms(16), root=root)
    good = D.LesionDataset(frame.iloc[:2], D.eval_transforms(16), root=root)
    assert [good[i]["image"].shape for i in range(2)] == [(3, 16, 16)] * 2   # relative and absolute
    assert len(D.LesionDataset(frame, D.eval_transforms(16))) == 3   # no root: paths are trusted
