"""Tests of helpers/fastpath.py: the tensor cache, its loader, GPU-style augmentation, batched decoding.

Images the cache cannot read, and a full disk while writing it, are tested in
test_reliability_images.py and test_reliability_output.py.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from support import BAD_ROWS, lesion

from helpers import REPO_ROOT, fastpath
from helpers import data as D
from helpers.io import read_image
from helpers.preprocess import resize_image

UDA1 = REPO_ROOT / "data_samples" / "isic-archive-uda1"
BAD = BAD_ROWS   # rows of the image_frame fixture (conftest.py): 3 corrupt, 6 missing


# --------------------------------------------------------------------------- tensor cache and loader
def test_tensor_cache_round_trip(tmp_path, image_frame, capsys):
    out = fastpath.build_tensor_cache(image_frame, 24, tmp_path / "cache" / "c24.npy", progress=False)
    arr = np.load(out, mmap_mode="r")
    assert arr.shape == (8, 3, 24, 24) and arr.dtype == np.uint8
    for i in range(8):
        if i in BAD:
            assert not arr[i].any()
        else:
            # JPEGs are decoded in Pillow's draft mode (DCT scaling), as resize_folder does.
            expected = resize_image(read_image(image_frame.path[i], draft=24), 24).transpose(2, 0, 1)
            assert np.array_equal(arr[i], expected)
    index = fastpath.cache_index(out)
    assert index.image_id.tolist() == image_frame.image_id.tolist()
    assert index.error.notna().tolist() == [i in BAD for i in range(8)]
    assert Path(image_frame.path[3]).name in index.error[3]
    capsys.readouterr()
    mtime = out.stat().st_mtime_ns
    assert fastpath.build_tensor_cache(image_frame, 24, out, progress=False) == out
    assert "up to date" in capsys.readouterr().out and out.stat().st_mtime_ns == mtime
    assert not list(out.parent.glob(".*tmp*"))


def test_tensor_cache_loader_epochs(tmp_path, image_frame):
    out = fastpath.build_tensor_cache(image_frame, 16, tmp_path / "c16.npy", progress=False)
    targets = D.encode_targets(image_frame, "target")
    meta, _ = D.encode_meta(image_frame)
    loader = fastpath.TensorCacheLoader(out, targets, meta=meta, batch_size=3, seed=5, augment=True)
    assert len(loader) == 2  # six good rows
    first = [b["index"].tolist() for b in loader]
    seen = sorted(i for b in first for i in b)
    assert seen == [i for i in range(8) if i not in BAD]  # every good row exactly once
    assert all(b == sorted(b) for b in first)  # rows sorted within a batch
    second = [b["index"].tolist() for b in loader]  # the next epoch: another order
    loader.set_epoch(0)
    batches = list(loader)
    assert [b["index"].tolist() for b in batches] == first
    assert first != second or loader.epoch_order(0).tolist() != loader.epoch_order(1).tolist()
    b = batches[0]
    assert b["image"].shape == (3, 3, 16, 16) and b["image"].dtype == torch.float32
    assert torch.equal(b["target"], torch.from_numpy(targets[b["index"].numpy()]))
    assert torch.equal(b["meta"], torch.from_numpy(meta[b["index"].numpy()]))
    # Same seed and epoch: same augmentation too; prefetching changes nothing.
    again = fastpath.TensorCacheLoader(out, targets, batch_size=3, seed=5, augment=True, prefetch=False)
    assert all(torch.equal(x["image"], y["image"]) for x, y in zip(batches, again))
    # The DataLoader-like sampler view replays an epoch; two ranks share an epoch's rows.
    loader.sampler.set_epoch(0)
    assert len(loader.sampler) == 6 and [b["index"].tolist() for b in loader] == first
    ranks = [fastpath.TensorCacheLoader(out, targets, batch_size=2, seed=5, rank=r, world_size=4) for r in range(4)]
    shares = [np.concatenate([b["index"].numpy() for b in r]) for r in ranks]
    assert all(len(x) == 2 for x in shares) and set(np.concatenate(shares)) == set(seen)
    # A subset of rows, no shuffling, no augmentation: plain normalised cache rows.
    plain = fastpath.TensorCacheLoader(out, None, indices=[5, 0, 3], batch_size=4, shuffle=False, channels_last=True)
    (only,) = list(plain)
    assert only["index"].tolist() == [0, 5]  # row 3 is bad and left out
    assert only["image"].is_contiguous(memory_format=torch.channels_last)
    raw = torch.from_numpy(np.load(out)[[0, 5]]).float() / 255
    mean, std = torch.tensor(D.IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(D.IMAGENET_STD).view(1, 3, 1, 1)
    assert torch.allclose(only["image"], (raw - mean) / std, atol=1e-6)


def test_tensor_cache_loader_stops_cleanly_when_abandoned():
    arr = np.random.default_rng(0).integers(0, 255, (50, 3, 8, 8), dtype=np.uint8)
    loader = fastpath.TensorCacheLoader(arr, np.zeros(50), batch_size=4)
    for i, _ in enumerate(loader):
        if i == 1:
            break
    import threading
    assert not any(t.name == "tensor-cache-prefetch" and t.is_alive() for t in threading.enumerate())


def test_gpu_augment_is_per_sample():
    img = torch.from_numpy(lesion(32, 32, 0)).permute(2, 0, 1)
    batch = img[None].repeat(8, 1, 1, 1)
    out = fastpath.gpu_augment(batch, torch.Generator().manual_seed(0))
    assert out.shape == batch.shape and out.dtype == torch.float32
    assert not torch.equal(out[0], out[1])
    assert len({tuple(o.flatten()[:50].tolist()) for o in out}) == 8
    same = fastpath.gpu_augment(batch, torch.Generator().manual_seed(0))
    assert torch.equal(out, same)
    # Without flips, jitter and normalisation the batch comes back as float 0..1.
    ident = fastpath.gpu_augment(batch, flips=False, dihedral=False, brightness=0, contrast=0, saturation=0,
                          normalize=False)
    assert torch.allclose(ident, batch.float() / 255)
    # Geometry only: every output is one of the eight symmetries of the square.
    geo = fastpath.gpu_augment(batch, torch.Generator().manual_seed(1), brightness=0, contrast=0, saturation=0,
                        normalize=False)
    x = img.float() / 255
    syms = [torch.rot90(v, k, (-2, -1)) for v in (x, x.flip(-1)) for k in range(4)]
    assert all(any(torch.allclose(g, s) for s in syms) for g in geo)
    rot = fastpath.gpu_augment(batch, torch.Generator().manual_seed(2), max_angle=30, scale=(0.9, 1.1))
    assert rot.shape == batch.shape


def test_decode_jpeg_batch_matches_single_reads(tmp_path, image_frame):
    paths = [image_frame.path[i] for i in range(8) if i not in BAD]  # JPEGs and PNGs mixed
    out = fastpath.decode_jpeg_batch(paths, 24)
    assert out.shape == (len(paths), 3, 24, 24) and out.dtype == torch.uint8
    for i, p in enumerate(paths):
        ref = torch.from_numpy(resize_image(read_image(p), 24).copy()).permute(2, 0, 1).float()
        assert (out[i].float() - ref).abs().mean() < 6  # bilinear here, Lanczos there
    with pytest.raises(ValueError, match="ISIC_0000003"):
        fastpath.decode_jpeg_batch([paths[0], image_frame.path[3]], 24)


def test_real_uda1_images_through_both_roads(tmp_path):
    if not (UDA1 / "metadata.csv").is_file():
        pytest.skip("data_samples/isic-archive-uda1 absent")
    meta = pd.read_csv(UDA1 / "metadata.csv").head(4)
    frame = pd.DataFrame({"image_id": meta.isic_id, "path": [str(UDA1 / f"{i}.jpg") for i in meta.isic_id],
                          "target": (meta.benign_malignant == "malignant").astype(int)})
    batch = fastpath.decode_jpeg_batch(frame.path, 64)
    out = fastpath.build_tensor_cache(frame, 64, tmp_path / "uda.npy", progress=False)
    cached = torch.from_numpy(np.load(out))
    assert (batch.float() - cached.float()).abs().mean() < 4
    item = D.LesionDataset(frame, D.eval_transforms(64))[0]
    assert item["image"].shape == (3, 64, 64)
