"""Make the golden values that tie ``helpers.metrics`` to the official ISIC scorer.

The official scorer is the PyPI package ``isic-challenge-scoring``. It needs
``pandas<3`` (it calls ``DataFrame.applymap``), so it is kept out of the
project's environment and run from a separate virtual environment:

    python3.11 -m venv /tmp/metrics/scorer-venv
    /tmp/metrics/scorer-venv/bin/pip install isic-challenge-scoring 'pandas<3'
    /tmp/metrics/scorer-venv/bin/python tests/golden/make_scorer_golden.py

(run from the repository root; any folder outside the repository works for the
venv). The script

1. writes small truth/prediction CSV pairs in the scorer's own layout (first
   column ``image``, one float column per category; truth one-hot ``0.0/1.0``)
   into ``tests/golden/``: random inputs and adversarial ones (ties, constant
   predictions, a perfect and an inverted predictor, sensitivity 0.80 reached
   inside a block of tied scores, sample weights, ``.jpg`` suffixes and shuffled
   rows and columns) and invalid ones (one class absent from the truth, missing,
   extra or duplicate rows, NaN, values outside [0, 1], text, missing or extra
   columns);
2. scores every pair with the scorer's Python API, exactly as its command line
   ``isic-challenge-scoring classification TRUTH PRED -m METRIC`` does
   (``ClassificationScore.from_file``), for the target metrics ``auc``, ``ap``
   and ``balanced_accuracy`` (the ``overall`` value) and for ``auc_sens_80``
   (the scorer reports it per category and in ``macro_average``; the golden
   value is ``macro_average['auc_sens_80']``), plus the per-category ``auc``,
   ``ap`` and ``auc_sens_80``;
3. writes ``tests/golden/scorer_golden.json``: for every case and metric the
   value, or the class and message of the exception where the scorer itself
   errs, and the versions of the scorer, scikit-learn, pandas and NumPy used.

``tests/test_submissions.py`` checks ``helpers.submissions.score_submission`` against
this file (to 1e-9, or a ``ValueError`` where the scorer errs). The inputs are
seeded: rerunning the script rewrites the same CSVs.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
METRICS = ("auc", "ap", "auc_sens_80", "balanced_accuracy")
CATS_2017 = ["melanoma", "seborrheic_keratosis"]
CATS_2018 = ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
CATS_2019 = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]


def _ids(n: int, start: int = 10) -> list[str]:
    return [f"ISIC_{start + i:07d}" for i in range(n)]


def _one_hot(labels: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros((len(labels), k))
    out[np.arange(len(labels)), labels] = 1.0
    return out


def _labels_every_class(rng: np.random.Generator, n: int, k: int, min_each: int = 2) -> np.ndarray:
    """n labels in 0..k-1 with at least ``min_each`` of every class, shuffled."""
    base = np.repeat(np.arange(k), min_each)
    rest = rng.integers(0, k, size=n - len(base))
    labels = np.concatenate([base, rest])
    rng.shuffle(labels)
    return labels


def _softmax_scores(rng: np.random.Generator, onehot: np.ndarray, signal: float) -> np.ndarray:
    logits = signal * onehot + rng.normal(size=onehot.shape)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return np.round(e / e.sum(axis=1, keepdims=True), 6)


def _frame(ids: list[str], values: np.ndarray, cats: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(values, columns=cats)
    frame.insert(0, "image", ids)
    return frame


def _write(frame: pd.DataFrame, name: str) -> str:
    # repr-exact floats, LF line endings
    frame.to_csv(HERE / name, index=False, lineterminator="\n", float_format=None)
    return name


def build_cases() -> list[dict]:
    """Write every CSV and return the case descriptions (name, files, note)."""
    rng = np.random.default_rng(20240917)
    cases: list[dict] = []

    def add(name: str, truth: pd.DataFrame | str, pred: pd.DataFrame, note: str) -> None:
        truth_name = truth if isinstance(truth, str) else _write(truth, f"{name}_truth.csv")
        pred_name = _write(pred, f"{name}_pred.csv")
        cases.append({"name": name, "truth": truth_name, "prediction": pred_name, "note": note})

    # --- random inputs -------------------------------------------------------------------------
    n = 40
    ids = _ids(n, 100)
    lab = rng.choice(3, size=n, p=[0.6, 0.2, 0.2])  # 0 nevus (no column), 1 melanoma, 2 SK
    truth = np.zeros((n, 2))
    truth[lab == 1, 0] = 1.0
    truth[lab == 2, 1] = 1.0
    pred = np.round(rng.uniform(size=(n, 2)), 6)
    add(
        "random_2017",
        _frame(ids, truth, CATS_2017),
        _frame(ids, pred, CATS_2017),
        "2017 categories; nevi are all-zero truth rows (ties in the truth argmax); uniform noise",
    )

    n = 48
    ids = _ids(n, 300)
    oh = _one_hot(_labels_every_class(rng, n, 7, 2), 7)
    add(
        "random_2018",
        _frame(ids, oh, CATS_2018),
        _frame(ids, _softmax_scores(rng, oh, 1.5), CATS_2018),
        "2018 categories, softmax of noisy logits",
    )

    n = 54
    ids = _ids(n, 500)
    oh = _one_hot(_labels_every_class(rng, n, 9, 2), 9)
    add(
        "random_2019",
        _frame(ids, oh, CATS_2019),
        _frame(ids, _softmax_scores(rng, oh, 2.0), CATS_2019),
        "2019 categories including UNK, softmax of noisy logits",
    )

    n = 40
    ids = _ids(n, 700)
    y = np.zeros(n)
    y[rng.choice(n, size=10, replace=False)] = 1.0
    p = np.round(1 / (1 + np.exp(-(1.2 * y + rng.normal(size=n) - 0.6))), 6)
    add(
        "random_binary",
        _frame(ids, y[:, None], ["MEL"]),
        _frame(ids, p[:, None], ["MEL"]),
        "one category, 10 positives (sensitivity 0.8 is a point of the curve)",
    )

    n = 37
    ids = _ids(n, 800)
    y = np.zeros(n)
    y[rng.choice(n, size=7, replace=False)] = 1.0
    p = np.round(rng.uniform(size=n) * 0.6 + 0.4 * y, 6)
    add(
        "random_binary_7pos",
        _frame(ids, y[:, None], ["MEL"]),
        _frame(ids, p[:, None], ["MEL"]),
        "one category, 7 positives (0.8 falls between two points: interpolation)",
    )

    # --- ties ------------------------------------------------------------------------------------
    n = 48
    ids = _ids(n, 1000)
    oh = _one_hot(_labels_every_class(rng, n, 7, 2), 7)
    add(
        "ties_rounded_2018",
        _frame(ids, oh, CATS_2018),
        _frame(ids, np.round(_softmax_scores(rng, oh, 1.0), 1), CATS_2018),
        "scores rounded to one decimal: tied scores and tied argmax rows ('undecided')",
    )

    n = 30
    ids = _ids(n, 1100)
    y = np.array([1.0] * 10 + [0.0] * 20)
    p = np.array([0.9] * 6 + [0.5] * 4 + [0.9] * 2 + [0.5] * 8 + [0.2] * 10)
    perm = rng.permutation(n)
    add(
        "ties_sens80_in_block",
        _frame(ids, y[perm, None], ["MEL"]),
        _frame(ids, p[perm, None], ["MEL"]),
        "three score values; sensitivity 0.8 is reached inside the tied 0.5 block (diagonal segment)",
    )

    n = 24
    ids = _ids(n, 1200)
    y = np.zeros(n)
    y[:6] = 1.0
    p = np.where(rng.uniform(size=n) < 0.5, 0.25, 0.75)
    add(
        "ties_two_values",
        _frame(ids, y[:, None], ["MEL"]),
        _frame(ids, p[:, None], ["MEL"]),
        "predictions take two values only",
    )

    # --- constant predictions --------------------------------------------------------------------
    n = 30
    ids = _ids(n, 1300)
    oh = _one_hot(_labels_every_class(rng, n, 3, 3), 3)
    cats3 = ["MEL", "NV", "BKL"]
    add(
        "constant_all_equal",
        _frame(ids, oh, cats3),
        _frame(ids, np.full((n, 3), 0.5), cats3),
        "every score 0.5: AUC 0.5, every argmax tied",
    )
    add(
        "constant_per_column",
        _frame(ids, oh, cats3),
        _frame(ids, np.tile([0.2, 0.3, 0.5], (n, 1)), cats3),
        "each column constant, different constants: argmax always BKL",
    )

    # --- perfect and inverted --------------------------------------------------------------------
    n = 36
    ids = _ids(n, 1400)
    oh = _one_hot(_labels_every_class(rng, n, 9, 2), 9)
    add(
        "perfect_onehot_2019",
        _frame(ids, oh, CATS_2019),
        _frame(ids, oh.copy(), CATS_2019),
        "prediction = truth (hard one-hot)",
    )
    add(
        "inverted_2019",
        _frame(ids, oh, CATS_2019),
        _frame(ids, 1.0 - oh, CATS_2019),
        "prediction = 1 - truth",
    )
    soft = np.round(0.05 + 0.9 * oh + rng.uniform(0, 0.04, size=oh.shape), 6)
    add(
        "perfect_soft_2019",
        _frame(ids, oh, CATS_2019),
        _frame(ids, soft, CATS_2019),
        "soft scores that rank perfectly",
    )

    # --- layout variations -----------------------------------------------------------------------
    n = 30
    ids = _ids(n, 1500)
    oh = _one_hot(_labels_every_class(rng, n, 7, 2), 7)
    scores = _softmax_scores(rng, oh, 1.0)
    pred = _frame([i + ".jpg" if k % 2 else i + ".JPG" for k, i in enumerate(ids)], scores, CATS_2018)
    pred = pred.sample(frac=1.0, random_state=1)[["image"] + CATS_2018[::-1]]
    add(
        "jpg_suffix_shuffled",
        _frame(ids, oh, CATS_2018),
        pred,
        "prediction ids end in .jpg/.JPG; rows shuffled, columns reversed",
    )

    n = 40
    ids = _ids(n, 1600)
    oh = _one_hot(_labels_every_class(rng, n, 3, 4), 3)
    truth = _frame(ids, oh, cats3)
    truth["score_weight"] = np.where(rng.uniform(size=n) < 0.2, 0.0, 1.0)
    truth["validation_weight"] = 1.0 - truth["score_weight"]
    add(
        "weights_columns",
        truth,
        _frame(ids, _softmax_scores(rng, oh, 1.0), cats3),
        "truth has score_weight/validation_weight columns (some rows weigh 0)",
    )

    n = 20
    ids = _ids(n - 1, 35040) + ["ISIC_0035068"]
    oh = _one_hot(_labels_every_class(rng, n, 2, 4), 2)
    add(
        "isic_0035068",
        _frame(ids, oh, ["MEL", "NV"]),
        _frame(ids, _softmax_scores(rng, oh, 0.5), ["MEL", "NV"]),
        "contains ISIC_0035068, which the scorer always weighs 0",
    )

    ids = _ids(4, 1700)
    add(
        "tiny",
        _frame(ids, np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]]), ["MEL", "NV"]),
        _frame(ids, np.array([[0.7, 0.3], [0.4, 0.6], [0.6, 0.4], [0.2, 0.8]]), ["MEL", "NV"]),
        "four rows",
    )

    # --- invalid inputs (the scorer errs) --------------------------------------------------------
    n = 27
    ids = _ids(n, 1800)
    oh = _one_hot(_labels_every_class(rng, n, 8, 2), 9)  # UNK never positive
    add(
        "class_absent_unk",
        _frame(ids, oh, CATS_2019),
        _frame(ids, _softmax_scores(rng, oh, 1.0), CATS_2019),
        "UNK has no positive row in the truth (as in the 2019 training data)",
    )

    n = 20
    ids = _ids(n, 1900)
    add(
        "all_positive_binary",
        _frame(ids, np.ones((n, 1)), ["MEL"]),
        _frame(ids, np.round(rng.uniform(size=(n, 1)), 6), ["MEL"]),
        "one category and every truth row positive (no negatives)",
    )

    n = 24
    ids = _ids(n, 2000)
    oh = _one_hot(_labels_every_class(rng, n, 3, 4), 3)
    base_pred = _frame(ids, _softmax_scores(rng, oh, 1.0), cats3)
    truth_name = _write(_frame(ids, oh, cats3), "invalid_truth.csv")
    add("missing_row", truth_name, base_pred.drop(index=5), "prediction lacks one truth image")
    extra = pd.concat([base_pred, _frame(["ISIC_0099999"], np.array([[0.2, 0.3, 0.5]]), cats3)])
    add("extra_row", truth_name, extra, "prediction has an image the truth lacks")
    dup = pd.concat([base_pred, base_pred.iloc[[3]]])
    add("duplicate_row", truth_name, dup, "an image appears twice in the prediction")
    nan = base_pred.copy()
    nan.loc[7, "NV"] = np.nan
    add("nan_value", truth_name, nan, "a blank value")
    high = base_pred.copy()
    high.loc[9, "BKL"] = 1.2
    add("value_above_one", truth_name, high, "a value above 1")
    low = base_pred.copy()
    low.loc[2, "MEL"] = -0.1
    add("value_below_zero", truth_name, low, "a value below 0")
    text = base_pred.copy().astype({"NV": object})
    text.loc[4, "NV"] = "high"
    add("text_value", truth_name, text, "a text value in a float column")
    add("missing_column", truth_name, base_pred.drop(columns=["BKL"]), "a category column is missing")
    more = base_pred.copy()
    more["SCC"] = 0.0
    add("extra_column", truth_name, more, "an extra category column")
    add(
        "no_image_column",
        truth_name,
        base_pred.rename(columns={"image": "image_id"}),
        "the id column is not called image",
    )
    return cases


def score_case(case: dict) -> dict:
    """Score one case with the official package; values or the exception per metric."""
    from isic_challenge_scoring import ClassificationMetric, ClassificationScore

    truth = HERE / case["truth"]
    pred = HERE / case["prediction"]
    results: dict = {}
    per_category: dict | None = None
    for metric in METRICS:
        target = ClassificationMetric("auc" if metric == "auc_sens_80" else metric)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                score = ClassificationScore.from_file(truth, pred, target)
        except Exception as exc:  # noqa: BLE001 - the class is what we record
            results[metric] = {"error_class": type(exc).__name__, "error_message": str(exc)}
            continue
        if metric == "auc_sens_80":
            value = float(score.macro_average["auc_sens_80"])
        else:
            value = float(score.overall)
        results[metric] = {"value": None if math.isnan(value) else value}
        if per_category is None:
            per_category = {
                m: {str(k): (None if math.isnan(v) else float(v)) for k, v in score.per_category[m].items()}
                for m in ("auc", "ap", "auc_sens_80")
            }
    out = dict(case)
    out["results"] = results
    if per_category is not None:
        out["per_category"] = per_category
    return out


def main() -> None:
    cases = [score_case(c) for c in build_cases()]
    versions = {
        name: importlib.metadata.version(name)
        for name in ("isic-challenge-scoring", "scikit-learn", "pandas", "numpy")
    }
    payload = {
        "made_by": "tests/golden/make_scorer_golden.py (see its docstring for how to run it)",
        "scorer": "isic-challenge-scoring",
        "scorer_version": versions["isic-challenge-scoring"],
        "versions": versions,
        "metrics": list(METRICS),
        "cases": cases,
    }
    (HERE / "scorer_golden.json").write_text(json.dumps(payload, indent=1) + "\n")
    n_err = sum("error_class" in r for c in cases for r in c["results"].values())
    print(f"{len(cases)} cases, {len(cases) * len(METRICS) - n_err} values, {n_err} scorer errors")


if __name__ == "__main__":
    main()
