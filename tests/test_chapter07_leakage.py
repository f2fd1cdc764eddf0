"""Chapter 7's patient-leakage measurement on the REAL SIIM-ISIC 2020 subset.

Section 7.3 cross-validates a logistic-regression head on the book's model's features of
``data_samples/siim-isic-2020-subset`` twice, with ``StratifiedKFold`` over images and with
``StratifiedGroupKFold`` by patient, for each seed of ``LEAK_SEEDS``. These tests rebuild
the same fold assignments from the data and compare them with the committed notebook's
stored outputs: no patient is on both sides of a grouped split, some are under the image
split, and the printed table and the glued numbers agree with each other and with the data.
Where the chapter's feature cache exists (``cache/ch07``, written by a run of the chapter)
one seed's AUCs are recomputed.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import numpy as np
import pytest
from support import code_cell

from helpers import prose
from helpers.datasets import load_dataset

REPO_ROOT = Path(__file__).resolve().parents[1]
CHAPTER = REPO_ROOT / "chapters" / "07_data_pipeline.ipynb"
SUBSET = REPO_ROOT / "data_samples" / "siim-isic-2020-subset"
CACHE = REPO_ROOT / "cache" / "ch07" / "isic2017_2020subset_128px.npz"
ROW = re.compile(r"^\s*(\d+)\s+([\d.]+)\s+([\d.]+)\s+(-?[\d.]+)\s+(\d+)\s+(\d+)\s*$", re.M)

needs_subset = pytest.mark.skipif(not SUBSET.is_dir(), reason="siim-isic-2020-subset absent")


@pytest.fixture(scope="module")
def committed():
    return nbformat.read(CHAPTER, as_version=4)


def _stdout(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def _parameter(nb, name: str):
    """The value of ``name = ...`` in the parameters cell (literals, ``tuple(range(n))``)."""
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    match = re.search(rf"^{name} = (.+?)(?:\s+#.*)?$", params.source, flags=re.M)
    assert match, f"{name} is not set in the parameters cell"
    text = match.group(1)
    if m := re.fullmatch(r"tuple\(range\((\d+)\)\)", text):
        return tuple(range(int(m.group(1))))
    return ast.literal_eval(text)


@pytest.fixture(scope="module")
def stored(committed):
    """The glued values, and the per-seed table the leakage cell printed."""
    rows = ROW.findall(_stdout(code_cell(committed, "def leak_cv")))
    table = {int(r[0]): dict(auc_image=float(r[1]), auc_patient=float(r[2]),
                             diff=float(r[3]), leaked_image=int(r[4]), leaked_patient=int(r[5]))
             for r in rows}
    return prose.stored_values(committed), table


@pytest.fixture(scope="module")
def subset():
    frame = load_dataset(SUBSET)
    return frame["target"].to_numpy(int), frame["patient_id"].to_numpy(str), frame


def _folds(scheme: str, y, groups, seed: int, n_folds: int):
    """The chapter's fold assignment: (train rows, validation rows) per fold."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    x = np.zeros((len(y), 1))
    if scheme == "patients whole":
        return list(StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed).split(x, y, groups))
    return list(StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(x, y))


def _leaked(folds, groups) -> np.ndarray:
    shared = np.zeros(len(groups), bool)
    for tr, va in folds:
        shared[va] = np.isin(groups[va], groups[tr])
    return shared


def test_table_has_one_row_per_seed(committed, stored):
    _, table = stored
    assert sorted(table) == list(_parameter(committed, "LEAK_SEEDS"))
    assert len(table) >= 5, "several fold assignments"


@needs_subset
def test_grouped_folds_keep_patients_whole_and_image_folds_do_not(committed, stored, subset):
    y, groups, _ = subset
    _, table = stored
    n_folds = _parameter(committed, "N_FOLDS")
    for seed, row in table.items():
        grouped = _folds("patients whole", y, groups, seed, n_folds)
        for tr, va in grouped:
            assert not set(groups[tr]) & set(groups[va]), f"seed {seed}: a patient on both sides"
        assert sorted(np.concatenate([va for _, va in grouped])) == list(range(len(y)))
        by_image = _folds("images split", y, groups, seed, n_folds)
        leaked = _leaked(by_image, groups)
        assert leaked.sum() > 0, "an image split of this subset must split some patients"
        # the counts the chapter printed are those of these very folds
        assert row["leaked_patient"] == 0
        assert row["leaked_image"] == int(leaked.sum()), seed


@needs_subset
def test_only_images_of_patients_with_several_images_can_leak(committed, stored, subset):
    y, groups, frame = subset
    _, table = stored
    counts = frame.groupby("patient_id").size()
    several = frame["patient_id"].map(counts).to_numpy() > 1
    for seed in table:
        leaked = _leaked(_folds("images split", y, groups, seed, _parameter(committed, "N_FOLDS")),
                         groups)
        assert not (leaked & ~several).any(), "an image alone in the sample cannot leak"


@needs_subset
def test_glued_numbers_agree_with_the_table_and_the_data(stored, subset):
    values, table = stored
    y, groups, frame = subset
    counts = frame.groupby("patient_id").size()
    multi = counts[counts > 1]
    mixed = frame[frame["patient_id"].isin(multi.index)].groupby("patient_id")["target"].nunique()
    assert values["ch07_sub_images"] == len(frame) == 1144
    assert values["ch07_sub_patients"] == len(counts) == 777
    assert values["ch07_sub_mel"] == int(y.sum()) == 584
    assert values["ch07_sub_benign"] == len(y) - int(y.sum()) == 560
    assert values["ch07_sub_multi"] == len(multi) == 254
    assert values["ch07_sub_multi_images"] == int(multi.sum()) == 621
    assert values["ch07_sub_mixed"] == int((mixed == 2).sum()) == 81

    col = {k: np.array([r[k] for r in table.values()]) for k in next(iter(table.values()))}
    assert np.allclose(col["diff"], col["auc_image"] - col["auc_patient"], atol=0.0015)
    assert abs(float(values["ch07_leak_auc_image"]) - col["auc_image"].mean()) <= 0.0011
    assert abs(float(values["ch07_leak_auc_patient"]) - col["auc_patient"].mean()) <= 0.0011
    assert abs(float(values["ch07_leak_gap"]) - col["diff"].mean()) <= 0.0011
    assert abs(float(values["ch07_leak_gap_sd"]) - col["diff"].std(ddof=1)) <= 0.0011
    assert float(values["ch07_leak_gap_min"]) == pytest.approx(col["diff"].min(), abs=0.0011)
    assert float(values["ch07_leak_gap_max"]) == pytest.approx(col["diff"].max(), abs=0.0011)
    if not (col["diff"] == 0).any():  # rounding to 0.000 would hide the sign
        assert values["ch07_leak_gap_wins"] == int((col["diff"] > 0).sum())
    assert values["ch07_n_leak_seeds"] == len(table)
    assert values["ch07_leaked_patient"] == 0
    assert values["ch07_leaked_min"] == col["leaked_image"].min()
    assert values["ch07_leaked_max"] == col["leaked_image"].max()
    share = 100 * col["leaked_image"].mean() / len(frame)
    assert values["ch07_leaked_share"] == f"{share:.0f} %"


def test_the_text_gives_the_licence_and_the_sampling(committed):
    cell = next(c for c in committed.cells
                if c.cell_type == "markdown" and "siim-isic-2020-subset" in c.source)
    text = " ".join(cell.source.split())
    assert "CC BY-NC 4.0" in text and "non-commercial" in text and "CC-0" in text
    assert "{cite}`rotemberg2021`" in text
    assert "half of it is melanoma" in text


@needs_subset
@pytest.mark.skipif(not CACHE.is_file(), reason="the chapter's feature cache is absent (run it)")
def test_one_seed_recomputed_from_the_cached_features(committed, stored, subset):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    assert _parameter(committed, "DEMO") is True and "128 if DEMO" in next(
        c for c in committed.cells if "parameters" in c.metadata.get("tags", [])).source
    y, groups, frame = subset
    with np.load(CACHE, allow_pickle=False) as cached:
        known = dict(zip(cached["image_id"].tolist(), cached["features"]))
    x = np.stack([known[i] for i in frame["image_id"]])
    _, table = stored
    seed, c = min(table), _parameter(committed, "LEAK_C")
    for scheme, key in (("images split", "auc_image"), ("patients whole", "auc_patient")):
        aucs = []
        for tr, va in _folds(scheme, y, groups, seed, _parameter(committed, "N_FOLDS")):
            head = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
            aucs.append(roc_auc_score(y[va], head.fit(x[tr], y[tr]).predict_proba(x[va])[:, 1]))
        assert np.mean(aucs) == pytest.approx(table[seed][key], abs=0.0006), scheme
