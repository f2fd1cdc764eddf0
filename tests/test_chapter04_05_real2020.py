"""Chapters 4 and 5 on the REAL SIIM-ISIC 2020 images (``data_samples/siim-isic-2020-subset``).

Each test recomputes, from the shipped files, a fact that the committed chapters state (the
values their cells glued, which tests/test_prose.py ties to the text), so a wrong statement
about the JPEG files, the sample's patients or its image statistics fails here. The last
tests check that the text says what the folder's licence requires.
"""
from __future__ import annotations

import json
import warnings
from io import BytesIO

import numpy as np
import pandas as pd
import pytest
from PIL import Image, JpegImagePlugin
from sklearn.metrics import roc_auc_score

from helpers import REPO_ROOT, prose
from helpers import datasets as D
from helpers import io as hio

SUBSET = REPO_ROOT / "data_samples" / "siim-isic-2020-subset"
FULL_CSV = REPO_ROOT / "data_samples" / "challenge-ground-truth" / "ISIC_2020_Training_GroundTruth.csv"
CH04 = REPO_ROOT / "chapters" / "04_image_formats.ipynb"
CH05 = REPO_ROOT / "chapters" / "05_exploring_metadata.ipynb"
SAMPLING = {0: "4:4:4 (none)", 1: "4:2:2", 2: "4:2:0"}


def _nb(path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _glued(path) -> dict:
    return prose.stored_values(_nb(path))


def _libjpeg_quality() -> dict[str, int]:
    """Quantisation tables -> the libjpeg quality that writes them."""
    found = {}
    for q in range(1, 101):
        buf = BytesIO()
        Image.new("RGB", (8, 8)).save(buf, format="JPEG", quality=q)
        found[str(Image.open(buf).quantization)] = q
    return found


@pytest.fixture(scope="module")
def files() -> pd.DataFrame:
    """One row per real 2020 JPEG: its header facts, file size and label."""
    quality = _libjpeg_quality()
    labels = pd.read_csv(SUBSET / "train.csv").set_index("image_name")
    rows = []
    for path in sorted((SUBSET / "jpeg" / "train").glob("*.jpg")):
        with Image.open(path) as im:
            rows.append({
                "image": path.stem, "path": path, "size": f"{im.size[0]}x{im.size[1]}",
                "mode": im.mode, "subsampling": SAMPLING[JpegImagePlugin.get_sampling(im)],
                "quality": quality.get(str(im.quantization), "custom"),
                "progressive": bool(im.info.get("progressive")), "exif": len(im.getexif()) > 0,
                "kB": path.stat().st_size / 1000,
            })
    return pd.DataFrame(rows).join(labels, on="image")


# -- chapter 4 ----------------------------------------------------------------------------

def test_every_real_2020_file_has_the_size_mode_quality_and_subsampling_chapter_4_states(files):
    glued = _glued(CH04)
    assert len(files) == 1144 and glued["ch04_r20_n"] == f"{len(files):,}"
    for column, key in [("size", "ch04_r20_size"), ("mode", "ch04_r20_mode"),
                        ("subsampling", "ch04_r20_subsampling"), ("quality", "ch04_r20_quality")]:
        assert files[column].nunique() == 1, files[column].value_counts()
        assert str(files[column].iloc[0]) == glued[key], column
    assert glued["ch04_r20_size"] == "256x256" and glued["ch04_r20_quality"] == "90"
    assert not files["progressive"].any() and not files["exif"].any()


def test_chapter_4_states_the_real_file_sizes_and_their_auc(files):
    glued = _glued(CH04)
    kb = files["kB"]
    assert glued["ch04_r20_kb_min"] == f"{kb.min():.1f}"
    assert glued["ch04_r20_kb_median"] == f"{kb.median():.1f}"
    assert glued["ch04_r20_kb_max"] == f"{kb.max():.1f}"
    mel = files["target"].eq(1)
    assert glued["ch04_r20_kb_mel"] == f"{kb[mel].median():.1f}"
    assert glued["ch04_r20_kb_benign"] == f"{kb[~mel].median():.1f}"
    assert glued["ch04_r20_kb_auc"] == f"{roc_auc_score(mel, kb):.2f}"
    low, high = map(float, glued["ch04_r20_kb_ci"].split(" to "))
    assert 0.5 < low < roc_auc_score(mel, kb) < high  # the text: better than chance


def test_pillow_and_torchvision_decode_the_real_files_to_the_same_pixels(files):
    torch = pytest.importorskip("torch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from torchvision.io import decode_jpeg
        for path in files["path"].iloc[::23]:
            blob = path.read_bytes()
            ours = decode_jpeg(torch.frombuffer(bytearray(blob), dtype=torch.uint8))
            with Image.open(BytesIO(blob)) as im:
                pil = np.asarray(im.convert("RGB"))
            assert np.array_equal(ours.permute(1, 2, 0).numpy(), pil), path.name
    assert _glued(CH04)["ch04_dec_diff"] == 0


# -- chapter 5 ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def subset() -> pd.DataFrame:
    return D.load_dataset(SUBSET)


@pytest.fixture(scope="module")
def full() -> pd.DataFrame:
    return D.read_labels(FULL_CSV, tidy=True)


def test_chapter_5_states_the_samples_patients_against_the_full_set(subset, full):
    glued = _glued(CH05)
    per = subset.groupby("patient_id")["target"].agg(images="size", melanoma="sum")
    per["full"] = full.groupby("patient_id").size().reindex(per.index)
    several = per[per["images"] > 1]
    mixed = per[(per["melanoma"] > 0) & (per["melanoma"] < per["images"])]
    expected = {
        "ch05_sub_n": len(subset), "ch05_sub_patients": len(per),
        "ch05_sub_mel": int(subset["target"].sum()),
        "ch05_sub_mel_pct": f"{subset['target'].mean():.2%}",
        "ch05_sub_several": len(several), "ch05_sub_several_images": int(several["images"].sum()),
        "ch05_sub_mixed": len(mixed), "ch05_sub_median_here": f"{per['images'].median():g}",
        "ch05_sub_median_full": f"{per['full'].median():g}",
        "ch05_sub_share": f"{len(subset) / per['full'].sum():.1%}",
    }
    assert {k: glued[k] for k in expected} == expected
    # the folder's documented facts (data_samples/README.md)
    assert (len(subset), len(per), len(several), int(several["images"].sum()), len(mixed)) == (
        1144, 777, 254, 621, 81)
    assert int(subset["target"].sum()) == int(full["target"].sum()) == 584


def test_chapter_5_shows_a_patient_with_both_kinds_of_lesion(subset, full):
    glued = _glued(CH05)
    per = subset.groupby("patient_id")["target"].agg(images="size", melanoma="sum")
    per["benign"] = per["images"] - per["melanoma"]
    mixed = per[(per["melanoma"] > 0) & (per["benign"] > 0)]
    top = mixed.sort_values(["benign", "images"], ascending=False, kind="stable").iloc[0]
    in_full = full[full["patient_id"] == top.name]
    assert (glued["ch05_grid_here"], glued["ch05_grid_mel"], glued["ch05_grid_full"]) == (
        top["images"], top["melanoma"], len(in_full))
    assert top["melanoma"] > 0 and top["benign"] > 0


def test_chapter_5_states_the_brightness_of_each_class_and_the_weighted_mean(subset, full):
    glued = _glued(CH05)
    bright = np.array([np.asarray(Image.fromarray(hio.read_image(p)).convert("L"), float).mean()
                       for p in subset["path"]])
    mel = subset["target"].eq(1).to_numpy()
    weight = (len(full) - int(full["target"].sum())) / (~mel).sum()
    assert glued["ch05_img_weight"] == f"{weight:.1f}"
    assert glued["ch05_img_bright_mel"] == f"{bright[mel].mean():.0f}"
    assert glued["ch05_img_bright_ben"] == f"{bright[~mel].mean():.0f}"
    assert glued["ch05_img_bright_all"] == f"{bright.mean():.0f}"
    weighted = np.average(bright, weights=np.where(mel, 1.0, weight))
    assert glued["ch05_img_bright_w"] == f"{weighted:.0f}"
    assert glued["ch05_img_auc"] == f"{roc_auc_score(mel, -bright):.2f}"
    # weighting gives back the full set's melanoma share exactly
    assert np.isclose(mel.sum() / (mel.sum() + weight * (~mel).sum()),
                      full["target"].mean())


# -- what the text must say ---------------------------------------------------------------

@pytest.mark.parametrize("path, section", [
    (CH04, "What to see, in the **real** SIIM-ISIC 2020 copies"),
    (CH05, "## 5.9 Real images of real patients"),
], ids=["04", "05"])
def test_the_text_gives_the_licence_where_it_uses_the_real_2020_images(path, section):
    cells = ["".join(c["source"]) for c in _nb(path)["cells"] if c["cell_type"] == "markdown"]
    used = [text for text in cells if text.startswith(section)]
    assert len(used) == 1, section
    for text in (cells[0], used[0]):  # the chapter's data statement and the section
        assert "CC BY-NC 4.0" in text and "non-commercial" in text, text[:80]
        assert "{cite}`rotemberg2021`" in text, text[:80]


def test_chapter_4_says_why_dicom_and_tfrecord_stay_synthetic():
    text = " ".join("".join(c["source"]) for c in _nb(CH04)["cells"] if c["cell_type"] == "markdown")
    text = " ".join(text.lower().split())
    for said in ["no openly licensed copy of the real 2020 dicom or tfrecord files exists",
                 "no openly licensed copy of the real dicom files exists",
                 "no openly licensed copy of the real shards exists",
                 "aspect ratio was not kept"]:
        assert said in text, said
