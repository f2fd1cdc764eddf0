"""What AUC to expect on real images: the CLI with its defaults on 311 real dermoscopy JPEGs.

Runs ``python -m helpers train`` with the command line's default settings
(efficientnet_lite0 with its offline ImageNet weights, 224 px, 5 epochs,
batch 32, seed 0, a stratified hold-out of 20 %) on
``../shared/datasets/isic-archive-uda1`` (ISIC Archive collection UDA-1, CC0:
311 images, 103 melanomas, no split of its own) into a temporary run folder,
then ``python -m helpers predict`` on the same folder with ``--tta 1`` and
``--tta 8``, and computes the ROC AUC on the held-out images (the ``val`` rows
of the run's ``split.csv``). Train and predict run exactly as a reader would
run them, in subprocesses.

    .venv/bin/python benchmarks/real_images.py            # writes benchmarks/real_images.json
    .venv/bin/python benchmarks/real_images.py --json -   # print the JSON instead

Chapter 8 reads ``benchmarks/real_images.json`` and quotes its AUC as what a
reader should expect on real images. On a 2-core CPU the whole run takes
several minutes.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SRC = REPO_ROOT.parent / "shared" / "datasets" / "isic-archive-uda1"
DEFAULT_JSON = REPO_ROOT / "benchmarks" / "real_images.json"
TTA = 8


def _cli(args: list[str]) -> tuple[str, float]:
    """Run ``python -m helpers ARGS`` from the repository root; return (stdout, seconds)."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "helpers", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise SystemExit(f"python -m helpers {args[0]} failed (exit {proc.returncode}):\n"
                         + "\n".join(tail))
    return proc.stdout, seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, default=DEFAULT_SRC, help="the UDA-1 folder")
    ap.add_argument("--json", default=str(DEFAULT_JSON),
                    help="where to write the result ('-' prints it)")
    args = ap.parse_args(argv)

    if not args.src.is_dir():
        print(f"real-image check skipped: {args.src} not found (it needs "
              "../shared/datasets/isic-archive-uda1 next to the repository)", file=sys.stderr)
        return 2

    import pandas as pd
    import torch
    from sklearn.metrics import roc_auc_score

    load_at_start = os.getloadavg()[0]
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="real_images_") as tmp:
        run = Path(tmp) / "run"
        train_out, train_s = _cli(["train", "--data-dir", str(args.src), "--out", str(run),
                                   "--no-progress"])
        config = json.loads((run / "config.json").read_text(encoding="utf-8"))
        summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
        split = pd.read_csv(run / "split.csv")
        val = split[split["role"] == "val"]
        train = split[split["role"] == "train"]
        aucs, predict_s = {}, {}
        for tta in (1, TTA):
            preds = Path(tmp) / f"preds_tta{tta}.csv"
            _, predict_s[tta] = _cli(["predict", "--run", str(run), "--data-dir", str(args.src),
                                      "--out", str(preds), "--tta", str(tta)])
            sub = pd.read_csv(preds).set_index("image_name")
            held_out = sub.loc[val["source_id"].astype(str), "target"].to_numpy()
            aucs[tta] = float(roc_auc_score(val["target"].astype(int), held_out))
    wall = time.perf_counter() - t_all

    result = {
        "what": ("python -m helpers train with the CLI defaults on real CC0 dermoscopy images "
                 "(ISIC Archive UDA-1), then python -m helpers predict; ROC AUC on the held-out "
                 "images of the run's split.csv"),
        "data": "../shared/datasets/isic-archive-uda1",
        "settings": {k: config[k] for k in ("model", "image_size", "epochs", "batch_size", "lr",
                                            "weight_decay", "warmup_epochs", "val_frac", "seed",
                                            "pos_weight", "amp", "split", "weights")
                     if k in config},
        "n_train": int(len(train)),
        "n_train_melanoma": int(train["target"].sum()),
        "n_val": int(len(val)),
        "n_val_melanoma": int(val["target"].sum()),
        "val_auc": round(aucs[1], 4),
        "val_auc_tta": round(aucs[TTA], 4),
        "tta": TTA,
        "best_epoch": summary["best_epoch"],
        "best_val_auc_during_training": summary["best_val_auc"],
        "train_seconds": round(train_s, 1),
        "predict_seconds": {str(k): round(v, 1) for k, v in predict_s.items()},
        "wall_seconds": round(wall, 1),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "niceness": os.nice(0),
        "load_average_1min_at_start": round(load_at_start, 2),
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "train_log": [line for line in train_out.splitlines() if line.strip()],
    }
    text = json.dumps(result, indent=2) + "\n"
    if args.json == "-":
        print(text, end="")
    else:
        Path(args.json).write_text(text, encoding="utf-8")
        print(f"held-out AUC {aucs[1]:.3f} ({aucs[TTA]:.3f} with --tta {TTA}) on {len(val)} "
              f"images; {wall:.0f} s; written to {os.path.relpath(args.json, REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
