"""Reliability: image files of every kind are read correctly, or skipped with a counted warning.

* Every kind a download may hold (RGB and greyscale PNG and JPEG, RGBA, LA,
  palette, CMYK, 16-bit, EXIF-rotated) is read to the right RGB pixels, by
  ``helpers.io.read_image`` (Pillow: the resize and tensor caches) and by
  ``helpers.data.read_image_tensor`` (torchvision: the training road) alike.
* Every bad file (corrupt, truncated, zero bytes, not an image, a
  decompression bomb, missing) raises a ``ValueError`` naming the file, and
  in a training epoch is skipped: the epoch goes on, the file is listed in
  ``dataset.skipped`` and warned about once. ``python -m helpers train``
  counts and lists the skipped files in ``summary.json``.
"""
from __future__ import annotations

import io
import json
import shutil
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from support import ARCHIVE, FAST, lesion, needs_samples, smooth_rgb
from torch.utils.data import DataLoader

from helpers import data as D
from helpers import fastpath
from helpers import io as hio
from helpers.__main__ import main


# --------------------------------------------------------------------------- good files
def _rgb_png(folder: Path) -> tuple[Path, np.ndarray]:
    rgb = smooth_rgb()
    Image.fromarray(rgb).save(folder / "rgb.png")
    return folder / "rgb.png", rgb


def _grey_png(folder: Path) -> tuple[Path, np.ndarray]:
    grey = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (10, 1))
    Image.fromarray(grey, "L").save(folder / "grey.png")
    return folder / "grey.png", np.repeat(grey[..., None], 3, axis=2)


def _bilevel_png(folder: Path) -> tuple[Path, np.ndarray]:
    grey = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (10, 1))
    Image.fromarray(grey, "L").convert("1").save(folder / "bilevel.png")
    with Image.open(folder / "bilevel.png") as im:
        bits = np.asarray(im.convert("L"))
    assert set(np.unique(bits)) <= {0, 255}
    return folder / "bilevel.png", np.repeat(bits[..., None], 3, axis=2)


def _grey_jpeg(folder: Path) -> tuple[Path, np.ndarray]:
    grey = np.full((16, 24), 90, np.uint8)
    Image.fromarray(grey, "L").save(folder / "grey.jpg", quality=100)
    return folder / "grey.jpg", np.full((16, 24, 3), 90, np.uint8)


def _rgba_png(folder: Path) -> tuple[Path, np.ndarray]:
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[:4, :, 3] = 255  # top half opaque red, bottom half fully transparent
    Image.fromarray(rgba, "RGBA").save(folder / "rgba.png")
    expected = np.full((8, 8, 3), 255, np.uint8)  # transparent: composited on white
    expected[:4] = (200, 0, 0)
    return folder / "rgba.png", expected


def _la_png(folder: Path) -> tuple[Path, np.ndarray]:
    la = np.stack([np.full((8, 8), 50, np.uint8), np.full((8, 8), 0, np.uint8)], -1)
    Image.fromarray(la, "LA").save(folder / "la.png")
    return folder / "la.png", np.full((8, 8, 3), 255, np.uint8)


def _palette_png(folder: Path) -> tuple[Path, np.ndarray]:
    pal = Image.new("P", (4, 4), 0)
    pal.putpalette([10, 20, 30] + [0, 0, 0] * 255)
    pal.save(folder / "palette.png")
    return folder / "palette.png", np.tile(np.array([10, 20, 30], np.uint8), (4, 4, 1))


def _cmyk_jpeg(folder: Path) -> tuple[Path, np.ndarray]:
    Image.new("CMYK", (10, 6), (0, 255, 255, 0)).save(folder / "cmyk.jpg", quality=95)  # pure red
    return folder / "cmyk.jpg", np.tile(np.array([255, 0, 0], np.uint8), (6, 10, 1))


def _png_16bit(folder: Path) -> tuple[Path, np.ndarray]:
    arr16 = np.array([[0, 257 * 100, 65535, 32896]], dtype=np.uint16)
    Image.fromarray(arr16).save(folder / "16bit.png")
    with Image.open(folder / "16bit.png") as im:
        assert im.mode.startswith("I")  # really a 16-bit greyscale file
    return folder / "16bit.png", np.repeat(np.array([[0, 100, 255, 128]], np.uint8)[..., None], 3, 2)


def _exif_rotated_jpeg(folder: Path) -> tuple[Path, np.ndarray]:
    # stored 40 wide x 20 high, red block top-left; orientation 6 = shown turned 90 deg clockwise
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:10, :10] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(arr).save(folder / "rotated.jpg", quality=95, exif=exif.tobytes())
    return folder / "rotated.jpg", np.rot90(arr, k=-1)  # the stored top-left is now top-right


GOOD = {"rgb png": _rgb_png, "greyscale png": _grey_png, "bilevel png": _bilevel_png,
        "greyscale jpeg": _grey_jpeg, "rgba png": _rgba_png, "la png": _la_png,
        "palette png": _palette_png, "cmyk jpeg": _cmyk_jpeg, "16-bit png": _png_16bit,
        "exif-rotated jpeg": _exif_rotated_jpeg}
#: JPEG kinds: mean |error| allowed (compression); the others must be exact
LOSSY = {"cmyk jpeg": 3, "exif-rotated jpeg": 6, "greyscale jpeg": 1}


@pytest.mark.parametrize("kind", sorted(GOOD))
def test_every_image_kind_is_read_as_rgb_by_both_roads(tmp_path, kind):
    path, expected = GOOD[kind](tmp_path)
    pillow = hio.read_image(path)
    assert pillow.dtype == np.uint8 and pillow.shape == expected.shape
    error = np.abs(pillow.astype(int) - expected.astype(int))
    if kind in LOSSY:
        assert error.mean() <= LOSSY[kind], error.mean()
    else:
        assert error.max() == 0
    tensor = D.read_image_tensor(path)      # what a training epoch reads
    assert tensor.dtype == torch.uint8 and tuple(tensor.shape) == (3, *expected.shape[:2])
    assert np.array_equal(tensor.permute(1, 2, 0).numpy(), pillow)


# --------------------------------------------------------------------------- bad files
def bomb_png(width: int = 20_000, height: int = 10_000) -> bytes:
    """A tiny PNG whose header announces width x height pixels: a decompression bomb.

    20,000 x 10,000 = 200 million pixels, more than twice Pillow's default
    ``MAX_IMAGE_PIXELS`` (89,478,485), so Pillow refuses it from the header alone.
    """
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def _jpeg_bytes(h: int = 200, w: int = 200) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(smooth_rgb(h, w)).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def _png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(smooth_rgb(120, 120)).save(buf, "PNG")
    return buf.getvalue()


#: name -> (file name, bytes or None for a missing file, words the error must contain)
BAD = {
    "corrupt jpeg": ("corrupt.jpg", b"\xff\xd8\xff\xe0 this is not really a jpeg" * 4, ""),
    "truncated jpeg": ("truncated.jpg", _jpeg_bytes()[: len(_jpeg_bytes()) // 2], "truncated"),
    "truncated png": ("truncated.png", _png_bytes()[: len(_png_bytes()) // 2], "truncated"),
    "zero-byte file": ("empty.jpg", b"", "empty"),
    "not an image": ("notes.png", b"\x89PNG but really a text file\n" * 3, ""),
    "decompression bomb": ("bomb.png", bomb_png(), "decompression bomb"),
    "missing file": ("missing.jpg", None, ""),
}


def _write_bad(folder: Path, kind: str) -> Path:
    name, content, _ = BAD[kind]
    path = folder / name
    if content is not None:
        path.write_bytes(content)
    return path


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_files_raise_a_value_error_naming_the_file(tmp_path, kind):
    path = _write_bad(tmp_path, kind)
    words = BAD[kind][2]
    for read in (hio.read_image, D.read_image_tensor):
        with pytest.raises(ValueError, match=rf"{path.name}.*{words}"):
            read(path)


def test_decompression_bomb_limit_is_pillows_and_applies_to_the_training_road(tmp_path, monkeypatch):
    """A real image above the limit: Pillow warns between 1x and 2x and refuses above; both count."""
    Image.fromarray(smooth_rgb(100, 100)).save(tmp_path / "big.png")
    Image.fromarray(smooth_rgb(100, 100)).save(tmp_path / "big.jpg")
    for limit in (6_000, 2_000):   # 10,000 pixels: the warning zone, then Pillow's hard error
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
        for name in ("big.png", "big.jpg"):
            for read in (hio.read_image, D.read_image_tensor):
                with pytest.raises(ValueError, match=rf"{name}.*decompression bomb"):
                    read(tmp_path / name)
        with pytest.raises(ValueError, match=r"big\.jpg.*decompression bomb"):
            fastpath.decode_jpeg_batch([tmp_path / "big.jpg"], 16)
    monkeypatch.undo()
    assert hio.read_image(tmp_path / "big.png").shape == (100, 100, 3)
    assert fastpath.decode_jpeg_batch([tmp_path / "big.jpg"], 16).shape == (1, 3, 16, 16)


@pytest.mark.parametrize("kind", sorted(BAD))
def test_one_bad_file_never_stops_an_epoch(tmp_path, kind):
    rows = []
    for i in range(5):
        path = tmp_path / f"ISIC_{i:07d}.jpg"
        Image.fromarray(lesion(32, 40, i)).save(path)
        rows.append({"image_id": path.stem, "path": str(path), "target": i % 2})
    bad = _write_bad(tmp_path, kind)
    rows.insert(2, {"image_id": "bad", "path": str(bad), "target": 1})
    frame = pd.DataFrame(rows)
    dataset = D.LesionDataset(frame, D.eval_transforms(16), target="target")
    loader = DataLoader(dataset, batch_size=2, shuffle=False, collate_fn=D.collate_skip_bad)
    with pytest.warns(D.SkippedImageWarning) as record:
        seen = [i for batch in loader if batch is not None for i in batch["index"].tolist()]
    assert seen == [0, 1, 3, 4, 5]                      # the epoch went on past the bad file
    assert len(record) == 1 and bad.name in str(record[0].message)   # counted once, named
    assert [p for p, _ in dataset.skipped] == [str(bad)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", D.SkippedImageWarning)        # the next epoch: no new warning
        assert sum(len(b["index"]) for b in loader if b is not None) == 5


# moved from test_data.py: batches, metadata and the skip record of a whole epoch
def test_dataset_skips_bad_images_and_loader_yields_the_rest(image_frame):
    bad_rows = {3, 6}
    ds = D.LesionDataset(image_frame, transform=D.eval_transforms(32), target="target",
                         meta=list(D.META_COLUMNS))
    loader = DataLoader(ds, batch_size=3, shuffle=False, collate_fn=D.collate_skip_bad)
    with pytest.warns(D.SkippedImageWarning) as record:
        batches = [b for b in loader if b is not None]
    assert len(record) == 2  # once per bad file
    seen = torch.cat([b["index"] for b in batches]).tolist()
    assert seen == [i for i in range(8) if i not in bad_rows]
    b = batches[0]
    assert b["image"].shape == (3, 3, 32, 32) and b["image"].dtype == torch.float32
    assert b["target"].dtype == torch.float32 and b["target"].tolist() == [1.0, 0.0, 0.0]
    assert b["meta"].shape == (3, ds.meta_dim) and ds.meta_dim == 12
    assert sorted(p for p, _ in ds.skipped) == sorted(image_frame.path[i] for i in bad_rows)
    assert all(Path(p).name in reason for p, reason in ds.skipped)
    with warnings.catch_warnings():
        warnings.simplefilter("error", D.SkippedImageWarning)  # second epoch: no new warning
        assert sum(len(b["index"]) for b in loader if b is not None) == 6


# moved from test_data.py
def test_dataset_skips_are_recorded_from_worker_processes(image_frame):
    bad_rows = {3, 6}
    ds = D.LesionDataset(image_frame, transform=D.eval_transforms(16), target="label")
    loader = DataLoader(ds, batch_size=4, num_workers=2, collate_fn=D.collate_skip_bad)
    seen = sorted(i for b in loader if b is not None for i in b["index"].tolist())
    assert seen == [i for i in range(8) if i not in bad_rows]
    assert {p for p, _ in ds.skipped} == {image_frame.path[i] for i in bad_rows}


# moved from test_cli.py and extended to several kinds of bad file
@needs_samples
def test_training_run_skips_bad_images_and_its_summary_lists_them(tmp_path, capsys):
    data = tmp_path / "archive"
    shutil.copytree(ARCHIVE, data)
    files = sorted(data.glob("ISIC_*.jpg"))
    broken = {files[0]: b"\xff\xd8 not really a jpeg",
              files[1]: files[1].read_bytes()[: files[1].stat().st_size // 2],
              files[2]: b"",
              files[3]: bomb_png()}
    for path, content in broken.items():
        path.write_bytes(content)
    run = tmp_path / "run"
    assert main(["train", "--data-dir", str(data), "--out", str(run), "--epochs", "1", *FAST]) == 0
    captured = capsys.readouterr()
    assert "done: 1 epochs" in captured.out and "4 images skipped" in captured.out
    summary = json.loads((run / "summary.json").read_text())
    assert summary["images_skipped"]["count"] == 4
    reasons = summary["images_skipped"]["reasons"]
    assert sorted(reasons) == sorted(p.name for p in broken)
    assert all(name in reason for name, reason in reasons.items())
    assert "decompression bomb" in reasons[files[3].name] and "empty" in reasons[files[2].name]
    assert pd.read_csv(run / "history.csv")["skipped"].tolist() == [4]

    preds = tmp_path / "preds.csv"
    assert main(["predict", "--run", str(run), "--data-dir", str(data), "--out", str(preds)]) == 0
    sub = pd.read_csv(preds).set_index("image_name")
    assert len(sub) == 40 and sub["target"].notna().all()
    others = sub.drop(index=[p.stem for p in broken])["target"]
    assert sub.loc[files[0].stem, "target"] == pytest.approx(others.mean(), rel=1e-6)
    assert "4 unreadable images get the mean prediction" in capsys.readouterr().out
