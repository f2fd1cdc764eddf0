"""Training runs as folders: train one from a config, predict with one.

:func:`train_run` fine-tunes a CNN (melanoma vs. not) on any folder
:func:`helpers.datasets.load_dataset` recognises and writes the run folder: ``config.json``,
``split.csv``, ``last.pt``, ``best.pt``, ``history.csv``, ``model.pt`` (half precision),
``val_predictions.csv`` and, last, ``summary.json``. :func:`predict_run` scores a folder of images
with a run, :func:`predict_frame` the images of a tidy frame; ``python -m helpers train|predict``
is a thin layer over them.

Validation images: the layout's own ``val`` split if it has one; with ``folds=K, fold=F`` fold F
of K patient-grouped folds cut from the training split; otherwise a stratified hold-out of
``val_frac`` (announced). A layout's test split is never used. Under ``torchrun`` ``batch_size``
is the global batch.
"""
from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, DistributedSampler

import helpers
from helpers import data
from helpers.datasets import load_dataset
from helpers.io import write_atomically
from helpers.models import build_model, freeze_early_blocks
from helpers.preprocess import IMAGE_SUFFIXES
from helpers.submissions import write_submission
from helpers.train import fit, init_distributed, load_checkpoint, load_run, predict, run_config

__all__ = ["TrainConfig", "train_run", "predict_run", "predict_frame"]

#: Settings a resumed run must share with the run it continues.
CONFIG_KEYS_THAT_MUST_MATCH = ("model", "image_size", "batch_size", "seed", "folds", "fold",
                               "limit", "val_frac", "meta", "lr", "epochs")
#: errno values that mean "the output cannot be written" (full, read-only, not allowed).
WRITE_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM,
                          errno.EFBIG, errno.ENOTDIR})


@dataclass
class TrainConfig:
    """Every setting of a training run; ``config.json`` records them (all but ``out``).

    Introduced in chapter 12 (scaling up).
    """
    data_dir: Path
    out: Path
    model: str = "efficientnet_lite0"
    epochs: int = 15
    image_size: int = 224
    batch_size: int = 32          # the global batch, over all processes
    lr: float = 5e-4
    freeze_blocks: int | None = None  # stem + first N blocks; None: 3 for lite0, 0 otherwise
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    seed: int = 0
    folds: int | None = None      # K patient-grouped folds ...
    fold: int = 0                 # ... of which this one validates
    val_frac: float = 0.2         # hold-out share when the data has no validation split
    limit: int | None = None      # a stratified subset of N labelled images
    pretrained: bool = True
    amp: str = "auto"             # auto, bf16, fp16 or off
    compile: bool = False
    patience: int | None = None   # early-stopping patience, epochs
    pos_weight: str = "auto"      # auto (negatives / positives), none, or a number
    meta: bool = False            # also feed age, sex and site to the model


def notice(message: str, main: bool = True) -> None:
    """Print a one-line notice of a choice made for the reader (rank 0 only)."""
    if main:
        print(message, flush=True)


def load_folder(data_dir: Path, main: bool = True) -> pd.DataFrame:
    """``load_dataset`` with its warnings printed as one-line notices."""
    if not Path(data_dir).is_dir():
        raise ValueError(f"{data_dir}: no such folder")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame = load_dataset(data_dir)
    for w in caught:
        notice("notice: " + " ".join(str(w.message).split()), main)
    return frame


def workers(requested: int | None, cuda: bool) -> int:
    """Data-loading processes: as asked, else 0 on a CPU and up to 8 beside a GPU."""
    if requested is not None:
        return max(0, requested)
    return min(8, max(0, (os.cpu_count() or 1) - 1)) if cuda else 0


def reason(err: OSError) -> str:
    """The words of an OSError, without its errno number."""
    return err.strerror or str(err)


def write_error(err: BaseException) -> OSError | None:
    """The OSError of a failed write behind ``err``, if any (``torch.save`` on a full disk
    raises a RuntimeError from its zip writer, with the OSError as its context)."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in WRITE_ERRORS:
            return err
        err = err.__cause__ or err.__context__
    return None


def check_writable(folder: Path) -> None:
    """Fail early, in one line, when ``folder`` cannot be created or written to."""
    probe = folder / f".write-test.{os.getpid()}.tmp"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"\0")
    except OSError as err:
        raise ValueError(f"{folder}: cannot write to this folder ({reason(err)})") from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink(missing_ok=True)


def write_json(obj: Any, path: Path) -> None:
    """``obj`` as indented JSON, written atomically."""
    text = json.dumps(obj, indent=2, default=str) + "\n"
    write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    """``frame`` as CSV without its index, written atomically."""
    write_atomically(path, lambda tmp: frame.to_csv(tmp, index=False, lineterminator="\n"))


def _check(cfg: TrainConfig, config: dict[str, Any], world: int, resume: bool) -> None:
    """Refuse settings that cannot work, and a resume with settings that differ."""
    if cfg.epochs < 1 or cfg.image_size < 8 or cfg.batch_size < 1:
        raise ValueError("--epochs and --batch-size must be >= 1 and --image-size >= 8")
    if cfg.batch_size % world:
        raise ValueError(f"--batch-size {cfg.batch_size} is not divisible by {world} processes")
    run = Path(cfg.out)
    if (run / "last.pt").exists() and not resume:
        raise ValueError(f"{run}: already holds a run (last.pt); pass --resume to continue it "
                         "or choose another --out")
    if resume and (run / "config.json").is_file():
        old = run_config(run)
        for key in CONFIG_KEYS_THAT_MUST_MATCH:
            if key in old and old[key] != config.get(key):
                raise ValueError(f"{run / 'config.json'}: the run used --{key.replace('_', '-')} "
                                 f"{old[key]}, not {config.get(key)}; resume with the same settings")


def labelled_images(cfg: TrainConfig, main: bool = True) -> pd.DataFrame:
    """The labelled images of ``cfg.data_dir`` with a file, less the layout's test split
    (announced), cut to a stratified ``cfg.limit`` when set."""
    frame = load_folder(Path(cfg.data_dir), main)
    labelled = frame[frame["target"].notna() & frame["path"].notna()]
    held = labelled["split"] == "test"
    if held.any():
        notice(f"split: the {int(held.sum())} labelled images of the test split are kept out "
               "of training and validation", main)
    labelled = labelled[~held].reset_index(drop=True)
    if labelled.empty:
        raise ValueError(f"{cfg.data_dir}: no labelled images with an image file to train on")
    if labelled["target"].nunique() < 2:
        raise ValueError(f"{cfg.data_dir}: all labelled images have target "
                         f"{labelled['target'].iloc[0]}; training needs both classes")
    if cfg.limit is not None and cfg.limit < len(labelled):
        labelled, _ = train_test_split(labelled, train_size=cfg.limit, random_state=cfg.seed,
                                       stratify=labelled["target"].astype(int))
        labelled = labelled.sort_index().reset_index(drop=True)
    return labelled


def choose_split(labelled: pd.DataFrame, cfg: TrainConfig, main: bool = True):
    """(train frame, validation frame, description): see the module docstring."""
    official = (labelled["split"] == "train").any() and (labelled["split"] == "val").any()
    if cfg.folds is not None:
        if not 0 <= cfg.fold < cfg.folds:
            raise ValueError(f"--fold must be in 0..{cfg.folds - 1}, got {cfg.fold}")
        pool = labelled[labelled["split"] == "train"] if official else labelled
        pool = pool.reset_index(drop=True)
        val_mask = data.patient_folds(pool, cfg.folds, cfg.seed).to_numpy() == cfg.fold
        return pool[~val_mask], pool[val_mask], f"fold {cfg.fold} of {cfg.folds} patient-grouped folds"
    if official:
        return (labelled[labelled["split"] == "train"], labelled[labelled["split"] == "val"],
                "the layout's training split; its validation split")
    val_mask = (data.holdout_split(labelled, cfg.val_frac, cfg.seed) == "val").to_numpy()
    train, val = labelled[~val_mask], labelled[val_mask]
    whole = ", patients kept whole" if labelled["patient_id"].notna().any() else ""
    notice(f"split: the data has no validation split; holding out {len(val)} of "
           f"{len(labelled)} labelled images (about {cfg.val_frac:.0%}, stratified by "
           f"melanoma{whole}, seed {cfg.seed})", main)
    return train, val, f"stratified hold-out of {cfg.val_frac:.0%}"


def _datasets(cfg: TrainConfig, train_frame, val_frame, config: dict[str, Any]):
    meta, age_mean = None, None
    if cfg.meta:   # age, sex, site; missing ages filled with the training mean
        meta = list(data.META_COLUMNS)
        ages = pd.to_numeric(train_frame["age_approx"], errors="coerce")
        age_mean = float(ages.mean()) if ages.notna().any() else 50.0
    train_set = data.LesionDataset(train_frame, data.train_transforms(cfg.image_size),
                                   target="target", meta=meta, age_mean=age_mean)
    val_set = data.LesionDataset(val_frame, data.eval_transforms(cfg.image_size),
                                 target="target", meta=meta, age_mean=age_mean)
    config.update({"n_meta": train_set.meta_dim, "meta_columns": meta, "age_mean": age_mean})
    return train_set, val_set


def _loaders(cfg: TrainConfig, train_set, val_set, world: int, n_workers: int | None):
    """(training loader, validation loader of this rank, validation loader of every image)."""
    cuda = torch.cuda.is_available()
    per_rank = cfg.batch_size // world
    common = dict(batch_size=per_rank, num_workers=workers(n_workers, cuda),
                  collate_fn=data.collate_skip_bad, pin_memory=cuda)
    drop_last = len(train_set) // world > per_rank   # no 1-image batch for BatchNorm
    whole_val = DataLoader(val_set, **common)
    if world == 1:
        return DataLoader(train_set, shuffle=True, drop_last=drop_last, **common), whole_val, whole_val
    train = DataLoader(train_set, drop_last=drop_last,
                       sampler=DistributedSampler(train_set, shuffle=True, seed=cfg.seed), **common)
    val = DataLoader(val_set, sampler=DistributedSampler(val_set, shuffle=False), **common)
    return train, val, whole_val


def pos_weight_value(value: str, train_frame: pd.DataFrame) -> float | None:
    """The melanoma weight of the loss from ``auto``, ``none`` or a number."""
    if value == "none":
        return None
    if value == "auto":
        return float(data.pos_weight(data.encode_targets(train_frame))[0])
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"--pos-weight must be auto, none or a number, got {value!r}") from None


def train_run(cfg: TrainConfig, *, resume: bool = False, progress: bool = True,
              num_workers: int | None = None) -> dict[str, Any] | None:
    """Train the run ``cfg`` describes into ``cfg.out``; return its summary (rank 0; else None).

    ``resume=True`` continues an interrupted run from its ``last.pt`` (same settings required);
    without it a folder that already holds a run is refused. Bad input raises ``ValueError``
    naming the folder, file or setting.

    Introduced in chapter 12 (scaling up).
    """
    rank, world, _local = init_distributed()
    main, run = rank == 0, Path(cfg.out)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items() if k != "out"}
    _check(cfg, config, world, resume)
    train_frame, val_frame, split_note = choose_split(labelled_images(cfg, main), cfg, main)
    train_frame, val_frame = train_frame.reset_index(drop=True), val_frame.reset_index(drop=True)
    check_writable(run)             # before any training time is spent
    train_set, val_set = _datasets(cfg, train_frame, val_frame, config)
    train_loader, val_loader, whole_val = _loaders(cfg, train_set, val_set, world, num_workers)

    helpers.seed_everything(cfg.seed)               # the new head's initial weights
    model = build_model(cfg.model, 1, pretrained=cfg.pretrained, n_meta=train_set.meta_dim, verbose=main)
    freeze = cfg.freeze_blocks
    if freeze is None:
        freeze = config["freeze_blocks"] = 3 if cfg.model == "efficientnet_lite0" else 0
    freeze_early_blocks(model, freeze)
    pos_weight = pos_weight_value(cfg.pos_weight, train_frame)
    config.update({"num_classes": 1, "weights": model.weights_note, "split": split_note,
                   "n_train": len(train_frame), "n_val": len(val_frame),
                   "pos_weight_value": pos_weight, "world_size": world})
    if main:
        run.mkdir(parents=True, exist_ok=True)
        write_json(config, run / "config.json")
        split = pd.concat([train_frame.assign(role="train"), val_frame.assign(role="val")])
        write_csv(split[["image_id", "source_id", "target", "role"]], run / "split.csv")
        notice(f"train: {cfg.model} on {len(train_frame)} images "
               f"({int(train_frame['target'].sum())} melanoma), validating on {len(val_frame)} "
               f"({int(val_frame['target'].sum())} melanoma); run folder {helpers.display_path(run)}")
    started = time.perf_counter()
    try:
        history = fit(model, train_loader, val_loader, epochs=cfg.epochs, lr=cfg.lr,
                      weight_decay=cfg.weight_decay, warmup_epochs=cfg.warmup_epochs,
                      loss="bce", pos_weight=pos_weight, amp=cfg.amp, compile=cfg.compile,
                      out_dir=run, resume=resume, patience=cfg.patience, seed=cfg.seed,
                      progress=progress, config=config)
    except (OSError, RuntimeError, ValueError) as err:   # atomic checkpoints: the old ones stay whole
        cause = write_error(err)
        if cause is None:
            raise
        raise ValueError(f"{run}: cannot write the run's checkpoints ({reason(cause)}); the files "
                         "already there are complete: make room, then rerun with --resume") from None
    if not main:
        return None
    seconds = time.perf_counter() - started
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    write_atomically(run / "model.pt", lambda tmp: torch.save(state, tmp))
    write_csv(pd.DataFrame({"image_id": val_frame["image_id"], "target": val_frame["target"].astype(int),
                            "prediction": predict(model, whole_val, progress=progress)}),
              run / "val_predictions.csv")
    summary = _summary(history, train_set, val_set, run)
    summary["train_seconds"] = round(seconds, 1)
    write_json(summary, run / "summary.json")
    notice(f"done: {summary['epochs_done']} epochs, best validation AUC "
           f"{summary['best_val_auc']:.3f} (epoch {summary['best_epoch']}), "
           f"{summary['images_skipped']['count']} images skipped")
    return summary


def _summary(history, train_set, val_set, run: Path) -> dict[str, Any]:
    reasons = {Path(path).name or "(no file)": why
               for dataset in (train_set, val_set) for path, why in dataset.skipped}
    last = load_checkpoint(run / "last.pt")
    aucs = history["val_auc"]
    any_auc = aucs.notna().any()
    return {
        "epochs_done": int(history["epoch"].max()) if len(history) else 0,
        "epochs_planned": int(last["config"]["epochs"]),
        "stopped_early": bool(last["best"]["stopped"]),
        "best_epoch": int(history.loc[aucs.idxmax(), "epoch"] if any_auc else last["best"]["epoch"]),
        "best_val_auc": float(aucs.max()) if any_auc else None,
        "last_val_auc": float(aucs.iloc[-1]) if len(aucs) and math.isfinite(aucs.iloc[-1]) else None,
        "images_skipped": {"count": len(reasons), "reasons": reasons},
    }


def images_to_predict(folder: Path, split: str = "auto") -> tuple[pd.DataFrame, str]:
    """(frame of images with a file, description): a plain image folder or a layout's split."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: no such folder")
    decodable = [s for s in IMAGE_SUFFIXES if s != ".dcm"]   # what LesionDataset reads
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in decodable and p.is_file())
    if files and not (folder / "metadata.csv").is_file() and not any(folder.glob("*GroundTruth*")):
        ids = [p.stem for p in files]
        return (pd.DataFrame({"image_id": ids, "source_id": ids, "path": [str(p) for p in files]}),
                "images of a plain folder")
    frame = load_folder(folder)
    if split == "auto":
        split = "test" if (frame["split"] == "test").any() else "all"
    images = frame if split == "all" else frame[frame["split"] == split]
    if images.empty:
        raise ValueError(f"{folder}: no images in split {split!r} "
                         f"(splits here: {', '.join(sorted(frame['split'].dropna().unique()))})")
    missing = int(images["path"].isna().sum())
    if missing:
        notice(f"notice: {missing} images have no file and get no prediction")
    return (images[images["path"].notna()].reset_index(drop=True),
            "images" if split == "all" else f"{split} images")


def frame_loader(config: dict[str, Any], frame: pd.DataFrame, batch_size: int = 64,
                 num_workers: int = 0) -> DataLoader:
    """Batches of ``frame``'s images as a run's ``config`` expects them (size, metadata).

    Introduced in chapter 6 (patient context).
    """
    transform = data.eval_transforms(int(config["image_size"]))
    dataset = data.LesionDataset(frame.reset_index(drop=True), transform, target=None,
                                 meta=config.get("meta_columns"), age_mean=config.get("age_mean"))
    return DataLoader(dataset, batch_size=batch_size, collate_fn=data.collate_skip_bad,
                      num_workers=num_workers)


def predict_frame(run: os.PathLike | str, frame: pd.DataFrame, batch_size: int = 64,
                  tta: int = 1) -> np.ndarray:
    """Melanoma probabilities of ``frame``'s images from a run folder's best weights.

    ``frame`` is a tidy frame with a ``path`` column; row ``i`` of the result belongs to row ``i``
    of ``frame`` (NaN for an unreadable image).

    Introduced in chapter 11 (explainability and limits).
    """
    model, config, _, _ = load_run(run)
    loader = frame_loader(config, frame, batch_size)
    return predict(model, loader, device=helpers.device(verbose=False), tta=tta)


def predict_run(run: os.PathLike | str, data_dir: os.PathLike | str, out: os.PathLike | str | None = None,
                *, split: str = "auto", tta: int = 1, batch_size: int = 64,
                num_workers: int | None = None, progress: bool = True) -> pd.DataFrame:
    """Melanoma probabilities of the images of ``data_dir`` from the run folder ``run``.

    Returns a frame ``image_name,target`` (the SIIM-ISIC 2020 submission format), written to
    ``out`` atomically when given. ``split`` picks a layout's split (``auto``: its test split if
    it has one, else all); a plain image folder is predicted whole. Unreadable images get the mean
    prediction (announced).

    Not called in a chapter; used by `cmd_predict`, `out_of_fold`.
    """
    if out is not None:
        check_writable(Path(out).parent)
    model, config, weights, epoch = load_run(run)
    images, what = images_to_predict(Path(data_dir), split)
    loader = frame_loader(config, images, batch_size, workers(num_workers, torch.cuda.is_available()))
    print(f"weights: {helpers.display_path(weights)} (epoch {epoch}); predicting "
          f"{len(images)} {what} with tta={tta}")
    probs = predict(model, loader, tta=tta, progress=progress)
    bad = np.isnan(probs)
    if bad.any():
        fill = float(np.nanmean(probs)) if (~bad).any() else 0.5
        notice(f"notice: {int(bad.sum())} unreadable images get the mean prediction {fill:.3f}")
        probs = np.where(bad, fill, probs)
    frame = pd.DataFrame({"image_name": images["source_id"].astype(str), "target": probs})
    if out is not None:
        write_atomically(Path(out), lambda tmp: write_submission(frame, tmp, "2020"))
    return frame
