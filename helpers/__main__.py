"""Command line of the book's helpers: ``python -m helpers <command> ...``.

Commands
--------
``train``
    Fine-tune a CNN on any download folder :func:`helpers.datasets.load_dataset`
    recognises (a ``data_samples/`` layout, a Kaggle or challenge download, an
    ``isic image download`` folder)::

        python -m helpers train --data-dir DIR --out RUN [--model efficientnet_lite0]
            [--epochs 5] [--image-size 224] [--batch-size 32] [--lr 1e-3] [--seed 0]
            [--folds K --fold F] [--val-frac 0.2] [--limit N] [--workers W]
            [--pretrained | --no-pretrained] [--amp auto|bf16|fp16|off]
            [--patience P] [--meta] [--resume]

    Validation images: the layout's own ``val`` split if it has one; with
    ``--folds K --fold F`` fold F of K patient-grouped folds
    (:func:`helpers.data.patient_folds`); otherwise a stratified hold-out of
    ``--val-frac`` of the labelled images (:func:`helpers.data.holdout_split`),
    announced in one line. Test-split images (no labels) are never used.
    The run folder ``RUN`` receives ``config.json``, ``split.csv`` (which
    image went where), ``last.pt`` (rewritten atomically every epoch),
    ``best.pt``, ``history.csv`` and ``summary.json``. ``--resume`` continues
    an interrupted run from ``last.pt``; without it an existing run is refused.
    Under ``torchrun --nproc_per_node=N`` the same command trains on N
    processes with DistributedDataParallel (``--batch-size`` is the global batch).

``predict``
    Write a submission in the SIIM-ISIC 2020 format ``image_name,target``::

        python -m helpers predict --run RUN --data-dir DIR --out preds.csv [--tta N]

    One row per image of DIR's ``test`` split when the layout has one,
    otherwise one row per image in DIR (images whose file is missing are
    left out). ``target`` is the predicted melanoma probability from the
    run's ``best.pt``, averaged over ``--tta`` flips/rotations.

Bad input (missing folder, unknown layout, malformed CSV, incompatible run,
an output folder that cannot be written or is full) prints one line on
stderr and exits with status 2. Every file is written to a temporary name
and renamed when complete, so a failed or killed run never leaves a
half-written file under its final name (``summary.json`` appears last).
"""
from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

from helpers.io import write_atomically

__all__ = ["main", "build_parser"]


# ----------------------------------------------------------------------------------------
# Argument parsing
# ----------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    """The ``argparse`` parser with one sub-parser per command (other modules may add more).

    Introduced in chapter 8 (training a CNN).
    """
    from helpers.models import ARCHITECTURES

    parser = argparse.ArgumentParser(prog="python -m helpers",
                                     description="Helpers of the melanoma book.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="fine-tune a CNN on a download folder",
                       description="Fine-tune a CNN (melanoma vs. not) on a download folder.")
    t.add_argument("--data-dir", required=True, type=Path, help="a download folder (any known layout)")
    t.add_argument("--out", required=True, type=Path, help="run folder to write")
    t.add_argument("--model", default="efficientnet_lite0", choices=ARCHITECTURES)
    t.add_argument("--epochs", type=int, default=15)
    t.add_argument("--image-size", type=int, default=224)
    t.add_argument("--batch-size", type=int, default=32, help="global batch size")
    t.add_argument("--lr", type=float, default=5e-4)
    t.add_argument("--freeze-blocks", type=int, default=None,
                   help="freeze the stem and the first N blocks (efficientnet_lite0; default 3, "
                        "0 for other models)")
    t.add_argument("--weight-decay", type=float, default=1e-4)
    t.add_argument("--warmup-epochs", type=float, default=1.0)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--folds", type=int, default=None, help="K patient-grouped folds ...")
    t.add_argument("--fold", type=int, default=0, help="... of which this one validates")
    t.add_argument("--val-frac", type=float, default=0.2,
                   help="hold-out fraction when the data has no validation split")
    t.add_argument("--limit", type=int, default=None,
                   help="use a stratified subset of N labelled images (quick runs)")
    t.add_argument("--workers", type=int, default=None,
                   help="data-loading processes (default: 0 on CPU, up to 8 on a GPU)")
    t.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=True,
                   help="start from ImageNet weights")
    t.add_argument("--amp", default="auto", help="mixed precision: auto, bf16, fp16 or off")
    t.add_argument("--compile", action="store_true", help="torch.compile the model")
    t.add_argument("--patience", type=int, default=None, help="early-stopping patience (epochs)")
    t.add_argument("--pos-weight", default="auto",
                   help="melanoma weight in the loss: auto (negatives/positives), none, or a number")
    t.add_argument("--meta", action="store_true", help="also feed age, sex and site to the model")
    t.add_argument("--resume", action="store_true", help="continue the run in --out")
    t.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bars")
    t.set_defaults(func=cmd_train)

    p = sub.add_parser("predict", help="write image_name,target predictions",
                       description="Predict melanoma probabilities with a trained run.")
    p.add_argument("--run", required=True, type=Path, help="run folder written by train")
    p.add_argument("--data-dir", required=True, type=Path, help="a download folder (any known layout)")
    p.add_argument("--out", required=True, type=Path, help="CSV to write (image_name,target)")
    p.add_argument("--split", default="auto", choices=("auto", "train", "val", "test", "all"),
                   help="which images of a layout folder (auto: its test split if it has one, "
                        "else all); a plain folder of images is always predicted whole")
    p.add_argument("--tta", type=int, default=1, help="test-time augmentation copies (1-8)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=None)
    p.set_defaults(func=cmd_predict)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (2 on bad input, with one line on stderr).

    Introduced in chapter 8 (training a CNN).
    """
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning
            return int(args.func(args) or 0)
    except ValueError as err:
        message = " ".join(str(err).split())
        print(f"error: {message}", file=sys.stderr)
        return 2
    except OSError as err:   # e.g. a file that cannot be read: one line, no traceback
        where = f"{err.filename}: " if err.filename else ""
        print(f"error: {where}{' '.join(_reason(err).split())}", file=sys.stderr)
        return 2
    finally:
        import torch

        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


# ----------------------------------------------------------------------------------------
# Shared steps
# ----------------------------------------------------------------------------------------

def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Show a warning as one ``notice:`` line on stderr (no source line, no file name)."""
    print(f"notice: {' '.join(str(message).split())}", file=sys.stderr)


def _notice(message: str, main: bool = True) -> None:
    if main:
        print(message, flush=True)


def _load(data_dir: Path, main: bool):
    """load_dataset with its warnings turned into one-line notices."""
    from helpers.datasets import load_dataset

    if not data_dir.is_dir():
        raise ValueError(f"{data_dir}: no such folder")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame = load_dataset(data_dir)
    for w in caught:
        _notice("notice: " + " ".join(str(w.message).split()), main)
    return frame


def _workers(requested: int | None, cuda: bool) -> int:
    if requested is not None:
        return max(0, requested)
    return min(8, max(0, (os.cpu_count() or 1) - 1)) if cuda else 0


#: errno values that mean "the output cannot be written" (full, read-only, not allowed).
WRITE_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM,
                          errno.EFBIG, errno.ENOTDIR})


def _reason(err: OSError) -> str:
    return err.strerror or str(err)


def _write_error(err: BaseException) -> OSError | None:
    """The OSError of a failed write behind ``err``, if any (``torch.save`` on a full disk
    raises a RuntimeError from its zip writer, with the OSError as its context)."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in WRITE_ERRORS:
            return err
        err = err.__cause__ or err.__context__
    return None


def _check_writable(folder: Path) -> None:
    """Fail early, in one line, when ``folder`` cannot be created or written to."""
    probe = folder / f".write-test.{os.getpid()}.tmp"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"\0")
    except OSError as err:
        raise ValueError(f"{folder}: cannot write to this folder ({_reason(err)})") from None
    finally:
        try:
            probe.unlink(missing_ok=True)
        except OSError:
            pass


def _write_json(obj: Any, path: Path) -> None:
    text = json.dumps(obj, indent=2, default=str) + "\n"
    write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _choose_split(labelled, args, main: bool):
    """Return (train frame, val frame, description of the split).

    ``labelled`` holds no test images (``cmd_train`` removes them); a layout
    with a ``train`` split trains on it alone (folds are cut from it), and
    validates on its own ``val`` split when it has one.
    """
    from helpers import data

    official = (labelled["split"] == "train").any() and (labelled["split"] == "val").any()
    if args.folds is not None:
        if not 0 <= args.fold < args.folds:
            raise ValueError(f"--fold must be in 0..{args.folds - 1}, got {args.fold}")
        pool = labelled[labelled["split"] == "train"] if official else labelled
        pool = pool.reset_index(drop=True)
        val_mask = data.patient_folds(pool, args.folds, args.seed).to_numpy() == args.fold
        return (pool[~val_mask], pool[val_mask],
                f"fold {args.fold} of {args.folds} patient-grouped folds")
    if official:
        return (labelled[labelled["split"] == "train"], labelled[labelled["split"] == "val"],
                "the layout's training split; its validation split")
    val_mask = (data.holdout_split(labelled, args.val_frac, args.seed) == "val").to_numpy()
    train, val = labelled[~val_mask], labelled[val_mask]
    whole = ", patients kept whole" if labelled["patient_id"].notna().any() else ""
    _notice(f"split: the data has no validation split; holding out {len(val)} of "
            f"{len(labelled)} labelled images (about {args.val_frac:.0%}, stratified by "
            f"melanoma{whole}, seed {args.seed})", main)
    return train, val, f"stratified hold-out of {args.val_frac:.0%}"


# ----------------------------------------------------------------------------------------
# train
# ----------------------------------------------------------------------------------------

CONFIG_KEYS_THAT_MUST_MATCH = ("model", "image_size", "batch_size", "seed", "folds", "fold",
                               "limit", "val_frac", "meta", "lr", "epochs")


def cmd_train(args: argparse.Namespace) -> int:
    """``python -m helpers train``: see the module docstring.

    Introduced in chapter 8 (training a CNN).
    """
    import pandas as pd
    import torch
    from torch.utils.data import DataLoader, DistributedSampler

    import helpers
    from helpers import data
    from helpers.models import build_model, freeze_early_blocks
    from helpers.train import fit, init_distributed, predict

    rank, world, _local = init_distributed()
    main = rank == 0
    run = args.out
    if args.epochs < 1 or args.image_size < 8 or args.batch_size < 1:
        raise ValueError("--epochs and --batch-size must be >= 1 and --image-size >= 8")
    if args.batch_size % world:
        raise ValueError(f"--batch-size {args.batch_size} is not divisible by {world} processes")
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
              if k not in ("func", "command", "resume", "out", "progress", "workers")}
    config["data_dir"] = str(args.data_dir)
    if (run / "last.pt").exists() and not args.resume:
        raise ValueError(f"{run}: already holds a run (last.pt); pass --resume to continue it "
                         "or choose another --out")
    if args.resume and (run / "config.json").is_file():
        old = json.loads((run / "config.json").read_text(encoding="utf-8"))
        for key in CONFIG_KEYS_THAT_MUST_MATCH:
            if key in old and old[key] != config.get(key):
                raise ValueError(f"{run / 'config.json'}: the run used --{key.replace('_', '-')} "
                                 f"{old[key]}, not {config.get(key)}; resume with the same settings")

    frame = _load(args.data_dir, main)
    labelled = frame[frame["target"].notna() & frame["path"].notna()]
    held = labelled["split"] == "test"
    if held.any():
        _notice(f"split: the {int(held.sum())} labelled images of the test split are kept out "
                "of training and validation", main)
    labelled = labelled[~held].reset_index(drop=True)
    if labelled.empty:
        raise ValueError(f"{args.data_dir}: no labelled images with an image file to train on")
    if labelled["target"].nunique() < 2:
        raise ValueError(f"{args.data_dir}: all labelled images have target "
                         f"{labelled['target'].iloc[0]}; training needs both classes")
    if args.limit is not None and args.limit < len(labelled):
        from sklearn.model_selection import train_test_split

        labelled, _ = train_test_split(labelled, train_size=args.limit, random_state=args.seed,
                                       stratify=labelled["target"].astype(int))
        labelled = labelled.sort_index().reset_index(drop=True)
    train_frame, val_frame, split_note = _choose_split(labelled, args, main)
    train_frame, val_frame = train_frame.reset_index(drop=True), val_frame.reset_index(drop=True)
    _check_writable(run)             # before any training time is spent

    meta, age_mean = None, None
    if args.meta:   # age, sex, site; missing ages filled with the training mean
        meta = list(data.META_COLUMNS)
        ages = pd.to_numeric(train_frame["age_approx"], errors="coerce")
        age_mean = float(ages.mean()) if ages.notna().any() else 50.0
    train_set = data.LesionDataset(train_frame, data.train_transforms(args.image_size),
                                   target="target", meta=meta, age_mean=age_mean)
    val_set = data.LesionDataset(val_frame, data.eval_transforms(args.image_size),
                                 target="target", meta=meta, age_mean=age_mean)
    n_meta = train_set.meta_dim
    config.update({"n_meta": n_meta, "meta_columns": meta, "age_mean": age_mean})

    cuda = torch.cuda.is_available()
    workers = _workers(args.workers, cuda)
    per_rank = args.batch_size // world
    common = dict(num_workers=workers, collate_fn=data.collate_skip_bad, pin_memory=cuda)
    drop_last = len(train_set) // world > per_rank   # no 1-image batch for BatchNorm
    if world > 1:
        train_loader = DataLoader(train_set, batch_size=per_rank, drop_last=drop_last,
                                  sampler=DistributedSampler(train_set, shuffle=True, seed=args.seed),
                                  **common)
        val_loader = DataLoader(val_set, batch_size=per_rank,
                                sampler=DistributedSampler(val_set, shuffle=False), **common)
    else:
        train_loader = DataLoader(train_set, batch_size=per_rank, shuffle=True,
                                  drop_last=drop_last, **common)
        val_loader = DataLoader(val_set, batch_size=per_rank, **common)

    helpers.seed_everything(args.seed)               # the new head's initial weights
    model = build_model(args.model, 1, pretrained=args.pretrained, n_meta=n_meta, verbose=main)
    if args.freeze_blocks is None:
        args.freeze_blocks = config["freeze_blocks"] = 3 if args.model == "efficientnet_lite0" else 0
    freeze_early_blocks(model, args.freeze_blocks)
    pos_weight = _pos_weight(args.pos_weight, train_frame)
    config.update({"num_classes": 1, "weights": model.weights_note, "split": split_note,
                   "n_train": len(train_frame), "n_val": len(val_frame),
                   "pos_weight_value": pos_weight, "world_size": world})
    if main:
        run.mkdir(parents=True, exist_ok=True)
        _write_json(config, run / "config.json")
        split = pd.concat([train_frame.assign(role="train"), val_frame.assign(role="val")])
        write_atomically(run / "split.csv", lambda tmp: split[
            ["image_id", "source_id", "target", "role"]].to_csv(tmp, index=False, lineterminator="\n"))
        _notice(f"train: {args.model} on {len(train_frame)} images "
                f"({int(train_frame['target'].sum())} melanoma), validating on {len(val_frame)} "
                f"({int(val_frame['target'].sum())} melanoma); run folder "
                f"{helpers.display_path(run)}")
    started = time.perf_counter()
    try:
        history = fit(model, train_loader, val_loader, epochs=args.epochs, lr=args.lr,
                      weight_decay=args.weight_decay, warmup_epochs=args.warmup_epochs,
                      loss="bce", pos_weight=pos_weight, amp=args.amp, compile=args.compile,
                      out_dir=run, resume=args.resume, patience=args.patience, seed=args.seed,
                      progress=args.progress, config=config)
    except (OSError, RuntimeError) as err:   # checkpoints are written atomically: old ones stay whole
        cause = _write_error(err)
        if cause is None:
            raise
        raise ValueError(f"{run}: cannot write the run's checkpoints ({_reason(cause)}); the files "
                         "already there are complete: make room, then rerun with --resume") from None
    if main:
        seconds = time.perf_counter() - started
        _save_half(model, run / "model.pt")
        whole_val = DataLoader(val_set, batch_size=per_rank, **common)   # every image, one process
        val_probs = predict(model, whole_val, progress=args.progress)
        write_atomically(run / "val_predictions.csv", lambda tmp: pd.DataFrame(
            {"image_id": val_frame["image_id"], "target": val_frame["target"].astype(int),
             "prediction": val_probs}).to_csv(tmp, index=False, lineterminator="\n"))
        summary = _summary(history, train_set, val_set, run)
        summary["train_seconds"] = round(seconds, 1)
        _write_json(summary, run / "summary.json")
        _notice(f"done: {summary['epochs_done']} epochs, best validation AUC "
                f"{summary['best_val_auc']:.3f} (epoch {summary['best_epoch']}), "
                f"{summary['images_skipped']['count']} images skipped")
    return 0


def _save_half(model, path: Path) -> None:
    """The trained weights in half precision (``model.pt``): a small file to keep or share."""
    import torch

    state = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    write_atomically(path, lambda tmp: torch.save(state, tmp))


def _pos_weight(value: str, train_frame) -> float | None:
    from helpers import data

    if value == "none":
        return None
    if value == "auto":
        return float(data.pos_weight(data.encode_targets(train_frame))[0])
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"--pos-weight must be auto, none or a number, got {value!r}") from None


def _skipped(dataset) -> dict[str, str]:
    """Unreadable images of a LesionDataset (file name -> reason)."""
    return {Path(path).name or "(no file)": reason for path, reason in dataset.skipped}


def _summary(history, train_set, val_set, run: Path) -> dict[str, Any]:
    import math

    from helpers.train import load_checkpoint

    reasons = {**_skipped(train_set), **_skipped(val_set)}
    last = load_checkpoint(run / "last.pt")
    aucs = history["val_auc"]
    best_epoch = int(history.loc[aucs.idxmax(), "epoch"]) if aucs.notna().any() else int(last["best"]["epoch"])
    best_auc = float(aucs.max()) if aucs.notna().any() else float("nan")
    return {
        "epochs_done": int(history["epoch"].max()) if len(history) else 0,
        "epochs_planned": int(last["config"]["epochs"]),
        "stopped_early": bool(last["best"]["stopped"]),
        "best_epoch": best_epoch,
        "best_val_auc": best_auc if math.isfinite(best_auc) else None,
        "last_val_auc": float(aucs.iloc[-1]) if len(aucs) and math.isfinite(aucs.iloc[-1]) else None,
        "images_skipped": {"count": len(reasons), "reasons": reasons},
    }


# ----------------------------------------------------------------------------------------
# predict
# ----------------------------------------------------------------------------------------

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def _images_to_predict(folder: Path, split: str):
    """(frame of images with a file, description): a plain image folder or a layout's split."""
    import pandas as pd

    if not folder.is_dir():
        raise ValueError(f"{folder}: no such folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if files and not (folder / "metadata.csv").is_file() and not any(folder.glob("*GroundTruth*")):
        ids = [p.stem for p in files]
        return pd.DataFrame({"image_id": ids, "source_id": ids, "path": [str(p) for p in files]}), \
            "images of a plain folder"
    frame = _load(folder, True)
    if split == "auto":
        split = "test" if (frame["split"] == "test").any() else "all"
    images = frame if split == "all" else frame[frame["split"] == split]
    if images.empty:
        raise ValueError(f"{folder}: no images in split {split!r} "
                         f"(splits here: {', '.join(sorted(frame['split'].dropna().unique()))})")
    missing = int(images["path"].isna().sum())
    if missing:
        _notice(f"notice: {missing} images have no file and get no prediction")
    return images[images["path"].notna()].reset_index(drop=True), \
        ("images" if split == "all" else f"{split} images")


def cmd_predict(args: argparse.Namespace) -> int:
    """``python -m helpers predict``: see the module docstring.

    Introduced in chapter 8 (training a CNN).
    """
    import numpy as np
    import pandas as pd
    import torch
    from torch.utils.data import DataLoader

    import helpers
    from helpers import data
    from helpers.metrics import write_submission
    from helpers.train import load_run, predict

    _check_writable(args.out.parent)
    model, config, weights, epoch = load_run(args.run)

    images, what = _images_to_predict(args.data_dir, args.split)
    dataset = data.LesionDataset(images, data.eval_transforms(int(config["image_size"])),
                                 target=None, meta=config.get("meta_columns"),
                                 age_mean=config.get("age_mean"))
    loader = DataLoader(dataset, batch_size=args.batch_size, collate_fn=data.collate_skip_bad,
                        num_workers=_workers(args.workers, torch.cuda.is_available()))
    print(f"weights: {helpers.display_path(weights)} (epoch {epoch}); predicting "
          f"{len(images)} {what} with tta={args.tta}")
    probs = predict(model, loader, tta=args.tta, progress=args.progress)
    bad = np.isnan(probs)
    if bad.any():
        fill = float(np.nanmean(probs)) if (~bad).any() else 0.5
        _notice(f"notice: {int(bad.sum())} unreadable images get the mean prediction {fill:.3f}")
        probs = np.where(bad, fill, probs)
    out = pd.DataFrame({"image_name": images["source_id"].astype(str), "target": probs})
    write_atomically(args.out, lambda tmp: write_submission(out, tmp, "2020"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
