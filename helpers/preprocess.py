"""The one-time resize cache: every image of a folder as a small square JPEG.

Dermoscopy originals are often several megapixels and a CNN looks at 224-512 px, so the 2020 winners
trained on pre-resized copies (Ha et al. 2020). :func:`resize_image` scales the shorter side to ``size``
and centre-crops the longer one (Lanczos); :func:`resize_folder` decodes JPEGs in Pillow's draft mode
(libjpeg scales by 1/2, 1/4 or 1/8 during the inverse DCT) and spreads files over worker processes.
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
#: Pillow's ``reducing_gap``: shrink by an integer factor first (box filter) while the Lanczos step
#: still shrinks at least 3x: near-identical output, much faster on large PNG/DICOM sources.
REDUCING_GAP = 3.0


def centre_crop_box(width: int, height: int) -> tuple[int, int, int, int]:
    """The largest centred square inside a ``width`` × ``height`` image, as a PIL box.

    Introduced in chapter 4 (image files and the resize cache).
    """
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return (left, top, left + side, top + side)


def resize_image(img: np.ndarray | Image.Image, size: int) -> np.ndarray:
    """Resize an RGB image (array or PIL) to a ``uint8`` array (size, size, 3): shorter side, centre crop.

    Crop and resize are one Lanczos step (``PIL.Image.resize(box=...)``, ``reducing_gap=3``).

    Introduced in chapter 4 (image files and the resize cache).
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    pil = img if isinstance(img, Image.Image) else Image.fromarray(np.asarray(img, dtype=np.uint8))
    return np.asarray(_resize_pil(pil, size), dtype=np.uint8)


def _resize_pil(img: Image.Image, size: int) -> Image.Image:
    img = img if img.mode == "RGB" else img.convert("RGB")
    return img.resize((size, size), RESAMPLE, box=centre_crop_box(*img.size), reducing_gap=REDUCING_GAP)


def _resize_one(job: tuple[str, str, int, int]) -> tuple[str, str | None]:
    """Worker: resize one file; never raises. Returns (status, error).

    ``"unwritable"``: the destination could not be written; that stops the folder, a bad source does not.
    """
    src, dst, size, quality = job
    try:
        path = Path(src)
        if path.suffix.lower() == ".dcm":
            img = Image.fromarray(read_dicom(path)[0])
        else:
            img = load_rgb(path, draft=size)  # JPEGs decoded in draft mode
        out = _resize_pil(img, size)
    except Exception as exc:  # one bad file must not stop the folder
        return "failed", str(exc) if isinstance(exc, ValueError) else f"{src}: {type(exc).__name__}: {exc}"
    try:
        write_atomically(Path(dst), lambda tmp: out.save(tmp, format="JPEG", quality=quality))
        return "resized", None
    except ValueError as exc:
        return "unwritable", str(exc)


def _plan(src_root: Path, dst_root: Path, size: int,
          quality: int) -> tuple[list[dict], list[tuple], list[int]]:
    """One row per image under ``src_root``; the resize jobs of those not done yet, and their rows."""
    files = sorted(p for p in src_root.rglob("*")
                   if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.name.startswith("."))
    if dst_root.resolve().is_relative_to(src_root.resolve()):
        files = [p for p in files if not p.resolve().is_relative_to(dst_root.resolve())]
    rows: list[dict] = []
    jobs: list[tuple[str, str, int, int]] = []
    job_rows: list[int] = []
    seen: dict[Path, Path] = {}
    for path in files:
        dest = (dst_root / path.relative_to(src_root)).with_suffix(".jpg")
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
    results: list[tuple[str, str | None]] = []
    with tqdm(total=len(jobs), desc=desc, unit="img", disable=not progress) as bar:
        if n_workers <= 1:
            for job in jobs:
                results.append(_resize_one(job))
                bar.update()
                if results[-1][0] == "unwritable":
                    break
            return results
        chunk = max(1, min(16, len(jobs) // (n_workers * 8)))
        with ProcessPoolExecutor(max_workers=n_workers) as pool:
            for res in pool.map(_resize_one, jobs, chunksize=chunk):
                results.append(res)
                bar.update()
                if res[0] == "unwritable":
                    pool.shutdown(wait=True, cancel_futures=True)
                    break
    return results


def resize_folder(src: os.PathLike | str, dst: os.PathLike | str, size: int, workers: int | None = None,
                  quality: int = 95, progress: bool = True) -> pd.DataFrame:
    """Build the resize cache: every image under ``src`` as a ``size`` × ``size`` JPEG under ``dst``.

    ``.jpg``, ``.jpeg``, ``.png`` and ``.dcm`` files, recursively, become ``dst/<same relative
    path>.jpg`` (:func:`resize_image`, JPEG ``quality``), in ``workers`` processes (default
    ``os.cpu_count()``; 0 or 1: this process). A destination newer than its source is skipped. A bad
    file never stops the run: returns one row per source file (``source``, ``dest``, ``status``
    resized/skipped/failed, ``error``) and warns once with the failure count. An unwritable output
    folder raises ``ValueError``; files are written atomically.

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
        warnings.warn(f"resize_folder: {n_failed} of {len(frame)} files failed; see the 'error' column",
                      stacklevel=2)
    return frame
