"""Command line of the book's helpers: ``python -m helpers <command> ...``.

``train`` fine-tunes a CNN on a download folder (:func:`helpers.runs.train_run`; under
``torchrun --nproc_per_node=N`` with DistributedDataParallel); ``predict`` writes a SIIM-ISIC 2020
submission ``image_name,target`` with a trained run (:func:`helpers.runs.predict_run`).
Bad input prints one line on stderr and exits with status 2; every file is written under a
temporary name and renamed when complete (``summary.json`` last).
"""
from __future__ import annotations

import argparse
import sys
import warnings
from dataclasses import fields
from pathlib import Path
from typing import Sequence

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    """The ``argparse`` parser with one sub-parser per command (other modules may add more).

    Not called in a chapter; used by `main`.
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

    Not called in a chapter: the command line `python -m helpers` (README).
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
        print(f"error: {where}{' '.join((err.strerror or str(err)).split())}", file=sys.stderr)
        return 2
    finally:
        import torch

        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Show a warning as one ``notice:`` line on stderr (no source line, no file name)."""
    print(f"notice: {' '.join(str(message).split())}", file=sys.stderr)


def cmd_train(args: argparse.Namespace) -> int:
    """``python -m helpers train``: :func:`helpers.runs.train_run` with the parsed settings."""
    from helpers.runs import TrainConfig, train_run

    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})
    train_run(cfg, resume=args.resume, progress=args.progress, num_workers=args.workers)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """``python -m helpers predict``: :func:`helpers.runs.predict_run` with the parsed settings."""
    from helpers.runs import predict_run

    predict_run(args.run, args.data_dir, args.out, split=args.split, tta=args.tta,
                batch_size=args.batch_size, num_workers=args.workers, progress=args.progress)
    return 0


if __name__ == "__main__":
    sys.exit(main())
