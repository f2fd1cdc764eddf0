"""Scaling up: k-fold runs, out-of-fold scores, fold ensembles, and time and memory estimates.

The estimates start from what a CPU can measure at a small image size: parameters, forward FLOPs
(``FlopCounterMode``: convolutions and matrix products, a multiply-add counted as 2 FLOPs, where
torchvision's table counts 1) and the activations a training step saves for backward. FLOPs and
activations grow with the pixel count (:func:`scale_cost`); a reference GPU throughput turns FLOPs
into images/s. Memory leaves out the CUDA context, cuDNN workspaces and fragmentation: a lower bound.
"""
from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from helpers.models import build_model, count_parameters
from helpers.preprocess import IMAGE_SUFFIXES, resize_folder
from helpers.runs import predict_frame
from helpers.train import run_config

__all__ = ["SIIM_2020_TRAIN_IMAGES", "SIIM_2020_TEST_IMAGES", "REFERENCE_THROUGHPUT",
           "BYTES_PER_PARAMETER_ADAMW", "ModelCost", "forward_flops", "saved_tensor_bytes",
           "activation_bytes", "measure_cost", "scale_cost", "training_memory_bytes",
           "estimate_throughput", "epoch_minutes", "estimate_table", "resized_layout", "out_of_fold",
           "linear_probe_folds", "average_predictions", "torchrun_command", "cpu_ddp_env"]

#: Training images of SIIM-ISIC 2020 (one row each in ``ISIC_2020_Training_GroundTruth.csv``).
SIIM_2020_TRAIN_IMAGES = 33_126
#: Test images of SIIM-ISIC 2020 (Kaggle ``test.csv``).
SIIM_2020_TEST_IMAGES = 10_982

#: Training-step images/s on one H100 (AdamW, bf16 autocast, channels_last, batch 256),
#: (model, image size) -> rate, as quoted in ``benchmarks/RESULTS.md``. NOT measured by
#: this project (not measured on a GPU yet). EfficientNet-B0 at 224 px is given there as
#: 4,300-4,500; the lower end is used.
REFERENCE_THROUGHPUT: dict[tuple[str, int], float] = {
    ("resnet18", 224): 11_900.0,
    ("efficientnet_b0", 224): 4_300.0,
    ("efficientnet_b0", 384): 1_600.0,
}

#: float32 weights + gradients + AdamW's two moments: 4 + 4 + 4 + 4 bytes per parameter.
BYTES_PER_PARAMETER_ADAMW = 16


@dataclass(frozen=True)
class ModelCost:
    """What one model costs at one image size (per image unless said otherwise).

    ``gflops``: forward GFLOPs; ``act_bytes``: bytes saved for backward; ``const_bytes``: saved
    bytes that do not grow with the batch; ``amp``: ``"bf16"`` or ``"fp32"``; ``measured_at``:
    the image size measured (``image_size`` differs after :func:`scale_cost`).

    Not called in a chapter; used by `measure_cost`, `scale_cost`.
    """

    model: str
    image_size: int
    params: int
    gflops: float
    act_bytes: float
    const_bytes: float
    amp: str
    measured_at: int


def _images(batch: int, image_size: int) -> torch.Tensor:
    if batch < 1 or image_size < 8:
        raise ValueError(f"batch must be >= 1 and image_size >= 8, got {batch} and {image_size}")
    return torch.randn(batch, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))


@contextlib.contextmanager
def _mode(model: nn.Module, training: bool):
    """``model`` in training or eval mode for the block, its own mode restored afterwards."""
    was_training = model.training
    model.train(training)
    try:
        yield
    finally:
        model.train(was_training)


def forward_flops(model: nn.Module, image_size: int, batch: int = 1) -> float:
    """Forward FLOPs per image of ``model`` on ``image_size`` px RGB images (eval mode, CPU).

    Not called in a chapter; used by `measure_cost`.
    """
    from torch.utils.flop_counter import FlopCounterMode

    with _mode(model, False), torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(_images(batch, image_size))
    return counter.get_total_flops() / batch


def saved_tensor_bytes(model: nn.Module, image_size: int, batch: int, amp: str = "bf16") -> int:
    """Bytes of the tensors autograd saves for backward in one training-mode forward pass.

    Counted once per storage (views and in-place results share their base's), leaving out the
    model's parameters and buffers. ``amp="bf16"`` runs under CPU bfloat16 autocast (convolutions
    and linear layers in bfloat16, as CUDA autocast does), ``"fp32"`` in float32.

    Not called in a chapter; used by `activation_bytes`.
    """
    if amp not in ("bf16", "fp32"):
        raise ValueError(f"amp must be 'bf16' or 'fp32', got {amp!r}")
    own = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.nbytes() and storage.data_ptr() not in own:
            seen[storage.data_ptr()] = storage.nbytes()
        return t    # the graph keeps t alive: no other saved tensor can reuse its address

    x = _images(batch, image_size)
    with _mode(model, True), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp == "bf16"):
            out = model(x)
    total = sum(seen.values())
    del out
    return total


def activation_bytes(model: nn.Module, image_size: int, amp: str = "bf16",
                     batches: tuple[int, int] = (2, 4)) -> tuple[float, float]:
    """Saved-for-backward bytes ``(per image, independent of the batch)``, from two batch sizes.

    The slope between the two sizes is the per-image part, the intercept the rest (at least two
    images: BatchNorm refuses to train on one value per channel).

    Not called in a chapter; used by `measure_cost`.
    """
    b1, b2 = batches
    if not 1 <= b1 < b2:
        raise ValueError(f"batches must be two increasing sizes, got {batches}")
    s1 = saved_tensor_bytes(model, image_size, b1, amp)
    s2 = saved_tensor_bytes(model, image_size, b2, amp)
    per_image = (s2 - s1) / (b2 - b1)
    return per_image, max(0.0, s1 - b1 * per_image)


def measure_cost(name: str, image_size: int = 64, amp: str = "bf16") -> ModelCost:
    """Measure parameters, forward FLOPs and saved activations of ``name`` at ``image_size``.

    The model is built with one output and random weights (nothing is downloaded).

    Introduced in chapter 12 (scaling up).
    """
    torch.manual_seed(0)
    model = build_model(name, 1, pretrained=False, verbose=False)
    per_image, const = activation_bytes(model, image_size, amp)
    return ModelCost(model=name, image_size=image_size, params=count_parameters(model),
                     gflops=forward_flops(model, image_size) / 1e9, act_bytes=per_image,
                     const_bytes=const, amp=amp, measured_at=image_size)


def scale_cost(cost: ModelCost, image_size: int) -> ModelCost:
    """The cost at another image size: FLOPs and per-image activations scaled by the pixel count.

    Exact for the feature maps when both sizes are multiples of the total stride (32); the layers
    after global pooling do not grow, so the figure is a slight over-estimate.

    Introduced in chapter 12 (scaling up).
    """
    if image_size < 8:
        raise ValueError(f"image_size must be >= 8, got {image_size}")
    factor = (image_size / cost.image_size) ** 2
    return replace(cost, image_size=image_size, gflops=cost.gflops * factor,
                   act_bytes=cost.act_bytes * factor)


def training_memory_bytes(params: int, act_bytes_per_image: float, batch: int,
                          const_bytes: float = 0.0,
                          bytes_per_param: int = BYTES_PER_PARAMETER_ADAMW) -> float:
    """Memory of a training step: ``params * bytes_per_param + batch * act_bytes_per_image + const_bytes``.

    Not called in a chapter; used by `estimate_table`.
    """
    if params < 0 or act_bytes_per_image < 0 or batch < 1:
        raise ValueError("params and activation bytes must be >= 0 and batch >= 1")
    return params * bytes_per_param + batch * act_bytes_per_image + const_bytes


def _family(name: str) -> str:
    return re.match(r"[a-z]+", name).group(0)


def estimate_throughput(name: str, image_size: int, gflops: float,
                        reference_gflops: dict[tuple[str, int], float],
                        references: dict[tuple[str, int], float] | None = None
                        ) -> tuple[float, str]:
    """Estimate training images/s as a reference rate times the ratio of FLOPs.

    ``rate = ref_rate * ref_gflops / gflops``, with the reference of the same family closest in
    pixel count; a family without one is scaled from ResNet (an optimistic bound, and the note
    says so). ``reference_gflops``: forward GFLOPs of each ``(model, size)`` of ``references``
    (default :data:`REFERENCE_THROUGHPUT`). Returns ``(images per second, note)``.

    Not called in a chapter; used by `estimate_table`.
    """
    references = REFERENCE_THROUGHPUT if references is None else references
    if gflops <= 0:
        raise ValueError(f"gflops must be > 0, got {gflops}")
    if (name, image_size) in references:
        return float(references[name, image_size]), "reference"
    same = [k for k in references if _family(k[0]) == _family(name)]
    pool = same or [k for k in references if _family(k[0]) == "resnet"] or list(references)
    key = min(pool, key=lambda k: abs(math.log(k[1] ** 2 / image_size ** 2)))
    note = f"scaled from {key[0]}@{key[1]}" + ("" if same else " (other family: optimistic)")
    if key not in reference_gflops:
        raise ValueError(f"reference_gflops has no entry for {key[0]}@{key[1]}")
    return references[key] * reference_gflops[key] / gflops, note


def epoch_minutes(n_images: int, images_per_s: float) -> float:
    """Minutes for one pass over ``n_images`` at ``images_per_s``.

    Introduced in chapter 12 (scaling up).
    """
    if images_per_s <= 0:
        raise ValueError(f"images_per_s must be > 0, got {images_per_s}")
    return n_images / images_per_s / 60.0


def estimate_table(models: Sequence[str], sizes: Sequence[int], batch: int = 64,
                   measure_size: int = 64, amp: str = "bf16",
                   n_images: int = SIIM_2020_TRAIN_IMAGES,
                   references: dict[tuple[str, int], float] | None = None) -> pd.DataFrame:
    """One row per (model, size): measured and estimated costs of training it on ``n_images``.

    Each model and reference model is measured once, in one CPU thread, at ``measure_size`` and
    scaled to every size. Columns: ``model``, ``size``, ``params_M``, ``gflops``, ``act_MB`` and
    ``const_MB`` (MB = 1e6 bytes), ``mem_GB`` (at ``batch``), ``img_per_s``, ``source``,
    ``min_per_epoch``.

    Introduced in chapter 12 (scaling up).
    """
    references = REFERENCE_THROUGHPUT if references is None else references
    names = list(dict.fromkeys([*models, *(k[0] for k in references)]))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)      # batches of 2-4 small images: threads only add overhead
    try:
        measured = {n: measure_cost(n, measure_size, amp) for n in names}
    finally:
        torch.set_num_threads(threads)
    ref_gflops = {k: scale_cost(measured[k[0]], k[1]).gflops for k in references}
    rows = []
    for name in models:
        for size in sizes:
            c = scale_cost(measured[name], size)
            rate, source = estimate_throughput(name, size, c.gflops, ref_gflops, references)
            rows.append({
                "model": name, "size": size, "params_M": c.params / 1e6, "gflops": c.gflops,
                "act_MB": c.act_bytes / 1e6, "const_MB": c.const_bytes / 1e6,
                "mem_GB": training_memory_bytes(c.params, c.act_bytes, batch, c.const_bytes) / 1e9,
                "img_per_s": rate, "source": source,
                "min_per_epoch": epoch_minutes(n_images, rate)})
    return pd.DataFrame(rows)


def resized_layout(src: os.PathLike | str, dst: os.PathLike | str, size: int,
                   workers: int | None = None, progress: bool = False) -> pd.DataFrame:
    """A download folder copied at ``size`` px: every image resized, every other file copied.

    Images go through :func:`helpers.preprocess.resize_folder`; every other file (label CSVs,
    ``licenses/``, ...) is copied when missing or older than its source, so ``load_dataset``
    reads ``dst`` as it reads ``src``. Hidden files are left out. Returns ``resize_folder``'s
    report plus one row per other file (``status`` ``copied`` or ``skipped``). Raises
    ``ValueError`` when ``dst`` lies inside ``src``.

    Introduced in chapter 12 (scaling up).
    """
    src_root, dst_root = Path(src), Path(dst)
    if not src_root.is_dir():
        raise ValueError(f"{src_root}: source folder not found")
    if dst_root.resolve().is_relative_to(src_root.resolve()):
        raise ValueError(f"{dst_root}: the copy may not lie inside its source {src_root}")
    report = resize_folder(src_root, dst_root, size, workers=workers, progress=progress)
    rows = []
    for path in sorted(src_root.rglob("*")):
        rel = path.relative_to(src_root)
        if (not path.is_file() or path.suffix.lower() in IMAGE_SUFFIXES
                or any(part.startswith(".") for part in rel.parts)):
            continue
        dest = dst_root / rel
        fresh = dest.is_file() and dest.stat().st_mtime >= path.stat().st_mtime
        if not fresh:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)
        rows.append({"source": path, "dest": dest, "status": "skipped" if fresh else "copied",
                     "error": None})
    return pd.concat([report, pd.DataFrame(rows, columns=report.columns)], ignore_index=True)


def out_of_fold(runs: Sequence[os.PathLike | str], frame: pd.DataFrame) -> pd.DataFrame:
    """Each fold model's predictions on its own validation images, stacked into one frame.

    ``runs``: run folders trained with ``--folds K --fold F`` on the data of ``frame`` (a tidy
    frame); each run's ``split.csv`` names its validation images, predicted from its
    ``val_predictions.csv`` when complete, else with :func:`helpers.runs.predict_frame`. Columns:
    ``image_id``, ``patient_id``, ``target``, ``fold``, ``prob``. Raises ``ValueError`` when an
    image is validated by two runs or a validation image is not in ``frame``.

    Introduced in chapter 12 (scaling up).
    """
    indexed = frame.drop_duplicates("image_id").set_index("image_id")
    parts = []
    for run in runs:
        run = Path(run)
        config = run_config(run)
        split = pd.read_csv(run / "split.csv", dtype={"image_id": str})
        ids = split.loc[split["role"] == "val", "image_id"]
        missing = ~ids.isin(indexed.index)
        if missing.any():
            raise ValueError(f"{run / 'split.csv'}: validation image {ids[missing].iloc[0]} "
                             "is not in the frame")
        rows = indexed.loc[ids.to_numpy()].reset_index()
        saved, prob = run / "val_predictions.csv", None
        if saved.is_file():
            preds = pd.read_csv(saved, dtype={"image_id": str}).drop_duplicates("image_id")
            prob = preds.set_index("image_id")["prediction"].reindex(rows["image_id"]).to_numpy(float)
        if prob is None or np.isnan(prob).any():    # no file, an older one or one image short
            prob = predict_frame(run, rows)
        parts.append(pd.DataFrame({
            "image_id": rows["image_id"].to_numpy(),
            "patient_id": rows["patient_id"].to_numpy() if "patient_id" in rows else pd.NA,
            "target": rows["target"].astype(float).to_numpy(), "fold": config.get("fold"), "prob": prob}))
    if not parts:
        raise ValueError("out_of_fold: no run folders given")
    oof = pd.concat(parts, ignore_index=True)
    twice = oof["image_id"].duplicated()
    if twice.any():
        raise ValueError(f"out_of_fold: image {oof.loc[twice, 'image_id'].iloc[0]} is validated "
                         "by two runs; the runs are not folds of one split")
    return oof


def linear_probe_folds(features: np.ndarray, target: Sequence[float], folds: Sequence[int],
                       test_features: np.ndarray | None = None, C: float = 0.1
                       ) -> tuple[np.ndarray, np.ndarray]:
    """K-fold logistic regression on fixed features: out-of-fold and per-fold test probabilities.

    For each fold, ``StandardScaler`` + ``LogisticRegression(C=C, class_weight="balanced")`` fit
    on the other folds' rows predict the fold's rows and every row of ``test_features``. Returns
    ``(oof, test)``: ``oof`` of shape (n,), ``test`` of shape (n_test, K) in sorted fold order
    ((0, K) without ``test_features``). Raises ``ValueError`` on mismatched lengths or a fold
    whose training rows hold one class only.

    Introduced in chapter 12 (scaling up).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X = np.asarray(features, dtype=np.float64)
    y = np.asarray(target, dtype=float)
    f = np.asarray(folds)
    if X.ndim != 2 or len(X) != len(y) or len(y) != len(f):
        raise ValueError(f"features {X.shape}, target ({len(y)},) and folds ({len(f)},) "
                         "must have one row each")
    T = np.zeros((0, X.shape[1])) if test_features is None else np.asarray(test_features, dtype=np.float64)
    if T.ndim != 2 or T.shape[1] != X.shape[1]:
        raise ValueError(f"test_features {T.shape} must have {X.shape[1]} columns")
    fold_ids = np.unique(f)
    oof = np.full(len(y), np.nan)
    test = np.zeros((len(T), len(fold_ids)))
    for k, fold in enumerate(fold_ids):
        train = f != fold
        if np.unique(y[train]).size < 2:
            raise ValueError(f"linear_probe_folds: the rows outside fold {fold} hold one class only")
        probe = make_pipeline(StandardScaler(),
                              LogisticRegression(C=C, class_weight="balanced", max_iter=2000))
        probe.fit(X[train], y[train].astype(int))
        oof[~train] = probe.predict_proba(X[~train])[:, 1]
        if len(T):
            test[:, k] = probe.predict_proba(T)[:, 1]
    return oof, test


def average_predictions(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """The ensemble: the mean ``target`` of several submission frames, image by image.

    Every frame must hold the same ``image_name`` ids (in any order); the result keeps the first
    frame's order. Raises ``ValueError`` naming the frame (0-based) whose ids differ.

    Introduced in chapter 12 (scaling up).
    """
    if not frames:
        raise ValueError("average_predictions: no frames given")
    first = frames[0]["image_name"].astype(str)
    if first.duplicated().any():
        raise ValueError(f"frame 0, column image_name: id {first[first.duplicated()].iloc[0]} appears twice")
    stacked = []
    for i, f in enumerate(frames):
        ids = f["image_name"].astype(str)
        if len(ids) != len(first) or set(ids) != set(first) or ids.duplicated().any():
            extra = sorted(set(ids) ^ set(first))
            raise ValueError(f"frame {i}, column image_name: ids differ from frame 0 "
                             f"(e.g. {extra[0] if extra else 'a duplicate'})")
        stacked.append(pd.Series(f["target"].to_numpy(float), index=ids).loc[first.to_numpy()].to_numpy())
    return pd.DataFrame({"image_name": first.to_numpy(), "target": np.mean(stacked, axis=0)})


def torchrun_command(cli_args: Sequence[str], nproc: int = 2) -> list[str]:
    """The argument list of ``torchrun --standalone --nproc_per_node=N -m helpers <cli_args>``.

    Runs ``python -m torch.distributed.run`` with this interpreter, so it works in a virtual
    environment whose ``bin`` is not on ``PATH``.

    Introduced in chapter 12 (scaling up).
    """
    if nproc < 1:
        raise ValueError(f"nproc must be >= 1, got {nproc}")
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={nproc}", "-m", "helpers", *map(str, cli_args)]


def cpu_ddp_env(threads_per_process: int = 1) -> dict[str, str]:
    """Environment for CPU processes of ``torchrun`` (Gloo): threads per process, loopback.

    A copy of ``os.environ`` with ``OMP_NUM_THREADS`` set, Gloo on the ``lo`` interface where
    there is one, and ``RANK``/``WORLD_SIZE``/... of an enclosing launcher dropped.

    Introduced in chapter 12 (scaling up).
    """
    env = {**os.environ, "OMP_NUM_THREADS": str(threads_per_process)}
    if Path("/sys/class/net/lo").exists():
        env["GLOO_SOCKET_IFNAME"] = "lo"
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env
