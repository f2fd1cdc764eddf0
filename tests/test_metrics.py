"""Tests for helpers/metrics.py: hand-computed cases, the patient bootstrap, and agreement of
the per-category scores with the official ISIC scorer through golden values (tests/golden/)."""

from __future__ import annotations

import json
import math
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from sklearn.calibration import calibration_curve
from sklearn.metrics import auc as trapezoid, roc_auc_score, roc_curve

from helpers import REPO_ROOT
from helpers import metrics as M

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
GOLDEN = json.loads((GOLDEN_DIR / "scorer_golden.json").read_text())
REAL = REPO_ROOT.parent / "shared" / "datasets" / "challenge-ground-truth"

# Five melanomas, five benign lesions. Sorted by score: P P P N P N N N P N, so the ROC curve
# (fpr, tpr) runs (0,0) (0,.2) (0,.4) (0,.6) (.2,.6) (.2,.8) (.4,.8) (.6,.8) (.8,.8) (.8,1) (1,1).
Y5 = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0])
P5 = np.array([0.9, 0.8, 0.7, 0.6, 0.2, 0.65, 0.5, 0.4, 0.3, 0.1])


# ---------------------------------------------------------------------------------------------
# Agreement with the official scorer's per-category table (golden values, tests/golden/)
# ---------------------------------------------------------------------------------------------
def _read_scorer_pair(case):
    truth = pd.read_csv(GOLDEN_DIR / case["truth"], index_col="image")
    pred = pd.read_csv(GOLDEN_DIR / case["prediction"])
    pred["image"] = pred["image"].str.replace(r"\.jpg$", "", case=False, regex=True)
    weights = truth.pop("score_weight") if "score_weight" in truth else pd.Series(1.0, index=truth.index)
    truth = truth.drop(columns=["validation_weight"], errors="ignore")
    weights[weights.index == "ISIC_0035068"] = 0.0
    return truth, pred.set_index("image").loc[truth.index, truth.columns], weights


@pytest.mark.parametrize("case", [c for c in GOLDEN["cases"] if "per_category" in c], ids=lambda c: c["name"])
def test_per_class_scores_agree_with_the_scorers_per_category_table(case):
    truth, pred, weights = _read_scorer_pair(case)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = M.per_class_scores(truth, pred, sample_weight=weights.to_numpy())
    for metric in ("auc", "ap", "auc_sens_80"):
        for cat, expected in case["per_category"][metric].items():
            if expected is None:
                assert math.isnan(table.loc[cat, metric])
            else:
                assert table.loc[cat, metric] == pytest.approx(expected, abs=1e-9, rel=0), (cat, metric)


# ---------------------------------------------------------------------------------------------
# Ranking metrics on hand-computed cases
# ---------------------------------------------------------------------------------------------
def test_roc_auc_and_average_precision_by_hand():
    y, p = [0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]
    assert M.roc_auc(y, p) == pytest.approx(0.75)  # 3 of the 4 (pos, neg) pairs ordered right
    assert M.average_precision(y, p) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    with pytest.raises(ValueError, match="both classes"):
        M.roc_auc([0, 0, 0], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="0/1"):
        M.roc_auc([0, 2, 1], [0.1, 0.2, 0.3])


def test_auc_sens_80_by_hand():
    # area under the curve right of (.2, .8), where tpr first reaches .8: .8 over [.2, .8], 1 over [.8, 1]
    assert M.auc_sens_80(Y5, P5) == pytest.approx(0.68)
    # perfect: 0.8 is reached at fpr 0, so the whole unit square counts (the scorer's value, not 0.2)
    assert M.auc_sens_80(Y5, Y5.astype(float)) == pytest.approx(1.0)
    assert M.auc_sens_80(Y5, 1.0 - Y5) == pytest.approx(0.0)  # inverted: 0.8 reached only at fpr 1
    assert M.auc_sens_80(Y5, np.full(10, 0.5)) == pytest.approx(0.18)  # constant: diagonal from (.8,.8)
    # 0.8 reached on a vertical segment: (.5,.5) -> (.5,1); area 0.5 * 1
    assert M.auc_sens_80([1, 1, 0, 0], [0.9, 0.3, 0.5, 0.1]) == pytest.approx(0.5)
    # a weight of 0 removes a row
    assert M.auc_sens_80(np.r_[Y5, 0], np.r_[P5, 0.99], sample_weight=np.r_[np.ones(10), 0]) == pytest.approx(
        0.68
    )


def _kaggle_pauc(y, p, min_tpr=0.8):
    """The ISIC 2024 metric written out with roc_curve and interpolation (no McClish)."""
    max_fpr = 1 - min_tpr
    fpr, tpr, _ = roc_curve(np.abs(np.asarray(y) - 1), -np.asarray(p))
    stop = np.searchsorted(fpr, max_fpr, "right")
    tpr_end = np.interp(max_fpr, fpr[stop - 1 : stop + 1], tpr[stop - 1 : stop + 1])
    return trapezoid(np.append(fpr[:stop], max_fpr), np.append(tpr[:stop], tpr_end))


def _area_above(y, p, min_tpr):
    """Independent partial AUC: the integral of max(TPR - min_tpr, 0) over FPR on the exact ROC
    curve (every threshold; a segment crossing min_tpr is cut where it crosses)."""
    fpr, tpr, _ = roc_curve(y, p, drop_intermediate=False)
    area = 0.0
    for f0, t0, f1, t1 in zip(fpr[:-1], tpr[:-1], fpr[1:], tpr[1:]):
        a, b = t0 - min_tpr, t1 - min_tpr
        if a >= 0 and b >= 0:
            area += (f1 - f0) * (a + b) / 2
        elif a > 0 or b > 0:  # crosses: only the part above the line, a triangle
            area += (f1 - f0) * max(a, b) ** 2 / (abs(a) + abs(b)) / 2
    return area


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 12)), min_size=2, max_size=60),
       st.sampled_from([0.0, 0.5, 0.8, 0.88, 0.95]))
def test_partial_auc_equals_the_area_above_min_tpr(pairs, min_tpr):
    y = np.array([int(b) for b, _ in pairs])
    assume(0 < y.sum() < len(y))
    p = np.array([s / 12 for _, s in pairs])  # few distinct scores: ties on purpose
    value = M.partial_auc(y, p, min_tpr=min_tpr)
    assert value == pytest.approx(_area_above(y, p, min_tpr), abs=1e-12)
    assert -1e-12 <= value <= 1 - min_tpr + 1e-12
    assert value == pytest.approx(_kaggle_pauc(y, p, min_tpr) if min_tpr else M.roc_auc(y, p), abs=1e-12)


def test_partial_auc_edge_cases():
    y = np.array([0, 0, 0, 1, 1, 0, 1, 0])
    assert M.partial_auc(y, y * 0.9 + 0.05) == pytest.approx(0.2)        # perfect: the whole strip
    assert M.partial_auc(y, 1 - y) == pytest.approx(0.0, abs=1e-12)      # every cancer ranked last
    assert M.partial_auc(y, np.zeros(8)) == pytest.approx(0.02)          # all tied: the diagonal
    assert M.pauc_above_tpr is M.partial_auc
    with pytest.raises(ValueError, match="both classes"):
        M.partial_auc([1, 1, 1], [0.2, 0.5, 0.9])
    with pytest.raises(ValueError, match="min_tpr"):
        M.partial_auc(y, y, min_tpr=1.0)


def test_pauc_above_tpr_known_values_and_range():
    assert M.pauc_above_tpr(Y5, Y5.astype(float)) == pytest.approx(0.2)  # perfect: the whole strip
    assert M.pauc_above_tpr(Y5, 1.0 - Y5) == pytest.approx(0.0, abs=1e-12)  # inverted
    assert M.pauc_above_tpr(Y5, np.full(10, 0.5)) == pytest.approx(0.02)  # diagonal: triangle .2*.2/2
    assert M.pauc_above_tpr(Y5, P5) == pytest.approx(0.04)  # only tpr=1 over fpr [.8, 1] is above .8
    assert M.pauc_above_tpr(Y5, P5, min_tpr=0.0) == pytest.approx(M.roc_auc(Y5, P5))
    rng = np.random.default_rng(3)
    for _ in range(20):
        y = (rng.uniform(size=60) < 0.3).astype(int)
        y[:2] = [0, 1]
        p = np.round(rng.uniform(size=60) + 0.3 * y * rng.uniform(), 2)  # with ties
        value = M.pauc_above_tpr(y, p)
        assert 0.0 <= value <= 0.2
        assert value == pytest.approx(_kaggle_pauc(y, p), abs=1e-12)
        # the two partial AUCs differ by the rectangle under tpr = .8 right of where .8 is reached
        fpr, tpr, _ = roc_curve(y, p, drop_intermediate=False)
        i = np.searchsorted(tpr, 0.8)
        fpr80 = np.interp(0.8, tpr[i - 1 : i + 1], fpr[i - 1 : i + 1])
        assert M.auc_sens_80(y, p) == pytest.approx(value + 0.8 * (1 - fpr80), abs=1e-12)


def test_balanced_multiclass_accuracy_three_classes():
    truth = np.array([0, 0, 0, 1, 1, 2])
    pred = np.eye(3)[[0, 0, 1, 1, 2, 2]] * 0.6 + 0.1  # argmax 0 0 1 1 2 2
    assert M.balanced_multiclass_accuracy(truth, pred) == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert M.balanced_multiclass_accuracy(np.eye(3)[truth], pred) == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    # a tied prediction row counts as wrong; an all-zero truth row is left out
    tied = np.vstack([pred, [0.45, 0.1, 0.45]])
    assert M.balanced_multiclass_accuracy(np.r_[truth, 2], tied) == pytest.approx((2 / 3 + 1 / 2 + 1 / 2) / 3)
    onehot = np.vstack([np.eye(3)[truth], [0, 0, 0]])
    assert M.balanced_multiclass_accuracy(onehot, np.vstack([pred, [0.1, 0.1, 0.8]])) == pytest.approx(
        (2 / 3 + 1 / 2 + 1) / 3
    )
    # plain accuracy here is 4/6: balanced accuracy weighs the rare classes up
    assert M.balanced_multiclass_accuracy(truth, pred) != pytest.approx(4 / 6)


def test_per_class_and_macro_scores():
    truth = pd.DataFrame(np.eye(3)[[0, 0, 1, 1, 2, 2]], columns=["MEL", "NV", "BKL"])
    pred = pd.DataFrame(np.eye(3)[[0, 1, 1, 1, 2, 0]] * 0.5 + 0.25, columns=["MEL", "NV", "BKL"])
    aucs = M.per_class_auc(truth, pred)
    for cat in truth.columns:
        assert aucs[cat] == pytest.approx(M.roc_auc(truth[cat], pred[cat]))
    assert M.macro_auc(truth, pred) == pytest.approx(aucs.mean())
    assert M.macro_ap(truth, pred) == pytest.approx(M.per_class_ap(truth, pred).mean())
    absent = truth.assign(BKL=0.0)
    assert math.isnan(M.per_class_auc(absent, pred)["BKL"])
    assert M.macro_auc(absent, pred) == pytest.approx(aucs[["MEL", "NV"]].mean())


# ---------------------------------------------------------------------------------------------
# Operating points, confusion matrix, biopsies
# ---------------------------------------------------------------------------------------------
def test_sensitivity_at_specificity_with_threshold():
    sens, thr = M.sensitivity_at_specificity(Y5, P5, 0.8)
    assert (sens, thr) == (pytest.approx(0.8), 0.6)
    assert ((P5 >= thr) & (Y5 == 1)).sum() == 4 and ((P5 >= thr) & (Y5 == 0)).sum() == 1
    assert M.sensitivity_at_specificity(Y5, P5, 1.0) == (pytest.approx(0.6), 0.7)
    assert M.sensitivity_at_specificity(Y5, P5, 0.7) == (pytest.approx(0.8), 0.6)  # fpr .4 buys nothing
    sens0, thr0 = M.sensitivity_at_specificity([1, 0], [0.2, 0.9], 1.0)
    assert sens0 == 0.0 and thr0 == math.inf


def test_specificity_at_sensitivity_with_threshold():
    assert M.specificity_at_sensitivity(Y5, P5, 0.8) == (pytest.approx(0.8), 0.6)
    assert M.specificity_at_sensitivity(Y5, P5, 0.95) == (pytest.approx(0.2), 0.2)
    assert M.specificity_at_sensitivity(Y5, P5, 0.5) == (pytest.approx(1.0), 0.7)
    # rates like 3/10 are inexact in floating point: 0.7 must still count as reached
    y = np.r_[np.ones(10), np.zeros(10)]
    p = np.r_[np.linspace(0.9, 0.5, 10), np.linspace(0.45, 0.0, 10)]
    assert M.specificity_at_sensitivity(y, p, 0.7)[0] == pytest.approx(1.0)


def test_confusion_matrix_and_number_needed_to_biopsy():
    cm = M.confusion_matrix(Y5, P5, threshold=0.5)  # called positive: .9 .8 .7 .6 | .65 .5
    assert cm.tolist() == [[3, 2], [1, 4]]
    assert M.number_needed_to_biopsy(Y5, P5, 0.5) == pytest.approx(6 / 4)
    assert M.number_needed_to_biopsy(Y5, P5, 0.0) == pytest.approx(10 / 5)
    assert M.number_needed_to_biopsy(Y5, P5, 0.95) == math.inf


# ---------------------------------------------------------------------------------------------
# Calibration
# ---------------------------------------------------------------------------------------------
def test_reliability_curve_ece_and_brier():
    rng = np.random.default_rng(0)
    p = rng.uniform(size=500)
    y = (rng.uniform(size=500) < p).astype(int)
    curve = M.reliability_curve(y, p, n_bins=10)
    prob_true, prob_pred = calibration_curve(y, p, n_bins=10)
    assert np.allclose(curve["fraction_positive"], prob_true) and np.allclose(
        curve["mean_predicted"], prob_pred
    )
    assert curve["count"].sum() == 500
    assert M.expected_calibration_error(y, p) < 0.08  # calibrated by construction
    # four cases at .25 with one melanoma, four at .75 with three: perfectly calibrated
    assert M.expected_calibration_error([1, 0, 0, 0, 1, 1, 1, 0], [0.25] * 4 + [0.75] * 4) == pytest.approx(0)
    assert M.expected_calibration_error([1, 0, 1, 0], [0.9] * 4) == pytest.approx(0.4)
    assert M.brier_score([1, 0], [0.8, 0.3]) == pytest.approx((0.2**2 + 0.3**2) / 2)


# ---------------------------------------------------------------------------------------------
# Patient-level bootstrap
# ---------------------------------------------------------------------------------------------
def test_bootstrap_draws_patients_with_all_their_images():
    groups = np.array(["A"] * 5 + ["B"] * 1 + ["C"] * 3 + ["D"] * 2 + ["E"] * 4)
    sizes = Counter(groups)
    uniques = list(pd.unique(groups))
    draws = list(M.patient_bootstrap_indices(groups, n=50, seed=1))
    for idx, drawn in draws:
        assert len(drawn) == len(uniques)  # as many patients drawn as there are
        drawn_counts = Counter(uniques[c] for c in drawn)
        assert Counter(groups[idx]) == {g: k * sizes[g] for g, k in drawn_counts.items()}
        assert len(set(groups[idx])) == len(set(drawn))
    again = list(M.patient_bootstrap_indices(groups, n=50, seed=1))
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(draws, again))
    other = list(M.patient_bootstrap_indices(groups, n=50, seed=2))
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(draws, other))


def test_bootstrap_with_one_patient_holding_all_melanomas():
    rng = np.random.default_rng(0)
    groups = np.repeat([f"IP_{i}" for i in range(12)], 5)
    y = np.zeros(60, int)
    y[:4] = 1  # patient IP_0 holds all four melanomas
    p = np.clip(rng.normal(0.3, 0.2, 60) + 0.3 * y, 0, 1)
    ci = M.bootstrap_ci(y, p, M.roc_auc, groups=groups, n=300, seed=0)
    lacking = sum(0 not in drawn for _, drawn in M.patient_bootstrap_indices(groups, 300, seed=0))
    assert ci.n_skipped == lacking > 0  # about (11/12)**12 = 35 % of resamples have no melanoma
    assert ci.n_resamples + ci.n_skipped == 300
    assert ci.low <= ci.estimate <= ci.high
    plain = M.bootstrap_ci(y, p, M.roc_auc, groups=None, n=300, seed=0)
    assert plain.n_skipped < ci.n_skipped  # resampling images almost always keeps a melanoma


def test_bootstrap_patient_interval_is_wider_when_images_of_a_patient_agree():
    rng = np.random.default_rng(1)
    n_pat, per = 30, 8
    groups = np.repeat(np.arange(n_pat), per)
    y = np.repeat(rng.uniform(size=n_pat) < 0.4, per).astype(int)  # the label is the patient's
    p = np.repeat(rng.normal(size=n_pat), per) + y + 0.05 * rng.normal(size=n_pat * per)
    by_patient = M.bootstrap_ci(y, p, roc_auc_score, groups=groups, n=200, seed=0)
    by_image = M.bootstrap_ci(y, p, roc_auc_score, groups=None, n=200, seed=0)
    assert (by_patient.high - by_patient.low) > 1.5 * (by_image.high - by_image.low)
    assert M.bootstrap_ci(y, p, roc_auc_score, groups=groups, n=200, seed=0) == by_patient  # seeded
    assert M.bootstrap_ci(y, p, roc_auc_score, groups=groups, n=200, seed=5) != by_patient
    narrow = M.bootstrap_ci(y, p, roc_auc_score, groups=groups, n=200, seed=0, alpha=0.5)
    assert narrow.high - narrow.low < by_patient.high - by_patient.low
    assert "95% CI" in str(by_patient)


# ---------------------------------------------------------------------------------------------
# Subgroups
# ---------------------------------------------------------------------------------------------
def test_age_band():
    assert [M.age_band(a) for a in (0, 29, 30, 44.0, 45, 74, 75, 90)] == [
        "<30",
        "<30",
        "30-44",
        "30-44",
        "45-59",
        "60-74",
        "75+",
        "75+",
    ]
    assert M.age_band(float("nan")) == "unknown" and M.age_band("") == "unknown"
    s = M.age_band(pd.Series([50.0, None, 20.0], index=[7, 8, 9]))
    assert s.tolist() == ["45-59", "unknown", "<30"] and s.index.tolist() == [7, 8, 9]


def test_subgroup_table_counts_and_auc():
    frame = pd.DataFrame(
        {
            "target": [1, 0, 0, 1, 0, 0, 0, 1],
            "pred": [0.9, 0.2, 0.4, 0.3, 0.5, 0.1, 0.6, 0.8],
            "sex": ["male", "male", "male", "female", "female", "female", None, "male"],
            "age_approx": [55.0, 60.0, 25.0, 40.0, 80.0, np.nan, 35.0, 50.0],
            "anatom_site_general_challenge": ["torso"] * 4 + ["head/neck"] * 4,
        }
    )
    table = M.subgroup_table(frame, "target", "pred")
    row = table.set_index(["variable", "group"])
    assert row.loc[("all", "all"), "n"] == 8 and row.loc[("all", "all"), "positives"] == 3
    assert row.loc[("all", "all"), "auc"] == pytest.approx(M.roc_auc(frame.target, frame.pred))
    assert row.loc[("sex", "male"), ["n", "positives"]].tolist() == [4, 2]
    assert row.loc[("sex", "male"), "auc"] == pytest.approx(1.0)  # .9 .8 above .2 .4
    assert row.loc[("sex", "female"), "auc"] == pytest.approx(0.5)  # .3 vs .5 .1
    assert math.isnan(row.loc[("sex", "unknown"), "auc"])  # one benign lesion only
    assert table[table.variable == "age_band"].group.tolist() == [
        "<30",
        "30-44",
        "45-59",
        "60-74",
        "75+",
        "unknown",
    ]
    assert row.loc[("anatom_site", "torso"), "n"] == 4
    with pytest.raises(ValueError, match="anatom_site"):
        M.subgroup_table(frame.drop(columns="anatom_site_general_challenge"), "target", "pred")


# ---------------------------------------------------------------------------------------------
# chapter 9 additions: prevalence_weights, operating_points
# ---------------------------------------------------------------------------------------------
def test_prevalence_weights_give_the_target_rate_and_keep_the_auc():
    w = M.prevalence_weights(Y5, 0.02)  # a 50 % sample weighted to 2 %
    assert w.sum() == pytest.approx(len(Y5))
    assert np.average(Y5, weights=w) == pytest.approx(0.02)
    assert M.roc_auc(Y5, P5, w) == pytest.approx(M.roc_auc(Y5, P5))  # class-wise weights: AUC unchanged
    assert M.average_precision(Y5, P5, w) < M.average_precision(Y5, P5) - 0.2  # AP falls with prevalence
    with pytest.raises(ValueError, match="prevalence must be in"):
        M.prevalence_weights(Y5, 1.0)
    with pytest.raises(ValueError, match="needs both classes"):
        M.prevalence_weights(np.zeros(4), 0.1)


def test_operating_points_by_hand_and_at_another_prevalence():
    table = M.operating_points(Y5, P5, sensitivities=(0.8, 1.0), prevalence=0.1).set_index("target")
    # 80 %: threshold 0.6 flags 0.9 0.8 0.7 0.65(N) 0.6 -> 4 TP, 1 FP
    assert table.loc[0.8, "threshold"] == 0.6 and table.loc[0.8, "specificity"] == pytest.approx(0.8)
    assert table.loc[0.8, "nnb"] == pytest.approx(5 / 4)
    assert table.loc[0.8, "nnb_at_prevalence"] == pytest.approx(1 + 0.2 * 0.9 / (0.8 * 0.1))  # 3.25
    assert table.loc[0.8, "biopsies_per_1000"] == pytest.approx(260.0)
    assert table.loc[0.8, "missed_per_1000"] == pytest.approx(20.0)
    # 100 %: threshold 0.2 flags every melanoma and 4 benign lesions
    assert table.loc[1.0, "threshold"] == 0.2 and table.loc[1.0, "nnb"] == pytest.approx(9 / 5)
    assert table.loc[1.0, "missed_per_1000"] == 0


def test_operating_points_nnb_at_prevalence_equals_the_reweighted_sample():
    rng = np.random.default_rng(1)
    y = (rng.uniform(size=400) < 0.25).astype(int)
    p = np.clip(rng.normal(0.35 + 0.3 * y, 0.15), 0, 1)
    row = M.operating_points(y, p, (0.9,), prevalence=0.0176).iloc[0]
    w = M.prevalence_weights(y, 0.0176)
    flagged = p >= row["threshold"]
    weighted_nnb = w[flagged].sum() / w[flagged & (y == 1)].sum()
    assert row["sensitivity"] >= 0.9 and row["nnb_at_prevalence"] == pytest.approx(weighted_nnb)
    assert row["nnb_at_prevalence"] > 5 * row["nnb"]  # the enriched sample hides the cost
    assert "nnb_at_prevalence" not in M.operating_points(y, p, (0.9,)).columns


# ---------------------------------------------------------------------------------------------
# chapter 10 additions: max_softmax_probability, energy_score, ood_auroc, ood_fpr_at_tpr
# ---------------------------------------------------------------------------------------------
def test_max_softmax_probability_by_hand_and_shift_invariance():
    z = np.array([[0.0, 0.0, 0.0, 0.0], [np.log(3.0), 0.0, 0.0, 0.0], [10.0, -5.0, 2.0, 0.0]])
    msp = M.max_softmax_probability(z)
    assert msp[0] == pytest.approx(0.25)  # uniform logits: 1/k
    assert msp[1] == pytest.approx(3 / 6)  # exp: 3, 1, 1, 1
    assert M.max_softmax_probability(z + np.array([[5.0], [-2.0], [100.0]])) == pytest.approx(msp)
    # a high temperature flattens the softmax towards 1/k, a low one sharpens it towards 1
    assert M.max_softmax_probability(z[2:], temperature=1e4)[0] == pytest.approx(0.25, abs=1e-3)
    assert M.max_softmax_probability(z[1:2], temperature=0.01)[0] == pytest.approx(1.0)


def test_energy_score_by_hand_shift_and_temperature():
    z = np.array([[0.0, 0.0], [1.0, 2.0], [1000.0, 999.0]])
    e = M.energy_score(z)
    assert e[0] == pytest.approx(-math.log(2.0))
    assert e[1] == pytest.approx(-math.log(math.e + math.e**2))
    assert e[2] == pytest.approx(-(1000.0 + math.log1p(math.exp(-1.0))))  # no overflow
    assert M.energy_score(z + 3.0) == pytest.approx(e - 3.0)  # larger logits, lower energy
    assert M.energy_score(z, temperature=1e-3) == pytest.approx(-z.max(axis=1), abs=1e-2)
    t = 2.0
    assert M.energy_score(z[:2], t) == pytest.approx(-t * np.log(np.exp(z[:2] / t).sum(axis=1)))


def test_ood_scores_refuse_bad_logits():
    with pytest.raises(ValueError, match="shape"):
        M.energy_score(np.zeros(3))
    with pytest.raises(ValueError, match="k >= 2"):
        M.max_softmax_probability(np.zeros((3, 1)))
    with pytest.raises(ValueError, match="row 1"):
        M.energy_score([[0.0, 1.0], [np.nan, 0.0]])
    with pytest.raises(ValueError, match="temperature"):
        M.max_softmax_probability([[0.0, 1.0]], temperature=0)


def test_ood_auroc_and_fpr_at_tpr_by_hand():
    s_in = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    assert M.ood_auroc(s_in, [2.0, 3.0]) == 1.0
    assert M.ood_auroc(s_in, [-1.0]) == 0.0
    assert M.ood_auroc(s_in, [0.55]) == pytest.approx(0.5)  # above 5 of the 10
    # keeping 90 % of the 10 known images puts the threshold at the 9th smallest score, 0.9
    assert M.ood_fpr_at_tpr(s_in, [0.85, 0.9, 0.95, 2.0], tpr=0.9) == pytest.approx(0.5)
    # 95 % of 10 needs all 10: the threshold is 1.0
    assert M.ood_fpr_at_tpr(s_in, [0.85, 0.9, 0.95, 2.0]) == pytest.approx(0.75)
    assert M.ood_fpr_at_tpr(s_in, [5.0, 6.0]) == 0.0
    with pytest.raises(ValueError, match="score_out is empty"):
        M.ood_auroc(s_in, [])
    with pytest.raises(ValueError, match="score_in has NaN at row 2"):
        M.ood_fpr_at_tpr([0.0, 1.0, np.nan], [1.0])
    with pytest.raises(ValueError, match="tpr"):
        M.ood_fpr_at_tpr(s_in, [1.0], tpr=0.0)


def test_energy_separates_a_class_the_logits_never_saw():
    """Known images get one large logit, unknown ones only small logits: both scores notice."""
    rng = np.random.default_rng(0)
    known = rng.normal(0, 1, (200, 5))
    known[np.arange(200), rng.integers(0, 5, 200)] += 6.0
    unknown = rng.normal(0, 1, (50, 5))
    e_in, e_out = M.energy_score(known), M.energy_score(unknown)
    assert M.ood_auroc(e_in, e_out) > 0.95
    assert M.ood_auroc(-M.max_softmax_probability(known), -M.max_softmax_probability(unknown)) > 0.95
    assert M.ood_auroc(-e_in, -e_out) < 0.05  # the sign convention matters
