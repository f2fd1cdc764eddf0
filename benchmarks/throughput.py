"""Training throughput: does the input pipeline keep up with the model?

For each configuration (model @ input size) this script measures, in one run
on one device, three rates in images per second:

1. **ceiling** — random tensors already on the device, the training step only
   (AdamW, bf16 autocast where the GPU supports it, channels_last, batch B):
   no input pipeline can beat it;
2. **starter** — the typical first pipeline: Pillow decode + torchvision
   transforms in ``DataLoader`` workers (CPU count - 1), feeding the same
   training step as (1);
3. **this project** — ``helpers.fastpath.build_tensor_cache`` once (timed apart,
   as the one-time cost it is), then ``TensorCacheLoader`` + ``gpu_augment``
   feeding ``helpers.train.fit`` itself: the real path, not a copy of it.

(2) and (3) are also given as a ratio to (1). Warm-up steps are excluded and
CUDA is synchronised before each clock reading. The JPEGs are synthetic:
``helpers.synthetic.make_lesion`` painted at up to 256 px, upsampled to the
source size (bicubic) and saved at quality 90 into a temporary folder.

    .venv/bin/python benchmarks/throughput.py                      # GPU: full settings
    .venv/bin/python benchmarks/throughput.py --quick --device cpu # CI smoke run, < 1 min
    .venv/bin/python benchmarks/throughput.py --markdown           # table for RESULTS.md

``--models`` and ``--sizes`` are paired in order (a single value is used for
every pair): the default is resnet18@224, efficientnet_b0@224 and
efficientnet_b0@384. ``benchmarks/gpu_check.sh`` runs the full GPU version
and writes its table into ``benchmarks/RESULTS.md``.
"""
from __future__ import annotations

import argparse
import io
import math
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, Dataset, RandomSampler  # noqa: E402
from torchvision.transforms import v2  # noqa: E402

import helpers  # noqa: E402
from helpers.data import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402

DEFAULT_MODELS = ("resnet18", "efficientnet_b0", "efficientnet_b0")
DEFAULT_SIZES = (224, 224, 384)
JPEG_QUALITY = 90
#: Paint lesions at this size at most, then upsample (make_lesion costs ~ size²).
PAINT_SIZE = 256
#: Augmentation of the project path (gpu_augment keywords): flips and transposes, ±30°, zoom, jitter.
GPU_AUGMENT = {"max_angle": 30.0, "scale": (0.9, 1.1)}
#: ``DataLoader(prefetch_factor=...)`` of the starter pipeline (PyTorch's default).
PREFETCH = 2
#: Each figure is the best of this many consecutive timed windows (robust to a busy machine).
WINDOWS = 3
#: The goal: end-to-end at least this fraction of the ceiling on a GPU.
GOAL = 0.90


@dataclass
class Settings:
    """Resolved command-line settings of one run."""

    device: torch.device
    pairs: list[tuple[str, int]]
    batch_size: int
    steps: int
    warmup: int
    n_images: int
    source_size: int
    workers: int
    quick: bool
    markdown: bool


@dataclass
class Row:
    """Measurements of one configuration."""

    model: str
    size: int
    ceiling: float          # images/s, (1)
    starter: float          # images/s, (2)
    project: float          # images/s, (3)
    cache_seconds: float    # one-time build_tensor_cache cost for this size
    cache_images: int
    cache_reused: bool      # built for an earlier configuration of the same size

    @property
    def config(self) -> str:
        return f"{self.model}@{self.size}"

    @property
    def starter_ratio(self) -> float:
        return self.starter / self.ceiling

    @property
    def project_ratio(self) -> float:
        return self.project / self.ceiling


# ----------------------------------------------------------------------------- set-up

def parse_args(argv: list[str] | None = None) -> Settings:
    """Read the command line; ``--quick`` fills in tiny CPU settings for what is not given."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=None, help="cuda, cpu or mps (default: the best available)")
    ap.add_argument("--models", nargs="+", default=None,
                    help=f"model names, paired with --sizes (default: {' '.join(DEFAULT_MODELS)})")
    ap.add_argument("--sizes", nargs="+", type=int, default=None,
                    help=f"input sizes, paired with --models (default: {' '.join(map(str, DEFAULT_SIZES))})")
    ap.add_argument("--batch-size", type=int, default=None, help="batch size (default 256 on a GPU, 16 on CPU)")
    ap.add_argument("--steps", type=int, default=None,
                    help=f"timed steps per measurement, in {WINDOWS} windows (default 60 GPU, 6 CPU)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed warm-up steps (default 10 GPU, 2 CPU)")
    ap.add_argument("--n-images", type=int, default=None, help="synthetic JPEGs to write (default 2048 GPU, 256 CPU)")
    ap.add_argument("--source-size", type=int, default=None,
                    help="side of the JPEGs in pixels (default 1024 on a GPU, 256 on CPU)")
    ap.add_argument("--workers", type=int, default=None, help="starter DataLoader workers (default: CPU count - 1)")
    ap.add_argument("--quick", action="store_true",
                    help="tiny smoke settings: resnet18@64 and efficientnet_b0@64, batch 8, 9 steps, 64 images")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown block for benchmarks/RESULTS.md")
    args = ap.parse_args(argv)

    dev = torch.device(args.device) if args.device else helpers.device(verbose=False)
    if dev.type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA GPU is available")
    gpu = dev.type != "cpu"
    if args.quick:
        defaults = dict(models=("resnet18", "efficientnet_b0"), sizes=(64,), batch_size=8, steps=9,
                        warmup=2, n_images=64, source_size=128)
    else:
        defaults = dict(models=DEFAULT_MODELS, sizes=DEFAULT_SIZES, batch_size=256 if gpu else 16,
                        steps=60 if gpu else 6, warmup=10 if gpu else 2, n_images=2048 if gpu else 256,
                        source_size=1024 if gpu else 256)
    pick = {k: (getattr(args, k) if getattr(args, k) is not None else v) for k, v in defaults.items()}
    models, sizes = list(pick["models"]), list(pick["sizes"])
    if len(models) == 1:
        models = models * len(sizes)
    if len(sizes) == 1:
        sizes = sizes * len(models)
    if len(models) != len(sizes):
        ap.error(f"--models ({len(models)}) and --sizes ({len(sizes)}) must pair up (or one be a single value)")
    from helpers.models import ARCHITECTURES

    for m in models:
        if m not in ARCHITECTURES:
            ap.error(f"unknown model {m!r}; choose from {', '.join(ARCHITECTURES)}")
    for name in ("batch_size", "steps", "n_images"):
        if pick[name] < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")
    if pick["warmup"] < 0 or min(sizes) < 32 or pick["source_size"] < 32:
        ap.error("--warmup must be >= 0 and --sizes / --source-size >= 32")
    workers = args.workers if args.workers is not None else max(0, (os.cpu_count() or 1) - 1)
    return Settings(device=dev, pairs=list(zip(models, sizes)), batch_size=pick["batch_size"],
                    steps=pick["steps"], warmup=pick["warmup"], n_images=pick["n_images"],
                    source_size=pick["source_size"], workers=workers, quick=args.quick,
                    markdown=args.markdown)


def _paint(job: tuple[int, int, str]) -> tuple[str, int, int]:
    """Write one synthetic lesion JPEG; return (image id, target, bytes)."""
    from helpers.synthetic import CLASSES, make_lesion

    i, source, folder = job
    label = CLASSES[i % len(CLASSES)]
    rgb, _ = make_lesion(label, seed=i, size=min(PAINT_SIZE, source))
    im = Image.fromarray(rgb)
    if source != im.width:
        im = im.resize((source, source), Image.BICUBIC)
    image_id = f"ISIC_{i:07d}"
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=JPEG_QUALITY)
    Path(folder, image_id + ".jpg").write_bytes(buf.getvalue())
    return image_id, int(label == "MEL"), buf.tell()


def write_jpegs(folder: Path, n: int, source: int) -> tuple[pd.DataFrame, float]:
    """Write ``n`` synthetic JPEGs of ``source``² px; return (frame with image_id/path/target, mean KB)."""
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(i, source, str(folder)) for i in range(n)]
    procs = min(os.cpu_count() or 1, max(1, n // 16))
    if procs > 1 and "fork" in multiprocessing.get_all_start_methods():
        # fork: children only paint with NumPy/Pillow, never touch CUDA
        with ProcessPoolExecutor(procs, mp_context=multiprocessing.get_context("fork")) as pool:
            out = list(pool.map(_paint, jobs, chunksize=8))
    else:
        out = [_paint(j) for j in jobs]
    frame = pd.DataFrame(out, columns=["image_id", "target", "bytes"])
    frame["path"] = [str(folder / f"{i}.jpg") for i in frame["image_id"]]
    frame["target"] = frame["target"].astype(np.float32)
    return frame[["image_id", "path", "target"]], float(frame["bytes"].mean() / 1024)


def windows(steps: int) -> list[int]:
    """Split ``steps`` timed steps into up to :data:`WINDOWS` consecutive windows (their lengths)."""
    n = min(WINDOWS, steps)
    return [steps // n + (1 if i < steps % n else 0) for i in range(n)]


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    elif dev.type == "mps":
        torch.mps.synchronize()


def _free(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.empty_cache()


def _build(name: str) -> nn.Module:
    from helpers.models import build_model

    return build_model(name, num_classes=1, pretrained=False, verbose=False)


def _amp_dtype(dev: torch.device) -> torch.dtype | None:
    from helpers.train import resolve_amp

    return resolve_amp("auto", dev)  # what fit(amp="auto") uses: bf16 where supported


def _channels_last(dev: torch.device) -> bool:
    return dev.type != "mps"  # as fit(channels_last=True)


# ----------------------------------------------------------------------------- (1) and (2)

def make_train_step(model: nn.Module, dev: torch.device):
    """The training step of (1) and (2): AdamW, autocast as ``fit``, BCE loss; no host sync."""
    amp_dtype, cl = _amp_dtype(dev), _channels_last(dev)
    model.to(dev)
    if cl:
        model.to(memory_format=torch.channels_last)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)  # fit's defaults
    criterion = nn.BCEWithLogitsLoss()

    def step(images: torch.Tensor, targets: torch.Tensor) -> None:
        images = images.to(dev, non_blocking=True)
        if cl:
            images = images.contiguous(memory_format=torch.channels_last)
        targets = targets.to(dev, non_blocking=True)
        with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(images)
        loss = criterion(logits.float()[:, 0], targets.float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def time_ceiling(name: str, s: Settings, size: int) -> float:
    """(1): images/s of the training step on random tensors already on the device."""
    g = torch.Generator(device=s.device).manual_seed(0)
    x = torch.randn(s.batch_size, 3, size, size, device=s.device, generator=g)
    y = (torch.rand(s.batch_size, device=s.device, generator=g) < 0.5).float()
    step = make_train_step(_build(name), s.device)
    for _ in range(s.warmup):
        step(x, y)
    best = 0.0
    for n in windows(s.steps):
        _sync(s.device)
        t0 = time.perf_counter()
        for _ in range(n):
            step(x, y)
        _sync(s.device)
        best = max(best, n * s.batch_size / (time.perf_counter() - t0))
    return best


class StarterDataset(Dataset):
    """The typical first pipeline: ``PIL.Image.open`` + ``convert("RGB")`` + torchvision transforms."""

    def __init__(self, frame: pd.DataFrame, size: int) -> None:
        self.paths = frame["path"].tolist()
        self.targets = frame["target"].to_numpy(np.float32, copy=True)
        self.transform = v2.Compose([
            v2.RandomResizedCrop(size, scale=(0.6, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomVerticalFlip(),
            v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, float]:
        with Image.open(self.paths[i]) as im:
            rgb = im.convert("RGB")
        return self.transform(rgb), float(self.targets[i])


def starter_warmup(s: Settings) -> int:
    """Warm-up steps of (2): the usual ones plus the batches the workers may have queued meanwhile."""
    return s.warmup + s.workers * PREFETCH


def time_starter(name: str, s: Settings, size: int, frame: pd.DataFrame) -> float:
    """(2): images/s of Pillow + torchvision transforms in DataLoader workers feeding the step."""
    warm = starter_warmup(s)
    total = warm + s.steps
    ds = StarterDataset(frame, size)
    loader = DataLoader(ds, batch_size=s.batch_size, num_workers=s.workers, drop_last=True,
                        sampler=RandomSampler(ds, replacement=True, num_samples=total * s.batch_size,
                                              generator=torch.Generator().manual_seed(0)),
                        pin_memory=s.device.type == "cuda",
                        prefetch_factor=PREFETCH if s.workers else None)
    step = make_train_step(_build(name), s.device)
    it = iter(loader)
    for _ in range(warm):
        step(*next(it))
    best = 0.0
    for n in windows(s.steps):
        _sync(s.device)
        t0 = time.perf_counter()
        for _ in range(n):
            step(*next(it))
        _sync(s.device)
        best = max(best, n * s.batch_size / (time.perf_counter() - t0))
    del it, loader
    return best


# ----------------------------------------------------------------------------- (3)

def _cache_loader(cache: Path, targets: np.ndarray, s: Settings, steps: int, seed: int):
    from helpers.fastpath import TensorCacheLoader

    n = len(targets)
    rows = np.resize(np.arange(n), steps * s.batch_size)  # exactly `steps` batches per epoch
    return TensorCacheLoader(cache, targets, indices=rows, batch_size=s.batch_size, drop_last=True,
                             shuffle=True, seed=seed, device=s.device, augment=True,
                             augment_kw=GPU_AUGMENT, channels_last=_channels_last(s.device))


def time_project(name: str, s: Settings, cache: Path, targets: np.ndarray) -> float:
    """(3): the best images/s that ``helpers.train.fit`` itself reports over its epochs.

    A first ``fit`` call of ``warmup`` steps on the same model warms the
    device up; the timed call trains one epoch per window (each epoch's first
    batch is inside its timing, as in every real epoch).
    """
    from helpers.train import fit

    model = _build(name)
    kw = dict(device=s.device, amp="auto", channels_last=True, progress=False)
    if s.warmup:
        fit(model, _cache_loader(cache, targets, s, s.warmup, seed=1), None, epochs=1, **kw)
    per = windows(s.steps)
    history = fit(model, _cache_loader(cache, targets, s, per[0], seed=2), None, epochs=len(per), **kw)
    return float(history["images_per_s"].max())


# ----------------------------------------------------------------------------- report

def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe(s: Settings, mean_kb: float) -> list[str]:
    """Lines that say what was measured, where and how."""
    dev = s.device
    if dev.type == "cuda":
        where = f"{torch.cuda.get_device_name(dev)} (CUDA {torch.version.cuda})"
    elif dev.type == "mps":
        where = "Apple GPU (mps)"
    else:
        where = f"CPU only: {_cpu_name()}"
    amp = _amp_dtype(dev)
    precision = f"{str(amp).replace('torch.', '')} autocast" if amp else "float32 (no autocast on this device)"
    return [
        f"device: {where}; torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"Pillow {Image.__version__}; {os.cpu_count()} CPUs",
        f"training step: AdamW, {precision}, channels_last={_channels_last(dev)}, batch {s.batch_size}, "
        f"cudnn.benchmark={torch.backends.cudnn.benchmark}",
        f"source: {s.n_images} synthetic JPEGs, {s.source_size}x{s.source_size} px, quality {JPEG_QUALITY}, "
        f"{mean_kb:.0f} KB on average (helpers.synthetic.make_lesion painted at "
        f"{min(PAINT_SIZE, s.source_size)} px, upsampled bicubic), in a temporary folder",
        f"timing: warm-up of {s.warmup} steps excluded ({starter_warmup(s)} for the starter, whose "
        f"{s.workers} workers may queue {PREFETCH} batches each), then {s.steps} timed steps in "
        f"{len(windows(s.steps))} consecutive windows ({' + '.join(map(str, windows(s.steps)))} steps; "
        "for (3) one fit epoch each): each figure is the best window; device synchronised before "
        "each clock reading",
        "(1) ceiling: random tensors already on the device, training step only",
        f"(2) starter: Pillow decode + torchvision transforms (RandomResizedCrop, flips, ColorJitter) "
        f"in DataLoader workers ({s.workers}), same step",
        "(3) this project: build_tensor_cache once (one-time cost, not in the rate), then "
        "TensorCacheLoader + gpu_augment (flips, transpose, +-30 deg, zoom 0.9-1.1, jitter) "
        "+ helpers.train.fit (its own images/s)",
    ]


def _goal(row: Row, dev: torch.device) -> str:
    if dev.type != "cuda":
        return "n/a (no GPU)"
    if not math.isfinite(row.project_ratio):
        return "not measured"
    return "yes" if row.project_ratio >= GOAL else "no"


def _rate(x: float, width: int = 0) -> str:
    return f"{x:>{width},.1f}" if math.isfinite(x) else f"{'failed':>{width}}"


def _ratio(x: float, width: int = 0) -> str:
    return f"{x:>{width}.2f}" if math.isfinite(x) else f"{'-':>{width}}"


def _cache_text(row: Row) -> str:
    if row.cache_reused:
        return "(built above)"
    return (f"{row.cache_seconds:.2f} s for {row.cache_images} images "
            f"({row.cache_images / row.cache_seconds:,.0f} img/s)")


def format_text(rows: list[Row], lines: list[str], dev: torch.device) -> str:
    """A plain-text report: the description, then one row per configuration."""
    head = (f"{'config':<22}{'(1) img/s':>12}{'(2) img/s':>12}{'(2)/(1)':>9}"
            f"{'(3) img/s':>12}{'(3)/(1)':>9}  {'goal >= 0.90':<14}cache build (one-time)")
    out = ["Training throughput (benchmarks/throughput.py)", *lines, "", head]
    for r in rows:
        out.append(f"{r.config:<22}{_rate(r.ceiling, 12)}{_rate(r.starter, 12)}{_ratio(r.starter_ratio, 9)}"
                   f"{_rate(r.project, 12)}{_ratio(r.project_ratio, 9)}  {_goal(r, dev):<14}{_cache_text(r)}")
    return "\n".join(out)


def format_markdown(rows: list[Row], lines: list[str], dev: torch.device) -> str:
    """A Markdown block for ``benchmarks/RESULTS.md``: the description as a list, then the table."""
    out = [f"- {line}" for line in lines] + [
        "",
        "| configuration | (1) ceiling, img/s | (2) starter, img/s | (2) / (1) | (3) this project, img/s "
        "| (3) / (1) | goal (3)/(1) >= 0.90 | tensor cache build (one-time) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for r in rows:
        out.append(f"| {r.config} | {_rate(r.ceiling)} | {_rate(r.starter)} | {_ratio(r.starter_ratio)} | "
                   f"{_rate(r.project)} | {_ratio(r.project_ratio)} | {_goal(r, dev)} | {_cache_text(r)} |")
    return "\n".join(out)


# ----------------------------------------------------------------------------- main

def _measure(failures: list[str], config: str, label: str, s: Settings, fn, *args) -> float:
    """Run one measurement; a failure (out of memory, a crashed worker) costs that figure only."""
    try:
        rate = float(fn(*args))
    except Exception as exc:  # noqa: BLE001 - report and go on: one GPU run must give what it can
        hint = f" at batch {s.batch_size} (try a smaller --batch-size)" if isinstance(
            exc, torch.cuda.OutOfMemoryError) else ""
        why = (str(exc).splitlines() or [""])[0][:160]
        failures.append(f"{config} {label}: {type(exc).__name__}{hint}: {why}")
        rate = float("nan")
    finally:
        _free(s.device)
    if math.isfinite(rate) and rate <= 0:
        failures.append(f"{config} {label}: non-positive rate {rate}")
    print(f"{config} {label}: {rate:,.1f} img/s", file=sys.stderr)
    return rate


def main(argv: list[str] | None = None) -> int:
    s = parse_args(argv)
    from helpers.fastpath import build_tensor_cache

    helpers.seed_everything(0)
    rows: list[Row] = []
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="throughput-") as tmp:
        tmp = Path(tmp)
        frame, mean_kb = write_jpegs(tmp / "jpeg", s.n_images, s.source_size)
        targets = frame["target"].to_numpy(np.float32, copy=True)
        caches: dict[int, tuple[Path, float]] = {}
        for name, size in s.pairs:
            reused = size in caches
            if not reused:
                t0 = time.perf_counter()
                path = build_tensor_cache(frame, size, tmp / f"cache{size}.npy", progress=False)
                caches[size] = (path, time.perf_counter() - t0)
            cache, cache_s = caches[size]
            config = f"{name}@{size}"
            ceiling = _measure(failures, config, "(1) ceiling", s, time_ceiling, name, s, size)
            starter = _measure(failures, config, "(2) starter", s, time_starter, name, s, size, frame)
            project = _measure(failures, config, "(3) this project", s, time_project, name, s, cache, targets)
            rows.append(Row(name, size, ceiling, starter, project, cache_s, s.n_images, reused))
    lines = describe(s, mean_kb) + [f"failed: {why}" for why in failures]
    print(format_markdown(rows, lines, s.device) if s.markdown else format_text(rows, lines, s.device))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
