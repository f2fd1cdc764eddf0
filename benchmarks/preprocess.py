"""Benchmark the resize cache: helpers.preprocess.resize_folder against a plain baseline.

Baseline: one process, ``PIL.Image.open`` + ``convert("RGB")`` + the same
centre-crop Lanczos resize + JPEG save, no draft mode. Both write
``size`` × ``size`` JPEGs of the same quality from the same real images
(../shared/datasets/isic-archive-uda1), in the same run, into fresh folders.

    .venv/bin/python benchmarks/preprocess.py [--size 256] [--limit N] [--workers W]

Prints a Markdown block to paste into benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from PIL import Image  # noqa: E402

from helpers.preprocess import RESAMPLE, centre_crop_box, resize_folder  # noqa: E402

DEFAULT_SRC = REPO_ROOT.parent / "shared" / "datasets" / "isic-archive-uda1"


def baseline(files: list[Path], dst: Path, size: int, quality: int) -> None:
    """The plain way: full-resolution decode, one process."""
    for f in files:
        with Image.open(f) as im:
            rgb = im.convert("RGB")
        out = rgb.resize((size, size), RESAMPLE, box=centre_crop_box(*rgb.size))
        out.save(dst / (f.stem + ".jpg"), format="JPEG", quality=quality)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, default=DEFAULT_SRC, help="folder of real JPEGs")
    ap.add_argument("--size", type=int, default=256, help="output side in pixels (default 256)")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N images")
    ap.add_argument("--workers", type=int, default=None, help="resize_folder workers (default: CPU count)")
    ap.add_argument("--quality", type=int, default=95)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each method; the best is reported (default 3)")
    args = ap.parse_args(argv)

    if not args.src.is_dir():
        print(f"benchmark skipped: real images not found at {args.src} "
              "(needs ../shared/datasets/isic-archive-uda1 next to the repo)", file=sys.stderr)
        return 2
    files = sorted(p for p in args.src.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
    if args.limit:
        files = files[: args.limit]
    if not files:
        print(f"benchmark skipped: no JPEGs in {args.src}", file=sys.stderr)
        return 2
    megapixels = 0.0
    for f in files:
        with Image.open(f) as im:
            megapixels += im.size[0] * im.size[1] / 1e6
    workers = args.workers if args.workers is not None else (os.cpu_count() or 1)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = tmp / "src"  # symlinks, so --limit applies to resize_folder too
        src.mkdir()
        for f in files:
            (src / f.name).symlink_to(f.resolve())
        t_base = t_one = t_fast = float("inf")
        for r in range(max(1, args.repeat)):  # alternate, keep the best: robust to a busy machine
            (tmp / f"base{r}").mkdir()
            t0 = time.perf_counter()
            baseline(files, tmp / f"base{r}", args.size, args.quality)
            t_base = min(t_base, time.perf_counter() - t0)

            for n_workers, key in ((1, "one"), (workers, "fast")):
                t0 = time.perf_counter()
                frame = resize_folder(src, tmp / f"{key}{r}", args.size, workers=n_workers,
                                      quality=args.quality, progress=False)
                elapsed = time.perf_counter() - t0
                if key == "one":
                    t_one = min(t_one, elapsed)
                else:
                    t_fast = min(t_fast, elapsed)
                n_ok = int((frame["status"] == "resized").sum())
                if n_ok != len(files):
                    print(f"warning: resize_folder resized {n_ok} of {len(files)} files", file=sys.stderr)

    n = len(files)
    rate_base, rate_fast = n / t_base, n / t_fast
    print(f"### Resize cache ({platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"Pillow {Image.__version__})")
    print()
    print(f"{n} real JPEGs from isic-archive-uda1 ({megapixels / n:.2f} MP on average) -> "
          f"{args.size}x{args.size} JPEG q{args.quality}, same run, best of {max(1, args.repeat)}.")
    print()
    print("| method | workers | seconds | images/s |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| baseline: PIL open + convert + resize, no draft | 1 | {t_base:.2f} | {rate_base:.1f} |")
    print(f"| `resize_folder`, draft mode only | 1 | {t_one:.2f} | {n / t_one:.1f} |")
    print(f"| `resize_folder`, draft mode + processes | {workers} | {t_fast:.2f} | {rate_fast:.1f} |")
    print()
    print(f"Speed-up: **{rate_fast / rate_base:.2f}x** with {workers} workers "
          f"({t_base / t_one:.2f}x from draft mode alone). Machine load while measuring: "
          f"{os.getloadavg()[0]:.2f} (1-min average, includes this run).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
