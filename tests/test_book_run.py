"""The run committed under runs/isic2017: every recorded number recomputed from its files.

The book's chapters 8-12 load this run instead of training it again. Here each metric that
``runs/isic2017/metrics.json`` and ``summary.json`` record is recomputed from the committed
predictions and the shipped ground truth, and the half-precision weights are checked to
reproduce the recorded validation predictions. (``benchmarks/isic2017.py`` retrains the run;
the test suite does not.)
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import REPO_ROOT
from helpers.datasets import load_dataset
from helpers.metrics import average_precision, bootstrap_ci, roc_auc

RUN = REPO_ROOT / "runs" / "isic2017"
DATA = REPO_ROOT / "data_samples" / "isic-2017"
UDA1 = REPO_ROOT / "data_samples" / "isic-archive-uda1"


@pytest.fixture(scope="module")
def metrics() -> dict:
    return json.loads((RUN / "metrics.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def truth() -> pd.Series:
    return load_dataset(DATA).set_index("source_id")["target"].astype(int)


def _scored(csv: str, truth: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    pred = pd.read_csv(RUN / csv).set_index("image_name")["target"]
    return truth.loc[pred.index].to_numpy(), pred.to_numpy()


def test_the_run_is_small_and_complete():
    files = {p.name: p.stat().st_size for p in RUN.iterdir()}
    for name in ("config.json", "summary.json", "history.csv", "split.csv", "model.pt", "metrics.json",
                 "val_predictions.csv", "val_predictions_tta1.csv", "val_predictions_tta8.csv",
                 "test_predictions.csv", "uda1_predictions.csv", "embeddings.npz"):
        assert name in files, name
    assert "best.pt" not in files and "last.pt" not in files
    assert sum(files.values()) <= 15 * 10**6


def test_trained_on_the_training_split_only(truth):
    frame = load_dataset(DATA)
    split = pd.read_csv(RUN / "split.csv")
    by_split = frame.groupby("split")["image_id"].apply(set)
    assert set(split.query("role == 'train'")["image_id"]) == by_split["train"]
    assert set(split.query("role == 'val'")["image_id"]) == by_split["val"]
    assert not set(split["image_id"]) & by_split["test"]
    config = json.loads((RUN / "config.json").read_text(encoding="utf-8"))
    assert (config["n_train"], config["n_val"]) == (2000, 150)


def test_summary_matches_the_history():
    history = pd.read_csv(RUN / "history.csv")
    summary = json.loads((RUN / "summary.json").read_text(encoding="utf-8"))
    assert summary["epochs_done"] == len(history) == history["epoch"].max()
    assert summary["best_val_auc"] == pytest.approx(history["val_auc"].max(), abs=1e-12)
    assert summary["best_epoch"] == int(history.loc[history["val_auc"].idxmax(), "epoch"])
    val = pd.read_csv(RUN / "val_predictions.csv")     # the kept epoch's validation predictions
    assert roc_auc(val["target"], val["prediction"]) == pytest.approx(summary["best_val_auc"], abs=1e-6)


def test_recorded_metrics_recompute_from_the_predictions(metrics, truth):
    for tta in (1, 8):
        y, p = _scored(f"val_predictions_tta{tta}.csv", truth)
        assert len(y) == 150
        assert roc_auc(y, p) == pytest.approx(metrics[f"val_auc_tta{tta}"], abs=1e-12)
    assert metrics["tta"] == (8 if metrics["val_auc_tta8"] > metrics["val_auc_tta1"] else 1)
    y, p = _scored("test_predictions.csv", truth)
    assert (len(y), int(y.sum())) == (600, 117) == (metrics["test"]["n"], metrics["test"]["n_melanoma"])
    ci = bootstrap_ci(y, p, roc_auc, n=2000, seed=0)
    assert ci.estimate == pytest.approx(metrics["test"]["auc"], abs=1e-12)
    assert [ci.low, ci.high] == pytest.approx(metrics["test"]["auc_ci95"], abs=1e-12)
    assert average_precision(y, p) == pytest.approx(metrics["test"]["average_precision"], abs=1e-12)


def test_uda1_generalisation_check_recomputes(metrics):
    uda = load_dataset(UDA1).set_index("source_id")["target"].astype(int)
    y, p = _scored("uda1_predictions.csv", uda)
    assert (len(y), int(y.sum())) == (61, 25)
    assert roc_auc(y, p) == pytest.approx(metrics["uda1"]["auc"], abs=1e-12)


def test_half_precision_weights_reproduce_the_validation_predictions():
    """model.pt (float16) rebuilds the trained model: its validation probabilities agree with the
    ones written at the end of training (by the float32 model) up to half-precision rounding."""
    from torch.utils.data import DataLoader

    from helpers import data as D
    from helpers.train import load_run, predict

    model, config, weights, _ = load_run(RUN)
    assert weights.name == "model.pt"
    val = pd.read_csv(RUN / "val_predictions.csv").head(16)
    frame = load_dataset(DATA).set_index("image_id").loc[val["image_id"]].reset_index()
    loader = DataLoader(D.LesionDataset(frame, D.eval_transforms(int(config["image_size"]))), batch_size=16,
                        collate_fn=D.collate_skip_bad)
    torch.set_num_threads(1)
    p = predict(model, loader, device="cpu")
    assert np.abs(p - val["prediction"].to_numpy()).max() < 0.02


def test_kept_features_are_the_networks_features():
    """embeddings.npz holds the run's penultimate features (half precision) of every 2017 image;
    a few of them recomputed from model.pt agree up to that rounding."""
    from helpers.context import image_embeddings
    from helpers.context import model_fingerprint
    from helpers.train import load_run

    kept = np.load(RUN / "embeddings.npz")
    frame = load_dataset(DATA).set_index("image_id")
    assert sorted(kept["image_id"]) == sorted(frame.index) and kept["features"].shape == (2750, 1280)
    model, config, _, _ = load_run(RUN)
    assert str(kept["fingerprint"]) == model_fingerprint(model) and int(kept["size"]) == config["image_size"]
    ids = kept["image_id"][::700]
    torch.set_num_threads(1)
    fresh = image_embeddings(model, frame.loc[ids, "path"].tolist(), size=int(config["image_size"]), progress=False)
    rows = np.flatnonzero(np.isin(kept["image_id"], ids))
    assert np.abs(fresh - kept["features"][rows].astype(np.float32)).max() < 0.02
