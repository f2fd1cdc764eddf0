"""Tests of helpers/synthetic.py: the painted lesions."""
from __future__ import annotations

import numpy as np
import pytest

from helpers import synthetic as syn


# --------------------------------------------------------------------------- make_lesion
def test_make_lesion_is_deterministic():
    img1, mask1 = syn.make_lesion("MEL", 7, size=96)
    img2, mask2 = syn.make_lesion("MEL", 7, size=96)
    img3, _ = syn.make_lesion("MEL", 8, size=96)
    assert img1.shape == (96, 96, 3) and img1.dtype == np.uint8 and mask1.dtype == bool
    assert np.array_equal(img1, img2) and np.array_equal(mask1, mask2)
    assert np.abs(img1.astype(int) - img3).mean() > 2


def test_forcing_hair_or_tone_keeps_the_lesion():
    _, mask = syn.make_lesion("NV", 3, size=96)
    hairy, mask_h = syn.make_lesion("NV", 3, size=96, hair=True)
    bald, mask_b = syn.make_lesion("NV", 3, size=96, hair=False)
    light, _ = syn.make_lesion("NV", 3, size=96, skin_tone=0.0)
    dark, _ = syn.make_lesion("NV", 3, size=96, skin_tone=1.0)
    assert np.array_equal(mask, mask_h) and np.array_equal(mask, mask_b)
    assert not np.array_equal(hairy, bald)
    outside = ~mask
    outside[:20], outside[-20:], outside[:, :20], outside[:, -20:] = False, False, False, False  # skip the dark rim
    assert light[outside].mean() > dark[outside].mean() + 60


def test_make_lesion_rejects_bad_input():
    with pytest.raises(ValueError, match="unknown class 'melanoma'"):
        syn.make_lesion("melanoma", 0)
    with pytest.raises(ValueError, match="too small"):
        syn.make_lesion("NV", 0, size=8)


def _dark_or_blue(img: np.ndarray, mask: np.ndarray) -> float:
    """Share of lesion pixels that are black or blue-grey (the C of ABCD)."""
    px = img[mask].astype(int)
    return float(((px.max(1) < 70) | ((px[:, 2] > px[:, 0]) & (px[:, 2] > 70))).mean())


def test_melanoma_follows_abcd_but_overlaps_with_nevus():
    mel = [syn.make_lesion("MEL", s, size=128) for s in range(24)]
    nev = [syn.make_lesion("NV", s, size=128) for s in range(24)]
    mel_area = np.array([m.mean() for _, m in mel])
    nev_area = np.array([m.mean() for _, m in nev])
    assert mel_area.mean() > 1.5 * nev_area.mean()  # D: larger
    assert nev_area.max() > mel_area.min()  # ... but not separable by size alone
    mel_c = np.array([_dark_or_blue(i, m) for i, m in mel])
    nev_c = np.array([_dark_or_blue(i, m) for i, m in nev])
    assert mel_c.mean() > 1.4 * nev_c.mean()  # C: black and blue-grey regions
    assert (nev_c > np.median(mel_c)).any()  # some nevi are as colourful as a typical melanoma


def test_every_class_looks_different():
    def lesion_colour(label: str, seed: int) -> np.ndarray:
        img, mask = syn.make_lesion(label, seed, size=96)
        return img[mask].mean(0)

    means = {c: np.mean([lesion_colour(c, s) for s in range(3)], axis=0) for c in syn.CLASSES}
    keys = list(means)
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            assert np.abs(means[a] - means[b]).max() > 4, (a, b)


def test_nevus_style_is_shared():
    style = syn.NevusStyle(brown=(0.55, 0.35, 0.2), size=1.3, atypia=0.1)
    sizes = [syn.make_lesion("NV", s, size=96, style=style)[1].mean() for s in range(6)]
    small = [syn.make_lesion("NV", s, size=96, style=syn.NevusStyle(size=0.7, atypia=0.1))[1].mean() for s in range(6)]
    assert min(sizes) > max(small)
