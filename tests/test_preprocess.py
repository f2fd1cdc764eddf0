"""Tests for helpers/preprocess.py: resize_image and the resize cache."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import io as hio
from helpers.preprocess import centre_crop_box, resize_folder, resize_image
from tools.writers import write_dicom

REPO_ROOT = Path(__file__).resolve().parent.parent
REAL = REPO_ROOT / "data_samples" / "isic-archive-uda1"  # real UDA-1 images, CC-0, shipped


def striped(h: int, w: int) -> np.ndarray:
    """Left third red, middle third green, right third blue (for a landscape image)."""
    arr = np.zeros((h, w, 3), np.uint8)
    arr[:, : w // 3, 0] = 255
    arr[:, w // 3 : 2 * w // 3, 1] = 255
    arr[:, 2 * w // 3 :, 2] = 255
    return arr


def test_centre_crop_box():
    assert centre_crop_box(300, 100) == (100, 0, 200, 100)
    assert centre_crop_box(100, 301) == (0, 100, 100, 200)


def test_resize_image_keeps_aspect_and_crops_centre():
    out = resize_image(striped(90, 270), 30)
    assert out.shape == (30, 30, 3) and out.dtype == np.uint8
    # a 3:1 image cropped to its centre square keeps only the green middle third
    assert out[:, 3:-3, 1].min() > 240 and out[:, 3:-3, 0].max() < 15 and out[:, 3:-3, 2].max() < 15
    pil_out = resize_image(Image.fromarray(striped(90, 270)), 30)
    assert np.array_equal(pil_out, out)
    with pytest.raises(ValueError):
        resize_image(striped(9, 9), 0)


def make_folder(root: Path) -> None:
    root.mkdir(parents=True)
    Image.fromarray(striped(120, 180)).save(root / "ISIC_0000001.jpg", quality=95)
    Image.fromarray(striped(60, 40)).save(root / "ISIC_0000002.png")
    sub = root / "test"
    sub.mkdir()
    Image.fromarray(striped(50, 50)).convert("L").save(sub / "ISIC_0000003.JPEG")
    write_dicom(root / "ISIC_0000004.dcm", striped(64, 64), {"image_name": "ISIC_0000004"})
    (root / "metadata.csv").write_text("isic_id\n")  # not an image: ignored


@pytest.mark.parametrize("workers", [1, 2])
def test_resize_folder_sizes_and_skip(tmp_path, workers):
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_folder(src)
    frame = resize_folder(src, dst, 32, workers=workers, progress=False)
    assert list(frame.columns) == ["source", "dest", "status", "error"]
    assert len(frame) == 4 and set(frame["status"]) == {"resized"}
    assert frame["error"].isna().all()
    expected = {"ISIC_0000001.jpg", "ISIC_0000002.jpg", "ISIC_0000004.jpg", "test/ISIC_0000003.jpg"}
    assert {p.relative_to(dst).as_posix() for p in dst.rglob("*.jpg")} == expected
    for p in dst.rglob("*.jpg"):
        with Image.open(p) as im:
            assert im.size == (32, 32) and im.mode == "RGB" and im.format == "JPEG"
    assert not list(dst.rglob("*.tmp*"))

    again = resize_folder(src, dst, 32, workers=workers, progress=False)
    assert set(again["status"]) == {"skipped"}

    # a source newer than its cached copy is redone; the others stay skipped
    newer = src / "ISIC_0000002.png"
    stamp = (dst / "ISIC_0000002.jpg").stat().st_mtime + 10
    os.utime(newer, (stamp, stamp))
    third = resize_folder(src, dst, 32, workers=workers, progress=False)
    status = dict(zip(third["source"].map(lambda p: Path(p).name), third["status"]))
    assert status["ISIC_0000002.png"] == "resized"
    assert status["ISIC_0000001.jpg"] == "skipped"


def test_resize_folder_reports_bad_file_and_continues(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_folder(src)
    (src / "ISIC_0000009.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a whole JPEG")
    (src / "ISIC_0000010.jpg").write_bytes(b"")
    with pytest.warns(UserWarning, match="2 of 6 files failed"):
        frame = resize_folder(src, dst, 24, workers=2, progress=False)
    by_name = frame.set_index(frame["source"].map(lambda p: Path(p).name))
    assert by_name.loc["ISIC_0000009.jpg", "status"] == "failed"
    assert "ISIC_0000009.jpg" in by_name.loc["ISIC_0000009.jpg", "error"]
    assert by_name.loc["ISIC_0000010.jpg", "status"] == "failed"
    assert (frame["status"] == "resized").sum() == 4
    assert not (dst / "ISIC_0000009.jpg").exists()


def test_resize_folder_rejects_missing_source(tmp_path):
    with pytest.raises(ValueError, match="nowhere"):
        resize_folder(tmp_path / "nowhere", tmp_path / "dst", 32)


def test_draft_path_matches_plain_path_on_real_image(tmp_path):
    # the image with the most pixels shows the draft-mode shortcut best
    def pixels(p: Path) -> int:
        with Image.open(p) as im:
            return im.size[0] * im.size[1]

    path = max(sorted(REAL.glob("ISIC_*.jpg")), key=pixels)
    plain = resize_image(hio.read_image(path), 256)
    with Image.open(path) as im:
        full_width = im.size[0]
        im.draft("RGB", (256, 256))
        assert im.size[0] <= full_width // 2  # draft really decodes at a reduced scale
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(path, src / path.name)
    frame = resize_folder(src, tmp_path / "dst", 256, workers=1, quality=100, progress=False)
    assert frame["status"].tolist() == ["resized"]
    cached = hio.read_image(tmp_path / "dst" / (path.stem + ".jpg")).astype(int)
    diff = np.abs(cached - plain.astype(int))
    assert diff.mean() < 3.0, diff.mean()
    assert np.percentile(diff, 99) < 20
