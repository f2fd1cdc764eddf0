"""Accuracy goal on real data: the command line's default recipe on the ISIC 2017 challenge.

Trains ``python -m helpers train --data-dir data_samples/isic-2017 --out RUN`` with the
command line's defaults (it trains on the 2,000 official training images and keeps the
epoch with the best melanoma AUC on the 150 validation images), then:

1. chooses test-time augmentation on the VALIDATION split (``--tta 1`` against ``8``);
2. scores the official 600-image test set once: melanoma ROC AUC with a 95 % bootstrap
   interval (2,000 resamples of images) and average precision;
3. scores the 61 real UDA-1 images of ``data_samples/isic-archive-uda1`` (another ISIC
   Archive collection, none in the 2017 training set) the same way, as a check of generalisation;
4. measures, in the same run, the anchor: a logistic regression on frozen ImageNet
   EfficientNet-Lite0 features (training + validation images -> test).

    .venv/bin/python benchmarks/isic2017.py                   # train afresh, compare with runs/isic2017
    .venv/bin/python benchmarks/isic2017.py --run runs/isic2017 --write-run   # evaluate a kept run

``--write-run`` stores the predictions, ``metrics.json`` and ``embeddings.npz`` (the network's
1,280 penultimate features of every 2017 image, in half precision, which chapters 9 and 10
read instead of recomputing them) in the run folder (the book's committed run was evaluated
this way); ``tests/test_book_run.py`` recomputes every
number of ``metrics.json`` from those predictions. The result goes to
``benchmarks/isic2017.json`` and between the markers of ``benchmarks/RESULTS.md``.
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

import numpy as np
import pandas as pd

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA = REPO_ROOT / "data_samples" / "isic-2017"
UDA1 = REPO_ROOT / "data_samples" / "isic-archive-uda1"
KEPT_RUN = REPO_ROOT / "runs" / "isic2017"
RESULTS = REPO_ROOT / "benchmarks" / "RESULTS.md"
MARKERS = ("<!-- isic2017:start -->", "<!-- isic2017:end -->")
N_BOOT = 2000


def cli(*args: str) -> float:
    """Run ``python -m helpers ARGS`` as a reader would; return the seconds it took."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "helpers", *args, "--no-progress"],
                          cwd=REPO_ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"python -m helpers {args[0]} failed: {proc.stderr.strip()[-500:]}")
    return time.perf_counter() - t0


def scored(predictions: Path, truth: pd.Series) -> dict:
    """AUC with its bootstrap interval and average precision of a predictions file."""
    from helpers.metrics import average_precision, bootstrap_ci, roc_auc

    p = pd.read_csv(predictions).set_index("image_name")["target"]
    y = truth.loc[p.index].to_numpy(dtype=int)
    ci = bootstrap_ci(y, p.to_numpy(), roc_auc, n=N_BOOT, seed=0)
    return {"n": int(len(y)), "n_melanoma": int(y.sum()), "auc": ci.estimate,
            "auc_ci95": [ci.low, ci.high], "average_precision": average_precision(y, p.to_numpy())}


def frozen_anchor() -> float:
    """Logistic regression on frozen ImageNet Lite0 features: (train + val) -> test AUC."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from helpers.context import image_embeddings
    from helpers.datasets import load_dataset
    from helpers.metrics import roc_auc
    from helpers.models import build_model

    frame = load_dataset(DATA)
    x = image_embeddings(build_model("efficientnet_lite0", 1, verbose=False),
                         frame["path"].tolist(), size=224, progress=False)
    fit = frame["split"] != "test"
    scaler = StandardScaler().fit(x[fit])
    clf = LogisticRegression(max_iter=2000, C=0.1).fit(scaler.transform(x[fit]), frame["target"][fit].astype(int))
    test = ~fit
    return roc_auc(frame["target"][test].astype(int), clf.predict_proba(scaler.transform(x[test]))[:, 1])


def evaluate(run: Path, out: Path) -> dict:
    """Choose TTA on validation, then score test and UDA-1 once; predictions go to ``out``."""
    from helpers.datasets import load_dataset

    frame = load_dataset(DATA).set_index("source_id")
    truth = frame["target"].astype(int)
    val = {}
    for tta in (1, 8):
        cli("predict", "--run", str(run), "--data-dir", str(DATA), "--split", "val",
            "--tta", str(tta), "--out", str(out / f"val_predictions_tta{tta}.csv"))
        val[tta] = scored(out / f"val_predictions_tta{tta}.csv", truth)["auc"]
    tta = 8 if val[8] > val[1] else 1
    seconds = cli("predict", "--run", str(run), "--data-dir", str(DATA), "--split", "test",
                  "--tta", str(tta), "--out", str(out / "test_predictions.csv"))
    cli("predict", "--run", str(run), "--data-dir", str(UDA1), "--tta", str(tta),
        "--out", str(out / "uda1_predictions.csv"))
    uda = load_dataset(UDA1).set_index("source_id")["target"].astype(int)
    return {"val_auc_tta1": val[1], "val_auc_tta8": val[8], "tta": tta,
            "test": scored(out / "test_predictions.csv", truth),
            "uda1": scored(out / "uda1_predictions.csv", uda),
            "test_predict_seconds": round(seconds, 1)}


def write_embeddings(run: Path) -> None:
    """The run's penultimate features of every 2017 image, half precision, in ``run/embeddings.npz``
    (the layout of :func:`helpers.context.cached_embeddings`, which then reads them)."""
    from helpers.context import cached_embeddings, model_fingerprint
    from helpers.datasets import load_dataset
    from helpers.train import load_run

    model, config, _, _ = load_run(run)
    frame = load_dataset(DATA)
    size = int(config["image_size"])
    with tempfile.TemporaryDirectory() as tmp:
        features = cached_embeddings(model, frame, Path(tmp) / "features.npz", size=size)
    order = np.argsort(frame["image_id"].to_numpy())
    np.savez_compressed(run / "embeddings.npz", image_id=frame["image_id"].to_numpy()[order].astype(str),
                        features=features[order].astype(np.float16), size=np.array(size),
                        fingerprint=np.array(model_fingerprint(model)))


def machine() -> dict:
    import torch

    return {"device": "cpu" if not torch.cuda.is_available() else torch.cuda.get_device_name(0),
            "cpu_count": os.cpu_count(), "torch": torch.__version__,
            "python": platform.python_version(), "load_average_1min": round(os.getloadavg()[0], 2),
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def markdown(result: dict) -> str:
    t, u, s = result["test"], result["uda1"], result["summary"]
    lines = [
        f"Measured {result['machine']['date']} on {result['machine']['device']} "
        f"({result['machine']['cpu_count']} cores; torch {result['machine']['torch']}).",
        "",
        "| what | value |", "| --- | --- |",
        f"| training time, {s['epochs_done']} epochs (wall clock) | {s['train_seconds'] / 60:.1f} min |",
        f"| best epoch (validation melanoma AUC) | {s['best_epoch']} ({s['best_val_auc']:.3f}) |",
        f"| validation AUC without / with 8-fold TTA | {result['val_auc_tta1']:.3f} / "
        f"{result['val_auc_tta8']:.3f} (chosen: tta {result['tta']}) |",
        f"| **test melanoma AUC** ({t['n']} images, {t['n_melanoma']} melanomas) | "
        f"**{t['auc']:.3f}** (95 % CI {t['auc_ci95'][0]:.3f}–{t['auc_ci95'][1]:.3f}) |",
        f"| test average precision | {t['average_precision']:.3f} |",
        f"| UDA-1, {u['n']} images not in the training set ({u['n_melanoma']} melanomas) | "
        f"AUC {u['auc']:.3f} (95 % CI {u['auc_ci95'][0]:.3f}–{u['auc_ci95'][1]:.3f}) |",
    ]
    if result.get("anchor_auc") is not None:
        lines.append(f"| anchor: logistic regression on frozen ImageNet features, test AUC | "
                     f"{result['anchor_auc']:.3f} |")
    lines.append("| the same recipe on a GPU | not measured on a GPU yet |")
    goal = "met" if t["auc"] >= 0.85 and s["train_seconds"] <= 1800 else "not met"
    lines += ["", f"Goal (test melanoma AUC >= 0.85 after at most 30 minutes of CPU training): **{goal}**."]
    return "\n".join(lines)


def write_results(text: str) -> None:
    page = RESULTS.read_text(encoding="utf-8")
    start, end = page.index(MARKERS[0]) + len(MARKERS[0]), page.index(MARKERS[1])
    RESULTS.write_text(page[:start] + "\n" + text + "\n" + page[end:], encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, help="evaluate this run instead of training one")
    ap.add_argument("--write-run", action="store_true",
                    help="store predictions and metrics.json in the run folder")
    ap.add_argument("--no-anchor", dest="anchor", action="store_false")
    ap.add_argument("--json", type=Path, default=REPO_ROOT / "benchmarks" / "isic2017.json")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="isic2017_") as tmp:
        run = args.run or Path(tmp) / "run"
        if args.run is None:
            cli("train", "--data-dir", str(DATA), "--out", str(run))
        out = run if args.write_run else Path(tmp)
        result = {"command": f"python -m helpers train --data-dir data_samples/isic-2017 --out {run.name}",
                  "config": json.loads((run / "config.json").read_text(encoding="utf-8")),
                  "summary": json.loads((run / "summary.json").read_text(encoding="utf-8")),
                  **evaluate(run, out), "machine": machine()}
        result["config"].pop("data_dir", None)
        result["anchor_auc"] = frozen_anchor() if args.anchor else None
        if args.write_run:
            write_embeddings(run)
            (run / "metrics.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        if args.run is None and (KEPT_RUN / "metrics.json").is_file():
            kept = json.loads((KEPT_RUN / "metrics.json").read_text(encoding="utf-8"))
            result["kept_run_test_auc"] = kept["test"]["auc"]
            print(f"test AUC: retrained {result['test']['auc']:.3f}, kept run {kept['test']['auc']:.3f}")
    args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    write_results(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
