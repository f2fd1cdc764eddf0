"""Multi-process training (torchrun, Gloo on CPU) matches a single process with the same global batch."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(),
                                reason="torch.distributed is not available in this build")

# Run by torchrun (2 processes) and by plain python (1 process). No BatchNorm and no
# shuffling: the two processes together then see exactly the single process's batches, so
# the averaged gradients - and the weights - must agree up to float rounding.
WORKER = textwrap.dedent('''
    import json, sys
    from pathlib import Path
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, Dataset, DistributedSampler
    from helpers import train

    out = Path(sys.argv[1])
    rank, world, _ = train.init_distributed()
    writes = []
    if rank != 0:      # record any file a non-zero rank would write
        real_save, real_hist = train.save_checkpoint, train.write_history
        train.save_checkpoint = lambda obj, path: writes.append(str(path)) or real_save(obj, path)
        train.write_history = lambda frame, path: writes.append(str(path)) or real_hist(frame, path)

    class Blobs(Dataset):
        def __init__(self, n, seed):
            g = torch.Generator().manual_seed(seed)
            self.y = (torch.rand(n, generator=g) < 0.4).float()
            self.x = torch.randn(n, 3, 8, 8, generator=g) + self.y[:, None, None, None] * 0.7
        def __len__(self):
            return len(self.y)
        def __getitem__(self, i):
            return {"image": self.x[i], "target": self.y[i], "index": i}

    train_set, val_set = Blobs(48, 1), Blobs(23, 2)   # 23: DistributedSampler pads one repeat
    global_batch = 8
    if world > 1:
        tl = DataLoader(train_set, batch_size=global_batch // world,
                        sampler=DistributedSampler(train_set, shuffle=False))
        vl = DataLoader(val_set, batch_size=4, sampler=DistributedSampler(val_set, shuffle=False))
    else:
        tl = DataLoader(train_set, batch_size=global_batch)
        vl = DataLoader(val_set, batch_size=4)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 1))
    history = train.fit(model, tl, vl, epochs=3, lr=0.05, warmup_epochs=0.5, device="cpu",
                        out_dir=out / "run", progress=False, seed=0)
    if rank == 0:
        history.to_csv(out / "history.csv", index=False)
        torch.save(model.state_dict(), out / "final.pt")
    (out / f"writes_rank{rank}.json").write_text(json.dumps(writes))
''')


def _env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo",
           "PYTHONPATH": str(REPO_ROOT)}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def _torchrun(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           *args]
    return subprocess.run(cmd, cwd=REPO_ROOT, env=_env(), capture_output=True, text=True,
                          timeout=timeout)


def test_two_processes_match_one_process(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    single = subprocess.run([sys.executable, str(script), str(one)], cwd=REPO_ROOT, env=_env(),
                            capture_output=True, text=True, timeout=120)
    assert single.returncode == 0, single.stderr[-2000:]
    multi = _torchrun(str(script), str(two))
    assert multi.returncode == 0, multi.stderr[-3000:]

    h1, h2 = pd.read_csv(one / "history.csv"), pd.read_csv(two / "history.csv")
    pd.testing.assert_series_equal(h1["val_auc"], h2["val_auc"], atol=1e-6, rtol=0)
    pd.testing.assert_series_equal(h1["val_loss"], h2["val_loss"], atol=1e-5, rtol=1e-4)
    pd.testing.assert_series_equal(h1["train_loss"], h2["train_loss"], atol=1e-5, rtol=1e-4)
    assert (h2["skipped"] == 0).all()           # padding repeats are not "skipped" images
    w1, w2 = torch.load(one / "final.pt"), torch.load(two / "final.pt")
    for k in w1:
        torch.testing.assert_close(w1[k], w2[k], atol=1e-5, rtol=1e-4)
    # only rank 0 wrote the run's files
    assert json.loads((two / "writes_rank1.json").read_text()) == []
    assert sorted(p.name for p in (two / "run").iterdir()) == ["best.pt", "history.csv", "last.pt"]


DATA = REPO_ROOT / "data_samples" / "siim-isic-2020"


@pytest.mark.skipif(not DATA.is_dir(), reason="data_samples/siim-isic-2020 absent")
def test_cli_train_runs_under_torchrun(tmp_path):
    run = tmp_path / "run"
    result = _torchrun("-m", "helpers", "train", "--data-dir", str(DATA), "--out", str(run),
                       "--model", "resnet18", "--no-pretrained", "--epochs", "2",
                       "--image-size", "32", "--batch-size", "16", "--limit", "64",
                       "--no-progress", "--workers", "0")
    assert result.returncode == 0, result.stderr[-3000:]
    # one process speaks: each notice appears once, not once per rank
    assert result.stdout.count("weights: random init") == 1
    assert result.stdout.count("done: 2 epochs") == 1
    assert sorted(p.name for p in run.iterdir()) == ["best.pt", "config.json", "history.csv",
                                                     "last.pt", "model.pt", "split.csv",
                                                     "summary.json", "val_predictions.csv"]
    assert len(pd.read_csv(run / "val_predictions.csv")) == int(json.loads(
        (run / "config.json").read_text())["n_val"])
    config = json.loads((run / "config.json").read_text())
    assert config["world_size"] == 2
    history = pd.read_csv(run / "history.csv")
    assert history["epoch"].tolist() == [1, 2]
    split = pd.read_csv(run / "split.csv")
    n_val = int((split["role"] == "val").sum())
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs_done"] == 2 and 0 <= summary["best_val_auc"] <= 1
    assert n_val > 0
