"""Tests for helpers/submissions.py: agreement with the official ISIC scorer through golden
values (tests/golden/), write-then-score round trips, bad files refused, the real ground truth."""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import REPO_ROOT
from helpers import metrics as M
from helpers import submissions as S

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
GOLDEN = json.loads((GOLDEN_DIR / "scorer_golden.json").read_text())
REAL = REPO_ROOT.parent / "shared" / "datasets" / "challenge-ground-truth"


# ---------------------------------------------------------------------------------------------
# Agreement with the official scorer (golden values made by tests/golden/make_scorer_golden.py)
# ---------------------------------------------------------------------------------------------
def _golden_params():
    for case in GOLDEN["cases"]:
        for metric in GOLDEN["metrics"]:
            yield pytest.param(case, metric, id=f"{case['name']}-{metric}")


def test_golden_file_records_the_scorer_and_covers_the_adversarial_cases():
    assert GOLDEN["scorer"] == "isic-challenge-scoring"
    assert re.fullmatch(r"\d+\.\d+\.\d+", GOLDEN["scorer_version"])
    names = {c["name"] for c in GOLDEN["cases"]}
    for needed in (
        "random_2019",
        "ties_rounded_2018",
        "constant_all_equal",
        "class_absent_unk",
        "perfect_onehot_2019",
        "inverted_2019",
        "ties_sens80_in_block",
    ):
        assert needed in names
    values = [r for c in GOLDEN["cases"] for r in c["results"].values() if "value" in r]
    errors = [r for c in GOLDEN["cases"] for r in c["results"].values() if "error_class" in r]
    assert len(values) >= 60 and len(errors) >= 40
    for case in GOLDEN["cases"]:  # the CSVs it scored are committed beside it
        assert (GOLDEN_DIR / case["truth"]).is_file() and (GOLDEN_DIR / case["prediction"]).is_file()


@pytest.mark.parametrize(("case", "metric"), list(_golden_params()))
def test_score_submission_agrees_with_the_official_scorer(case, metric):
    truth, pred = GOLDEN_DIR / case["truth"], GOLDEN_DIR / case["prediction"]
    expected = case["results"][metric]
    if "error_class" in expected:
        with pytest.raises(ValueError) as err:
            S.score_submission(truth, pred, metric)
        message = str(err.value)
        # our message names the file, and every image or column the scorer's message names
        assert Path(case["prediction"]).name in message or Path(case["truth"]).name in message
        for name in re.findall(r"'([^']+)'", expected["error_message"]):
            assert name in message, (name, message)
        if case["name"] == "class_absent_unk":
            assert "UNK" in message and "no positive" in message
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = S.score_submission(truth, pred, metric)
    if expected["value"] is None:  # the scorer reports NaN (a category without negatives)
        assert math.isnan(got)
    else:
        assert got == pytest.approx(expected["value"], abs=1e-9, rel=0)


# ---------------------------------------------------------------------------------------------
# Official files: write, score, refuse bad ones
# ---------------------------------------------------------------------------------------------
def _multiclass_truth(task, n, rng):
    cats = list(S.SUBMISSION_COLUMNS[task][1:])
    labels = np.r_[np.arange(len(cats)), rng.integers(0, len(cats), n - len(cats))]
    onehot = np.eye(len(cats))[labels]
    return cats, onehot


@pytest.mark.parametrize("task", ["2019", "2018", "2017"])
def test_write_then_score_round_trip_multiclass(tmp_path, task):
    rng = np.random.default_rng(int(task))
    id_col = S.SUBMISSION_COLUMNS[task][0]
    cats, onehot = _multiclass_truth(task, 40, rng)
    ids = [f"ISIC_{i:07d}" for i in range(40)]
    scores = rng.dirichlet(np.ones(len(cats)), size=40) * 0.5 + 0.5 * onehot * rng.uniform(size=(40, 1))
    truth = pd.DataFrame(onehot, columns=cats).assign(**{id_col: ids})[[id_col, *cats]]
    truth.to_csv(tmp_path / "truth.csv", index=False, lineterminator="\r\n")  # official files are CRLF
    frame = pd.DataFrame(scores, columns=cats).assign(image_name=ids, extra="ignored")
    path = S.write_submission(frame, tmp_path / "sub.csv", task)
    text = path.read_bytes().decode()
    assert text.splitlines()[0] == ",".join(S.SUBMISSION_COLUMNS[task]) and "\r" not in text
    assert np.array_equal(pd.read_csv(path)[cats].to_numpy(), scores)  # full precision
    got = {
        m: S.score_submission(tmp_path / "truth.csv", path, m, task=task)
        for m in ("auc", "ap", "balanced_accuracy")
    }
    assert got["auc"] == pytest.approx(
        np.mean([M.roc_auc(onehot[:, j], scores[:, j]) for j in range(len(cats))])
    )
    assert got["ap"] == pytest.approx(
        np.mean([M.average_precision(onehot[:, j], scores[:, j]) for j in range(len(cats))])
    )
    assert got["balanced_accuracy"] == pytest.approx(M.balanced_multiclass_accuracy(onehot, scores))
    assert S.score_submission(tmp_path / "truth.csv", path, "auc") == got["auc"]  # task detected


def test_write_then_score_round_trip_2020(tmp_path):
    rng = np.random.default_rng(2020)
    n = 50
    truth = pd.DataFrame(
        {
            "image_name": [f"ISIC_{i:07d}" for i in range(n)],
            "patient_id": [f"IP_{i // 3:07d}" for i in range(n)],
            "sex": "male",
            "age_approx": 45.0,
            "anatom_site_general_challenge": "torso",
            "diagnosis": "nevus",
            "benign_malignant": "benign",
            "target": (rng.uniform(size=n) < 0.3).astype(int),
        }
    )
    truth.to_csv(tmp_path / "train.csv", index=False)
    p = np.clip(0.5 * truth.target + rng.uniform(size=n) * 0.7, 0, 1)
    sub = S.write_submission(truth[["image_name"]].assign(target=p), tmp_path / "submission.csv", "2020")
    assert sub.read_text().splitlines()[0] == "image_name,target"
    y = truth.target.to_numpy()
    assert S.score_submission(tmp_path / "train.csv", sub, "auc", task="2020") == pytest.approx(
        M.roc_auc(y, p)
    )
    assert S.score_submission(tmp_path / "train.csv", sub, "pauc") == pytest.approx(M.pauc_above_tpr(y, p))
    assert S.score_submission(tmp_path / "train.csv", sub, "auc_sens_80") == pytest.approx(
        M.auc_sens_80(y, p)
    )
    tn, fp, fn, tp = M.confusion_matrix(y, p, 0.5).ravel()
    assert S.score_submission(tmp_path / "train.csv", sub, "balanced_accuracy") == pytest.approx(
        (tp / (tp + fn) + tn / (tn + fp)) / 2
    )


def test_write_submission_refuses_bad_frames(tmp_path):
    good = pd.DataFrame({"image_name": ["ISIC_0000001", "ISIC_0000002"], "target": [0.2, 0.9]})
    with pytest.raises(ValueError, match=r"row 1 \(image ISIC_0000002\), column target"):
        S.write_submission(good.assign(target=[0.2, np.nan]), tmp_path / "s.csv", "2020")
    with pytest.raises(ValueError, match=r"row 0 .*column target"):
        S.write_submission(good.assign(target=[1.5, 0.1]), tmp_path / "s.csv", "2020")
    with pytest.raises(ValueError, match="lacks column 'MEL'"):
        S.write_submission(good, tmp_path / "s.csv", "2019")
    with pytest.raises(ValueError, match="appears twice"):
        S.write_submission(good.assign(image_name="ISIC_0000001"), tmp_path / "s.csv", "2020")
    with pytest.raises(ValueError, match="task must be one of"):
        S.write_submission(good, tmp_path / "s.csv", "2016")
    assert not (tmp_path / "s.csv").exists()


def test_score_submission_refuses_bad_files_naming_row_and_column(tmp_path):
    (tmp_path / "truth.csv").write_text("image,MEL,NV\nISIC_0000001,1.0,0.0\nISIC_0000002,0.5,0.5\n")
    (tmp_path / "pred.csv").write_text("image,MEL,NV\nISIC_0000001,0.7,0.3\nISIC_0000002,0.4,0.6\n")
    with pytest.raises(
        ValueError, match=r"truth.csv: row 2 \(image ISIC_0000002\), column MEL: truth must be 0 or 1"
    ):
        S.score_submission(tmp_path / "truth.csv", tmp_path / "pred.csv", "auc")
    (tmp_path / "truth.csv").write_text("image,MEL,NV\nISIC_0000001,1.0,0.0\nISIC_0000002,0.0,1.0\n")
    (tmp_path / "blank.csv").write_text("image,MEL,NV\nISIC_0000001,0.7,\nISIC_0000002,0.4,0.6\n")
    with pytest.raises(
        ValueError, match=r"blank.csv: row 1 \(image ISIC_0000001\), column NV: missing value"
    ):
        S.score_submission(tmp_path / "truth.csv", tmp_path / "blank.csv", "auc")
    with pytest.raises(ValueError, match="metric must be one of"):
        S.score_submission(tmp_path / "truth.csv", tmp_path / "pred.csv", "accuracy")
    with pytest.raises(ValueError, match="lacks column 'image_name'"):
        S.score_submission(tmp_path / "truth.csv", tmp_path / "pred.csv", "auc", task="2020")
    with pytest.raises(ValueError, match="missing.csv: prediction file not found"):
        S.score_submission(tmp_path / "truth.csv", tmp_path / "missing.csv", "auc")
    (tmp_path / "empty.csv").write_text("image,MEL,NV\n")
    with pytest.raises(ValueError, match="empty.csv: the prediction file has a header but no rows"):
        S.score_submission(tmp_path / "truth.csv", tmp_path / "empty.csv", "auc")
    assert S.score_submission(tmp_path / "truth.csv", tmp_path / "pred.csv", "auc") == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------
# The real challenge ground-truth files (../shared/datasets)
# ---------------------------------------------------------------------------------------------
def _real(name: str) -> Path:
    path = REAL / name
    if not path.is_file():
        pytest.skip(f"{path.name} absent (../shared/datasets/challenge-ground-truth not on this machine)")
    return path


def test_real_2020_truth_scores_a_submission_and_bootstraps_its_patients(tmp_path):
    truth_path = _real("ISIC_2020_Training_GroundTruth.csv")  # CRLF, no final newline
    truth = pd.read_csv(truth_path)
    rng = np.random.default_rng(0)
    p = np.clip(rng.uniform(size=len(truth)) * 0.8 + 0.2 * truth.target, 0, 1)
    sub = S.write_submission(truth[["image_name"]].assign(target=p), tmp_path / "sub.csv", "2020")
    assert S.score_submission(truth_path, sub, "auc") == pytest.approx(M.roc_auc(truth.target, p))
    ids = truth.patient_id.to_numpy()
    assert len(pd.unique(ids)) == 2056
    idx, drawn = next(M.patient_bootstrap_indices(ids, n=1, seed=0))
    assert len(drawn) == 2056
    sizes = truth.patient_id.value_counts()
    assert len(idx) == sizes[pd.unique(ids)[drawn]].sum()  # every image of each drawn patient


def test_real_2019_training_truth_cannot_be_scored_because_unk_is_empty(tmp_path):
    truth_path = _real("ISIC_2019_Training_GroundTruth.csv")  # writes 0/1, not 0.0/1.0
    truth = pd.read_csv(truth_path)
    S.write_submission(truth, tmp_path / "sub.csv", "2019")
    with pytest.raises(ValueError, match="column UNK has no positive row"):
        S.score_submission(truth_path, tmp_path / "sub.csv", "balanced_accuracy", task="2019")


@pytest.mark.parametrize(
    ("name", "task"),
    [
        ("ISIC2018_Task3_Training_GroundTruth.csv", "2018"),
        ("ISIC-2017_Training_Part3_GroundTruth.csv", "2017"),
    ],
)
def test_real_truth_scores_a_perfect_submission_perfectly(tmp_path, name, task):
    truth_path = _real(name)
    sub = S.write_submission(pd.read_csv(truth_path), tmp_path / "sub.csv", task)
    for metric, expected in (("auc", 1.0), ("ap", 1.0), ("auc_sens_80", 1.0), ("balanced_accuracy", 1.0)):
        assert S.score_submission(truth_path, sub, metric) == pytest.approx(expected)
