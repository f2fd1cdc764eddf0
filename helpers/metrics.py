"""Evaluating melanoma detection: challenge metrics, operating points, calibration, uncertainty.

Built on scikit-learn; written by hand is only what the challenges defined on top of it (the ISIC
scorer's ``auc_sens_80`` and balanced accuracy, the ISIC 2024 partial AUC) and a patient-level
bootstrap. Submission files are in :mod:`helpers.submissions`. Conventions: ``y`` holds 0/1
labels (1 = melanoma), ``p`` scores where larger is more suspicious; ``p >= threshold`` is positive.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from sklearn.calibration import calibration_curve
from sklearn.metrics import auc as _trapezoid_auc
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score, roc_curve
from sklearn.metrics import confusion_matrix as _sk_confusion_matrix

__all__ = [
    "roc_auc", "average_precision", "auc_sens_80", "partial_auc", "pauc_above_tpr",
    "balanced_multiclass_accuracy", "per_class_auc", "per_class_ap", "per_class_scores", "macro_auc",
    "macro_ap", "sensitivity_at_specificity", "specificity_at_sensitivity", "confusion_matrix",
    "number_needed_to_biopsy", "reliability_curve", "expected_calibration_error", "brier_score",
    "BootstrapCI", "patient_bootstrap_indices", "bootstrap_ci", "age_band", "subgroup_table",
    "prevalence_weights", "operating_points", "max_softmax_probability", "energy_score", "ood_auroc",
    "ood_fpr_at_tpr",
]


def _binary_inputs(y, p, sample_weight=None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    y, p = np.asarray(y, dtype=float).ravel(), np.asarray(p, dtype=float).ravel()
    if y.shape != p.shape:
        raise ValueError(f"y and p differ in length: {y.size} labels, {p.size} scores")
    if y.size == 0:
        raise ValueError("y and p are empty")
    bad = ~np.isin(y, (0.0, 1.0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"y must hold 0/1 labels: row {i} is {y[i]!r}")
    if np.isnan(p).any():
        raise ValueError(f"p has NaN at row {int(np.flatnonzero(np.isnan(p))[0])}")
    w = None
    if sample_weight is not None:
        w = np.asarray(sample_weight, dtype=float).ravel()
        if w.shape != y.shape:
            raise ValueError(f"sample_weight has {w.size} values for {y.size} rows")
    return y, p, w


def _require_both_classes(y: np.ndarray, w: np.ndarray | None, what: str) -> None:
    present = y if w is None else y[w != 0]
    if present.size == 0 or present.min() == present.max():
        only = "no rows" if present.size == 0 else f"only class {int(present[0])}"
        raise ValueError(f"{what} needs both classes in y, got {only}")


# Ranking metrics
def roc_auc(y: ArrayLike, p: ArrayLike, sample_weight: ArrayLike | None = None) -> float:
    """Area under the ROC curve (scikit-learn); ``ValueError`` when ``y`` holds one class only.

    Introduced in chapter 6 (patient context).
    """
    y, p, w = _binary_inputs(y, p, sample_weight)
    _require_both_classes(y, w, "ROC AUC")
    return float(roc_auc_score(y, p, sample_weight=w))


def average_precision(y: ArrayLike, p: ArrayLike, sample_weight: ArrayLike | None = None) -> float:
    """Average precision (scikit-learn; a useless detector scores the prevalence); needs a positive.

    Introduced in chapter 9 (evaluating melanoma detection).
    """
    y, p, w = _binary_inputs(y, p, sample_weight)
    if not (y if w is None else y[w != 0]).any():
        raise ValueError("average precision needs at least one positive in y")
    return float(average_precision_score(y, p, sample_weight=w))


def auc_sens_80(y: ArrayLike, p: ArrayLike, sample_weight: ArrayLike | None = None,
                sensitivity: float = 0.80) -> float:
    """The ISIC scorer's ``auc_sens_80``: ROC area from where sensitivity first reaches 0.80.

    Exactly ``isic_challenge_scoring.metrics.auc_above_sensitivity``: on the full ROC curve
    (``drop_intermediate=False``, rows of weight 0 dropped) take the first point with
    TPR >= ``sensitivity`` (``searchsorted(side='left')``), prepend a point at TPR = ``sensitivity``
    with FPR interpolated on the segment reaching it, and return the trapezoidal area under the
    curve (down to TPR = 0) from there to (1, 1). Not normalised: perfect 1.0, random about 0.18,
    inverted 0; it equals :func:`pauc_above_tpr` plus ``0.8 * (1 - FPR at 0.80)``.

    Introduced in chapter 9 (evaluating melanoma detection).
    """
    if not 0 < sensitivity <= 1.0:
        raise ValueError(f"sensitivity must be in (0, 1], got {sensitivity}")
    y, p, w = _binary_inputs(y, p, sample_weight)
    if w is not None:
        keep = w != 0
        y, p, w = y[keep], p[keep], w[keep]
        if np.all(w == 1.0):
            w = None
    _require_both_classes(y, w, "auc_sens_80")
    fpr, tpr, _ = roc_curve(y, p, sample_weight=w, drop_intermediate=False)
    i = int(tpr.searchsorted(sensitivity, side="left"))
    fpr_at = np.interp(sensitivity, tpr[i - 1 : i + 1], fpr[i - 1 : i + 1])
    return float(_trapezoid_auc(np.insert(fpr[i:], 0, fpr_at), np.insert(tpr[i:], 0, sensitivity)))


def partial_auc(y_true: ArrayLike, y_score: ArrayLike, min_tpr: float = 0.80) -> float:
    """ISIC 2024 partial AUC: the ROC area above TPR = ``min_tpr`` (range 0 to 1 - ``min_tpr``).

    Exactly the Kaggle ISIC 2024 scorer: labels flipped (``1 - y``) and scores negated, then
    ``roc_auc_score(..., max_fpr=1 - min_tpr)`` with its McClish standardisation reversed to
    give the raw area (0.2 perfect, 0.02 random, 0 inverted). ``pauc_above_tpr`` is an alias.

    Introduced in chapter 3 (the ISIC Archive and its challenges).
    """
    if not 0 <= min_tpr < 1:
        raise ValueError(f"min_tpr must be in [0, 1), got {min_tpr}")
    y, p, _ = _binary_inputs(y_true, y_score)
    _require_both_classes(y, None, "partial AUC")
    max_fpr = abs(1.0 - min_tpr)
    scaled = roc_auc_score(np.abs(y - 1.0), -1.0 * p, max_fpr=max_fpr)
    # McClish maps the raw area linearly, the diagonal's max_fpr**2 / 2 to 0.5 and max_fpr to 1; undo it.
    return float(0.5 * max_fpr**2 + (max_fpr - 0.5 * max_fpr**2) / (1.0 - 0.5) * (scaled - 0.5))


pauc_above_tpr = partial_auc  # the name chapter 9 and score_submission use


# Multi-class
def _argmax_labels(scores: np.ndarray) -> np.ndarray:
    """Column index of each row's maximum; -1 where the maximum is tied ("undecided")."""
    labels = scores.argmax(axis=1)
    labels[(scores == scores.max(axis=1, keepdims=True)).sum(axis=1) > 1] = -1
    return labels


def balanced_multiclass_accuracy(truth: ArrayLike, pred: ArrayLike,
                                 sample_weight: ArrayLike | None = None) -> float:
    """Balanced multi-class accuracy: the mean over classes of the recall of the argmax.

    ``truth``: labels 0..k-1 ``(n,)`` or one-hot ``(n, k)``; ``pred``: scores ``(n, k)``. As the
    ISIC scorer: a tied prediction row counts as wrong, a tied truth row (e.g. all zeros) is left
    out, and classes absent from the truth are left out of the mean.

    Introduced in chapter 10 (metadata and the multi-class task).
    """
    scores = np.asarray(pred, dtype=float)
    if scores.ndim != 2:
        raise ValueError(f"pred must have shape (n, k), got {scores.shape}")
    n, k = scores.shape
    t = np.asarray(truth)
    if t.ndim == 2:
        if t.shape != scores.shape:
            raise ValueError(f"truth has shape {t.shape}, pred {scores.shape}")
        t_labels = _argmax_labels(t.astype(float))
    elif t.ndim == 1 and t.shape[0] == n:
        t_labels = t.astype(int)
        if t_labels.min() < 0 or t_labels.max() >= k:
            raise ValueError(f"truth labels must be in 0..{k - 1}")
    else:
        raise ValueError(f"truth must have shape ({n},) or ({n}, {k}), got {t.shape}")
    w = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=float).ravel()
    cm = _sk_confusion_matrix(t_labels, _argmax_labels(scores), labels=np.arange(k), sample_weight=w)
    decided = t_labels >= 0
    true_freq = np.bincount(t_labels[decided], weights=w[decided], minlength=k)
    present = true_freq > 0
    if not present.any():
        raise ValueError("no truth row has a single largest value: balanced accuracy is undefined")
    return float(np.mean(np.diagonal(cm)[present] / true_freq[present]))


def _as_frame(x, columns: Sequence[str] | None, what: str) -> pd.DataFrame:
    if isinstance(x, pd.DataFrame):
        return x if columns is None else x[list(columns)]
    arr = np.asarray(x, dtype=float)
    if arr.ndim != 2:
        raise ValueError(f"{what} must be 2-D (n, k), got shape {arr.shape}")
    cols = list(columns) if columns is not None else [str(i) for i in range(arr.shape[1])]
    return pd.DataFrame(arr, columns=cols)


def per_class_scores(truth: ArrayLike, pred: ArrayLike, classes: Sequence[str] | None = None,
                     sample_weight: ArrayLike | None = None) -> pd.DataFrame:
    """One-vs-rest ``auc``, ``ap`` and ``auc_sens_80`` per class, as the ISIC scorer's table.

    ``truth`` (one-hot) and ``pred``: DataFrames with the class columns, or ``(n, k)`` arrays
    named by ``classes``. NaN where a metric is undefined (AUCs need both classes, AP positives).

    Not called in a chapter; used by `per_class_auc`, `per_class_ap`.
    """
    t = _as_frame(truth, classes, "truth")
    p = _as_frame(pred, list(t.columns), "pred")
    rows = {}
    for c in t.columns:
        y, s, w = _binary_inputs(t[c].to_numpy(), p[c].to_numpy(), sample_weight)
        pos = y if w is None else y[w != 0]
        has_pos, both = bool(pos.any()), bool(pos.any() and (pos == 0).any())
        rows[c] = {"auc": roc_auc(y, s, w) if both else math.nan,
                   "ap": average_precision(y, s, w) if has_pos else math.nan,
                   "auc_sens_80": auc_sens_80(y, s, w) if both else math.nan}
    return pd.DataFrame.from_dict(rows, orient="index")


def per_class_auc(truth: ArrayLike, pred: ArrayLike, classes: Sequence[str] | None = None) -> pd.Series:
    """One-vs-rest ROC AUC of each class (NaN for a class absent from, or filling, the truth).

    Introduced in chapter 10 (metadata and the multi-class task).
    """
    return per_class_scores(truth, pred, classes)["auc"]


def per_class_ap(truth: ArrayLike, pred: ArrayLike, classes: Sequence[str] | None = None) -> pd.Series:
    """One-vs-rest average precision of each class (NaN for a class absent from the truth).

    Not called in a chapter; used by `macro_ap`.
    """
    return per_class_scores(truth, pred, classes)["ap"]


def macro_auc(truth: ArrayLike, pred: ArrayLike, classes: Sequence[str] | None = None) -> float:
    """Mean of the per-class AUCs over the classes where it is defined (the scorer's macro average).

    Not called in a chapter.
    """
    return float(per_class_auc(truth, pred, classes).mean())


def macro_ap(truth: ArrayLike, pred: ArrayLike, classes: Sequence[str] | None = None) -> float:
    """Mean of the per-class average precisions (the scorer's macro average).

    Not called in a chapter.
    """
    return float(per_class_ap(truth, pred, classes).mean())


# Operating points
_TOL = 1e-12  # rates such as 1 - 3/10 are not exact in floating point


def _roc(y, p, sample_weight, what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y, p, w = _binary_inputs(y, p, sample_weight)
    _require_both_classes(y, w, what)
    return roc_curve(y, p, sample_weight=w, drop_intermediate=False)


def sensitivity_at_specificity(y: ArrayLike, p: ArrayLike, specificity: float,
                               sample_weight: ArrayLike | None = None) -> tuple[float, float]:
    """``(sensitivity, threshold)``: the best sensitivity with specificity >= ``specificity``.

    The threshold is one of ``roc_curve``'s (``inf`` when everything must be called negative).

    Introduced in chapter 7 (the data pipeline).
    """
    if not 0 <= specificity <= 1:
        raise ValueError(f"specificity must be in [0, 1], got {specificity}")
    fpr, tpr, thr = _roc(y, p, sample_weight, "sensitivity at specificity")
    i = int(np.flatnonzero(fpr <= 1.0 - specificity + _TOL).max())
    return float(tpr[i]), float(thr[i])


def specificity_at_sensitivity(y: ArrayLike, p: ArrayLike, sensitivity: float,
                               sample_weight: ArrayLike | None = None) -> tuple[float, float]:
    """``(specificity, threshold)``: the best specificity with sensitivity >= ``sensitivity``.

    Introduced in chapter 9 (evaluating melanoma detection).
    """
    if not 0 <= sensitivity <= 1:
        raise ValueError(f"sensitivity must be in [0, 1], got {sensitivity}")
    fpr, tpr, thr = _roc(y, p, sample_weight, "specificity at sensitivity")
    i = int(np.flatnonzero(tpr >= sensitivity - _TOL).min())
    return float(1.0 - fpr[i]), float(thr[i])


def confusion_matrix(y: ArrayLike, p: ArrayLike, threshold: float = 0.5) -> np.ndarray:
    """2 × 2 confusion matrix ``[[TN, FP], [FN, TP]]`` of calling ``p >= threshold`` positive.

    Introduced in chapter 9 (evaluating melanoma detection).
    """
    y, p, _ = _binary_inputs(y, p)
    return _sk_confusion_matrix(y.astype(int), (p >= threshold).astype(int), labels=[0, 1])


def number_needed_to_biopsy(y: ArrayLike, p: ArrayLike, threshold: float) -> float:
    """Biopsies per melanoma found, ``(TP + FP) / TP`` at ``threshold``; ``inf`` when TP = 0.

    Introduced in chapter 9 (evaluating melanoma detection).
    """
    (_, fp), (_, tp) = confusion_matrix(y, p, threshold)
    return math.inf if tp == 0 else float((tp + fp) / tp)


# Calibration
def reliability_curve(y: ArrayLike, p: ArrayLike, n_bins: int = 10,
                      strategy: str = "uniform") -> pd.DataFrame:
    """Reliability diagram data: per non-empty bin, mean score, observed frequency, count.

    ``mean_predicted`` and ``fraction_positive`` are scikit-learn's ``calibration_curve``
    (``strategy`` "uniform" or "quantile"); ``count`` is the number of cases in the bin.

    Introduced in chapter 9 (evaluating melanoma detection).
    """
    y, p, _ = _binary_inputs(y, p)
    if p.min() < 0 or p.max() > 1:
        raise ValueError("p must be probabilities in [0, 1]")
    prob_true, prob_pred = calibration_curve(y, p, n_bins=n_bins, strategy=strategy)
    # the same bins as calibration_curve, to count the cases in each
    edges = (np.percentile(p, np.linspace(0, 100, n_bins + 1)) if strategy == "quantile"
             else np.linspace(0.0, 1.0, n_bins + 1))
    counts = np.bincount(np.searchsorted(edges[1:-1], p), minlength=n_bins)
    return pd.DataFrame({"mean_predicted": prob_pred, "fraction_positive": prob_true,
                         "count": counts[counts > 0]})


def expected_calibration_error(y: ArrayLike, p: ArrayLike, n_bins: int = 10,
                               strategy: str = "uniform") -> float:
    """Expected calibration error ``sum_b (n_b / n) |frac_b - mean_b|`` over the reliability bins.

    Introduced in chapter 9 (evaluating melanoma detection).
    """
    curve = reliability_curve(y, p, n_bins=n_bins, strategy=strategy)
    gap = (curve["fraction_positive"] - curve["mean_predicted"]).abs()
    return float((gap * curve["count"]).sum() / curve["count"].sum())


def brier_score(y: ArrayLike, p: ArrayLike) -> float:
    """Brier score: mean squared difference between probability and outcome (scikit-learn).

    Introduced in chapter 9 (evaluating melanoma detection).
    """
    y, p, _ = _binary_inputs(y, p)
    return float(brier_score_loss(y, p))


# Patient-level bootstrap
@dataclass(frozen=True)
class BootstrapCI:
    """A metric on the full data with its bootstrap percentile interval (``n_skipped``: undefined resamples).

    Not called in a chapter; used by `bootstrap_ci`.
    """

    estimate: float
    low: float
    high: float
    alpha: float
    n_resamples: int
    n_skipped: int

    def __str__(self) -> str:
        level = round(100 * (1 - self.alpha))
        return f"{self.estimate:.3f} ({level}% CI {self.low:.3f}-{self.high:.3f})"


def patient_bootstrap_indices(groups: ArrayLike, n: int,
                              seed: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``n`` bootstrap resamples of patients, as (image row indices, drawn patient codes).

    Each draws as many patients as there are, with replacement, with all their images;
    ``groups`` holds one patient id per image, codes are positions in ``pd.unique(groups)``.

    Not called in a chapter; used by `bootstrap_ci`.
    """
    g = pd.Series(np.asarray(groups, dtype=object))
    if g.isna().any():
        raise ValueError(f"groups has a missing patient id at row {int(np.flatnonzero(g.isna())[0])}")
    codes, uniques = pd.factorize(g)
    n_groups = len(uniques)
    order = np.argsort(codes, kind="stable")  # images grouped by patient
    sizes = np.bincount(codes, minlength=n_groups)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rng = np.random.default_rng(seed)
    for _ in range(n):
        drawn = rng.integers(0, n_groups, size=n_groups)
        lens = sizes[drawn]
        out_starts = np.cumsum(lens) - lens
        pos = np.repeat(starts[drawn] - out_starts, lens) + np.arange(lens.sum())
        yield order[pos], drawn


def bootstrap_ci(y: ArrayLike, p: ArrayLike, metric: Callable[..., float], groups: ArrayLike | None = None,
                 n: int = 1000, seed: int = 0, alpha: float = 0.05) -> BootstrapCI:
    """Percentile bootstrap interval of ``metric(y, p)``, resampling patients, not images.

    ``groups``: each image's patient id (``None``: the ordinary bootstrap). Resamples where a 1-D
    ``y`` has one class, or the metric raises ``ValueError`` or gives NaN, count in ``n_skipped``.

    Introduced in chapter 2 (dermoscopy and the ABCD rule).
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    y_arr, p_arr = np.asarray(y), np.asarray(p)
    if len(y_arr) != len(p_arr):
        raise ValueError(f"y and p differ in length: {len(y_arr)} and {len(p_arr)}")
    estimate = float(metric(y_arr, p_arr))
    g = np.arange(len(y_arr)) if groups is None else np.asarray(groups, dtype=object)
    if len(g) != len(y_arr):
        raise ValueError(f"groups has {len(g)} ids for {len(y_arr)} images")
    values = []
    for idx, _ in patient_bootstrap_indices(g, n, seed):
        yb = y_arr[idx]
        if yb.ndim > 1 or np.unique(yb).size > 1:
            with suppress(ValueError):
                values.append(float(metric(yb, p_arr[idx])))
    values = [v for v in values if not math.isnan(v)]
    if not values:
        raise ValueError(f"the metric was undefined on all {n} resamples")
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return BootstrapCI(estimate, float(low), float(high), alpha, len(values), n - len(values))


# Subgroups: where each variable of subgroup_table may live in the ISIC files
_SUBGROUP_SOURCES = {
    "age_band": ("age_approx", "age", "age_approximate"),
    "anatom_site": ("anatom_site_general_challenge", "anatom_site_general", "localization"),
}


def age_band(age: float | ArrayLike, edges: Sequence[int] = (30, 45, 60, 75)):
    """Age band label(s): ``"<30"``, ``"30-44"``, ``"45-59"``, ``"60-74"``, ``"75+"``, or ``"unknown"``.

    A number gives a string, a sequence a Series; blank, NaN or non-numeric ages are ``"unknown"``.

    Introduced in chapter 9 (evaluating melanoma detection).
    """
    edges = list(edges)
    labels = [f"<{edges[0]}"] + [f"{a}-{b - 1}" for a, b in zip(edges, edges[1:])] + [f"{edges[-1]}+"]
    scalar = np.ndim(age) == 0
    num = pd.to_numeric(pd.Series([age]) if scalar else pd.Series(age), errors="coerce")
    if (num < 0).any():
        raise ValueError(f"negative age at row {int(np.flatnonzero(num < 0)[0])}")
    banded = pd.cut(num, [-np.inf, *edges, np.inf], right=False, labels=labels)
    out = banded.astype(object).where(num.notna(), "unknown")
    return str(out.iloc[0]) if scalar else out


def subgroup_table(frame: pd.DataFrame, y_col: str, p_col: str,
                   by: Sequence[str] = ("sex", "age_band", "anatom_site")) -> pd.DataFrame:
    """Per-subgroup size, melanomas and AUC, one row per (variable, group), after an ``all`` row.

    ``age_band`` comes from ``age_approx`` (or ``age``) and ``anatom_site`` from the 2020, 2019 or
    HAM10000 site column when ``frame`` has no such column. Missing values form the group
    ``"unknown"``; ``auc`` is NaN where a group lacks either class.

    Introduced in chapter 9 (evaluating melanoma detection).
    """
    for col in (y_col, p_col):
        if col not in frame.columns:
            raise ValueError(f"frame has no column {col!r}")
    rows = [_subgroup_row("all", "all", frame[y_col], frame[p_col])]
    for var in by:
        values = _subgroup_values(frame, var)
        order = list(pd.unique(values))
        known = sorted((v for v in order if v != "unknown"), key=_band_key if var == "age_band" else str)
        for group in known + (["unknown"] if "unknown" in order else []):
            mask = (values == group).to_numpy()
            rows.append(_subgroup_row(var, group, frame[y_col][mask], frame[p_col][mask]))
    return pd.DataFrame(rows, columns=["variable", "group", "n", "positives", "auc"])


def _band_key(label: str) -> float:
    return -1.0 if label.startswith("<") else float(label.split("-")[0].rstrip("+"))


def _subgroup_values(frame: pd.DataFrame, var: str) -> pd.Series:
    if var in frame.columns:
        values = frame[var]
        if var == "age_band" and pd.api.types.is_numeric_dtype(values):
            return age_band(values)
    else:
        source = next((c for c in _SUBGROUP_SOURCES.get(var, ()) if c in frame.columns), None)
        if source is None:
            raise ValueError(f"frame has no column {var!r} (nor any of {_SUBGROUP_SOURCES.get(var, ())})")
        if var == "age_band":
            return age_band(frame[source])
        values = frame[source]
    values = values.astype(object).where(values.notna(), "unknown")
    return values.map(lambda v: "unknown" if str(v).strip() == "" else str(v))


def _subgroup_row(var: str, group: str, y: pd.Series, p: pd.Series) -> dict:
    y_arr, p_arr, _ = _binary_inputs(y.to_numpy(), p.to_numpy())
    pos = int(y_arr.sum())
    auc = float(roc_auc_score(y_arr, p_arr)) if 0 < pos < len(y_arr) else math.nan
    return {"variable": var, "group": group, "n": len(y_arr), "positives": pos, "auc": auc}


# Prevalence and the cost of an operating point
def prevalence_weights(y: ArrayLike, prevalence: float) -> np.ndarray:
    """Per-image weights that give a sample the melanoma rate ``prevalence``.

    Melanomas weigh ``prevalence / q`` and benign lesions ``(1 - prevalence) / (1 - q)``, ``q``
    being the sample's own rate; the weights sum to ``len(y)``.

    Introduced in chapter 9 (evaluating melanoma detection).
    """
    if not 0 < prevalence < 1:
        raise ValueError(f"prevalence must be in (0, 1), got {prevalence}")
    y, _, _ = _binary_inputs(y, np.zeros(np.size(y)))
    _require_both_classes(y, None, "prevalence_weights")
    q = y.mean()
    return np.where(y == 1, prevalence / q, (1 - prevalence) / (1 - q))


def operating_points(y: ArrayLike, p: ArrayLike, sensitivities: Sequence[float] = (0.80, 0.90, 0.95, 1.0),
                     prevalence: float | None = None) -> pd.DataFrame:
    """The threshold of each target sensitivity, and what it costs in biopsies.

    Per target: ``threshold`` (:func:`specificity_at_sensitivity`), the ``sensitivity`` and
    ``specificity`` reached and ``nnb`` on the sample. With ``prevalence``, also
    ``nnb_at_prevalence`` = ``1 + (1 - spec)(1 - prevalence) / (sens * prevalence)``,
    ``biopsies_per_1000`` and ``missed_per_1000`` lesions examined at that prevalence.

    Introduced in chapter 9 (evaluating melanoma detection).
    """
    if prevalence is not None and not 0 < prevalence < 1:
        raise ValueError(f"prevalence must be in (0, 1), got {prevalence}")
    rows = []
    for target in sensitivities:
        spec, thr = specificity_at_sensitivity(y, p, target)
        (tn, fp), (fn, tp) = confusion_matrix(y, p, thr)
        sens = tp / (tp + fn)
        row = {"target": float(target), "threshold": thr, "sensitivity": float(sens),
               "specificity": spec, "nnb": number_needed_to_biopsy(y, p, thr)}
        if prevalence is not None:
            flagged_benign = (1 - spec) * (1 - prevalence)
            row["nnb_at_prevalence"] = math.inf if sens == 0 else 1 + flagged_benign / (sens * prevalence)
            row["biopsies_per_1000"] = 1000 * (sens * prevalence + flagged_benign)
            row["missed_per_1000"] = 1000 * (1 - sens) * prevalence
        rows.append(row)
    return pd.DataFrame(rows)


# Out-of-distribution scores for the unknown class (UNK)
def _logit_matrix(logits: ArrayLike, temperature: float) -> np.ndarray:
    """``logits / temperature`` as an (n, k) float array, k >= 2; ValueError naming the bad row."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z = np.asarray(logits, dtype=float)
    if z.ndim != 2 or z.shape[1] < 2:
        raise ValueError(f"logits must have shape (n, k) with k >= 2 classes, got {z.shape}")
    bad = ~np.isfinite(z).all(axis=1)
    if bad.any():
        raise ValueError(f"logits row {int(np.flatnonzero(bad)[0])} is not finite")
    return z / temperature


def max_softmax_probability(logits: ArrayLike, temperature: float = 1.0) -> np.ndarray:
    """Maximum softmax probability of each row of ``logits / temperature``; *low* flags an unknown image.

    Introduced in chapter 10 (metadata and the multi-class task).
    """
    from scipy.special import softmax

    return softmax(_logit_matrix(logits, temperature), axis=1).max(axis=1)


def energy_score(logits: ArrayLike, temperature: float = 1.0) -> np.ndarray:
    """The energy ``-T * logsumexp(logits / T)`` of each row (Liu et al. 2020); *high* flags an unknown image.

    Introduced in chapter 10 (metadata and the multi-class task).
    """
    from scipy.special import logsumexp

    return -temperature * logsumexp(_logit_matrix(logits, temperature), axis=1)


def _ood_inputs(score_in: ArrayLike, score_out: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    s_in = np.asarray(score_in, dtype=float).ravel()
    s_out = np.asarray(score_out, dtype=float).ravel()
    for name, s in (("score_in", s_in), ("score_out", s_out)):
        if s.size == 0:
            raise ValueError(f"{name} is empty")
        if np.isnan(s).any():
            raise ValueError(f"{name} has NaN at row {int(np.flatnonzero(np.isnan(s))[0])}")
    return s_in, s_out


def ood_auroc(score_in: ArrayLike, score_out: ArrayLike) -> float:
    """ROC AUC of telling ``score_out`` from ``score_in`` images by a score larger when out-of-distribution.

    Introduced in chapter 10 (metadata and the multi-class task).
    """
    s_in, s_out = _ood_inputs(score_in, score_out)
    return roc_auc(np.r_[np.zeros(s_in.size), np.ones(s_out.size)], np.r_[s_in, s_out])


def ood_fpr_at_tpr(score_in: ArrayLike, score_out: ArrayLike, tpr: float = 0.95) -> float:
    """FPR at 95 % TPR: the share of unknown images *accepted* when ``tpr`` of known ones are kept.

    An image is kept as known when its score (larger = more out-of-distribution) is at most the
    ``ceil(tpr * n)``-th smallest in-distribution score; returns the share of ``score_out`` kept.

    Introduced in chapter 10 (metadata and the multi-class task).
    """
    if not 0 < tpr <= 1:
        raise ValueError(f"tpr must be in (0, 1], got {tpr}")
    s_in, s_out = _ood_inputs(score_in, score_out)
    k = max(1, math.ceil(tpr * s_in.size - 1e-9))
    return float(np.mean(s_out <= np.sort(s_in)[k - 1]))
