"""Chapter 6 (patient context) on the REAL SIIM-ISIC 2020 subset.

The committed chapter scores the 1,144 real 2020 images of ``data_samples/siim-isic-2020-subset``
with the book's model, and measures an ugly-duckling score on the patients with two or more
images there. These tests check the pieces its numbers rest on: the patient-grouped bootstrap
draws whole patients; the chapter's own cells, run on tiny frames, keep exactly the images of
patients with two or more images and rank them within the patient; the stored intervals contain
their estimates; the stored counts are those of the shipped data.
"""

from __future__ import annotations

import json
import re

import nbformat
import numpy as np
import pandas as pd
import pytest
from support import code_cell

from helpers import REPO_ROOT, context, prose
from helpers import metrics as M
from helpers.datasets import load_dataset

CHAPTER = REPO_ROOT / "chapters" / "06_patient_context.ipynb"
SUBSET = REPO_ROOT / "data_samples" / "siim-isic-2020-subset"


@pytest.fixture(scope="module")
def committed():
    return nbformat.read(CHAPTER, as_version=4)


@pytest.fixture(scope="module")
def values():
    return prose.stored_values(json.loads(CHAPTER.read_text(encoding="utf-8")))


def chapter_cell(nb, marker: str) -> str:
    """The source of the one code cell of the chapter that contains ``marker``."""
    return code_cell(nb, marker).source


def run_cell(source: str, namespace: dict) -> dict:
    namespace.setdefault(
        "glue",
        lambda key, value: namespace.setdefault("_glued", {}).update({key: value}),
    )
    exec(compile(source, "chapter06-cell", "exec"), namespace)
    return namespace


def interval(text: str) -> tuple[float, float]:
    """``'0.712-0.801'`` or ``'-0.010 to +0.030'`` as two floats."""
    m = re.fullmatch(r"([-+]?\d\.\d+)(?:-| to )([-+]?\d\.\d+)", str(text))
    assert m, text
    return float(m.group(1)), float(m.group(2))


def toy_frame() -> pd.DataFrame:
    """Five patients: A with 4 images, B with 1, C with 3, D with 1, E with 2."""
    pid = ["A", "B", "A", "C", "A", "D", "C", "E", "C", "A", "E"]
    target = [1, 0, 0, 1, 0, 1, 0, 0, 0, 0, 1]
    p = np.linspace(0.1, 0.9, len(pid))
    return pd.DataFrame(
        {
            "image_id": [f"I{i}" for i in range(len(pid))],
            "patient_id": pid,
            "target": target,
            "p": p,
            "logit": np.log(p / (1 - p)),
            "path": [f"I{i}.jpg" for i in range(len(pid))],
        }
    )


# -- the patient-grouped bootstrap -------------------------------------------------------------
def test_the_patient_bootstrap_draws_whole_patients():
    groups = np.array(["A", "B", "A", "C", "A", "C", "D"])
    sizes = pd.Series(groups).value_counts()
    for rows, drawn in M.patient_bootstrap_indices(groups, n=200, seed=0):
        assert len(drawn) == 4  # as many patients as there are
        picked = pd.Series(groups[rows]).value_counts()
        times = pd.Series(pd.unique(groups)[drawn]).value_counts()
        # each drawn patient comes with all of its images, once per draw
        assert picked.to_dict() == (times * sizes[times.index]).to_dict()


def test_resampling_patients_of_identical_copies_is_resampling_one_copy_each():
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(15), np.zeros(25)].astype(int)
    p = np.clip(0.3 * y + rng.normal(0.4, 0.2, len(y)), 0, 1)
    copies = 3  # every patient photographed three times, identically
    y3, p3 = np.repeat(y, copies), np.repeat(p, copies)
    g3 = np.repeat([f"P{i}" for i in range(len(y))], copies)
    by_patient = M.bootstrap_ci(y3, p3, M.roc_auc, groups=g3, n=300, seed=1)
    one_each = M.bootstrap_ci(y, p, M.roc_auc, n=300, seed=1)
    by_image = M.bootstrap_ci(y3, p3, M.roc_auc, n=300, seed=1)
    assert by_patient.estimate == pytest.approx(one_each.estimate)
    assert (by_patient.low, by_patient.high) == pytest.approx(
        (one_each.low, one_each.high)
    )
    # treating the copies as independent claims a narrower interval than the data hold
    assert by_image.high - by_image.low < 0.8 * (by_patient.high - by_patient.low)


# -- the chapter's own cells on tiny frames ----------------------------------------------------
def test_the_ugly_duckling_rows_are_the_images_of_patients_with_two_or_more(committed):
    real = toy_frame()
    emb = np.random.default_rng(0).normal(size=(len(real), 6)).astype(np.float32)
    ns = run_cell(
        chapter_cell(committed, "has_other = n_pat >= 2"),
        {"real": real, "emb": emb, "np": np, "pd": pd},
    )
    ns = run_cell(
        chapter_cell(committed, "multi = real[n_pat >= 2]"), {**ns, "context": context}
    )
    multi = ns["multi"]
    counts = real["patient_id"].value_counts()
    expected = real[real["patient_id"].map(counts) >= 2]
    assert multi["image_id"].tolist() == expected["image_id"].tolist()
    assert set(multi["patient_id"]) == {"A", "C", "E"}
    assert multi["ud"].notna().all()
    for _, part in multi.groupby("patient_id"):
        assert part.loc[part["ud"].idxmax(), "ud_rank"] == 1  # rank 1: the most unusual
        assert (
            sorted(part["ud_rank"]) == list(range(1, len(part) + 1))
            or part["ud"].duplicated().any()
        )


def test_the_nearest_neighbour_rate_and_its_chance(committed):
    real = toy_frame()
    # each patient's images point the same way, patients in different directions
    directions = {p: np.eye(5)[i] for i, p in enumerate("ABCDE")}
    emb = np.stack([directions[p] + 0.01 * i for i, p in enumerate(real["patient_id"])])
    ns = run_cell(
        chapter_cell(committed, "has_other = n_pat >= 2"),
        {"real": real, "emb": emb, "np": np, "pd": pd},
    )
    assert ns["same_patient"] == 1.0
    sizes = real["patient_id"].map(real["patient_id"].value_counts())
    multi_sizes = sizes[sizes >= 2]
    assert ns["chance"] == pytest.approx(((multi_sizes - 1) / (len(real) - 1)).mean())


# -- the committed outputs -----------------------------------------------------------------------
def test_the_stored_intervals_contain_their_estimates(values):
    pairs = [
        ("ch06_model_auc", "ch06_model_ci_image"),
        ("ch06_model_auc", "ch06_model_ci_patient"),
        ("ch06_ud_gain", "ch06_ud_gain_ci"),
    ]
    pairs += [
        (f"ch06_ud_{k}_auc", f"ch06_ud_{k}_ci")
        for k in ("model", "ud", "rank", "z", "combined")
    ]
    for est, ci in pairs:
        low, high = interval(values[ci])
        assert low <= float(values[est]) <= high, (est, values[est], values[ci])
    image, patient = (
        interval(values["ch06_model_ci_image"]),
        interval(values["ch06_model_ci_patient"]),
    )
    assert patient[1] - patient[0] > image[1] - image[0]


def test_the_stored_counts_are_those_of_the_shipped_subset(values):
    real = load_dataset(SUBSET)
    per_patient = real.groupby("patient_id").size()
    multi = real[real["patient_id"].map(per_patient) >= 2]
    assert (len(real), real["patient_id"].nunique()) == (1144, 777)
    assert values["ch06_sub_n"] == len(real) and values["ch06_sub_patients"] == len(
        per_patient
    )
    assert values["ch06_sub_mel"] == int(real["target"].sum()) == 584
    assert values["ch06_ud_n"] == len(multi) == values["ch06_sub_multi_images"] == 621
    assert values["ch06_ud_patients"] == multi["patient_id"].nunique() == 254
    both = real.groupby("patient_id")["target"].agg(["min", "max"])
    assert values["ch06_sub_both"] == int(
        ((both["min"] == 0) & (both["max"] == 1)).sum()
    )
    assert values["ch06_ud_n_inside"] == values["ch06_sub_both"]
