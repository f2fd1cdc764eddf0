"""Tests of helpers.explain: attribution maps on models whose evidence we know, ITA, model cards."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import ndimage as ndi
from skimage import color, draw
from torch import nn

from helpers import explain
from helpers.models import build_model
from helpers.synthetic import make_lesion


class RedPatchNet(nn.Module):
    """A CNN whose logit is the mean red intensity seen by a stride-4 conv: evidence = red pixels.

    ``body`` (conv -> ReLU) gives an 8x8 map for a 32x32 image; the logit is the
    average of its first channel, so every red pixel adds evidence and nothing
    else does.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 4, stride=4, bias=False)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[0, 0] = 1.0 / 16      # channel 0: mean red in each 4x4 cell
            self.conv.weight[1, 2] = 1.0 / 16      # channel 1: blue, unused by the head
        self.act = nn.ReLU()
        self.head = nn.Linear(2, 1, bias=False)
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor([[1.0, 0.0]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.conv(x)).mean((2, 3)))


def red_patch_images(n: int = 2, size: int = 32) -> tuple[torch.Tensor, np.ndarray]:
    """Grey images with a red square at a different place in each; returns (images, patch masks)."""
    x = torch.full((n, 3, size, size), 0.0)
    masks = np.zeros((n, size, size), bool)
    for i in range(n):
        y0, x0 = (4, 4) if i % 2 == 0 else (20, 16)
        x[i, 0, y0:y0 + 8, x0:x0 + 8] = 2.0
        masks[i, y0:y0 + 8, x0:x0 + 8] = True
    return x, masks


# ------------------------------------------------------------------------------ Grad-CAM

def test_gradcam_concentrates_on_the_evidence():
    model = RedPatchNet()
    images, masks = red_patch_images()
    heat = explain.gradcam(model, images, target_layer=model.act)
    assert heat.shape == (2, 32, 32) and heat.dtype == np.float32
    assert np.allclose(heat.max(axis=(1, 2)), 1.0)
    for h, m in zip(heat, masks):
        inside = explain.heat_inside(h, m)
        assert inside > 0.6 > 3 * m.mean(), (inside, m.mean())      # patch = 1/16 of the image
        y, x = np.unravel_index(np.argmax(h), h.shape)
        assert m[max(0, y - 2):y + 3, max(0, x - 2):x + 3].any()    # peak on (or next to) the patch


def test_gradcam_sign_minus_one_finds_no_evidence_against():
    model = RedPatchNet()          # every weight is >= 0: nothing in the image argues against the output
    images, _ = red_patch_images(1)
    assert np.all(explain.gradcam(model, images, target_layer=model.act, sign=-1) == 0)
    with pytest.raises(ValueError, match="sign"):
        explain.gradcam(model, images, target_layer=model.act, sign=2)


def test_gradcam_on_the_books_backbones_uses_the_last_spatial_layer():
    torch.manual_seed(0)
    lite = build_model("efficientnet_lite0", 1, pretrained=False, verbose=False)
    assert explain.default_target_layer(lite) is lite.backbone._bn1
    resnet = build_model("resnet18", 1, pretrained=False, verbose=False)
    assert explain.default_target_layer(resnet) is resnet.backbone.layer4
    net = RedPatchNet()
    assert explain.default_target_layer(net) is net.conv             # fallback: the last Conv2d
    heat = explain.gradcam(lite, torch.randn(2, 3, 64, 64))
    assert heat.shape == (2, 64, 64) and np.isfinite(heat).all() and heat.min() >= 0
    with pytest.raises(ValueError, match="shape"):
        explain.gradcam(lite, torch.randn(3, 64))
    with pytest.raises(ValueError, match="no Conv2d"):
        explain.default_target_layer(nn.Sequential(nn.Flatten(), nn.Linear(4, 1)))


# ------------------------------------------------------------------------------ occlusion

def test_occluding_the_informative_patch_lowers_the_score():
    model = RedPatchNet()
    images, masks = red_patch_images()
    occ = explain.occlusion_map(model, images, window=8, stride=4)
    assert occ.shape == (2, 32, 32)
    for o, m in zip(occ, masks):
        far = ndi.distance_transform_cdt(~m, metric="chessboard") >= 8   # no window reaches the patch
        assert o[m].mean() > 0.05                       # covering red lowers the logit
        assert np.abs(o[far]).max() < 1e-6              # covering grey far away changes nothing
        assert o[m].mean() > 1.4 * o[~m & ~far].mean()  # windows that only clip the patch count less


def test_occlusion_by_one_window_is_the_score_drop_everywhere():
    model = RedPatchNet()
    images, _ = red_patch_images(1)
    occ = explain.occlusion_map(model, images, window=32, stride=32)
    with torch.no_grad():
        drop = float(model(images)[0, 0] - model(torch.zeros_like(images))[0, 0])
    assert np.allclose(occ, drop, atol=1e-6)
    neg = explain.occlusion_map(model, images, window=32, stride=32, sign=-1)
    assert np.allclose(neg, -drop, atol=1e-6)
    with pytest.raises(ValueError, match="window"):
        explain.occlusion_map(model, images, window=40, stride=8)


# ------------------------------------------------------------------------------ display, heat share

def test_overlay_leaves_cold_pixels_and_tints_hot_ones():
    import matplotlib

    image = np.full((10, 12, 3), 0.5)
    heat = np.zeros((10, 12))
    heat[2, 3] = 4.0
    out = explain.overlay(image, heat, alpha=0.4, cmap="jet")
    assert out.shape == (10, 12, 3)
    assert np.allclose(out[0, 0], 0.5)
    assert np.allclose(out[2, 3], 0.6 * 0.5 + 0.4 * np.array(matplotlib.colormaps["jet"](1.0)[:3]))
    tensor = (torch.zeros(3, 10, 12))                    # normalised input = ImageNet mean colour
    assert np.allclose(explain.overlay(tensor, np.zeros((10, 12)))[0, 0],
                       [0.485, 0.456, 0.406], atol=0.003)
    half = explain.overlay(image, heat, alpha=0.4, cmap="jet", vmax=8.0)   # heat 4 of 8: half strength
    assert np.allclose(half[2, 3], 0.8 * 0.5 + 0.2 * np.array(matplotlib.colormaps["jet"](0.5)[:3]))
    with pytest.raises(ValueError, match="does not match"):
        explain.overlay(image, np.zeros((5, 5)))


def test_heat_inside():
    mask = np.zeros((20, 20), bool)
    mask[5:15, 5:15] = True
    assert explain.heat_inside(np.ones((20, 20)), mask) == pytest.approx(mask.mean())
    assert explain.heat_inside(mask * 3.0 - 1.0, mask) == pytest.approx(1.0)   # negatives ignored
    big = np.kron(mask, np.ones((2, 2), bool))                                  # mask at 40 px
    assert explain.heat_inside(np.ones((20, 20)), big) == pytest.approx(0.25)
    assert np.isnan(explain.heat_inside(np.zeros((20, 20)), mask))


# ------------------------------------------------------------------------------ ITA

def test_ita_formula_on_known_values():
    assert explain.ita(70.0, 20.0) == pytest.approx(45.0)
    assert explain.ita(50.0, 15.0) == pytest.approx(0.0)
    assert explain.ita(30.0, 20.0) == pytest.approx(-45.0)
    expected = np.degrees(np.arctan((np.array([80.0, 40.0]) - 50) / np.array([10.0, 25.0])))
    assert np.allclose(explain.ita([80.0, 40.0], [10.0, 25.0]), expected)


def _disc_on_skin(lab_skin: tuple[float, float, float], size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    skin = color.lab2rgb(np.array([[lab_skin]], float))[0, 0]
    img = np.tile(skin, (size, size, 1))
    mask = np.zeros((size, size), bool)
    rr, cc = draw.disk((size / 2, size / 2), size / 5)
    mask[rr, cc] = True
    img[mask] = (0.25, 0.15, 0.1)
    return img, mask


def test_skin_ita_of_a_known_lab_colour_matches_the_formula():
    img, mask = _disc_on_skin((65.0, 12.0, 18.0))
    assert explain.skin_ita(img, mask) == pytest.approx(explain.ita(65.0, 18.0), abs=0.5)
    assert explain.skin_ita(img) == pytest.approx(explain.ita(65.0, 18.0), abs=0.5)   # segmented itself
    with pytest.raises(ValueError, match="does not match"):
        explain.skin_ita(img, mask[:50])


def test_skin_ita_orders_synthetic_skin_tones():
    values = [explain.skin_ita(make_lesion("NV", 3, 160, skin_tone=t)[0]) for t in (0.0, 0.35, 0.7, 1.0)]
    assert all(a > b for a, b in zip(values, values[1:])), values
    assert explain.ita_category(values[0]) in ("very light", "light")
    assert explain.ita_category(values[-1]) in ("brown", "dark")


def test_ita_category_bins_and_boundaries():
    assert explain.ita_category(60) == "very light"
    assert explain.ita_category(55) == "light"
    assert explain.ita_category(41) == "intermediate"
    assert explain.ita_category(20) == "tan"
    assert explain.ita_category(-29.9) == "brown"
    assert explain.ita_category(-30) == "dark"
    assert explain.ita_category(float("nan")) is None
    s = explain.ita_category(pd.Series([70.0, np.nan, -40.0], index=[5, 6, 7]))
    assert list(s.index) == [5, 6, 7] and s.cat.ordered
    assert list(s.cat.categories) == [n for n, _ in explain.ITA_CATEGORIES]
    assert s[5] == "very light" and pd.isna(s[6]) and s[7] == "dark"


# ------------------------------------------------------------------------------ model card

def test_render_model_card_keeps_mitchells_order_and_refuses_gaps():
    card = {s: f"text of {s}" for s in reversed(explain.MODEL_CARD_SECTIONS)}
    card["Metrics"] = ["AUC", "sensitivity"]
    card["Factors"] = {"skin tone": "ITA category"}
    md = explain.render_model_card(card)
    positions = [md.index(f"**{s}.**") for s in explain.MODEL_CARD_SECTIONS]
    assert positions == sorted(positions)
    assert "- AUC\n- sensitivity" in md and "- **skin tone**: ITA category" in md
    with pytest.raises(ValueError, match="Ethical considerations"):
        explain.render_model_card({**card, "Ethical considerations": ""})
    with pytest.raises(ValueError, match="unknown"):
        explain.render_model_card({**card, "Price": "free"})


# ------------------------------------------------------------------------------ test cases, acquisition
def test_confusion_cases_follow_the_threshold_and_the_seed():
    y = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    p = np.array([0.9, 0.8, 0.1, 0.7, 0.2, 0.3, 0.6, 0.5])
    cases = explain.confusion_cases(y, p, 0.5, n=2, seed=0)
    assert set(cases) == {"TP", "FP", "FN", "TN"}
    assert all(y[i] == 1 and p[i] >= 0.5 for i in cases["TP"])           # 0.5 itself counts as positive
    assert cases["FN"] == [2] and sorted(cases["FP"]) == [3, 6] and len(cases["TP"]) == 2
    assert all(y[i] == 0 and p[i] < 0.5 for i in cases["TN"])
    assert explain.confusion_cases(y, p, 0.5, n=2, seed=0) == cases      # seeded
    everything = explain.confusion_cases(y, p, 0.5, n=10)
    assert sorted(sum(everything.values(), [])) == list(range(len(y)))
    with pytest.raises(ValueError, match="0 and 1"):
        explain.confusion_cases([0, 2], [0.1, 0.2], 0.5)
    with pytest.raises(ValueError, match="one length"):
        explain.confusion_cases([0, 1], [0.1], 0.5)


def test_simulate_acquisition_changes_what_it_says():
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.integers(40, 200, (3, 48, 48), dtype=np.uint8))
    cast = explain.simulate_acquisition(image, "colour cast", 0.6)
    assert torch.equal(cast[0], image[0])                                    # red kept
    np.testing.assert_allclose(cast[2].float().mean() / image[2].float().mean(), 0.6, atol=0.01)
    dark = explain.simulate_acquisition(image, "exposure", 0.5)
    np.testing.assert_allclose(dark.float().mean() / image.float().mean(), 0.5, atol=0.01)
    blurred = explain.simulate_acquisition(image, "blur", 2.0)
    assert blurred.float().std() < 0.5 * image.float().std()                # noise smoothed away
    assert blurred.float().mean().sub(image.float().mean()).abs() < 2        # brightness kept
    smooth = torch.from_numpy(np.broadcast_to(np.linspace(0, 255, 48, dtype=np.uint8), (3, 48, 48)).copy())
    assert (explain.simulate_acquisition(smooth, "jpeg", 90).int() - smooth.int()).abs().float().mean() < 3
    low = explain.simulate_acquisition(image, "jpeg", 5)
    assert low.shape == image.shape and low.dtype == torch.uint8 and not torch.equal(low, image)
    for kind in explain.ACQUISITION_CHANGES:                                 # defaults work
        assert explain.simulate_acquisition(image, kind).shape == image.shape
    with pytest.raises(ValueError, match="unknown kind"):
        explain.simulate_acquisition(image, "fog")
    with pytest.raises(ValueError, match="uint8"):
        explain.simulate_acquisition(image.float(), "blur")
    with pytest.raises(ValueError, match="quality"):
        explain.simulate_acquisition(image, "jpeg", 0)
