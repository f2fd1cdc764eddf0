"""Chapter 2, section 2.10: the automatic border against the ISIC 2017 expert masks.

Checks the chapter's own Jaccard, Dice and crop code against scikit-learn and the real
masks, and its stored outputs against each other: the stated scores lie in [0, 1] and
inside their intervals and cover all 2,000 training images, the expert-vs-automatic table
covers the same 600 images as section 2.5 and repeats its AUCs in the automatic column,
and the four worst images it names share no pixel with the expert's lesion when segmented
afresh.
"""
from __future__ import annotations

import ast
import json
import re

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import f1_score, jaccard_score
from support import code_cell

from helpers import REPO_ROOT, features
from helpers.datasets import load_dataset, read_masks
from helpers.io import read_image
from helpers.prose import stored_values

CHAPTER = REPO_ROOT / "chapters" / "02_dermoscopy.ipynb"
ISIC2017 = REPO_ROOT / "data_samples" / "isic-2017"
MASKS = ISIC2017 / "ISIC-2017_Training_Part1_GroundTruth"


@pytest.fixture(scope="module")
def nb() -> dict:
    return json.loads(CHAPTER.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def values(nb) -> dict:
    return stored_values(nb)


@pytest.fixture(scope="module")
def chapter(nb) -> dict:
    """The functions the chapter defines in section 2.10 (jaccard, dice, lesion_crop)."""
    namespace = {"np": np}
    wanted = {"jaccard", "dice", "lesion_crop"}
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        tree = ast.parse("".join(cell["source"]))
        defs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in wanted]
        if defs:
            exec(compile(ast.Module(body=defs, type_ignores=[]), "chapter02", "exec"), namespace)
    assert wanted <= set(namespace), f"the chapter no longer defines {wanted - set(namespace)}"
    return namespace


def _output_text(nb: dict, marker: str) -> str:
    """The text/plain output of the code cell whose source contains ``marker``."""
    for out in code_cell(nb, marker)["outputs"]:
        if "text/plain" in out.get("data", {}):
            return "".join(out["data"]["text/plain"])
    raise AssertionError(f"no table stored under {marker!r}")


def test_jaccard_and_dice_agree_with_scikit_learn(chapter):
    rng = np.random.default_rng(0)
    for share in (0.05, 0.3, 0.7):
        a, b = rng.random((40, 50)) < share, rng.random((40, 50)) < 0.4
        j, d = chapter["jaccard"](a, b), chapter["dice"](a, b)
        assert j == pytest.approx(jaccard_score(b.ravel(), a.ravel()))
        assert d == pytest.approx(f1_score(b.ravel(), a.ravel()))
        assert d == pytest.approx(2 * j / (1 + j))
    square = np.zeros((10, 10), bool)
    square[:5] = True
    assert chapter["jaccard"](square, ~square) == 0.0 and chapter["jaccard"](square, square) == 1.0
    half = np.zeros((10, 10), bool)
    half[:5, :5] = True
    assert chapter["jaccard"](half, square) == pytest.approx(0.5)
    assert chapter["dice"](half, square) == pytest.approx(2 / 3)


def test_lesion_crop_holds_the_whole_lesion(chapter):
    masks = read_masks(MASKS).head(25)
    for path in masks["mask"]:
        mask = np.asarray(Image.open(path)) > 127
        crop, (top, left, bottom, right) = chapter["lesion_crop"](mask.astype(np.uint8), mask)
        assert crop.shape == (bottom - top, right - left)
        assert crop.sum() == mask.sum(), path.name  # nothing of the lesion is cut off
        assert 0 <= top < bottom <= mask.shape[0] and 0 <= left < right <= mask.shape[1]


def _pair(text: str) -> tuple[float, float]:
    low, high = (float(x) for x in re.findall(r"[-+]?\d+\.\d+", text))
    return low, high


def test_stated_overlap_scores_are_consistent(values):
    for name in ("jaccard", "dice"):
        mean = float(values[f"ch02_{name}_mean"])
        low, high = _pair(values[f"ch02_{name}_ci"])
        assert 0 <= low <= mean <= high <= 1, name
        assert 0 <= float(values[f"ch02_{name}_median"]) <= 1
    assert float(values["ch02_dice_mean"]) >= float(values["ch02_jaccard_mean"])
    share = float(values["ch02_fail_pct"].rstrip("%")) / 100
    assert 0 < share < 1
    n = values["ch02_n_scored"]
    # all 2,000 training images: the 600 of section 2.5 plus the others segmented in 2.10
    assert n == values["ch02_n_train"] == 2000
    assert n == values["ch02_n_measured"] + values["ch02_n_rest"]
    assert 0 <= values["ch02_n_zero"] <= share * n
    for label in ("MEL", "NV", "BKL"):
        assert 0 <= float(values[f"ch02_jaccard_{label}"]) <= 1


def test_border_table_covers_the_images_of_section_2_5(nb, values):
    border = {}
    for line in _output_text(nb, "border_table.round(2)").splitlines()[1:]:
        m = re.match(r"^(\w+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([-\d.]+)\s+(\S+) to (\S+)$", line)
        if m:
            border[m[1]] = m.groups()[1:]
    section_25 = {}
    for line in _output_text(nb, "table.round(2).rename(").splitlines()[1:]:
        tokens = line.split()
        section_25[tokens[0]] = float(tokens[4])  # AUC vs rest
    assert set(border) == set(section_25), (set(border), set(section_25))
    n = values["ch02_n_both"]
    assert n == values["ch02_n_measured"]
    for col, (images, auto_auc, expert_auc, gain, low, high) in border.items():
        assert int(images) in (n, n - 1), col  # contrast may lack one image, as in 2.5
        assert float(auto_auc) == pytest.approx(section_25[col], abs=0.011), col
        assert 0 <= float(expert_auc) <= 1
        assert float(gain) == pytest.approx(float(expert_auc) - float(auto_auc), abs=0.011)
        assert float(low) <= float(gain) + 0.005 and float(gain) <= float(high) + 0.005, col


def test_the_worst_images_named_share_no_pixel_with_the_expert(chapter):
    """Segmented afresh, the four worst images of the figure have a Jaccard index of 0,
    and the chapter's jaccard agrees with scikit-learn on these real masks."""
    paths = load_dataset(ISIC2017).set_index("image_id")["path"]
    masks = read_masks(MASKS).set_index("image_id")["mask"]
    for image_id in ("ISIC_0002459", "ISIC_0004168", "ISIC_0004309", "ISIC_0005555",
                     "ISIC_0000043"):
        auto = features.segment_lesion(read_image(paths[image_id]))
        expert = np.asarray(Image.open(masks[image_id])) > 127
        j = chapter["jaccard"](auto, expert)
        assert j == pytest.approx(jaccard_score(expert.ravel(), auto.ravel()))
        if image_id == "ISIC_0000043":  # the melanoma of section 2.3, segmented well
            assert j > 0.65
        else:
            assert j == 0.0, image_id
