"""Tests of helpers/features.py: segmentation, ABCD features, frames, drawing."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402
from skimage import draw  # noqa: E402

import helpers  # noqa: E402
from helpers import features as F  # noqa: E402

SKIN = (205, 165, 145)
BROWN = (120, 70, 45)
ISIC2017_DIR = helpers.REPO_ROOT / "data_samples" / "isic-2017"


def _canvas(size: int = 160, vignette: bool = False, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.empty((size, size, 3), float)
    img[:] = SKIN
    img += rng.normal(0, 3, img.shape)
    if vignette:  # dark corners outside a round field of view, as a dermoscope shows them
        yy, xx = np.mgrid[0:size, 0:size]
        img[np.hypot(yy - size / 2, xx - size / 2) > 0.55 * size] = 8
    return img


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(img, 0, 255).round().astype(np.uint8)


def _disc_mask(size: int = 160, r: float = 40, centre=(80, 80)) -> np.ndarray:
    m = np.zeros((size, size), bool)
    rr, cc = draw.disk(centre, r, shape=m.shape)
    m[rr, cc] = True
    return m


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


# --- segmentation -------------------------------------------------------------------------


@pytest.mark.parametrize("vignette", [False, True])
def test_segment_recovers_a_drawn_disc(vignette):
    truth = _disc_mask()
    img = _canvas(vignette=vignette)
    img[truth] = BROWN
    mask = F.segment_lesion(_to_uint8(img))
    assert mask.dtype == bool and mask.shape == truth.shape
    assert _iou(mask, truth) > 0.9


def test_segment_large_image_returns_full_size_mask_despite_a_hair():
    truth = _disc_mask(600, 150, (300, 300))
    img = _canvas(600)
    img[truth] = BROWN
    rr, cc = draw.line(0, 20, 599, 560)  # a long hair crossing the image
    for d in range(-1, 2):
        img[rr, np.clip(cc + d, 0, 599)] = (20, 15, 12)
    mask = F.segment_lesion(_to_uint8(img))
    assert mask.shape == (600, 600)
    assert _iou(mask, truth) > 0.9


def test_segment_keeps_the_central_lesion_not_a_corner_blob():
    truth = _disc_mask(r=30)
    img = _canvas()
    img[truth] = BROWN
    img[_disc_mask(r=18, centre=(12, 12))] = BROWN  # a dark blob in a corner
    mask = F.segment_lesion(_to_uint8(img))
    assert _iou(mask, truth) > 0.85
    assert not mask[12, 12]


def test_remove_hair_paints_over_a_thin_dark_line():
    img = _canvas()
    rr, cc = draw.line(10, 5, 150, 155)
    img[rr, cc] = (15, 10, 10)
    out = F.remove_hair(_to_uint8(img))
    assert out.dtype == np.float64 and out.shape == img.shape
    assert np.abs(out[rr, cc] * 255 - np.array(SKIN)).mean() < 20  # was ~170 before
    assert np.abs(F.remove_hair(_to_uint8(_canvas())) - _canvas() / 255).max() < 0.05


@pytest.mark.parametrize("bad", [np.zeros((32, 32)), np.zeros((32, 32, 4), np.uint8),
                                 np.zeros((32, 32, 3), np.int64), np.full((32, 32, 3), 2.0)])
def test_non_rgb_input_raises(bad):
    with pytest.raises(ValueError, match="image"):
        F.segment_lesion(bad)


def test_featureless_image_raises_value_error():
    with pytest.raises(ValueError, match="no lesion|no contrast|empty"):
        F.segment_lesion(np.full((64, 64, 3), 180, np.uint8))


def test_empty_mask_raises_value_error():
    img = _to_uint8(_canvas())
    with pytest.raises(ValueError, match="empty segmentation"):
        F.abcd_features(img, np.zeros(img.shape[:2], bool))
    with pytest.raises(ValueError, match="does not match"):
        F.abcd_features(img, np.ones((10, 10), bool))


# --- A, B, C, D -----------------------------------------------------------------------------


def test_asymmetry_is_near_zero_for_disc_and_rotated_ellipse_and_large_for_a_blob():
    disc = _disc_mask()
    ellipse = np.zeros((160, 160), bool)
    rr, cc = draw.ellipse(80, 80, 25, 60, shape=ellipse.shape, rotation=0.6)
    ellipse[rr, cc] = True
    blob = _disc_mask(r=35, centre=(80, 70)) | _disc_mask(r=18, centre=(55, 115))
    blob |= _disc_mask(r=12, centre=(120, 95))
    assert max(F.asymmetry(disc)) < 0.03
    assert max(F.asymmetry(ellipse)) < 0.03
    assert np.mean(F.asymmetry(blob)) > 0.1
    assert np.mean(F.asymmetry(blob)) > 4 * np.mean(F.asymmetry(ellipse))


def test_principal_axis_follows_the_ellipse():
    ellipse = np.zeros((160, 160), bool)
    rr, cc = draw.ellipse(80, 80, 20, 60, shape=ellipse.shape)  # long along x
    ellipse[rr, cc] = True
    feats = F.abcd_features(_to_uint8(_canvas()), ellipse)
    assert abs(np.sin(feats["orientation"])) < 0.05
    assert feats["major_len"] > 2.5 * feats["minor_len"]


def test_compactness_is_one_for_a_disc_and_larger_for_a_star():
    disc = _disc_mask(r=50)
    angles = np.linspace(0, 2 * np.pi, 17)[:-1]
    radii = np.where(np.arange(16) % 2 == 0, 70, 30)
    star = np.zeros((160, 160), bool)
    rr, cc = draw.polygon(80 + radii * np.sin(angles), 80 + radii * np.cos(angles), star.shape)
    star[rr, cc] = True
    assert 0.95 < F.compactness(disc) < 1.08
    assert F.compactness(star) > 1.8


def test_colour_count_on_a_lesion_painted_with_the_reference_colours():
    truth = _disc_mask(r=60)
    img = _canvas(vignette=False)
    yy, xx = np.mgrid[0:160, 0:160]
    sector = ((np.arctan2(yy - 80, xx - 80) + np.pi) / (2 * np.pi) * 6).astype(int) % 6
    for k, name in enumerate(F.COLOUR_NAMES):
        img[truth & (sector == k)] = F.REFERENCE_COLOURS[name]
    six = F.abcd_features(_to_uint8(img), truth)
    assert six["colour_count"] == 6
    assert set(six["colours"].split(";")) == set(F.COLOUR_NAMES)
    assert all(abs(six[f"frac_{n.replace(' ', '_').replace('-', '_')}"] - 1 / 6) < 0.03
               for n in F.COLOUR_NAMES)

    img2 = _canvas()
    img2[truth] = F.REFERENCE_COLOURS["light brown"]
    img2[truth & (xx > 80)] = F.REFERENCE_COLOURS["blue-grey"]
    two = F.abcd_features(_to_uint8(img2), truth)
    assert two["colours"] == "light brown;blue-grey" and two["colour_count"] == 2
    assert two["colour_variegation"] > F.abcd_features(_to_uint8(np.where(truth[..., None], BROWN, img2)),
                                                       truth)["colour_variegation"] + 0.05


def test_white_counts_only_when_lighter_than_the_skin():
    truth = _disc_mask(r=50)
    img = np.empty((160, 160, 3))
    img[:] = (240, 238, 240)  # very pale skin, lighter than the "white" anchor
    img[truth] = F.REFERENCE_COLOURS["dark brown"]
    img[_disc_mask(r=20)] = F.REFERENCE_COLOURS["white"]
    feats = F.abcd_features(_to_uint8(img), truth)
    assert "white" not in feats["colours"]


def test_diameter_is_the_max_feret_diameter_in_px_and_mm():
    feats = F.abcd_features(_to_uint8(_canvas()), _disc_mask(r=40), px_per_mm=20.0)
    assert abs(feats["diameter_px"] - 80) < 3
    assert abs(feats["diameter_mm"] - 4.0) < 0.15
    assert np.isnan(F.abcd_features(_to_uint8(_canvas()), _disc_mask(r=40))["diameter_mm"])


def test_border_abrupt_counts_sharp_but_not_faded_edges():
    truth = _disc_mask(r=45)
    sharp = _canvas()
    sharp[truth] = BROWN
    yy, xx = np.mgrid[0:160, 0:160]
    rho = np.hypot(yy - 80, xx - 80) / 45
    w = np.clip(1.6 - 1.2 * rho, 0, 1)[..., None]  # pigment fading out over the lesion's rim
    faded = _canvas() * (1 - w) + np.array(BROWN) * w
    assert F.abcd_features(_to_uint8(sharp), truth)["border_abrupt"] == 8
    assert F.abcd_features(_to_uint8(faded), truth)["border_abrupt"] <= 2


def test_contrast_is_large_for_a_dark_lesion_and_near_zero_for_a_faint_one():
    truth = _disc_mask()
    dark, faint = _canvas(), _canvas()
    dark[truth] = BROWN
    faint[truth] = np.array(SKIN) - 4  # almost the colour of the skin
    c_dark = F.abcd_features(_to_uint8(dark), truth)["contrast"]
    c_faint = F.abcd_features(_to_uint8(faint), truth)["contrast"]
    assert c_dark > 0.2
    assert abs(c_faint) < 0.03
    full = np.ones(truth.shape, bool)  # no skin left around the mask: no ring, no contrast
    assert np.isnan(F.abcd_features(_to_uint8(dark), full)["contrast"])


def test_tds_like_uses_the_published_weights():
    feats = {"asymmetry_axes": 2, "border_abrupt": 5, "colour_count": 3}
    assert F.tds_like(feats) == pytest.approx(1.3 * 2 + 0.1 * 5 + 0.5 * 3)
    assert F.tds_like(feats, d_score=4) == pytest.approx(4.6 + 2.0)


# --- frames and drawing -----------------------------------------------------------------------


def test_features_frame_from_arrays_and_paths(tmp_path):
    img = _canvas()
    img[_disc_mask()] = BROWN
    path = tmp_path / "ISIC_0000001.png"
    Image.fromarray(_to_uint8(img)).save(path)
    flat = np.full((64, 64, 3), 180, np.uint8)
    frame = F.features_frame([_to_uint8(img), path, flat], errors="nan")
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.index) == ["0", "ISIC_0000001.png", "2"]
    assert frame.loc["0", "asymmetry"] == pytest.approx(frame.loc["ISIC_0000001.png", "asymmetry"])
    assert frame.loc["2", "error"] != "" and np.isnan(frame.loc["2", "asymmetry"])
    Image.fromarray(flat).save(tmp_path / "ISIC_0000002.png")
    with pytest.raises(ValueError, match="ISIC_0000002.png"):
        F.features_frame([tmp_path / "ISIC_0000002.png"])


def test_features_frame_downscales_but_reports_original_pixels():
    big = _canvas(600)
    truth = _disc_mask(600, 200, (300, 300))
    big[truth] = BROWN
    frame = F.features_frame([_to_uint8(big)], [truth], max_side=200)
    assert abs(frame["diameter_px"].iloc[0] - 400) < 8


def test_draw_abcd_draws_contour_axes_and_colour_labels():
    img = _canvas()
    mask = _disc_mask(r=50)
    img[mask] = F.REFERENCE_COLOURS["dark brown"]
    img[mask & (np.mgrid[0:160, 0:160][1] > 80)] = F.REFERENCE_COLOURS["black"]
    fig, ax = plt.subplots()
    feats = F.abcd_features(_to_uint8(img), mask)
    F.draw_abcd(ax, _to_uint8(img), mask, feats)
    assert len(ax.lines) == 2  # major and minor axis
    assert sorted(t.get_text() for t in ax.texts) == ["black", "dark brown"]
    assert "C=2" in ax.get_title()
    plt.close(fig)


# --- synthetic lesions (helpers.synthetic) ---------------------------------------------------


@pytest.fixture(scope="module")
def synthetic_features():
    synthetic = pytest.importorskip("helpers.synthetic")
    rows, ious = [], []
    for label in ("MEL", "NV"):
        for seed in range(30):
            img, truth = synthetic.make_lesion(label, seed, size=192)
            mask = F.segment_lesion(img)
            if seed < 10:
                ious.append(_iou(mask, truth))
            rows.append({"label": label, **F.abcd_features(img, mask)})
    return pd.DataFrame(rows), ious


def test_segmentation_recovers_make_lesion_masks(synthetic_features):
    _, ious = synthetic_features
    assert len(ious) == 20
    assert np.mean(ious) > 0.7


def test_melanoma_like_lesions_score_higher_than_nevus_like(synthetic_features):
    frame, _ = synthetic_features
    means = frame.groupby("label")[["asymmetry", "compactness", "colour_count",
                                     "colour_variegation"]].mean()
    for col in means:
        assert means.loc["MEL", col] > means.loc["NV", col], col
    tds = F.tds_like(frame)
    assert tds[frame.label == "MEL"].mean() > tds[frame.label == "NV"].mean() + 0.5


# --- real images (data_samples/isic-2017: ISIC 2017, CC-0, shipped with the book) -----------


@pytest.fixture(scope="module")
def real_2017_features():
    from helpers.datasets import load_dataset

    frame = load_dataset(ISIC2017_DIR)
    train = frame[frame["split"] == "train"]
    sample = pd.concat([train[train["label"] == label].sample(50, random_state=0)
                        for label in ("MEL", "NV")])  # 100 of 2,000 images keeps the test fast
    feats = F.features_frame(list(sample["path"]), ids=list(sample["image_id"]), max_side=256,
                             errors="nan")
    return feats, sample["target"].to_numpy() == 1


def test_real_images_segment_into_plausible_masks(real_2017_features):
    feats, _ = real_2017_features
    assert (feats["error"] == "").all()
    assert 0.05 < feats["area_fraction"].median() < 0.5  # a lesion, not a speck nor the whole field
    assert (feats["contrast"].dropna() > 0).mean() > 0.9  # masks are darker than the skin around


def test_real_melanomas_are_more_irregular_than_nevi(real_2017_features):
    from sklearn.metrics import roc_auc_score

    feats, is_mel = real_2017_features
    assert feats.loc[is_mel, "compactness"].mean() > feats.loc[~is_mel, "compactness"].mean()
    assert roc_auc_score(is_mel, feats["compactness"]) > 0.55
    # solidity points the other way: ragged melanomas fill less of their convex hull
    assert roc_auc_score(is_mel, feats["solidity"]) < 0.45


def test_features_frame_in_two_processes_equals_one_process(tmp_path):
    paths = []
    for k, r in enumerate((25, 35, 45)):
        img = _canvas(seed=k)
        img[_disc_mask(r=r)] = BROWN
        paths.append(tmp_path / f"ISIC_000000{k}.png")
        Image.fromarray(_to_uint8(img)).save(paths[-1])
    flat = np.full((64, 64, 3), 180, np.uint8)
    one = F.features_frame(paths + [flat], errors="nan")
    two = F.features_frame(paths + [flat], errors="nan", n_jobs=2)
    pd.testing.assert_frame_equal(one, two)
    assert one["area_px"].iloc[:3].is_monotonic_increasing  # rows stay in input order
    with pytest.raises(ValueError, match="n_jobs"):
        F.features_frame(paths, n_jobs=0)
