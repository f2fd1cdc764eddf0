"""The throughput road from image files to a training batch: no Python work per image.

:func:`build_tensor_cache` writes every image, resized, into one ``uint8`` memmap on disk (with a
sidecar CSV of its rows; a bad image is stored as zeros and listed there); :class:`TensorCacheLoader`
cuts batches out of it and augments whole batches on the GPU (:func:`gpu_augment`);
:func:`decode_jpeg_batch` decodes a list of JPEGs in one call. The teaching road is :mod:`helpers.data`.
"""
from __future__ import annotations

import math
import os
import queue
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.std import tqdm  # text progress bars in every front end

from helpers import display_path
from helpers.data import quiet_tv_io, read_image_tensor
from helpers.io import image_header, read_image
from helpers.preprocess import resize_image
from helpers.vocab import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["build_tensor_cache", "cache_index", "gpu_augment", "TensorCacheLoader", "decode_jpeg_batch"]


def cache_index(cache_path: os.PathLike | str) -> pd.DataFrame:
    """The sidecar CSV of a tensor cache: ``image_id`` and ``error`` (``<NA>`` for images cached well).

    Not called in a chapter; used by `TensorCacheLoader`.
    """
    side = Path(cache_path).with_suffix(".csv")
    if not side.is_file():
        raise ValueError(f"{side}: tensor cache index not found")
    return pd.read_csv(side, dtype="string", keep_default_na=False, na_values=[""])


def _cache_matches(out: Path, side: Path, ids: list[str], size: int) -> bool:
    if not (out.is_file() and side.is_file()):
        return False
    try:
        arr = np.load(out, mmap_mode="r")
        index = cache_index(out)
    except (ValueError, OSError):
        return False
    return (arr.dtype == np.uint8 and arr.shape == (len(ids), 3, size, size)
            and index["image_id"].fillna("").tolist() == ids)


def build_tensor_cache(frame: pd.DataFrame, size: int, out_path: os.PathLike | str,
                       workers: int | None = None, progress: bool = True) -> Path:
    """Write every image of ``frame``, resized to ``size``², into one ``uint8`` ``.npy`` memmap (N, 3, S, S).

    Shorter side to ``size`` and centre crop (:func:`helpers.preprocess.resize_image`). ``<out_path>.csv``
    lists ``image_id`` and ``error`` per row (an unreadable file is stored as zeros). A cache with the same
    ids and size is kept; files are renamed into place at the end (index, then array); an unwritable
    folder raises ``ValueError``. Returns the ``.npy`` path.

    Introduced in chapter 7 (the data pipeline).
    """
    out = Path(out_path)
    if out.suffix != ".npy":
        out = out.with_name(out.name + ".npy")
    side = out.with_suffix(".csv")
    if "path" not in frame:
        raise ValueError("build_tensor_cache: frame has no 'path' column")
    ids = (frame["image_id"].astype("string").fillna("").tolist() if "image_id" in frame
           else [Path(str(p)).stem for p in frame["path"]])
    if _cache_matches(out, side, ids, size):
        print(f"tensor cache up to date: {display_path(out)} ({len(ids)} images, {size} px)")
        return out
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp.npy")
    side_tmp = side.with_name(f".{side.name}.{os.getpid()}.tmp")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(ids), 3, size, size))
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ValueError(f"{out}: cannot write the tensor cache ({exc.strerror or exc})") from None
    errors: list[str] = [""] * len(ids)
    paths = frame["path"].tolist()

    def work(i: int) -> None:
        p = paths[i]
        try:
            if p is None or pd.isna(p) or not str(p):
                raise ValueError(f"row {i}, column 'path': no image file")
            arr[i] = resize_image(read_image(str(p), draft=size), size).transpose(2, 0, 1)
        except Exception as exc:  # one bad file must not stop the cache
            errors[i] = str(exc) if isinstance(exc, ValueError) else f"{p}: {type(exc).__name__}: {exc}"
            arr[i] = 0

    try:
        with ThreadPoolExecutor(workers or min(8, os.cpu_count() or 1)) as pool:
            list(tqdm(pool.map(work, range(len(ids))), total=len(ids), disable=not progress,
                      desc=f"caching {size}px", leave=False))
        arr.flush()
        del arr
        pd.DataFrame({"image_id": ids, "error": errors}).to_csv(side_tmp, index=False)
        os.replace(side_tmp, side)   # the index first, the array last: a .npy is always complete
        os.replace(tmp, out)
    except OSError as exc:
        raise ValueError(f"{out}: cannot write the tensor cache ({exc.strerror or exc})") from None
    finally:
        tmp.unlink(missing_ok=True)
        side_tmp.unlink(missing_ok=True)
    n_bad = sum(bool(e) for e in errors)
    if n_bad:
        print(f"tensor cache: {n_bad} unreadable image(s) stored as zeros (listed in {display_path(side)})")
    return out


def _normalize(x: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN,
               std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """``(x - mean) / std`` per channel of a float (B, 3, H, W) batch."""
    mean_t, std_t = (torch.tensor(v, device=x.device).view(1, 3, 1, 1) for v in (mean, std))
    return (x - mean_t) / std_t


def gpu_augment(batch: torch.Tensor, generator: torch.Generator | None = None, *,
                flips: bool = True, dihedral: bool = True, max_angle: float = 0.0,
                scale: tuple[float, float] = (1.0, 1.0), brightness: float = 0.2, contrast: float = 0.2,
                saturation: float = 0.2, normalize: bool = True,
                mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """Augment a whole ``uint8`` batch (B, 3, H, W) on its device, a different draw per image.

    Flips and, for square images, transposes (the eight dihedral symmetries), optional rotation
    (±``max_angle``°) and zoom (``scale``), brightness, contrast and saturation in ``1 ± strength``, then
    ImageNet normalisation; random numbers from ``generator``, so a run replays. Returns float32.

    Not called in a chapter; used by `TensorCacheLoader`.
    """
    if batch.ndim != 4 or batch.shape[1] != 3:
        raise ValueError(f"gpu_augment: expected a (B, 3, H, W) batch, got shape {tuple(batch.shape)}")
    dev = batch.device
    b, _, h, w = batch.shape
    x = batch.float().div_(255.0) if not batch.is_floating_point() else batch.float()

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator, device=dev)

    def pick(a: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        return torch.where((rand(b) < 0.5).view(-1, 1, 1, 1), a, other)

    def grey(x: torch.Tensor) -> torch.Tensor:
        return (x * torch.tensor([0.299, 0.587, 0.114], device=dev).view(1, 3, 1, 1)).sum(1, keepdim=True)

    def factor(strength: float) -> torch.Tensor:
        return 1 + (rand(b, 1, 1, 1) * 2 - 1) * strength

    if flips:
        x = pick(x.flip(-1), x)
        x = pick(x.flip(-2), x)
    if dihedral and h == w:
        x = pick(x.transpose(-1, -2), x)
    if max_angle or tuple(scale) != (1.0, 1.0):
        angle = (rand(b) * 2 - 1) * math.radians(max_angle)
        zoom = scale[0] + rand(b) * (scale[1] - scale[0])
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        zero = torch.zeros_like(cos)
        theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if brightness:
        x = x * factor(brightness)
    if contrast:
        m = grey(x).mean((2, 3), keepdim=True)
        x = (x - m) * factor(contrast) + m
    if saturation:
        g = grey(x)
        x = (x - g) * factor(saturation) + g
    x = x.clamp_(0.0, 1.0)
    return _normalize(x, mean, std) if normalize else x


class _EpochSampler:
    """What a training loop expects of ``loader.sampler``: ``set_epoch`` and ``len`` (images per epoch)."""

    def __init__(self, loader: TensorCacheLoader) -> None:
        self.loader = loader

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    def __len__(self) -> int:
        return self.loader.num_samples


class TensorCacheLoader:
    """Batches from a tensor cache (:func:`build_tensor_cache`), augmented on the device.

    ``cache``: the ``.npy`` path (a read-only memmap) or a ``uint8`` array (N, 3, S, S); ``targets``
    and ``meta`` (N, M) per cache row; ``indices``: the rows to use, less those the sidecar lists as
    unreadable (``skip_bad``). Each epoch shuffles with a generator seeded by ``seed`` and the epoch
    (:meth:`set_epoch` replays one exactly). A batch is one fancy index into the memmap, pinned,
    copied to ``device`` and, with ``augment``, passed through :func:`gpu_augment` (``augment_kw``),
    else only normalised; ``channels_last`` gives NHWC strides; ``prefetch`` reads the next batch in
    a thread. Yields ``{"image", "target", "meta" (if given), "index" (cache row, on the CPU)}`` and
    has ``batch_size``, ``drop_last`` and ``sampler`` like a ``DataLoader``. With ``world_size`` > 1
    each ``rank`` takes every ``world_size``-th row, padded by wrapping (as ``DistributedSampler``).

    Introduced in chapter 7 (the data pipeline).
    """

    def __init__(self, cache: os.PathLike | str | np.ndarray, targets: Any = None, *,
                 indices: Any = None, meta: np.ndarray | None = None, batch_size: int = 64,
                 shuffle: bool = True, drop_last: bool = False, seed: int = 0,
                 device: torch.device | str = "cpu", augment: bool = False,
                 augment_kw: dict[str, Any] | None = None, channels_last: bool = False,
                 prefetch: bool = True, skip_bad: bool = True, rank: int = 0,
                 world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"tensor cache: rank {rank} outside 0..{world_size - 1}")
        self.rank, self.world_size = int(rank), int(world_size)
        if isinstance(cache, np.ndarray):
            self.array, bad = cache, np.zeros(len(cache), bool)
        else:
            path = Path(cache)
            if not path.is_file():
                raise ValueError(f"{path}: tensor cache not found (build it with build_tensor_cache)")
            self.array = np.load(path, mmap_mode="r")
            try:
                bad = cache_index(path)["error"].notna().to_numpy()
            except ValueError:
                bad = np.zeros(len(self.array), bool)
        if self.array.ndim != 4 or self.array.shape[1] != 3 or self.array.dtype != np.uint8:
            raise ValueError(f"tensor cache: expected uint8 (N, 3, S, S), "
                             f"got {self.array.dtype} {self.array.shape}")
        n = len(self.array)
        rows = np.arange(n) if indices is None else np.asarray(indices, dtype=np.int64).reshape(-1)
        if rows.size and (rows.min() < 0 or rows.max() >= n):
            raise ValueError(f"tensor cache: indices outside 0..{n - 1}")
        self.indices = rows[~bad[rows]] if skip_bad else rows
        self.targets = None if targets is None else torch.as_tensor(np.asarray(targets))
        self.meta = None if meta is None else torch.as_tensor(np.asarray(meta, dtype=np.float32))
        for name, values in (("targets", self.targets), ("meta rows", self.meta)):
            if values is not None and len(values) != n:
                raise ValueError(f"tensor cache: {len(values)} {name} for {n} cached images")
        self.batch_size, self.shuffle, self.drop_last = int(batch_size), shuffle, drop_last
        self.seed, self.device = int(seed), torch.device(device)
        self.augment, self.augment_kw = augment, dict(augment_kw or {})
        self.channels_last, self.prefetch = channels_last, prefetch
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration epoch ``epoch`` (its shuffle and augmentation are replayed exactly)."""
        self.epoch = int(epoch)

    @property
    def num_samples(self) -> int:
        """Images this rank visits per epoch (before ``drop_last``)."""
        return math.ceil(len(self.indices) / self.world_size)

    @property
    def sampler(self) -> _EpochSampler:
        """A sampler-like view (``set_epoch``, ``len``), as ``DataLoader.sampler``."""
        return _EpochSampler(self)

    def __len__(self) -> int:
        n = self.num_samples
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The cache rows of epoch ``epoch`` (this rank's share) in the order they are visited."""
        order = self.indices.copy()
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = order[torch.randperm(len(order), generator=g).numpy()]
        if self.world_size > 1 and len(order):
            total = self.num_samples * self.world_size
            order = np.resize(order, total)[self.rank::self.world_size]  # np.resize wraps around
        return order

    def _read(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        pin = self.device.type == "cuda"
        index = torch.from_numpy(rows)
        out = {"image": torch.from_numpy(np.ascontiguousarray(self.array[rows]))}  # one fancy index per batch
        if self.targets is not None:
            out["target"] = self.targets[index]
        if self.meta is not None:
            out["meta"] = self.meta[index]
        out = {k: v.pin_memory() if pin else v for k, v in out.items()}
        return {"image": out.pop("image"), "index": index, **out}

    def _produce(self, order: np.ndarray) -> Iterator[dict[str, torch.Tensor]]:
        batches = (np.sort(order[i * self.batch_size:(i + 1) * self.batch_size]) for i in range(len(self)))
        if not self.prefetch:
            yield from map(self._read, batches)
            return
        q: queue.Queue = queue.Queue(maxsize=2)
        stop = threading.Event()
        done = object()

        def put(item: Any) -> bool:
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False  # the consumer has gone

        def worker() -> None:
            try:
                for rows in batches:
                    if not put(self._read(rows)):
                        return
                put(done)
            except BaseException as exc:  # hand the error to the consumer
                put(exc)

        thread = threading.Thread(target=worker, name="tensor-cache-prefetch", daemon=True)
        thread.start()
        try:
            while (item := q.get()) is not done:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            thread.join(timeout=5)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        epoch = self.epoch
        self.epoch += 1
        gen = None
        if self.augment:
            gen = torch.Generator(device=self.device).manual_seed(
                (self.seed * 1_000_003 + epoch) * 7919 + self.rank + 1)
        for cpu in self._produce(self.epoch_order(epoch)):
            # Images, targets and metadata go to the device; the row index stays on the CPU.
            batch = {k: v if k == "index" else v.to(self.device, non_blocking=True) for k, v in cpu.items()}
            if self.augment:
                batch["image"] = gpu_augment(batch["image"], gen, **self.augment_kw)
            else:
                batch["image"] = _normalize(batch["image"].float() / 255.0)
            if self.channels_last:
                batch["image"] = batch["image"].contiguous(memory_format=torch.channels_last)
            yield batch


def _resize_crop_group(imgs: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 3, H, W) uint8 of one size → (B, 3, size, size): shorter side to ``size``, centre crop."""
    h, w = imgs.shape[-2:]
    s = size / min(h, w)
    nh, nw = max(size, round(h * s)), max(size, round(w * s))
    x = imgs.float()
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    top, left = (nh - size) // 2, (nw - size) // 2
    return x[..., top:top + size, left:left + size].round_().clamp_(0, 255).to(torch.uint8)


def decode_jpeg_batch(paths: Sequence[os.PathLike | str], size: int,
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """Decode a list of JPEG files in one call and resize them to a ``uint8`` batch (B, 3, size, size).

    ``torchvision.io.decode_jpeg`` on the list: batched nvJPEG on CUDA, libjpeg-turbo (with EXIF
    orientation) on the CPU; images of one size are resized together (bilinear, shorter side, centre
    crop). Other files go through :func:`read_image_tensor`; bad files and decompression bombs raise
    ``ValueError`` naming the file.

    Introduced in chapter 7 (the data pipeline).
    """
    from torchvision.io import ImageReadMode, decode_jpeg, read_file

    dev = torch.device(device)
    paths = [Path(p) for p in paths]
    images: list[torch.Tensor | None] = [None] * len(paths)
    jpeg_i, jpeg_data = [], []
    with quiet_tv_io():
        for i, p in enumerate(paths):
            try:
                data = read_file(str(p))
            except (RuntimeError, OSError):
                raise ValueError(f"{p}: cannot read file") from None
            if data.numel() >= 3 and int(data[0]) == 0xFF and int(data[1]) == 0xD8:
                image_header(data.numpy(), p)   # refuses bombs: nvJPEG / libjpeg have no pixel limit
                jpeg_i.append(i)
                jpeg_data.append(data)
        if jpeg_data:
            try:
                decoded = decode_jpeg(jpeg_data, mode=ImageReadMode.RGB, device=dev,
                                      apply_exif_orientation=dev.type == "cpu")
            except RuntimeError:
                decoded = [None] * len(jpeg_data)
            for i, img in zip(jpeg_i, decoded):
                images[i] = img
    images = [read_image_tensor(p).to(dev) if img is None else img for p, img in zip(paths, images)]
    out = torch.empty((len(paths), 3, size, size), dtype=torch.uint8, device=dev)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, img in enumerate(images):
        groups.setdefault(tuple(img.shape[-2:]), []).append(i)
    for members in groups.values():
        resized = _resize_crop_group(torch.stack([images[i] for i in members]), size)
        out[torch.tensor(members, device=dev)] = resized
    return out
