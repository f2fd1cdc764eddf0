"""Tests for helpers/scale.py: activation and FLOP measurements, estimates, fold ensembles."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from helpers import REPO_ROOT, scale
from helpers.runs import predict_frame

DATA = REPO_ROOT / "data_samples" / "siim-isic-2020"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small tensors: one thread is as fast, and does not fight other jobs for the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def conv_relu(inplace: bool = False) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.ReLU(inplace=inplace))


class Square(nn.Module):
    """conv, then y * y: the product saves the same tensor twice."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)

    def forward(self, x):
        y = self.conv(x)
        return y * y


# ------------------------------------------------------------------ measurements
@pytest.mark.parametrize("inplace", [False, True])
def test_saved_bytes_of_conv_relu_are_input_plus_relu_output(inplace):
    # conv saves its input (3 channels; its weight is a parameter, left out); ReLU its output (8)
    got = scale.saved_tensor_bytes(conv_relu(inplace), 16, batch=2, amp="fp32")
    assert got == 2 * 16 * 16 * 4 * (3 + 8)


def test_a_tensor_saved_twice_counts_once():
    got = scale.saved_tensor_bytes(Square(), 16, batch=1, amp="fp32")
    assert got == 16 * 16 * 4 * (3 + 8)            # input + y, not input + 2 y


def test_activation_bytes_split_per_image_and_constant():
    per_image, const = scale.activation_bytes(conv_relu(), 16, amp="fp32")
    assert per_image == 16 * 16 * 4 * 11 and const == 0
    # bf16 autocast: input, conv output and ReLU output in 2 bytes, plus the bf16 copy of
    # the weight (8*3*3*3 values), which does not grow with the batch
    per_image, const = scale.activation_bytes(conv_relu(), 16, amp="bf16")
    assert per_image == 16 * 16 * 2 * 11
    assert const == 8 * 3 * 3 * 3 * 2


def test_forward_flops_of_a_convolution():
    # 2 FLOPs per multiply-add, 8 outputs x 3 inputs x 3 x 3 taps per pixel
    assert scale.forward_flops(conv_relu(), 20) == 2 * 8 * 3 * 9 * 20 * 20
    assert scale.forward_flops(conv_relu(), 20, batch=3) == 2 * 8 * 3 * 9 * 20 * 20


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="amp"):
        scale.saved_tensor_bytes(conv_relu(), 16, 1, amp="fp16")
    with pytest.raises(ValueError, match="batches"):
        scale.activation_bytes(conv_relu(), 16, batches=(4, 2))


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_b0"])
def test_cost_scales_with_the_pixel_count(name):
    # the claim the chapter relies on: measure at 64 px, scale to larger sizes
    c64, c128 = scale.measure_cost(name, 64), scale.measure_cost(name, 128)
    scaled = scale.scale_cost(c64, 128)
    assert scaled.params == c128.params and scaled.measured_at == 64 and scaled.image_size == 128
    assert scaled.act_bytes == pytest.approx(c128.act_bytes, rel=0.02)
    assert scaled.gflops == pytest.approx(c128.gflops, rel=0.02)
    assert scaled.act_bytes >= c128.act_bytes * 0.999    # the head does not grow: over, not under
    assert c128.act_bytes > 3.5 * c64.act_bytes          # and it really does grow


def test_resnet18_counts_match_the_published_figures():
    c = scale.measure_cost("resnet18", 64)
    # torchvision's table: 11.7 M parameters with the 1000-class head (512*1000+1000),
    # 1.81 G multiply-adds at 224 px
    assert c.params + 512 * 999 + 999 == 11_689_512
    assert scale.scale_cost(c, 224).gflops / 2 == pytest.approx(1.81, abs=0.02)


# ------------------------------------------------------------------ estimates
def test_training_memory_formula():
    assert scale.training_memory_bytes(1_000_000, 2e6, 64, const_bytes=5e5) == 16e6 + 128e6 + 5e5
    assert scale.training_memory_bytes(10, 0, 1, bytes_per_param=4) == 40
    with pytest.raises(ValueError):
        scale.training_memory_bytes(10, 1.0, 0)


def test_estimate_throughput_scales_by_flops_within_a_family():
    refs = {("resnet18", 224): 1000.0, ("efficientnet_b0", 224): 400.0,
            ("efficientnet_b0", 384): 150.0}
    g = {("resnet18", 224): 2.0, ("efficientnet_b0", 224): 0.5, ("efficientnet_b0", 384): 1.5}
    assert scale.estimate_throughput("efficientnet_b0", 224, 0.5, g, refs) == (400.0, "reference")
    rate, note = scale.estimate_throughput("efficientnet_b2", 240, 1.0, g, refs)
    assert rate == pytest.approx(200.0) and note == "scaled from efficientnet_b0@224"
    rate, note = scale.estimate_throughput("efficientnet_b0", 512, 3.0, g, refs)   # nearest: 384
    assert rate == pytest.approx(75.0) and note == "scaled from efficientnet_b0@384"
    rate, note = scale.estimate_throughput("convnext_tiny", 224, 8.0, g, refs)
    assert rate == pytest.approx(250.0) and "resnet18@224" in note and "optimistic" in note
    with pytest.raises(ValueError, match="reference_gflops"):
        scale.estimate_throughput("resnet50", 224, 8.0, {}, refs)


def test_epoch_minutes():
    assert scale.epoch_minutes(6000, 100.0) == 1.0
    assert scale.epoch_minutes(scale.SIIM_2020_TRAIN_IMAGES, 11_900) == pytest.approx(33_126 / 11_900 / 60)
    with pytest.raises(ValueError):
        scale.epoch_minutes(10, 0)


def test_estimate_table_rows_and_consistency():
    refs = {("resnet18", 224): 1000.0}
    table = scale.estimate_table(["resnet18"], [64, 128], batch=8, measure_size=64,
                                 references=refs, n_images=6000)
    assert table[["model", "size"]].values.tolist() == [["resnet18", 64], ["resnet18", 128]]
    r64, r128 = table.iloc[0], table.iloc[1]
    assert r128["gflops"] == pytest.approx(4 * r64["gflops"])
    assert r128["act_MB"] == pytest.approx(4 * r64["act_MB"])
    assert r64["img_per_s"] == pytest.approx(1000 * (224 / 64) ** 2)    # FLOPs ratio to the reference
    assert r64["min_per_epoch"] == pytest.approx(6000 / r64["img_per_s"] / 60)
    expected_gb = r64["params_M"] * 16e6 / 1e9 + (8 * r64["act_MB"] + r64["const_MB"]) / 1e3
    assert r64["mem_GB"] == pytest.approx(expected_gb)
    assert torch.get_num_threads() == 1            # estimate_table restored the thread count


# ------------------------------------------------------------------ ensembles, torchrun
def test_average_predictions_aligns_by_id():
    a = pd.DataFrame({"image_name": ["x", "y", "z"], "target": [0.2, 0.4, 0.9]})
    b = pd.DataFrame({"image_name": ["z", "x", "y"], "target": [0.1, 0.6, 0.0]})
    out = scale.average_predictions([a, b])
    assert out["image_name"].tolist() == ["x", "y", "z"]
    np.testing.assert_allclose(out["target"], [0.4, 0.2, 0.5])
    c = pd.DataFrame({"image_name": ["x", "y", "w"], "target": [0.0, 0.0, 0.0]})
    with pytest.raises(ValueError, match="frame 1"):
        scale.average_predictions([a, c])
    with pytest.raises(ValueError):
        scale.average_predictions([])


def test_torchrun_command_and_env(monkeypatch):
    cmd = scale.torchrun_command(["train", "--fold", 0], nproc=2)
    assert cmd[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    assert cmd[5:] == ["-m", "helpers", "train", "--fold", "0"]
    monkeypatch.setenv("RANK", "3")
    env = scale.cpu_ddp_env(1)
    assert "RANK" not in env and env["OMP_NUM_THREADS"] == "1"
    with pytest.raises(ValueError):
        scale.torchrun_command([], nproc=0)


@pytest.fixture(scope="module")
def two_folds(tmp_path_factory):
    if not DATA.is_dir():
        pytest.skip("data_samples/siim-isic-2020 absent")
    from helpers.__main__ import main as cli

    root = tmp_path_factory.mktemp("folds")
    runs = [root / f"fold{f}" for f in (0, 1)]
    for f, run in enumerate(runs):
        status = cli(["train", "--data-dir", str(DATA), "--out", str(run), "--model", "resnet18",
                      "--no-pretrained", "--epochs", "1", "--image-size", "32", "--batch-size", "16",
                      "--limit", "40", "--folds", "2", "--fold", str(f), "--no-progress"])
        assert status == 0
    return runs


def test_out_of_fold_predicts_each_image_once(two_folds):
    from helpers.datasets import load_dataset

    frame = load_dataset(DATA)
    oof = scale.out_of_fold(two_folds, frame)
    assert len(oof) == 40 and oof["image_id"].is_unique          # --limit 40, two folds
    assert sorted(oof["fold"].unique()) == [0, 1]
    assert oof["prob"].between(0, 1).all()
    truth = frame.set_index("image_id").loc[oof["image_id"], "target"].to_numpy(float)
    np.testing.assert_array_equal(oof["target"].to_numpy(), truth)
    # the same run's predictions through predict_run, in a different order
    fold1 = oof[oof["fold"] == 1].iloc[::-1]
    rows = frame.set_index("image_id").loc[fold1["image_id"]].reset_index()
    np.testing.assert_allclose(predict_frame(two_folds[1], rows), fold1["prob"], atol=1e-5)
    with pytest.raises(ValueError, match="validated by two runs"):
        scale.out_of_fold([two_folds[0], two_folds[0]], frame)
    with pytest.raises(ValueError, match="config.json"):
        scale.out_of_fold([two_folds[0].parent], frame)
    assert math.isfinite(float(oof["prob"].mean()))


def test_resized_layout_resizes_images_and_copies_the_other_files(tmp_path):
    from PIL import Image

    from helpers.datasets import load_dataset

    src = REPO_ROOT / "data_samples" / "isic-2016"
    if not src.is_dir():
        pytest.skip("data_samples/isic-2016 absent")
    dst = tmp_path / "isic-2016-32px"
    report = scale.resized_layout(src, dst, 32, workers=1)
    others = [p for p in src.rglob("*") if p.is_file() and p.suffix.lower() not in (".jpg", ".png")
              and not any(part.startswith(".") for part in p.relative_to(src).parts)]
    assert (report["status"] == "copied").sum() == len(others) and len(others) >= 2
    for path in others:
        assert (dst / path.relative_to(src)).read_bytes() == path.read_bytes()
    first = report.loc[report["status"] == "resized", "dest"].iloc[0]
    assert Image.open(first).size == (32, 32)
    a, b = load_dataset(src), load_dataset(dst)
    pd.testing.assert_frame_equal(a.drop(columns="path"), b.drop(columns="path"))
    again = scale.resized_layout(src, dst, 32, workers=1)                  # a rerun does nothing
    assert set(again["status"]) == {"skipped"}
    with pytest.raises(ValueError, match="inside"):
        scale.resized_layout(src, src / "small", 32)


def test_out_of_fold_reads_saved_predictions_and_needs_no_patient_ids(two_folds):
    from helpers.datasets import load_dataset

    frame = load_dataset(DATA)
    with_saved = scale.out_of_fold(two_folds, frame)
    saved = pd.read_csv(two_folds[0] / "val_predictions.csv", dtype={"image_id": str})
    fold0 = with_saved[with_saved["fold"] == 0].set_index("image_id")["prob"]
    np.testing.assert_allclose(fold0.loc[saved["image_id"]], saved["prediction"])
    no_patients = scale.out_of_fold(two_folds, frame.drop(columns="patient_id"))
    assert no_patients["patient_id"].isna().all()
    np.testing.assert_allclose(no_patients["prob"], with_saved["prob"])


def test_linear_probe_folds_scores_out_of_fold_only():
    rng = np.random.default_rng(0)
    n = 120
    y = (np.arange(n) % 3 == 0).astype(float)
    X = rng.normal(size=(n, 5))
    X[:, 0] += 2.5 * y                                   # one informative feature
    folds = np.arange(n) % 4
    T = rng.normal(size=(10, 5))
    T[:5, 0] += 2.5
    oof, test = scale.linear_probe_folds(X, y, folds, T)
    assert oof.shape == (n,) and test.shape == (10, 4) and np.isfinite(oof).all()
    assert scale_auc(y, oof) > 0.85                       # learnt the signal, out of fold
    assert test[:5].mean() > test[5:].mean()
    # out of fold: fold 0's model never sees fold 0's rows, so changing them leaves it unchanged
    X2 = X.copy()
    X2[folds == 0, 0] = 0.0
    _, test2 = scale.linear_probe_folds(X2, y, folds, T)
    np.testing.assert_allclose(test2[:, 0], test[:, 0])
    assert not np.allclose(test2[:, 1], test[:, 1])        # the other folds' models did see them
    none, empty = scale.linear_probe_folds(X, y, folds)
    np.testing.assert_allclose(none, oof)
    assert empty.shape == (0, 4)
    with pytest.raises(ValueError, match="one row each"):
        scale.linear_probe_folds(X, y[:-1], folds)
    with pytest.raises(ValueError, match="one class"):
        scale.linear_probe_folds(X, np.where(folds == 0, 1.0, 0.0), np.where(folds == 0, 0, 1))


def scale_auc(y, p):
    from sklearn.metrics import roc_auc_score

    return roc_auc_score(y, p)
