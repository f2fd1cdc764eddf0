"""The one-time resize cache: every image of a folder as a small square JPEG.

Dermoscopy originals are often several megapixels; a CNN looks at 224-512 px.
Decoding a 1024 px JPEG for each of 15 epochs wastes most of an epoch's time,
so the 2020 winning pipelines trained on pre-resized copies (Ha et al., 2020).

How an image becomes ``size`` × ``size`` here (:func:`resize_image`): the
shorter side is scaled to ``size`` and the longer side is centre-cropped to
``size`` (aspect ratio kept, nothing squashed; the lesion is almost always
centred, so the crop removes borders). Resampling is Lanczos (Pillow's
anti-aliased ``Image.Resampling.LANCZOS``).

Speed (:func:`resize_folder`): JPEGs are decoded with Pillow's draft mode
(``Image.draft``: libjpeg scales by 1/2, 1/4 or 1/8 during the inverse DCT,
while both sides stay at least ``size``), and files are spread over worker
processes.
"""
from __future__ import annotations

import os
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.std import tqdm  # text progress bars in every front end

from helpers.io import load_rgb, read_dicom, write_atomically

__all__ = ["IMAGE_SUFFIXES", "RESAMPLE", "REDUCING_GAP", "resize_image", "resize_folder", "centre_crop_box"]

#: File suffixes :func:`resize_folder` picks up (case-insensitive).
IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".dcm")
#: Resampling filter of :func:`resize_image`.
RESAMPLE = Image.Resampling.LANCZOS
#: Pillow's ``reducing_gap``: shrink by an integer factor first (box filter) while the
#: remaining Lanczos step still shrinks at least 3x: near-identical output, much faster
#: on large PNG/DICOM sources, which have no JPEG draft mode.
REDUCING_GAP = 3.0


def centre_crop_box(width: int, height: int) -> tuple[int, int, int, int]:
    """The largest centred square inside a ``width`` × ``height`` image, as a PIL box.

    Introduced in chapter 4 (image files and the resize cache).
    """
    side = min(width, height)
    left = (width - side) // 2
    top = (height - side) // 2
    return (left, top, left + side, top + side)


def resize_image(img: np.ndarray | Image.Image, size: int) -> np.ndarray:
    """Resize an RGB image to ``size`` × ``size``: shorter side to ``size``, centre crop.

    Accepts an (H, W, 3) uint8 array or a PIL image; returns a uint8 array of
    shape (size, size, 3). Crop and resize happen in one Lanczos resampling
    step (``PIL.Image.resize(box=...)``); for shrink factors above 6 Pillow
    first reduces by an integer factor (``reducing_gap=3``), which is much
    faster and visually identical.

    Introduced in chapter 4 (image files and the resize cache).
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    pil = img if isinstance(img, Image.Image) else Image.fromarray(np.asarray(img, dtype=np.uint8))
    return np.asarray(_resize_pil(pil, size), dtype=np.uint8)


def _resize_pil(img: Image.Image, size: int) -> Image.Image:
    """Shorter side to ``size``, centre crop, one Lanczos step (shared by the cache and resize_image)."""
    if img.mode != "RGB":
        img = img.convert("RGB")
    return img.resize((size, size), RESAMPLE, box=centre_crop_box(*img.size), reducing_gap=REDUCING_GAP)


def _dest_for(src_root: Path, dst_root: Path, path: Path) -> Path:
    return (dst_root / path.relative_to(src_root)).with_suffix(".jpg")


def _resize_one(job: tuple[str, str, int, int]) -> tuple[str, str | None]:
    """Worker: resize one file; never raises. Returns (status, error).

    ``"unwritable"``: the destination could not be written (full disk,
    read-only folder); that stops the whole folder, a bad source does not.
    """
    src, dst, size, quality = job
    dst_path = Path(dst)
    try:
        path = Path(src)
        if path.suffix.lower() == ".dcm":
            img = Image.fromarray(read_dicom(path)[0])
        else:
            img = load_rgb(path, draft=size)  # RGB PIL image, JPEG decoded in draft mode
        out = _resize_pil(img, size)
    except Exception as exc:  # one bad file must not stop the folder
        return "failed", str(exc) if isinstance(exc, ValueError) else f"{src}: {type(exc).__name__}: {exc}"
    try:   # atomic: an interrupted run leaves no half-written file
        write_atomically(dst_path, lambda tmp: out.save(tmp, format="JPEG", quality=quality))
        return "resized", None
    except ValueError as exc:
        return "unwritable", str(exc)


def _plan(src_root: Path, dst_root: Path, size: int, quality: int) -> tuple[list[dict], list[tuple], list[int]]:
    """One row per image under ``src_root``; the resize jobs of those not done yet, and their rows."""
    files = sorted(
        p for p in src_root.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.name.startswith(".")
    )
    if dst_root.resolve().is_relative_to(src_root.resolve()):
        files = [p for p in files if not p.resolve().is_relative_to(dst_root.resolve())]
    rows: list[dict] = []
    jobs: list[tuple[str, str, int, int]] = []
    job_rows: list[int] = []
    seen: dict[Path, Path] = {}
    for path in files:
        dest = _dest_for(src_root, dst_root, path)
        row = {"source": path, "dest": dest, "status": "skipped", "error": None}
        if dest in seen:
            row.update(status="failed", error=f"{path}: same destination as {seen[dest]}")
        else:
            seen[dest] = path
            try:
                done = dest.exists() and dest.stat().st_mtime >= path.stat().st_mtime
            except OSError:
                done = False
            if not done:
                jobs.append((str(path), str(dest), int(size), int(quality)))
                job_rows.append(len(rows))
        rows.append(row)
    return rows, jobs, job_rows


def _run(jobs: list[tuple], n_workers: int, progress: bool, desc: str) -> list[tuple[str, str | None]]:
    """Resize the jobs in this process or in ``n_workers`` processes; stop at the first unwritable file."""
    bar = tqdm(total=len(jobs), desc=desc, unit="img", disable=not progress)
    results: list[tuple[str, str | None]] = []
    try:
        if n_workers <= 1:
            for job in jobs:
                results.append(_resize_one(job))
                bar.update()
                if results[-1][0] == "unwritable":
                    break
        else:
            chunk = max(1, min(16, len(jobs) // (n_workers * 8)))
            with ProcessPoolExecutor(max_workers=n_workers) as pool:
                for res in pool.map(_resize_one, jobs, chunksize=chunk):
                    results.append(res)
                    bar.update()
                    if res[0] == "unwritable":
                        pool.shutdown(wait=True, cancel_futures=True)
                        break
    finally:
        bar.close()
    return results


def resize_folder(
    src: os.PathLike | str,
    dst: os.PathLike | str,
    size: int,
    workers: int | None = None,
    quality: int = 95,
    progress: bool = True,
) -> pd.DataFrame:
    """Build the resize cache: every image under ``src`` as a ``size`` × ``size`` JPEG under ``dst``.

    Picks up ``.jpg``, ``.jpeg``, ``.png`` and ``.dcm`` files recursively
    (DICOM through :func:`helpers.io.read_dicom`) and writes
    ``dst/<same relative path>.jpg`` (JPEG ``quality``), resized by
    :func:`resize_image` (shorter side to ``size``, centre crop). JPEGs are
    decoded in draft mode (DCT-scaled, see the module docstring). Files run in
    ``workers`` processes (``concurrent.futures.ProcessPoolExecutor``; default
    ``os.cpu_count()``; 0 or 1 = in this process). A destination that exists and
    is newer than its source is skipped, so a rerun only does new files.

    Never stops on a bad file: returns a frame with one row per source file,
    columns ``source``, ``dest``, ``status`` (``resized``/``skipped``/``failed``)
    and ``error`` (None unless failed), and warns once with the failure count.
    An output folder that cannot be written (read-only, full disk) stops the
    run with a ``ValueError`` naming the file or folder; each JPEG is written to
    a temporary file and renamed when complete, so no half-written image is
    left under a final name.

    Introduced in chapter 4 (image files and the resize cache).
    """
    src_root, dst_root = Path(src), Path(dst)
    if not src_root.is_dir():
        raise ValueError(f"{src_root}: source folder not found")
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    rows, jobs, job_rows = _plan(src_root, dst_root, size, quality)
    if jobs:
        try:
            dst_root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"{dst_root}: cannot create the output folder ({exc.strerror or exc})") from None
    n_workers = (os.cpu_count() or 1) if workers is None else int(workers)
    results = _run(jobs, max(1, min(n_workers, len(jobs))), progress and bool(jobs), f"resize to {size}px")
    unwritable = next((error for status, error in results if status == "unwritable"), None)
    if unwritable is not None:
        raise ValueError(f"{unwritable}; the output folder {dst_root} is full or read-only")
    for i, (status, error) in zip(job_rows, results):
        rows[i].update(status=status, error=error)

    frame = pd.DataFrame(rows, columns=["source", "dest", "status", "error"])
    n_failed = int((frame["status"] == "failed").sum())
    if n_failed:
        warnings.warn(
            f"resize_folder: {n_failed} of {len(frame)} files failed; see the 'error' column",
            stacklevel=2,
        )
    return frame
