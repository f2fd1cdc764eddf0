"""Patient context: a lesion compared with the same patient's other lesions.

A patient's nevi tend to look alike, and a melanoma often stands out among them as the *ugly duckling*
(Grob & Bonerandi 1998); SIIM-ISIC 2020 gives every image a ``patient_id`` for this. Features relative
to the patient (:func:`patient_relative`), leave-one-out outlier scores (:func:`ugly_duckling_score`),
the AUC inside each patient, CNN embeddings (cached on disk), and the trap: images of one patient on
both sides of a split (:func:`leakage_experiment`). Every score here is *within* a patient, so it is
unchanged when a constant is added to all lesions of one patient.
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

__all__ = ["UD_METHODS", "patient_relative", "ugly_duckling_score", "per_patient_auc", "image_embeddings",
           "model_fingerprint", "cached_embeddings", "leakage_experiment"]

#: Methods :func:`ugly_duckling_score` accepts.
UD_METHODS: tuple[str, ...] = ("mahalanobis-lite", "zscore-norm", "knn")


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


def _group_sums(x: np.ndarray, codes: np.ndarray, n_groups: int) -> np.ndarray:
    """(n_groups, d): the sum of each column of ``x`` over the rows of each group."""
    return np.stack([np.bincount(codes, weights=x[:, j], minlength=n_groups) for j in range(x.shape[1])], 1)


def _centred(x: np.ndarray, codes: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Each row minus its patient's mean."""
    return x - (_group_sums(x, codes, len(counts)) / np.maximum(counts, 1)[:, None])[codes]


def patient_relative(frame: pd.DataFrame, feature_cols: Sequence[str],
                     patient_col: str = "patient_id") -> pd.DataFrame:
    """Each lesion's features relative to its own patient's lesions.

    Per feature ``c``, ``c_z``: the z-score within the patient (``ddof=0``; constant within the patient:
    0). ``centroid_dist``: rms over the features of the distance to the patient's mean, each feature in
    units of its pooled within-patient std. ``n_patient_images``. Single-image patients get NaN; missing
    values are skipped in the means and stay NaN.

    Introduced in chapter 6 (patient context).
    """
    x, patients = _feature_matrix(frame, feature_cols, patient_col, allow_nan=True)
    cols = [feature_cols] if isinstance(feature_cols, str) else list(feature_cols)
    values = pd.DataFrame(x, columns=cols)
    grouped = values.groupby(patients.to_numpy(), sort=False)
    std = grouped.transform("std", ddof=0)
    n = patients.map(patients.value_counts()).to_numpy()
    centred = values - grouped.transform("mean")
    z = (centred / std.where(std > 0)).where(std > 0, 0.0).where(values.notna())  # constant -> 0
    single = n < 2
    z.loc[single, :] = np.nan
    dof = (grouped.count() - 1).clip(lower=0).sum()  # pooled within-patient std, NaN-aware
    scale = np.sqrt((centred ** 2).sum() / dof.where(dof > 0)).to_numpy()
    scale = np.where(scale > 0, scale, np.inf)  # constant features do not count
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Mean of empty slice", category=RuntimeWarning)
        dist = np.sqrt(np.nanmean((centred.to_numpy() / scale) ** 2, axis=1))
    dist[single] = np.nan
    out = z.add_suffix("_z")
    out["centroid_dist"] = dist
    out["n_patient_images"] = n
    out.index = frame.index
    return out


def ugly_duckling_score(frame: pd.DataFrame, feature_cols: Sequence[str],
                        patient_col: str = "patient_id", method: str = "mahalanobis-lite",
                        k: int | None = None, prior: float = 2.0,
                        standardize: bool = True) -> pd.Series:
    """How much each lesion stands out from the same patient's *other* lesions (leave-one-out).

    Features are divided by their pooled within-patient std ``s``; scores are root mean squares over
    the features. ``"zscore-norm"``: ``rms((x_i - mean of the others) / s)``. ``"mahalanobis-lite"``:
    the same divided by ``sqrt(v)``, ``v = (SS + prior * s**2) / (m - 1 + prior)`` with ``m`` other
    lesions and ``SS`` their sum of squares about their mean: the patient's own variance shrunk towards
    the pooled one (``prior`` pseudo-lesions). ``"knn"``: mean distance to the ``k`` nearest other
    lesions (``None``: all); raw features unless ``standardize``. Single-image patients get NaN;
    features constant within every patient are ignored. Returns a Series named ``ugly_duckling``.

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
    dof = int((counts[counts > 0] - 1).sum())
    if dof == 0:
        raise ValueError(f"no patient in column {patient_col!r} has two or more images: "
                         "there is no patient context to compare with")
    scale = np.sqrt((_centred(x, codes, counts) ** 2).sum(0) / dof)
    keep = scale > 0
    if method != "knn" or standardize:
        if not keep.any():
            raise ValueError("every feature is constant within every patient: nothing to score")
        x = x[:, keep] / scale[keep]
    centred = _centred(x, codes, counts)
    score = np.full(len(x), np.nan)
    several = n >= 2
    if method == "knn":
        from scipy.spatial.distance import cdist

        for g in np.flatnonzero(counts >= 2):
            rows = np.flatnonzero(codes == g)
            dist = cdist(x[rows], x[rows]) / np.sqrt(x.shape[1])
            np.fill_diagonal(dist, np.inf)
            kk = len(rows) - 1 if k is None else min(k, len(rows) - 1)
            score[rows] = np.sort(dist, axis=1)[:, :kk].mean(1)
        return pd.Series(score, index=frame.index, name="ugly_duckling")
    # x_i - mean(others) = c_i * n / (n - 1), with c_i the deviation from the patient's mean.
    ratio = (n[several] / (n[several] - 1))[:, None]
    loo = centred[several] * ratio
    var = 1.0  # zscore-norm: features are in units of s
    if method == "mahalanobis-lite":
        # sum of squares of the others about their own mean: SS - c_i^2 * n / (n - 1)
        ss_all = _group_sums(centred ** 2, codes, len(uniques))[codes]
        ss_others = np.maximum(ss_all[several] - centred[several] ** 2 * ratio, 0.0)
        var = (ss_others + prior * 1.0) / ((n[several] - 2)[:, None] + prior)
    score[several] = np.sqrt(np.mean(loo ** 2 / var, axis=1))
    return pd.Series(score, index=frame.index, name="ugly_duckling")


def per_patient_auc(frame: pd.DataFrame, score: str | Sequence[float] | pd.Series,
                    target_col: str = "target", patient_col: str = "patient_id") -> pd.Series:
    """ROC AUC of ``score`` inside each patient that has both a melanoma and a benign lesion.

    ``score`` is a column name or values aligned with ``frame``; patients with one class (or a missing
    score) are left out. Returns AUCs indexed by patient, named ``auc``.

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
    out = {patient: float(roc_auc_score(part["y"], part["s"]))
           for patient, part in data.groupby("p", sort=True) if part["y"].nunique() == 2}
    return pd.Series(out, name="auc", dtype=float).rename_axis(patient_col)


def image_embeddings(model: Any, images: Sequence[str | PathLike] | Any, batch_size: int = 32,
                     size: int = 224, device: Any = None, progress: bool = True) -> np.ndarray:
    """Penultimate-layer features of a CNN for many images: an array (n_images, n_features).

    ``model``'s ``backbone`` is used when it has one; 4-D outputs are average-pooled. ``images``: paths
    (decoded by :func:`helpers.fastpath.decode_jpeg_batch` at ``size``) or a tensor (n, 3, H, W), ``uint8``
    ones ImageNet-normalised. Runs in eval mode without gradients and restores the model's mode.

    Not called in a chapter; used by `cached_embeddings`.
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
    mean = torch.tensor(IMAGENET_MEAN, device=dev).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=dev).view(1, 3, 1, 1)
    was_training = net.training
    net.eval()
    outputs = []
    try:
        with torch.no_grad():
            for start in tqdm(range(0, len(images), batch_size), desc="embeddings", disable=not progress):
                part = images[start:start + batch_size]
                batch = (part if is_tensor else decode_jpeg_batch(list(part), size)).to(dev)
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
    return torch.cat(outputs).numpy() if outputs else np.zeros((0, 0), dtype=np.float32)


def model_fingerprint(model: nn.Module) -> str:
    """A short hash of a model's weights (its ``state_dict``): equal weights give equal strings.

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
    """:func:`image_embeddings` of ``frame``'s images, computed once and cached by ``image_id``.

    ``cache_path``: an ``.npz`` of ``image_id``, ``features``, ``size`` and ``fingerprint``
    (:func:`model_fingerprint`); missing images are added (rewritten atomically), a cache of another
    model or size is replaced. Returns float32 (len(frame), d) in ``frame``'s order.

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

    Per seed, clones of ``model`` (default: 5-NN on standardized features) are scored on a ``"random"``
    ``train_test_split`` (stratified by ``y``) and a ``"grouped"`` fold of
    ``StratifiedGroupKFold(round(1 / test_size))`` by ``groups``. ``X``, ``y``, ``groups``: arrays or
    column names of ``frame``. Columns: ``seed``, ``split``, ``auc`` (NaN with one class), ``n_train``,
    ``n_val``, ``val_positives``, ``val_patients``, ``val_patients_in_train``.

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
    strat = target if np.bincount(target).min() >= 2 else None
    rows = []
    for seed in seeds:
        tr_r, va_r = train_test_split(np.arange(len(target)), test_size=test_size, random_state=seed,
                                      stratify=strat)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
            splitter = StratifiedGroupKFold(n_splits=max(2, round(1 / test_size)), shuffle=True,
                                            random_state=seed)
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
