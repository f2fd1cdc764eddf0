"""Official submission files: write them, and score them as the ISIC scorer does.

:func:`write_submission` writes a challenge's exact file; :func:`score_submission` reads the official
files of 2017-2020 and the scorer's own layout, and returns what that scorer reports (checked against
its golden values in ``tests/test_submissions.py``).
"""
from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score
from sklearn.metrics import confusion_matrix as _sk_confusion_matrix

from helpers.metrics import auc_sens_80, balanced_multiclass_accuracy, pauc_above_tpr, roc_auc
from helpers.vocab import CLASSES_2018, LABELS

__all__ = ["SUBMISSION_COLUMNS", "SCORER_METRICS", "write_submission", "score_submission"]

#: Header of each official submission file (id column first), by challenge year.
SUBMISSION_COLUMNS: dict[str, tuple[str, ...]] = {
    "2020": ("image_name", "target"),
    "2019": ("image", *LABELS),
    "2018": ("image", *CLASSES_2018),
    "2017": ("image_id", "melanoma", "seborrheic_keratosis"),
}
#: Metric names :func:`score_submission` accepts (the scorer's four, plus ``pauc``).
SCORER_METRICS: tuple[str, ...] = ("auc", "ap", "auc_sens_80", "balanced_accuracy", "pauc")
#: Extra truth columns of the scorer's layout: per-image weights (score, validation).
_WEIGHT_COLUMNS = ("score_weight", "validation_weight")
#: The scorer always gives this ISIC 2019 test image weight 0 (``load_csv.parse_truth_csv``).
_SCORER_ZERO_WEIGHT_IMAGE = "ISIC_0035068"


def _task_columns(task: str) -> tuple[str, ...]:
    if task not in SUBMISSION_COLUMNS:
        raise ValueError(f"task must be one of {sorted(SUBMISSION_COLUMNS)}, got {task!r}")
    return SUBMISSION_COLUMNS[task]


def write_submission(frame: pd.DataFrame, path: str | os.PathLike, task: str) -> Path:
    """Write ``frame`` as an official submission file of ``task`` ("2020", "2019", "2018", "2017").

    ``frame`` needs an id column (the task's, or any of ``image_name``/``image``/``image_id``/
    ``isic_id``) and the task's probability columns; others are ignored. Writes the official header,
    LF line endings, full-precision floats. Raises ``ValueError`` (naming row and column) on a
    missing column, a duplicate id, NaN or a value outside [0, 1].

    Introduced in chapter 9 (evaluating melanoma detection).
    """
    columns = _task_columns(task)
    id_col, cats = columns[0], list(columns[1:])
    out = frame
    if id_col not in frame.columns:
        alias = next((c for c in ("image_name", "image", "image_id", "isic_id") if c in frame.columns), None)
        if alias is None:
            raise ValueError(f"frame has no id column {id_col!r} for task {task}")
        out = frame.rename(columns={alias: id_col})
    missing = [c for c in cats if c not in out.columns]
    if missing:
        raise ValueError(f"frame lacks column {missing[0]!r} of the {task} submission ({','.join(columns)})")
    out = out[list(columns)].reset_index(drop=True)
    ids = out[id_col].astype(str)
    dup = ids.duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        raise ValueError(f"frame row {i}, column {id_col}: id {ids[i]} appears twice")
    values = out[cats].apply(pd.to_numeric, errors="coerce").astype(float)
    bad = values.isna() | (values < 0) | (values > 1)
    if bad.to_numpy().any():
        i, j = map(int, np.argwhere(bad.to_numpy())[0])
        raise ValueError(f"frame row {i} (image {ids[i]}), column {cats[j]}: "
                         f"{out[cats[j]].iloc[i]!r} is not a probability in [0, 1]")
    path = Path(path)
    pd.concat([ids.rename(id_col), values], axis=1).to_csv(path, index=False, lineterminator="\n")
    return path


def _read_raw(path, role: str) -> pd.DataFrame:
    name = Path(path).name
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except FileNotFoundError:
        raise ValueError(f"{name}: {role} file not found") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"{name}: cannot read the {role} CSV ({str(exc).splitlines()[0]})") from None
    if raw.empty:
        raise ValueError(f"{name}: the {role} file has a header but no rows")
    raw.columns = [str(c).strip() for c in raw.columns]
    return raw


def _numbers(raw: pd.DataFrame, ids: pd.Series, cols: list[str], name: str, truth: bool) -> pd.DataFrame:
    """Parse float columns; ValueError naming file, row (1 = first data row), image and column."""
    text = raw[cols].apply(lambda s: s.str.strip())
    values = text.apply(pd.to_numeric, errors="coerce").astype(float)
    for col in cols:
        v, blank = values[col].to_numpy(), (text[col] == "").to_numpy()
        checks = [(blank, "missing value"), (np.isnan(v) & ~blank, "{!r} is not a number"),
                  (~np.isnan(v) & ((v < 0) | (v > 1)), "{} is outside [0, 1]")]
        if truth:
            checks.append((~np.isnan(v) & ~np.isin(v, (0.0, 1.0)), "truth must be 0 or 1, got {}"))
        for bad, message in checks:
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise ValueError(f"{name}: row {i + 1} (image {ids.iloc[i]}), column {col}: "
                                 + message.format(text[col].iloc[i]))
    return values


def _check_ids(ids: pd.Series, name: str) -> None:
    blank = ids == ""
    if blank.any():
        raise ValueError(f"{name}: row {int(np.flatnonzero(blank)[0]) + 1}: empty image id")
    dup = ids.duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        first = int(np.flatnonzero((ids == ids.iloc[i]).to_numpy())[0])
        raise ValueError(f"{name}: row {i + 1} (image {ids.iloc[i]}): duplicate of row {first + 1}")


def _truth_layout(header: list[str], t_name: str, task: str | None) -> tuple[str, str, list[str]]:
    """(layout, id column, category columns) of a truth file's header; refuse a header that fits none."""
    if task is not None:
        layout = task
        _task_columns(task)
    elif header and header[0] == "image":
        layout = "scorer"
    elif "image_name" in header and "target" in header:
        layout = "2020"
    elif header and header[0] == "image_id" and {"melanoma", "seborrheic_keratosis"} <= set(header):
        layout = "2017"
    else:
        raise ValueError(f"{t_name}: header {','.join(header[:6])} is none of the known truth layouts "
                         "(2020 image_name,...,target; 2019/2018/scorer image,<categories>; "
                         "2017 image_id,melanoma,...)")
    if layout == "scorer":
        cats = [c for c in header[1:] if c not in _WEIGHT_COLUMNS]
        if not cats:
            raise ValueError(f"{t_name}: header has no category column after 'image'")
        return layout, "image", cats
    id_col, *cats = SUBMISSION_COLUMNS[layout]
    needed = [id_col] + cats
    missing = [c for c in needed if c not in header]
    if missing:
        raise ValueError(f"{t_name}: header lacks column {missing[0]!r} of the {layout} truth "
                         f"({','.join(needed)})")
    extra = [c for c in header if c not in needed and c not in _WEIGHT_COLUMNS]
    if id_col == "image" and extra:
        raise ValueError(f"{t_name}: header has column {extra[0]!r}, not in the {layout} categories")
    return layout, id_col, cats


def _read_predictions(pred_csv, id_col: str, cats: list[str]) -> tuple[pd.Series, pd.DataFrame]:
    """(image ids, scores) of a prediction file whose header must be exactly the truth's columns."""
    p_name = Path(pred_csv).name
    praw = _read_raw(pred_csv, "prediction")
    p_header = list(praw.columns)
    expected = f"(expected {id_col},{','.join(cats)})"
    if id_col not in p_header:
        raise ValueError(f"{p_name}: header has no {id_col!r} column (header: {','.join(p_header[:6])})")
    missing = [c for c in cats if c not in p_header]
    if missing:
        raise ValueError(f"{p_name}: header lacks column {missing[0]!r} {expected}")
    extra = [c for c in p_header if c != id_col and c not in cats]
    if extra:
        raise ValueError(f"{p_name}: header has extra column {extra[0]!r} {expected}")
    p_ids = praw[id_col].str.strip().str.replace(r"\.jpg$", "", case=False, regex=True)
    _check_ids(p_ids, p_name)
    return p_ids, _numbers(praw, p_ids, cats, p_name, truth=False)


def _same_images(t_ids: pd.Series, p_ids: pd.Series, t_name: str, p_name: str) -> pd.Series:
    """Refuse predictions for images the truth lacks, or missing ones; prediction row by image id."""
    t_pos = pd.Series(np.arange(len(t_ids)), index=t_ids.to_numpy())
    p_pos = pd.Series(np.arange(len(p_ids)), index=p_ids.to_numpy())
    extra_rows = ~p_pos.index.isin(t_pos.index)
    if extra_rows.any():
        i = int(np.flatnonzero(extra_rows)[0])
        raise ValueError(f"{p_name}: row {i + 1} (image {p_ids.iloc[i]}): image not in {t_name}")
    missing_rows = ~t_pos.index.isin(p_pos.index)
    if missing_rows.any():
        i = int(np.flatnonzero(missing_rows)[0])
        more = int(missing_rows.sum()) - 1
        raise ValueError(f"{p_name}: no row for image {t_ids.iloc[i]} (row {i + 1} of {t_name})"
                         + (f" and {more} more" if more else ""))
    return p_pos


def _load_pair(truth_csv, pred_csv, task: str | None) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray, str]:
    """(truth, predictions, score weights, layout), checked and aligned, rows sorted by image id."""
    t_name = Path(truth_csv).name
    traw = _read_raw(truth_csv, "truth")
    header = list(traw.columns)
    layout, id_col, cats = _truth_layout(header, t_name, task)
    t_ids = traw[id_col].str.strip()
    _check_ids(t_ids, t_name)
    truth = _numbers(traw, t_ids, cats, t_name, truth=True)
    weights = pd.Series(1.0, index=range(len(traw)))
    if "score_weight" in header:
        weights = _numbers(traw, t_ids, ["score_weight"], t_name, truth=False)["score_weight"]
    if id_col == "image":  # the scorer's layout: it always weighs this image 0
        weights = weights.where(t_ids.to_numpy() != _SCORER_ZERO_WEIGHT_IMAGE, 0.0)
    p_ids, pred = _read_predictions(pred_csv, id_col, cats)
    p_pos = _same_images(t_ids, p_ids, t_name, Path(pred_csv).name)
    order = np.argsort(t_ids.to_numpy(), kind="stable")  # the scorer sorts rows by image id
    sorted_ids = t_ids.to_numpy()[order]
    truth = truth.iloc[order].set_axis(sorted_ids)
    pred = pred.iloc[p_pos[sorted_ids].to_numpy()].set_axis(sorted_ids)
    return truth, pred, weights.iloc[order].to_numpy(), layout


def score_submission(truth_csv: str | os.PathLike, pred_csv: str | os.PathLike, metric: str,
                     task: str | None = None) -> float:
    """Score an official submission file against its ground truth, as the official scorer does.

    ``task``: "2020", "2019", "2018", "2017", or ``None`` to detect it from the truth header; a truth
    whose first column is ``image`` is read in the layout of ``isic-challenge-scoring`` (any
    categories, optional ``score_weight``/``validation_weight``; score weights used; ISIC_0035068
    weighs 0). ``metric``: ``auc``, ``ap``, ``auc_sens_80`` and ``pauc`` (ISIC 2024 partial AUC) are
    macro-averaged over the categories (NaN, with a warning, for a category without negatives);
    ``balanced_accuracy`` is the argmax balanced accuracy (2020: mean sensitivity and specificity of
    ``target >= 0.5``; 2017: nevus rows, all zeros, left out). Where the scorer fails (a category
    without positives) this raises ``ValueError``. Prediction ids may end in ``.jpg``; rows and
    columns may come in any order. Raises ``ValueError`` naming file, row (1 = first data row) and
    column for a missing or extra row or column, a duplicate id, a blank, non-numeric or
    out-of-range value.

    Introduced in chapter 9 (evaluating melanoma detection).
    """
    if metric not in SCORER_METRICS:
        raise ValueError(f"metric must be one of {', '.join(SCORER_METRICS)}; got {metric!r}")
    truth, pred, w, layout = _load_pair(truth_csv, pred_csv, task)
    t_name = Path(truth_csv).name
    w_arg = None if np.all(w == 1.0) else w
    weighed = truth.to_numpy()[w != 0]
    no_positive = ~(weighed == 1).any(axis=0)
    if no_positive.any():
        raise ValueError(f"{t_name}: column {truth.columns[np.argmax(no_positive)]} has no positive row, "
                         "so its AUC is undefined (the official scorer fails on such a file too)")
    undefined = list(truth.columns[~(weighed == 0).any(axis=0)])
    if metric == "balanced_accuracy" and layout == "2020":
        y, p = truth["target"].to_numpy(), pred["target"].to_numpy()
        cm = _sk_confusion_matrix(y.astype(int), (p >= 0.5).astype(int), labels=[0, 1], sample_weight=w)
        return float(np.nanmean(np.diagonal(cm) / cm.sum(axis=1)))
    if metric == "balanced_accuracy":
        return balanced_multiclass_accuracy(truth.to_numpy(), pred.to_numpy(), sample_weight=w)
    if undefined and metric != "ap":
        warnings.warn(f"{t_name}: column(s) {', '.join(undefined)} have no negative row; "
                      f"their {metric} is NaN", stacklevel=2)
    values = []
    for col in truth.columns:
        y, p = truth[col].to_numpy(), pred[col].to_numpy()
        if metric == "ap":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # scikit-learn warns on a column without negatives
                values.append(float(average_precision_score(y, p, sample_weight=w_arg)))
        elif col in undefined:
            values.append(math.nan)
        elif metric == "pauc":
            if w_arg is not None:
                raise ValueError(f"{t_name}: pauc takes no sample weights (score_weight column)")
            values.append(pauc_above_tpr(y, p))
        else:
            values.append((roc_auc if metric == "auc" else auc_sens_80)(y, p, w_arg))
    vals = np.asarray(values)
    return float(np.mean(vals[~np.isnan(vals)])) if (~np.isnan(vals)).any() else math.nan
