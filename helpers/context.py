"""Patient context: a lesion compared with the same patient's other lesions.

Dermatologists rarely judge a mole alone. They compare it with the patient's
other moles: nevi of one person tend to look alike, and a melanoma often
stands out among them as the *ugly duckling* (Grob & Bonerandi 1998). The
SIIM-ISIC 2020 data set gives every image a ``patient_id`` for this reason
(Rotemberg et al. 2021). This module turns that idea into numbers, and
measures the trap that comes with it:

- :func:`patient_relative` -- each lesion's features as z-scores within its
  patient, plus its distance to the patient's centroid;
- :func:`ugly_duckling_score` -- how far a lesion lies from the patient's
  *other* lesions (leave-one-out), by three methods;
- :func:`per_patient_auc` -- the ROC AUC of a score inside each patient;
- :func:`image_embeddings` -- penultimate-layer CNN features of many images
  (:func:`cached_embeddings`: computed once, cached on disk by image id);
- :func:`leakage_experiment` -- validation AUC after a random image split vs.
  a patient-grouped split, over several seeds: images of one patient on both
  sides of a split let a model recognise the patient instead of the disease.

Every score here is *within* a patient, so it is unchanged when a constant is
added to all lesions of one patient (a darker skin, another camera).
"""
from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from tqdm.std import tqdm  # text progress bars in every front end

from helpers.io import write_atomically
from helpers.vocab import IMAGENET_MEAN, IMAGENET_STD

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "UD_METHODS",
    "patient_relative",
    "ugly_duckling_score",
    "per_patient_auc",
    "image_embeddings",
    "model_fingerprint",
    "cached_embeddings",
    "leakage_experiment",
]

#: Methods :func:`ugly_duckling_score` accepts.
UD_METHODS: tuple[str, ...] = ("mahalanobis-lite", "zscore-norm", "knn")


# =========================================================================== input checks
def _feature_matrix(frame: pd.DataFrame, feature_cols: Sequence[str], patient_col: str,
                    allow_nan: bool) -> tuple[np.ndarray, pd.Series]:
    """(n, d) float matrix of ``feature_cols`` and the patient of each row; ValueError on bad input."""
    cols = [feature_cols] if isinstance(feature_cols, str) else list(feature_cols)
    if not cols:
        raise ValueError("feature_cols is empty: name at least one feature column")
    missing = [c for c in [*cols, patient_col] if c not in frame.columns]
    if missing:
        raise ValueError(f"frame has no column(s) {', '.join(map(repr, missing))}")
    patients = frame[patient_col]
    if patients.isna().any():
        row = frame.index[patients.isna().to_numpy()][0]
        raise ValueError(f"row {row!r}, column {patient_col!r}: missing patient id")
    try:
        x = frame[cols].to_numpy(dtype=float, na_value=np.nan)
    except (TypeError, ValueError) as err:
        raise ValueError(f"feature columns must be numeric ({err})") from None
    if not allow_nan and not np.isfinite(x).all():
        r, c = np.argwhere(~np.isfinite(x))[0]
        raise ValueError(f"row {frame.index[r]!r}, column {cols[c]!r}: value is not finite "
                         "(drop or impute it first)")
    return x, patients.astype("string").reset_index(drop=True)


def _pooled_within_std(x: np.ndarray, codes: np.ndarray, n_groups: int) -> np.ndarray:
    """Per-feature pooled within-patient standard deviation (patients with >= 2 rows)."""
    counts = np.bincount(codes, minlength=n_groups)
    means = np.stack([np.bincount(codes, weights=x[:, j], minlength=n_groups) for j in range(x.shape[1])], 1)
    means /= np.maximum(counts, 1)[:, None]
    centred = x - means[codes]
    dof = int((counts[counts > 0] - 1).sum())
    if dof == 0:
        return np.full(x.shape[1], np.nan)
    return np.sqrt((centred ** 2).sum(0) / dof)


# =========================================================================== patient-relative features
def patient_relative(frame: pd.DataFrame, feature_cols: Sequence[str],
                     patient_col: str = "patient_id") -> pd.DataFrame:
    """Each lesion's features relative to its own patient's lesions.

    Returns a frame with the index of ``frame`` and, for every column ``c`` of
    ``feature_cols``:

    - ``c_z``: the z-score within the patient, ``(x - patient mean) / patient
      std`` (population std, ``ddof=0``), so that inside each patient the
      z-scores have mean 0 and standard deviation 1. A feature that is
      constant within a patient gets z = 0 there.

    and two columns for the whole feature vector:

    - ``centroid_dist``: the distance from the lesion to its patient's mean
      (centroid), with every feature divided by its *pooled within-patient*
      standard deviation (one scale for all patients, so distances compare
      across patients), as a root mean square over the features
      (Euclidean norm / sqrt(d));
    - ``n_patient_images``: how many images the patient has.

    **Patients with a single image get NaN** in ``c_z`` and
    ``centroid_dist``: with nothing to compare the lesion with, there is no
    patient context (fill with 0 if a model needs a number). Missing feature
    values (NaN) are skipped in the means and stay NaN.

    Introduced in chapter 6 (patient context).
    """
    x, patients = _feature_matrix(frame, feature_cols, patient_col, allow_nan=True)
    cols = [feature_cols] if isinstance(feature_cols, str) else list(feature_cols)
    values = pd.DataFrame(x, columns=cols)
    grouped = values.groupby(patients.to_numpy(), sort=False)
    mean = grouped.transform("mean")
    std = grouped.transform("std", ddof=0)
    n = patients.map(patients.value_counts()).to_numpy()
    centred = values - mean
    z = (centred / std.where(std > 0)).where(std > 0, 0.0).where(values.notna())  # constant -> 0
    single = n < 2
    z.loc[single, :] = np.nan
    # pooled within-patient standard deviation of each feature (NaN-aware)
    dof = (grouped.count() - 1).clip(lower=0).sum()
    scale = np.sqrt((centred ** 2).sum() / dof.where(dof > 0)).to_numpy()
    scale = np.where(scale > 0, scale, np.inf)                  # constant features do not count
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Mean of empty slice", category=RuntimeWarning)
        dist = np.sqrt(np.nanmean((centred.to_numpy() / scale) ** 2, axis=1))
    dist[single] = np.nan
    out = z.add_suffix("_z")
    out["centroid_dist"] = dist
    out["n_patient_images"] = n
    out.index = frame.index
    return out


# =========================================================================== ugly-duckling score
def ugly_duckling_score(frame: pd.DataFrame, feature_cols: Sequence[str],
                        patient_col: str = "patient_id", method: str = "mahalanobis-lite",
                        k: int | None = None, prior: float = 2.0,
                        standardize: bool = True) -> pd.Series:
    """How much each lesion stands out from the same patient's *other* lesions.

    All methods are **leave-one-out**: lesion *i* is compared with the other
    lesions of its patient only, so an outlier does not pull the reference
    towards itself. Features are first divided by their *pooled
    within-patient* standard deviation ``s`` (how much lesions of one person
    vary, pooled over all patients), which puts every feature on one scale.
    Methods (``d`` = number of features; scores are root mean squares over
    the features, i.e. Euclidean norm / sqrt(d)):

    - ``"zscore-norm"``: ``rms((x_i - mean of the others) / s)``: how many
      typical within-patient spreads the lesion lies from the mean of the
      patient's other lesions.
    - ``"mahalanobis-lite"`` (default): a diagonal Mahalanobis distance that
      also uses the *patient's own* spread: ``rms((x_i - mean of the others)
      / sqrt(v))`` with ``v = (SS + prior * s**2) / (m - 1 + prior)``, where
      ``m`` is the number of other lesions and ``SS`` their sum of squared
      deviations from their mean: the patient's variance, shrunk towards the
      pooled one (``prior`` = its weight in pseudo-lesions), so that a
      patient with 2-3 images still gets a sensible variance. A patient
      whose nevi all look alike makes a deviant lesion stand out more.
    - ``"knn"``: the mean Euclidean distance (rms per feature) from the
      lesion to its ``k`` nearest other lesions of the patient (``k=None``:
      all of them); features scaled by ``s`` when ``standardize`` (else raw:
      e.g. for CNN embeddings already on one scale).

    Patients with a single image get NaN (nobody to compare with). Scores
    are unchanged by adding a constant to all lesions of one patient, and
    (with standardization) by rescaling a feature. Feature values must be
    finite; a feature constant within every patient is ignored.

    Returns a float Series named ``ugly_duckling`` aligned with ``frame``.

    Introduced in chapter 6 (patient context).
    """
    if method not in UD_METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(UD_METHODS)}")
    if k is not None and k < 1:
        raise ValueError(f"k must be >= 1 or None, got {k}")
    if prior <= 0:
        raise ValueError(f"prior must be > 0, got {prior}")
    x, patients = _feature_matrix(frame, feature_cols, patient_col, allow_nan=False)
    codes, uniques = pd.factorize(patients)
    counts = np.bincount(codes, minlength=len(uniques))
    n = counts[codes].astype(float)
    scale = _pooled_within_std(x, codes, len(uniques))
    if not np.isfinite(scale).any():
        raise ValueError(f"no patient in column {patient_col!r} has two or more images: "
                         "there is no patient context to compare with")
    keep = scale > 0
    if method != "knn" or standardize:
        if not keep.any():
            raise ValueError("every feature is constant within every patient: nothing to score")
        x = x[:, keep] / scale[keep]
    means = np.stack([np.bincount(codes, weights=x[:, j], minlength=len(uniques)) for j in range(x.shape[1])], 1)
    centred = x - (means / np.maximum(counts, 1)[:, None])[codes]
    score = np.full(len(x), np.nan)
    several = n >= 2
    if method in ("zscore-norm", "mahalanobis-lite"):
        # x_i - mean(others) = c_i * n / (n - 1), with c_i the deviation from the patient's mean.
        loo = centred[several] * (n[several] / (n[several] - 1))[:, None]
        if method == "zscore-norm":
            var = 1.0                                              # features are in units of s
        else:
            ss_all = np.stack([np.bincount(codes, weights=centred[:, j] ** 2, minlength=len(uniques))
                               for j in range(x.shape[1])], 1)[codes]
            # sum of squares of the others about their own mean: SS - c_i^2 * n / (n - 1)
            ss_others = ss_all[several] - centred[several] ** 2 * (n[several] / (n[several] - 1))[:, None]
            ss_others = np.maximum(ss_others, 0.0)
            var = (ss_others + prior * 1.0) / ((n[several] - 2)[:, None] + prior)
        score[several] = np.sqrt(np.mean(loo ** 2 / var, axis=1))
    else:
        from scipy.spatial.distance import cdist

        for g in np.flatnonzero(counts >= 2):
            rows = np.flatnonzero(codes == g)
            dist = cdist(x[rows], x[rows]) / np.sqrt(x.shape[1])
            np.fill_diagonal(dist, np.inf)
            kk = len(rows) - 1 if k is None else min(k, len(rows) - 1)
            score[rows] = np.sort(dist, axis=1)[:, :kk].mean(1)
    return pd.Series(score, index=frame.index, name="ugly_duckling")


def per_patient_auc(frame: pd.DataFrame, score: str | Sequence[float] | pd.Series,
                    target_col: str = "target", patient_col: str = "patient_id") -> pd.Series:
    """ROC AUC of ``score`` inside each patient that has both a melanoma and a benign lesion.

    ``score`` is a column name of ``frame`` or values aligned with it. The
    AUC inside a patient asks: does the score rank *this patient's*
    melanomas above *this patient's* benign lesions? Patients with only one
    class (or a missing score) are left out. Returns a Series of AUCs
    indexed by patient id and named ``auc``; its mean is the "within-patient
    AUC".

    Introduced in chapter 6 (patient context).
    """
    from sklearn.metrics import roc_auc_score

    for col in (target_col, patient_col):
        if col not in frame.columns:
            raise ValueError(f"frame has no column {col!r}")
    s = frame[score] if isinstance(score, str) else pd.Series(np.asarray(score, float), index=frame.index)
    if len(s) != len(frame):
        raise ValueError(f"score has {len(s)} values but frame has {len(frame)} rows")
    data = pd.DataFrame({"s": s.to_numpy(float), "y": frame[target_col].to_numpy(float),
                         "p": frame[patient_col].to_numpy()}).dropna()
    out = {}
    for patient, part in data.groupby("p", sort=True):
        if part["y"].nunique() == 2:
            out[patient] = float(roc_auc_score(part["y"], part["s"]))
    return pd.Series(out, name="auc", dtype=float).rename_axis(patient_col)


# =========================================================================== CNN embeddings
def image_embeddings(model: Any, images: Sequence[str | PathLike] | Any, batch_size: int = 32,
                     size: int = 224, device: Any = None, progress: bool = True) -> np.ndarray:
    """Penultimate-layer features of a CNN for many images: an array (n_images, n_features).

    ``model`` is a :class:`helpers.models.LesionClassifier` (its ``backbone``
    is used, so the head is skipped) or any module that returns features;
    a 4-D output (feature maps) is global-average-pooled. ``images`` is a
    list of image paths (decoded with
    :func:`helpers.fastpath.decode_jpeg_batch`: shorter side to ``size``,
    centre crop) or a tensor (n, 3, H, W): ``uint8`` images are
    ImageNet-normalised, float ones used as they are. Runs in eval mode
    under ``torch.no_grad()``, ``batch_size`` images at a time, with a tqdm
    bar when ``progress``; the model's train/eval mode is restored after.

    Introduced in chapter 6 (patient context).
    """
    import torch  # lazy, as below: the tabular analyses of this module need no torch

    from helpers.fastpath import decode_jpeg_batch

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    net = getattr(model, "backbone", model)
    dev = torch.device(device) if device is not None else next(net.parameters()).device
    is_tensor = isinstance(images, torch.Tensor)
    if is_tensor and (images.ndim != 4 or images.shape[1] != 3):
        raise ValueError(f"images tensor must have shape (n, 3, H, W), got {tuple(images.shape)}")
    n = len(images)
    mean = torch.tensor(IMAGENET_MEAN, device=dev).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=dev).view(1, 3, 1, 1)
    starts: Iterable[int] = range(0, n, batch_size)
    if progress:
        starts = tqdm(starts, desc="embeddings")
    was_training = net.training
    net.eval()
    outputs = []
    try:
        with torch.no_grad():
            for start in starts:
                part = images[start:start + batch_size]
                batch = part if is_tensor else decode_jpeg_batch(list(part), size)
                batch = batch.to(dev)
                if batch.dtype == torch.uint8:
                    batch = (batch.float() / 255.0 - mean) / std
                feats = net(batch)
                if feats.ndim == 4:
                    feats = feats.mean((2, 3))
                if feats.ndim != 2:
                    raise ValueError(f"model returned features of shape {tuple(feats.shape)}; "
                                     "expected (batch, n_features)")
                outputs.append(feats.float().cpu())
    finally:
        net.train(was_training)
    if not outputs:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.cat(outputs).numpy()


def model_fingerprint(model: nn.Module) -> str:
    """A short hash of a model's weights (its ``state_dict``): equal weights give equal strings.

    Used to tell whether cached features still belong to the model at hand.

    Not called in a chapter; used by `cached_embeddings`.
    """
    import hashlib

    digest = hashlib.sha1()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().float().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def cached_embeddings(model: nn.Module, frame: pd.DataFrame, cache_path: PathLike | str,
                      size: int = 224, batch_size: int = 32) -> np.ndarray:
    """Penultimate-layer features of ``frame``'s images, computed once and cached by ``image_id``.

    ``cache_path`` is a ``.npz`` file with the arrays ``image_id``,
    ``features`` (n, d), ``size`` and ``fingerprint``
    (:func:`model_fingerprint`). Images already in a cache of the same model
    and size are read from it; the others are embedded with
    :func:`image_embeddings` (no progress bar) and added, and
    the file is rewritten atomically. A cache of another model or size is
    replaced. Returns a float32 array (len(frame), d), rows in ``frame``'s order.

    Introduced in chapter 7 (the data pipeline).
    """
    if "image_id" not in frame or "path" not in frame:
        raise ValueError("cached_embeddings: frame needs 'image_id' and 'path' columns")
    path = Path(cache_path)
    ids = frame["image_id"].astype(str).tolist()
    fingerprint = model_fingerprint(model)
    known: dict[str, np.ndarray] = {}
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as cached:
                if int(cached["size"]) == size and str(cached["fingerprint"]) == fingerprint:
                    known = dict(zip(cached["image_id"].tolist(), cached["features"]))
        except (OSError, ValueError, KeyError):
            known = {}
    missing = [i for i, image_id in enumerate(ids) if image_id not in known]
    if missing:
        feats = image_embeddings(model, [str(frame["path"].iloc[i]) for i in missing], size=size,
                                 batch_size=batch_size, progress=False)
        known.update(zip((ids[i] for i in missing), feats.astype(np.float32)))
        all_ids = sorted(known)
        write_atomically(path, lambda tmp: np.savez(
            tmp, image_id=np.array(all_ids), features=np.stack([known[i] for i in all_ids]),
            size=np.array(size), fingerprint=np.array(fingerprint)))
    if not ids:
        return np.zeros((0, 0), dtype=np.float32)
    return np.stack([known[i] for i in ids]).astype(np.float32)


# =========================================================================== leakage
def _column_or_array(frame: pd.DataFrame | None, value: Any, name: str) -> np.ndarray:
    if isinstance(value, str) or (isinstance(value, (list, tuple)) and value and
                                  all(isinstance(v, str) for v in value)):
        if frame is None:
            raise ValueError(f"{name} names column(s) {value!r} but no frame was given")
        missing = [c for c in ([value] if isinstance(value, str) else value) if c not in frame.columns]
        if missing:
            raise ValueError(f"frame has no column(s) {', '.join(map(repr, missing))} (for {name})")
        return frame[value].to_numpy()
    return np.asarray(value)


def leakage_experiment(frame: pd.DataFrame | None, X: Any, y: Any, groups: Any,
                       seeds: Iterable[int] = (0, 1, 2, 3, 4), model: Any = None,
                       test_size: float = 0.25) -> pd.DataFrame:
    """Validation AUC after a random image split vs. a patient-grouped split, seed by seed.

    For each seed the same ``model`` (a fresh ``sklearn.base.clone``) is
    trained and scored twice:

    - ``"random"``: ``train_test_split`` of the *images* (stratified by
      ``y``), the naive split: a patient's images land on both sides;
    - ``"grouped"``: one fold of ``StratifiedGroupKFold(round(1 / test_size))``
      grouped by ``groups`` (the patient): no patient on both sides.

    The difference in AUC is what patient leakage adds: with images of the
    same patient in training, a model can score a validation image by
    recognising the *patient* (skin, camera, nevus style) and reusing the
    labels of their other lesions. It is large when the features identify
    the patient and the label runs in patients.

    ``X``, ``y`` and ``groups`` are arrays, or column names of ``frame``.
    The default model is a 5-nearest-neighbour classifier on standardized
    features (a model that leaks as plainly as it can). Returns one row per
    seed and split with columns ``seed``, ``split``, ``auc`` (NaN if the
    validation part has one class only), ``n_train``, ``n_val``,
    ``val_positives``, ``val_patients`` and ``val_patients_in_train``
    (validation patients that also have images in training).

    Introduced in chapter 6 (patient context).
    """
    from sklearn.base import clone
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold, train_test_split
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if not 0 < test_size < 1:
        raise ValueError(f"test_size must be between 0 and 1, got {test_size}")
    features = _column_or_array(frame, X, "X").astype(float)
    if features.ndim == 1:
        features = features[:, None]
    target = _column_or_array(frame, y, "y").astype(int)
    patient = pd.Series(_column_or_array(frame, groups, "groups")).astype("string").to_numpy()
    if not len(features) == len(target) == len(patient):
        raise ValueError(f"X, y and groups differ in length: {len(features)}, {len(target)}, {len(patient)}")
    if set(np.unique(target)) - {0, 1} or len(np.unique(target)) < 2:
        raise ValueError("y must hold both classes, coded 0 and 1")
    model = model if model is not None else make_pipeline(StandardScaler(), KNeighborsClassifier(5))
    n_splits = max(2, round(1 / test_size))
    strat = target if np.bincount(target).min() >= 2 else None
    rows = []
    for seed in seeds:
        idx = np.arange(len(target))
        tr_r, va_r = train_test_split(idx, test_size=test_size, random_state=seed, stratify=strat)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
            splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
            tr_g, va_g = next(iter(splitter.split(features, target, patient)))
        for name, tr, va in (("random", tr_r, va_r), ("grouped", tr_g, va_g)):
            fitted = clone(model).fit(features[tr], target[tr])
            proba = fitted.predict_proba(features[va])[:, list(fitted.classes_).index(1)]
            auc = float(roc_auc_score(target[va], proba)) if len(np.unique(target[va])) == 2 else np.nan
            val_patients = set(patient[va])
            rows.append(dict(seed=int(seed), split=name, auc=auc, n_train=len(tr), n_val=len(va),
                             val_positives=int(target[va].sum()), val_patients=len(val_patients),
                             val_patients_in_train=len(val_patients & set(patient[tr]))))
    return pd.DataFrame(rows)
