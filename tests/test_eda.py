"""Tests for helpers/eda.py: headline counts, rate tables, image sizes, the rate plot."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from helpers import datasets as ds  # noqa: E402
from helpers import eda  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
GROUND_TRUTH = REPO_ROOT / "data_samples" / "challenge-ground-truth"  # real, shipped
SAMPLES = REPO_ROOT / "data_samples"


def frame(rows):
    """A small tidy-like frame from (patient_id, target, sex) tuples."""
    out = pd.DataFrame(rows, columns=["patient_id", "target", "sex"])
    out["patient_id"] = out["patient_id"].astype("string")
    out["target"] = out["target"].astype("Int8")
    out["sex"] = out["sex"].astype("string")
    return out


TOY = frame([
    ("IP_1", 0, "male"), ("IP_1", 1, "male"), ("IP_1", 0, "male"),
    ("IP_2", 0, "female"), ("IP_2", 0, "female"),
    ("IP_3", 1, None),
    (None, 0, "female"),
])


def test_images_per_patient_counts_and_order():
    table = eda.images_per_patient(TOY)
    assert list(table.index) == ["IP_1", "IP_2", "IP_3"]  # most images first, rows without id out
    assert table["images"].tolist() == [3, 2, 1]
    assert table["melanoma"].tolist() == [1, 0, 1]


def test_summary_counts_on_toy_frame():
    counts = eda.summary_counts(TOY)
    assert list(counts) == list(eda.SUMMARY_KEYS)
    assert counts == {"images": 7, "melanoma": 2, "patients": 3, "patients with melanoma": 2,
                      "median images per patient": 2.0}


def test_summary_counts_without_patients_gives_nan_median():
    counts = eda.summary_counts(frame([(None, 1, "male"), (None, 0, "male")]))
    assert counts["patients"] == 0 and counts["melanoma"] == 1
    assert np.isnan(counts["median images per patient"])


def test_missing_column_raises_value_error_naming_it():
    with pytest.raises(ValueError, match="patient_id"):
        eda.summary_counts(pd.DataFrame({"target": [0, 1]}))
    with pytest.raises(ValueError, match="site"):
        eda.rate_table(TOY, "site")


def test_rate_table_counts_rates_and_missing_last():
    table = eda.rate_table(TOY, "sex")
    assert list(table.index) == ["female", "male", "missing"]
    assert table["images"].tolist() == [3, 3, 1]
    assert table["melanoma"].tolist() == [0, 1, 1]
    assert table["rate"].tolist() == pytest.approx([0, 1 / 3, 1])
    assert table["share"].sum() == pytest.approx(1)
    assert (table["rate_low"] <= table["rate"]).all() and (table["rate"] <= table["rate_high"]).all()
    # Wilson interval of 1 in 3 (textbook value: 0.061 to 0.792)
    assert table.loc["male", "rate_low"] == pytest.approx(0.0615, abs=1e-3)
    assert table.loc["male", "rate_high"] == pytest.approx(0.7923, abs=1e-3)


def test_rate_table_with_bands_keeps_empty_categories_in_order():
    ages = pd.Series([25.0, 35.0, 35.0, np.nan, 70.0, 72.0, 30.0])
    bands = pd.cut(ages, [0, 30, 60, 90], right=False, labels=["<30", "30-59", "60+"])
    table = eda.rate_table(TOY, bands)
    assert list(table.index) == ["<30", "30-59", "60+", "missing"]
    assert table["images"].tolist() == [1, 3, 2, 1]
    lone = eda.rate_table(TOY.iloc[:2], bands.iloc[:2])
    assert lone.loc["60+", "images"] == 0 and np.isnan(lone.loc["60+", "rate"])
    with pytest.raises(ValueError, match="aligned"):
        eda.rate_table(TOY, bands.reset_index(drop=True).iloc[::-1])


def test_plot_rate_draws_one_bar_and_point_per_row():
    table = eda.rate_table(TOY, "sex")
    fig, ax = plt.subplots()
    right = eda.plot_rate(table, ax, "by sex")
    assert len(ax.patches) == 3
    assert [t.get_text() for t in ax.get_xticklabels()] == ["female", "male", "missing"]
    points = right.lines[0].get_ydata()
    assert np.allclose(points, [0, 100 / 3, 100])
    plt.close(fig)


def test_image_sizes_reads_headers(tmp_path):
    Image.new("RGB", (64, 48)).save(tmp_path / "a.jpg")
    Image.new("RGB", (30, 20)).save(tmp_path / "b.png")
    paths = pd.Series([str(tmp_path / "a.jpg"), pd.NA, tmp_path / "b.png"], index=["a", "x", "b"])
    sizes = eda.image_sizes(paths)
    assert list(sizes.index) == ["a", "x", "b"]
    assert sizes.loc["a", ["width", "height"]].tolist() == [64, 48]
    assert sizes.loc["b", "format"] == "PNG"
    assert sizes.loc["x"].isna().all()


def test_image_sizes_refuses_non_images(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="bad.jpg"):
        eda.image_sizes([bad])
    with pytest.raises(ValueError, match="absent.jpg"):
        eda.image_sizes([tmp_path / "absent.jpg"])


def test_summary_counts_on_the_synthetic_samples():
    train = ds.load_dataset(SAMPLES / "siim-isic-2020")
    train = train[train["split"] == "train"]
    counts = eda.summary_counts(train)
    # data_samples/README.md: 300 training images of 40 patients, 32 of them with a melanoma
    assert (counts["images"], counts["patients"], counts["patients with melanoma"]) == (300, 40, 32)
    sizes = eda.image_sizes(train["path"].head(5))
    assert (sizes["width"] == 256).all() and (sizes["height"] == 256).all()


def test_summary_counts_reproduce_the_published_2020_counts():
    path = GROUND_TRUTH / "ISIC_2020_Training_GroundTruth.csv"
    counts = eda.summary_counts(ds.read_labels(path, tidy=True))
    assert counts == {"images": 33126, "melanoma": 584, "patients": 2056,
                      "patients with melanoma": 428, "median images per patient": 12.0}
