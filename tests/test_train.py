"""Tests for helpers/train.py: learning, atomic checkpoints, exact resume, safe loading, predict."""
from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from support import FAST, REPO_ROOT, SIIM, needs_samples
from torch import nn
from torch.utils.data import DataLoader, Dataset

from helpers import train
from helpers.__main__ import main
from helpers.models import build_model
from helpers.train import (
    CHECKPOINT_FORMAT,
    HISTORY_COLUMNS,
    auc_score,
    fit,
    load_checkpoint,
    predict,
    resolve_amp,
    save_checkpoint,
    set_loader_epoch,
    tta_variants,
)


class Blobs(Dataset):
    """Synthetic 16 px images: class 1 is brighter in the red channel; random flips (torch RNG)."""

    def __init__(self, n: int, seed: int, augment: bool = True, bad: tuple[int, ...] = ()):
        g = torch.Generator().manual_seed(seed)
        self.y = torch.arange(n) % 2
        self.x = torch.randn(n, 3, 16, 16, generator=g) * 0.5
        self.x[self.y == 1, 0] += 1.0
        self.augment, self.bad = augment, set(bad)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        if i in self.bad:
            return None
        x = self.x[i]
        if self.augment and torch.rand(()) < 0.5:
            x = x.flip(-1)
        return {"image": x, "target": self.y[i], "index": i}


def collate(items):
    items = [it for it in items if it is not None]
    if not items:
        return None
    return torch.utils.data.default_collate(items)


class Tiny(nn.Module):
    def __init__(self, n_out: int = 1):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.3))
        self.head = nn.Linear(8, n_out)

    def forward(self, x):
        return self.head(self.body(x))


def loaders(n_train=48, n_val=24, batch=8, bad=()):
    train_loader = DataLoader(Blobs(n_train, 1, bad=bad), batch_size=batch, shuffle=True,
                              collate_fn=collate)
    val_loader = DataLoader(Blobs(n_val, 2, augment=False), batch_size=16, collate_fn=collate)
    return train_loader, val_loader


def model(seed=0, n_out=1):
    torch.manual_seed(seed)
    return Tiny(n_out)


KW = dict(lr=0.05, weight_decay=0.0, warmup_epochs=1, device="cpu", progress=False, seed=3)


def test_fit_learns_a_separable_set_and_reports_history(tmp_path):
    tl, vl = loaders(bad=(5,))
    history = fit(model(), tl, vl, epochs=4, out_dir=tmp_path, **KW)
    assert list(history.columns) == HISTORY_COLUMNS
    assert history["epoch"].tolist() == [1, 2, 3, 4]
    assert history["val_auc"].iloc[-1] > 0.9
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]
    assert (history["skipped"] == 1).all()          # image 5 is unreadable in every epoch
    assert history["lr"].iloc[-1] < 1e-6            # cosine decays to zero
    assert (history["images_per_s"] > 0).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "history.csv", "last.pt"]
    on_disk = pd.read_csv(tmp_path / "history.csv")
    np.testing.assert_allclose(on_disk["val_auc"], history["val_auc"])
    ck = torch.load(tmp_path / "last.pt", weights_only=True)   # plain tensors and containers
    assert ck["epoch"] == 4 and set(ck) >= {"model", "optimizer", "scheduler", "scaler", "rng",
                                            "history", "best", "config"}


def test_learning_rate_warms_up_then_follows_a_cosine():
    factor = train.warmup_cosine(warmup_steps=4, total_steps=12)
    values = [factor(s) for s in range(12)]
    assert values[:4] == [0.25, 0.5, 0.75, 1.0]
    assert values[4] == pytest.approx(1.0)
    assert all(a > b for a, b in zip(values[4:], values[5:]))
    assert factor(12) == pytest.approx(0.0, abs=1e-12)


def test_fit_keeps_the_best_epoch_and_stops_early(tmp_path):
    tl, vl = loaders()
    net = model()
    history = fit(net, tl, vl, epochs=10, patience=2, out_dir=tmp_path,
                  **{**KW, "lr": 0.0})                     # lr 0: nothing improves
    assert len(history) == 3                              # best epoch 1, then 2 without gain
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["epoch"] == 1
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, best["model"][k])


def _weights(path):
    return load_checkpoint(path)["model"]


class CrashingLoader(DataLoader):
    """Raises KeyboardInterrupt in the middle of epoch ``crash_epoch`` (0-based)."""

    def __init__(self, *args, crash_epoch: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.crash_epoch, self.epochs_started = crash_epoch, 0

    def __iter__(self):
        epoch = self.epochs_started
        self.epochs_started += 1
        for i, batch in enumerate(super().__iter__()):
            if epoch == self.crash_epoch and i == 2:
                raise KeyboardInterrupt("simulated crash")
            yield batch


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path):
    tl, vl = loaders()
    full = fit(model(), tl, vl, epochs=4, out_dir=tmp_path / "full", **KW)

    crashing = CrashingLoader(Blobs(48, 1), batch_size=8, shuffle=True, collate_fn=collate,
                              crash_epoch=2)
    with pytest.raises(KeyboardInterrupt):
        fit(model(), crashing, vl, epochs=4, out_dir=tmp_path / "cut", **KW)
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["epoch"] == 2
    tl2, vl2 = loaders()
    resumed = fit(model(seed=99), tl2, vl2, epochs=4, out_dir=tmp_path / "cut", resume=True, **KW)

    pd.testing.assert_frame_equal(full.drop(columns=["seconds", "images_per_s"]),
                                  resumed.drop(columns=["seconds", "images_per_s"]))
    a, b = _weights(tmp_path / "full" / "last.pt"), _weights(tmp_path / "cut" / "last.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_a_crash_while_writing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    tl, vl = loaders()
    fit(model(), tl, vl, epochs=1, out_dir=tmp_path, **KW)
    before = (tmp_path / "last.pt").read_bytes()

    real_save = torch.save

    def dying_save(obj, handle, *a, **k):
        real_save({"partial": torch.zeros(3)}, handle)    # some bytes reach the temp file ...
        raise OSError("disk full (simulated)")             # ... then the write dies

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(ValueError, match=r"last\.pt: cannot write \(disk full"):
        save_checkpoint({"model": {}}, tmp_path / "last.pt")
    monkeypatch.undo()
    assert (tmp_path / "last.pt").read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]

    # a hard kill leaves a temp file behind: it is never mistaken for the checkpoint
    (tmp_path / ".last.pt.12345.deadbeef.tmp").write_bytes(b"half a checkpoint")
    tl, vl = loaders()
    history = fit(model(), tl, vl, epochs=2, out_dir=tmp_path, resume=True, **KW)
    assert history["epoch"].tolist() == [1, 2]
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 2


class Evil:
    pass


def test_checkpoints_with_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "last.pt"
    torch.save({"format": train.CHECKPOINT_FORMAT, "epoch": 1, "extra": Evil()}, path)
    with pytest.raises(ValueError, match="last.pt.*pickled"):
        load_checkpoint(path)
    tl, vl = loaders()
    with pytest.raises(ValueError, match="last.pt"):
        fit(model(), tl, vl, epochs=2, out_dir=tmp_path, resume=True, **KW)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")


def test_auc_score_is_nan_safe_and_macro_for_several_classes():
    assert auc_score(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert math.isnan(auc_score(np.array([1, 1, 1]), np.array([0.1, 0.5, 0.9])))
    y = np.array([0, 1, 2, 0, 1, 2])
    perfect = np.eye(3)[y]
    assert auc_score(y, perfect) == 1.0
    # class 2 absent: averaged over classes 0 and 1 only
    y2 = np.array([0, 1, 0, 1])
    scores = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.6, 0.4, 0.0], [0.7, 0.3, 0.0]])
    assert auc_score(y2, scores) == pytest.approx(0.75)


def test_multiclass_training_with_cross_entropy():
    tl, vl = loaders()
    history = fit(model(n_out=2), tl, vl, epochs=3, loss="ce", **KW)
    assert history["val_auc"].iloc[-1] > 0.9


def test_predict_aligns_rows_with_the_dataset_and_averages_tta():
    net = model().eval()
    ds = Blobs(10, 4, augment=False, bad=(3,))
    loader = DataLoader(ds, batch_size=4, collate_fn=collate)
    p1 = predict(net, loader, device="cpu")
    assert p1.shape == (10,) and np.isnan(p1[3]) and np.isfinite(np.delete(p1, 3)).all()
    p2 = predict(net, loader, device="cpu", tta=2)
    with torch.no_grad():
        x = ds.x[0:1]
        expected = (torch.sigmoid(net(x)) + torch.sigmoid(net(x.flip(-1)))).item() / 2
    assert p2[0] == pytest.approx(expected, rel=1e-5)
    variants = tta_variants(torch.arange(4.0).reshape(1, 1, 2, 2), 8)
    assert len({tuple(v.flatten().tolist()) for v in variants}) == 8   # all 8 distinct
    with pytest.raises(ValueError):
        tta_variants(x, 9)


def test_data_order_depends_on_seed_and_epoch_only():
    ds = Blobs(20, 0, augment=False)

    def order(seed, epoch):
        loader = DataLoader(ds, batch_size=20, shuffle=True)
        torch.manual_seed(1234 + epoch)                  # global RNG must not matter
        set_loader_epoch(loader, seed, epoch)
        return next(iter(loader))["index"].tolist()

    assert order(0, 1) == order(0, 1)
    assert order(0, 1) != order(0, 2)
    assert order(0, 1) != order(1, 1)


def test_resolve_amp_keeps_cpu_in_float32():
    cpu = torch.device("cpu")
    assert resolve_amp("auto", cpu) is None
    assert resolve_amp("off", cpu) is None
    assert resolve_amp("bf16", cpu) is torch.bfloat16
    with pytest.raises(ValueError, match="fp16"):
        resolve_amp("fp16", cpu)
    with pytest.raises(ValueError, match="unknown amp"):
        resolve_amp("fp8", cpu)


def test_bf16_autocast_on_cpu_runs():
    tl, vl = loaders(n_train=16, n_val=8)
    history = fit(model(), tl, vl, epochs=1, amp="bf16", **KW)
    assert np.isfinite(history["train_loss"]).all()


def test_plot_history_draws_two_panels():
    import matplotlib

    matplotlib.use("Agg")
    history = pd.DataFrame({"epoch": [1, 2], "train_loss": [0.7, 0.5], "val_loss": [0.7, 0.6],
                            "val_auc": [0.6, 0.8]})
    fig = train.plot_history(history)
    assert len(fig.axes) == 2
    assert fig.axes[1].lines[0].get_ydata().tolist() == [0.6, 0.8]


def test_plot_history_ticks_whole_epochs_only():
    import matplotlib

    matplotlib.use("Agg")
    history = pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [0.7, 0.5, 0.4],
                            "val_loss": [0.7, 0.6, 0.6], "val_auc": [0.6, 0.8, 0.7]})
    fig = train.plot_history(history)
    fig.canvas.draw()
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticks() if 1 <= t <= 3]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks


def test_fit_drives_the_tensor_cache_loader_repeatably(tmp_path):
    """The throughput road (helpers.fastpath.TensorCacheLoader) plugs into fit like a DataLoader."""
    from helpers.fastpath import TensorCacheLoader

    rng = np.random.default_rng(0)
    y = (np.arange(64) % 2).astype(np.float32)
    cache = rng.integers(0, 120, size=(64, 3, 16, 16), dtype=np.uint8)
    cache[y == 1, 0] += 100

    def run(name):
        tl = TensorCacheLoader(cache, y, indices=np.arange(48), batch_size=8, augment=True,
                               seed=1, prefetch=False)
        vl = TensorCacheLoader(cache, y, indices=np.arange(48, 64), batch_size=8,
                               shuffle=False, prefetch=False)
        history = fit(model(), tl, vl, epochs=2, out_dir=tmp_path / name, **KW)
        return history, _weights(tmp_path / name / "last.pt")

    (h1, w1), (_, w2) = run("a"), run("b")
    assert h1["val_auc"].iloc[-1] > 0.9
    assert all(torch.equal(w1[k], w2[k]) for k in w1)


# ==========================================================================================
# Reliability: checkpoints are loaded with ``weights_only=True`` only, and never run code.
#
# * Every ``torch.load`` in ``helpers/`` passes ``weights_only=True``, and nothing
#   in ``helpers/`` unpickles by another door (``pickle.load``, ``allow_pickle=True``).
# * A checkpoint carrying a pickled object (here one that would create a file
#   when unpickled) is refused with a clear message by ``load_checkpoint`` and
#   by ``python -m helpers predict`` / ``train --resume`` (one line, exit code
#   2), and the object's code never runs.
#
# ``tests/test_train.py::test_checkpoints_with_pickled_objects_are_refused``
# checks ``load_checkpoint`` and ``fit(resume=True)`` on a harmless pickled object.
# ==========================================================================================
SENTINEL_NAME = "code-ran.txt"


class Payload:
    """Unpickling this object calls ``open(path, "w")``: the file appearing means code ran."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _calls(tree: ast.AST, dotted: str):
    owner, name = dotted.split(".")
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == name and isinstance(node.func.value, ast.Name)
                and node.func.value.id == owner):
            yield node


def test_every_torch_load_in_helpers_is_weights_only():
    loads = 0
    for path in sorted((REPO_ROOT / "helpers").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for call in _calls(tree, "torch.load"):
            loads += 1
            flag = next((k.value for k in call.keywords if k.arg == "weights_only"), None)
            assert isinstance(flag, ast.Constant) and flag.value is True, \
                f"{path.name}:{call.lineno}: torch.load without weights_only=True"
        for dotted in ("pickle.load", "pickle.loads"):
            assert not list(_calls(tree, dotted)), f"{path.name}: {dotted}"
        for call in ast.walk(tree):
            if isinstance(call, ast.Call):
                for k in call.keywords:
                    assert not (k.arg == "allow_pickle" and isinstance(k.value, ast.Constant)
                                and k.value.value is True), f"{path.name}:{call.lineno}: allow_pickle=True"
    assert loads >= 1   # load_checkpoint itself


def _evil_checkpoint(path: Path, sentinel: Path) -> Path:
    model = build_model("resnet18", 1, pretrained=False, verbose=False)
    torch.save({"format": CHECKPOINT_FORMAT, "epoch": 1, "model": model.state_dict(),
                "extra": Payload(sentinel)}, path)
    return path


def test_the_payload_would_run_if_loaded_unsafely(tmp_path):
    """The control: without weights_only the payload runs, so the refusals below mean something."""
    sentinel = tmp_path / SENTINEL_NAME
    path = _evil_checkpoint(tmp_path / "evil.pt", sentinel)
    torch.load(path, weights_only=False)
    assert sentinel.exists()


def test_load_checkpoint_refuses_a_pickled_object_without_running_it(tmp_path):
    sentinel = tmp_path / SENTINEL_NAME
    path = _evil_checkpoint(tmp_path / "evil.pt", sentinel)
    with pytest.raises(ValueError, match=r"evil\.pt: refused, the checkpoint holds pickled Python "
                                         r"objects such as (io|builtins)\.open"):
        load_checkpoint(path)
    assert not sentinel.exists()


def test_predict_refuses_a_run_with_a_pickled_object(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": "resnet18", "image_size": 32}))
    sentinel = tmp_path / SENTINEL_NAME
    _evil_checkpoint(run / "best.pt", sentinel)
    code = main(["predict", "--run", str(run), "--data-dir", str(SIIM), "--out",
                 str(tmp_path / "preds.csv")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("error: ") and "best.pt: refused" in err and "pickled" in err
    assert not sentinel.exists() and not (tmp_path / "preds.csv").exists()


@needs_samples
def test_resume_refuses_a_run_with_a_pickled_object(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    sentinel = tmp_path / SENTINEL_NAME
    _evil_checkpoint(run / "last.pt", sentinel)
    code = main(["train", "--data-dir", str(SIIM), "--out", str(run), "--resume", "--epochs", "1",
                 "--limit", "16", *FAST])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "last.pt: refused" in err and "pickled" in err
    assert not sentinel.exists() and not (run / "summary.json").exists()
