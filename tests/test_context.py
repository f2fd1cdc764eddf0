"""Tests of helpers/context.py: patient-relative features, ugly-duckling scores, leakage."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from support import lesion
from torch import nn

from helpers import context as C

FEATURES = ["f1", "f2", "f3"]


def _patients(seed: int = 0, sizes=(6, 5, 4, 3, 2, 1)) -> pd.DataFrame:
    """Patients with their own feature centre and spread; one single-image patient at the end."""
    rng = np.random.default_rng(seed)
    rows = []
    for p, n in enumerate(sizes):
        centre, spread = rng.normal(0, 5, 3), rng.uniform(0.5, 2.0, 3)
        for j in range(n):
            rows.append({"patient_id": f"IP_{p:07d}", **dict(zip(FEATURES, centre + spread * rng.normal(size=3)))})
    frame = pd.DataFrame(rows)
    frame.index = [f"img{i}" for i in range(len(frame))]  # a non-default index must be kept
    return frame


# =========================================================================== patient_relative
def test_patient_relative_z_scores_have_mean_0_and_std_1_within_each_patient():
    frame = _patients()
    rel = C.patient_relative(frame, FEATURES)
    assert list(rel.index) == list(frame.index)
    assert [f"{c}_z" for c in FEATURES] == list(rel.columns[:3])
    several = frame.groupby("patient_id")["f1"].transform("size") >= 2
    z = rel.loc[several, [f"{c}_z" for c in FEATURES]]
    by_patient = z.groupby(frame.loc[several, "patient_id"])
    np.testing.assert_allclose(by_patient.mean().to_numpy(), 0, atol=1e-12)
    np.testing.assert_allclose(by_patient.std(ddof=0).to_numpy(), 1, atol=1e-12)
    # by hand for one lesion
    p = frame[frame.patient_id == "IP_0000001"]["f2"]
    assert rel.loc[p.index[0], "f2_z"] == pytest.approx((p.iloc[0] - p.mean()) / p.std(ddof=0))


def test_patient_relative_single_image_is_nan_constant_feature_is_zero_and_counts():
    frame = _patients()
    frame["const_within"] = frame.groupby("patient_id").ngroup() * 3.0  # differs between patients only
    rel = C.patient_relative(frame, FEATURES + ["const_within"])
    single = frame.index[-1]
    assert rel.loc[single, ["f1_z", "f2_z", "f3_z", "centroid_dist"]].isna().all()
    assert (rel["const_within_z"].drop(single) == 0).all()
    assert rel["n_patient_images"].tolist() == [6] * 6 + [5] * 5 + [4] * 4 + [3] * 3 + [2] * 2 + [1]


def test_centroid_distance_uses_pooled_within_patient_scale():
    frame = _patients()
    rel = C.patient_relative(frame, FEATURES)
    several = frame[frame.groupby("patient_id")["f1"].transform("size") >= 2]
    centred = several[FEATURES] - several.groupby("patient_id")[FEATURES].transform("mean")
    dof = several.groupby("patient_id").size().sub(1).sum()
    pooled = np.sqrt((centred ** 2).sum() / dof)
    expected = np.sqrt(((centred / pooled) ** 2).mean(axis=1))
    np.testing.assert_allclose(rel.loc[several.index, "centroid_dist"], expected, rtol=1e-10)


def test_patient_relative_rejects_missing_column_and_patient():
    frame = _patients()
    with pytest.raises(ValueError, match="'nope'"):
        C.patient_relative(frame, ["f1", "nope"])
    frame.loc["img3", "patient_id"] = None
    with pytest.raises(ValueError, match="img3.*patient_id"):
        C.patient_relative(frame, FEATURES)


# =========================================================================== ugly_duckling_score
@pytest.mark.parametrize("method", C.UD_METHODS)
def test_planted_outlier_ranks_first_within_its_patient(method):
    frame = _patients(seed=1)
    patient = frame[frame.patient_id == "IP_0000000"]
    outlier = patient.index[2]
    frame.loc[outlier, FEATURES] = patient[FEATURES].mean() + 8 * patient[FEATURES].std()
    score = C.ugly_duckling_score(frame, FEATURES, method=method)
    assert score.name == "ugly_duckling" and list(score.index) == list(frame.index)
    assert score[patient.index].idxmax() == outlier
    assert np.isnan(score.iloc[-1])                       # the single-image patient
    assert score.drop(frame.index[-1]).notna().all()


@pytest.mark.parametrize("method", C.UD_METHODS)
def test_score_is_invariant_to_a_constant_added_per_patient(method):
    frame = _patients(seed=2)
    shifted = frame.copy()
    rng = np.random.default_rng(5)
    offsets = {p: rng.normal(0, 50, 3) for p in frame.patient_id.unique()}
    shifted[FEATURES] = frame[FEATURES] + np.stack([offsets[p] for p in frame.patient_id])
    a = C.ugly_duckling_score(frame, FEATURES, method=method)
    b = C.ugly_duckling_score(shifted, FEATURES, method=method)
    np.testing.assert_allclose(a, b, rtol=1e-8, equal_nan=True)
    # a per-feature rescaling changes nothing either (features are standardized)
    scaled = frame.assign(f1=frame.f1 * 1000.0)
    np.testing.assert_allclose(C.ugly_duckling_score(scaled, FEATURES, method=method), a, rtol=1e-8,
                               equal_nan=True)


def _pooled_std(frame: pd.DataFrame) -> np.ndarray:
    several = frame[frame.groupby("patient_id")["f1"].transform("size") >= 2]
    centred = several[FEATURES] - several.groupby("patient_id")[FEATURES].transform("mean")
    return np.sqrt((centred ** 2).sum() / several.groupby("patient_id").size().sub(1).sum()).to_numpy()


def test_leave_one_out_by_brute_force():
    frame = _patients(seed=3)
    s = _pooled_std(frame)
    zn = C.ugly_duckling_score(frame, FEATURES, method="zscore-norm")
    ml = C.ugly_duckling_score(frame, FEATURES, method="mahalanobis-lite", prior=2.0)
    kn = C.ugly_duckling_score(frame, FEATURES, method="knn", k=2)
    for _, part in frame.groupby("patient_id"):
        x = part[FEATURES].to_numpy() / s
        for i, name in enumerate(part.index):
            if len(part) < 2:
                continue
            others = np.delete(x, i, axis=0)
            dev = x[i] - others.mean(0)
            assert zn[name] == pytest.approx(np.sqrt(np.mean(dev ** 2)))
            ss = ((others - others.mean(0)) ** 2).sum(0)
            var = (ss + 2.0) / (len(others) - 1 + 2.0)
            assert ml[name] == pytest.approx(np.sqrt(np.mean(dev ** 2 / var)))
            d = np.sort(np.sqrt(((others - x[i]) ** 2).mean(1)))[:2]
            assert kn[name] == pytest.approx(d.mean())


def test_leave_one_out_lets_an_outlier_stand_out_more_than_including_itself():
    # Two patients: the outlier's own value would pull a non-LOO mean towards it.
    frame = pd.DataFrame({"patient_id": ["a"] * 4 + ["b"] * 4,
                          "f1": [0.0, 0.1, -0.1, 5.0, 0.0, 0.2, -0.2, 0.1]})
    score = C.ugly_duckling_score(frame, ["f1"], method="zscore-norm")
    s = _pooled_std_1d(frame)
    assert score[3] == pytest.approx(abs(5.0 - 0.0) / s)          # mean of the others is 0
    assert score[3] > abs(5.0 - frame.f1[:4].mean()) / s          # the non-LOO distance is smaller


def _pooled_std_1d(frame: pd.DataFrame) -> float:
    c = frame.f1 - frame.groupby("patient_id").f1.transform("mean")
    return float(np.sqrt((c ** 2).sum() / (len(frame) - frame.patient_id.nunique())))


def test_ugly_duckling_rejects_bad_input():
    frame = _patients()
    with pytest.raises(ValueError, match="unknown method"):
        C.ugly_duckling_score(frame, FEATURES, method="lof")
    bad = frame.copy()
    bad.loc["img4", "f2"] = np.nan
    with pytest.raises(ValueError, match="img4.*'f2'"):
        C.ugly_duckling_score(bad, FEATURES)
    alone = pd.DataFrame({"patient_id": ["a", "b"], "f1": [1.0, 2.0]})
    with pytest.raises(ValueError, match="two or more images"):
        C.ugly_duckling_score(alone, ["f1"])


# =========================================================================== per_patient_auc
def test_per_patient_auc_counts_only_patients_with_both_classes():
    frame = pd.DataFrame({"patient_id": ["a"] * 4 + ["b"] * 3 + ["c"] * 2,
                          "target": [0, 0, 1, 1, 0, 0, 1, 0, 0],
                          "s": [0.1, 0.4, 0.35, 0.8, 0.9, 0.1, 0.5, 0.2, 0.3]})
    auc = C.per_patient_auc(frame, "s")
    assert list(auc.index) == ["a", "b"]                            # c has no melanoma
    assert auc["a"] == pytest.approx(0.75) and auc["b"] == pytest.approx(0.5)
    np.testing.assert_allclose(C.per_patient_auc(frame, frame["s"].to_numpy() * -1), [0.25, 0.5])


# =========================================================================== leakage_experiment
def _identity_dataset(seed: int = 0, n_patients: int = 30, per_patient: int = 10):
    """Features identify the patient; the label is the patient's (all positive or all negative)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (n_patients, 4))
    label = rng.permutation(np.arange(n_patients) % 2)              # half the patients positive
    groups = np.repeat(np.arange(n_patients), per_patient)
    X = centres[groups] + rng.normal(0, 0.3, (len(groups), 4))
    return X, label[groups], np.array([f"IP_{g:07d}" for g in groups])


def test_leakage_experiment_random_split_beats_grouped_when_label_follows_patient():
    X, y, groups = _identity_dataset()
    result = C.leakage_experiment(None, X, y, groups, seeds=range(5))
    assert list(result.columns) == ["seed", "split", "auc", "n_train", "n_val", "val_positives",
                                    "val_patients", "val_patients_in_train"]
    assert len(result) == 10 and set(result.split) == {"random", "grouped"}
    mean = result.groupby("split")["auc"].mean()
    assert mean["random"] > 0.9                                     # the patient is recognised
    assert mean["grouped"] < 0.75                                   # unseen patients: near chance
    assert mean["random"] - mean["grouped"] > 0.25
    grouped, random = result[result.split == "grouped"], result[result.split == "random"]
    assert (grouped.val_patients_in_train == 0).all()
    assert (random.val_patients_in_train > 0).all()
    assert (result.n_train + result.n_val == len(y)).all()


def test_leakage_experiment_reads_columns_of_a_frame_and_accepts_a_model():
    from sklearn.linear_model import LogisticRegression

    X, y, groups = _identity_dataset(seed=1, n_patients=12, per_patient=6)
    frame = pd.DataFrame(X, columns=["a", "b", "c", "d"]).assign(target=y, patient_id=groups)
    result = C.leakage_experiment(frame, ["a", "b", "c", "d"], "target", "patient_id", seeds=[7],
                                  model=LogisticRegression())
    assert result.seed.tolist() == [7, 7]
    assert result.auc.between(0, 1).all()
    with pytest.raises(ValueError, match="no column"):
        C.leakage_experiment(frame, ["a", "zz"], "target", "patient_id", seeds=[0])
    with pytest.raises(ValueError, match="differ in length"):
        C.leakage_experiment(None, X, y[:-1], groups, seeds=[0])


# =========================================================================== image_embeddings
class _MapNet(nn.Module):
    """Returns 4-D feature maps (to be pooled); records the batch sizes it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3)
        self.drop = nn.Dropout(0.9)
        self.seen: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(len(x))
        return self.drop(self.conv(x))


def test_image_embeddings_pools_batches_and_restores_mode():
    torch.manual_seed(0)
    net = _MapNet().train()
    images = torch.rand(7, 3, 12, 12)
    a = C.image_embeddings(net, images, batch_size=3, progress=False)
    assert net.training                                            # mode restored
    assert net.seen == [3, 3, 1]
    expected = net.conv(images).mean((2, 3)).detach().numpy()      # eval: dropout is off
    np.testing.assert_allclose(a, expected, rtol=1e-5, atol=1e-6)
    b = C.image_embeddings(net, images, batch_size=7, progress=False)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    u8 = (images * 255).round().to(torch.uint8)                    # uint8 is ImageNet-normalised
    c = C.image_embeddings(net, u8, batch_size=4, progress=False)
    assert not np.allclose(c, a, atol=1e-3)


def test_image_embeddings_of_files_use_the_backbone_not_the_head(tmp_path):
    from helpers.models import build_model

    paths = []
    for i, colour in enumerate([(200, 150, 120), (90, 60, 40), (200, 150, 120)]):
        p = tmp_path / f"ISIC_{i:07d}.jpg"
        Image.new("RGB", (80, 60), colour).save(p, quality=95)
        paths.append(p)
    torch.manual_seed(0)
    model = build_model("efficientnet_lite0", num_classes=1, pretrained=False, verbose=False)
    emb = C.image_embeddings(model, paths, batch_size=2, size=64, progress=False)
    assert emb.shape == (3, 1280)
    assert np.abs(emb).max() > 0
    rel = lambda a, b: np.linalg.norm(a - b) / np.linalg.norm(a)  # noqa: E731 - random init: tiny values
    assert rel(emb[0], emb[2]) < 1e-5                              # same image, same embedding
    assert rel(emb[0], emb[1]) > 1e-2                              # another colour, another embedding
    with pytest.raises(ValueError, match="shape"):
        C.image_embeddings(model, torch.rand(2, 1, 8, 8), progress=False)


def test_cached_embeddings_reuse_and_invalidate(tmp_path, monkeypatch):
    rows = []
    for i in range(5):
        path = tmp_path / f"ISIC_{i:07d}.jpg"
        Image.fromarray(lesion(40 + 4 * i, 48, i)).save(path)
        rows.append({"image_id": path.stem, "path": str(path)})
    frame = pd.DataFrame(rows)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3), torch.nn.ReLU())
    calls = []
    real = C.image_embeddings
    monkeypatch.setattr(C, "image_embeddings", lambda m, paths, **kw: calls.append(len(paths)) or real(
        m, paths, **kw))
    cache = tmp_path / "cache" / "emb.npz"
    first = C.cached_embeddings(net, frame.head(3), cache, size=32)
    assert first.shape == (3, 6) and first.dtype == np.float32 and calls == [3]
    both = C.cached_embeddings(net, frame.iloc[::-1], cache, size=32)  # two new, three cached
    assert calls == [3, 2] and both.shape == (5, 6)
    assert np.allclose(both[::-1][:3], first, atol=1e-6)  # rows follow the frame's order
    again = C.cached_embeddings(net, frame, cache, size=32)
    assert calls == [3, 2] and np.allclose(again, both[::-1])
    with np.load(cache) as saved:
        assert sorted(saved["image_id"].tolist()) == frame.image_id.tolist()
        assert str(saved["fingerprint"]) == C.model_fingerprint(net)
    C.cached_embeddings(net, frame, cache, size=24)  # another size: everything again
    assert calls == [3, 2, 5]
    with torch.no_grad():
        net[0].bias += 1.0  # other weights: another fingerprint, everything again
    C.cached_embeddings(net, frame, cache, size=24)
    assert calls == [3, 2, 5, 5]
    with pytest.raises(ValueError, match="image_id"):
        C.cached_embeddings(net, frame.drop(columns="image_id"), cache)


def test_model_fingerprint_follows_the_weights():
    torch.manual_seed(0)
    a = torch.nn.Linear(4, 2)
    b = torch.nn.Linear(4, 2)
    b.load_state_dict(a.state_dict())
    assert C.model_fingerprint(a) == C.model_fingerprint(b) and len(C.model_fingerprint(a)) == 16
    with torch.no_grad():
        b.weight[0, 0] += 1e-3
    assert C.model_fingerprint(a) != C.model_fingerprint(b)
